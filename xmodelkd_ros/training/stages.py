"""The stage kinds of the method as small specs, one registered class each.

A stage kind says what the generic :class:`~xmodelkd_ros.training.trainer.Trainer` cannot
know: which data split it trains on, how many epochs it trains, its RNG
stream, how to build its network and its loss, and how to save the result. The trainer
never compares ``kind`` strings; a new stage is one ``@STAGE_KINDS.register`` class.

* ``pretrain`` - label-free 2D-3D contrastive alignment of the fusion teacher.
* ``teacher``  - the camera+LiDAR fusion teacher on labels (+ the contrastive term).
* ``distill``  - the LiDAR-only student from labels and the frozen teacher.
* ``baseline`` - the same student from labels only, as many epochs as stand behind the
  distilled student's weights (:func:`control_epochs`).
* ``selftrain`` - the LiDAR-only self-training control: the student on labels + the
  confident pseudo-labels of a frozen LiDAR-only network (``baseline.pt``), the
  baseline's epochs.
* ``joint``    - 2DPASS-style single-stage training: the fusion network and its 3D branch
  trained together (KL fused -> 3D in the cameras' view); the 3D branch is the student.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from xmodelkd_ros.nets.checkpoint import (
    CheckpointError,
    StudentCheckpoint,
    atomic_torch_save,
    load_student,
    read_torch_file,
    save_student,
)
from xmodelkd_ros.nets.image_encoder import ImageEncoderConfig
from xmodelkd_ros.nets.student import StudentConfig, StudentNet, student_config
from xmodelkd_ros.nets.teacher import FusionTeacher, PointPixelCorrespondence, TeacherConfig
from xmodelkd_ros.registry import Registry
from xmodelkd_ros.training.context import Context, grid_of
from xmodelkd_ros.training.data.collate import Batch
from xmodelkd_ros.training.data.sample import IGNORE_INDEX
from xmodelkd_ros.training.losses import confidence_mask
from xmodelkd_ros.training.method_steps import (
    JointLoss,
    JointStep,
    JointWeights,
    SelfTrainStep,
    kd_region,
)
from xmodelkd_ros.training.objectives import (
    DistillLoss,
    DistillWeights,
    TeacherLoss,
    TeacherWeights,
    settings_from_dict,
)
from xmodelkd_ros.training.recipe import RecipeError

TEACHER_FORMAT = "xmodelkd_ros.teacher/1"
#: RNG stream of evaluation's (augmentation-free) sample preparation.
EVAL_STREAM = 9


# ----------------------------------------------------------------------------- models


def student_cfg_of(recipe: dict[str, Any], num_classes: int) -> StudentConfig:
    m = recipe["model"]
    return student_config(
        m.get("preset", "small"), num_classes=num_classes, **(m.get("student") or {})
    )


def teacher_cfg_of(recipe: dict[str, Any], num_classes: int) -> TeacherConfig:
    m = recipe["model"]
    image = {k: tuple(v) if isinstance(v, list) else v for k, v in (m.get("image") or {}).items()}
    return TeacherConfig(
        student=student_cfg_of(recipe, num_classes),
        image=ImageEncoderConfig(**image),
        contrast_dim=int(m.get("contrast_dim", 64)),
    )


def save_teacher(model: FusionTeacher, path: Path, provenance: dict[str, Any]) -> None:
    atomic_torch_save(
        {
            "format": TEACHER_FORMAT,
            "teacher_config": model.config.to_dict(),
            "state_dict": model.state_dict(),
            "provenance": provenance,
        },
        path,
    )


def load_teacher(path: Path) -> FusionTeacher:
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint {path} not found: run --stage teacher first")
    payload = read_torch_file(path)
    if not isinstance(payload, dict) or payload.get("format") != TEACHER_FORMAT:
        raise CheckpointError(f"{path} is not a {TEACHER_FORMAT} checkpoint")
    model = FusionTeacher(TeacherConfig.from_dict(payload["teacher_config"]))
    model.load_state_dict(payload["state_dict"])
    return model


def correspondence(batch: Batch) -> PointPixelCorrespondence:
    return PointPixelCorrespondence(
        batch.point_idx, batch.image_idx, batch.uv, batch.image_size, batch.fuse
    )


def labels_of(batch: Batch) -> Tensor:
    if batch.labels is not None:
        return batch.labels
    return torch.full((batch.num_points,), IGNORE_INDEX, dtype=torch.long, device=batch.uv.device)


def on_sparse_backend(ctx: Context, module: nn.Module) -> nn.Module:
    """``optim.sparse_impl: spconv`` runs ``module``'s sparse convs on spconv (same
    parameters); ``pairs`` / ``gather`` are the process-wide default set by the CLI."""
    if ctx.recipe["optim"].get("sparse_impl") == "spconv":
        from xmodelkd_ros.sparse.spconv_train import convert_to_spconv

        convert_to_spconv(module)
    return module


def cpu_state(net: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


# ----------------------------------------------------------------------------- steps


class TeacherStep(nn.Module):
    """What ``pretrain`` / ``teacher`` optimise: ``forward(batch) -> (loss, logs)``."""

    def __init__(self, net: FusionTeacher, loss: TeacherLoss) -> None:
        super().__init__()
        self.net, self.loss = net, loss

    def forward(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict]:
        out = self.net(batch.inputs, batch.images, correspondence(batch))
        return self.loss(out, labels_of(batch), batch.point_idx, generator)


class StudentStep(nn.Module):
    """What ``distill`` / ``baseline`` optimise; DDP wraps this.

    The frozen teacher of ``distill`` is kept out of the module tree (no parameters, no
    state_dict entries), so only the student and its projection heads are trained/saved.
    """

    def __init__(
        self,
        net: StudentNet,
        loss: DistillLoss,
        teacher: nn.Module | None = None,
        kd_mask: str = "fov",
        kd_min_confidence: float = 0.0,
    ) -> None:
        super().__init__()
        self.net, self.loss = net, loss
        self._teacher = (teacher,) if teacher is not None else ()
        if kd_mask not in ("fov", "fov_correct"):
            raise ValueError(f"unknown loss.kd_mask {kd_mask!r} (fov | fov_correct)")
        self.kd_mask = kd_mask
        #: KD only where the teacher's top probability reaches this (0 = everywhere)
        self.kd_min_confidence = float(kd_min_confidence)

    def forward(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict]:
        labels = labels_of(batch)
        i = batch.inputs
        out = self.net(i.voxel_feats, i.point_feats, i.point2voxel, i.maps)
        if not self._teacher:
            return self.loss(out, labels)
        teacher = self._teacher[0]
        with torch.no_grad():
            t_out = teacher(batch.inputs, batch.images, correspondence(batch))
        # fov_correct: distil only where the teacher is right (or the label is unknown):
        # elsewhere its soft targets would teach the student the teacher's own mistakes.
        mask = kd_region(t_out.seen, t_out.logits, labels, self.kd_mask, self.kd_min_confidence)
        all_mask = None
        if self.kd_min_confidence > 0:
            all_mask = confidence_mask(t_out.logits_3d, self.kd_min_confidence)
        return self.loss(out, labels, t_out, mask, all_mask)


# ----------------------------------------------------------------------------- kinds


class StageKind(ABC):
    """One stage of the method; subclasses fill the class attributes and the builders."""

    name: ClassVar[str]
    #: Data split the stage trains on ("train", or "pretrain": train scans or a bag).
    split: ClassVar[str] = "train"
    #: ``schedule`` key holding the number of epochs.
    epochs_key: ClassVar[str]
    #: RNG stream of initialisation and augmentation (distinct per stage).
    stream: ClassVar[int]
    #: Final checkpoint in ``<out>``.
    final: ClassVar[str]
    #: Whether the prepared samples carry images (the baseline never looks at them).
    uses_images: ClassVar[bool] = True
    #: Whether the stage ends with a validation mIoU (needs labels).
    evaluates: ClassVar[bool] = True
    #: Whether the samples keep the readers' temporal views (``data.temporal_views``):
    #: only stages with a contrastive term use them; they are never fused.
    uses_temporal: ClassVar[bool] = False

    def epochs(self, recipe: dict[str, Any]) -> int:
        """How many epochs the stage trains (``schedule[epochs_key]`` unless overridden)."""
        return int(recipe["schedule"][self.epochs_key])

    @abstractmethod
    def build(self, ctx: Context, num_classes: int) -> nn.Module:
        """The module DDP wraps: ``forward(batch, generator) -> (loss, logs)``, ``.net``."""

    @abstractmethod
    def network_config(self, step: nn.Module) -> StudentConfig:
        """The 3D network's config (kernel-map levels and input channels for collation)."""

    @abstractmethod
    def save(
        self,
        ctx: Context,
        step: nn.Module,
        path: Path,
        class_names: list[str],
        provenance: dict[str, Any],
    ) -> None:
        """Write the stage's final checkpoint to ``path``."""


def fusion_network(ctx: Context, num_classes: int, stage: str) -> FusionTeacher:
    """A fresh fusion network of the recipe (with ``model.image_weights`` when set)."""
    r = ctx.recipe
    model = FusionTeacher(teacher_cfg_of(r, num_classes))
    if r["model"].get("image_weights"):
        report = model.load_image_weights(r["model"]["image_weights"])
        ctx.log(f"{stage}: image weights {report}")
    return model


def save_student_net(
    ctx: Context, net: StudentNet, path: Path, class_names: list[str], provenance: dict[str, Any]
) -> None:
    ck = StudentCheckpoint(net.config, grid_of(ctx.recipe), cpu_state(net), class_names, provenance)
    save_student(ck, path)


class _TeacherKind(StageKind):
    def network(self, ctx: Context, num_classes: int) -> FusionTeacher:
        return fusion_network(ctx, num_classes, self.name)

    @abstractmethod
    def loss_weights(self, ctx: Context) -> TeacherWeights:
        """The loss builder's input: which terms this teacher stage optimises."""

    def build(self, ctx: Context, num_classes: int) -> nn.Module:
        net = self.network(ctx, num_classes)
        return TeacherStep(net, TeacherLoss(self.loss_weights(ctx)))

    def network_config(self, step: nn.Module) -> StudentConfig:
        return step.net.config.student

    def save(
        self,
        ctx: Context,
        step: nn.Module,
        path: Path,
        class_names: list[str],
        provenance: dict[str, Any],
    ) -> None:
        save_teacher(step.net, path, provenance)


STAGE_KINDS: Registry[type[StageKind]] = Registry("stage")


@STAGE_KINDS.register("pretrain")
class PretrainStage(_TeacherKind):
    name = "pretrain"
    split = "pretrain"
    epochs_key = "pretrain_epochs"
    stream = 1
    final = "pretrain.pt"
    evaluates = False
    uses_temporal = True

    def loss_weights(self, ctx: Context) -> TeacherWeights:
        p = dict((ctx.recipe.get("loss") or {}).get("pretrain") or {})
        return TeacherWeights(
            fused=0.0,
            branch_3d=0.0,
            contrastive=float(p.get("contrastive", 1.0)),
            temperature=float(p.get("temperature", 0.07)),
            max_points=int(p.get("max_points", 2048)),
            ignore_index=IGNORE_INDEX,
        )


@STAGE_KINDS.register("teacher")
class TeacherStage(_TeacherKind):
    name = "teacher"
    epochs_key = "teacher_epochs"
    stream = 2
    final = "teacher.pt"
    uses_temporal = True

    def network(self, ctx: Context, num_classes: int) -> FusionTeacher:
        pretrained = ctx.out / PretrainStage.final
        if not pretrained.is_file():
            return super().network(ctx, num_classes)
        model = FusionTeacher(teacher_cfg_of(ctx.recipe, num_classes))
        model.load_state_dict(load_teacher(pretrained).state_dict())
        ctx.log("teacher: starting from the contrastive pretraining (pretrain.pt)")
        return model

    def loss_weights(self, ctx: Context) -> TeacherWeights:
        w = (ctx.recipe.get("loss") or {}).get("teacher") or {}
        return TeacherWeights(**{**w, "ignore_index": IGNORE_INDEX})


class _SavesStudentNet(StageKind):
    """Stages whose result is a deployable student (``step.net``): a student checkpoint."""

    def save(
        self,
        ctx: Context,
        step: nn.Module,
        path: Path,
        class_names: list[str],
        provenance: dict[str, Any],
    ) -> None:
        save_student_net(ctx, step.net, path, class_names, provenance)


class _StudentKind(_SavesStudentNet):
    epochs_key = "student_epochs"
    stream = 3

    def teacher(self, ctx: Context, student: StudentNet) -> FusionTeacher | None:
        """The frozen teacher whose outputs the loss distils (None: labels only)."""
        return None

    def loss(self, ctx: Context, student: StudentNet, teacher: FusionTeacher | None) -> DistillLoss:
        weights = dict((ctx.recipe.get("loss") or {}).get("distill") or {})
        weights["ignore_index"] = IGNORE_INDEX
        if teacher is None:
            d_t = student.config.feature_dim
            for k in ("kd", "feat", "kd_all", "feat_all"):
                weights[k] = 0.0
        else:
            d_t = teacher.feature_dim
        return DistillLoss(student.config.feature_dim, d_t, d_t, DistillWeights.from_dict(weights))

    def build(self, ctx: Context, num_classes: int) -> nn.Module:
        student = StudentNet(student_cfg_of(ctx.recipe, num_classes))
        teacher = self.teacher(ctx, student)
        loss = self.loss(ctx, student, teacher)
        lw = ctx.recipe.get("loss") or {}
        kd_mask = str(lw.get("kd_mask", "fov"))
        conf = float(lw.get("kd_min_confidence", 0.0))
        return StudentStep(student, loss, teacher, kd_mask, conf)

    def network_config(self, step: nn.Module) -> StudentConfig:
        return step.net.config


@STAGE_KINDS.register("distill")
class DistillStage(_StudentKind):
    name = "distill"
    final = "student.pt"

    def teacher(self, ctx: Context, student: StudentNet) -> FusionTeacher | None:
        teacher = load_teacher(ctx.out / TeacherStage.final).to(ctx.device).eval()
        on_sparse_backend(ctx, teacher)
        for p in teacher.parameters():
            p.requires_grad_(False)
        if student_init(ctx.recipe) == "teacher3d":
            # The teacher's 3D branch has the student's architecture and was trained with
            # the image branch and the 2D-3D contrastive term: start the student there.
            student.load_state_dict(teacher.branch_3d.state_dict())
            ctx.log("distill: student initialised from the teacher's 3D branch")
        return teacher


def student_init(recipe: dict[str, Any]) -> str:
    """``model.student_init`` (default ``scratch``), checked: ``scratch`` | ``teacher3d``."""
    init = recipe["model"].get("student_init", "scratch")
    if init not in ("scratch", "teacher3d"):
        raise RecipeError(f"model.student_init must be scratch or teacher3d, got {init!r}")
    return init


def lineage_epochs(recipe: dict[str, Any]) -> int:
    """Epochs of training behind the distilled student's weights.

    A student initialised from the teacher's 3D branch (``model.student_init: teacher3d``)
    carries the teacher's epochs (and the contrastive pretraining's, which the teacher
    starts from) plus its own; one trained from scratch only its own.
    """
    s = recipe["schedule"]
    n = int(s["student_epochs"])
    if student_init(recipe) == "teacher3d":
        n += int(s["teacher_epochs"]) + int(s.get("pretrain_epochs") or 0)
    return n


def control_epochs(recipe: dict[str, Any]) -> int:
    """Epochs of the LiDAR-only controls (``baseline``, ``selftrain``).

    ``schedule.control_epochs``: ``lineage`` (the recipes' default) gives them as many
    epochs as stand behind the distilled student's weights (:func:`lineage_epochs`), so a
    gain measured against them is not a gain of training length (README, "Results": with
    full labels a 40-epoch baseline erased the +3.8 measured against a 24-epoch one);
    ``student`` the student stage's own ``student_epochs`` (the first protocol, kept to
    reproduce its numbers); or a positive integer.
    """
    value = recipe["schedule"].get("control_epochs", "student")
    if value == "lineage":
        return lineage_epochs(recipe)
    if value == "student":
        return int(recipe["schedule"]["student_epochs"])
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise RecipeError(
        f"schedule.control_epochs must be lineage, student or a positive integer, got {value!r}"
    )


def recipe_epochs(recipe: dict[str, Any]) -> dict[str, int]:
    """The epochs a run's reports state: teacher, distilled (its own stage), distilled
    lineage (behind its weights) and the LiDAR-only controls."""
    return {
        "teacher": int(recipe["schedule"]["teacher_epochs"]),
        "distilled": int(recipe["schedule"]["student_epochs"]),
        "distilled_lineage": lineage_epochs(recipe),
        "controls": control_epochs(recipe),
    }


class _ControlKind(_StudentKind):
    """A LiDAR-only control: trained as long as :func:`control_epochs` says."""

    uses_images = False

    def epochs(self, recipe: dict[str, Any]) -> int:
        return control_epochs(recipe)


@STAGE_KINDS.register("baseline")
class BaselineStage(_ControlKind):
    name = "baseline"
    final = "baseline.pt"


@dataclass(frozen=True)
class SelfTrainSettings:
    """``loss.selftrain`` (see :class:`SelfTrainStage`)."""

    confidence: float = 0.5
    labeller: str = BaselineStage.final


@STAGE_KINDS.register("selftrain")
class SelfTrainStage(_ControlKind):
    """LiDAR-only self-training (the control of the label-scarce regime): same epochs,
    initialisation and data order as ``baseline`` (stream 3), labels + pseudo-labels.

    ``loss.selftrain``: ``confidence`` (default 0.5, chosen on the validation streets),
    the pseudo-labels' minimum top probability; ``labeller`` (default ``baseline.pt``),
    the frozen LiDAR-only network in ``<out>`` (train ``baseline`` first)."""

    name = "selftrain"
    final = "selftrain.pt"

    def build(self, ctx: Context, num_classes: int) -> nn.Module:
        section = (ctx.recipe.get("loss") or {}).get("selftrain") or {}
        st = settings_from_dict(SelfTrainSettings, section, "loss.selftrain settings")
        student = StudentNet(student_cfg_of(ctx.recipe, num_classes))
        path = ctx.out / str(st.labeller)
        if not path.is_file():
            raise CheckpointError(f"selftrain needs the LiDAR-only labeller {path}: "
                                  "run --stage baseline first")  # fmt: skip
        labeller = on_sparse_backend(ctx, load_student(path).build().to(ctx.device))
        for p in labeller.parameters():
            p.requires_grad_(False)
        loss = self.loss(ctx, student, None)
        return SelfTrainStep(student, loss, labeller.eval(), float(st.confidence))


@STAGE_KINDS.register("joint")
class JointStage(_SavesStudentNet):
    """2DPASS-style joint training; writes the 3D branch as a student checkpoint.

    Same schedule (``student_epochs``), stream (3: the 3D branch starts from the baseline's
    initialisation, same data order) as the students. ``loss.joint``: :class:`JointWeights`.
    """

    name = "joint"
    epochs_key = "student_epochs"
    stream = 3
    final = "joint.pt"
    uses_temporal = True

    def build(self, ctx: Context, num_classes: int) -> nn.Module:
        w = dict((ctx.recipe.get("loss") or {}).get("joint") or {})
        net = fusion_network(ctx, num_classes, self.name)
        return JointStep(net, JointLoss(JointWeights.from_dict(w)))

    def network_config(self, step: nn.Module) -> StudentConfig:
        return step.fusion.config.student
