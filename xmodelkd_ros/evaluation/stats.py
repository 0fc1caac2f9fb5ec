"""Statistics of the held-out benchmark: IoU from confusion matrices, paired gains, and a
bootstrap over training seeds and the test sample (streets, then their scans).

Why a hierarchical bootstrap: a gain measured on a handful of seeds and a few dozen test
scans has two sources of noise, the training run (seed) and the test sample (which
streets, which rare objects happen to be in them). Resampling only one of them understates
the interval. Each replicate draws seeds with replacement and, independently, the test
sample: streets with replacement and the scans inside each drawn street (scans of one
street are a second apart and far from independent; drawing them as independent, as the
tools did before, gave intervals too narrow by about half a point a side on 16 streets x 4
scans). The same scans are used for every model and seed of the replicate, so the pairing
of distilled and baseline (same seed, same scans) is kept inside every replicate.

Confusion matrices use label ids: row = ground truth 1..C (0 = unlabeled ground truth,
never counted), column = prediction 0..C where 0 means "no prediction" (a point outside the
voxel grid): such a point is a false negative of its class and no class's false positive,
the SemanticKITTI convention for points a model cannot label.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def nanmean(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """``np.nanmean`` without the all-NaN warning (a class absent everywhere stays NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU (..., C) from confusion matrices (..., C+1, C+1) of label ids.

    NaN where a class has an empty union (never in the ground truth nor predicted).
    """
    cm = np.asarray(cm, dtype=np.float64)
    body = cm[..., 1:, 1:]
    tp = np.diagonal(body, axis1=-2, axis2=-1)
    gt = cm[..., 1:, :].sum(-1)  # every labeled point of the class, also unpredicted ones
    pred = body.sum(-2)  # predicted as the class (from labeled ground truth)
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)


def miou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Mean IoU (...) over the classes with a defined IoU."""
    iou = iou_from_confusion(cm)
    valid = ~np.isnan(iou)
    return np.where(valid, iou, 0.0).sum(-1) / np.maximum(valid.sum(-1), 1)


def confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C+1, C+1) int64 confusion of label ids; ground-truth 0 (unlabeled) is left out."""
    gt = np.asarray(gt, dtype=np.int64).reshape(-1)
    pred = np.asarray(pred, dtype=np.int64).reshape(-1)
    if gt.shape != pred.shape:
        raise ValueError(f"{len(gt)} labels for {len(pred)} predictions")
    keep = gt > 0
    k = num_classes + 1
    idx = gt[keep] * k + np.clip(pred[keep], 0, num_classes)
    return np.bincount(idx, minlength=k * k).reshape(k, k)


def hierarchical_bootstrap(
    stat: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_seeds: int,
    n_scans: int,
    reps: int = 2000,
    seed: int = 0,
    streets: int | None = None,
) -> np.ndarray:
    """``reps`` replicates of ``stat(seed_idx, scan_weights)``.

    ``seed_idx`` (n_seeds,) are seeds drawn with replacement; ``scan_weights`` (n_scans,)
    how often each test scan was drawn. ``streets``: the scans are that many streets'
    (contiguous, equally many each), so streets are drawn with replacement and then the
    scans inside each drawn street, as the fleet tool draws bags and their scans: scans of
    one street, a second apart, are not independent, and treating them so makes the
    interval too narrow (measured: 2.1 mIoU between two sets of 16 streets where the
    scan-level interval was about +-2.6). None: the scans are drawn as independent.
    """
    rng = np.random.default_rng([seed, 0xB007])
    sizes = None
    if streets is not None:
        if streets < 1 or n_scans % streets:
            raise ValueError(f"{n_scans} scans do not split into {streets} equal streets")
        sizes = np.full(streets, n_scans // streets)
    out = []
    for _ in range(reps):
        s = rng.integers(n_seeds, size=n_seeds)
        if sizes is None:
            w = np.bincount(rng.integers(n_scans, size=n_scans), minlength=n_scans)
        else:
            w = _draw_weights(rng, sizes, 1)[0]
        out.append(np.asarray(stat(s, w), dtype=np.float64))
    return np.stack(out)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap replicates (reps, ...), NaN-aware."""
    a = (1.0 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanquantile(samples, a, axis=0), np.nanquantile(samples, 1 - a, axis=0)


@dataclass
class PairedGain:
    """Distilled - baseline, paired by seed, over the same test scans.

    ``per_seed`` (S,) mIoU gains; ``mean`` their mean; ``ci`` its 95 % interval;
    ``class_mean`` / ``class_lo`` / ``class_hi`` (C,) the same per class IoU.
    """

    per_seed: np.ndarray
    mean: float
    ci: tuple[float, float]
    class_mean: np.ndarray
    class_lo: np.ndarray
    class_hi: np.ndarray


def paired_gain(
    cm_a: np.ndarray,
    cm_b: np.ndarray,
    reps: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    streets: int | None = None,
) -> PairedGain:
    """Gain of model A over model B from per-scan confusions (S seeds, N scans, K, K) each.

    Per seed, each model's IoU is computed on the confusion summed over all test scans (the
    benchmark's protocol: every point of every scan counted once), then A - B; the gain is
    the mean over seeds. The interval comes from :func:`hierarchical_bootstrap` (with
    ``streets``: streets, then their scans, are resampled).
    """
    cm_a, cm_b = np.asarray(cm_a), np.asarray(cm_b)
    if cm_a.shape != cm_b.shape or cm_a.ndim != 4:
        raise ValueError(
            f"paired confusions must share a (S, N, K, K) shape: {cm_a.shape} vs {cm_b.shape}"
        )
    S, N = cm_a.shape[:2]
    tot_a, tot_b = cm_a.sum(1), cm_b.sum(1)
    per_seed = miou_from_confusion(tot_a) - miou_from_confusion(tot_b)
    class_gain = iou_from_confusion(tot_a) - iou_from_confusion(tot_b)  # (S, C)

    def stat(s: np.ndarray, w: np.ndarray) -> np.ndarray:
        a = np.einsum("snkl,n->skl", cm_a[s], w)
        b = np.einsum("snkl,n->skl", cm_b[s], w)
        ia, ib = iou_from_confusion(a), iou_from_confusion(b)
        m = (miou_from_confusion(a) - miou_from_confusion(b)).mean()
        return np.concatenate([[m], nanmean(ia - ib)])

    boot = hierarchical_bootstrap(stat, S, N, reps, seed, streets)
    lo, hi = percentile_ci(boot, level)
    return PairedGain(
        per_seed=per_seed,
        mean=float(per_seed.mean()),
        ci=(float(lo[0]), float(hi[0])),
        class_mean=nanmean(class_gain),
        class_lo=lo[1:],
        class_hi=hi[1:],
    )


def _draw_weights(rng: np.random.Generator, sizes: np.ndarray, m: int) -> np.ndarray:
    """(m, F) how often each item is drawn in each of ``m`` replicates: groups drawn with
    replacement, then each drawn group's items drawn with replacement (floor(u * n); float32
    is exact enough below 2**22 items a group)."""
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    real = np.float32 if sizes.max() < 2**22 else np.float64
    w = np.empty((m, int(sizes.sum())))
    for r in range(m):
        g = rng.integers(len(sizes), size=len(sizes))
        n = sizes[g]
        pos = (rng.random(int(n.sum()), dtype=real) * np.repeat(n, n).astype(real))
        w[r] = np.bincount(np.repeat(starts[g], n) + pos.astype(np.int64), minlength=w.shape[1])
    return w


def nested_bootstrap_iou(
    counts: np.ndarray, group_sizes: np.ndarray, reps: int = 2000, seed: int = 0,
    chunk: int = 50,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Replicates of the pooled mIoU (reps,) and per-class IoU (reps, C) when groups (bags)
    are drawn with replacement and then, inside each drawn group, its items (scans).

    ``counts`` (F, C, 3): ``[tp, fp, fn]`` per item and class, items grouped contiguously;
    ``group_sizes`` (G,) items per group (sum F). A group drawn k times contributes k
    independent resamples of its items. The counts are integers summed in float64, so a
    replicate is exact and the result depends only on the inputs and ``seed``.
    """
    import torch

    counts = np.asarray(counts, dtype=np.float64)
    sizes = np.asarray(group_sizes, dtype=np.int64)
    n_items, n_cls = counts.shape[0], counts.shape[1]
    if n_items != int(sizes.sum()) or n_items == 0:
        raise ValueError(f"{n_items} items for groups of {sizes.sum()} items in all")
    # IoU needs tp and the union (tp + fp + fn) only, both sums over items: one (m, F) @
    # (F, 2C) product per chunk of replicates, on torch with one thread (numpy's OpenBLAS
    # threads made it 2-100x slower, and erratic, on a busy 2-core machine; integer sums in
    # float64 are exact in any order)
    x = torch.from_numpy(np.concatenate([counts[..., 0], counts.sum(-1)], axis=1))
    rng = np.random.default_rng([seed, 0xF1EE7])
    miou, iou = np.empty(reps), np.empty((reps, n_cls))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for lo in range(0, reps, chunk):
            hi = min(reps, lo + chunk)
            tot = (torch.from_numpy(_draw_weights(rng, sizes, hi - lo)) @ x).numpy()
            tp, union = tot[:, :n_cls], tot[:, n_cls:]
            present = union > 0
            with np.errstate(invalid="ignore", divide="ignore"):
                iou[lo:hi] = np.where(present, tp / np.where(present, union, 1.0), np.nan)
            miou[lo:hi] = np.where(present, iou[lo:hi], 0.0).sum(1) / np.maximum(
                present.sum(1), 1)
    finally:
        torch.set_num_threads(threads)
    return miou, iou
