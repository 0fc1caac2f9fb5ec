"""The LiDAR-only semi-supervised control in the manner of LaserMix (Kong et al., CVPR 2023).

Why it exists: the cameras' gain is only the distilled student's lead over the strongest
LiDAR-only use of the same unlabeled scans. Self-training (pseudo-labels of a frozen
baseline) is a weak such control; LaserMix gains several mIoU by itself at 10 % labels
on SemanticKITTI. Its idea: in a driving scene what a laser sees depends mostly on its
inclination (road low, cars and sidewalk in between, buildings and trees high), so a
scan cut into bands of inclination and mixed band by band with another scan is still a
plausible scene, and a network should predict the same for a point whatever scan its
neighbouring bands came from.

What :class:`LaserMixStep` does per batch (written here from the paper's description):

* the student trains on the batch's labels like the baseline (CE + Lovász);
* a mean teacher (an exponential moving average of the student's weights, updated before
  every step: :func:`ema_update`) predicts every point of the original scans; its
  predictions with top probability >= ``confidence`` become the targets of the points
  without labels;
* the scans are paired (labeled scans with unlabeled ones where the batch has both:
  :func:`pair_scans`), the inclination range of each pair is cut into ``n`` equal bands
  (``n`` drawn per step from ``areas``) and two mixed scans are made, one with the first
  scan's even bands and the second's odd bands, one with the rest (:func:`laser_mix`);
  every mixed point keeps its coordinates and its target (label or teacher prediction),
  and the student trains on the mixed scans against those targets (weight ``mix``);
* a consistency term pulls the student's class probabilities towards the mean teacher's
  on the points without labels (squared error, weight ``consistency``).

The saved and evaluated network is the student (``.net``), like every other control.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmodelkd_ros.nets.inputs import build_inputs
from xmodelkd_ros.nets.student import StudentNet
from xmodelkd_ros.sparse import VoxelGridSpec
from xmodelkd_ros.training.data.collate import Batch
from xmodelkd_ros.training.data.sample import IGNORE_INDEX
from xmodelkd_ros.training.method_steps import batch_labels, distill_terms
from xmodelkd_ros.training.objectives import DistillLoss


@dataclass(frozen=True)
class LaserMixWeights:
    """``loss.lasermix``: see the module docstring."""

    mix: float = 1.0
    consistency: float = 1.0
    confidence: float = 0.9
    ema_decay: float = 0.99
    areas: tuple[int, ...] = field(default=(3, 4, 5, 6))


def inclination(xyz: Tensor) -> Tensor:
    """(N,) angle of each point above the sensor's horizontal plane (radians)."""
    return torch.atan2(xyz[:, 2], torch.hypot(xyz[:, 0], xyz[:, 1]))


def inclination_areas(incl: Tensor, num_areas: int, lo: float, hi: float) -> Tensor:
    """(N,) band index 0..num_areas-1 of each inclination: ``[lo, hi]`` in equal bands."""
    span = max(hi - lo, 1e-9)
    return ((incl - lo) / span * num_areas).floor().clamp(0, num_areas - 1).long()


def laser_mix(xyz_a: Tensor, xyz_b: Tensor, num_areas: int) -> tuple[Tensor, Tensor]:
    """The two mixed scans of scans ``a`` and ``b``, as rows of ``cat([a, b])``.

    The inclination range of both scans together is cut into ``num_areas`` equal bands;
    the first mixed scan holds ``a``'s points in even bands and ``b``'s in odd bands, the
    second the rest. Each point of ``a`` and ``b`` lands in exactly one of them.
    """
    incl = inclination(torch.cat([xyz_a[:, :3], xyz_b[:, :3]]))
    rows = torch.arange(incl.shape[0], device=incl.device)
    if incl.numel() == 0:
        return rows, rows
    area = inclination_areas(incl, num_areas, float(incl.min()), float(incl.max()))
    from_a = rows < xyz_a.shape[0]
    first = from_a == (area % 2 == 0)
    return rows[first], rows[~first]


def pair_scans(labeled: list[bool]) -> list[tuple[int, int]]:
    """Pairs of a batch's scans to mix: labeled scans first, each paired with the scan half
    a batch later, so a batch of k labeled and k unlabeled scans pairs each labeled scan
    with an unlabeled one. An odd batch leaves one scan unpaired."""
    order = sorted(range(len(labeled)), key=lambda s: not labeled[s])
    half = len(order) // 2
    return [(order[j], order[j + half]) for j in range(half)]


def mix_batch(
    point_feats: Tensor, point_batch: Tensor, targets: Tensor,
    pairs: list[tuple[int, int]], num_areas: int,
) -> tuple[list[Tensor], Tensor, Tensor]:  # fmt: skip
    """The mixed scans of ``pairs`` (two per pair): their points (rows of ``point_feats``,
    unchanged), the targets of those points and their rows in ``point_feats``."""
    scans, sources = [], []
    for a, b in pairs:
        rows_a = (point_batch == a).nonzero().squeeze(1)
        rows_b = (point_batch == b).nonzero().squeeze(1)
        rows = torch.cat([rows_a, rows_b])
        for mixed in laser_mix(point_feats[rows_a], point_feats[rows_b], num_areas):
            sources.append(rows[mixed])
            scans.append(point_feats[rows[mixed]])
    src = torch.cat(sources) if sources else point_batch.new_zeros(0)
    return scans, targets[src], src


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * net`` for every parameter; buffers (BatchNorm
    statistics) are copied from ``net``."""
    params = dict(net.named_parameters())
    for name, p in ema.named_parameters():
        p.mul_(decay).add_(params[name].detach(), alpha=1.0 - decay)
    buffers = dict(net.named_buffers())
    for name, b in ema.named_buffers():
        b.copy_(buffers[name])


class LaserMixStep(nn.Module):
    """What the ``lasermix`` stage optimises; ``.net`` is the student, ``.ema`` its mean
    teacher (in the state_dict, so ``--resume`` continues it; never trained by gradient).

    With a frozen fusion ``teacher`` (``distill`` with ``loss.distill_lasermix``) the
    student's loss on the original scans is the distillation loss
    (:func:`~xmodelkd_ros.training.method_steps.distill_terms`, ``kd_mask`` /
    ``kd_min_confidence`` as ``loss.*``); the mixed scans and the consistency term are
    the same as without. The teacher is kept out of the module tree, as in the distill
    step: nothing of it is trained or saved."""

    def __init__(
        self,
        net: StudentNet,
        loss: DistillLoss,
        weights: LaserMixWeights,
        grid: VoxelGridSpec,
        teacher: nn.Module | None = None,
        kd_mask: str = "fov",
        kd_min_confidence: float = 0.0,
    ) -> None:
        super().__init__()
        self.net, self.loss, self.weights, self.grid = net, loss, weights, grid
        self._teacher = (teacher,) if teacher is not None else ()
        self.kd_mask, self.kd_min_confidence = kd_mask, float(kd_min_confidence)
        self.ema = copy.deepcopy(net)
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.ema.eval()

    def train(self, mode: bool = True) -> LaserMixStep:
        super().train(mode)
        self.ema.eval()  # the teacher predicts with its running statistics
        return self

    def forward(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict]:
        w, i = self.weights, batch.inputs
        if self.training:
            ema_update(self.ema, self.net, w.ema_decay)
        labels = batch_labels(batch)
        out = self.net(i.voxel_feats, i.point_feats, i.point2voxel, i.maps)
        teacher = self._teacher[0] if self._teacher else None
        loss, logs = distill_terms(self.loss, out, batch, labels, teacher, self.kd_mask,
                                   self.kd_min_confidence)  # fmt: skip
        with torch.no_grad():
            t_logits = self.ema(i.voxel_feats, i.point_feats, i.point2voxel, i.maps).logits
            conf, pred = torch.softmax(t_logits.float(), 1).max(1)
        unlabeled = labels == IGNORE_INDEX
        targets = torch.where(unlabeled & (conf >= w.confidence), pred, labels)
        logs = {**logs, "pseudo_share": (targets != labels).float().mean().detach()}
        if w.mix and len(batch.names) >= 2:
            mix_loss = self._mix_loss(batch, labels, targets, generator)
            loss = loss + w.mix * mix_loss
            logs["mix"] = mix_loss.detach()
        if w.consistency and bool(unlabeled.any()):
            p_student = torch.softmax(out.logits[unlabeled], 1)
            cons = F.mse_loss(p_student, torch.softmax(t_logits[unlabeled], 1))
            loss = loss + w.consistency * cons
            logs["consistency"] = cons.detach()
        logs["total"] = loss.detach()
        return loss, logs

    def _mix_loss(
        self, batch: Batch, labels: Tensor, targets: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        """The student's loss on the batch's mixed scans against the carried targets."""
        i, w = batch.inputs, self.weights
        labeled = [bool((labels[i.point_batch == s] != IGNORE_INDEX).any())
                   for s in range(len(batch.names))]  # fmt: skip
        pick = int(torch.randint(len(w.areas), (1,), generator=generator))
        scans, mix_targets, _ = mix_batch(
            i.point_feats.cpu(), i.point_batch.cpu(), targets.cpu(), pair_scans(labeled),
            int(w.areas[pick]),
        )
        cfg = self.net.config
        mixed = build_inputs(scans, self.grid, cfg.num_levels, cfg.in_channels)
        mixed = mixed.to(i.point_feats.device)
        keep = torch.cat(mixed.valid) if mixed.valid else torch.zeros(0, dtype=torch.bool)
        mix_targets = mix_targets[keep.cpu()].to(targets.device)
        out = self.net(mixed.voxel_feats, mixed.point_feats, mixed.point2voxel, mixed.maps)
        mix_loss, _ = self.loss(out, mix_targets)
        return mix_loss
