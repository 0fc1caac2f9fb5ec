"""The method's loss pieces against brute-force references: multi-view InfoNCE with several
(temporal) views per point, the multi-view share, the KD regions, joint training's KL
direction, pseudo-labels, and the label-scarce case (unlabeled scans)."""

from __future__ import annotations

import math

import pytest
import torch

from xmodelkd_ros.nets.student import StudentConfig, StudentNet
from xmodelkd_ros.training.data.sample import IGNORE_INDEX
from xmodelkd_ros.training.losses import confidence_mask, multiview_infonce, multiview_share
from xmodelkd_ros.training.method_steps import (
    JointLoss,
    JointWeights,
    kd_region,
    pseudo_labels,
)
from xmodelkd_ros.training.objectives import DistillLoss, DistillWeights
from xmodelkd_ros.training.recipe import RecipeError


def _reference_infonce(f3, f2, point_idx, t):
    """Loops: every embedding an anchor, positives = other embeddings of its point."""
    pts = sorted(set(point_idx.tolist()))
    emb, lab = [], []
    for p in pts:
        emb.append(f3[p] / f3[p].norm())
        lab.append(p)
    for k, p in enumerate(point_idx.tolist()):
        emb.append(f2[k] / f2[k].norm())
        lab.append(p)
    total, n = 0.0, 0
    for a in range(len(emb)):
        denom = sum(math.exp(float(emb[a] @ emb[k]) / t) for k in range(len(emb)) if k != a)
        pos = [k for k in range(len(emb)) if k != a and lab[k] == lab[a]]
        total += -sum(math.log(math.exp(float(emb[a] @ emb[k]) / t) / denom) for k in pos) / len(
            pos
        )
        n += 1
    return total / n


def test_multiview_infonce_matches_brute_force_with_many_views():
    g = torch.Generator().manual_seed(0)
    f3 = torch.randn(12, 6, generator=g, dtype=torch.float64)
    # points 0..7 seen; 1..4 views each (current cameras + temporal views)
    point_idx = torch.tensor([0, 1, 1, 2, 2, 2, 3, 4, 4, 4, 4, 5, 6, 6, 7])
    f2 = torch.randn(point_idx.numel(), 6, generator=g, dtype=torch.float64)
    got = multiview_infonce(f3, f2, point_idx, temperature=0.2, max_points=None)
    assert float(got) == pytest.approx(_reference_infonce(f3, f2, point_idx, 0.2), rel=1e-9)


def test_multiview_infonce_gradient_matches_finite_differences():
    """The positives are gathered as a pair list (not a mask): its gradient, including
    anchors with 1..4 views and sampled-out points, against numerical differentiation."""
    g = torch.Generator().manual_seed(1)
    f3 = torch.randn(10, 5, generator=g, dtype=torch.float64, requires_grad=True)
    point_idx = torch.tensor([0, 1, 1, 2, 2, 2, 3, 4, 4, 4, 4, 6, 6, 8])
    f2 = torch.randn(point_idx.numel(), 5, generator=g, dtype=torch.float64, requires_grad=True)

    def loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return multiview_infonce(a, b, point_idx, temperature=0.3, max_points=None)

    assert torch.autograd.gradcheck(loss, (f3, f2))
    f3.grad = None
    loss(f3, f2).backward()
    assert f3.grad[[5, 7, 9]].abs().max() == 0  # points without a view take no part


def test_multiview_share():
    assert float(multiview_share(torch.tensor([0, 1, 1, 2, 2, 2, 5]))) == pytest.approx(2 / 4)
    assert float(multiview_share(torch.zeros(0, dtype=torch.long))) == 0.0


def test_kd_region_and_confidence_mask():
    logits = torch.tensor([[5.0, 0, 0], [0.1, 0, 0], [0, 4.0, 0], [0, 0, 3.0], [2.0, 2.0, 0]])
    seen = torch.tensor([True, True, True, False, True])
    labels = torch.tensor([0, 0, 0, 2, IGNORE_INDEX])
    conf = torch.softmax(logits, 1).amax(1)
    assert confidence_mask(logits, 0.0).all()
    assert confidence_mask(logits, 0.6).tolist() == (conf >= 0.6).tolist()
    assert kd_region(seen, logits, labels, "fov", 0.0).tolist() == seen.tolist()
    # fov_correct drops the labeled point the teacher gets wrong (row 2), keeps unlabeled
    assert kd_region(seen, logits, labels, "fov_correct", 0.0).tolist() == [
        True, True, False, False, True,
    ]  # fmt: skip
    both = kd_region(seen, logits, labels, "fov_correct", 0.6).tolist()
    assert both == [True, False, False, False, False]


def _fake_out(p=40, c=4, d=5, seed=0):
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(
        logits=torch.randn(p, c, generator=g).requires_grad_(),
        logits_3d=torch.randn(p, c, generator=g).requires_grad_(),
        proj_3d=torch.randn(p, d, generator=g).requires_grad_(),
        proj_2d=torch.randn(10, d, generator=g).requires_grad_(),
        seen=torch.arange(p) < p // 2,
    )


def test_joint_kl_teaches_the_3d_branch_only_in_view():
    out = _fake_out()
    labels = torch.full((40,), IGNORE_INDEX)
    w = JointWeights(fused=0.0, branch_3d=0.0, kd=1.0, kd_temperature=2.0)
    loss, logs = JointLoss(w)(out, labels, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert out.logits.grad is None or not out.logits.grad.any()  # the fused side is a target
    g3 = out.logits_3d.grad.abs().sum(1)
    assert (g3[:20] > 0).all() and not g3[20:].any()
    # value: T^2 * mean KL(softmax(fused/T) || softmax(3d/T)) over the seen points
    pt = torch.softmax(out.logits.detach()[:20] / 2, 1)
    ps = torch.softmax(out.logits_3d.detach()[:20] / 2, 1)
    ref = 4 * (pt * (pt.log() - ps.log())).sum(1).mean()
    assert float(logs["kd"]) == pytest.approx(float(ref), rel=1e-5)
    assert float(logs["kd_share"]) == pytest.approx(0.5)


def test_joint_weights_are_checked():
    with pytest.raises(RecipeError, match=r"unknown loss\.joint"):  # the recipe's fault, typed
        JointWeights.from_dict({"kdd": 1.0})
    with pytest.raises(ValueError, match="kd_mask"):
        JointWeights.from_dict({"kd_mask": "everywhere"})


def test_joint_labels_train_both_heads_and_contrastive_logs_share():
    out = _fake_out(seed=1)
    labels = torch.randint(0, 4, (40,), generator=torch.Generator().manual_seed(2))
    point_idx = torch.tensor([0, 1, 1, 2, 3, 3, 3, 4, 5, 6])
    w = JointWeights(kd=0.0, contrastive=0.5, max_points=None)
    loss, logs = JointLoss(w)(out, labels, point_idx)
    loss.backward()
    assert out.logits.grad.any() and out.logits_3d.grad.any() and out.proj_2d.grad.any()
    assert float(logs["multiview_share"]) == pytest.approx(2 / 7)  # points 1 and 3 of 0..6
    expected = float(logs["seg_fused"] + logs["seg_3d"] + 0.5 * logs["contrastive"])
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)


def test_pseudo_labels_fill_only_confident_unlabeled_points():
    logits = torch.tensor([[4.0, 0, 0], [0, 0.2, 0], [0, 0, 5.0], [0, 6.0, 0]])
    labels = torch.tensor([IGNORE_INDEX, IGNORE_INDEX, 1, IGNORE_INDEX])
    got = pseudo_labels(labels, logits, 0.8)
    assert got.tolist() == [0, IGNORE_INDEX, 1, 1]  # label kept even where it disagrees
    assert pseudo_labels(labels, logits, 0.0).tolist() == [0, 1, 1, 1]


def _student_out(p=30, c=4, seed=0):
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(
        logits=torch.randn(p, c, generator=g).requires_grad_(),
        features=torch.randn(p, 8, generator=g).requires_grad_(),
    )


def test_unlabeled_scans_give_the_baseline_nothing_and_kd_all_a_signal():
    """label_fraction < 1 marks unlabeled scans IGNORE: the labels-only baseline gets no
    gradient from them (it trains on the labeled scans only), the distilled student still
    learns there from the teacher's 3D branch (kd_all) and in the view (kd)."""
    labels = torch.full((30,), IGNORE_INDEX)
    out = _student_out()
    base = DistillLoss(8, 8, 8, DistillWeights(kd=0, feat=0, ce_balance=1.0))
    loss, _ = base(out, labels)
    loss.backward()
    assert float(loss.detach()) == 0.0 and not out.logits.grad.any()

    from types import SimpleNamespace

    g = torch.Generator().manual_seed(5)
    teacher = SimpleNamespace(logits=torch.randn(30, 4, generator=g),
                              features=torch.randn(30, 8, generator=g),
                              logits_3d=torch.randn(30, 4, generator=g),
                              features_3d=torch.randn(30, 8, generator=g))  # fmt: skip
    out = _student_out()
    fov = torch.arange(30) < 10
    kd = DistillLoss(8, 8, 8, DistillWeights(kd=1.0, feat=0.0, kd_all=0.5, kd_balance=0.5))
    loss, logs = kd(out, labels, teacher, fov, all_mask=torch.arange(30) < 25)
    loss.backward()
    g_rows = out.logits.grad.abs().sum(1)
    assert float(logs["kd"]) > 0 and float(logs["kd_all"]) > 0
    assert (g_rows[:25] > 0).all() and not g_rows[25:].any()  # all_mask bounds kd_all


def test_selftrain_step_trains_on_labels_and_pseudo_labels():
    from xmodelkd_ros.training.method_steps import SelfTrainStep

    torch.manual_seed(0)
    cfg = StudentConfig(enc_widths=(8, 16), dec_widths=(8,), num_classes=4)
    net, labeller = StudentNet(cfg), StudentNet(cfg).eval()
    import numpy as np

    from xmodelkd_ros.nets.inputs import build_inputs, default_grid
    from xmodelkd_ros.training.data.collate import Batch

    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-10, 10, (300, 2)), rng.uniform(-1, 1, 300), rng.uniform(0, 1, 300)]
    inputs = build_inputs([pts.astype(np.float32)], default_grid(0.5), cfg.num_levels)
    p = inputs.point_feats.shape[0]
    labels = torch.full((p,), IGNORE_INDEX)
    labels[:50] = torch.randint(0, 4, (50,))
    e = torch.zeros(0, dtype=torch.long)
    batch = Batch(inputs, labels, torch.zeros(0, 3, 1, 1), e, e, torch.zeros(0, 2), (1, 1), ["x"])
    loss_fn = DistillLoss(8, 8, 8, DistillWeights(kd=0, feat=0))
    step = SelfTrainStep(net, loss_fn, labeller, 0.0)
    loss, logs = step(batch)
    i = inputs
    with torch.no_grad():
        t = labeller(i.voxel_feats, i.point_feats, i.point2voxel, i.maps).logits
    targets = torch.where(labels == IGNORE_INDEX, t.argmax(1), labels)
    ref, _ = loss_fn(net(i.voxel_feats, i.point_feats, i.point2voxel, i.maps), targets)
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-6)
    assert float(logs["pseudo_share"]) == pytest.approx((p - 50) / p)
    assert not any(n.startswith("_labeller") for n, _ in step.named_parameters())
    with pytest.raises(ValueError, match="confidence"):
        SelfTrainStep(net, loss_fn, labeller, 1.5)
