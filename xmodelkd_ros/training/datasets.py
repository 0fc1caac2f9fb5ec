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
from xmodelkd_ros.training.recipe_types import AugmentSection, DataSection, Recipe

#: ``data.dataset`` -> reader factory: ``build(recipe, part)`` with part "train" or "val".
DATASETS: Registry[type] = Registry("data.dataset", DatasetError)


def build_source(recipe: Recipe, split: str) -> Any:
    """The reader for ``split`` ("train", "val" or "pretrain") of the recipe's dataset."""
    if recipe.data.unlabeled_scans and (recipe.data.dataset != "synthetic" or recipe.data.root):
        raise DatasetError("data.unlabeled_scans (a pool of generated streets) needs "
                           "data.dataset synthetic without data.root")  # fmt: skip
    if split == "pretrain" and recipe.data.pretrain == "bag":
        return _bag_source(recipe.data)
    part = "train" if split == "pretrain" else split
    return DATASETS.get(recipe.data.dataset).build(recipe, part)


def _bag_source(data: DataSection) -> Any:
    """``data.pretrain=bag``: unlabeled LiDAR + camera pairs from a ROS 2 bag."""
    from xmodelkd_ros.training.data.rosbag import RosbagPairs

    bag = data.bag
    if not bag.path or not bag.calibration:
        raise DatasetError("data.pretrain=bag needs data.bag.path and data.bag.calibration")
    return RosbagPairs(
        bag.path, bag.lidar_topic, list(bag.camera_topics), bag.calibration,
        max_dt=bag.max_dt, limit=bag.limit,
    )  # fmt: skip


def _temporal_views(data: DataSection, part: str) -> int:
    """Temporal views feed the contrastive term of training; evaluation never uses them."""
    return data.temporal_views if part == "train" else 0


@DATASETS.register("synthetic")
class SyntheticData:
    """The simulated street generated on the fly; with ``data.root`` set, a folder in the
    SemanticKITTI layout (what ``python -m xmodelkd_ros.sim`` writes)."""

    @staticmethod
    def build(recipe: Recipe, part: str) -> Any:
        data = recipe.data
        if data.root is not None:
            return SemanticKittiData.build(recipe, part)
        from xmodelkd_ros.sim.splits import SplitError

        scans = data.scans_of(part)
        if scans is None:
            raise DatasetError(f"data.{part}_scans is not set (scans of the synthetic world)")
        try:
            world = _synthetic_world(recipe, part, getattr(data, f"{part}_seeds"), scans)
            if part != "train" or data.unlabeled_scans == 0:
                return world
            return _with_pool(recipe, world)
        except SplitError as exc:
            raise DatasetError(str(exc)) from None


def _synthetic_world(recipe: Recipe, part: str, seeds: list[int], scans: int,
                     label_fraction: float | None = None) -> Any:  # fmt: skip
    from xmodelkd_ros.training.data.synthetic import SyntheticWorld

    data = recipe.data
    h, w = data.render_size
    if label_fraction is None:
        label_fraction = data.label_fraction if part == "train" else 1.0
    return SyntheticWorld(
        seed=seeds,
        scans=scans,
        stride=data.stride,
        sim_kwargs={"cameras": data.cameras, "width": w, "height": h},
        split=part,
        label_fraction=label_fraction,
        label_seed=recipe.seed,
        temporal_views=_temporal_views(data, part),
        temporal_step=data.temporal_step,
        cache_dir=data.cache_dir,
        rigs=data.rigs,
    )


def _with_pool(recipe: Recipe, world: Any) -> Any:
    """The training scans followed by ``data.unlabeled_scans`` label-free scans of the
    streets ``data.unlabeled_seeds`` (training streets not among ``data.train_seeds``)."""
    from xmodelkd_ros.training.data.synthetic import ScanPool

    data = recipe.data
    if not data.unlabeled_seeds:
        raise DatasetError("data.unlabeled_scans > 0 needs data.unlabeled_seeds (its streets)")
    shared = sorted(set(data.unlabeled_seeds) & set(data.train_seeds))
    if shared:
        raise DatasetError(
            f"data.unlabeled_seeds {shared} are also data.train_seeds: the pool's streets "
            "must be others (their scans would repeat the labeled ones)"
        )
    pool = _synthetic_world(recipe, "train", data.unlabeled_seeds, data.unlabeled_scans, 0.0)
    return ScanPool(world, pool)


@DATASETS.register("semantickitti")
class SemanticKittiData:
    """SemanticKITTI's official layout under ``data.root``."""

    @staticmethod
    def build(recipe: Recipe, part: str) -> Any:
        data = recipe.data
        if not data.root:
            raise DatasetError("data.root is not set: --set data.root=/path/to/semantickitti")
        seqs = data.sequences.get(part)
        if not seqs:
            raise DatasetError(f"data.sequences.{part} is empty")
        return SemanticKITTI(
            data.root,
            list(seqs),
            cameras=data.kitti_cameras,
            limit=data.limit_of(part) or data.scans_of(part),
            stride=data.stride,
            temporal_views=_temporal_views(data, part),
            temporal_step=data.temporal_step,
        )


@DATASETS.register("nuscenes")
class NuScenesData:
    """nuScenes-lidarseg through nuscenes-devkit."""

    @staticmethod
    def build(recipe: Recipe, part: str) -> Any:
        from xmodelkd_ros.training.data.nuscenes import NuScenesLidarseg

        data = recipe.data
        if not data.root:
            raise DatasetError("data.root is not set: --set data.root=/path/to/nuscenes")
        return NuScenesLidarseg(
            data.root,
            version=data.version,
            split=getattr(data, f"{part}_split"),
            cameras=data.nuscenes_cameras,
            limit=data.limit_of(part),
            temporal_views=_temporal_views(data, part),
            temporal_step=data.temporal_step,
        )


def class_names_of(source: Any) -> list[str]:
    names = list(getattr(source, "class_names", ()) or ())
    if not names:
        from xmodelkd_ros.labels import CLASS_NAMES

        names = list(CLASS_NAMES)
    return names


def augment_config(section: AugmentSection, enabled: bool) -> AugmentConfig:
    """The recipe's ``augment`` section as the data pipeline's config."""
    return AugmentConfig(
        enabled=enabled,
        rotate_deg=section.rotate_deg,
        flip=section.flip,
        scale=tuple(section.scale),
        jitter=section.jitter,
        color_jitter=section.color_jitter,
        crop_scale=tuple(section.crop_scale),
        beam_subsample=tuple(int(k) for k in section.beam_subsample),
        ring_dropout=section.ring_dropout,
        range_dropout=section.range_dropout,
        range_dropout_at=section.range_dropout_at,
        elevation_cap=tuple(float(v) for v in section.elevation_cap),
        elevation_cap_p=section.elevation_cap_p,
        mount_height=section.mount_height,
        mount_pitch_deg=section.mount_pitch_deg,
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
