"""Voxelizer against a numpy brute force (np.unique + per-voxel loop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmodelkd_ros.sparse import VoxelGridSpec, voxelize

# sizes and ranges are exact in binary so floor() agrees bit-for-bit with the oracle
GRID = VoxelGridSpec((0.5, 0.25, 1.0), (-2.0, -1.0, -1.0), (2.0, 1.0, 1.0))


def brute_force(points: np.ndarray, grid: VoxelGridSpec, batch: np.ndarray):
    lo, hi, size = (
        np.array(v, dtype=np.float64) for v in (grid.range_min, grid.range_max, grid.voxel_size)
    )
    xyz = points[:, :3].astype(np.float64)
    ok = np.isfinite(xyz).all(1) & (xyz >= lo).all(1) & (xyz < hi).all(1)
    idx = np.floor((np.where(ok[:, None], xyz, 0) - lo) / size).astype(np.int64)
    full = np.concatenate([batch[:, None], idx], 1)
    uniq = np.unique(full[ok], axis=0)  # lexicographic
    row_of = {tuple(r): i for i, r in enumerate(uniq)}
    feats = np.zeros((len(uniq), points.shape[1]), np.float64)
    counts = np.zeros(len(uniq))
    p2v = np.full(len(points), -1, np.int64)
    for i in range(len(points)):
        if ok[i]:
            r = row_of[tuple(full[i])]
            p2v[i] = r
            feats[r] += points[i]
            counts[r] += 1
    if len(uniq):
        feats /= counts[:, None]
    return uniq.reshape(-1, 4), feats, p2v


def test_spatial_shape_rounds_up():
    assert GRID.spatial_shape == (8, 8, 2)
    assert VoxelGridSpec((0.1,) * 3, (-50.0, -50.0, -4.0), (50.0, 50.0, 4.0)).spatial_shape == (
        1000,
        1000,
        80,
    )
    assert VoxelGridSpec((0.3,) * 3, (0.0,) * 3, (1.0,) * 3).spatial_shape == (4, 4, 4)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batched", [False, True])
def test_matches_brute_force(seed: int, batched: bool):
    rng = np.random.default_rng(seed)
    n = 300
    pts = rng.uniform(-2.5, 2.5, size=(n, 4)).astype(np.float32)
    pts[:, 1] *= 0.5
    pts[:5, 0] = np.nan
    pts[5:8, 2] = np.inf
    pts[8, :3] = np.array(GRID.range_max, np.float32)  # upper bound is exclusive
    pts[9, :3] = np.array(GRID.range_min, np.float32)  # lower bound is inclusive
    batch = rng.integers(0, 3, size=n) if batched else np.zeros(n, np.int64)
    vox = voxelize(
        torch.from_numpy(pts),
        GRID,
        torch.from_numpy(batch) if batched else None,
        batch_size=3 if batched else None,
    )
    coords, feats, p2v = brute_force(pts, GRID, batch)
    assert vox.coords.dtype == torch.int64 and vox.point2voxel.dtype == torch.int64
    assert vox.feats.dtype == torch.float32
    np.testing.assert_array_equal(vox.coords.numpy(), coords)
    np.testing.assert_allclose(vox.feats.numpy(), feats, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(vox.point2voxel.numpy(), p2v)
    assert vox.point2voxel[9] >= 0 and vox.point2voxel[8] == -1
    assert (vox.point2voxel[:8] == -1).all()
    assert vox.spatial_shape == GRID.spatial_shape
    assert vox.batch_size == (3 if batched else 1)


def test_empty_input():
    vox = voxelize(torch.zeros(0, 5), GRID)
    assert vox.coords.shape == (0, 4) and vox.coords.dtype == torch.int64
    assert vox.feats.shape == (0, 5) and vox.feats.dtype == torch.float32
    assert vox.point2voxel.shape == (0,) and vox.point2voxel.dtype == torch.int64
    assert vox.batch_size == 1


def test_all_outside_or_nan():
    pts = torch.tensor(
        [[10.0, 0.0, 0.0, 1.0], [float("nan"), 0.0, 0.0, 1.0], [0.0, 0.0, -5.0, 1.0]]
    )
    vox = voxelize(pts, GRID)
    assert vox.coords.shape == (0, 4) and vox.feats.shape == (0, 4)
    assert vox.point2voxel.tolist() == [-1, -1, -1]


def test_batch_index_separates_identical_points():
    pts = torch.tensor([[0.1, 0.1, 0.1, 1.0], [0.1, 0.1, 0.1, 3.0]])
    vox = voxelize(pts, GRID, batch_index=torch.tensor([1, 0]))
    assert vox.coords[:, 0].tolist() == [0, 1]
    assert vox.point2voxel.tolist() == [1, 0]
    assert vox.feats[:, 3].tolist() == [3.0, 1.0]
    assert vox.batch_size == 2
