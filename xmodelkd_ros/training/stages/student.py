"""The student family: LiDAR-only networks, the deployed kind.

* ``distill``  - the student from labels and the frozen fusion teacher (KL on softened
  logits + feature alignment on the points the cameras see).
* ``baseline`` - the same student from labels only, as many epochs as stand behind the
  distilled student's weights (:func:`control_epochs`).
* ``selftrain`` - the LiDAR-only self-training control: the student on labels + the
  confident pseudo-labels of a frozen LiDAR-only network (``baseline.pt``), the
  baseline's epochs.
* ``lasermix`` - the LiDAR-only semi-supervised control in the manner of LaserMix: scans
  mixed by bands of laser inclination, targets from a mean teacher
  (:mod:`~xmodelkd_ros.training.lasermix`), the baseline's epochs.

They share one initialisation and data order (stream 3), so distilled and controls are
paired: the gain between them is the teacher's, not a draw of the seed.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from xmodelkd_ros.nets.checkpoint import CheckpointError, load_student
from xmodelkd_ros.nets.student import StudentConfig, StudentNet
from xmodelkd_ros.nets.teacher import FusionTeacher
from xmodelkd_ros.training.context import Context, grid_of
from xmodelkd_ros.training.data.collate import Batch
from xmodelkd_ros.training.data.sample import IGNORE_INDEX
from xmodelkd_ros.training.lasermix import LaserMixStep, LaserMixWeights
from xmodelkd_ros.training.method_steps import SelfTrainStep, batch_labels, distill_terms
from xmodelkd_ros.training.objectives import DistillLoss, DistillWeights
from xmodelkd_ros.training.recipe_types import Recipe
from xmodelkd_ros.training.stages.base import SavesStudentNet, on_sparse_backend, student_cfg_of
from xmodelkd_ros.training.stages.fusion import TeacherStage, load_teacher


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
        i = batch.inputs
        out = self.net(i.voxel_feats, i.point_feats, i.point2voxel, i.maps)
        teacher = self._teacher[0] if self._teacher else None
        return distill_terms(self.loss, out, batch, batch_labels(batch), teacher,
                             self.kd_mask, self.kd_min_confidence)  # fmt: skip


def lineage_epochs(recipe: Recipe) -> int:
    """Epochs of training behind the distilled student's weights.

    A student initialised from the teacher's 3D branch (``model.student_init: teacher3d``)
    carries the teacher's epochs (and the contrastive pretraining's, which the teacher
    starts from) plus its own; one trained from scratch only its own.
    """
    s = recipe.schedule
    n = s.student_epochs
    if recipe.model.student_init == "teacher3d":
        n += s.teacher_epochs + s.pretrain_epochs
    return n


def control_epochs(recipe: Recipe) -> int:
    """Epochs of the LiDAR-only controls (``baseline``, ``selftrain``).

    ``schedule.control_epochs``: ``lineage`` (the recipes' default) gives them as many
    epochs as stand behind the distilled student's weights (:func:`lineage_epochs`), so a
    gain measured against them is not a gain of training length (docs/results.md: with
    full labels a 40-epoch baseline erased the +3.8 measured against a 24-epoch one);
    ``student`` the student stage's own ``student_epochs`` (the first protocol, kept to
    reproduce its numbers); or a positive integer (checked when the recipe loads).
    """
    value = recipe.schedule.control_epochs
    if value == "lineage":
        return lineage_epochs(recipe)
    if value == "student":
        return recipe.schedule.student_epochs
    return int(value)


def recipe_epochs(recipe: Recipe) -> dict[str, int]:
    """The epochs a run's reports state: teacher, distilled (its own stage), distilled
    lineage (behind its weights) and the LiDAR-only controls."""
    return {
        "teacher": recipe.schedule.teacher_epochs,
        "distilled": recipe.schedule.student_epochs,
        "distilled_lineage": lineage_epochs(recipe),
        "controls": control_epochs(recipe),
    }


class StudentKind(SavesStudentNet):
    """A :class:`StudentStep` on the ``student_epochs`` schedule, stream 3."""

    epochs_key = "student_epochs"
    stream = 3

    def teacher(self, ctx: Context, student: StudentNet) -> FusionTeacher | None:
        """The frozen teacher whose outputs the loss distils (None: labels only)."""
        return None

    def loss(self, ctx: Context, student: StudentNet, teacher: FusionTeacher | None) -> DistillLoss:
        weights = dataclasses.asdict(ctx.recipe.loss.distill)
        weights["ignore_index"] = IGNORE_INDEX
        if teacher is None:
            d_t = student.config.feature_dim
            for k in ("kd", "feat", "kd_all", "feat_all"):
                weights[k] = 0.0
        else:
            d_t = teacher.feature_dim
        return DistillLoss(student.config.feature_dim, d_t, d_t, DistillWeights.from_dict(weights))

    def build(self, ctx: Context, num_classes: int) -> nn.Module:
        student = StudentNet(student_cfg_of(ctx.recipe.model, num_classes))
        teacher = self.teacher(ctx, student)
        return self.step(ctx, student, self.loss(ctx, student, teacher), teacher)

    def step(
        self, ctx: Context, student: StudentNet, loss: DistillLoss, teacher: FusionTeacher | None
    ) -> nn.Module:
        """What the stage optimises around ``student``, ``loss`` and ``teacher``."""
        lw = ctx.recipe.loss
        return StudentStep(student, loss, teacher, lw.kd_mask, lw.kd_min_confidence)

    def network_config(self, step: nn.Module) -> StudentConfig:
        return step.net.config


class DistillStage(StudentKind):
    """The distilled student. With ``loss.distill_lasermix`` it also trains the LaserMix
    way (the ``lasermix`` control's mixed scans, mean teacher and consistency, with
    ``loss.lasermix``'s settings) while it distils: then its lead over the ``lasermix``
    control is what the cameras add to the strongest LiDAR-only use of the same unlabeled
    scans, not the mixing that one arm has and the other lacks."""

    name = "distill"
    final = "student.pt"

    def step(
        self, ctx: Context, student: StudentNet, loss: DistillLoss, teacher: FusionTeacher | None
    ) -> nn.Module:
        if ctx.recipe.loss.distill_lasermix:
            return lasermix_step(ctx, student, loss, teacher)
        return super().step(ctx, student, loss, teacher)

    def teacher(self, ctx: Context, student: StudentNet) -> FusionTeacher | None:
        teacher = load_teacher(ctx.out / TeacherStage.final).to(ctx.device).eval()
        on_sparse_backend(ctx, teacher)
        for p in teacher.parameters():
            p.requires_grad_(False)
        if ctx.recipe.model.student_init == "teacher3d":
            # The teacher's 3D branch has the student's architecture and was trained with
            # the image branch and the 2D-3D contrastive term: start the student there.
            student.load_state_dict(teacher.branch_3d.state_dict())
            ctx.log("distill: student initialised from the teacher's 3D branch")
        return teacher


class ControlKind(StudentKind):
    """A LiDAR-only control: trained as long as :func:`control_epochs` says."""

    uses_images = False

    def epochs(self, recipe: Recipe) -> int:
        return control_epochs(recipe)


class BaselineStage(ControlKind):
    name = "baseline"
    final = "baseline.pt"


class SelfTrainStage(ControlKind):
    """LiDAR-only self-training (the control of the label-scarce regime): same epochs,
    initialisation and data order as ``baseline`` (stream 3), labels + pseudo-labels.

    ``loss.selftrain``: ``confidence`` (default 0.5, chosen on the validation streets),
    the pseudo-labels' minimum top probability; ``labeller`` (default ``baseline.pt``),
    the frozen LiDAR-only network in ``<out>`` (train ``baseline`` first)."""

    name = "selftrain"
    final = "selftrain.pt"

    def build(self, ctx: Context, num_classes: int) -> nn.Module:
        st = ctx.recipe.loss.selftrain
        student = StudentNet(student_cfg_of(ctx.recipe.model, num_classes))
        path = ctx.out / st.labeller
        if not path.is_file():
            raise CheckpointError(f"selftrain needs the LiDAR-only labeller {path}: "
                                  "run --stage baseline first")  # fmt: skip
        labeller = on_sparse_backend(ctx, load_student(path).build().to(ctx.device))
        for p in labeller.parameters():
            p.requires_grad_(False)
        loss = self.loss(ctx, student, None)
        return SelfTrainStep(student, loss, labeller.eval(), st.confidence)


class LaserMixStage(ControlKind):
    """The LiDAR-only LaserMix control: same epochs, initialisation and data order as
    ``baseline`` (stream 3); labels, inclination-mixed scans and a mean teacher's targets
    (``loss.lasermix``, :class:`~xmodelkd_ros.training.lasermix.LaserMixWeights`). Needs
    no other stage's output."""

    name = "lasermix"
    final = "lasermix.pt"

    def step(
        self, ctx: Context, student: StudentNet, loss: DistillLoss, teacher: FusionTeacher | None
    ) -> nn.Module:
        return lasermix_step(ctx, student, loss, teacher)


def lasermix_step(
    ctx: Context, student: StudentNet, loss: DistillLoss, teacher: FusionTeacher | None
) -> LaserMixStep:
    """A :class:`LaserMixStep` with ``loss.lasermix``'s settings: the ``lasermix``
    control's (no teacher) and, with ``loss.distill_lasermix``, the distilled student's."""
    w = dataclasses.asdict(ctx.recipe.loss.lasermix)
    weights = LaserMixWeights(**{**w, "areas": tuple(int(a) for a in w["areas"])})
    lw = ctx.recipe.loss
    return LaserMixStep(student, loss, weights, grid_of(ctx.recipe.model), teacher,
                        lw.kd_mask, lw.kd_min_confidence)  # fmt: skip
