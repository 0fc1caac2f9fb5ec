"""Losses of cross-modal distillation: segmentation, contrastive alignment, distillation.

Why each exists (docs/method.md):

* :func:`segmentation_loss` — labels: cross-entropy for per-point accuracy plus the
  Lovász-softmax surrogate of the Jaccard index, which optimises the metric we report
  (mIoU) directly and counters class imbalance (poles, bicycles) that CE alone neglects.
* :func:`multiview_infonce` — aligns the teacher's 3D and 2D features of the same point
  so the fusion encoder mixes features that live in one space; several camera views (or
  two augmentations of one image) of a point are all positives of each other.
* :func:`kd_kl` / :func:`feature_distill` — the student learns the teacher's softened
  class distribution and its feature geometry on the points the cameras see (where the
  teacher knows more than LiDAR alone), optionally on all points from the teacher's
  3D-only branch.
* the weighted sums the stages optimise (``DistillLoss``, ``TeacherLoss``) live in
  :mod:`xmodelkd_ros.training.objectives`: this module holds the terms.
* :func:`check_finite` — stop a step whose loss is NaN/inf before it corrupts the weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmodelkd_ros.training.data.sample import IGNORE_INDEX


class NonFiniteLossError(FloatingPointError):
    """A loss (or loss component) is NaN or infinite; the training step must not proceed."""


def check_finite(loss: Tensor, name: str = "loss") -> Tensor:
    """Return ``loss`` unchanged, or raise :class:`NonFiniteLossError` naming it.

    One optimizer step on a NaN gradient destroys every weight (and BatchNorm statistics),
    so the training loop checks before ``backward`` and skips / stops on the error.
    """
    if not bool(torch.isfinite(loss.detach()).all()):
        value = loss.detach().flatten()[:4].tolist()
        raise NonFiniteLossError(f"non-finite {name}: {value}")
    return loss


def _constant(t: Tensor) -> Tensor:
    """A detached target; a clone if it was made under ``torch.inference_mode`` (those may not
    be saved for backward), so the loop may run the teacher in either no-grad mode."""
    t = t.detach()
    return t.clone() if t.is_inference() else t


def zero_loss(ref: Tensor) -> Tensor:
    """A zero that still depends on ``ref`` so ``backward`` works and gives zero gradients."""
    return ref.sum() * 0.0


def weighted_sum(
    terms: Mapping[str, tuple[float, Tensor]], start: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """``start + weight * value`` summed over ``terms`` in order, and each term's detached
    value for the log: the common tail of every stage objective. ``start`` is a zero tied
    to the outputs (:func:`zero_loss`), so ``backward`` works when no term is active."""
    total = start
    for weight, value in terms.values():
        total = total + weight * value
    return total, {name: value.detach() for name, (_, value) in terms.items()}


# --------------------------------------------------------------------------- segmentation


def _lovasz_grad(fg_sorted: Tensor) -> Tensor:
    """Increments of the Jaccard loss along the errors sorted in decreasing order.

    With the points sorted by decreasing error and ``M_i`` the set of the first ``i``
    points treated as mispredicted, ``Δ(M_i) = 1 - |fg \\ M_i| / |fg ∪ M_i|``; the Lovász
    extension's gradient (Berman et al., CVPR 2018, eq. 8-9) is ``Δ(M_i) - Δ(M_{i-1})``.
    Rows are independent: ``fg_sorted`` (C, P) gives each class's increments in one pass.
    """
    gts = fg_sorted.sum(-1, keepdim=True)
    intersection = gts - fg_sorted.cumsum(-1)
    union = gts + (1.0 - fg_sorted).cumsum(-1)
    jaccard = 1.0 - intersection / union
    if jaccard.shape[-1] > 1:
        jaccard = torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], -1)
    return jaccard


def lovasz_softmax(probs: Tensor, labels: Tensor, ignore_index: int | None = None) -> Tensor:
    """Lovász-softmax loss: mean over the classes present in ``labels`` of the Lovász
    extension of the Jaccard loss applied to the errors ``|1[y = c] - p_c|``.

    ``probs`` (P, C) are softmax probabilities, ``labels`` (P,) class ids; points labelled
    ``ignore_index`` are left out. On hard (one-hot) predictions the value is exactly
    ``mean_c (1 - IoU_c)``; it is a convex, piecewise-linear surrogate in between. Returns a
    gradient-safe zero when no point is labelled.
    """
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"expected probs (P, C) and labels (P,), got {tuple(probs.shape)}, "
            f"{tuple(labels.shape)}"
        )
    if ignore_index is not None:
        keep = labels != ignore_index
        probs, labels = probs[keep], labels[keep]
    if labels.numel() == 0:
        return zero_loss(probs)
    # All classes present at once, (C', P): one sort and one gather instead of one per class,
    # and unbind instead of per-class indexing (each index's backward zero-fills a whole
    # (C', P) gradient). Same numbers bit for bit as a per-class loop (row-wise sort and
    # cumsum, one dot per class); ~15 % less time, most of what is left is the sort.
    classes = torch.unique(labels)
    fg = (labels[None, :] == classes[:, None]).to(probs.dtype)
    errors = (fg - probs[:, classes].t()).abs()
    errors_sorted, order = torch.sort(errors, dim=1, descending=True)
    grads = _lovasz_grad(fg.gather(1, order))
    pairs = zip(errors_sorted.unbind(0), grads.unbind(0), strict=True)
    losses = [torch.dot(e, g) for e, g in pairs]
    return torch.stack(losses).mean()


def balanced_cross_entropy(logits: Tensor, labels: Tensor, power: float = 0.0) -> Tensor:
    """Cross-entropy with each point weighted by ``n_c ** -power``, ``n_c`` the number of
    points of its class in this batch, the weights normalised to mean 1.

    Why: a LiDAR batch is mostly road, building and vegetation; with a plain mean the thin
    classes (pole, sign, person, fence) get almost no gradient in a short schedule and
    stay at 0 IoU (measured on the synthetic world: +13..17 mIoU for a labels-only student
    at ``power=1``). ``power=0`` is the plain mean; ``power=1`` gives every class present
    the same total weight. ``labels`` must hold valid classes only.
    """
    per_point = F.cross_entropy(logits, labels, reduction="none")
    if power == 0 or labels.numel() == 0:
        return per_point.mean()
    counts = torch.bincount(labels, minlength=logits.shape[1]).to(per_point.dtype)
    w = counts.clamp(min=1).pow(-power)[labels]
    return (per_point * w).sum() / w.sum()


def segmentation_loss(
    logits: Tensor,
    labels: Tensor,
    ignore_index: int = IGNORE_INDEX,
    lovasz_weight: float = 1.0,
    ce_balance: float = 0.0,
) -> Tensor:
    """Cross-entropy (class-balanced by ``ce_balance``, see :func:`balanced_cross_entropy`)
    + ``lovasz_weight`` x Lovász-softmax on per-point logits (P, C).

    CE alone favours frequent classes; the Lovász term optimises the IoU we report.
    All-ignored inputs give a gradient-safe zero instead of CE's NaN.
    """
    valid = labels != ignore_index
    if not bool(valid.any()):
        return zero_loss(logits)
    ce = balanced_cross_entropy(logits[valid], labels[valid], ce_balance)
    if lovasz_weight == 0:
        return ce
    lov = lovasz_softmax(torch.softmax(logits[valid], dim=1), labels[valid])
    return ce + lovasz_weight * lov


# --------------------------------------------------------------------------- contrastive


def multiview_infonce(
    feat_3d: Tensor,
    feat_2d: Tensor,
    point_idx: Tensor,
    temperature: float = 0.07,
    max_points: int | None = 2048,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Multi-positive InfoNCE between per-point 3D features and their 2D views.

    ``feat_3d`` (P, D) holds one feature per point; ``feat_2d`` (K, D) one feature per
    (point, view) correspondence, ``point_idx`` (K,) naming the point of each view. Only
    points with at least one view take part; at most ``max_points`` of them are sampled
    (uniformly, with ``generator``) to bound the (N x N) similarity matrix.

    The sampled 3D features and all of their 2D views form one set of L2-normalised
    embeddings, labelled by point. Every embedding is an anchor; its positives are all
    other embeddings of the same point (the point's 3D feature and each of its views), its
    negatives the embeddings of every other sampled point (supervised-contrastive form,
    Khosla et al. 2020)::

        L = mean_a  -1/|P(a)| sum_{p in P(a)} log( exp(s_ap / t) / sum_{k != a} exp(s_ak / t) )

    With one view per point this is the symmetric (3D->2D and 2D->3D) InfoNCE plus
    same-modality negatives. Returns a gradient-safe zero when no point has a view.
    """
    if feat_3d.ndim != 2 or feat_2d.ndim != 2 or feat_3d.shape[1] != feat_2d.shape[1]:
        raise ValueError(
            f"expected feat_3d (P, D) and feat_2d (K, D), got {tuple(feat_3d.shape)}, "
            f"{tuple(feat_2d.shape)}"
        )
    if point_idx.shape != feat_2d.shape[:1]:
        raise ValueError(f"point_idx must be (K,) = ({feat_2d.shape[0]},)")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if point_idx.numel() == 0:
        return zero_loss(feat_3d) + zero_loss(feat_2d)
    points = torch.unique(point_idx)
    if max_points is not None and points.numel() > max_points:
        perm = torch.randperm(points.numel(), generator=generator, device="cpu")
        points = points[perm[:max_points].to(points.device)].sort().values
    # Views of the sampled points, relabelled 0..n-1.
    pos = torch.searchsorted(points, point_idx).clamp(max=points.numel() - 1)
    view_sel = points[pos] == point_idx
    view_label = pos[view_sel]
    n = points.numel()
    z = torch.cat([feat_3d[points], feat_2d[view_sel]])
    z = F.normalize(z, dim=1)
    logits = z @ z.t() / temperature
    logits.fill_diagonal_(float("-inf"))  # k != a; the diagonal is never a positive
    log_norm = torch.logsumexp(logits, dim=1)
    # The positives are a few per row (1 + the point's other views): gathered as a pair
    # list instead of masking (N, N) log-probabilities, which took half of this loss's
    # time. Same numbers as the masked form for up to two positives per anchor (one or
    # two views); with more, the sum's order can differ in the last bit.
    anchor, positive = _positive_pairs(n, view_label)
    sums = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
    sums = sums.index_add(0, anchor, logits[anchor, positive] - log_norm[anchor])
    n_pos = torch.bincount(anchor, minlength=z.shape[0])
    per_anchor = -sums / n_pos.clamp(min=1)
    has_pos = n_pos > 0  # always true: every sampled point has its 3D feature and >= 1 view
    return per_anchor[has_pos].mean()


def _positive_pairs(n: int, view_label: Tensor) -> tuple[Tensor, Tensor]:
    """(anchor, positive) rows of the embeddings ``[3D of point 0..n-1, views...]`` that
    belong to the same point: point <-> each of its views, and view <-> view."""
    views = n + torch.arange(view_label.numel(), device=view_label.device)
    same = view_label[:, None] == view_label[None, :]
    same.fill_diagonal_(False)
    va, vp = same.nonzero(as_tuple=True)
    anchor = torch.cat([view_label, views, views[va]])
    positive = torch.cat([views, view_label, views[vp]])
    return anchor, positive


def multiview_share(point_idx: Tensor) -> Tensor:
    """Share of the points with a 2D view that have at least two (float, 0 when none):
    how multi-view the contrastive term really is (cameras' overlap, augmented copies and
    temporal views all count)."""
    if point_idx.numel() == 0:
        return torch.zeros((), dtype=torch.float32, device=point_idx.device)
    counts = torch.bincount(point_idx)
    seen = (counts > 0).sum()
    return ((counts >= 2).sum().float() / seen.float()).detach()


def confidence_mask(logits: Tensor, min_confidence: float) -> Tensor:
    """(P,) bool: the (teacher's) top softmax probability is at least ``min_confidence``.

    Where the teacher hesitates (rare small objects, the cameras' blind edges) its soft
    targets mostly carry its own confusion; masking them out leaves those points to the
    labels (or to nothing). ``min_confidence <= 0`` keeps every point.
    """
    if min_confidence <= 0:
        return torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
    return torch.softmax(logits.detach().float(), dim=1).amax(1) >= min_confidence


# --------------------------------------------------------------------------- distillation


def kd_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 2.0,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """``T^2 * mean_i KL(softmax(t_i / T) || softmax(s_i / T))`` over the masked points.

    ``weights`` (P,), optional non-negative per-point weights: the mean becomes the
    weighted mean ``sum_i w_i KL_i / sum_i w_i`` over the masked points (see
    :func:`class_balance_weights`).

    Softening with ``T > 1`` exposes the teacher's "dark knowledge" (which wrong classes
    are plausible); ``T^2`` keeps the gradient scale independent of ``T`` (Hinton et al.
    2015). The teacher is detached: it is a target, not trained by this term. An empty mask
    gives a gradient-safe zero.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} "
            "logits differ in shape"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if weights is not None and weights.shape != student_logits.shape[:1]:
        raise ValueError(f"weights must be (P,) = ({student_logits.shape[0]},)")
    if mask is not None:
        student_logits, teacher_logits = student_logits[mask], teacher_logits[mask]
        weights = weights[mask] if weights is not None else None
    if student_logits.shape[0] == 0:
        return zero_loss(student_logits)
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(_constant(teacher_logits) / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1)
    if weights is None:
        return kl.mean() * temperature**2
    w = _constant(weights).to(kl.dtype)
    return (w * kl).sum() / w.sum().clamp(min=1e-12) * temperature**2


def class_balance_weights(
    classes: Tensor, num_classes: int, power: float = 0.5, mask: Tensor | None = None
) -> Tensor:
    """Per-point weights ``n_c^-power`` from the frequency ``n_c`` of each point's class
    among the masked points, normalised to mean 1 over them (0 outside the mask).

    ``power=0.5``: inverse square-root frequency; ``power=1``: every class present gets
    the same total weight (the balance of the Lovász term).
    """
    keep = torch.ones_like(classes, dtype=torch.bool) if mask is None else mask
    counts = torch.bincount(classes[keep], minlength=num_classes).to(torch.float32)
    w = counts.clamp(min=1.0).pow(-power)[classes] * keep
    n = keep.sum()
    return w * (n / w.sum()) if bool(n > 0) else w


class FeatureProjector(nn.Module):
    """Student feature -> teacher feature space (Linear-ReLU-Linear).

    The student is not forced to use the teacher's width or basis; a small head maps it
    across and is trained with the student (it is discarded at deployment). No BatchNorm:
    the masked subsets can be tiny.
    """

    def __init__(self, d_student: int, d_teacher: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(d_student, d_teacher)
        self.net = nn.Sequential(
            nn.Linear(d_student, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, d_teacher)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def feature_distill(
    student_feat: Tensor,
    teacher_feat: Tensor,
    head: nn.Module,
    mask: Tensor | None = None,
    kind: str = "cosine",
) -> Tensor:
    """Align ``head(student_feat)`` with the (detached) teacher features on masked points.

    ``kind="cosine"``: mean of ``1 - cos`` (matches direction only, robust to the teacher's
    feature scale); ``kind="l2"``: mean squared error over points and channels. An empty
    mask gives a gradient-safe zero (which still touches the head's parameters).
    """
    if kind not in ("cosine", "l2"):
        raise ValueError(f"kind must be 'cosine' or 'l2', got {kind!r}")
    if student_feat.shape[0] != teacher_feat.shape[0]:
        raise ValueError(
            f"student has {student_feat.shape[0]} points, teacher {teacher_feat.shape[0]}"
        )
    if mask is not None:
        student_feat, teacher_feat = student_feat[mask], teacher_feat[mask]
    projected = head(student_feat)
    if projected.shape[0] == 0:
        return zero_loss(projected)
    target = _constant(teacher_feat)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(projected, target, dim=1)).mean()
    return F.mse_loss(projected, target)
