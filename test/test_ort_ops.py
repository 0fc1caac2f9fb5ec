"""ONNX Runtime custom ops (``sparse/ort_ops.cpp``) and the fused CPU graph.

Each node is checked against an independent computation (a brute-force pair sum in
numpy; the point branch's formula), fed through a real ONNX Runtime session; the whole
exported graph against the torch backend. Without ONNX Runtime's headers or a compiler
these tests skip with the reason :func:`ort_ops.available` gives.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is in the 'export' extra")
onnx = pytest.importorskip("onnx", reason="onnx is in the 'export' extra")
from onnx import TensorProto, helper  # noqa: E402

from xmodelkd_ros.nets.inputs import build_inputs  # noqa: E402
from xmodelkd_ros.runtime import ModelLoadError, OnnxRuntimeBackend, Segmenter  # noqa: E402
from xmodelkd_ros.runtime import backends as backends_mod  # noqa: E402
from xmodelkd_ros.runtime.graph import input_names  # noqa: E402
from xmodelkd_ros.runtime.metadata import ModelMetadata  # noqa: E402
from xmodelkd_ros.runtime.registry import choose_backend  # noqa: E402
from xmodelkd_ros.sim.fixtures import exported_random_model, synthetic_scan  # noqa: E402
from xmodelkd_ros.sparse import ort_ops  # noqa: E402

DOMAIN = ort_ops.DOMAIN


@pytest.fixture(scope="module")
def ops_library() -> Path:
    ok, why = ort_ops.available()
    if not ok:
        pytest.skip(f"custom-op library unavailable: {why}")
    return ort_ops.library_path()


def _session(model: onnx.ModelProto, threads: int = 1) -> ort.InferenceSession:
    opts = ort_ops.session_options()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _node_model(op: str, inputs: list[tuple[str, int]], **attrs: int) -> onnx.ModelProto:
    """A graph of one ``ai.xmodelkd`` node with every input a graph input."""
    node = helper.make_node(op, [n for n, _ in inputs], ["y"], domain=DOMAIN, **attrs)
    graph = helper.make_graph(
        [node], op,
        [helper.make_tensor_value_info(n, t, None) for n, t in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    )


CONV_INPUTS = [("x", TensorProto.FLOAT), ("weight", TensorProto.FLOAT), ("bias", TensorProto.FLOAT),
               ("in_rows", TensorProto.INT64), ("out_rows", TensorProto.INT64),
               ("bounds", TensorProto.INT64)]  # fmt: skip


def _random_pairs(rng: np.random.Generator, K: int, n_in: int, n_out: int, skip: int):
    """Per offset a random set of output rows (each at most once, ascending) with random
    input rows; offset ``skip`` left empty (a submanifold conv's centre)."""
    ins, outs, bounds = [], [], [0]
    for k in range(K):
        m = 0 if k == skip else int(rng.integers(0, n_out + 1))
        outs.append(np.sort(rng.choice(n_out, m, replace=False)))
        ins.append(rng.integers(0, n_in, m))
        bounds.append(bounds[-1] + m)
    return np.concatenate(ins), np.concatenate(outs), np.array(bounds, np.int64)


def _brute_force(x, w, b, ins, outs, bounds, centre, n_out, residual, relu):
    out = np.tile(b, (n_out, 1)).astype(np.float64)
    if centre >= 0:
        out += x @ w[centre]
    for k in range(len(w)):
        for p in range(bounds[k], bounds[k + 1]):
            out[outs[p]] += x[ins[p]] @ w[k]
    if residual is not None:
        out += residual
    return np.maximum(out, 0) if relu else out


@pytest.mark.parametrize(
    ("kind", "cin", "cout", "threads"),
    [("subm", 16, 32, 1), ("subm", 32, 32, 2), ("down", 16, 64, 2), ("inverse", 48, 20, 1)],
)
def test_sparse_conv_node_matches_brute_force(
    ops_library: Path, kind: str, cin: int, cout: int, threads: int
) -> None:
    rng = np.random.default_rng(cin * 7 + cout)
    K = 27 if kind == "subm" else 8
    n_in = 700
    n_out = n_in if kind == "subm" else 300
    centre = 13 if kind == "subm" else -1
    ins, outs, bounds = _random_pairs(rng, K, n_in, n_out, centre)
    if centre < 0:  # strided / inverse: M = max(out_rows) + 1 (the pairs reach every row)
        n_out = int(outs.max()) + 1
    x = rng.standard_normal((n_in, cin)).astype(np.float32)
    w = (rng.standard_normal((K, cin, cout)) / np.sqrt(cin)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    residual = rng.standard_normal((n_out, cout)).astype(np.float32) if kind == "subm" else None
    relu = kind != "inverse"
    inputs = CONV_INPUTS + ([("residual", TensorProto.FLOAT)] if residual is not None else [])
    sess = _session(_node_model("SparseConv", inputs, centre=centre, relu=int(relu)), threads)
    feeds = {"x": x, "weight": w, "bias": b, "in_rows": ins, "out_rows": outs, "bounds": bounds}
    if residual is not None:
        feeds["residual"] = residual
    (got,) = sess.run(["y"], feeds)
    want = _brute_force(x, w, b, ins, outs, bounds, centre, n_out, residual, relu)
    assert got.shape == (n_out, cout)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_sparse_conv_node_rejects_bad_pair_lists(ops_library: Path) -> None:
    """A bad feed is an error from session.run naming what is wrong, never a read outside a
    buffer (the kernel trusts the lists once checked)."""
    rng = np.random.default_rng(3)
    ins, outs, bounds = _random_pairs(rng, 27, 50, 50, 13)
    good = {"x": rng.standard_normal((50, 8)).astype(np.float32),
            "weight": np.zeros((27, 8, 16), np.float32), "bias": np.zeros(16, np.float32),
            "in_rows": ins, "out_rows": outs, "bounds": bounds}  # fmt: skip
    sess = _session(_node_model("SparseConv", CONV_INPUTS, centre=13, relu=0))
    assert sess.run(["y"], good)[0].shape == (50, 16)
    k = int(np.argmax(np.diff(bounds) >= 2))  # an offset with two pairs or more
    lo = bounds[k]
    far, unsorted = ins.copy(), outs.copy()
    far[lo] = 50
    unsorted[lo], unsorted[lo + 1] = unsorted[lo + 1], unsorted[lo]
    short = bounds.copy()
    short[-1] -= 1
    cases = {
        "input row is out of range": {"in_rows": far},
        "ascending within each offset": {"out_rows": unsorted},
        "bounds must run from 0": {"bounds": short},
        "shapes do not match": {"bias": np.zeros(15, np.float32)},
    }
    for message, change in cases.items():
        with pytest.raises(Exception, match=message):
            sess.run(["y"], {**good, **change})


def test_point_head_node_matches_its_formula(ops_library: Path) -> None:
    rng = np.random.default_rng(5)
    n, v, cin, h, f, c = 333, 90, 4, 16, 32, 19
    shapes = {"pts": (n, cin), "vox": (v, f), "mean": (cin,), "std": (cin,), "w1": (cin, h),
              "b1": (h,), "w2": (h, f), "b2": (f,), "w3": (f, f), "b3": (f,), "w4": (f, c),
              "b4": (c,)}  # fmt: skip
    t = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    t["std"] = np.abs(t["std"]) + 0.5
    p2v = rng.integers(0, v, n)
    order = ["pts", "p2v", "vox", "mean", "std", "w1", "b1", "w2", "b2", "w3", "b3", "w4", "b4"]
    inputs = [(k, TensorProto.INT64 if k == "p2v" else TensorProto.FLOAT) for k in order]
    sess = _session(_node_model("PointHead", inputs), threads=2)
    (got,) = sess.run(["y"], {**t, "p2v": p2v})
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    hid = relu(relu((t["pts"] - t["mean"]) / t["std"] @ t["w1"] + t["b1"]) @ t["w2"] + t["b2"])
    want = relu((t["vox"][p2v] + hid) @ t["w3"] + t["b3"]) @ t["w4"] + t["b4"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    bad = p2v.copy()
    bad[7] = v
    with pytest.raises(Exception, match="point2voxel index is out of range"):
        sess.run(["y"], {**t, "p2v": bad})


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return exported_random_model("small", seed=0)


def test_fused_graph_is_one_node_per_conv_and_agrees_with_torch(
    ops_library: Path, model_dir: Path
) -> None:
    """ONNX Runtime on the fused graph gives the torch backend's logits to 1e-4."""
    graph = onnx.load(str(model_dir / "model_cpu_fused.onnx"))
    ops = [n.op_type for n in graph.graph.node]
    assert "ScatterND" not in ops and "BatchNormalization" not in ops
    assert ops.count("PointHead") == 1 and ops.count("SparseConv") >= 20
    assert all(n.domain == DOMAIN for n in graph.graph.node if n.op_type in ort_ops.OPS)
    assert [i.name for i in graph.graph.input] == input_names(4, "fused")
    meta = json.loads((model_dir / "model.json").read_text())["onnx_cpu_fused"]
    assert meta["custom_ops"] == {"domain": DOMAIN, "version": 1, "ops": list(ort_ops.OPS)}

    seg_torch = Segmenter.from_model_dir(model_dir, backend="torch")
    seg_ort = Segmenter.from_model_dir(model_dir, backend="onnxruntime")
    assert seg_ort.backend.form == "fused"
    scan = synthetic_scan(20_000, seed=4)
    inputs = build_inputs([scan], seg_torch.grid, 4, 4)
    a = seg_torch.backend.infer(inputs).numpy()
    b = seg_ort.backend.infer(inputs).numpy()
    scale = np.abs(a).max()
    assert scale > 1.0 and len(np.unique(a.argmax(1))) >= 5  # non-trivial model
    assert np.abs(a - b).max() <= 1e-4 * scale
    assert (seg_torch.segment(scan).labels == seg_ort.segment(scan).labels).all()


def test_unavailable_library_says_why_and_falls_back(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No headers -> one line naming where they were looked for; ONNX Runtime then runs
    the standard-ops graph and ``auto`` ranks it below the torch backend."""
    monkeypatch.setenv("XMODELKD_ORT_INCLUDE", str(tmp_path))
    ort_ops.reset()
    try:
        ok, why = ort_ops.available()
        assert not ok and "no ONNX Runtime headers" in why and str(tmp_path) in why
        assert "fetch_ort_headers.sh" in why
        meta = ModelMetadata.read(model_dir)
        path, form = OnnxRuntimeBackend.graph_for(model_dir, meta, "cpu")
        assert (path.name, form) == ("model_cpu.onnx", "pairs")
        with pytest.raises(ModelLoadError, match="needs the custom-op library"):
            OnnxRuntimeBackend(model_dir / "model_cpu_fused.onnx", "cpu", form="fused")
        assert backends_mod._onnxruntime_cpu_rank(model_dir) > backends_mod._torch_cpu_rank()
        if backends_mod.fused.available()[0]:
            assert choose_backend("cpu", model_dir) == "torch"
    finally:
        monkeypatch.delenv("XMODELKD_ORT_INCLUDE")
        ort_ops.reset()


def test_headers_newer_than_the_runtime_are_refused(
    ops_library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ort, "__version__", "1.20.1")
    ort_ops.reset()
    try:
        ok, why = ort_ops.available()
        need = ort_ops.header_api_version(ort_ops.find_headers())
        assert not ok and f"need ONNX Runtime C API {need}" in why and "serves 20" in why
    finally:
        monkeypatch.undo()
        ort_ops.reset()


def test_older_export_runs_the_pairs_graph_and_ranks_below_torch(
    ops_library: Path, model_dir: Path, tmp_path: Path
) -> None:
    """An export from before the fused graph: ONNX Runtime runs its pairs graph there, so
    ``auto`` does not rank it first for that model (it would be ~3x slower than torch)."""
    old = tmp_path / "old"
    shutil.copytree(model_dir, old, ignore=shutil.ignore_patterns("model_cpu_fused.onnx"))
    data = json.loads((old / "model.json").read_text())
    data.pop("onnx_cpu_fused")
    (old / "model.json").write_text(json.dumps(data))
    seg = Segmenter.from_model_dir(old, backend="onnxruntime")
    assert seg.backend.form == "pairs"
    assert backends_mod._onnxruntime_cpu_rank(old) > backends_mod._torch_cpu_rank()
    assert backends_mod._onnxruntime_cpu_rank(model_dir) < backends_mod._torch_cpu_rank()
    assert backends_mod._onnxruntime_cpu_rank(None) == backends_mod._onnxruntime_cpu_rank(model_dir)


def test_threads_do_not_change_the_fused_graph(ops_library: Path, model_dir: Path) -> None:
    """Tiles and point blocks write disjoint rows: 1 and 2 intra-op threads agree bit for bit."""
    scan = synthetic_scan(15_000, seed=9)
    outs = []
    for threads in (1, 2):
        seg = Segmenter.from_model_dir(model_dir, backend="onnxruntime", intra_op_threads=threads)
        outs.append(seg.backend.infer(build_inputs([scan], seg.grid, 4, 4)).numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
