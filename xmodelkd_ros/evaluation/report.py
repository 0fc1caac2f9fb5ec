"""The benchmark's outputs: ``benchmark.json`` (every figure), ``benchmark.md`` (the tables
docs/results.md quotes) and ``benchmark.png`` (per-class gain with its interval, gain per seed).

Kept apart from the runner so the summary is a pure function of the per-seed confusion
matrices: the tests check the bookkeeping on hand-made confusions without training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from xmodelkd_ros.evaluation.stats import (
    iou_from_confusion,
    miou_from_confusion,
    nanmean,
    paired_gain,
)
from xmodelkd_ros.labels import CLASS_NAMES

MODELS = ("teacher", "distilled", "baseline")


def _num(v: Any) -> float | None:
    v = float(v)
    return None if np.isnan(v) else v


def gain_doc(g: Any) -> dict[str, Any]:
    """A :class:`~xmodelkd_ros.evaluation.stats.PairedGain` as JSON (a class absent from
    the scans: null, never NaN, which is not JSON)."""
    return {
        "mean": g.mean,
        "ci95": list(g.ci),
        "per_seed": [float(x) for x in g.per_seed],
        "per_class": {
            c: {"mean": _num(m), "ci95": [_num(lo), _num(hi)]}
            for c, m, lo, hi in zip(CLASS_NAMES, g.class_mean, g.class_lo, g.class_hi, strict=True)
        },
    }


def summarize(
    results: dict[float, list[dict[str, Any]]],
    counts: np.ndarray,
    meta: dict[str, Any],
    reps: int = 2000,
    streets: int | None = None,
) -> dict[str, Any]:
    """The benchmark document from per-(fraction, seed) results.

    ``results[fraction]``: one dict per seed with ``seed``, ``confusion`` (model -> (N, K, K)
    per-scan confusions), ``validation_miou``, ``train_s``, ``score_s``. ``counts`` (K,)
    labeled test points per label id. mIoU and IoU are fractions (0..1) in the JSON.
    ``streets``: how many test streets the scans are (resampled as such in the intervals).
    """
    min_pts = int(meta.get("min_class_points", 0))
    doc: dict[str, Any] = {
        "meta": meta,
        "test_class_points": {c: int(n) for c, n in zip(CLASS_NAMES, counts[1:], strict=True)},
        "classes_below_minimum": [
            c for c, n in zip(CLASS_NAMES, counts[1:], strict=True) if n < min_pts
        ],
        "regimes": {},
    }
    for fraction, seeds in results.items():
        cms = {m: np.stack([np.asarray(r["confusion"][m]) for r in seeds]) for m in MODELS}
        totals = {m: cms[m].sum(1) for m in MODELS}  # (S, K, K): all test scans per seed
        miou = {m: miou_from_confusion(totals[m]) for m in MODELS}
        iou = {m: iou_from_confusion(totals[m]) for m in MODELS}
        gain = paired_gain(cms["distilled"], cms["baseline"], reps=reps, streets=streets)
        teacher_gain = paired_gain(cms["teacher"], cms["baseline"], reps=reps, streets=streets)
        doc["regimes"][f"{fraction:g}"] = {
            "label_fraction": fraction,
            "test_scans": int(cms["teacher"].shape[1]),
            "per_seed": [
                {
                    "seed": r["seed"],
                    "miou": {m: float(miou[m][i]) for m in MODELS},
                    "gain": float(gain.per_seed[i]),
                    "validation_miou": r.get("validation_miou", {}),
                    "train_s": r["train_s"],
                    "score_s": r["score_s"],
                }
                for i, r in enumerate(seeds)
            ],
            "miou": {m: float(miou[m].mean()) for m in MODELS},
            "gain": gain_doc(gain),
            "teacher_gain": gain_doc(teacher_gain),
            "iou": {
                m: {c: _num(v) for c, v in zip(CLASS_NAMES, nanmean(iou[m]), strict=True)}
                for m in MODELS
            },
        }
    return doc


def _finite(v: Any) -> bool:
    return v is not None and bool(np.isfinite(v))


def pct(v: float | None, sign: bool = False) -> str:
    """A fraction as mIoU points with one decimal (``sign``: always signed); ``n/a`` for a
    missing or non-finite value. Every evaluation report prints numbers through this and
    :func:`ci_text`, so one figure reads the same in every table."""
    if not _finite(v):
        return "n/a"
    return f"{100 * v:+.1f}" if sign else f"{100 * v:.1f}"


def interval_text(ci: Any, sign: bool = False) -> str:
    """``[lo, hi]`` in mIoU points of a pair of fractions; ``n/a`` when a bound is missing."""
    if not ci or len(ci) != 2 or not all(_finite(b) for b in ci):
        return "n/a"
    return f"[{pct(ci[0], sign)}, {pct(ci[1], sign)}]"


def ci_text(doc: dict[str, Any]) -> str:
    """``+1.2 [-0.3, +2.8]`` of a ``{"mean", "ci95"}`` gain doc in fractions; ``n/a`` when
    the mean or a bound is missing (e.g. a class absent from the scans)."""
    interval = interval_text(doc.get("ci95"), True)
    if not _finite(doc.get("mean")) or interval == "n/a":
        return "n/a"
    return f"{pct(doc['mean'], True)} {interval}"


def to_markdown(doc: dict[str, Any]) -> str:
    m = doc["meta"]
    lines = [
        "# Held-out benchmark",
        "",
        f"- command: `{m['command']}`",
        f"- commit: `{m['commit']}`{' (with uncommitted changes)' if m.get('dirty') else ''}",
        f"- recipe: {m['recipe']} {' '.join(m['set'])}".rstrip(),
        f"- training streets {m.get('train_seeds')}, validation streets {m.get('validation_seeds')}"
        f" (schedule and any selection), test streets {m['test_seeds']} x {m['test_scans']} "
        f"scans (reserved range, never trained or selected on), {m['beams']} beams, "
        f"{m['cameras']} cameras",
        f"- every labeled test point scored (out-of-grid points count as wrong); students "
        f"through the node's Segmenter; 95 % CI: bootstrap over seeds, test streets and "
        f"their scans ({m['bootstrap_reps']} replicates); mIoU and IoU in percent",
        f"- wall time: {doc['wall_s']['train_and_score'] / 60:.0f} min of training and scoring",
    ]
    if "epochs" in m:
        e = m["epochs"]
        lines.append(
            f"- epochs: teacher {e['teacher']}, distilled {e['distilled']} (behind its weights: "
            f"{e['distilled_lineage']}), LiDAR-only baseline and self-training {e['controls']}"
        )
    lines.append("")
    for key, r in doc["regimes"].items():
        g, tg = r["gain"], r["teacher_gain"]
        lines += [
            f"## {float(key) * 100:g} % of the training scans labeled",
            "",
            "| seed | teacher | distilled | baseline | distilled - baseline | "
            "validation (t / d / b) | minutes |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in r["per_seed"]:
            v = s["validation_miou"]
            val = " / ".join(pct(v.get(k)) for k in MODELS)
            mins = (s["train_s"] + s["score_s"]) / 60
            lines.append(
                f"| {s['seed']} | {pct(s['miou']['teacher'])} | {pct(s['miou']['distilled'])} "
                f"| {pct(s['miou']['baseline'])} | {pct(s['gain'], True)} | {val} "
                f"| {mins:.0f} |"
            )
        mi = r["miou"]
        lines += [
            f"| **mean** | **{pct(mi['teacher'])}** | **{pct(mi['distilled'])}** | "
            f"**{pct(mi['baseline'])}** | **{pct(g['mean'], True)}** | | |",
            "",
            f"**Distilled - baseline: {pct(g['mean'], True)} mIoU, 95 % CI "
            f"[{pct(g['ci95'][0], True)}, {pct(g['ci95'][1], True)}]** "
            f"(teacher - baseline: {pct(tg['mean'], True)} "
            f"[{pct(tg['ci95'][0], True)}, {pct(tg['ci95'][1], True)}]).",
            "",
            "| class | test points | teacher | distilled | baseline | distilled - baseline "
            "(95 % CI) |",
            "|---|---|---|---|---|---|",
        ]
        for c in CLASS_NAMES:
            pc = g["per_class"][c]
            lines.append(
                f"| {c} | {doc['test_class_points'][c]} | {pct(r['iou']['teacher'][c])} | "
                f"{pct(r['iou']['distilled'][c])} | {pct(r['iou']['baseline'][c])} | "
                f"{pct(pc['mean'], True)} [{pct(pc['ci95'][0], True)}, "
                f"{pct(pc['ci95'][1], True)}] |"
            )
        lines.append("")
    low = doc["classes_below_minimum"]
    lines.append(
        f"Every class has >= {m['min_class_points']} labeled test points."
        if not low
        else f"Below the stated minimum of {m['min_class_points']} test points: {', '.join(low)}."
    )
    lines += ["", "![per-class gain and gain per seed](benchmark.png)", ""]
    return "\n".join(lines)


def gain_png(doc: dict[str, Any], path: Path) -> None:
    """Per regime: per-class gain (bar) with its 95 % CI (whisker), and the gain per seed."""
    font = ImageFont.load_default()
    regimes = list(doc["regimes"].items())
    row_h, left, width, panel_gap = 16, 110, 560, 40
    n = len(CLASS_NAMES) + 2
    panel_h = 30 + n * row_h
    img = Image.new("RGB", (left + width + 20, panel_gap + len(regimes) * (panel_h + panel_gap)),
                    "white")  # fmt: skip
    d = ImageDraw.Draw(img)
    vals = [abs(v) for _, r in regimes for pc in r["gain"]["per_class"].values()
            for v in pc["ci95"] if v is not None] + [0.05]  # fmt: skip
    scale = (width / 2 - 10) / max(vals)
    for k, (key, r) in enumerate(regimes):
        y0 = panel_gap // 2 + k * (panel_h + panel_gap)
        x0 = left + width // 2
        g = r["gain"]
        title = (
            f"{float(key) * 100:g} % labels: distilled - baseline IoU (mean "
            f"{pct(g['mean'], True)}, CI {interval_text(g['ci95'], True)});"
            " whiskers: 95 % CI"
        )
        d.text((10, y0), title, fill="black", font=font)
        d.line([(x0, y0 + 20), (x0, y0 + panel_h)], fill="gray")
        step = 0.05 if max(vals) < 0.25 else 0.2  # axis ticks every 5 or 20 IoU points
        for t in np.arange(-np.floor(max(vals) / step), np.floor(max(vals) / step) + 1):
            xt = x0 + t * step * scale
            d.line([(xt, y0 + panel_h - 4), (xt, y0 + panel_h)], fill="gray")
            d.text((xt - 8, y0 + panel_h + 1), f"{100 * t * step:+.0f}", fill="gray", font=font)
        rows = [(c, g["per_class"][c]) for c in CLASS_NAMES]
        rows.append(("mIoU", {"mean": g["mean"], "ci95": g["ci95"]}))
        for i, (name, pc) in enumerate(rows):
            y = y0 + 24 + i * row_h
            d.text((10, y), name, fill="black", font=font)
            if pc["mean"] is None:
                continue
            x = x0 + pc["mean"] * scale
            color = (40, 140, 60) if pc["mean"] >= 0 else (200, 50, 50)
            d.rectangle([min(x0, x), y + 3, max(x0, x), y + row_h - 4], fill=color)
            lo, hi = pc["ci95"]
            if lo is not None and hi is not None:
                yc = y + row_h // 2
                d.line([(x0 + lo * scale, yc), (x0 + hi * scale, yc)], fill="black", width=1)
        y = y0 + 24 + len(rows) * row_h
        d.text((10, y), "per seed", fill="black", font=font)
        for s in r["per_seed"]:
            x = x0 + s["gain"] * scale
            d.ellipse([x - 3, y + 2, x + 3, y + 8], outline="black", fill=(60, 90, 200))
    img.save(path)


def write_outputs(out: Path, doc: dict[str, Any]) -> None:
    """``benchmark.json``, ``benchmark.md`` and ``benchmark.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(doc, indent=1))
    (out / "benchmark.md").write_text(to_markdown(doc))
    gain_png(doc, out / "benchmark.png")
