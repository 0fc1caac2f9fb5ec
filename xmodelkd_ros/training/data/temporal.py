"""Temporal 2D views: the images of other frames of the same drive, seen from this scan.

Why: the rig's cameras overlap on a few percent of the points, so "all 2D views of a point
are positives of each other" is nearly single-view unless the views also come from other
times. A static world point of scan ``i`` is seen by the cameras of frame ``j`` through
the ego poses: with ``L_k`` the LiDAR->world pose of frame ``k`` and ``C_j`` the
camera->world pose at the image's stamp, the point ``p`` (LiDAR frame ``i``) is at
``inv(C_j) @ L_i @ p`` in that camera. A temporal view is therefore just a
:class:`PinholeCamera` whose extrinsic is composed with the relative pose, appended to the
sample's images with its frame offset (``Sample.image_offsets``); projection, cropping and
collation need nothing new.

The reader interface (what a dataset implements to offer temporal views): return the extra
images and composed cameras after the current ones, and set ``Sample.image_offsets`` (0 for
the current frame's images, the signed frame offset for the others). Implemented for the
synthetic world (its exact poses) and SemanticKITTI (``poses.txt``); nuScenes can follow
with its ego poses (the reader already composes ego poses between the LiDAR and camera
stamps: the same chain with the other keyframe's camera record).

Moving objects and occlusion make some of these pairs wrong; :func:`depth_consistent` drops
points hidden behind nearer points of the same scan in the other view (a coarse z-buffer,
cheap and good enough to remove the gross cases). Movers are not compensated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from xmodelkd_ros.geometry import PinholeCamera, invert_transform


def temporal_offsets(views: int, step: int) -> list[int]:
    """Frame offsets of ``views`` frames on each side of the scan, ``step`` frames apart:
    ``-step, +step, -2*step, +2*step, ...``."""
    if views < 0 or step < 1:
        raise ValueError(f"temporal views must be >= 0 and step >= 1, got {views}, {step}")
    return [s * k * step for k in range(1, views + 1) for s in (-1, 1)]


def camera_in_other_frame(
    cam: PinholeCamera, lidar_pose: np.ndarray, camera_pose_world: np.ndarray, offset: int
) -> PinholeCamera:
    """``cam``'s image taken elsewhere, seen from the LiDAR frame of ``lidar_pose``.

    ``lidar_pose``: 4x4 LiDAR->world of the current scan; ``camera_pose_world``: 4x4
    camera->world when the other image was taken. The result projects current-scan points.
    """
    T = invert_transform(np.asarray(camera_pose_world, np.float64)) @ np.asarray(
        lidar_pose, np.float64
    )
    return replace(cam, name=f"{cam.name}@{offset:+d}", T_cam_lidar=T)


def depth_consistent(
    uv: np.ndarray, depth: np.ndarray, size: tuple[int, int], cell: int = 8,
    rel_tol: float = 0.1, abs_tol: float = 0.5,
) -> np.ndarray:  # fmt: skip
    """(M,) bool: the point is not behind a nearer point of the same cell of the image.

    ``uv`` (M, 2) pixels and ``depth`` (M,) camera z of the points inside an image of
    ``size = (H, W)``; a point is kept if ``depth <= min_depth_in_cell * (1 + rel_tol) +
    abs_tol``. With a LiDAR scan's density, a cell of ``cell`` pixels holds the points of
    one surface or of an occluder and what it hides: the latter are dropped.
    """
    if len(depth) == 0:
        return np.zeros(0, dtype=bool)
    h, w = size
    cu = np.clip((uv[:, 0] // cell).astype(np.int64), 0, (w - 1) // cell)
    cv = np.clip((uv[:, 1] // cell).astype(np.int64), 0, (h - 1) // cell)
    key = cv * ((w - 1) // cell + 1) + cu
    nearest = np.full(int(key.max()) + 1, np.inf)
    np.minimum.at(nearest, key, depth)
    return depth <= nearest[key] * (1.0 + rel_tol) + abs_tol


# ----------------------------------------------------------------------------- KITTI poses


def read_kitti_poses(path: Path) -> np.ndarray:
    """``poses.txt`` (one 3x4 row-major pose per line) -> (N, 4, 4) float64."""
    rows = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if rows.shape[1] != 12:
        raise ValueError(f"{path}: expected 12 numbers per line, got {rows.shape[1]}")
    poses = np.tile(np.eye(4), (rows.shape[0], 1, 1))
    poses[:, :3, :] = rows.reshape(-1, 3, 4)
    return poses


def kitti_lidar_poses(cam0_poses: np.ndarray, Tr: np.ndarray) -> np.ndarray:
    """KITTI camera-0 poses -> LiDAR poses in the same (first camera-0) world frame:
    ``L_i = inv(Tr) @ P_i @ Tr`` with ``Tr`` the LiDAR->camera-0 extrinsic."""
    return invert_transform(Tr)[None] @ cam0_poses @ Tr[None]


def other_frame_cameras(
    cameras: Sequence[PinholeCamera], pose_i: np.ndarray, pose_j: np.ndarray, offset: int
) -> list[PinholeCamera]:
    """The rig at frame ``j`` (LiDAR pose ``pose_j``) seen from frame ``i`` (``pose_i``):
    each camera's extrinsic composed with the relative pose (camera rigid on the LiDAR)."""
    return [
        camera_in_other_frame(c, pose_i, np.asarray(pose_j) @ c.T_lidar_cam, offset)
        for c in cameras
    ]
