"""Confusion matrix, per-class IoU and mIoU (SemanticKITTI convention).

IoU_c = TP / (TP + FP + FN) over all evaluated points; ignored points (label
IGNORE_INDEX) are left out entirely, so predicting anything on them costs nothing.
mIoU averages over the classes present in the ground truth or the predictions
(a class with an empty union has no defined IoU and is reported as NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from xmodelkd_ros.training.data.sample import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates ``matrix[gt, pred]`` counts over batches (int64, CPU)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        pred, target = pred.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
        keep = target != IGNORE_INDEX
        pred, target = pred[keep], target[keep]
        if target.numel() and (int(target.max()) >= self.num_classes or int(target.min()) < 0):
            raise ValueError(f"target class out of range 0..{self.num_classes - 1}")
        idx = target * self.num_classes + pred.clamp(0, self.num_classes - 1)
        self.matrix += torch.bincount(idx, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def merge(self, other: ConfusionMatrix) -> None:
        self.matrix += other.matrix

    def result(self, class_names: Sequence[str]) -> SegMetrics:
        return seg_metrics(self.matrix.numpy(), class_names)


@dataclass
class SegMetrics:
    miou: float
    iou: dict[str, float]  # NaN where the class never occurs
    accuracy: float
    confusion: np.ndarray

    def to_dict(self) -> dict:
        return {
            "miou": self.miou,
            "accuracy": self.accuracy,
            "iou": {k: (None if np.isnan(v) else v) for k, v in self.iou.items()},
            "confusion": self.confusion.tolist(),
        }


def seg_metrics(confusion: np.ndarray, class_names: Sequence[str]) -> SegMetrics:
    """IoU per class and mIoU over classes with a non-empty union."""
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    present = union > 0
    miou = float(np.mean(iou[present])) if present.any() else 0.0
    total = cm.sum()
    acc = float(tp.sum() / total) if total > 0 else 0.0
    return SegMetrics(
        miou=miou,
        iou={n: float(v) for n, v in zip(class_names, iou, strict=True)},
        accuracy=acc,
        confusion=np.asarray(confusion, dtype=np.int64),
    )
