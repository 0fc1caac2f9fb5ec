"""What every stage kind shares: the :class:`StageKind` spec, its registry, and the
helpers both families use (the recipe's network configs, the sparse backend switch,
the student checkpoint writer).

A stage kind says what the generic :class:`~xmodelkd_ros.training.trainer.Trainer` cannot
know: which data split it trains on, how many epochs, its RNG stream, how to build its
network and its loss, and how to save the result. The trainer never compares ``kind``
strings; a new stage is one class in its family's module, registered in ``__init__``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from xmodelkd_ros.nets.checkpoint import StudentCheckpoint, save_student
from xmodelkd_ros.nets.image_encoder import ImageEncoderConfig
from xmodelkd_ros.nets.student import StudentConfig, StudentNet, student_config
from xmodelkd_ros.nets.teacher import TeacherConfig
from xmodelkd_ros.registry import Registry
from xmodelkd_ros.training.context import Context, grid_of
from xmodelkd_ros.training.recipe_types import ModelSection, Recipe, set_keys

#: RNG stream of evaluation's (augmentation-free) sample preparation.
EVAL_STREAM = 9


def student_cfg_of(model: ModelSection, num_classes: int) -> StudentConfig:
    """The student / 3D branch of the recipe: its preset with ``model.student``'s keys."""
    return student_config(model.preset, num_classes=num_classes, **set_keys(model.student))


def teacher_cfg_of(model: ModelSection, num_classes: int) -> TeacherConfig:
    """The fusion network of the recipe (its 3D branch is :func:`student_cfg_of`)."""
    image = {k: tuple(v) if isinstance(v, list) else v for k, v in set_keys(model.image).items()}
    return TeacherConfig(
        student=student_cfg_of(model, num_classes),
        image=ImageEncoderConfig(**image),
        contrast_dim=model.contrast_dim,
    )


def on_sparse_backend(ctx: Context, module: nn.Module) -> nn.Module:
    """``optim.sparse_impl: spconv`` runs ``module``'s sparse convs on spconv (same
    parameters); ``pairs`` / ``gather`` are the process-wide default set by the CLI."""
    if ctx.recipe.optim.sparse_impl == "spconv":
        from xmodelkd_ros.sparse.spconv_train import convert_to_spconv

        convert_to_spconv(module)
    return module


def cpu_state(net: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


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

    def epochs(self, recipe: Recipe) -> int:
        """How many epochs the stage trains (``schedule.<epochs_key>`` unless overridden)."""
        return int(getattr(recipe.schedule, self.epochs_key))

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


#: Every stage kind by name, in the order the CLI documents them (see ``__init__``).
STAGE_KINDS: Registry[type[StageKind]] = Registry("stage")


def save_student_net(
    ctx: Context, net: StudentNet, path: Path, class_names: list[str], provenance: dict[str, Any]
) -> None:
    grid = grid_of(ctx.recipe.model)
    save_student(StudentCheckpoint(net.config, grid, cpu_state(net), class_names, provenance), path)


class SavesStudentNet(StageKind):
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
