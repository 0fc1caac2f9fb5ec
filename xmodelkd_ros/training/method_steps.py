"""The optimised modules of the method's alternative stages: joint training and self-training.

* :class:`JointStep` - single-stage joint training in the manner of 2DPASS (Yan et al.,
  ECCV 2022): the fusion network (3D branch + image branch + fusion) trains on labels, and
  its 3D branch also learns the fused logits (KL, fused detached) on the points in the
  cameras' view. No frozen teacher: the 3D branch never has to follow a teacher that was
  trained to convergence on features it cannot compute, and with full labels the KL acts
  as a regulariser next to the labels rather than a competing target. At export only the
  3D branch is kept: it is a normal student.
* :class:`SelfTrainStep` - the LiDAR-only self-training control of the label-scarce
  regime: a frozen LiDAR-only network (the baseline) labels the points that have no
  label where it is confident, and the student trains on labels + pseudo-labels. Its gain
  over the baseline is what more (unlabeled) data gives without cameras.

Both are ``forward(batch, generator) -> (loss, logs)`` modules with a ``.net`` (the 3D
network that is evaluated and saved), like the steps of :mod:`~xmodelkd_ros.training.stages`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from xmodelkd_ros.nets.student import StudentNet, StudentOutput
from xmodelkd_ros.nets.teacher import FusionTeacher, PointPixelCorrespondence, TeacherOutput
from xmodelkd_ros.training.data.collate import Batch
from xmodelkd_ros.training.data.sample import IGNORE_INDEX
from xmodelkd_ros.training.losses import confidence_mask, kd_kl
from xmodelkd_ros.training.objectives import DistillLoss, Terms, fusion_loss, settings_from_dict


def batch_labels(batch: Batch) -> Tensor:
    """The batch's labels, or all-IGNORE for label-free batches."""
    if batch.labels is not None:
        return batch.labels
    n = batch.num_points
    return torch.full((n,), IGNORE_INDEX, dtype=torch.long, device=batch.uv.device)


@dataclass(frozen=True)
class JointWeights:
    """``loss.joint``: weights and masks of :class:`JointLoss` (a zero weight skips a term)."""

    #: CE + Lovász on the fused logits / on the 3D branch's logits.
    fused: float = 1.0
    branch_3d: float = 1.0
    lovasz: float = 1.0
    ce_balance: float = 0.0
    #: KL(fused || 3D) on the points in the cameras' view (fused logits detached).
    kd: float = 1.0
    kd_temperature: float = 1.0
    #: where the KL applies: "fov" | "fov_correct" (and fused right or point unlabeled)
    kd_mask: str = "fov"
    #: and only where the fused prediction's top probability reaches this (0 = off)
    kd_min_confidence: float = 0.0
    #: multi-view InfoNCE between 3D and 2D embeddings (0 = off)
    contrastive: float = 0.0
    temperature: float = 0.07
    max_points: int = 1024
    ignore_index: int = IGNORE_INDEX

    @classmethod
    def from_dict(cls, data: dict) -> JointWeights:
        w = settings_from_dict(cls, data, "loss.joint settings")
        if w.kd_mask not in ("fov", "fov_correct"):
            raise ValueError(f"unknown loss.joint.kd_mask {w.kd_mask!r} (fov | fov_correct)")
        return w


def kd_region(
    seen: Tensor, teacher_logits: Tensor, labels: Tensor, mask: str, min_confidence: float
) -> Tensor:
    """(P,) bool: where a teacher's soft targets are distilled. ``seen`` (the cameras'
    view), minus (``fov_correct``) labeled points the teacher gets wrong, minus points
    where its confidence is below ``min_confidence``."""
    region = seen & confidence_mask(teacher_logits, min_confidence)
    if mask == "fov_correct":
        right = (teacher_logits.argmax(1) == labels) | (labels == IGNORE_INDEX)
        region = region & right
    return region


def distill_terms(
    loss: DistillLoss,
    out: StudentOutput,
    batch: Batch,
    labels: Tensor,
    teacher: nn.Module | None,
    kd_mask: str = "fov",
    kd_min_confidence: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``loss`` of the student's output ``out`` on ``batch``: labels, and with a frozen
    fusion ``teacher`` its outputs on the same points, distilled where :func:`kd_region`
    allows (the KD terms' points) and, with ``kd_min_confidence``, the 3D branch's terms
    only where that branch is confident. One function for every step that distils, so
    the distilled student and the distilled LaserMix student distil alike."""
    if teacher is None:
        return loss(out, labels)
    with torch.no_grad():
        t_out = teacher(batch.inputs, batch.images, PointPixelCorrespondence.from_batch(batch))
    # fov_correct: distil only where the teacher is right (or the label is unknown):
    # elsewhere its soft targets would teach the student the teacher's own mistakes.
    mask = kd_region(t_out.seen, t_out.logits, labels, kd_mask, kd_min_confidence)
    all_mask = None
    if kd_min_confidence > 0:
        all_mask = confidence_mask(t_out.logits_3d, kd_min_confidence)
    return loss(out, labels, t_out, mask, all_mask)


class JointLoss(nn.Module):
    """Labels on both heads + fused->3D KL in the view (+ optional contrastive term)."""

    def __init__(self, weights: JointWeights | None = None) -> None:
        super().__init__()
        self.weights = weights or JointWeights()

    def forward(
        self,
        out: TeacherOutput,
        labels: Tensor,
        point_idx: Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        w = self.weights

        def fused_to_3d() -> tuple[Terms, dict[str, Tensor]]:
            region = kd_region(out.seen, out.logits, labels, w.kd_mask, w.kd_min_confidence)
            kd = kd_kl(out.logits_3d, out.logits, w.kd_temperature, region)
            return {"kd": (w.kd, kd)}, {"kd_share": region.float().mean().detach()}

        extra = fused_to_3d if w.kd else None
        return fusion_loss(out, labels, point_idx, w, generator, extra, tied=(out.logits_3d,))


class JointStep(nn.Module):
    """What the ``joint`` stage optimises; ``.net`` is the 3D branch (evaluated, exported)."""

    def __init__(self, fusion: FusionTeacher, loss: JointLoss) -> None:
        super().__init__()
        self.fusion, self.loss = fusion, loss

    @property
    def net(self) -> StudentNet:
        return self.fusion.branch_3d

    def forward(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict]:
        out = self.fusion(batch.inputs, batch.images, PointPixelCorrespondence.from_batch(batch))
        return self.loss(out, batch_labels(batch), batch.point_idx, generator)


def pseudo_labels(
    labels: Tensor, logits: Tensor, min_confidence: float, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """``labels`` with every unlabeled point the (frozen) network is confident about
    (top softmax probability >= ``min_confidence``) set to its prediction."""
    conf, pred = torch.softmax(logits.detach().float(), dim=1).max(1)
    take = (labels == ignore_index) & (conf >= min_confidence)
    return torch.where(take, pred, labels)


class SelfTrainStep(nn.Module):
    """What the ``selftrain`` stage optimises: the student on labels + pseudo-labels.

    The pseudo-labelling network is frozen and kept out of the module tree (not trained,
    not saved), like the teacher of ``distill``.
    """

    def __init__(
        self, net: StudentNet, loss: DistillLoss, labeller: StudentNet, min_confidence: float
    ) -> None:
        super().__init__()
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"loss.selftrain.confidence must be in [0, 1], got {min_confidence}")
        self.net, self.loss = net, loss
        self._labeller = (labeller,)
        self.min_confidence = float(min_confidence)

    def forward(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict]:
        i = batch.inputs
        labels = batch_labels(batch)
        with torch.no_grad():
            t = self._labeller[0](i.voxel_feats, i.point_feats, i.point2voxel, i.maps).logits
        targets = pseudo_labels(labels, t, self.min_confidence)
        out = self.net(i.voxel_feats, i.point_feats, i.point2voxel, i.maps)
        loss, logs = self.loss(out, targets)
        new = (targets != labels).float().mean().detach()
        return loss, {**logs, "pseudo_share": new}
