"""The stages' objectives: weighted sums of the terms in :mod:`~xmodelkd_ros.training.losses`.

Why a module of their own: the terms are functions of tensors, tested against
independent computations; an objective is a recipe section (``loss.distill``,
``loss.teacher``) turned into weights, a schedule of them over the stage
(:func:`teacher_decay_factor`) and per-term values for logging. ``DistillLoss`` is the
student's (labels + the teacher's soft targets and features; ``teacher=None`` gives the
labels-only baseline on the same code path); ``TeacherLoss`` the fusion teacher's. Its
terms come from :func:`fusion_loss`, which joint training's objective
(:mod:`~xmodelkd_ros.training.method_steps`) calls too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn

from xmodelkd_ros.training.data.sample import IGNORE_INDEX
from xmodelkd_ros.training.losses import (
    FeatureProjector,
    balanced_cross_entropy,
    class_balance_weights,
    feature_distill,
    kd_kl,
    lovasz_softmax,
    multiview_infonce,
    multiview_share,
    segmentation_loss,
    weighted_sum,
    zero_loss,
)
from xmodelkd_ros.training.recipe import RecipeError


class _StudentLike(Protocol):
    logits: Tensor
    features: Tensor


_Settings = TypeVar("_Settings")


def settings_from_dict(cls: type[_Settings], data: Mapping[str, Any], what: str) -> _Settings:
    """A loss-settings dataclass from its recipe section, strictly: a misspelled key is an
    error naming it (``unknown <what>: [...]``), never a silently ignored setting; a
    :class:`RecipeError`, since the recipe is where the key was misspelled."""
    unknown = sorted(set(data) - set(cls.__dataclass_fields__))  # type: ignore[attr-defined]
    if unknown:
        raise RecipeError(f"unknown {what}: {unknown}")
    return cls(**data)


class _TeacherLike(Protocol):
    logits: Tensor
    features: Tensor
    logits_3d: Tensor
    features_3d: Tensor


@dataclass(frozen=True)
class DistillWeights:
    """Weights and settings of :class:`DistillLoss` (a zero weight skips the term)."""

    ce: float = 1.0
    lovasz: float = 1.0
    #: KL to the fused teacher logits on points in some camera's field of view.
    kd: float = 1.0
    kd_temperature: float = 2.0
    #: Feature alignment to the fused teacher features in the field of view.
    feat: float = 1.0
    feat_kind: str = "cosine"
    #: Optional: KL and feature alignment to the teacher's 3D-only branch on all points.
    kd_all: float = 0.0
    feat_all: float = 0.0
    #: Class balance of the CE term (see :func:`balanced_cross_entropy`; 0 = plain mean).
    ce_balance: float = 0.0
    #: Class-balanced KD: weight each point's KL by ``n_c^-kd_balance``, ``n_c`` the
    #: number of points of its class (the label; the teacher's prediction where
    #: unlabeled) in the KD region of the batch, normalised to mean 1 (0 = plain mean).
    kd_balance: float = 0.0
    #: How the teacher terms' weights (kd, feat, kd_all, feat_all) change over the stage:
    #: ``none`` (constant), ``linear`` or ``cosine`` (from their full value at the first
    #: step to 0 at the last; :func:`teacher_decay_factor`).
    teacher_decay: str = "none"
    #: Label of unlabeled points (the data pipeline's IGNORE_INDEX).
    ignore_index: int = IGNORE_INDEX

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> DistillWeights:
        return settings_from_dict(cls, data, "distillation weights")


TEACHER_DECAYS = ("none", "linear", "cosine")


def teacher_decay_factor(kind: str, progress: float) -> float:
    """The teacher terms' weight factor at ``progress`` (0 = first step, 1 = end) of a stage.

    Why decay: with full labels the distilled student stops gaining where the baseline
    still does (docs/results.md: +0.2 from 128 to 160 epochs against the baseline's
    +1.9): late in training the teacher's soft targets, its mistakes included, compete
    with the labels. Decaying them keeps what they teach early (the student's start) and
    leaves the last epochs to the labels. Measured there (``linear``, 160 epochs, 5 seeds):
    no gain shown on new test streets, so the recipes keep ``none``. ``none`` -> 1;
    ``linear`` -> ``1 - p``; ``cosine`` -> ``(1 + cos(pi p)) / 2`` (the shape of the
    learning-rate schedule).
    """
    if kind not in TEACHER_DECAYS:
        raise ValueError(f"unknown teacher_decay {kind!r} ({' | '.join(TEACHER_DECAYS)})")
    p = min(max(float(progress), 0.0), 1.0)
    if kind == "linear":
        return 1.0 - p
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    return 1.0


class DistillLoss(nn.Module):
    """Student objective: labels (CE + Lovász) + teacher (KD-KL and feature alignment).

    Holds the feature projection heads, so its parameters go into the student's optimizer.
    ``teacher=None`` gives the labels-only baseline with the same code path.
    """

    def __init__(
        self,
        d_student: int,
        d_teacher: int,
        d_teacher_3d: int | None = None,
        weights: DistillWeights | None = None,
    ):
        super().__init__()
        self.weights = w = weights or DistillWeights()
        if w.feat_kind not in ("cosine", "l2"):
            raise ValueError(f"feat_kind must be 'cosine' or 'l2', got {w.feat_kind!r}")
        teacher_decay_factor(w.teacher_decay, 0.0)  # an unknown schedule fails here, early
        #: Factor on the teacher terms' weights; :meth:`set_progress` moves it.
        self.teacher_scale = 1.0
        self.head = FeatureProjector(d_student, d_teacher)
        # Only built when used: a parameter without gradient trips DDP and clutters checkpoints.
        self.head_3d = (
            FeatureProjector(d_student, d_teacher_3d or d_teacher) if w.feat_all else None
        )

    def set_progress(self, progress: float) -> None:
        """Where the stage is (0 = first step, 1 = end): sets :attr:`teacher_scale` from
        ``weights.teacher_decay``. The trainer calls it before every step (a hook), from
        the global step, so a resumed run continues the same schedule."""
        self.teacher_scale = teacher_decay_factor(self.weights.teacher_decay, progress)

    def forward(
        self,
        student: _StudentLike,
        labels: Tensor,
        teacher: _TeacherLike | None = None,
        fov_mask: Tensor | None = None,
        all_mask: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and detached components (``ce``, ``lovasz``, ``kd``, ``feat``, ...).

        ``labels`` (P,) per point (``weights.ignore_index`` = unlabeled); ``fov_mask`` (P,)
        marks the points seen by at least one camera (None: all points); ``all_mask`` (P,)
        the points of the ``kd_all`` / ``feat_all`` terms (None: all points). Teacher
        outputs are treated as constants.
        """
        w = self.weights
        logits, feats = student.logits, student.features
        t = self.teacher_scale
        terms: dict[str, tuple[float, Tensor]] = {}
        valid = labels != w.ignore_index
        if w.ce:
            ce = (
                balanced_cross_entropy(logits[valid], labels[valid], w.ce_balance)
                if bool(valid.any())
                else zero_loss(logits)
            )
            terms["ce"] = (w.ce, ce)
        if w.lovasz:
            probs = torch.softmax(logits, 1)
            terms["lovasz"] = (w.lovasz, lovasz_softmax(probs, labels, w.ignore_index))
        if teacher is not None:
            cw = cw_all = None
            if w.kd_balance and (w.kd or w.kd_all):
                cls = torch.where(valid, labels, teacher.logits.detach().argmax(1))
                n_cls = logits.shape[1]
                cw = class_balance_weights(cls, n_cls, w.kd_balance, fov_mask)
                cw_all = class_balance_weights(cls, n_cls, w.kd_balance, all_mask)
            if w.kd:
                kd = kd_kl(logits, teacher.logits, w.kd_temperature, fov_mask, cw)
                terms["kd"] = (w.kd * t, kd)
            if w.feat:
                feat = feature_distill(feats, teacher.features, self.head, fov_mask, w.feat_kind)
                terms["feat"] = (w.feat * t, feat)
            if w.kd_all:
                kd_all = kd_kl(logits, teacher.logits_3d, w.kd_temperature, all_mask, cw_all)
                terms["kd_all"] = (w.kd_all * t, kd_all)
            if w.feat_all and self.head_3d is not None:
                feat_all = feature_distill(
                    feats, teacher.features_3d, self.head_3d, all_mask, w.feat_kind
                )
                terms["feat_all"] = (w.feat_all * t, feat_all)
        total, log = weighted_sum(terms, zero_loss(logits))
        if teacher is not None and w.teacher_decay != "none":
            log["teacher_scale"] = torch.tensor(t, device=logits.device)
        log["total"] = total.detach()
        return total, log


@dataclass(frozen=True)
class TeacherWeights:
    """Weights of :class:`TeacherLoss` (a zero weight skips the term)."""

    #: CE + Lovász on the fused logits.
    fused: float = 1.0
    #: CE + Lovász on the 3D-only logits (keeps the 3D branch useful on its own, for
    #: points outside the cameras and for ``DistillWeights.kd_all``).
    branch_3d: float = 1.0
    lovasz: float = 1.0
    contrastive: float = 0.1
    temperature: float = 0.07
    max_points: int = 2048
    #: Class balance of both CE terms (see :func:`balanced_cross_entropy`; 0 = plain mean).
    ce_balance: float = 0.0
    #: Label of unlabeled points (the data pipeline's IGNORE_INDEX).
    ignore_index: int = IGNORE_INDEX


class _TeacherOutputLike(Protocol):
    logits: Tensor
    logits_3d: Tensor
    proj_3d: Tensor
    proj_2d: Tensor


class FusionTermWeights(Protocol):
    """The settings every fusion-network objective shares (:class:`TeacherWeights`, and
    ``JointWeights`` of :mod:`~xmodelkd_ros.training.method_steps`)."""

    fused: float
    branch_3d: float
    lovasz: float
    ce_balance: float
    contrastive: float
    temperature: float
    max_points: int
    ignore_index: int


#: name -> (weight, value) of an objective's terms, summed in this order
Terms = dict[str, tuple[float, Tensor]]


def fusion_loss(
    out: _TeacherOutputLike,
    labels: Tensor,
    point_idx: Tensor,
    w: FusionTermWeights,
    generator: torch.Generator | None = None,
    extra: Callable[[], tuple[Terms, dict[str, Tensor]]] | None = None,
    tied: Sequence[Tensor] = (),
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss and logs of a fusion network: segmentation on the fused and on the
    3D-only logits, then the ``extra`` terms (and their logs) of the caller, then the
    multi-view InfoNCE between 3D and 2D embeddings; a zero weight skips a term.

    One builder for the teacher's objective and joint training's, so the terms they share
    are one computation. ``extra`` is called between the two groups, so the terms are
    built and summed in that order. The sum starts from a zero tied to ``out.logits`` and
    to each of ``tied`` (:func:`zero_loss`: their gradients exist, zero, when no term
    uses them). ``point_idx`` (K,): the point of each correspondence (rows of
    ``out.proj_2d``).
    """
    terms: Terms = {}
    if w.fused:
        seg = segmentation_loss(out.logits, labels, w.ignore_index, w.lovasz, w.ce_balance)
        terms["seg_fused"] = (w.fused, seg)
    if w.branch_3d:
        seg = segmentation_loss(out.logits_3d, labels, w.ignore_index, w.lovasz, w.ce_balance)
        terms["seg_3d"] = (w.branch_3d, seg)
    logs: dict[str, Tensor] = {}
    if extra is not None:
        more, more_logs = extra()
        terms.update(more)
        logs.update(more_logs)
    if w.contrastive:
        nce = multiview_infonce(
            out.proj_3d, out.proj_2d, point_idx, w.temperature, w.max_points, generator
        )
        terms["contrastive"] = (w.contrastive, nce)
        logs["multiview_share"] = multiview_share(point_idx)  # logged, not optimised
    start = zero_loss(out.logits)
    for t in tied:
        start = start + zero_loss(t)
    total, log = weighted_sum(terms, start)
    return total, {**log, "total": total.detach(), **logs}


class TeacherLoss(nn.Module):
    """Fusion-teacher objective: segmentation on fused and 3D logits + multi-view InfoNCE."""

    def __init__(self, weights: TeacherWeights | None = None):
        super().__init__()
        self.weights = weights or TeacherWeights()

    def forward(
        self,
        out: _TeacherOutputLike,
        labels: Tensor,
        point_idx: Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``point_idx`` (K,): the point of each correspondence (rows of ``out.proj_2d``)."""
        return fusion_loss(out, labels, point_idx, self.weights, generator)
