"""What the held-out tools' tests share: a narrow untrained student checkpoint and an
independent mIoU oracle (predictions through the Segmenter, IoU by a per-class loop over
the pooled points, no confusion matrix)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from xmodelkd_ros.labels import CLASS_NAMES, NUM_CLASSES


def tiny_student(path: Path, init: int, road_bias: float | None = None,
                 recipe: dict | None = None) -> None:  # fmt: skip
    """A narrow untrained student; ``road_bias`` makes it call (almost) everything road;
    ``recipe`` is recorded as the recipe it trained with (its provenance)."""
    from xmodelkd_ros.nets import StudentCheckpoint, StudentNet, save_student, student_config
    from xmodelkd_ros.nets.inputs import default_grid

    cfg = student_config("small", enc_widths=(8, 16), dec_widths=(8,))
    torch.manual_seed(init)
    state = StudentNet(cfg).state_dict()
    if road_bias is not None:
        state["classifier.bias"][CLASS_NAMES.index("road")] = road_bias
    path.parent.mkdir(parents=True, exist_ok=True)
    prov = {} if recipe is None else {"recipe": recipe}
    save_student(StudentCheckpoint(cfg, default_grid(), state, provenance=prov), path)


def brute_miou(ck: Path, streets: list[int], split: str) -> float:
    """Independent oracle: predictions through the Segmenter, IoU by a per-class loop over
    the pooled points of the streets' scans (no confusion matrix)."""
    from xmodelkd_ros.evaluation.score import held_out_scans
    from xmodelkd_ros.runtime import Segmenter

    seg = Segmenter.from_checkpoint(ck, backend="torch", device="cpu")
    scans = held_out_scans(streets, 1, 10, 32, 0, (180, 320), split=split)
    gt = np.concatenate([s.labels for s in scans]).astype(np.int64)
    pred = np.concatenate([seg.segment(s.points).labels for s in scans]).astype(np.int64)
    pred, gt = pred[gt > 0], gt[gt > 0]
    ious = []
    for c in range(1, NUM_CLASSES + 1):
        union = np.sum((gt == c) | (pred == c))
        if union:
            ious.append(np.sum((gt == c) & (pred == c)) / union)
    return float(np.mean(ious))
