"""nuScenes-lidarseg through ``nuscenes-devkit`` (optional extra): the multi-view case.

Each keyframe gives the LIDAR_TOP sweep, its lidarseg labels (32 general classes folded
onto the 16 challenge classes) and the six camera images with calibration, so every
point can have several 2D views. Ego motion between the LiDAR and camera timestamps is
compensated through the ego poses, as the devkit's own point-to-image mapping does.
With ``temporal_views`` the same chain places the cameras of neighbouring keyframes
(``prev`` / ``next``, ``temporal_step`` keyframes apart; 2 Hz) as temporal views
(:mod:`xmodelkd_ros.training.data.temporal`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from xmodelkd_ros.geometry import PinholeCamera
from xmodelkd_ros.training.data.sample import IGNORE_INDEX, Sample
from xmodelkd_ros.training.data.semantickitti import DatasetError
from xmodelkd_ros.training.data.temporal import temporal_offsets

CLASS_NAMES: tuple[str, ...] = (
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction_vehicle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "trailer",
    "truck",
    "driveable_surface",
    "other_flat",
    "sidewalk",
    "terrain",
    "manmade",
    "vegetation",
)
#: nuScenes general class name -> challenge class name (others are ignored).
GENERAL_TO_CHALLENGE: dict[str, str] = {
    "movable_object.barrier": "barrier",
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "movable_object.trafficcone": "traffic_cone",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
    "flat.driveable_surface": "driveable_surface",
    "flat.other": "other_flat",
    "flat.sidewalk": "sidewalk",
    "flat.terrain": "terrain",
    "static.manmade": "manmade",
    "static.vegetation": "vegetation",
}
CAMERAS = (
    "CAM_FRONT",
    "CAM_FRONT_LEFT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_BACK_RIGHT",
)


def quat_to_matrix(q: list[float]) -> np.ndarray:
    """nuScenes quaternion ``[w, x, y, z]`` -> 3x3 rotation matrix."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _pose(translation: list[float], rotation: list[float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(rotation)
    T[:3, 3] = translation
    return T


def learning_lut(idx2name: dict[int, str]) -> np.ndarray:
    """General lidarseg index -> challenge class index (IGNORE_INDEX if not evaluated)."""
    lut = np.full(max(idx2name) + 1, IGNORE_INDEX, dtype=np.int64)
    for idx, name in idx2name.items():
        if name in GENERAL_TO_CHALLENGE:
            lut[idx] = CLASS_NAMES.index(GENERAL_TO_CHALLENGE[name])
    return lut


def _split_scenes(split: str) -> set[str] | None:
    """Scene names of a devkit split; ``"all"`` = no filtering."""
    if split == "all":
        return None
    try:
        from nuscenes.utils.splits import create_splits_scenes
    except ImportError as exc:
        raise DatasetError("nuScenes splits need nuscenes-devkit (or split='all')") from exc
    return set(create_splits_scenes()[split])


class NuScenesLidarseg:
    """Keyframes of the scenes in ``split`` (a devkit split name, e.g. ``train``, ``val``,
    ``mini_train``, ``mini_val``)."""

    class_names = CLASS_NAMES

    def __init__(
        self,
        root: str | Path,
        version: str = "v1.0-trainval",
        split: str = "train",
        cameras: list[str] | None = None,
        limit: int | None = None,
        nusc: Any = None,
        temporal_views: int = 0,
        temporal_step: int = 1,
    ) -> None:
        """``nusc``: an already-loaded ``NuScenes`` (or any object with its ``get``,
        ``sample``, ``dataroot`` and ``lidarseg_idx2name_mapping``); loaded here if None."""
        if nusc is None:
            try:
                from nuscenes import NuScenes
            except ImportError as exc:
                raise DatasetError(
                    "nuScenes needs nuscenes-devkit: pip install nuscenes-devkit"
                ) from exc
            if not Path(root).is_dir():
                raise DatasetError(f"nuScenes root {root} does not exist")
            nusc = NuScenes(version=version, dataroot=str(root), verbose=False)
        self.nusc = nusc
        scenes = _split_scenes(split)
        self.cameras = list(CAMERAS if cameras is None else cameras)
        self.tokens = [
            s["token"]
            for s in self.nusc.sample
            if scenes is None or self.nusc.get("scene", s["scene_token"])["name"] in scenes
        ]
        if limit:
            self.tokens = self.tokens[:limit]
        if not self.tokens:
            raise DatasetError(f"no nuScenes samples in split {split!r} of {version}")
        self.lut = learning_lut(self.nusc.lidarseg_idx2name_mapping)
        self.temporal = temporal_offsets(int(temporal_views), int(temporal_step))

    def __len__(self) -> int:
        return len(self.tokens)

    def _sensor_to_global(self, sd: dict) -> np.ndarray:
        cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        ego = self.nusc.get("ego_pose", sd["ego_pose_token"])
        return _pose(ego["translation"], ego["rotation"]) @ _pose(cs["translation"], cs["rotation"])

    def __getitem__(self, i: int) -> Sample:
        nusc = self.nusc
        sample = nusc.get("sample", self.tokens[i])
        lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        pts = np.fromfile(Path(nusc.dataroot) / lidar_sd["filename"], dtype=np.float32)
        # x, y, z, intensity, ring: the ring stays in column 4 (ring-based augmentation)
        pts = pts.reshape(-1, 5).copy()
        pts[:, 3] /= 255.0  # nuScenes intensity is 0..255; KITTI remission is 0..1
        seg = nusc.get("lidarseg", lidar_sd["token"])
        raw = np.fromfile(Path(nusc.dataroot) / seg["filename"], dtype=np.uint8)
        labels = self.lut[raw]
        lidar_to_global = self._sensor_to_global(lidar_sd)
        images, cams = self._rig(sample, lidar_to_global)
        out = Sample(pts, labels, images, cams, name=sample["token"])
        if self.temporal:
            offsets = [0] * len(images)
            for off in self.temporal:
                other = self._walk(sample, off)
                if other is None:
                    continue
                imgs, other_cams = self._rig(other, lidar_to_global, off)
                out.images += imgs
                out.cameras += other_cams
                offsets += [off] * len(imgs)
            out.image_offsets = offsets
        return out

    def _walk(self, sample: dict, offset: int) -> dict | None:
        """The keyframe ``offset`` keyframes away in the scene (None past its ends)."""
        key = "next" if offset > 0 else "prev"
        for _ in range(abs(offset)):
            token = sample.get(key) or ""
            if not token:
                return None
            sample = self.nusc.get("sample", token)
        return sample

    def _rig(
        self, sample: dict, lidar_to_global: np.ndarray, offset: int = 0
    ) -> tuple[list[np.ndarray], list[PinholeCamera]]:
        """The keyframe's images and cameras, projecting points of the LiDAR whose pose is
        ``lidar_to_global`` (the same keyframe's, or another one's for temporal views)."""
        nusc = self.nusc
        images, cams = [], []
        for name in self.cameras:
            cam_sd = nusc.get("sample_data", sample["data"][name])
            cs = nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])
            T_cam_lidar = np.linalg.inv(self._sensor_to_global(cam_sd)) @ lidar_to_global
            with Image.open(Path(nusc.dataroot) / cam_sd["filename"]) as im:
                img = np.asarray(im.convert("RGB"))
            cams.append(
                PinholeCamera(
                    name if offset == 0 else f"{name}@{offset:+d}",
                    np.asarray(cs["camera_intrinsic"]),
                    img.shape[1],
                    img.shape[0],
                    T_cam_lidar,
                    near=1.0,
                )
            )
            images.append(img)
        return images, cams
