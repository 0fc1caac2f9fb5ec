"""The C++ voxelizer and logits -> labels kernel (sparse/fused_voxelize.cpp) against the
torch code they replace: voxelize bit for bit, labels exactly, confidence to 1e-6.

The torch voxelizer is the oracle (itself tested against brute force in
test_sparse_voxelize.py); these tests switch between the two with ``set_fused_voxelize``.
Bit-exact feats rest on torch's CPU ``index_add_`` summing in index order, which the first
test checks with values whose float32 sum depends on the order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xmodelkd_ros.runtime import segmenter
from xmodelkd_ros.sparse import VoxelGridSpec, fused, fused_voxelize, set_fused_voxelize, voxelize

pytestmark = pytest.mark.usefixtures("one_thread")

_OK, _WHY = fused.available()
needs_fused = pytest.mark.skipif(not _OK, reason=f"fused C++ library unavailable: {_WHY}")
_FIXTURE = HealthCheck.function_scoped_fixture  # one_thread only sets the thread count

GRIDS = [
    VoxelGridSpec((0.5, 0.25, 1.0), (-2.0, -1.0, -1.0), (2.0, 1.0, 1.0)),  # exact in binary
    VoxelGridSpec((0.1, 0.1, 0.3), (-1.0, -0.7, -0.9), (1.0, 0.7, 0.9)),  # rounding near hi
    VoxelGridSpec((0.25,) * 3, (-50.0, -50.0, -4.0), (50.0, 50.0, 4.0)),  # the demo grid
]


def _serial_sum(index: np.ndarray, values: np.ndarray, m: int, order: np.ndarray) -> np.ndarray:
    out = np.zeros((m, values.shape[1]), np.float32)
    for i in order:
        out[index[i]] = out[index[i]] + values[i]  # float32 + float32 -> float32
    return out


@pytest.mark.parametrize("threads", [1, 2])
def test_index_add_sums_serially_in_index_order(threads: int):
    """Values whose float32 sum depends on the order: a different one would show."""
    torch.set_num_threads(threads)  # the one_thread fixture restores the count
    rng = np.random.default_rng(0)
    n, m = 4000, 40
    index = rng.integers(0, m, n)
    values = rng.choice(np.float32([1e8, -1e8, 1.0, 3.0, 7e7, -5e-3]), size=(n, 3))
    values = (values * rng.uniform(0.5, 1.5, (n, 3))).astype(np.float32)
    got = torch.zeros(m, 3).index_add_(0, torch.from_numpy(index), torch.from_numpy(values))
    forward = _serial_sum(index, values, m, np.arange(n))
    np.testing.assert_array_equal(got.numpy(), forward)
    assert not np.array_equal(forward, _serial_sum(index, values, m, np.arange(n)[::-1]))


def _both(points: torch.Tensor, grid: VoxelGridSpec, batch, batch_size):
    set_fused_voxelize(False)
    try:
        ref = voxelize(points, grid, batch, batch_size)
    finally:
        set_fused_voxelize(True)
    return ref, voxelize(points, grid, batch, batch_size)


def _assert_identical(ref, got) -> None:
    for name in ("coords", "point2voxel"):
        a, b = getattr(ref, name), getattr(got, name)
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), name
    a, b = ref.feats, got.feats
    assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape
    nan = torch.isnan(a)
    assert torch.equal(nan, torch.isnan(b))
    assert torch.equal(a[~nan].view(torch.int32), b[~nan].view(torch.int32))  # bit for bit
    assert (ref.spatial_shape, ref.batch_size) == (got.spatial_shape, got.batch_size)


@st.composite
def clouds(draw):
    """Points in and around the grid, on its borders, just below range_max, duplicated,
    with NaN / inf in xyz or in the other columns; 0..3 scans, some points in none."""
    grid = draw(st.sampled_from(GRIDS))
    n = draw(st.integers(0, 300))
    c = draw(st.integers(3, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    lo, hi = np.array(grid.range_min), np.array(grid.range_max)
    span = hi - lo
    pts = rng.uniform(-1, 1, size=(n, c)) * 3
    pts[:, :3] = lo + rng.uniform(-0.1, 1.1, size=(n, 3)) * span
    border = np.float32(np.stack([lo, hi, np.nextafter(hi.astype(np.float32), np.float32(-1e9))]))
    for a in range(3):  # a share of coordinates exactly on lo, on hi, or just below hi
        pick = rng.random(n) < 0.15
        pts[pick, a] = border[rng.integers(0, 3, pick.sum()), a]
    pts = pts.astype(np.float32)
    bad = rng.choice(np.float32([np.nan, np.inf, -np.inf]), size=(n, c))
    pts = np.where(rng.random((n, c)) < 0.03, bad, pts)
    if n:  # duplicates: the same point several times (also in other scans)
        dup = rng.integers(0, n, n // 3)
        pts[rng.integers(0, n, n // 3)] = pts[dup]
    scans = draw(st.integers(0, 3))
    batch = None if scans == 0 else torch.from_numpy(rng.integers(-1, scans + 1, n))
    batch_size = draw(st.sampled_from([None, max(scans, 1)]))
    return torch.from_numpy(pts), grid, batch, batch_size


@needs_fused
@settings(max_examples=150, deadline=None, suppress_health_check=[_FIXTURE])
@given(clouds())
def test_fused_voxelize_is_bit_identical(cloud):
    points, grid, batch, batch_size = cloud
    ref, got = _both(points, grid, batch, batch_size)
    _assert_identical(ref, got)


@needs_fused
@pytest.mark.parametrize("n", [1, 50_000, 70_000])
def test_fused_voxelize_large_scans(n: int):
    """Many points per voxel and index / key widths past one radix digit (70k > 2^16)."""
    rng = np.random.default_rng(n)
    grid = GRIDS[2]
    pts = np.concatenate([rng.normal(0, 8, (n, 3)), rng.uniform(0, 1, (n, 1))], 1)
    pts[: n // 4, :3] = rng.normal(0, 0.2, (n // 4, 3))  # a dense blob: big voxels
    batch = torch.from_numpy(rng.integers(0, 2, n))
    ref, got = _both(torch.from_numpy(pts.astype(np.float32)), grid, batch, 2)
    _assert_identical(ref, got)
    assert (ref.point2voxel >= 0).any()


@needs_fused
def test_fused_voxelize_is_used_and_switches_off(monkeypatch):
    calls = []
    real = fused_voxelize.voxelize
    monkeypatch.setattr(fused_voxelize, "voxelize", lambda *a: calls.append(1) or real(*a))
    pts = torch.tensor([[0.1, 0.1, 0.1, 1.0], [0.1, 0.1, 0.1, 3.0]])
    voxelize(pts, GRIDS[0])
    assert calls == [1]
    set_fused_voxelize(False)
    try:
        voxelize(pts, GRIDS[0])
    finally:
        set_fused_voxelize(True)
    with fused.disabled():
        voxelize(pts, GRIDS[0])
    voxelize(pts.double(), GRIDS[0])  # float64 points: torch (keys from the float64 values)
    assert calls == [1]  # only the first call went to C++


@needs_fused
def test_fused_voxelize_refuses_keys_past_64_bits():
    grid = VoxelGridSpec((1e-6,) * 3, (0.0,) * 3, (1e3,) * 3)  # 1e27 voxels
    with pytest.raises(fused_voxelize.UnsupportedInputError, match="64 bits"):
        fused_voxelize.voxelize(torch.zeros(4, 3), None, 1, grid.range_min, grid.range_max,
                                grid.voxel_size, grid.spatial_shape)  # fmt: skip


def test_voxelize_falls_back_when_the_library_is_off():
    pts = torch.tensor([[0.1, 0.1, 0.1, 1.0], [0.1, 0.1, 0.1, 3.0], [9.0, 0.0, 0.0, 1.0]])
    with fused.disabled():
        vox = voxelize(pts, GRIDS[0])
    assert vox.point2voxel.tolist() == [0, 0, -1] and vox.feats[0, 3].item() == 2.0


# ---------------------------------------------------------------- logits -> labels
def _torch_labels(logits: torch.Tensor, valid: np.ndarray):
    labels = np.full(len(valid), 7, np.uint16)
    conf = np.full(len(valid), -1.0, np.float32)
    with fused.disabled():
        segmenter._point_labels(logits, valid, labels, conf)
    return labels, conf


@needs_fused
@settings(max_examples=100, deadline=None, suppress_health_check=[_FIXTURE])
@given(n=st.integers(0, 90), k=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_point_labels_match_torch(n: int, k: int, seed: int):
    """Ties (small integers), NaN and +-inf rows, invalid points in between; entries of
    invalid points are left alone."""
    rng = np.random.default_rng(seed)
    valid = rng.random(n) < 0.8
    rows = int(valid.sum())
    logits = np.where(rng.random((rows, k)) < 0.5, rng.integers(-3, 3, (rows, k)),
                      rng.normal(0, 30, (rows, k))).astype(np.float32)  # fmt: skip
    special = np.float32([np.nan, np.inf, -np.inf])
    logits = np.where(rng.random((rows, k)) < 0.02, rng.choice(special, (rows, k)), logits)
    t = torch.from_numpy(logits)
    ref_labels, ref_conf = _torch_labels(t, valid)
    labels = np.full(n, 7, np.uint16)
    conf = np.full(n, -1.0, np.float32)
    fused_voxelize.point_labels(t, valid, labels, conf)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(conf, ref_conf, rtol=0, atol=1e-6)  # NaN where torch has NaN


@needs_fused
def test_point_labels_refuses_a_row_count_mismatch():
    valid = np.array([True, False, True])
    out = np.zeros(3, np.uint16), np.zeros(3, np.float32)
    for rows in (1, 3):
        with pytest.raises(ValueError, match="logits rows"):
            fused_voxelize.point_labels(torch.zeros(rows, 4), valid, *out)
    with pytest.raises(fused_voxelize.UnsupportedInputError):
        fused_voxelize.point_labels(torch.zeros(2, 4, dtype=torch.float64), valid, *out)


def test_segmenter_labels_fall_back_to_torch():
    """Without the library (and for non-float32 logits) the torch form writes the rows."""
    logits = torch.tensor([[0.0, 2.0, 2.0], [5.0, 1.0, 0.0]])
    valid = np.array([True, False, True])
    for lg in (logits, logits.double()):
        labels, conf = _torch_labels(lg, valid)
        assert labels.tolist() == [2, 7, 1]
        expected = [1 / (np.exp(-2.0) + 2), -1.0, 1 / (1 + np.exp(-4.0) + np.exp(-5.0))]
        np.testing.assert_allclose(conf, expected, rtol=1e-6)
        labels[:], conf[:] = 7, -1.0  # library on: float64 logits still go to torch
        segmenter._point_labels(lg, valid, labels, conf)
        assert labels.tolist() == [2, 7, 1]
        np.testing.assert_allclose(conf, expected, rtol=1e-6)
