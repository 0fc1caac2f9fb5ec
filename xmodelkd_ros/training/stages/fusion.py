"""The fusion family: stages that train the camera+LiDAR network.

* ``pretrain`` - label-free 2D-3D contrastive alignment of the fusion teacher.
* ``teacher``  - the fusion teacher on labels (+ the contrastive term), starting from
  ``pretrain`` when it ran.
* ``joint``    - 2DPASS-style single-stage training: the fusion network and its 3D branch
  trained together (KL fused -> 3D in the cameras' view); the 3D branch is the student.

All three build the same network (:func:`fusion_network`, with ``model.image_weights``)
and read their loss weights from their own ``loss.<stage>`` section.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from xmodelkd_ros.nets.checkpoint import CheckpointError, atomic_torch_save, read_torch_file
from xmodelkd_ros.nets.student import StudentConfig
from xmodelkd_ros.nets.teacher import FusionTeacher, PointPixelCorrespondence, TeacherConfig
from xmodelkd_ros.training.context import Context
from xmodelkd_ros.training.data.collate import Batch
from xmodelkd_ros.training.data.sample import IGNORE_INDEX
from xmodelkd_ros.training.method_steps import JointLoss, JointStep, JointWeights, batch_labels
from xmodelkd_ros.training.objectives import TeacherLoss, TeacherWeights
from xmodelkd_ros.training.stages.base import SavesStudentNet, StageKind, teacher_cfg_of

TEACHER_FORMAT = "xmodelkd_ros.teacher/1"


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


class TeacherStep(nn.Module):
    """What ``pretrain`` / ``teacher`` optimise: ``forward(batch) -> (loss, logs)``."""

    def __init__(self, net: FusionTeacher, loss: TeacherLoss) -> None:
        super().__init__()
        self.net, self.loss = net, loss

    def forward(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict]:
        out = self.net(batch.inputs, batch.images, PointPixelCorrespondence.from_batch(batch))
        return self.loss(out, batch_labels(batch), batch.point_idx, generator)


def fusion_network(ctx: Context, num_classes: int, stage: str) -> FusionTeacher:
    """A fresh fusion network of the recipe (with ``model.image_weights`` when set)."""
    model = FusionTeacher(teacher_cfg_of(ctx.recipe.model, num_classes))
    if ctx.recipe.model.image_weights:
        report = model.load_image_weights(ctx.recipe.model.image_weights)
        ctx.log(f"{stage}: image weights {report}")
    return model


class FusionKind(StageKind):
    """``pretrain`` / ``teacher``: a :class:`TeacherStep`, saved as a teacher checkpoint."""

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


class PretrainStage(FusionKind):
    name = "pretrain"
    split = "pretrain"
    epochs_key = "pretrain_epochs"
    stream = 1
    final = "pretrain.pt"
    evaluates = False
    uses_temporal = True

    def loss_weights(self, ctx: Context) -> TeacherWeights:
        p = ctx.recipe.loss.pretrain
        return TeacherWeights(
            fused=0.0,
            branch_3d=0.0,
            contrastive=p.contrastive,
            temperature=p.temperature,
            max_points=p.max_points,
            ignore_index=IGNORE_INDEX,
        )


class TeacherStage(FusionKind):
    name = "teacher"
    epochs_key = "teacher_epochs"
    stream = 2
    final = "teacher.pt"
    uses_temporal = True

    def network(self, ctx: Context, num_classes: int) -> FusionTeacher:
        pretrained = ctx.out / PretrainStage.final
        if not pretrained.is_file():
            return super().network(ctx, num_classes)
        model = FusionTeacher(teacher_cfg_of(ctx.recipe.model, num_classes))
        model.load_state_dict(load_teacher(pretrained).state_dict())
        ctx.log("teacher: starting from the contrastive pretraining (pretrain.pt)")
        return model

    def loss_weights(self, ctx: Context) -> TeacherWeights:
        w = dataclasses.asdict(ctx.recipe.loss.teacher)
        return TeacherWeights(**{**w, "ignore_index": IGNORE_INDEX})


class JointStage(SavesStudentNet):
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
        w = dataclasses.asdict(ctx.recipe.loss.joint)
        net = fusion_network(ctx, num_classes, self.name)
        return JointStep(net, JointLoss(JointWeights.from_dict(w)))

    def network_config(self, step: nn.Module) -> StudentConfig:
        return step.fusion.config.student
