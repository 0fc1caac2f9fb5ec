"""Benchmark statistics: IoU bookkeeping against brute force, the bootstrap against known
answers, and the paired gain's bookkeeping on hand-made confusions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xmodelkd_ros.evaluation.stats import (
    confusion,
    hierarchical_bootstrap,
    iou_from_confusion,
    miou_from_confusion,
    paired_gain,
    percentile_ci,
)

C = 4  # classes 1..4, label id 0 = unlabeled / no prediction


def brute_iou(gt: np.ndarray, pred: np.ndarray, c: int) -> float:
    keep = gt > 0
    g, p = gt[keep] == c, pred[keep] == c
    union = (g | p).sum()
    return np.nan if union == 0 else (g & p).sum() / union


def test_confusion_iou_matches_brute_force_and_out_of_grid_counts_as_wrong() -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, C + 1, 5000)
    pred = rng.integers(0, C + 1, 5000)  # 0 = the model gave no label (outside the grid)
    cm = confusion(gt, pred, C)
    assert cm.sum() == (gt > 0).sum()  # unlabeled ground truth is not counted
    iou = iou_from_confusion(cm)
    for c in range(1, C + 1):
        assert iou[c - 1] == pytest.approx(brute_iou(gt, pred, c))
    # dropping the out-of-grid points instead would raise every IoU
    keep = pred > 0
    dropped = iou_from_confusion(confusion(gt[keep], pred[keep], C))
    assert np.all(dropped > iou)


def test_absent_class_is_nan_and_left_out_of_the_mean() -> None:
    gt = np.array([1, 1, 2, 2])
    pred = np.array([1, 2, 2, 2])
    iou = iou_from_confusion(confusion(gt, pred, C))
    assert np.isnan(iou[2]) and np.isnan(iou[3])
    assert miou_from_confusion(confusion(gt, pred, C)) == pytest.approx((0.5 + 2 / 3) / 2)


def test_bootstrap_ci_of_a_mean_matches_the_normal_theory_interval() -> None:
    """One level (a single seed): the percentile CI of a mean of N iid N(mu, sigma) values
    is mean +- 1.96 sigma / sqrt(N) up to Monte-Carlo error."""
    rng = np.random.default_rng(1)
    n, sigma = 400, 2.0
    x = rng.normal(5.0, sigma, n)
    boot = hierarchical_bootstrap(lambda s, w: (w * x).sum() / w.sum(), 1, n, reps=4000)
    lo, hi = percentile_ci(boot)
    half = 1.96 * x.std(ddof=1) / np.sqrt(n)
    assert lo == pytest.approx(x.mean() - half, abs=0.25 * half)
    assert hi == pytest.approx(x.mean() + half, abs=0.25 * half)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    """Two levels: seed effects plus scan noise; the interval of the grand mean covers the
    true value in roughly 95 % of repeated experiments (bootstrap CIs undercover a little
    with few seeds, hence the generous band)."""
    rng = np.random.default_rng(2)
    hits, trials = 0, 150
    for t in range(trials):
        seeds, scans = 8, 30
        y = 1.0 + rng.normal(0, 0.5, (seeds, 1)) + rng.normal(0, 1.0, (seeds, scans))
        boot = hierarchical_bootstrap(
            lambda s, w, y=y: (y[s] * w).sum(1).mean() / w.sum(), seeds, scans, reps=300, seed=t
        )
        lo, hi = percentile_ci(boot)
        hits += lo <= 1.0 <= hi
    assert 0.8 <= hits / trials <= 0.99


def test_with_street_effects_only_the_street_bootstrap_covers_the_true_mean() -> None:
    """Scans of one street share its effect (a street's scans are a second apart): the
    interval that draws streets, then their scans, covers the true mean about 95 % of
    the time; drawing the scans as independent covers far less (too narrow)."""
    rng = np.random.default_rng(3)
    streets, per, trials = 12, 4, 150
    hits = {None: 0, streets: 0}
    for t in range(trials):
        y = rng.normal(0, 1.0, (streets, 1)) + rng.normal(0, 0.3, (streets, per))
        y = y.reshape(1, -1)  # one seed, scans street by street

        def mean(s, w, y=y):
            return (y[s] * w).sum(1).mean() / w.sum()

        for g in hits:
            lo, hi = percentile_ci(hierarchical_bootstrap(mean, 1, streets * per, reps=300,
                                                          seed=t, streets=g))  # fmt: skip
            hits[g] += lo <= 0.0 <= hi
    assert 0.85 <= hits[streets] / trials <= 0.99
    assert hits[None] / trials < 0.8


@settings(max_examples=30, deadline=None)
@given(streets=st.integers(1, 9), per=st.integers(1, 6), seed=st.integers(0, 10**6))
def test_the_street_bootstrap_draws_whole_streets(streets, per, seed) -> None:
    """Each drawn street contributes exactly its own number of scan draws, so every
    street's total weight is a multiple of its scan count and all weights sum to N."""
    n = streets * per
    ws = hierarchical_bootstrap(lambda s, w: w, 1, n, reps=20, seed=seed, streets=streets)
    assert ws.shape == (20, n) and np.all(ws.sum(1) == n)
    by_street = ws.reshape(20, streets, per).sum(2)
    assert np.all(by_street % per == 0)


def test_scans_that_do_not_split_into_equal_streets_are_refused() -> None:
    with pytest.raises(ValueError, match="equal streets"):
        hierarchical_bootstrap(lambda s, w: w.sum(), 1, 10, reps=2, streets=3)


def _cms(seed_scores: list[list[tuple[int, int]]]) -> np.ndarray:
    """(S, N, K, K) confusions where scan n of seed s has (right, wrong) points of class 1
    (wrong ones predicted as class 2) plus 10 correct points of class 2."""
    out = np.zeros((len(seed_scores), len(seed_scores[0]), C + 1, C + 1), dtype=np.int64)
    for s, scans in enumerate(seed_scores):
        for n, (right, wrong) in enumerate(scans):
            out[s, n, 1, 1] = right
            out[s, n, 1, 2] = wrong
            out[s, n, 2, 2] = 10
    return out


def test_paired_gain_bookkeeping() -> None:
    a = _cms([[(8, 2), (9, 1)], [(5, 5), (6, 4)]])
    b = _cms([[(6, 4), (7, 3)], [(5, 5), (6, 4)]])
    g = paired_gain(a, b, reps=200)
    # seed 0: class 1 IoU 17/20 vs 13/20; class 2 IoU 20/23 vs 20/27
    s0 = ((17 / 20 + 20 / 23) - (13 / 20 + 20 / 27)) / 2
    np.testing.assert_allclose(g.per_seed, [s0, 0.0])
    assert g.mean == pytest.approx(s0 / 2)
    assert g.ci[0] <= g.mean <= g.ci[1]
    assert g.class_mean[0] == pytest.approx((17 / 20 - 13 / 20) / 2)
    assert np.isnan(g.class_mean[2])  # class 3 never occurs
    # swapping the models mirrors everything
    r = paired_gain(b, a, reps=200)
    np.testing.assert_allclose(r.per_seed, -g.per_seed)
    assert r.ci[0] == pytest.approx(-g.ci[1]) and r.ci[1] == pytest.approx(-g.ci[0])


def test_identical_models_have_a_zero_width_interval_and_shapes_must_match() -> None:
    a = _cms([[(8, 2), (3, 1)], [(5, 5), (6, 4)]])
    g = paired_gain(a, a, reps=100)
    assert g.mean == 0.0 and g.ci == (0.0, 0.0)
    with pytest.raises(ValueError, match="shape"):
        paired_gain(a, a[:, :1], reps=10)
