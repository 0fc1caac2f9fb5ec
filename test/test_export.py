"""The exported ONNX graph: valid, dynamic, TensorRT-parsable operators only, with model.json."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from xmodelkd_ros.export import main as export_main
from xmodelkd_ros.labels import CLASS_NAMES, PALETTE
from xmodelkd_ros.runtime.graph import input_names
from xmodelkd_ros.runtime.metadata import ModelMetadata, sha256_file
from xmodelkd_ros.runtime.trt_ops import FORBIDDEN_OPS, TENSORRT_ONNX_OPS, unsupported_ops
from xmodelkd_ros.sim.fixtures import exported_random_model


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """Exported once through ``python -m xmodelkd_ros.export`` (the real CLI)."""
    return exported_random_model("small", seed=0)


@pytest.fixture(scope="module")
def graph(model_dir: Path) -> onnx.ModelProto:
    return onnx.load(str(model_dir / "model.onnx"))


def test_checker_and_opset(graph: onnx.ModelProto) -> None:
    onnx.checker.check_model(graph, full_check=True)
    opset = {o.domain: o.version for o in graph.opset_import}
    assert opset.get("", opset.get("ai.onnx", 0)) >= 17


def test_ops_supported_by_tensorrt(graph: onnx.ModelProto) -> None:
    ops = {n.op_type for n in graph.graph.node}
    assert ops <= TENSORRT_ONNX_OPS, sorted(ops - TENSORRT_ONNX_OPS)
    assert not ops & {"NonZero", "Unique", "TopK", "ScatterND", "Loop", "If"}
    assert not ops & FORBIDDEN_OPS
    assert "BatchNormalization" not in ops  # folded
    assert {"Gather", "MatMul", "Add"} <= ops
    assert unsupported_ops(graph) == {"unsupported": [], "forbidden": []}


def test_op_check_catches_bad_graph() -> None:
    """The check itself must fail on a graph TensorRT's parser would reject."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [1, None])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [None])
    nodes = [
        helper.make_node("NonZero", ["x"], ["y"]),
        helper.make_node("Unique", ["x"], ["z"]),
        helper.make_node("Relu", ["x"], ["r"]),
    ]
    g = helper.make_graph(nodes, "bad", [x], [y, z])
    bad = unsupported_ops(helper.make_model(g))
    assert bad["forbidden"] == ["NonZero", "Unique"]
    assert "Unique" in bad["unsupported"] and "NonZero" not in TENSORRT_ONNX_OPS


def test_dynamic_axes_distinct_per_level(graph: onnx.ModelProto) -> None:
    inputs = {i.name: i for i in graph.graph.input}
    assert list(inputs) == input_names(4)
    dim0 = {n: i.type.tensor_type.shape.dim[0].dim_param for n, i in inputs.items()}
    assert all(dim0.values()), dim0  # every first dim symbolic
    levels = {dim0["voxel_feats"], dim0["subm_1"], dim0["subm_2"], dim0["subm_3"]}
    assert len(levels) == 4 and dim0["point_feats"] not in levels
    assert dim0["point2voxel"] == dim0["point_feats"]
    assert dim0["down_0"] == dim0["subm_1"] and dim0["up_0"] == dim0["subm_0"]
    for name in ("point2voxel", "subm_0", "down_0", "up_0"):
        assert inputs[name].type.tensor_type.elem_type == TensorProto.INT64
    (out,) = graph.graph.output
    assert out.name == "logits"
    assert out.type.tensor_type.shape.dim[0].dim_param == dim0["point_feats"]
    assert out.type.tensor_type.shape.dim[1].dim_value == len(CLASS_NAMES)


def test_model_json(model_dir: Path) -> None:
    data = json.loads((model_dir / "model.json").read_text())
    assert data["classes"] == list(CLASS_NAMES)
    assert data["palette"] == PALETTE.tolist()
    assert data["grid"]["voxel_size"] == [0.1, 0.1, 0.1]
    assert data["input"]["fields"] == ["x", "y", "z", "intensity"]
    assert len(data["input"]["normalization"]["mean"]) == 4
    assert data["network"]["preset"] == "small"
    prov = data["provenance"]
    assert prov["recipe"] == "untrained-test" and prov["dataset"] == "synthetic"
    assert prov["metrics"] == {"miou": 0.0}
    assert data["onnx"]["sha256"] == sha256_file(model_dir / "model.onnx")
    assert data["onnx"]["opset"] >= 17
    assert data["tensorrt_profile"]["points"] == [1, 1000, 160000]  # CLI flags respected
    assert data["checkpoint"]["sha256"] == sha256_file(model_dir / "student.pt")
    # which graph is for which target
    assert data["onnx"]["form"] == "tables" and "tensorrt" in data["onnx"]["for"]
    cpu = data["onnx_cpu"]
    assert cpu["file"] == "model_cpu.onnx" and cpu["form"] == "pairs"
    assert cpu["sha256"] == sha256_file(model_dir / "model_cpu.onnx")
    assert cpu["inputs"] == input_names(4, "pairs") and "onnxruntime" in cpu["for"]
    fused = data["onnx_cpu_fused"]  # written whether or not the custom-op library builds here
    assert fused["file"] == "model_cpu_fused.onnx" and fused["form"] == "fused"
    assert fused["sha256"] == sha256_file(model_dir / "model_cpu_fused.onnx")
    assert fused["inputs"] == cpu["inputs"] and "custom-op library" in fused["for"]
    assert fused["custom_ops"]["domain"] == "ai.xmodelkd"
    assert data["max_points"] == 160000  # the --max-points flag, the profile's max
    assert data["tensorrt_profile"]["voxels"][2] == 160000  # voxels never exceed points
    assert data["intensity_range"] is None  # the test checkpoint has none in provenance
    meta = ModelMetadata.read(model_dir)
    assert meta.num_levels == 4 and meta.class_names == list(CLASS_NAMES)
    assert meta.max_points == 160000 and meta.intensity_range is None


def test_cpu_graph_touches_real_pairs_only(model_dir: Path) -> None:
    """model_cpu.onnx: the pair-list form (ScatterND-add, no full Gather tables)."""
    cpu = onnx.load(str(model_dir / "model_cpu.onnx"))
    onnx.checker.check_model(cpu, full_check=True)
    ops = {n.op_type for n in cpu.graph.node}
    assert "ScatterND" in ops and "BatchNormalization" not in ops
    adds = [n for n in cpu.graph.node if n.op_type == "ScatterND"]
    assert all(a.attribute[0].s == b"add" for a in adds)
    inputs = {i.name: i for i in cpu.graph.input}
    assert list(inputs) == input_names(4, "pairs")
    dims = {n: i.type.tensor_type.shape.dim[0] for n, i in inputs.items()}
    assert dims["subm_0_in"].dim_param == dims["subm_0_out"].dim_param != dims["up_0_in"].dim_param
    assert dims["subm_0_bounds"].dim_value == 28 and dims["down_1_bounds"].dim_value == 9


@pytest.mark.parametrize("kernels", [True, False], ids=["fused-kernels", "eager"])
def test_fused_graph_is_custom_nodes_only(
    model_dir: Path, tmp_path: Path, kernels: bool
) -> None:
    """model_cpu_fused.onnx: one SparseConv per conv, one PointHead, no ScatterND, and no
    stray ops from tracing the nodes' values (whichever form computed them)."""
    from xmodelkd_ros.export import export_onnx
    from xmodelkd_ros.nets.checkpoint import load_student
    from xmodelkd_ros.sparse import fused

    ckpt = load_student(model_dir / "student.pt")
    path = tmp_path / "fused.onnx"
    if kernels:
        export_onnx(ckpt, path, form="fused")
    else:
        with fused.disabled():
            export_onnx(ckpt, path, form="fused")
    g = onnx.load(str(path))
    ops = [n.op_type for n in g.graph.node]
    assert ops.count("SparseConv") == 22 and ops.count("PointHead") == 1
    assert set(ops) <= {"SparseConv", "PointHead", "Concat", "Gemm", "MatMul", "Add", "Sub",
                        "Div"}, sorted(set(ops))  # fmt: skip
    assert {o.domain: o.version for o in g.opset_import}["ai.xmodelkd"] == 1
    shipped = onnx.load(str(model_dir / "model_cpu_fused.onnx"))
    assert [n.op_type for n in shipped.graph.node] == ops


def test_intensity_range_travels_from_checkpoint(tmp_path: Path) -> None:
    from xmodelkd_ros.export import export_checkpoint
    from xmodelkd_ros.sim.fixtures import random_student_checkpoint

    ckpt = random_student_checkpoint("small", seed=3)
    ckpt.provenance["intensity_range"] = [0.0, 255.0]
    meta = export_checkpoint(ckpt, tmp_path / "m", profile={"points": [1, 10, 5000],
                                                            "voxels": [1, 10, 5000]})  # fmt: skip
    data = json.loads((tmp_path / "m" / "model.json").read_text())
    assert data["intensity_range"] == [0.0, 255.0] and data["max_points"] == 5000
    read = ModelMetadata.read(tmp_path / "m")
    assert read.intensity_range == (0.0, 255.0) == meta.intensity_range
    assert read.max_points == 5000


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = export_main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")])
    assert rc == 1 and "not found" in capsys.readouterr().err
    rc = export_main(["--checkpoint", "x", "--out", "y", "--min-points", "5", "--opt-points", "2"])
    assert rc == 2
