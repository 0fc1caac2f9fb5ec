"""Scoring the node's labels against ground truth with the training metrics.

Why the training ``ConfusionMatrix``: the replay mIoU and the training mIoU must be one
definition. :func:`offline_confusion` runs the same ``Segmenter`` in this process on the
same inputs the node builds, the reference a replay through the node must reproduce.
Points the node leaves unlabeled (outside the model's voxel grid, non-finite) are not
scored, as in training evaluation; their count is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xmodelkd_ros.replay.bag import BagPlan, iter_scans


@dataclass
class ScoreCounts:
    """Points left out of the score and why (reported next to the mIoU)."""

    scored: int = 0
    unpredicted: int = 0  # ground truth labeled, node output unlabeled (outside the grid)
    mismatched_scans: int = 0  # output and ground truth differ in point count


def score_scan(cm: Any, gt: np.ndarray, pred: np.ndarray, counts: ScoreCounts) -> bool:
    """Add one scan to ``cm`` (a training ``ConfusionMatrix``); label ids -> class indices.

    Ground-truth unlabeled (0) points are ignored (IGNORE_INDEX); points the node left
    unlabeled are not scored but counted. False when the point counts differ.
    """
    import torch

    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        counts.mismatched_scans += 1
        return False
    labeled = gt != 0
    keep = labeled & (pred != 0)
    counts.unpredicted += int(labeled.sum() - keep.sum())
    counts.scored += int(keep.sum())
    cm.update(
        torch.from_numpy(pred[keep].astype(np.int64) - 1),
        torch.from_numpy(gt[keep].astype(np.int64) - 1),
    )
    return True


def offline_confusion(
    plan: BagPlan, gt: dict[int, np.ndarray], segmenter: Any,
    intensity_fields: Sequence[str] = ("intensity", "reflectivity", "i"),
    per_scan: dict[int, np.ndarray] | None = None,
) -> tuple[Any, ScoreCounts]:  # fmt: skip
    """Score the bag's scans with ``segmenter`` in this process (no ROS): the reference a
    replay through the node must reproduce exactly (same inputs as the node builds).

    ``per_scan``, when given, receives each scored scan's own confusion matrix by stamp
    (their sum is the returned matrix), for spreads over scans.
    """
    from xmodelkd_ros.msgs import decode_cloud
    from xmodelkd_ros.training.metrics import ConfusionMatrix

    cm = ConfusionMatrix(len(segmenter.class_names or class_names()))
    counts = ScoreCounts()
    for stamp, msg in iter_scans(plan):
        if stamp not in gt:
            continue
        cloud = decode_cloud(msg, intensity_field=list(intensity_fields))
        pts = np.empty((cloud.num_valid, 4), dtype=np.float32)
        pts[:, :3] = cloud.xyz
        pts[:, 3] = cloud.intensity
        res = segmenter.segment(pts)
        labels = np.zeros(cloud.num_points, np.uint16)
        labels[cloud.valid] = res.labels
        before = cm.matrix.clone() if per_scan is not None else None
        if score_scan(cm, gt[stamp], labels, counts) and before is not None:
            per_scan[stamp] = (cm.matrix - before).numpy()
    return cm, counts


def class_names() -> list[str]:
    from xmodelkd_ros.labels import CLASS_NAMES

    return list(CLASS_NAMES)
