"""Point cloud -> sparse voxel grid.

Everything is vectorised (one ``torch.unique`` plus ``index_add``) because the
node voxelizes every scan on the hot path; a Python loop over 120k points would
cost more than the network itself.

On CPU, float32 points go through the C++ voxelizer of :mod:`.fused_voxelize` when the
fused library is available: bit-identical results (same float64 keys, points summed in
the same order), a radix sort instead of ``torch.unique``. The torch code here is its
fallback and its test oracle; ``set_fused_voxelize(False)`` forces it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import fused, fused_voxelize

__all__ = [
    "VoxelGridSpec", "Voxels", "pack_keys", "set_fused_voxelize", "unpack_keys", "voxelize"
]  # fmt: skip

_use_fused = True  # the C++ voxelizer where it applies (set_fused_voxelize)


def set_fused_voxelize(flag: bool) -> None:
    """Process-wide switch between the C++ voxelizer and the torch code (tests, benchmarks).
    The C++ voxelizer also needs the fused library itself on (:func:`.fused.set_enabled`)."""
    global _use_fused
    _use_fused = bool(flag)


@dataclass(frozen=True)
class VoxelGridSpec:
    """Axis-aligned voxel grid; frozen so it can be a dict key / config value."""

    voxel_size: tuple[float, float, float]
    range_min: tuple[float, float, float]
    range_max: tuple[float, float, float]

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """Voxels per axis; ceil so a range that is not a multiple of the size loses nothing."""
        return tuple(
            math.ceil((hi - lo) / s - 1e-9)
            for lo, hi, s in zip(self.range_min, self.range_max, self.voxel_size, strict=True)
        )  # type: ignore[return-value]


@dataclass
class Voxels:
    """Sparse voxel set plus the point->voxel map needed to lift voxel logits back to points."""

    coords: torch.Tensor
    feats: torch.Tensor
    point2voxel: torch.Tensor
    spatial_shape: tuple[int, int, int]
    batch_size: int


def pack_keys(coords: torch.Tensor, spatial_shape: tuple[int, int, int]) -> torch.Tensor:
    """Pack ``[b, x, y, z]`` rows into one int64 whose order equals lexicographic row order.

    A single sortable integer lets neighbour search be ``searchsorted`` instead of a
    hash table, which PyTorch does not have.
    """
    X, Y, Z = (int(s) for s in spatial_shape)
    c = coords.to(torch.int64)
    return ((c[:, 0] * X + c[:, 1]) * Y + c[:, 2]) * Z + c[:, 3]


def unpack_keys(keys: torch.Tensor, spatial_shape: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`pack_keys`."""
    X, Y, Z = (int(s) for s in spatial_shape)
    z = keys % Z
    r = keys // Z
    y = r % Y
    r = r // Y
    x = r % X
    b = r // X
    return torch.stack([b, x, y, z], dim=1)


def voxelize(
    points: torch.Tensor,
    grid: VoxelGridSpec,
    batch_index: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> Voxels:
    """Average all point features (all columns, xyz included) per occupied voxel.

    Points outside ``[range_min, range_max)`` or with non-finite xyz are dropped
    (``point2voxel == -1``) rather than clamped, so garbage returns from the sensor
    cannot pile up in border voxels.
    """
    if points.dim() != 2 or points.shape[1] < 3:
        raise ValueError(f"points must be (N, C>=3), got {tuple(points.shape)}")
    n, c = points.shape
    device = points.device
    shape = grid.spatial_shape
    if batch_index is None:
        batch_index = torch.zeros(n, dtype=torch.int64, device=device)
    else:
        batch_index = batch_index.to(device=device, dtype=torch.int64).reshape(-1)
        if batch_index.numel() != n:
            raise ValueError("batch_index must have one entry per point")
    if batch_size is None:
        batch_size = int(batch_index.max().item()) + 1 if n > 0 else 1

    if _use_fused and fused.enabled() and device.type == "cpu" and points.dtype == torch.float32:
        try:
            coords, feats, point2voxel = fused_voxelize.voxelize(
                points, batch_index, batch_size, grid.range_min, grid.range_max,
                grid.voxel_size, shape,
            )  # fmt: skip
            return Voxels(coords, feats, point2voxel, shape, int(batch_size))
        except (fused.FusedUnavailableError, fused_voxelize.UnsupportedInputError):
            pass
    xyz = points[:, :3].to(torch.float64)
    lo = torch.tensor(grid.range_min, dtype=torch.float64, device=device)
    hi = torch.tensor(grid.range_max, dtype=torch.float64, device=device)
    size = torch.tensor(grid.voxel_size, dtype=torch.float64, device=device)
    shp = torch.tensor(shape, dtype=torch.int64, device=device)
    finite = torch.isfinite(xyz).all(dim=1)
    inside = finite & (xyz >= lo).all(dim=1) & (xyz < hi).all(dim=1)
    inside &= (batch_index >= 0) & (batch_index < batch_size)
    idx = torch.floor((torch.where(finite[:, None], xyz, lo) - lo) / size).to(torch.int64)
    # floating rounding can push a point just below range_max into index == shape
    idx = torch.minimum(idx.clamp_min(0), shp - 1)
    valid_rows = torch.nonzero(inside).squeeze(1)

    keys = pack_keys(torch.cat([batch_index[valid_rows, None], idx[valid_rows]], dim=1), shape)
    uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    m = uniq.numel()
    coords = unpack_keys(uniq, shape)

    feats = torch.zeros(m, c, dtype=torch.float32, device=device)
    feats.index_add_(0, inverse, points[valid_rows].to(torch.float32))
    counts = torch.zeros(m, dtype=torch.float32, device=device)
    counts.index_add_(0, inverse, torch.ones_like(inverse, dtype=torch.float32))
    feats /= counts.clamp_min(1.0)[:, None]

    point2voxel = torch.full((n,), -1, dtype=torch.int64, device=device)
    point2voxel[valid_rows] = inverse
    return Voxels(coords, feats, point2voxel, shape, int(batch_size))
