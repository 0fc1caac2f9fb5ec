"""Metrics against a brute-force confusion computation."""

from __future__ import annotations

import numpy as np
import torch

from xmodelkd_ros.training.metrics import ConfusionMatrix, seg_metrics


def test_confusion_and_iou_match_brute_force():
    rng = np.random.default_rng(0)
    k = 5
    names = [f"c{i}" for i in range(k)]
    cm = ConfusionMatrix(k)
    all_p, all_t = [], []
    for _ in range(3):
        t = rng.integers(-1, k - 1, 400)  # class k-1 never in ground truth
        p = rng.integers(0, k - 1, 400)  # ... nor predicted: its IoU is undefined
        cm.update(torch.from_numpy(p), torch.from_numpy(t))
        all_p.append(p)
        all_t.append(t)
    p, t = np.concatenate(all_p), np.concatenate(all_t)
    brute = np.zeros((k, k), np.int64)
    for pi, ti in zip(p, t, strict=True):
        if ti >= 0:
            brute[ti, pi] += 1
    np.testing.assert_array_equal(cm.matrix.numpy(), brute)
    m = cm.result(names)
    for c in range(k - 1):
        tp = np.sum((p == c) & (t == c))
        fp = np.sum((p == c) & (t != c) & (t >= 0))
        fn = np.sum((p != c) & (t == c))
        assert abs(m.iou[names[c]] - tp / (tp + fp + fn)) < 1e-12
    assert np.isnan(m.iou[names[k - 1]])
    assert abs(m.miou - np.mean([m.iou[n] for n in names[: k - 1]])) < 1e-12
    assert abs(m.accuracy - np.mean(p[t >= 0] == t[t >= 0])) < 1e-12


def test_perfect_prediction_gives_miou_one():
    m = seg_metrics(np.diag([3, 0, 5]), ["a", "b", "c"])
    assert m.miou == 1.0 and np.isnan(m.iou["b"])
