"""The node's optional cameras, without ROS: calibration, camera models, overlay images.

Why apart: the student is LiDAR-only, so everything about cameras is an add-on that
must never hold a scan back. Overlays are drawn after the labeled cloud is published,
from the synchronizer's frames (:mod:`xmodelkd_ros.sync`), on their own thread; this
module turns one such frame into overlay images and keeps per-camera notes for
diagnostics (why a camera has no overlay).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from xmodelkd_ros.geometry import PinholeCamera, load_calibration
from xmodelkd_ros.msgs import MessageFormatError, decode_camera_info, image_to_rgb
from xmodelkd_ros.node.overlay import draw_overlay
from xmodelkd_ros.node.params import CamerasConfig
from xmodelkd_ros.node.processing import StartupError


@dataclass(frozen=True)
class OverlayJob:
    """A segmented scan kept for its overlay: the points the network saw and their labels."""

    xyz: np.ndarray
    labels: np.ndarray


def load_camera_calibration(cfg: CamerasConfig, overlay: bool,
                            warn: Callable[[str], None]) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per camera ``{"K", "width", "height", "T", "D"}`` from the file and the parameters.

    Problems that only cost an overlay are passed to ``warn``; an unreadable file raises
    :class:`StartupError`.
    """
    calib: dict[str, dict[str, Any]] = {c.name: {} for c in cfg.cameras}
    if cfg.calibration_file:
        try:
            cams = {c.name: c for c in load_calibration(cfg.calibration_file)}
        except Exception as exc:
            raise StartupError(
                f"cannot read cameras.calibration_file {cfg.calibration_file}: {exc}"
            ) from None
        for name, entry in calib.items():
            c = cams.get(name)
            if c is not None:
                entry.update(K=c.K, width=c.width, height=c.height, T=c.T_cam_lidar, D=c.D)
            else:
                warn(f"camera {name} is not in {cfg.calibration_file} "
                     f"(it has: {', '.join(cams) or 'none'})")  # fmt: skip
    for cam in cfg.cameras:
        if cam.T_cam_lidar is not None:
            calib[cam.name]["T"] = cam.T_cam_lidar
        if "T" not in calib[cam.name] and overlay:
            warn(f"camera {cam.name}: no extrinsic (cameras.{cam.name}.T_cam_lidar or "
                 "calibration file): no overlay for it")  # fmt: skip
    return calib


class OverlayRenderer:
    """Camera models from calibration / CameraInfo, and overlay images from synced frames."""

    def __init__(self, calib: dict[str, dict[str, Any]], palette: np.ndarray) -> None:
        self.calib = calib
        self.palette = palette
        self.camera_info: dict[str, Any] = {}
        self.notes: dict[str, str] = {}  # camera -> why it has no overlay (diagnostics)
        self.published = dict.fromkeys(calib, 0)
        self.skipped = dict.fromkeys(calib, 0)  # no matching image, or no camera model
        self._lock = threading.Lock()

    def calibrated(self, name: str) -> bool:
        return "T" in self.calib.get(name, {})

    def on_camera_info(self, name: str, msg: Any) -> None:
        """Store a CameraInfo (intrinsics when the calibration file has none)."""
        try:
            self.camera_info[name] = decode_camera_info(msg)
        except MessageFormatError as exc:
            self.notes[name] = f"bad CameraInfo: {exc}"

    def camera_model(self, name: str) -> PinholeCamera | None:
        """A PinholeCamera from the calibration file / parameters / CameraInfo, or None."""
        c = self.calib.get(name, {})
        if "T" not in c:
            self.notes[name] = "no extrinsic"
            return None
        info = self.camera_info.get(name)
        if "K" in c:
            K, w, h, D = c["K"], c["width"], c["height"], c.get("D")
        elif info is not None:
            K, w, h, D = info.K, info.width, info.height, info.D
            if info.distortion_model not in ("", "plumb_bob", "rational_polynomial"):
                D = None  # only plumb_bob is modelled (rational's first 5 terms match)
        else:
            self.notes[name] = "no intrinsics yet (calibration file or CameraInfo)"
            return None
        D = D if D is not None and len(D) >= 5 else None
        return PinholeCamera(name, K, w, h, c["T"], D=None if D is None else D[:5])

    def count_skipped(self, names: Any) -> None:
        with self._lock:
            for n in names:
                if n in self.skipped:
                    self.skipped[n] += 1

    def render(self, frame: Any, alpha: float, radius: int,
               wanted: Callable[[str], bool]) -> list[tuple[str, np.ndarray, Any]]:  # fmt: skip
        """Overlays for a :class:`~xmodelkd_ros.sync.SyncedFrame` whose ``scan`` is an
        :class:`OverlayJob`: ``[(camera, rgb image, source image msg)]`` for each matched
        camera that ``wanted`` (someone subscribes); missing cameras are counted skipped."""
        job: OverlayJob = frame.scan
        self.count_skipped(frame.missing)
        out = []
        for name, (_stamp, img_msg) in frame.images.items():
            if not wanted(name):
                continue
            cam = self.camera_model(name)
            if cam is None:
                self.count_skipped([name])
                continue
            try:
                rgb = image_to_rgb(img_msg)
            except MessageFormatError as exc:
                self.notes[name] = f"bad image: {exc}"
                self.count_skipped([name])
                continue
            img = draw_overlay(rgb, cam, job.xyz, job.labels, palette=self.palette,
                               alpha=alpha, radius=radius)  # fmt: skip
            out.append((name, img, img_msg))
            with self._lock:
                self.published[name] += 1
            self.notes.pop(name, None)
        return out
