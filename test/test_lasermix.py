"""The LaserMix control: inclination-band mixing (property tests against an independent
oracle), scan pairing, the mean teacher's EMA against a hand computation, and the
``lasermix`` stage end to end on a tiny run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from training_hooks import TINY

from xmodelkd_ros.nets.checkpoint import load_student
from xmodelkd_ros.nets.student import StudentConfig, StudentNet
from xmodelkd_ros.training.data.collate import collate
from xmodelkd_ros.training.data.prepared import Prepared
from xmodelkd_ros.training.data.sample import IGNORE_INDEX, Correspondences
from xmodelkd_ros.training.lasermix import (
    LaserMixStep,
    LaserMixWeights,
    ema_update,
    laser_mix,
    mix_batch,
    pair_scans,
)
from xmodelkd_ros.training.objectives import DistillLoss, DistillWeights
from xmodelkd_ros.training.stages import STAGE_KINDS
from xmodelkd_ros.training.train import main

GRID_RANGE = 20.0


def _oracle_bands(xyz: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Band of each point from its elevation angle in degrees (computed here, not by the
    module), and whether it lies within rounding of a band edge (then not judged)."""
    deg = np.degrees(np.arctan2(xyz[:, 2], np.sqrt(xyz[:, 0] ** 2 + xyz[:, 1] ** 2)))
    lo, hi = deg.min(), deg.max()
    t = (deg - lo) / max(hi - lo, 1e-12) * n
    band = np.clip(np.floor(t), 0, n - 1).astype(int)
    edge = np.abs(t - np.round(t)) < 1e-6
    edge &= (np.round(t) > 0) & (np.round(t) < n)  # the ends of the range are no edge
    return band, edge


coord = st.floats(-GRID_RANGE, GRID_RANGE, allow_nan=False, width=32)
height = st.floats(-3.0, 3.0, allow_nan=False, width=32)
scan = st.lists(st.tuples(coord, coord, height), min_size=0, max_size=40)


@settings(max_examples=150, deadline=None)
@given(a=scan, b=scan, n=st.integers(1, 8))
def test_every_point_lands_once_in_the_mix_its_band_says(a, b, n):
    xa = torch.tensor(a, dtype=torch.float64).reshape(-1, 3)
    xb = torch.tensor(b, dtype=torch.float64).reshape(-1, 3)
    m0, m1 = laser_mix(xa, xb, n)
    rows = torch.cat([m0, m1]).sort().values
    assert torch.equal(rows, torch.arange(len(a) + len(b)))  # each point exactly once
    if not a and not b:
        return
    band, edge = _oracle_bands(np.concatenate([xa.numpy(), xb.numpy()]), n)
    in_first = np.zeros(len(band), bool)
    in_first[m0.numpy()] = True
    from_a = np.arange(len(band)) < len(a)
    expected = from_a == (band % 2 == 0)  # a's even bands and b's odd bands: mix 0
    judged = ~edge
    assert np.array_equal(in_first[judged], expected[judged])


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 25), min_size=2, max_size=5), n=st.integers(1, 6),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_mixed_points_keep_coordinates_and_targets_of_their_source(sizes, n, seed):
    rng = np.random.default_rng(seed)
    feats = torch.tensor(rng.uniform(-GRID_RANGE, GRID_RANGE, (sum(sizes), 4)))
    feats[:, 2] = torch.tensor(rng.uniform(-3, 3, sum(sizes)))
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    targets = torch.tensor(rng.integers(-1, 19, sum(sizes)))
    labeled = [bool(rng.integers(2)) for _ in sizes]
    pairs = pair_scans(labeled)
    scans, mixed_targets, src = mix_batch(feats, batch, targets, pairs, n)
    assert len(scans) == 2 * len(pairs) and sum(len(s) for s in scans) == len(src)
    assert torch.equal(torch.cat(scans), feats[src])  # coordinates and intensity unchanged
    assert torch.equal(mixed_targets, targets[src])  # labels follow their points
    start = 0
    for k, (sa, sb) in enumerate(pairs):
        both = torch.cat([scans[2 * k], scans[2 * k + 1]])
        rows = src[start:start + len(both)]
        start += len(both)
        assert set(batch[rows].tolist()) <= {sa, sb}  # only the pair's two scans
        whole = torch.cat([(batch == sa).nonzero()[:, 0], (batch == sb).nonzero()[:, 0]])
        assert sorted(rows.tolist()) == sorted(whole.tolist())
    assert start == len(src)


def test_a_hand_made_pair_mixes_band_by_band():
    """Scan a at elevations -20, -10, 0, +10 degrees, scan b at -15, -4, +5: the range
    [-20, +10] in 2 bands ([-20, -5), [-5, +10]). Mix 0: a's band 0 (-20, -10) and b's
    band 1 (-4, +5); mix 1: a's band 1 (0, +10) and b's band 0 (-15)."""

    def ring(degrees):
        return torch.tensor([[10.0, 0.0, 10.0 * math.tan(math.radians(d))] for d in degrees])

    m0, m1 = laser_mix(ring([-20, -10, 0, 10]), ring([-15, -4, 5]), 2)
    assert m0.tolist() == [0, 1, 5, 6] and m1.tolist() == [2, 3, 4]


def test_pairs_put_labeled_scans_with_unlabeled_ones():
    assert pair_scans([True, False]) == [(0, 1)]
    assert pair_scans([False, True, True, False]) == [(1, 0), (2, 3)]
    assert pair_scans([False, False, True]) == [(2, 0)]  # odd: one scan left out
    assert pair_scans([True]) == []


def test_ema_update_against_a_hand_computation():
    def net() -> nn.Module:
        return nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))

    student, ema = net(), net()
    with torch.no_grad():
        student[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
        student[0].bias.fill_(4.0)
        ema[0].weight.copy_(torch.tensor([[3.0, -2.0]]))
        ema[0].bias.fill_(0.0)
        student[1].running_mean.fill_(0.5)
        student[1].num_batches_tracked.fill_(7)
    ema_update(ema, student, 0.75)
    # 0.75 * ema + 0.25 * student
    assert ema[0].weight.tolist() == [[2.5, -1.0]] and ema[0].bias.tolist() == [1.0]
    assert ema[1].weight.tolist() == [1.0] and ema[1].bias.tolist() == [0.0]
    assert ema[1].running_mean.tolist() == [0.5] and int(ema[1].num_batches_tracked) == 7
    assert student[0].weight.tolist() == [[1.0, 2.0]]  # the student is not touched


def _tiny_batch(seed: int) -> tuple:
    cfg = StudentConfig(enc_widths=(8, 16), dec_widths=(8,), num_classes=5)
    from xmodelkd_ros.nets.inputs import default_grid

    grid = default_grid(0.5, GRID_RANGE)
    rng = np.random.default_rng(seed)
    items = []
    for s in range(2):
        pts = rng.uniform(-10, 10, (300, 4)).astype(np.float32)
        pts[:, 2] = rng.uniform(-2, 2, 300)
        labels = rng.integers(0, 5, 300) if s == 0 else np.full(300, IGNORE_INDEX)
        items.append(Prepared(pts, labels, [], Correspondences.empty(), f"s{s}"))
    return cfg, grid, collate(items, grid, cfg.num_levels, cfg.in_channels)


def test_the_step_updates_its_mean_teacher_before_predicting():
    cfg, grid, batch = _tiny_batch(0)
    torch.manual_seed(0)
    net = StudentNet(cfg)
    weights = DistillWeights(kd=0, feat=0, kd_all=0, ignore_index=IGNORE_INDEX)
    loss = DistillLoss(cfg.feature_dim, cfg.feature_dim, cfg.feature_dim, weights)
    step = LaserMixStep(net, loss, LaserMixWeights(ema_decay=0.9, confidence=0.0), grid)
    step.train()
    assert not step.ema.training and all(not p.requires_grad for p in step.ema.parameters())
    with torch.no_grad():  # as if an optimizer step moved the student
        for p in net.parameters():
            p.add_(0.1)
    before = {k: v.clone() for k, v in step.ema.named_parameters()}
    total, logs = step(batch, torch.Generator().manual_seed(1))
    for k, p in step.ema.named_parameters():
        expected = 0.9 * before[k] + 0.1 * dict(net.named_parameters())[k].detach()
        torch.testing.assert_close(p, expected, rtol=0, atol=1e-6, msg=k)
    assert torch.isfinite(total) and {"mix", "consistency", "pseudo_share"} <= set(logs)
    # confidence 0: every unlabeled point (scan 1, half the batch) gets a target
    assert float(logs["pseudo_share"]) == pytest.approx(0.5, abs=0.05)
    total.backward()
    assert all(p.grad is None for p in step.ema.parameters())


def test_lasermix_stage_end_to_end_paired_with_the_baseline(tmp_path):
    kind = STAGE_KINDS.get("lasermix")
    assert kind.stream == STAGE_KINDS.get("baseline").stream and not kind.uses_images
    out = tmp_path / "run"
    args = [*TINY, "data.label_fraction=0.5", "loss.lasermix.confidence=0.0"]
    assert main(["--stage", "lasermix", "--out", str(out), *args]) == 0
    ck = load_student(out / "lasermix.pt")
    assert ck.provenance["stage"] == "lasermix" and "miou" in ck.provenance["metrics"]
    assert ck.provenance["epochs"] == 2  # the controls' lineage: teacher 1 + student 1
    ck.build()  # a normal student checkpoint
    state = torch.load(out / "lasermix" / "last.pt", weights_only=True)["model"]
    ema = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
    assert ema.keys() == ck.state_dict.keys()  # the mean teacher resumes with the run
    assert any(not torch.equal(v, ck.state_dict[k]) for k, v in ema.items())
    log = (out / "train.log").read_text()
    share = float(log.split("pseudo_share ")[1].split(",")[0])
    assert 0.2 < share < 0.8 and "mix " in log and "consistency " in log
    # the same initialisation as the baseline (same seed and stream): at lr 0 both keep it
    frozen = [*args, "schedule.control_epochs=1", "schedule.steps_per_epoch=1", "optim.lr=0"]
    for stage in ("lasermix", "baseline"):
        assert main(["--stage", stage, "--out", str(tmp_path / "lr0"), *frozen]) == 0
    a = load_student(tmp_path / "lr0" / "lasermix.pt")
    b = load_student(tmp_path / "lr0" / "baseline.pt")
    names = [k for k, _ in a.build().named_parameters()]
    assert names and all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in names)
    assert not torch.equal(a.state_dict[names[0]], ck.state_dict[names[0]])


def test_the_benchmark_and_choose_know_the_arm():
    from xmodelkd_ros.evaluation.arms import ARMS, parse_arms
    from xmodelkd_ros.evaluation.choose import parse_arm_list

    assert parse_arms("selftrain,lasermix") == ["selftrain", "lasermix"]
    assert ARMS["lasermix"] == STAGE_KINDS.get("lasermix").final
    assert parse_arm_list("lasermix,distilled") == ["distilled", "lasermix"]
