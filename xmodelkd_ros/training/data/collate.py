"""Batches of scans with variable point counts -> one set of network inputs.

Points of all scans are concatenated (``inputs.point_batch`` is the batch index) and
voxelized once by :func:`xmodelkd_ros.nets.inputs.build_inputs`, the same function
the runtime uses. Correspondences are re-indexed from "point i of scan b" to rows of
the concatenated valid points, and points the grid drops take their pairs with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from xmodelkd_ros.nets.inputs import NetInputs, build_inputs
from xmodelkd_ros.sparse import VoxelGridSpec
from xmodelkd_ros.training.data.prepared import Prepared
from xmodelkd_ros.training.data.sample import IGNORE_INDEX


@dataclass
class Batch:
    inputs: NetInputs
    labels: Tensor | None  # (P,) class index per valid point, IGNORE_INDEX = unlabeled
    images: Tensor  # (I, 3, H, W) float in [0, 1]; I = 0 without cameras
    point_idx: Tensor  # (K,) row of the valid points
    image_idx: Tensor  # (K,) row of images
    uv: Tensor  # (K, 2) pixel coordinates in the (H, W) images
    image_size: tuple[int, int]  # (H, W)
    names: list[str]
    #: (I,) frame offset of each image (0 = the scan's own frame, else a temporal view)
    image_offset: Tensor | None = None

    @property
    def fuse(self) -> Tensor | None:
        """(K,) bool: the correspondence is in a current-frame image (None: all are)."""
        if self.image_offset is None or not bool((self.image_offset != 0).any()):
            return None
        return self.image_offset[self.image_idx] == 0

    @property
    def num_points(self) -> int:
        return int(self.inputs.point_feats.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.inputs.to(device),
            None if self.labels is None else self.labels.to(device),
            self.images.to(device),
            self.point_idx.to(device),
            self.image_idx.to(device),
            self.uv.to(device),
            self.image_size,
            self.names,
            None if self.image_offset is None else self.image_offset.to(device),
        )


def collate(
    items: list[Prepared],
    grid: VoxelGridSpec,
    num_levels: int,
    in_channels: int = 4,
    image_hw: tuple[int, int] = (0, 0),
) -> Batch:
    """Concatenate prepared samples into one :class:`Batch`."""
    inputs = build_inputs([it.points for it in items], grid, num_levels, in_channels)
    labels: Tensor | None = None
    if all(it.labels is not None for it in items):
        labels = torch.cat(
            [torch.as_tensor(it.labels)[v] for it, v in zip(items, inputs.valid, strict=True)]
        ).long()
    elif any(it.labels is not None for it in items):
        parts = []
        for it, v in zip(items, inputs.valid, strict=True):
            lab = (
                torch.as_tensor(it.labels)
                if it.labels is not None
                else torch.full((len(it.points),), IGNORE_INDEX)
            )
            parts.append(lab[v])
        labels = torch.cat(parts).long()

    images, pidx, iidx, uvs, offsets = [], [], [], [], []
    point_offset = 0
    for it, valid in zip(items, inputs.valid, strict=True):
        v = valid.numpy()
        new_index = np.cumsum(v) - 1 + point_offset
        keep = v[it.corr.point_idx] if len(it.corr) else np.zeros(0, bool)
        pidx.append(new_index[it.corr.point_idx[keep]])
        iidx.append(it.corr.image_idx[keep] + len(images))
        uvs.append(it.corr.uv[keep])
        images.extend(it.images)
        offsets.extend(it.image_offsets or [0] * len(it.images))
        point_offset += int(v.sum())
    h, w = image_hw
    if images:
        img = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
        h, w = img.shape[2], img.shape[3]
    else:
        img = torch.zeros(0, 3, max(h, 1), max(w, 1))
    return Batch(
        inputs=inputs,
        labels=labels,
        images=img,
        point_idx=torch.from_numpy(np.concatenate(pidx).astype(np.int64)),
        image_idx=torch.from_numpy(np.concatenate(iidx).astype(np.int64)),
        uv=torch.from_numpy(np.concatenate(uvs).reshape(-1, 2).astype(np.float32)),
        image_size=(int(h), int(w)),
        names=[it.name for it in items],
        image_offset=torch.as_tensor(offsets, dtype=torch.long),
    )
