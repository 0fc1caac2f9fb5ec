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
from xmodelkd_ros.nets.inputs import build_inputs
from xmodelkd_ros.runtime import ModelLoadError, Segmenter
from xmodelkd_ros.runtime.graph import flatten_inputs
from xmodelkd_ros.sim.fixtures import exported_random_model, synthetic_scan

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


def test_torch_and_onnxruntime_agree(seg_torch: Segmenter, seg_ort: Segmenter) -> None:
    scan = synthetic_scan(12_000, seed=11)
    inputs = build_inputs([scan], seg_torch.grid, 4, 4)
    feeds = flatten_inputs(inputs)
    a = seg_torch.backend.infer(feeds).numpy()
    b = seg_ort.backend.infer(feeds).numpy()
    scale = np.abs(a).max()
    assert scale > 1.0 and len(np.unique(a.argmax(1))) >= 5  # non-trivial model
    assert np.abs(a - b).max() <= 1e-4 * scale
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


def test_auto_picks_onnxruntime_on_cpu(model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="xmodelkd_ros.runtime"):
        seg = Segmenter.from_model_dir(model_dir, backend="auto", device="cpu")
    assert seg.backend_name == "onnxruntime"
    assert "backend auto -> onnxruntime" in caplog.text
    assert Segmenter.from_model_dir(model_dir, backend="torch").backend_name == "torch"
    with pytest.raises(ValueError):
        Segmenter.from_checkpoint(model_dir / "student.pt", backend="onnxruntime")


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

    tampered = tmp_path / "tampered"
    shutil.copytree(model_dir, tampered)
    data = bytearray((tampered / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (tampered / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        Segmenter.from_model_dir(tampered, backend="onnxruntime")

    (tampered / "model.onnx").unlink()
    with pytest.raises(ModelLoadError, match=r"model\.onnx missing"):
        Segmenter.from_model_dir(tampered, backend="onnxruntime")

    wrong = tmp_path / "wrong"
    shutil.copytree(model_dir, wrong)
    meta = json.loads((wrong / "model.json").read_text())
    meta["format"] = "something-else"
    (wrong / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="format"):
        Segmenter.from_model_dir(wrong)
    with pytest.raises(ModelLoadError):
        Segmenter.from_checkpoint(tmp_path / "nope.pt")
