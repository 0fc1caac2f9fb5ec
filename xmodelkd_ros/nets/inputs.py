"""Scans -> network inputs: the one place that voxelizes and builds kernel maps.

Training (batches of scans), the runtime ``Segmenter`` and the benchmarks all call
:func:`build_inputs`, so a change of grid or feature layout cannot make training and
deployment disagree.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from xmodelkd_ros.sparse import KernelMaps, VoxelGridSpec, build_kernel_maps, voxelize


def default_grid(voxel_size: float = 0.1, xy_range: float = 51.2) -> VoxelGridSpec:
    """A square grid around the sensor; z from -4 m to +4 m covers cars, trees and signs."""
    return VoxelGridSpec(
        voxel_size=(voxel_size, voxel_size, voxel_size),
        range_min=(-xy_range, -xy_range, -4.0),
        range_max=(xy_range, xy_range, 4.0),
    )


@dataclass
class NetInputs:
    voxel_feats: Tensor  # (M0, C) mean raw point features per voxel
    point_feats: Tensor  # (P, C) features of the points inside the grid, all scans concatenated
    point2voxel: Tensor  # (P,) row of voxel_feats for each of those points
    maps: KernelMaps
    valid: list[Tensor]  # per scan, (N_b,) bool: which input points are in point_feats
    point_batch: Tensor  # (P,) scan index of each valid point

    def to(self, device: torch.device | str) -> NetInputs:
        return NetInputs(
            self.voxel_feats.to(device),
            self.point_feats.to(device),
            self.point2voxel.to(device),
            self.maps.to(device),
            [v.to(device) for v in self.valid],
            self.point_batch.to(device),
        )


def build_inputs(
    scans: Sequence[np.ndarray | Tensor],
    grid: VoxelGridSpec,
    num_levels: int,
    in_channels: int = 4,
    timings: dict[str, float] | None = None,
) -> NetInputs:
    """Voxelize a batch of scans (each (N_b, >= in_channels)) and build all kernel maps.

    Only the first ``in_channels`` columns are network features (x, y, z, intensity by
    default). Points outside the grid or with non-finite values are left out and
    flagged in ``valid`` so callers can give them the unlabeled label. When ``timings``
    is given, the seconds spent voxelizing and building maps are added under
    ``"voxelize"`` and ``"maps"`` (the node reports them as separate stages).
    """
    t0 = time.perf_counter()
    tensors = []
    for b, scan in enumerate(scans):
        t = torch.as_tensor(np.asarray(scan) if not isinstance(scan, Tensor) else scan)
        if t.ndim != 2 or t.shape[1] < in_channels:
            raise ValueError(
                f"scan {b}: expected shape (N, >={in_channels}), got {tuple(t.shape)}"
            )
        tensors.append(t[:, :in_channels].float())
    sizes = [t.shape[0] for t in tensors]
    points = torch.cat(tensors) if tensors else torch.zeros(0, in_channels)
    batch_index = torch.repeat_interleave(
        torch.arange(len(tensors)), torch.tensor(sizes, dtype=torch.long)
    )
    # A NaN intensity would poison its voxel's mean: such points go out with bad xyz.
    finite = torch.isfinite(points).all(dim=1)
    points = torch.where(finite[:, None], points, torch.full_like(points, float("nan")))
    vox = voxelize(points, grid, batch_index=batch_index, batch_size=max(len(tensors), 1))
    keep = vox.point2voxel >= 0
    t1 = time.perf_counter()
    maps = build_kernel_maps(vox.coords, vox.spatial_shape, num_levels)
    if timings is not None:
        timings["voxelize"] = timings.get("voxelize", 0.0) + t1 - t0
        timings["maps"] = timings.get("maps", 0.0) + time.perf_counter() - t1
    return NetInputs(
        voxel_feats=vox.feats,
        point_feats=points[keep],
        point2voxel=vox.point2voxel[keep],
        maps=maps,
        valid=list(torch.split(keep, sizes)),
        point_batch=batch_index[keep],
    )
