"""SemanticKITTI in its official layout.

``<root>/sequences/<SS>/velodyne/<NNNNNN>.bin`` (float32 x, y, z, remission),
``labels/<NNNNNN>.label`` (uint32: semantic id in the low 16 bits, instance in the
high 16), ``image_2/<NNNNNN>.png`` and ``calib.txt`` (``P2``: 3x4 rectified
projection of camera 2, ``Tr``: velodyne -> rectified camera 0). Labels go through
the official learning map (:func:`xmodelkd_ros.labels.raw_to_label`) to 19 classes.
With ``temporal_views`` the sequence's ``poses.txt`` (camera-0 poses) places the images of
neighbouring scans as extra views (:mod:`xmodelkd_ros.training.data.temporal`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from xmodelkd_ros.geometry import PinholeCamera
from xmodelkd_ros.labels import CLASS_NAMES, raw_to_label
from xmodelkd_ros.training.data.sample import Sample, label_ids_to_classes
from xmodelkd_ros.training.data.temporal import (
    kitti_lidar_poses,
    other_frame_cameras,
    read_kitti_poses,
    temporal_offsets,
)


class DatasetError(RuntimeError):
    """A dataset directory is missing or malformed (reported to the user without traceback)."""


def read_calib(path: Path) -> dict[str, np.ndarray]:
    """``calib.txt`` -> {key: values}; P0..P3 as 3x4, Tr as 4x4."""
    out: dict[str, np.ndarray] = {}
    for line in path.read_text().splitlines():
        if ":" not in line:
            continue
        key, vals = line.split(":", 1)
        nums = np.array([float(x) for x in vals.split()], dtype=np.float64)
        if nums.size != 12:
            continue
        m = nums.reshape(3, 4)
        if key.strip() in ("Tr", "Tr_velo_to_cam"):
            m = np.vstack([m, [0, 0, 0, 1]])
            key = "Tr"
        out[key.strip()] = m
    return out


def camera_from_kitti(
    name: str, P: np.ndarray, Tr: np.ndarray, width: int, height: int
) -> PinholeCamera:
    """Fold ``P = K [I | t]`` and ``Tr`` into a pinhole camera with ``T_cam_lidar``.

    KITTI's P2 carries the stereo baseline in its 4th column; ``K^-1 P[:, 3]`` is the
    camera's offset from the rectified camera 0, so ``K @ T_cam_lidar[:3] == P @ Tr``.
    """
    K = P[:, :3]
    t = np.linalg.solve(K, P[:, 3])
    offset = np.eye(4)
    offset[:3, 3] = t
    return PinholeCamera(name=name, K=K, width=width, height=height, T_cam_lidar=offset @ Tr)


def write_calib(path: Path, P: dict[str, np.ndarray], Tr: np.ndarray) -> None:
    """Write a KITTI ``calib.txt`` (used by tests and by anyone exporting to this layout)."""
    lines = [
        f"{k}: " + " ".join(f"{v:.12e}" for v in np.asarray(m)[:3].ravel()) for k, m in P.items()
    ]
    lines.append("Tr: " + " ".join(f"{v:.12e}" for v in np.asarray(Tr)[:3].ravel()))
    path.write_text("\n".join(lines) + "\n")


class SemanticKITTI:
    """Random-access reader over a list of sequences.

    ``cameras``: image folders to load (``["image_2"]`` by default; ``[]`` = LiDAR only).
    Scans without a ``.label`` file are returned with ``labels=None`` (test split).
    """

    class_names: tuple[str, ...] = CLASS_NAMES

    def __init__(
        self,
        root: str | Path,
        sequences: list[str | int],
        cameras: list[str] | None = None,
        limit: int | None = None,
        stride: int = 1,
        temporal_views: int = 0,
        temporal_step: int = 5,
    ) -> None:
        self.root = Path(root)
        seq_root = self.root / "sequences"
        if not seq_root.is_dir():
            raise DatasetError(f"SemanticKITTI root {self.root} has no 'sequences' folder")
        self.cameras = ["image_2"] if cameras is None else list(cameras)
        self.items: list[tuple[Path, str]] = []
        for seq in sequences:
            name = f"{int(seq):02d}" if str(seq).isdigit() else str(seq)
            vel = seq_root / name / "velodyne"
            if not vel.is_dir():
                raise DatasetError(f"sequence {name}: missing {vel}")
            self.items += [(seq_root / name, p.stem) for p in sorted(vel.glob("*.bin"))]
        self.items = self.items[:: max(1, stride)]
        if limit:
            self.items = self.items[:limit]
        if not self.items:
            raise DatasetError(f"no scans found under {seq_root} for sequences {sequences}")
        self._calib: dict[Path, dict[str, np.ndarray]] = {}
        self._poses: dict[Path, np.ndarray] = {}
        self.temporal = temporal_offsets(int(temporal_views), int(temporal_step))

    def __len__(self) -> int:
        return len(self.items)

    def calib(self, seq_dir: Path) -> dict[str, np.ndarray]:
        if seq_dir not in self._calib:
            path = seq_dir / "calib.txt"
            if not path.is_file():
                raise DatasetError(f"missing {path} (needed for the cameras)")
            self._calib[seq_dir] = read_calib(path)
        return self._calib[seq_dir]

    def lidar_poses(self, seq_dir: Path) -> np.ndarray:
        """(N, 4, 4) LiDAR->world poses of the sequence (from ``poses.txt`` and ``Tr``)."""
        if seq_dir not in self._poses:
            path = seq_dir / "poses.txt"
            if not path.is_file():
                raise DatasetError(f"missing {path} (needed for data.temporal_views)")
            calib = self.calib(seq_dir)
            if "Tr" not in calib:
                raise DatasetError(f"{seq_dir}/calib.txt lacks Tr")
            try:
                self._poses[seq_dir] = kitti_lidar_poses(read_kitti_poses(path), calib["Tr"])
            except ValueError as exc:
                raise DatasetError(str(exc)) from None
        return self._poses[seq_dir]

    def _camera(self, seq_dir: Path, cam: str, width: int, height: int) -> PinholeCamera:
        calib = self.calib(seq_dir)
        pkey = "P" + cam.rsplit("_", 1)[-1]
        if pkey not in calib or "Tr" not in calib:
            raise DatasetError(f"{seq_dir}/calib.txt lacks {pkey} or Tr")
        return camera_from_kitti(cam, calib[pkey], calib["Tr"], width, height)

    def _images(self, seq_dir: Path, stem: str) -> tuple[list[np.ndarray], list[PinholeCamera]]:
        """The RGB images of scan ``stem`` that exist, one per camera folder in order, and
        their cameras in that scan's frame."""
        images, cams = [], []
        for cam in self.cameras:
            img_path = seq_dir / cam / f"{stem}.png"
            if not img_path.is_file():
                continue
            with Image.open(img_path) as im:
                img = np.asarray(im.convert("RGB"))
            cams.append(self._camera(seq_dir, cam, img.shape[1], img.shape[0]))
            images.append(img)
        return images, cams

    def _add_temporal_views(self, sample: Sample, seq_dir: Path, stem: str) -> None:
        """Images of scans ``stem + offset`` that exist, seen from scan ``stem``."""
        poses = self.lidar_poses(seq_dir)
        n, offsets = int(stem), [0] * len(sample.images)
        for off in self.temporal:
            j = n + off
            if not 0 <= j < len(poses):
                continue
            images, cams = self._images(seq_dir, f"{j:0{len(stem)}d}")
            sample.images += images
            sample.cameras += other_frame_cameras(cams, poses[n], poses[j], off)
            offsets += [off] * len(images)
        sample.image_offsets = offsets

    def __getitem__(self, i: int) -> Sample:
        seq_dir, stem = self.items[i]
        points = np.fromfile(seq_dir / "velodyne" / f"{stem}.bin", dtype=np.float32)
        if points.size % 4:
            raise DatasetError(f"{seq_dir}/velodyne/{stem}.bin: size not a multiple of 4 floats")
        points = points.reshape(-1, 4)
        label_path = seq_dir / "labels" / f"{stem}.label"
        labels = None
        if label_path.is_file():
            raw = np.fromfile(label_path, dtype=np.uint32)
            if raw.shape[0] != points.shape[0]:
                raise DatasetError(f"{label_path}: {raw.shape[0]} labels for {len(points)} points")
            labels = label_ids_to_classes(raw_to_label(raw))
        images, cams = self._images(seq_dir, stem)
        sample = Sample(points, labels, images, cams, name=f"{seq_dir.name}/{stem}")
        if self.temporal:
            self._add_temporal_views(sample, seq_dir, stem)
        return sample
