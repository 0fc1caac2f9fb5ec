"""The merged fleet report: every bag's per-frame records in, one document out.

Why from records only: the merge must give the same document whichever engine ran the
bags, in whatever order they finished, and for a run resumed after a kill. So it reads the
per-bag ``frames.jsonl`` files in bag-name order and computes everything from them: the
pooled mIoU and per-class IoU (every scored point of every bag counted once), a 95 %
interval from a bootstrap over bags and then scans within each bag
(:func:`~xmodelkd_ros.evaluation.stats.nested_bootstrap_iou`, seeded), the per-bag and
per-class tables and the worst frames. Nothing in it depends on timing or on the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xmodelkd_ros.evaluation.frames import iou_from_totals, summarize_frames
from xmodelkd_ros.evaluation.stats import nested_bootstrap_iou, percentile_ci

WORST_FRAMES = 20


def _num(v: float) -> float | None:
    return None if v is None or np.isnan(v) else float(v)


def counts_array(records: Sequence[dict[str, Any]], class_names: Sequence[str]) -> np.ndarray:
    """(F, C, 3) int64 ``[tp, fp, fn]`` of each record (records without classes: zeros)."""
    index = {n: i for i, n in enumerate(class_names)}
    rows, cols, vals = [], [], []
    for f, rec in enumerate(records):
        for name, c in (rec.get("classes") or {}).items():
            rows.append(f)
            cols.append(index[name])
            vals.append(c)
    out = np.zeros((len(records), len(class_names), 3), dtype=np.int64)
    if rows:
        out[np.asarray(rows), np.asarray(cols)] = np.asarray(vals, dtype=np.int64)
    return out


def _bag_row(bag: dict[str, Any], records: list[dict[str, Any]], names: Sequence[str],
             totals: np.ndarray) -> dict[str, Any]:  # fmt: skip
    row = {k: bag[k] for k in ("bag", "path", "kind", "status")}
    if bag["status"] != "ok":
        row["reason"] = bag["reason"]
        return row
    s = summarize_frames(records, names, totals)
    row.update(frames=s["frames"], scored_frames=s["scored_frames"],
               scored_points=s["scored_points"], unscored_fraction=s["unscored_fraction"],
               miou=s["metrics"]["miou"] if s["metrics"] else None)  # fmt: skip
    return row


def _worst(records: Sequence[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The ``n`` scored frames of lowest mIoU (ties: bag order, then scan order)."""
    scored = [(r["miou"], k) for k, r in enumerate(records) if r.get("miou") is not None]
    scored.sort()
    keep = ("bag", "index", "stamp", "miou", "scored_points", "unscored_points")
    return [{f: records[k][f] for f in keep} for _m, k in scored[:n]]


def _overall(counts: np.ndarray, scored_points: int, sizes: list[int], names: Sequence[str],
             reps: int, seed: int) -> dict[str, Any] | None:  # fmt: skip
    """Pooled mIoU / IoU per class with their bootstrap intervals (None: nothing scored);
    ``counts`` (F, C, 3) of the scored records, grouped by bag (``sizes``)."""
    if not len(counts):
        return None
    tot = counts.sum(0)
    iou, miou = iou_from_totals(tot)
    boot_miou, boot_iou = nested_bootstrap_iou(counts, np.asarray(sizes), reps, seed)
    lo, hi = percentile_ci(boot_miou)
    clo, chi = percentile_ci(boot_iou)
    return {
        "miou": miou,
        "miou_ci95": [float(lo), float(hi)],
        "accuracy": float(tot[:, 0].sum() / max(1, scored_points)),
        "per_class": [
            {"class": c, "tp": int(t[0]), "fp": int(t[1]), "fn": int(t[2]),
             "iou": _num(iou[k]), "ci95": [_num(clo[k]), _num(chi[k])]}
            for k, (c, t) in enumerate(zip(names, tot, strict=True))
        ],
    }


def merge(bags: Sequence[dict[str, Any]], records_by_bag: dict[str, list[dict[str, Any]]],
          class_names: Sequence[str], meta: dict[str, Any], reps: int = 2000,
          seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """The merged document. ``bags``: one entry per bag (``bag``, ``path``, ``kind``,
    ``status`` "ok" or "failed", ``reason``); ``records_by_bag``: the records of each
    bag that finished; ``meta``: what the run was (model, options), copied in."""
    bags = sorted(bags, key=lambda b: b["bag"])
    all_records: list[dict[str, Any]] = []
    scored: list[dict[str, Any]] = []
    sizes: list[int] = []
    for bag in bags:
        recs = records_by_bag.get(bag["bag"], []) if bag["status"] == "ok" else []
        all_records += recs
        mine = [r for r in recs if r["classes"] is not None]
        scored += mine
        sizes.append(len(mine))
    counts = counts_array(scored, class_names)  # scored records only, in bag order
    ends = np.cumsum(sizes)
    rows = [_bag_row(bag, records_by_bag.get(bag["bag"], []), class_names,
                     counts[end - n:end].sum(0))
            for bag, n, end in zip(bags, sizes, ends, strict=True)]  # fmt: skip
    failed = [r for r in rows if r["status"] != "ok"]
    summary = summarize_frames(all_records, class_names, counts.sum(0))
    summary.pop("metrics")
    return {
        "meta": dict(meta, classes=list(class_names)),
        "bags": {"total": len(bags), "evaluated": len(bags) - len(failed),
                 "failed": len(failed), "with_ground_truth": sum(1 for n in sizes if n)},
        "frames": summary,
        "overall": _overall(counts, summary["scored_points"], [n for n in sizes if n],
                            class_names, reps, seed),
        "bootstrap": {"replicates": reps, "seed": seed,
                      "levels": "bags with replacement, then scans within each drawn bag"},
        "per_bag": rows,
        "worst_frames": _worst(all_records, WORST_FRAMES),
        "failed_bags": [{"bag": r["bag"], "reason": r["reason"]} for r in failed],
    }


def measured(doc: dict[str, Any]) -> dict[str, Any]:
    """What criteria are checked against (:mod:`xmodelkd_ros.evaluation.criteria`)."""
    ov, fr = doc["overall"], doc["frames"]
    return {
        "miou": ov["miou"] if ov else None,
        "class_iou": {c["class"]: c["iou"] for c in ov["per_class"]} if ov else {},
        "answered_fraction": fr["answered_fraction"],
        "unscored_fraction": fr["unscored_fraction"],
        "failed_bags": doc["bags"]["failed"],
    }
