"""One training example and its point-pixel correspondences, independent of the dataset.

Every reader (SemanticKITTI, nuScenes, the synthetic world, ROS 2 bags) produces a
:class:`Sample`, so augmentation, collation and the training loop never know where
the data came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from xmodelkd_ros.geometry import PinholeCamera
from xmodelkd_ros.labels import UNLABELED
from xmodelkd_ros.training.data.temporal import depth_consistent

#: Class index the losses and metrics ignore (unlabeled points).
IGNORE_INDEX = -1


@dataclass
class Sample:
    """A LiDAR scan with optional labels and camera images.

    ``points`` is (N, C >= 4) float32: x, y, z, intensity (more columns are carried
    along, the network only reads the first ``in_channels``). ``labels`` holds class
    indices 0..K-1 with :data:`IGNORE_INDEX` for unlabeled points, or is ``None`` for
    label-free data (ROS bags). ``images[i]`` is seen through ``cameras[i]``.

    ``image_offsets`` (empty = all 0): per image, the frame it was taken in relative to
    this scan (0 = the scan's own frame; others are temporal views whose camera already
    carries the relative ego pose, see :mod:`xmodelkd_ros.training.data.temporal`). Only
    offset-0 images are fused by the teacher; the others feed the contrastive term.
    """

    points: np.ndarray
    labels: np.ndarray | None
    images: list[np.ndarray] = field(default_factory=list)
    cameras: list[PinholeCamera] = field(default_factory=list)
    name: str = ""
    image_offsets: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.points = np.ascontiguousarray(self.points, dtype=np.float32)
        if self.points.ndim != 2 or self.points.shape[1] < 4:
            raise ValueError(f"{self.name}: points must be (N, >=4), got {self.points.shape}")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
            if self.labels.shape[0] != self.points.shape[0]:
                raise ValueError(
                    f"{self.name}: {self.labels.shape[0]} labels for {self.points.shape[0]} points"
                )
        if len(self.images) != len(self.cameras):
            raise ValueError(f"{self.name}: {len(self.images)} images, {len(self.cameras)} cameras")
        if self.image_offsets and len(self.image_offsets) != len(self.images):
            n_off, n_img = len(self.image_offsets), len(self.images)
            raise ValueError(f"{self.name}: {n_off} image offsets for {n_img} images")

    def offsets(self) -> list[int]:
        """Per image, its frame offset (0 when ``image_offsets`` is empty)."""
        return list(self.image_offsets) if self.image_offsets else [0] * len(self.images)


def label_ids_to_classes(label_ids: np.ndarray) -> np.ndarray:
    """Label ids (0 = unlabeled, 1..19) -> class indices (0..18, ignore = -1)."""
    ids = np.asarray(label_ids).astype(np.int64)
    return np.where(ids == UNLABELED, IGNORE_INDEX, ids - 1)


@dataclass
class Correspondences:
    """Point-pixel pairs of one sample: point ``point_idx[k]`` is seen at ``uv[k]`` in
    image ``image_idx[k]`` (pixel convention of :mod:`xmodelkd_ros.geometry`)."""

    point_idx: np.ndarray  # (K,) int64
    image_idx: np.ndarray  # (K,) int64
    uv: np.ndarray  # (K, 2) float32

    @staticmethod
    def empty() -> Correspondences:
        return Correspondences(
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2), np.float32)
        )

    def __len__(self) -> int:
        return int(self.point_idx.shape[0])

    def select(self, keep: np.ndarray) -> Correspondences:
        return Correspondences(self.point_idx[keep], self.image_idx[keep], self.uv[keep])


def compute_correspondences(
    points: np.ndarray,
    cameras: list[PinholeCamera],
    depth_check: Sequence[bool] | None = None,
) -> Correspondences:
    """Project the points into every camera (z > near, inside the image).

    Must run on the *un-augmented* points: the calibration describes the real sensor
    rig, and point augmentation afterwards moves points without moving pixels.
    ``depth_check[i]``: drop the points of camera ``i`` hidden behind nearer points of the
    scan (:func:`~xmodelkd_ros.training.data.temporal.depth_consistent`; used for temporal
    views, whose viewpoint differs from the LiDAR's).
    """
    parts = []
    for i, cam in enumerate(cameras):
        uv, depth, in_fov = cam.project(points[:, :3])
        idx = np.flatnonzero(in_fov)
        if depth_check is not None and depth_check[i]:
            idx = idx[depth_consistent(uv[idx], depth[idx], (cam.height, cam.width))]
        parts.append(
            Correspondences(
                idx.astype(np.int64), np.full(idx.shape, i, np.int64), uv[idx].astype(np.float32)
            )
        )
    if not parts:
        return Correspondences.empty()
    return Correspondences(
        np.concatenate([p.point_idx for p in parts]),
        np.concatenate([p.image_idx for p in parts]),
        np.concatenate([p.uv for p in parts]).reshape(-1, 2),
    )
