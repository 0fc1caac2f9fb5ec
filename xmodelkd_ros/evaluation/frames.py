"""Per-frame records: one JSON object per scan, the unit every evaluation summary is built from.

Why records first: a summary (mIoU, latency percentiles, drop rate) hides which scans went
wrong; a release gate that fails must point at them, and a fleet of bags is merged by
adding records, never by averaging summaries. So the replay and the offline evaluation
write ``frames.jsonl`` (one object per scan, ``schema/frames.schema.json``) and compute
their summaries from these records only.

Scoring is the replay's and training's rule (:mod:`xmodelkd_ros.replay.scoring`): points
whose ground truth is unlabeled (0) are ignored; labeled points the model left unlabeled
(outside its voxel grid, non-finite) are not scored but counted as ``unscored_points``.
Per class, a record keeps ``[tp, fp, fn]`` of the scored points (classes with all three
zero are left out); IoU = tp / (tp + fp + fn), and a frame's ``miou`` averages the classes
it holds, exactly as :func:`xmodelkd_ros.training.metrics.seg_metrics` does over a run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FRAMES_FILE = "frames.jsonl"


@dataclass
class FrameScore:
    """One scan scored: its (C, C) confusion of class indices (row = truth) and counts."""

    confusion: np.ndarray
    labeled: int  # ground-truth labeled points (label id != 0)
    scored: int  # labeled points the model labeled too (the confusion's total)

    @property
    def unscored(self) -> int:
        return self.labeled - self.scored


def score_frame(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> FrameScore | None:
    """Score label ids ``pred`` against ``gt`` (both (N,), 0 = unlabeled); None when the
    point counts differ (the scan cannot be matched point by point)."""
    gt = np.asarray(gt).reshape(-1)
    pred = np.asarray(pred).reshape(-1)
    if gt.shape != pred.shape:
        return None
    labeled = gt != 0
    keep = labeled & (pred != 0)
    g = gt[keep].astype(np.int64) - 1
    p = np.clip(pred[keep].astype(np.int64) - 1, 0, num_classes - 1)
    if g.size and int(g.max()) >= num_classes:
        raise ValueError(f"ground-truth label id {int(g.max()) + 1} is above the model's "
                         f"{num_classes} classes")  # fmt: skip
    cm = np.bincount(g * num_classes + p, minlength=num_classes**2)
    return FrameScore(cm.reshape(num_classes, num_classes), int(labeled.sum()), int(keep.sum()))


def class_counts(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, list[int]]:
    """``{class: [tp, fp, fn]}`` of a confusion matrix, for the classes with any count."""
    cm = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    return {
        name: [int(tp[c]), int(fp[c]), int(fn[c])]
        for c, name in enumerate(class_names)
        if tp[c] or fp[c] or fn[c]
    }


def frame_miou(classes: dict[str, list[int]]) -> float | None:
    """Mean IoU over the classes a frame holds; None when it holds none."""
    ious = [tp / (tp + fp + fn) for tp, fp, fn in classes.values() if tp + fp + fn > 0]
    return float(np.mean(ious)) if ious else None


def frame_record(
    source: str, bag: str, index: int, stamp: int, points: int, score: FrameScore | None,
    class_names: Sequence[str], has_truth: bool, **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    """One record. ``has_truth`` with ``score`` None: ground truth exists but could not be
    matched (a point-count mismatch, or no output for the scan)."""
    rec: dict[str, Any] = {"source": source, "bag": bag, "index": int(index),
                           "stamp": int(stamp), "points": int(points)}  # fmt: skip
    if score is not None:
        classes = class_counts(score.confusion, class_names)
        rec.update(labeled_points=score.labeled, scored_points=score.scored,
                   unscored_points=score.unscored, classes=classes,
                   miou=frame_miou(classes))  # fmt: skip
    else:
        rec.update(labeled_points=None, scored_points=0, unscored_points=None, classes=None,
                   miou=None)  # fmt: skip
    rec["has_truth"] = bool(has_truth)
    rec.update(extra)
    return rec


def write_frames(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Write records as JSON lines, atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        for rec in records:
            fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
    os.replace(tmp, path)
    return path


def read_frames(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``frames.jsonl`` file, in file order; a line that is not JSON is a
    ``ValueError`` naming the file and line."""
    with open(path) as fh:
        lines = [ln for ln in fh.read().splitlines() if ln.strip()]
    try:  # one parse of the whole file: a third faster than a parse per line
        return json.loads("[" + ",".join(lines) + "]")
    except json.JSONDecodeError:
        pass
    for k, line in enumerate(lines, 1):
        try:
            json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: record {k} is not JSON ({exc.msg})") from None
    raise ValueError(f"{path}: records are not JSON lines")


def class_totals(
    records: Iterable[dict[str, Any]], class_names: Sequence[str]
) -> np.ndarray:  # fmt: skip
    """(C, 3) int64 ``[tp, fp, fn]`` per class summed over the records."""
    index = {n: i for i, n in enumerate(class_names)}
    tot = np.zeros((len(class_names), 3), dtype=np.int64)
    for rec in records:
        for name, c in (rec.get("classes") or {}).items():
            tot[index[name]] += c
    return tot


def iou_from_totals(tot: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-class IoU (NaN where a class has an empty union) and the mIoU over the classes
    with one, from ``[..., C, 3]`` counts; the same arithmetic as ``seg_metrics``."""
    tot = np.asarray(tot, dtype=np.float64)
    tp, fp, fn = tot[..., 0], tot[..., 1], tot[..., 2]
    union = (tp + fp) + (tp + fn) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)
    present = union > 0
    miou = float(np.mean(iou[present])) if present.any() else 0.0
    return iou, miou


def summarize_frames(
    records: Sequence[dict[str, Any]], class_names: Sequence[str],
    totals: np.ndarray | None = None,
) -> dict[str, Any]:  # fmt: skip
    """What every report states, from the records alone: scans answered / dropped / late,
    points labeled / scored / unscored, and (where any scan was scored) IoU per class,
    mIoU and accuracy over all scored points. ``totals``: the records' :func:`class_totals`
    when the caller has them already."""
    n = len(records)
    answered = sum(1 for r in records if r.get("answered", True))
    dropped = sum(1 for r in records if r.get("dropped", False))
    scored = [r for r in records if r["classes"] is not None]
    labeled = sum(r["labeled_points"] for r in scored)
    points_scored = sum(r["scored_points"] for r in scored)
    out: dict[str, Any] = {
        "frames": n,
        "answered": answered,
        "answered_fraction": answered / n if n else 0.0,
        "dropped": dropped,
        "dropped_fraction": dropped / n if n else 0.0,
        "late": sum(1 for r in records if r.get("late")),
        "scored_frames": len(scored),
        "labeled_points": labeled,
        "scored_points": points_scored,
        "unscored_points": labeled - points_scored,
        "unscored_fraction": (labeled - points_scored) / labeled if labeled else 0.0,
        "metrics": None,
    }
    if scored:
        tot = class_totals(scored, class_names) if totals is None else totals
        iou, miou = iou_from_totals(tot)
        out["metrics"] = {
            "miou": miou,
            "accuracy": float(tot[:, 0].sum() / points_scored) if points_scored else 0.0,
            "iou": {c: None if np.isnan(v) else float(v)
                    for c, v in zip(class_names, iou, strict=True)},
            "tp_fp_fn": {c: [int(x) for x in t] for c, t in zip(class_names, tot, strict=True)},
        }
    return out


def latency_values(records: Iterable[dict[str, Any]], measure: str) -> list[float]:
    """The ``latency_ms[measure]`` of every answered record that has one (replay)."""
    out = []
    for r in records:
        lat = r.get("latency_ms")
        if lat and lat.get(measure) is not None:
            out.append(float(lat[measure]))
    return out
