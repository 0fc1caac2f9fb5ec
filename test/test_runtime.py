"""Segmenter: torch and ONNX Runtime agree; any point count works; bad input gets unlabeled."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from xmodelkd_ros.labels import NUM_CLASSES, UNLABELED
from xmodelkd_ros.nets.checkpoint import load_student
from xmodelkd_ros.nets.inputs import build_inputs
from xmodelkd_ros.registry import Registry
from xmodelkd_ros.runtime import (
    BACKEND_REGISTRY,
    BACKENDS,
    ModelLoadError,
    OnnxRuntimeBackend,
    Segmenter,
    choose_backend,
    register_backend,
)
from xmodelkd_ros.runtime import registry as registry_mod
from xmodelkd_ros.sim.fixtures import exported_random_model, synthetic_scan
from xmodelkd_ros.sparse import ort_ops, use_impl

STAGES = {"voxelize", "maps", "inference", "postprocess", "total"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The machine is shared; one intra-op thread avoids OpenMP spin contention."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return exported_random_model("small", seed=0)


@pytest.fixture(scope="module")
def seg_torch(model_dir: Path) -> Segmenter:
    return Segmenter.from_checkpoint(model_dir / "student.pt", backend="torch")


@pytest.fixture(scope="module")
def seg_ort(model_dir: Path) -> Segmenter:
    return Segmenter.from_model_dir(model_dir, backend="onnxruntime")


def test_torch_and_onnxruntime_agree(
    seg_torch: Segmenter, seg_ort: Segmenter, model_dir: Path
) -> None:
    scan = synthetic_scan(12_000, seed=11)
    inputs = build_inputs([scan], seg_torch.grid, 4, 4)
    a = seg_torch.backend.infer(inputs).numpy()
    # CPU runs model_cpu_fused.onnx where the custom-op library builds, else model_cpu.onnx
    assert seg_ort.backend.form == ("fused" if ort_ops.available()[0] else "pairs")
    b = seg_ort.backend.infer(inputs).numpy()
    pairs = OnnxRuntimeBackend(model_dir / "model_cpu.onnx", "cpu", form="pairs")
    assert np.abs(a - pairs.infer(inputs).numpy()).max() <= 1e-4 * np.abs(a).max()
    tables = OnnxRuntimeBackend(model_dir / "model.onnx", "cpu", form="tables")
    c = tables.infer(inputs).numpy()
    scale = np.abs(a).max()
    assert scale > 1.0 and len(np.unique(a.argmax(1))) >= 5  # non-trivial model
    assert np.abs(a - b).max() <= 1e-4 * scale
    assert np.abs(a - c).max() <= 1e-4 * scale  # the TensorRT graph computes the same
    # and the unfolded student in the original Gather form (what the labels were before)
    net = load_student(model_dir / "student.pt").build()
    with torch.inference_mode(), use_impl("gather"):
        ref = net(inputs.voxel_feats, inputs.point_feats, inputs.point2voxel, inputs.maps)
    assert np.abs(a - ref.logits.numpy()).max() <= 1e-4 * scale
    ra, rb = seg_torch.segment(scan), seg_ort.segment(scan)
    assert (ra.labels == rb.labels).mean() >= 0.999
    np.testing.assert_allclose(ra.confidence, rb.confidence, atol=1e-4)
    assert set(ra.timings) == STAGES and set(rb.timings) == STAGES
    assert rb.timings["total"] >= rb.timings["inference"] > 0
    # maps are timed apart from voxelization (build_inputs reports both stages)
    assert rb.timings["maps"] > 0 and rb.timings["voxelize"] > 0


@pytest.mark.parametrize("n", [0, 1, 100])
@pytest.mark.parametrize("which", ["torch", "onnxruntime"])
def test_small_point_counts(n: int, which: str, seg_torch: Segmenter, seg_ort: Segmenter) -> None:
    seg = seg_torch if which == "torch" else seg_ort
    res = seg.segment(synthetic_scan(max(n, 1), seed=n)[:n])
    assert res.labels.shape == (n,) and res.labels.dtype == np.uint16
    assert res.confidence.shape == (n,) and res.confidence.dtype == np.float32
    if n:
        assert res.labels.min() >= 1 and res.labels.max() <= NUM_CLASSES
        assert (res.confidence >= 1.0 / NUM_CLASSES - 1e-6).all() and (res.confidence <= 1).all()


def test_150k_points(seg_ort: Segmenter) -> None:
    scan = synthetic_scan(150_000, seed=3)
    t0 = time.perf_counter()
    res = seg_ort.segment(scan)
    assert time.perf_counter() - t0 < 20.0
    assert res.labels.shape == (150_000,)
    assert (res.labels >= 1).all()  # the generator stays inside the grid


@pytest.mark.parametrize("which", ["torch", "onnxruntime"])
def test_invalid_points_unlabeled(which: str, seg_torch: Segmenter, seg_ort: Segmenter) -> None:
    seg = seg_torch if which == "torch" else seg_ort
    scan = synthetic_scan(500, seed=5)
    bad = np.array(
        [
            [80.0, 0.0, 0.0, 0.5],  # beyond x range
            [0.0, -60.0, 0.0, 0.5],
            [5.0, 5.0, 9.0, 0.5],  # above z range
            [np.nan, 1.0, 1.0, 0.5],
            [1.0, 1.0, -1.0, np.inf],  # bad intensity
        ],
        dtype=np.float32,
    )
    pts = np.concatenate([scan[:200], bad, scan[200:]])
    res = seg.segment(pts)
    assert (res.labels[200:205] == UNLABELED).all()
    assert (res.confidence[200:205] == 0).all()
    good = np.r_[0:200, 205 : len(pts)]
    assert (res.labels[good] >= 1).all() and (res.confidence[good] > 0).all()
    # the valid points' labels do not depend on the invalid rows being there
    np.testing.assert_array_equal(seg.segment(scan).labels, res.labels[good])
    # extra columns (ring, time ...) are ignored
    wide = np.concatenate([scan, np.ones((len(scan), 2), np.float32)], 1)
    np.testing.assert_array_equal(seg.segment(wide).labels, res.labels[good])


def test_all_points_out_of_range(seg_ort: Segmenter) -> None:
    pts = np.full((10, 4), 500.0, dtype=np.float32)
    res = seg_ort.segment(pts)
    assert (res.labels == UNLABELED).all() and (res.confidence == 0).all()
    assert res.timings["inference"] == 0.0


def test_bad_shape(seg_ort: Segmenter) -> None:
    with pytest.raises(ValueError):
        seg_ort.segment(np.zeros((10, 3), np.float32))


def test_auto_picks_the_fastest_available_backend(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The rule: lowest registered speed rank for the device type among available ones."""
    ranked = sorted(
        (e for e in BACKEND_REGISTRY.values() if "cpu" in e.rank),
        key=lambda e: e.rank_for("cpu", model_dir),
    )
    fastest = next(e.name for e in ranked if e.cls.available("cpu", model_dir)[0])
    with caplog.at_level(logging.INFO, logger="xmodelkd_ros.runtime"):
        seg = Segmenter.from_model_dir(model_dir, backend="auto", device="cpu")
    assert seg.backend_name == fastest == choose_backend("cpu", model_dir)
    assert f"backend auto -> {fastest}" in caplog.text
    assert "tensorrt" not in [e.name for e in ranked]  # never offered on CPU
    assert set(BACKENDS) == {"auto", *BACKEND_REGISTRY}
    for name in ("torch", "onnxruntime"):
        assert Segmenter.from_model_dir(model_dir, backend=name).backend_name == name
    with pytest.raises(ValueError):
        Segmenter.from_checkpoint(model_dir / "student.pt", backend="onnxruntime")
    # an unavailable backend is skipped: whichever of the two is missing, auto takes the other
    for missing, left in (("student.pt", "onnxruntime"), ("model*.onnx", "torch")):
        partial = model_dir.parent / f"without_{missing.replace('*', '_')}"
        if not partial.exists():
            shutil.copytree(model_dir, partial, ignore=shutil.ignore_patterns(missing))
        assert choose_backend("cpu", partial) == left


def test_auto_on_cuda_skips_onnxruntime_without_its_cuda_provider(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen on an H200 machine (no TensorRT, the CPU-only onnxruntime wheel): ``auto``
    took ONNX Runtime, which ran on the CPU at ~10x torch-CUDA's latency."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    from xmodelkd_ros.runtime.backends import OnnxRuntimeBackend, TorchBackend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # only availability is asked
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    ok, why = OnnxRuntimeBackend.available("cuda:0", model_dir)
    assert not ok and "no CUDA provider" in why
    assert OnnxRuntimeBackend.available("cpu", model_dir)[0]  # the CPU rule is unchanged
    assert TorchBackend.available("cuda", model_dir)[0]
    ranked = sorted(
        (e for e in BACKEND_REGISTRY.values() if "cuda" in e.rank), key=lambda e: e.rank_for("cuda")
    )
    expected = next(e.name for e in ranked if e.cls.available("cuda", model_dir)[0])
    assert expected != "onnxruntime"
    assert choose_backend("cuda", model_dir) == expected  # torch, or TensorRT where usable
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: providers)
    assert OnnxRuntimeBackend.available("cuda", model_dir)[0]


def test_registry_rule_with_fake_backends(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(registry_mod, "BACKEND_REGISTRY", Registry("backend"))
    state = {"fast": False}

    def fake(name: str, rank: dict[str, int], ok: object) -> None:
        @register_backend(name, rank=rank)
        class Fake:
            available = staticmethod(lambda device, model_dir: (ok(), f"{name} off"))
            load = infer = staticmethod(lambda *a: None)

    fake("fast", {"cpu": 0}, lambda: state["fast"])
    fake("slow", {"cpu": 5, "cuda": 0}, lambda: True)
    fake("gpu_only", {"cuda": 1}, lambda: True)
    assert choose_backend("cpu", tmp_path) == "slow"  # fast unavailable
    state["fast"] = True
    assert choose_backend("cpu", tmp_path) == "fast"
    assert choose_backend("cuda:0", tmp_path) == "slow"
    monkeypatch.setattr(registry_mod, "BACKEND_REGISTRY", Registry("backend"))
    fake("never", {"cpu": 0}, lambda: False)
    with pytest.raises(ModelLoadError, match="never: never off"):
        choose_backend("cpu", tmp_path)
    with pytest.raises(TypeError, match="lacks"):
        register_backend("broken", {"cpu": 0})(type("Broken", (), {}))
    # a rank may depend on the machine (the torch backend's on its fused kernels)
    monkeypatch.setattr(registry_mod, "BACKEND_REGISTRY", Registry("backend"))
    fake("steady", {"cpu": 1}, lambda: True)
    fake("kernels", {"cpu": lambda model_dir: 0 if state["fast"] else 2}, lambda: True)
    assert choose_backend("cpu", tmp_path) == "kernels"
    state["fast"] = False
    assert choose_backend("cpu", tmp_path) == "steady"


def test_model_load_errors(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        Segmenter.from_model_dir(tmp_path / "missing")
    with pytest.raises(ModelLoadError, match=r"model\.json missing"):
        Segmenter.from_model_dir(tmp_path)

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot parse"):
        Segmenter.from_model_dir(broken, backend="onnxruntime")

    # CPU reads model_cpu_fused.onnx (model_cpu.onnx without the custom-op library), CUDA
    # devices model.onnx: each is checked where it is used
    cpu_graph = "model_cpu_fused.onnx" if ort_ops.available()[0] else "model_cpu.onnx"
    for name, device in ((cpu_graph, "cpu"), ("model.onnx", "cuda")):
        tampered = tmp_path / f"tampered_{device}"
        shutil.copytree(model_dir, tampered)
        data = bytearray((tampered / name).read_bytes())
        data[-10] ^= 0xFF
        (tampered / name).write_bytes(bytes(data))
        with pytest.raises(ModelLoadError, match="sha256"):
            Segmenter.from_model_dir(tampered, backend="onnxruntime", device=device)
        (tampered / name).unlink()
        with pytest.raises(ModelLoadError, match=rf"{name.replace('.', '[.]')} missing"):
            Segmenter.from_model_dir(tampered, backend="onnxruntime", device=device)

    wrong = tmp_path / "wrong"
    shutil.copytree(model_dir, wrong)
    meta = json.loads((wrong / "model.json").read_text())
    meta["format"] = "something-else"
    (wrong / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="format"):
        Segmenter.from_model_dir(wrong)
    with pytest.raises(ModelLoadError):
        Segmenter.from_checkpoint(tmp_path / "nope.pt")


def test_old_model_json_still_loads(model_dir: Path, tmp_path: Path, seg_torch: Segmenter) -> None:
    """Exports from before the CPU graph / max_points / intensity_range keys keep working:
    ONNX Runtime then runs the tables graph on CPU, max_points comes from the profile."""
    old = tmp_path / "old"
    shutil.copytree(model_dir, old, ignore=shutil.ignore_patterns("model_cpu*.onnx"))
    meta = json.loads((old / "model.json").read_text())
    for key in ("onnx_cpu", "onnx_cpu_fused", "max_points", "intensity_range"):
        meta.pop(key)
    for key in ("form", "for"):
        meta["onnx"].pop(key)
    (old / "model.json").write_text(json.dumps(meta))
    seg = Segmenter.from_model_dir(old, backend="onnxruntime")
    assert seg.backend.form == "tables"
    assert seg.metadata.max_points == meta["tensorrt_profile"]["points"][2]
    assert seg.metadata.intensity_range is None and seg.metadata.cpu_onnx is None
    scan = synthetic_scan(3000, seed=21)
    assert (seg.segment(scan).labels == seg_torch.segment(scan).labels).mean() >= 0.999


@pytest.mark.parametrize("form", ["model_dir", "checkpoint"])
def test_node_loader_bounds_inference_threads(model_dir: Path, form: str) -> None:
    """``inference_threads`` reaches torch (whose fused kernels read the same count) and
    ONNX Runtime's intra-op pool; 0 leaves both at their defaults."""
    from dataclasses import replace

    from xmodelkd_ros.node.params import parse_config
    from xmodelkd_ros.node.processing import load_segmenter

    path = model_dir if form == "model_dir" else model_dir / "student.pt"
    base = parse_config({"model": str(path), "backend": "torch"}).model
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        load_segmenter(base)
        assert torch.get_num_threads() == 2  # 0: untouched
        load_segmenter(replace(base, inference_threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(prev)
    if form == "model_dir":
        ort_cfg = replace(base, backend="onnxruntime", inference_threads=1)
        session = load_segmenter(ort_cfg).backend.session
        assert session.get_session_options().intra_op_num_threads == 1
