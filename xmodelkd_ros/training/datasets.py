"""Recipe -> dataset objects, and the torch ``Dataset`` that prepares samples.

Keeping this apart from the loop means a new data source is one reader class plus one
``@DATASETS.register`` class here; augmentation randomness is a pure function of (seed,
stage, epoch, index), so a resumed run (and every DDP rank) sees exactly the samples it
would have seen.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from xmodelkd_ros.registry import Registry
from xmodelkd_ros.training.augment import AugmentConfig, prepare_sample
from xmodelkd_ros.training.data.prepared import Prepared
from xmodelkd_ros.training.data.sample import Sample
from xmodelkd_ros.training.data.semantickitti import DatasetError, SemanticKITTI
from xmodelkd_ros.training.recipe import get

#: ``data.dataset`` -> reader factory: ``build(recipe, part)`` with part "train" or "val".
DATASETS: Registry[type] = Registry("data.dataset", DatasetError)


def build_source(recipe: dict[str, Any], split: str) -> Any:
    """The reader for ``split`` ("train", "val" or "pretrain") of the recipe's dataset."""
    data = recipe["data"]
    if split == "pretrain" and data.get("pretrain", "train") == "bag":
        return _bag_source(data)
    part = "train" if split == "pretrain" else split
    return DATASETS.get(data.get("dataset", "synthetic")).build(recipe, part)


def _bag_source(data: dict[str, Any]) -> Any:
    """``data.pretrain=bag``: unlabeled LiDAR + camera pairs from a ROS 2 bag."""
    from xmodelkd_ros.training.data.rosbag import RosbagPairs

    bag = data.get("bag") or {}
    if not bag.get("path") or not bag.get("calibration"):
        raise DatasetError("data.pretrain=bag needs data.bag.path and data.bag.calibration")
    return RosbagPairs(
        bag["path"],
        bag.get("lidar_topic", "/points"),
        list(bag.get("camera_topics") or []),
        bag["calibration"],
        max_dt=float(bag.get("max_dt", 0.05)),
        limit=bag.get("limit"),
    )


@DATASETS.register("synthetic")
class SyntheticData:
    """The simulated street generated on the fly; with ``data.root`` set, a folder in the
    SemanticKITTI layout (what ``python -m xmodelkd_ros.sim`` writes)."""

    @staticmethod
    def build(recipe: dict[str, Any], part: str) -> Any:
        data = recipe["data"]
        if data.get("root") is not None:
            return SemanticKittiData.build(recipe, part)
        from xmodelkd_ros.sim.splits import SplitError
        from xmodelkd_ros.training.data.synthetic import SyntheticWorld

        h, w = data.get("render_size", [180, 320])
        try:
            return SyntheticWorld(
                seed=data[f"{part}_seeds"],
                scans=int(data[f"{part}_scans"]),
                stride=int(data.get("stride", 1)),
                sim_kwargs={"cameras": int(data.get("cameras", 3)), "width": w, "height": h},
                split=part,
                label_fraction=float(data.get("label_fraction", 1.0) if part == "train" else 1),
                label_seed=int(recipe.get("seed", 0)),
                temporal_views=int(data.get("temporal_views", 0)) if part == "train" else 0,
                temporal_step=int(data.get("temporal_step", 5)),
            )
        except SplitError as exc:
            raise DatasetError(str(exc)) from None


@DATASETS.register("semantickitti")
class SemanticKittiData:
    """SemanticKITTI's official layout under ``data.root``."""

    @staticmethod
    def build(recipe: dict[str, Any], part: str) -> Any:
        data = recipe["data"]
        if not data.get("root"):
            raise DatasetError("data.root is not set: --set data.root=/path/to/semantickitti")
        seqs = get(recipe, f"data.sequences.{part}")
        if not seqs:
            raise DatasetError(f"data.sequences.{part} is empty")
        return SemanticKITTI(
            data["root"],
            list(seqs),
            cameras=data.get("kitti_cameras"),
            limit=data.get(f"{part}_limit") or data.get(f"{part}_scans"),
            stride=int(data.get("stride", 1)),
            temporal_views=int(data.get("temporal_views", 0)) if part == "train" else 0,
            temporal_step=int(data.get("temporal_step", 5)),
        )


@DATASETS.register("nuscenes")
class NuScenesData:
    """nuScenes-lidarseg through nuscenes-devkit."""

    @staticmethod
    def build(recipe: dict[str, Any], part: str) -> Any:
        from xmodelkd_ros.training.data.nuscenes import NuScenesLidarseg

        data = recipe["data"]
        if not data.get("root"):
            raise DatasetError("data.root is not set: --set data.root=/path/to/nuscenes")
        return NuScenesLidarseg(
            data["root"],
            version=data.get("version", "v1.0-trainval"),
            split=data.get(f"{part}_split", part),
            cameras=data.get("nuscenes_cameras"),
            limit=data.get(f"{part}_limit"),
            temporal_views=int(data.get("temporal_views", 0)) if part == "train" else 0,
            temporal_step=int(data.get("temporal_step", 1)),
        )


def class_names_of(source: Any) -> list[str]:
    names = list(getattr(source, "class_names", ()) or ())
    if not names:
        from xmodelkd_ros.labels import CLASS_NAMES

        names = list(CLASS_NAMES)
    return names


def augment_config(recipe: dict[str, Any], enabled: bool) -> AugmentConfig:
    a = dict(recipe.get("augment") or {})
    return AugmentConfig(
        enabled=enabled,
        rotate_deg=float(a.get("rotate_deg", 180.0)),
        flip=bool(a.get("flip", True)),
        scale=tuple(a.get("scale", (0.95, 1.05))),
        jitter=float(a.get("jitter", 0.01)),
        color_jitter=float(a.get("color_jitter", 0.2)),
        crop_scale=tuple(a.get("crop_scale", (0.8, 1.0))),
    )


class PreparedDataset(Dataset):
    """Wraps a reader: ``ds[i]`` is the augmented, correspondence-carrying sample ``i``.

    ``set_epoch`` must be called before each epoch (the DataLoader pickles the dataset
    into workers at iterator creation, so the epoch travels with it).
    """

    def __init__(
        self,
        source: Any,
        cfg: AugmentConfig,
        image_hw: tuple[int, int],
        seed: int,
        stream: int,
        max_points: int | None,
        views: int = 1,
        use_images: bool = True,
        temporal: bool = False,
    ) -> None:
        self.source, self.cfg, self.image_hw = source, cfg, tuple(image_hw)
        self.seed, self.stream, self.max_points = seed, stream, max_points
        self.views, self.use_images, self.epoch = views, use_images, 0
        self.temporal = temporal  # keep the readers' temporal views (contrastive stages)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> Prepared:
        sample: Sample = self.source[i]
        rng = np.random.default_rng([self.seed, self.stream, self.epoch, i])
        return prepare_sample(
            sample, self.cfg, rng, self.image_hw, self.max_points, self.views, self.use_images,
            self.temporal,
        )
