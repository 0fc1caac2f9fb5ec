"""``SimWorld``: the in-memory API of the synthetic driving world (no disk involved).

Training draws frames on the fly, the writers dump them as SemanticKITTI or ROS 2 bags;
both go through this class so the data are identical whichever way they are consumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..geometry import PinholeCamera, make_rig
from ..labels import raw_to_label
from .rigs import lidar_model
from .sensors import LIDAR_HEIGHT, LidarModel, render_camera
from .street import Street

__all__ = ["EPOCH_NS", "LIDAR_HEIGHT", "Frame", "SimWorld"]
EPOCH_NS = 1_700_000_000_000_000_000  #: stamp of scan 0


@dataclass
class Frame:
    """One LiDAR sweep with its synchronised camera images and ground truth.

    ``points`` (N, 6) float32 ``[x, y, z, intensity, ring, time]`` in the LiDAR frame
    (``time``: seconds since the sweep start). ``labels`` (N,) uint16 label ids 0..19,
    ``raw`` (N,) uint16 raw SemanticKITTI ids (60 = lane marking, 252 = moving car, ...),
    ``instances`` (N,) uint16 (0 = stuff). ``pose``: 4x4 LiDAR->world at ``stamp_ns``.
    ``images[name]``: (H, W, 3) uint8 RGB, taken at ``image_stamps_ns[name]``;
    ``image_labels[name]``: (H, W) uint16 label id rendered at each pixel (0 = sky).
    """

    index: int
    stamp_ns: int
    pose: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    raw: np.ndarray
    instances: np.ndarray
    cameras: list[PinholeCamera]
    images: dict[str, np.ndarray] = field(default_factory=dict)
    image_labels: dict[str, np.ndarray] = field(default_factory=dict)
    image_stamps_ns: dict[str, int] = field(default_factory=dict)


class SimWorld:
    """A deterministic procedural street driven along by an ego vehicle.

    ``cameras``: number of rig cameras (0..6, see :func:`xmodelkd_ros.geometry.make_rig`) or
    an explicit list of :class:`PinholeCamera`. ``beams``: a beam-count preset (16, 32,
    64, 128) or a named LiDAR rig of :data:`~xmodelkd_ros.sim.rigs.RIGS` (``"32-high"``).
    Everything is a pure function of ``seed`` and the frame index, so
    ``SimWorld(s).scan(i)`` can be called in any order, in any process.
    """

    def __init__(
        self,
        seed: int = 0,
        beams: int | str = 32,
        cameras: int | Sequence[PinholeCamera] = 3,
        width: int = 640,
        height: int = 360,
        speed: float = 8.0,
        lidar_rate_hz: float = 10.0,
        camera_rate_hz: float = 10.0,
        lidar: LidarModel | None = None,
    ) -> None:
        self.seed = int(seed)
        self.street = Street(self.seed)
        self.lidar = lidar if lidar is not None else lidar_model(beams, rate_hz=lidar_rate_hz)
        if isinstance(cameras, int):
            self.cameras = make_rig(cameras, width, height) if cameras > 0 else []
        else:
            self.cameras = list(cameras)
        self.speed = float(speed)
        self.lidar_period_ns = round(1e9 / lidar_rate_hz)
        self.camera_period_ns = round(1e9 / camera_rate_hz)
        #: per-camera trigger offset after the LiDAR sweep start (a few ms, distinct per camera)
        self.camera_offset_ns = {
            c.name: 3_000_000 + 1_500_000 * k for k, c in enumerate(self.cameras)
        }

    # ---- time and ego motion ---------------------------------------------------------
    def scan_stamp_ns(self, i: int) -> int:
        return EPOCH_NS + i * self.lidar_period_ns

    def camera_stamp_ns(self, name: str, j: int) -> int:
        """Stamp of frame ``j`` of camera ``name``: own rate, fixed offset, +-1 ms jitter."""
        k = [c.name for c in self.cameras].index(name)
        jitter = np.random.default_rng([self.seed, 7919, k, j]).uniform(-1e6, 1e6)
        return EPOCH_NS + self.camera_offset_ns[name] + j * self.camera_period_ns + int(jitter)

    def camera_frame_near(self, name: str, stamp_ns: int) -> int:
        """Index of the frame of camera ``name`` closest to ``stamp_ns``."""
        off = EPOCH_NS + self.camera_offset_ns[name]
        return max(0, round((stamp_ns - off) / self.camera_period_ns))

    def pose_at(self, stamp_ns: int) -> np.ndarray:
        """LiDAR pose (4x4 lidar->world) at ``stamp_ns``: the ego follows its lane with a
        gentle lateral sway, so poses carry real yaw. The LiDAR's mounting height and
        pitch place the sensor head on the vehicle."""
        t = (stamp_ns - EPOCH_NS) * 1e-9
        x = self.speed * t
        w, a = 0.08, 0.35
        y = self.street.params.ego_y + a * np.sin(w * t)
        yaw = np.arctan2(a * w * np.cos(w * t), self.speed)
        c, s = np.cos(yaw), np.sin(yaw)
        T = np.eye(4)
        T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
        if self.lidar.pitch_deg:
            p = np.deg2rad(self.lidar.pitch_deg)
            T[:3, :3] = T[:3, :3] @ [[np.cos(p), 0, np.sin(p)], [0, 1, 0],
                                     [-np.sin(p), 0, np.cos(p)]]  # fmt: skip
        T[:3, 3] = (x, y, self.lidar.height)
        return T

    def _prims(self, stamp_ns: int, pose: np.ndarray, reach: float):
        t = (stamp_ns - EPOCH_NS) * 1e-9
        x = pose[0, 3]
        return self.street.prims(t, x - reach, x + reach, x)

    # ---- sensors -----------------------------------------------------------------------
    def lidar_scan(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sweep ``i``: (points (N,6) float32, raw ids, instances, pose)."""
        stamp = self.scan_stamp_ns(i)
        pose = self.pose_at(stamp)
        prims = self._prims(stamp, pose, self.lidar.max_range + 5.0)
        rng = np.random.default_rng([self.seed, 104729, i])
        pts, raw, inst = self.lidar.measure(pose, self.street, prims, rng)
        return pts, raw, inst, pose

    def render(
        self, cam: PinholeCamera, stamp_ns: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image of ``cam`` at ``stamp_ns``: (RGB uint8, raw-id image, instance image)."""
        pose = self.pose_at(stamp_ns)
        prims = self._prims(stamp_ns, pose, 155.0)
        return render_camera(cam, pose, self.street, prims)

    def scan(self, i: int, images: bool = True) -> Frame:
        """Frame ``i``: sweep ``i`` plus each camera's frame closest to the sweep stamp."""
        pts, raw, inst, pose = self.lidar_scan(i)
        stamp = self.scan_stamp_ns(i)
        frame = Frame(
            index=i,
            stamp_ns=stamp,
            pose=pose,
            points=pts,
            labels=raw_to_label(raw).astype(np.uint16),
            raw=raw,
            instances=inst,
            cameras=list(self.cameras),
        )
        if images:
            for cam in self.cameras:
                cs = self.camera_stamp_ns(cam.name, self.camera_frame_near(cam.name, stamp))
                img, raw_img, _ = self.render(cam, cs)
                frame.images[cam.name] = img
                frame.image_labels[cam.name] = raw_to_label(raw_img).astype(np.uint16)
                frame.image_stamps_ns[cam.name] = cs
        return frame
