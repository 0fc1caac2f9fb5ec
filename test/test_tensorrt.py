"""TensorRT: engine cache keys and profiles everywhere; build/run/agreement where a GPU is.

The GPU tests compare TensorRT logits and labels against the eager PyTorch student on
the same scan, so a wrong engine (bad profile, dtype or binding) fails, not only a crash.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from xmodelkd_ros.nets.inputs import build_inputs
from xmodelkd_ros.runtime import Segmenter
from xmodelkd_ros.runtime.graph import input_names
from xmodelkd_ros.runtime.tensorrt import (
    DEFAULT_PROFILE,
    engine_cache_key,
    profile_shapes,
    profile_with_max_points,
    tensorrt_available,
)
from xmodelkd_ros.sim.fixtures import exported_random_model, synthetic_scan

# ------------------------------------------------------------------ CPU-side checks


def test_cache_key_changes_with_every_component() -> None:
    base = ("NVIDIA H100", "10.3.0", "ab" * 32, False, DEFAULT_PROFILE)
    key = engine_cache_key(*base)
    assert key == engine_cache_key(*base)
    variants = [
        ("NVIDIA A100", *base[1:]),
        (base[0], "10.4.0", *base[2:]),
        (*base[:2], "cd" * 32, *base[3:]),
        (*base[:3], True, base[4]),
        (*base[:4], {**DEFAULT_PROFILE, "points": [1, 10, 20]}),
    ]
    assert len({key} | {engine_cache_key(*v) for v in variants}) == 6


def test_profile_shapes_cover_one_point_and_levels() -> None:
    names = input_names(4)
    dims: dict[str, list[int | None]] = {}
    for n in names:
        width = {"voxel_feats": 4, "point_feats": 4, "point2voxel": None}.get(n)
        if n.startswith("subm"):
            width = 27
        elif n.startswith(("down", "up")):
            width = 8
        dims[n] = [None] if width is None else [None, width]
    shapes = profile_shapes(dims, {"points": [1, 100, 1000], "voxels": [1, 90, 900]})
    assert shapes["point2voxel"] == ((1,), (100,), (1000,))
    assert shapes["voxel_feats"] == ((1, 4), (90, 4), (900, 4))
    assert shapes["subm_2"] == ((1, 27), (10, 27), (900, 27))
    assert shapes["down_0"][0] == (1, 8) and shapes["down_0"][2] == (900, 8)
    for lo, opt, hi in shapes.values():
        assert all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True))


def test_max_points_override_sets_the_profile_max() -> None:
    prof = {"points": [1, 120_000, 200_000], "voxels": [1, 80_000, 150_000]}
    assert profile_with_max_points(prof, None) == prof
    assert profile_with_max_points(prof, 200_000) == prof  # model.json's own max: unchanged
    big = profile_with_max_points(prof, 400_000)
    assert big == {"points": [1, 120_000, 400_000], "voxels": [1, 80_000, 400_000]}
    small = profile_with_max_points(prof, 50_000)  # opt never above max
    assert small == {"points": [1, 50_000, 50_000], "voxels": [1, 50_000, 50_000]}
    assert profile_with_max_points(None, 10)["points"] == [1, 10, 10]
    with pytest.raises(ValueError):
        profile_with_max_points(prof, 0)


# ------------------------------------------------------------------ GPU checks


@pytest.fixture(scope="module")
def trt_env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("tensorrt", reason="TensorRT tests need the tensorrt Python package")
    ok, reason = tensorrt_available()
    if not ok:
        pytest.skip(f"TensorRT tests need a CUDA GPU: {reason}")
    model_dir = exported_random_model("small", seed=0)
    return {"model_dir": model_dir, "cache": tmp_path_factory.mktemp("engines")}


def _reference(model_dir: Path, scan: np.ndarray) -> tuple[torch.Tensor, Segmenter]:
    seg = Segmenter.from_checkpoint(model_dir / "student.pt", backend="torch", device="cuda")
    return seg.backend.infer(build_inputs([scan], seg.grid, 4, 4).to("cuda")).cpu(), seg


def test_tensorrt_matches_torch(trt_env: dict) -> None:
    model_dir, cache = trt_env["model_dir"], trt_env["cache"]
    seg = Segmenter.from_model_dir(model_dir, "tensorrt", "cuda", engine_cache=cache)
    assert seg.backend_name == "tensorrt"
    scan = synthetic_scan(20_000, seed=21)
    ref, seg_torch = _reference(model_dir, scan)
    out = seg.backend.infer(build_inputs([scan], seg.grid, 4, 4)).cpu()
    scale = ref.abs().max().item()
    assert (out - ref).abs().max().item() <= 1e-3 * scale
    ra, rb = seg.segment(scan), seg_torch.segment(scan)
    assert (ra.labels == rb.labels).mean() >= 0.999
    for n in (1, 100):  # profile minimum of 1
        res = seg.segment(scan[:n])
        np.testing.assert_array_equal(res.labels, seg_torch.segment(scan[:n]).labels)
    assert seg.segment(scan[:0]).labels.shape == (0,)


def test_engine_cache_hit_and_rebuild(trt_env: dict, tmp_path: Path) -> None:
    model_dir, cache = trt_env["model_dir"], trt_env["cache"]
    Segmenter.from_model_dir(model_dir, "tensorrt", "cuda", engine_cache=cache)  # warm
    engines = sorted(cache.glob("*.engine"))
    assert len(engines) == 1
    t0 = time.perf_counter()
    Segmenter.from_model_dir(model_dir, "tensorrt", "cuda", engine_cache=cache)
    assert time.perf_counter() - t0 < 1.0
    assert sorted(cache.glob("*.engine")) == engines
    # a different model (another seed) must not reuse the cached engine
    other = exported_random_model("small", seed=1)
    seg = Segmenter.from_model_dir(other, "tensorrt", "cuda", engine_cache=cache)
    assert len(list(cache.glob("*.engine"))) == 2
    scan = synthetic_scan(5_000, seed=2)
    ref, _ = _reference(other, scan)
    out = seg.backend.infer(build_inputs([scan], seg.grid, 4, 4)).cpu()
    assert (out.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.999
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_fp16_engine_labels(trt_env: dict) -> None:
    model_dir, cache = trt_env["model_dir"], trt_env["cache"]
    seg = Segmenter.from_model_dir(model_dir, "tensorrt", "cuda", engine_cache=cache, fp16=True)
    scan = synthetic_scan(20_000, seed=4)
    _, seg_torch = _reference(model_dir, scan)
    agree = (seg.segment(scan).labels == seg_torch.segment(scan).labels).mean()
    assert agree >= 0.97, agree


def test_max_points_parameter_admits_a_128_beam_scan(trt_env: dict) -> None:
    """Over model.json's profile max (160k here) only with ``max_points`` raised."""
    model_dir, cache = trt_env["model_dir"], trt_env["cache"]
    scan = synthetic_scan(230_000, seed=6)
    seg = Segmenter.from_model_dir(model_dir, "tensorrt", "cuda", engine_cache=cache)
    with pytest.raises(ValueError, match="outside the engine profile"):
        seg.segment(scan)
    seg = Segmenter.from_model_dir(
        model_dir, "tensorrt", "cuda", engine_cache=cache, max_points=300_000
    )
    assert seg.segment(scan).labels.shape == (230_000,)


def test_auto_picks_tensorrt_on_gpu(trt_env: dict) -> None:
    seg = Segmenter.from_model_dir(
        trt_env["model_dir"], "auto", "cuda", engine_cache=trt_env["cache"]
    )
    assert seg.backend_name == "tensorrt"


def test_tensorrt_unusable_is_a_clear_load_error() -> None:
    ok, _ = tensorrt_available()
    if ok:
        pytest.skip("TensorRT is usable here")
    from xmodelkd_ros.runtime import ModelLoadError, build_only

    model_dir = exported_random_model("small", seed=0)
    with pytest.raises(ModelLoadError, match="TensorRT"):
        Segmenter.from_model_dir(model_dir, backend="tensorrt", device="cuda")
    with pytest.raises(ModelLoadError, match="TensorRT"):
        build_only(model_dir)
