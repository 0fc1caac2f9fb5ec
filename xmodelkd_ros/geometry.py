"""Camera calibration and LiDAR->camera projection, shared by the simulator, training and the node.

Every consumer of multi-modal data (the synthetic world's writers, the fusion teacher's
point-to-pixel sampling, the node's overlay images, replay evaluation) must agree on one
convention, so it lives here, numpy-only and ROS-free:

* LiDAR frame: x forward, y left, z up (REP 103).
* Camera frame: optical convention, x right, y down, z forward (REP 103 ``_optical``).
* ``T_cam_lidar`` (4x4) maps homogeneous LiDAR points into the camera frame.
* Pixel coordinates: ``u`` to the right, ``v`` down, pixel *centres* at integer + 0.5,
  i.e. pixel ``(row, col)`` covers ``u in [col, col+1)`` and ``v in [row, row+1)``.
  Projected ``uv`` is therefore turned into an index with ``floor``.
* Optional distortion ``D`` follows ROS' ``plumb_bob`` (k1, k2, p1, p2, k3).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Camera names in rig order (the first ``n`` are used for an ``n``-camera rig).
CAMERA_NAMES: tuple[str, ...] = (
    "front",
    "front_left",
    "front_right",
    "back",
    "back_left",
    "back_right",
)
#: Yaw (degrees, counter-clockwise from the LiDAR's x axis) of each rig camera.
CAMERA_YAWS_DEG: dict[str, float] = {
    "front": 0.0,
    "front_left": 60.0,
    "front_right": -60.0,
    "back": 180.0,
    "back_left": 120.0,
    "back_right": -120.0,
}


def camera_frame_id(name: str) -> str:
    """The tf frame of camera ``name`` (``camera_<name>``)."""
    return f"camera_{name}"


@dataclass
class PinholeCamera:
    """A calibrated pinhole camera rigidly attached to the LiDAR.

    ``K`` is the 3x3 intrinsic matrix, ``T_cam_lidar`` the 4x4 LiDAR->camera extrinsic,
    ``D`` optional plumb_bob distortion (``None`` or zeros = rectified image).
    """

    name: str
    K: np.ndarray
    width: int
    height: int
    T_cam_lidar: np.ndarray
    D: np.ndarray | None = None
    near: float = field(default=0.1)

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.T_cam_lidar = np.asarray(self.T_cam_lidar, dtype=np.float64).reshape(4, 4)
        if self.D is not None:
            self.D = np.asarray(self.D, dtype=np.float64).ravel()
        self.width = int(self.width)
        self.height = int(self.height)

    @property
    def frame_id(self) -> str:
        return camera_frame_id(self.name)

    @property
    def T_lidar_cam(self) -> np.ndarray:  # noqa: N802
        """Camera pose in the LiDAR frame (inverse extrinsic)."""
        return invert_transform(self.T_cam_lidar)

    @property
    def P(self) -> np.ndarray:  # noqa: N802
        """3x4 projection matrix of the (rectified) image in the camera frame, ``[K | 0]``."""
        return np.hstack([self.K, np.zeros((3, 1))])

    def to_camera(self, points_xyz: np.ndarray) -> np.ndarray:
        """LiDAR-frame points (N,3) -> camera-frame points (N,3), float64."""
        p = np.asarray(points_xyz, dtype=np.float64)[:, :3]
        return p @ self.T_cam_lidar[:3, :3].T + self.T_cam_lidar[:3, 3]

    def project(self, points_xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Project LiDAR points into the image.

        Returns ``uv`` (N,2) float pixel coordinates, ``depth`` (N,) camera-frame z and
        ``in_fov`` (N,) bool: in front of the camera (z > near) and inside the image.
        Points behind the camera get ``uv = nan``.
        """
        pc = self.to_camera(points_xyz)
        depth = pc[:, 2]
        front = depth > self.near
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(front, pc[:, 0] / depth, np.nan)
            y = np.where(front, pc[:, 1] / depth, np.nan)
        if self.D is not None and np.any(self.D != 0):
            x, y = distort_plumb_bob(x, y, self.D)
        K = self.K
        u = K[0, 0] * x + K[0, 1] * y + K[0, 2]
        v = K[1, 1] * y + K[1, 2]
        uv = np.stack([u, v], axis=1)
        with np.errstate(invalid="ignore"):
            in_fov = front & (u >= 0) & (u < self.width) & (v >= 0) & (v < self.height)
        return uv, depth, in_fov

    def pixel_indices(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) integer indices of projected ``uv`` (valid only where in_fov)."""
        col = np.clip(np.floor(np.nan_to_num(uv[:, 0])), 0, self.width - 1).astype(np.int64)
        row = np.clip(np.floor(np.nan_to_num(uv[:, 1])), 0, self.height - 1).astype(np.int64)
        return row, col

    def fov_mask(self, points_xyz: np.ndarray) -> np.ndarray:
        """Bool mask of points that land inside this camera's image."""
        return self.project(points_xyz)[2]

    def pixel_rays(self) -> np.ndarray:
        """Unnormalised camera-frame ray directions (H, W, 3) through pixel centres (z = 1)."""
        u = np.arange(self.width, dtype=np.float64) + 0.5
        v = np.arange(self.height, dtype=np.float64) + 0.5
        uu, vv = np.meshgrid(u, v)
        K = self.K
        y = (vv - K[1, 2]) / K[1, 1]
        x = (uu - K[0, 2] - K[0, 1] * y) / K[0, 0]
        return np.stack([x, y, np.ones_like(x)], axis=-1)

    def to_dict(self) -> dict[str, Any]:
        """Plain-YAML form (the node's ``calibration.yaml`` entry for this camera)."""
        d: dict[str, Any] = {
            "name": self.name,
            "frame_id": self.frame_id,
            "width": self.width,
            "height": self.height,
            "K": [float(x) + 0.0 for x in self.K.ravel()],
            "T_cam_lidar": [float(x) + 0.0 for x in self.T_cam_lidar.ravel()],
        }
        d["D"] = [float(x) for x in self.D] if self.D is not None else [0.0] * 5
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PinholeCamera:
        D = d.get("D")
        return cls(
            name=str(d["name"]),
            K=np.asarray(d["K"], dtype=np.float64).reshape(3, 3),
            width=int(d["width"]),
            height=int(d["height"]),
            T_cam_lidar=np.asarray(d["T_cam_lidar"], dtype=np.float64).reshape(4, 4),
            D=None if D is None else np.asarray(D, dtype=np.float64),
        )


#: Short alias: most code just says ``Camera``.
Camera = PinholeCamera


def distort_plumb_bob(x: np.ndarray, y: np.ndarray, D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply ROS ``plumb_bob`` distortion to normalised image coordinates."""
    k = np.zeros(5)
    k[: min(5, len(D))] = D[:5]
    k1, k2, p1, p2, k3 = k
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform."""
    T = np.asarray(T, dtype=np.float64)
    out = np.eye(4)
    R = T[:3, :3]
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


def xyz_rpy_transform(xyz: Iterable[float], rpy: Iterable[float]) -> np.ndarray:
    """4x4 rigid transform from a translation and roll, pitch, yaw (radians) about the
    fixed x, y, z axes, in that order (ROS / URDF: R = Rz(yaw) Ry(pitch) Rx(roll))."""
    (x, y, z), (roll, pitch, yaw) = (float(v) for v in xyz), (float(v) for v in rpy)
    cr, sr, cp, sp = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    T = np.eye(4)
    T[:3, :3] = yaw_matrix(yaw) @ ry @ rx
    T[:3, 3] = (x, y, z)
    return T


def yaw_matrix(yaw: float) -> np.ndarray:
    """3x3 rotation about z by ``yaw`` radians."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def intrinsics_from_fov(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """Square-pixel K with the principal point at the image centre and horizontal FOV."""
    f = 0.5 * width / np.tan(np.deg2rad(hfov_deg) / 2)
    return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def camera_extrinsic(
    yaw_deg: float,
    position_lidar: Iterable[float] = (0.0, 0.0, 0.0),
    pitch_deg: float = 0.0,
) -> np.ndarray:
    """T_cam_lidar of an optical camera at ``position_lidar`` looking along ``yaw_deg``.

    ``pitch_deg`` > 0 tilts the camera down.
    """
    yaw, pitch = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    fwd = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), -np.sin(pitch)])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])  # rows: camera axes expressed in the LiDAR frame
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ np.asarray(list(position_lidar), dtype=np.float64)
    return T


def make_rig(
    n: int = 3,
    width: int = 640,
    height: int = 360,
    hfov_deg: float = 70.0,
    mount_radius: float = 0.3,
    mount_z: float = -0.1,
    pitch_deg: float = 2.0,
) -> list[PinholeCamera]:
    """A rig of ``n`` (1..6) cameras named from :data:`CAMERA_NAMES`, mounted around the LiDAR."""
    if not 1 <= n <= len(CAMERA_NAMES):
        raise ValueError(f"1..{len(CAMERA_NAMES)} cameras supported, got {n}")
    cams = []
    for name in CAMERA_NAMES[:n]:
        yaw = CAMERA_YAWS_DEG[name]
        pos = (
            mount_radius * np.cos(np.deg2rad(yaw)),
            mount_radius * np.sin(np.deg2rad(yaw)),
            mount_z,
        )
        cams.append(
            PinholeCamera(
                name=name,
                K=intrinsics_from_fov(width, height, hfov_deg),
                width=width,
                height=height,
                T_cam_lidar=camera_extrinsic(yaw, pos, pitch_deg),
            )
        )
    return cams


def project_to_cameras(
    points_xyz: np.ndarray, cameras: Iterable[PinholeCamera]
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{name: (uv, depth, in_fov)}`` for every camera."""
    return {cam.name: cam.project(points_xyz) for cam in cameras}


def any_fov_mask(points_xyz: np.ndarray, cameras: Iterable[PinholeCamera]) -> np.ndarray:
    """Bool mask of points seen by at least one camera."""
    pts = np.asarray(points_xyz)
    mask = np.zeros(len(pts), dtype=bool)
    for cam in cameras:
        mask |= cam.fov_mask(pts)
    return mask


def calibration_to_dict(
    cameras: Iterable[PinholeCamera], lidar_frame: str = "lidar"
) -> dict[str, Any]:
    """The ``calibration.yaml`` document: LiDAR frame plus one entry per camera."""
    return {"lidar_frame": lidar_frame, "cameras": [c.to_dict() for c in cameras]}


def calibration_from_dict(d: Mapping[str, Any]) -> list[PinholeCamera]:
    """Inverse of :func:`calibration_to_dict`."""
    return [PinholeCamera.from_dict(c) for c in d["cameras"]]


def save_calibration(
    path: str, cameras: Iterable[PinholeCamera], lidar_frame: str = "lidar"
) -> None:
    """Write ``calibration.yaml``."""
    import yaml

    with open(path, "w") as f:
        yaml.safe_dump(calibration_to_dict(cameras, lidar_frame), f, sort_keys=False)


def load_calibration(path: str) -> list[PinholeCamera]:
    """Read ``calibration.yaml`` written by :func:`save_calibration`."""
    import yaml

    with open(path) as f:
        return calibration_from_dict(yaml.safe_load(f))
