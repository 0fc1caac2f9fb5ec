"""The cross-sensor table's numbers and text: per rig and model the mIoU, its paired drop
against the training rig, whether distillation changes that drop, per class; as JSON and
markdown.

Why apart from the runner: the summary is a pure function of per-scan confusion matrices
(model -> rig -> (seeds, scans, K, K)), so its bookkeeping is testable on hand-made
confusions. The pairing: every rig renders the same streets and frames in the same order,
so scan ``n`` of one rig and scan ``n`` of the training rig see the same place; the
bootstrap (:func:`~xmodelkd_ros.evaluation.stats.hierarchical_bootstrap`) resamples seeds
and those scan indices together, for every rig and model at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from xmodelkd_ros.evaluation.report import ci_text, gain_doc, pct
from xmodelkd_ros.evaluation.stats import (
    hierarchical_bootstrap,
    iou_from_confusion,
    miou_from_confusion,
    nanmean,
    paired_gain,
    percentile_ci,
)
from xmodelkd_ros.labels import CLASS_NAMES

#: The pair whose robustness is compared (distilled drop - baseline drop), when both exist.
PAIR = ("distilled", "baseline")


def _weighted(cm: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.einsum("snkl,n->skl", cm[s], w)


def _interval(stat: Callable[[np.ndarray, np.ndarray], Any], S: int, N: int, reps: int,
              streets: int | None = None) -> list[float]:  # fmt: skip
    lo, hi = percentile_ci(hierarchical_bootstrap(stat, S, N, reps, streets=streets))
    return [float(lo), float(hi)]


def miou_doc(cm: np.ndarray, reps: int, streets: int | None = None) -> dict[str, Any]:
    """Mean mIoU over seeds of (S, N, K, K) confusions, its interval (``streets``: the scans
    are that many streets', resampled as such) and per-class IoU."""
    S, N = cm.shape[:2]
    per_seed = miou_from_confusion(cm.sum(1))
    ci = _interval(lambda s, w: miou_from_confusion(_weighted(cm, s, w)).mean(), S, N, reps,
                   streets)  # fmt: skip
    iou = nanmean(iou_from_confusion(cm.sum(1)))
    return {
        "mean": float(per_seed.mean()),
        "ci95": ci,
        "per_seed": [float(v) for v in per_seed],
        "per_class": {
            c: None if np.isnan(v) else float(v) for c, v in zip(CLASS_NAMES, iou, strict=True)
        },
    }


def drop_difference(a: np.ndarray, a_ref: np.ndarray, b: np.ndarray, b_ref: np.ndarray,
                    reps: int, streets: int | None = None) -> dict[str, Any]:  # fmt: skip
    """(A on the rig - A on the reference) - (B on the rig - B on the reference), mean over
    seeds, with its interval: > 0 means A loses less than B when the sensor changes."""
    S, N = a.shape[:2]

    def diff(s: np.ndarray, w: np.ndarray) -> float:
        m = [miou_from_confusion(_weighted(x, s, w)) for x in (a, a_ref, b, b_ref)]
        return float(((m[0] - m[1]) - (m[2] - m[3])).mean())

    full = np.arange(S), np.ones(N)
    return {"mean": diff(*full), "ci95": _interval(diff, S, N, reps, streets)}


def summarize(cms: dict[str, dict[str, np.ndarray]], reference: str, reps: int = 2000,
              streets: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Per rig: each model's mIoU and its drop against ``reference`` (paired), and the
    distilled - baseline difference of drops. mIoU and IoU are fractions (0..1)."""
    rigs = list(next(iter(cms.values())))
    out: dict[str, Any] = {}
    for rig in rigs:
        entry: dict[str, Any] = {"models": {}}
        for model, by_rig in cms.items():
            doc = miou_doc(by_rig[rig], reps, streets)
            if rig != reference:
                doc["drop"] = gain_doc(paired_gain(by_rig[rig], by_rig[reference], reps=reps,
                                                    streets=streets))  # fmt: skip
            entry["models"][model] = doc
        if rig != reference and all(m in cms for m in PAIR):
            a, b = (cms[m] for m in PAIR)
            entry["drop_difference"] = drop_difference(a[rig], a[reference], b[rig],
                                                       b[reference], reps, streets)  # fmt: skip
        out[rig] = entry
    return out


def rig_label(d: dict[str, Any]) -> str:
    """``32 beams, -30.7..+10.7 deg, 1.73 m`` of a rig's ``to_dict``."""
    lo, hi = d["vertical_fov_deg"]
    pitch = f", pitch {d['pitch_deg']:+g} deg" if d["pitch_deg"] else ""
    moved = f", moved to {d['aligned_to']}'s mount" if d.get("aligned_to") else ""
    return f"{d['beams']} beams, {lo:+.1f}..{hi:+.1f} deg, {d['height_m']:.2f} m{pitch}{moved}"


def table_markdown(doc: dict[str, Any]) -> list[str]:
    """The headline table: per rig, each model's mIoU and drop, and the drop difference."""
    models = doc["meta"]["models"]
    ref = doc["meta"]["reference"]
    head = "| rig | sensor |"
    for m in models:
        head += f" {m} mIoU | {m} drop vs {ref} [95 % CI] |"
    pair = all(m in models for m in PAIR)
    if pair:
        head += " distilled drop - baseline drop [95 % CI] |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for rig, entry in doc["rigs"].items():
        label = rig_label(doc["meta"]["rig_specs"][rig])
        row = f"| {rig}{' (trained)' if rig == ref else ''} | {label} |"
        for m in models:
            d = entry["models"][m]
            row += f" {pct(d['mean'])} | {ci_text(d['drop']) if 'drop' in d else '-'} |"
        if pair:
            row += f" {ci_text(entry['drop_difference']) if 'drop_difference' in entry else '-'} |"
        lines.append(row)
    return lines


def class_markdown(doc: dict[str, Any]) -> list[str]:
    """Per class and rig, each model's IoU drop against the reference (mean over seeds)."""
    models = doc["meta"]["models"]
    ref = doc["meta"]["reference"]
    rigs = [r for r in doc["rigs"] if r != ref]
    lines = [
        f"Per-class IoU drop against {ref} ({' / '.join(models)}), mean over seeds; "
        f"IoU on {ref} for reference:",
        "",
        f"| class | {ref} IoU | " + " | ".join(rigs) + " |",
        "|---" * (len(rigs) + 2) + "|",
    ]
    for c in CLASS_NAMES:
        base = " / ".join(pct(doc["rigs"][ref]["models"][m]["per_class"][c]) for m in models)
        cells = []
        for r in rigs:
            ms = doc["rigs"][r]["models"]
            cells.append(" / ".join(pct(ms[m]["drop"]["per_class"][c]["mean"], True)
                                    for m in models))  # fmt: skip
        lines.append(f"| {c} | {base} | " + " | ".join(cells) + " |")
    return lines
