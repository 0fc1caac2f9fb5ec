"""Losses against independent computations (numpy / brute force / naive loops)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from xmodelkd_ros.training.losses import (
    FeatureProjector,
    NonFiniteLossError,
    balanced_cross_entropy,
    check_finite,
    class_balance_weights,
    feature_distill,
    kd_kl,
    lovasz_softmax,
    multiview_infonce,
    segmentation_loss,
)
from xmodelkd_ros.training.objectives import (
    DistillLoss,
    DistillWeights,
    TeacherLoss,
    TeacherWeights,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ----------------------------------------------------------------------------- Lovász


def _jaccard_loss_of_set(fg: np.ndarray, mispredicted: np.ndarray) -> float:
    """Δ_J(M) = |M| / |fg ∪ M| for the set M of mispredicted points (class c's Jaccard loss)."""
    union = np.logical_or(fg, mispredicted).sum()
    return float(mispredicted.sum() / union) if union else 0.0


def _lovasz_reference(probs: np.ndarray, labels: np.ndarray) -> tuple[float, list]:
    """Lovász extension from its definition, with the set function evaluated set by set.

    f(e) = sum_i e_{π(i)} (Δ({π(1..i)}) - Δ({π(1..i-1)})) with π sorting e decreasingly;
    the gradient w.r.t. e is the vector of increments. Returns the loss and, per class,
    (class, errors, gradient w.r.t. errors).
    """
    values, grads = [], []
    for c in np.unique(labels):
        fg = labels == c
        errors = np.abs(fg.astype(float) - probs[:, c])
        order = np.argsort(-errors, kind="stable")
        g = np.zeros_like(errors)
        prev = 0.0
        mis = np.zeros(len(errors), bool)
        for i in order:
            mis[i] = True
            cur = _jaccard_loss_of_set(fg, mis)
            g[i] = cur - prev
            prev = cur
        values.append(float(errors @ g))
        grads.append((c, errors, g))
    return float(np.mean(values)), grads


def test_lovasz_perfect_prediction_iszero_loss():
    labels = torch.tensor([0, 1, 2, 1, 2, 2])
    probs = torch.nn.functional.one_hot(labels, 4).double()
    assert lovasz_softmax(probs, labels).item() == pytest.approx(0.0, abs=1e-12)


def test_lovasz_on_hard_predictions_is_one_minus_iou():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 30)
    pred = np.where(rng.random(30) < 0.6, labels, rng.integers(0, 4, 30))
    probs = torch.nn.functional.one_hot(torch.as_tensor(pred), 4).double()
    ious = []
    for c in np.unique(labels):  # classes present in the labels
        inter = np.sum((pred == c) & (labels == c))
        union = np.sum((pred == c) | (labels == c))
        ious.append(inter / union)
    expect = 1.0 - np.mean(ious)
    got = lovasz_softmax(probs, torch.as_tensor(labels)).item()
    assert got == pytest.approx(expect, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_lovasz_value_and_gradient_match_definition(seed):
    rng = np.random.default_rng(seed)
    P, C = 9, 3
    probs_np = rng.dirichlet(np.ones(C), P)
    labels_np = rng.integers(0, C, P)
    labels_np[-1] = 99  # ignored
    probs = torch.tensor(probs_np, requires_grad=True)
    loss = lovasz_softmax(probs, torch.as_tensor(labels_np), ignore_index=99)
    keep = labels_np != 99
    expect, per_class = _lovasz_reference(probs_np[keep], labels_np[keep])
    assert loss.item() == pytest.approx(expect, abs=1e-12)
    loss.backward()
    # d loss / d p_c = (1 / #classes) * g * d e / d p_c, with d e / d p_c = -sign(fg - p_c).
    expect_grad = np.zeros((P, C))
    for c, _errors, g in per_class:
        fg = (labels_np[keep] == c).astype(float)
        sign = np.where(fg > probs_np[keep][:, c], -1.0, 1.0)
        expect_grad[np.flatnonzero(keep), c] += g * sign / len(per_class)
    np.testing.assert_allclose(probs.grad.numpy(), expect_grad, atol=1e-12)


def test_lovasz_all_ignored_is_gradient_safezero_loss():
    probs = torch.rand(4, 3, requires_grad=True)
    loss = lovasz_softmax(probs, torch.zeros(4, dtype=torch.long), ignore_index=0)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(probs.grad, torch.zeros(4, 3))


def test_segmentation_loss_is_ce_plus_weighted_lovasz():
    logits = torch.randn(20, 5, requires_grad=True)
    labels = torch.randint(0, 5, (20,))
    ce_only = segmentation_loss(logits, labels, ignore_index=0, lovasz_weight=0.0)
    both = segmentation_loss(logits, labels, ignore_index=0, lovasz_weight=0.5)
    valid = labels != 0
    ce = torch.nn.functional.cross_entropy(logits[valid], labels[valid])
    lov = lovasz_softmax(torch.softmax(logits, 1), labels, ignore_index=0)
    torch.testing.assert_close(ce_only, ce)
    torch.testing.assert_close(both, ce + 0.5 * lov)
    empty = segmentation_loss(logits, torch.zeros(20, dtype=torch.long), ignore_index=0)
    empty.backward()
    assert empty.item() == 0.0


# ----------------------------------------------------------------------------- InfoNCE


def _naive_infonce(f3d: np.ndarray, f2d: np.ndarray, point_idx: np.ndarray, t: float) -> float:
    """The multi-positive formula with explicit loops (all points with a view, no sampling)."""
    points = sorted(set(point_idx.tolist()))
    emb = [f3d[p] for p in points] + list(f2d)
    lab = points + point_idx.tolist()
    emb = [e / np.linalg.norm(e) for e in emb]
    total, count = 0.0, 0
    for a in range(len(emb)):
        denom = sum(math.exp(emb[a] @ emb[k] / t) for k in range(len(emb)) if k != a)
        positives = [p for p in range(len(emb)) if p != a and lab[p] == lab[a]]
        if not positives:
            continue
        total += -sum(math.log(math.exp(emb[a] @ emb[p] / t) / denom) for p in positives) / len(
            positives
        )
        count += 1
    return total / count


def test_infonce_matches_naive_loop():
    rng = np.random.default_rng(1)
    f3d = rng.normal(size=(7, 5))
    point_idx = np.array([0, 2, 2, 3, 5, 5, 5, 6])  # points 1 and 4 unseen, 5 has three views
    f2d = rng.normal(size=(len(point_idx), 5))
    got = multiview_infonce(torch.as_tensor(f3d), torch.as_tensor(f2d),
                            torch.as_tensor(point_idx), temperature=0.3, max_points=None)
    assert got.item() == pytest.approx(_naive_infonce(f3d, f2d, point_idx, 0.3), rel=1e-10)


def test_infonce_symmetry_and_permutation_invariance():
    f3d = torch.randn(6, 4, dtype=torch.float64)
    f2d = torch.randn(6, 4, dtype=torch.float64)
    idx = torch.arange(6)
    a = multiview_infonce(f3d, f2d, idx, 0.2, None)
    # One view per point: the roles of 3D and 2D are interchangeable.
    b = multiview_infonce(f2d, f3d, idx, 0.2, None)
    torch.testing.assert_close(a, b)
    # Renaming the points (and listing the views in another order) changes nothing.
    perm = torch.randperm(6)
    inv = torch.argsort(perm)
    c = multiview_infonce(f3d[perm], f2d.flip(0), inv[idx.flip(0)], 0.2, None)
    torch.testing.assert_close(a, c)


def test_infonce_alignment_temperature_and_sampling():
    g = torch.Generator().manual_seed(0)
    f3d = torch.nn.functional.normalize(torch.randn(32, 16), dim=1)
    idx = torch.arange(32).repeat(2)  # two views per point
    aligned = multiview_infonce(f3d, f3d[idx] + 0.01 * torch.randn(64, 16), idx, 0.1, None)
    random = multiview_infonce(f3d, torch.randn(64, 16), idx, 0.1, None)
    assert aligned < random
    # Sharper temperature: aligned features are separated even more confidently.
    sharper = multiview_infonce(f3d, f3d[idx], idx, 0.05, None)
    softer = multiview_infonce(f3d, f3d[idx], idx, 0.5, None)
    assert sharper < softer
    # Sampling: at most max_points points; reproducible with the generator.
    s1 = multiview_infonce(f3d, torch.randn(64, 16, generator=g), idx, 0.1, 8,
                           torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(0)
    s2 = multiview_infonce(f3d, torch.randn(64, 16, generator=g), idx, 0.1, 8,
                           torch.Generator().manual_seed(3))
    torch.testing.assert_close(s1, s2)
    # With 8 points x 3 embeddings, the loss is bounded by log(23) for uniform similarities.
    flat = multiview_infonce(torch.ones(32, 16), torch.ones(64, 16), idx, 0.1, 8)
    assert flat.item() == pytest.approx(math.log(23), rel=1e-5)


def test_infonce_empty_is_gradient_safe():
    f3d = torch.randn(5, 4, requires_grad=True)
    loss = multiview_infonce(f3d, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and f3d.grad is not None


# ----------------------------------------------------------------------------- KD


def test_kd_kl_matches_numpy_and_masks():
    rng = np.random.default_rng(2)
    s, t = rng.normal(size=(10, 4)), rng.normal(size=(10, 4))
    mask = rng.random(10) < 0.5
    T = 3.0

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    ps, pt = softmax(s[mask] / T), softmax(t[mask] / T)
    expect = T**2 * np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), 1))
    st = torch.tensor(s, requires_grad=True)
    tt = torch.tensor(t, requires_grad=True)
    got = kd_kl(st, tt, T, torch.as_tensor(mask))
    assert got.item() == pytest.approx(expect, rel=1e-10)
    got.backward()
    assert tt.grad is None  # the teacher is a constant target
    assert torch.all(st.grad[~torch.as_tensor(mask)] == 0)
    assert kd_kl(st, st.detach(), T).item() == pytest.approx(0.0, abs=1e-12)
    empty = kd_kl(st, tt, T, torch.zeros(10, dtype=torch.bool))
    empty.backward()
    assert empty.item() == 0.0


def _np_softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("power", [0.5, 1.0])
def test_class_balanced_kd_matches_numpy(power):
    rng = np.random.default_rng(3)
    P, C, T = 40, 5, 2.0
    s, t = rng.normal(size=(P, C)), rng.normal(size=(P, C))
    labels = rng.choice([-1, 0, 0, 0, 0, 0, 0, 1, 1, 3], size=P)  # class 0 frequent, 3 rare
    labels[:3] = [0, 1, 3]
    fov = rng.random(P) < 0.6
    fov[:3] = True
    # Independent computation: class = label, the teacher's argmax where unlabeled; weight
    # n_c^-power with n_c counted inside the mask, normalised to mean 1 over the mask.
    cls = np.where(labels >= 0, labels, t.argmax(1))
    counts = np.array([np.sum(cls[fov] == c) for c in range(C)])
    w = np.where(fov, np.maximum(counts[cls], 1) ** -power, 0.0)
    w = w * fov.sum() / w.sum()
    assert w[fov].mean() == pytest.approx(1.0)
    # Every class present gets total weight proportional to n_c^(1-power).
    if power == 1.0:
        totals = [w[fov & (cls == c)].sum() for c in range(C) if counts[c]]
        np.testing.assert_allclose(totals, totals[0])
    torch.testing.assert_close(
        class_balance_weights(torch.as_tensor(cls), C, power, torch.as_tensor(fov)),
        torch.as_tensor(w, dtype=torch.float32),
    )
    ps, pt = _np_softmax(s / T), _np_softmax(t / T)
    kl = np.sum(pt * (np.log(pt) - np.log(ps)), 1)
    expect_kd = T**2 * np.sum(w[fov] * kl[fov]) / np.sum(w[fov])
    student = SimpleNamespace(logits=torch.tensor(s, requires_grad=True),
                              features=torch.randn(P, 8))
    teacher = SimpleNamespace(logits=torch.tensor(t), features=torch.randn(P, 6),
                              logits_3d=torch.tensor(t), features_3d=torch.randn(P, 8))
    loss_fn = DistillLoss(8, 6, 8, DistillWeights(ce=0, lovasz=0, feat=0, kd=1.0,
                                                  kd_temperature=T, kd_balance=power))
    total, parts = loss_fn(student, torch.as_tensor(labels), teacher, torch.as_tensor(fov))
    assert parts["kd"].item() == pytest.approx(expect_kd, rel=1e-6)
    assert total.item() == pytest.approx(expect_kd, rel=1e-6)
    total.backward()
    assert torch.all(student.logits.grad[~torch.as_tensor(fov)] == 0)
    # Uniform weights reproduce the plain mean; kd_balance=0 is the plain (Hinton) KD.
    st, tt = torch.tensor(s), torch.tensor(t)
    torch.testing.assert_close(kd_kl(st, tt, T, torch.as_tensor(fov), torch.full((P,), 3.0)),
                               kd_kl(st, tt, T, torch.as_tensor(fov)))
    plain = DistillLoss(8, 6, 8, DistillWeights(ce=0, lovasz=0, feat=0, kd_temperature=T))
    _, plain_parts = plain(student, torch.as_tensor(labels), teacher, torch.as_tensor(fov))
    expect_plain = T**2 * kl[fov].mean()
    assert plain_parts["kd"].item() == pytest.approx(expect_plain, rel=1e-6)
    with pytest.raises(ValueError, match="weights"):
        kd_kl(st, tt, T, None, torch.ones(P - 1))


def test_feature_distill_cosine_and_l2():
    head = FeatureProjector(6, 4)
    s = torch.randn(8, 6)
    t = torch.randn(8, 4)
    mask = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1], dtype=torch.bool)
    proj = head(s[mask])
    cos = feature_distill(s, t, head, mask, "cosine")
    expect = (1 - (proj * t[mask]).sum(1) / (proj.norm(dim=1) * t[mask].norm(dim=1))).mean()
    torch.testing.assert_close(cos, expect)
    l2 = feature_distill(s, t, head, mask, "l2")
    torch.testing.assert_close(l2, ((proj - t[mask]) ** 2).mean())
    with pytest.raises(ValueError, match="kind"):
        feature_distill(s, t, head, mask, "l1")
    empty = feature_distill(s, t, head, torch.zeros(8, dtype=torch.bool))
    empty.backward()
    assert empty.item() == 0.0


# ----------------------------------------------------------------------------- combined


def _outputs(P=12, C=5, Ds=8, Dt=6):
    student = SimpleNamespace(logits=torch.randn(P, C, requires_grad=True),
                              features=torch.randn(P, Ds, requires_grad=True))
    teacher = SimpleNamespace(logits=torch.randn(P, C), features=torch.randn(P, Dt),
                              logits_3d=torch.randn(P, C), features_3d=torch.randn(P, Ds))
    return student, teacher


def test_distill_loss_combines_weighted_components():
    student, teacher = _outputs()
    labels = torch.randint(-1, 5, (12,))
    labels[0] = 0
    fov = torch.rand(12) < 0.5
    w = DistillWeights(ce=1.0, lovasz=0.5, kd=2.0, feat=0.3, kd_all=0.1, feat_all=0.2,
                       kd_temperature=2.0)
    loss_fn = DistillLoss(8, 6, d_teacher_3d=8, weights=w)
    total, parts = loss_fn(student, labels, teacher, fov)
    assert set(parts) == {"ce", "lovasz", "kd", "feat", "kd_all", "feat_all", "total"}
    valid = labels != -1  # the data pipeline's IGNORE_INDEX is the default
    ce = torch.nn.functional.cross_entropy(student.logits[valid], labels[valid])
    expect = (ce + 0.5 * lovasz_softmax(torch.softmax(student.logits, 1), labels, -1)
              + 2.0 * kd_kl(student.logits, teacher.logits, 2.0, fov)
              + 0.3 * feature_distill(student.features, teacher.features, loss_fn.head, fov)
              + 0.1 * kd_kl(student.logits, teacher.logits_3d, 2.0)
              + 0.2 * feature_distill(student.features, teacher.features_3d, loss_fn.head_3d))
    torch.testing.assert_close(total, expect)
    torch.testing.assert_close(parts["total"], expect.detach())
    total.backward()
    assert student.logits.grad is not None
    assert all(p.grad is not None for p in loss_fn.parameters())
    # The labels-only baseline: same module, no teacher.
    _base_total, base_parts = loss_fn(student, labels)
    assert set(base_parts) == {"ce", "lovasz", "total"}
    assert DistillWeights.from_dict({"kd": 0.5}).kd == 0.5
    with pytest.raises(ValueError, match="unknown"):
        DistillWeights.from_dict({"kdd": 0.5})


@pytest.mark.parametrize("kind", ["cosine", "l2"])
def test_distill_loss_accepts_teacher_outputs_from_inference_mode(kind):
    with torch.inference_mode():
        _, teacher = _outputs()
    student, _ = _outputs()
    loss_fn = DistillLoss(8, 6, 8, DistillWeights(kd_all=1.0, feat_all=1.0, feat_kind=kind))
    total, _ = loss_fn(student, torch.randint(-1, 5, (12,)), teacher, None)
    total.backward()
    assert student.features.grad is not None


def test_teacher_loss_components():
    P, K, C, D = 10, 14, 4, 8
    out = SimpleNamespace(logits=torch.randn(P, C, requires_grad=True),
                          logits_3d=torch.randn(P, C, requires_grad=True),
                          proj_3d=torch.randn(P, D, requires_grad=True),
                          proj_2d=torch.randn(K, D, requires_grad=True))
    labels = torch.randint(-1, C, (P,))
    point_idx = torch.randint(0, P, (K,))
    w = TeacherWeights(contrastive=0.5, temperature=0.1, max_points=100)
    total, parts = TeacherLoss(w)(out, labels, point_idx)
    expect = (segmentation_loss(out.logits, labels, -1)
              + segmentation_loss(out.logits_3d, labels, -1)
              + 0.5 * multiview_infonce(out.proj_3d, out.proj_2d, point_idx, 0.1, 100))
    torch.testing.assert_close(total, expect)
    assert set(parts) == {"seg_fused", "seg_3d", "contrastive", "total", "multiview_share"}
    seen = [int((point_idx == p).sum()) for p in range(P)]
    share = sum(c >= 2 for c in seen) / sum(c >= 1 for c in seen)
    assert float(parts["multiview_share"]) == pytest.approx(share)


def test_check_finite():
    ok = torch.tensor(1.0)
    assert check_finite(ok, "x") is ok
    with pytest.raises(NonFiniteLossError, match="kd"):
        check_finite(torch.tensor(float("nan")), "kd")
    with pytest.raises(FloatingPointError):
        check_finite(torch.tensor([1.0, float("inf")]), "total")


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_balanced_cross_entropy_matches_numpy(power):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(40, 5))
    labels = rng.choice(5, size=40, p=[0.7, 0.2, 0.05, 0.05, 0.0])
    # reference: per-point CE by hand, weights n_c^-power, weighted mean
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    ce = -log_p[np.arange(40), labels]
    counts = np.bincount(labels, minlength=5)
    w = counts[labels].astype(float) ** -power
    expected = (w * ce).sum() / w.sum()
    got = balanced_cross_entropy(torch.tensor(logits), torch.tensor(labels), power)
    assert math.isclose(got.item(), expected, rel_tol=1e-9)


def test_balanced_cross_entropy_gives_every_class_equal_weight():
    """power=1: a class of 1 point weighs as much as a class of 99 points."""
    logits = torch.zeros(100, 2, requires_grad=True)
    labels = torch.tensor([0] * 99 + [1])
    balanced_cross_entropy(logits, labels, 1.0).backward()
    g = logits.grad
    assert torch.isclose(g[:99].sum(0).abs().sum(), g[99].abs().sum())
