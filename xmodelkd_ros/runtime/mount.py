"""Mounting alignment: a scan re-expressed at the mount the model was trained on.

Why: the network reads absolute coordinates (voxel means of x, y, z, intensity), so the
ground's height and tilt in its input are features it learned from one mounting. The same
LiDAR 47 cm higher, or pitched 4 degrees down, costs 15-21 mIoU (docs/cross-sensor.md).
A vehicle knows its LiDAR's pose (``T_vehicle_lidar``, vehicle frame with z = 0 on the
ground, as ``base_link`` / ``base_footprint`` are in ROS): with it, each scan is moved
rigidly into the frame of a sensor at the model's trained height and pitch, above the same
spot, before the network sees it. Labels belong to points, so nothing else changes; a
rigid transform of N points costs far less than the network.

The trained mount comes from ``model.json``'s ``lidar_contract`` (its first rig: height
and pitch). Yaw is kept as the vehicle's (the networks train with random yaw), and so
is the sensor's x / y (the voxel grid stays centred on the sensor).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xmodelkd_ros.geometry import invert_transform, xyz_rpy_transform


def rig_pose(height: float, pitch_deg: float = 0.0) -> np.ndarray:
    """``T_vehicle_lidar`` (4x4) of a LiDAR ``height`` m above the ground, its forward axis
    pitched ``pitch_deg`` down (the simulator's rigs, :mod:`xmodelkd_ros.sim.rigs`)."""
    return xyz_rpy_transform((0.0, 0.0, height), (0.0, np.deg2rad(pitch_deg), 0.0))


def trained_mount(contract: dict[str, Any] | None) -> tuple[float, float] | None:
    """(height m, pitch degrees) of the first rig of a model's ``lidar_contract``; None
    when the model states none (an old export, or a model trained on a bag)."""
    rigs = (contract or {}).get("rigs") or []
    if not rigs:
        return None
    return float(rigs[0]["height_m"]), float(rigs[0].get("pitch_deg", 0.0))


def alignment(T_vehicle_lidar: np.ndarray, height: float, pitch_deg: float = 0.0) -> np.ndarray:
    """4x4 taking the LiDAR's points into the frame of a sensor ``height`` m above the
    ground and pitched ``pitch_deg``, at the LiDAR's own x / y in the vehicle frame."""
    T = np.asarray(T_vehicle_lidar, np.float64)
    x, y = T[0, 3], T[1, 3]
    T_vehicle_model = xyz_rpy_transform((x, y, height), (0.0, np.deg2rad(pitch_deg), 0.0))
    return invert_transform(T_vehicle_model) @ T


def apply_alignment(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """A copy of (N, >= 3) ``points`` with x, y, z moved by ``T``; other columns as they were."""
    out = np.array(points, dtype=np.float32, copy=True)
    xyz = out[:, :3].astype(np.float64)
    out[:, :3] = (xyz @ T[:3, :3].T + T[:3, 3]).astype(np.float32)
    return out
