"""The replay report: outputs matched to published scans, scored, latency and drops.

Why apart from the player: the report is a pure function of what was published and what
came back (plus the node's last ``/diagnostics``), so it is computed the same for both
modes and written as ``report.json`` (the summary), ``frames.jsonl`` (the per-frame
records it is computed from), ``report.md`` and ``confusion.png``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xmodelkd_ros.evaluation import criteria as crit
from xmodelkd_ros.evaluation.frames import (
    FRAMES_FILE,
    latency_values,
    summarize_frames,
    write_frames,
)
from xmodelkd_ros.replay.bag import BagPlan
from xmodelkd_ros.replay.frames import replay_records
from xmodelkd_ros.replay.options import ReplayOptions
from xmodelkd_ros.replay.player import PlayResult
from xmodelkd_ros.replay.scoring import class_names


def _percentiles(values_ms: Sequence[float]) -> dict[str, float | None]:
    if not values_ms:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    a = np.asarray(values_ms, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()),
            "max": float(a.max())}  # fmt: skip


def model_class_names(model: Path) -> list[str]:
    """The exported model's class names (``model.json``), else the training classes."""
    names = class_names()
    try:
        from xmodelkd_ros.runtime import ModelMetadata

        if model.is_dir():
            names = list(ModelMetadata.read(model).class_names)
    except Exception:
        pass
    return names


def _metrics(summary: dict[str, Any], confusion: np.ndarray, names: list[str]
             ) -> dict[str, Any]:  # fmt: skip
    """The report's ``metrics`` from the records' summary, with the summed confusion (the
    one figure records do not hold, for ``confusion.png``); all zero when nothing scored."""
    m = summary["metrics"] or {"miou": 0.0, "accuracy": 0.0, "iou": dict.fromkeys(names)}
    return {"miou": m["miou"], "accuracy": m["accuracy"], "iou": m["iou"],
            "confusion": confusion.tolist()}  # fmt: skip


def measured(rep: dict[str, Any]) -> dict[str, Any]:
    """What the criteria are checked against (:mod:`xmodelkd_ros.evaluation.criteria`)."""
    m, sc, pts = rep.get("metrics"), rep["scans"], rep["points"]
    unscored = pts["unpredicted"]
    return {
        "miou": m["miou"] if m else None,
        "class_iou": m["iou"] if m else {},
        "p95_latency_ms": rep["latency_ms"]["stamp_to_output"]["p95"],
        "dropped_fraction": sc["dropped_fraction"],
        "answered_fraction": sc["received"] / sc["published"] if sc["published"] else 0.0,
        "unscored_fraction": unscored / (unscored + pts["scored"]) if unscored else 0.0,
    }


def _add_sustainable_rate(rep: dict[str, Any]) -> None:
    """Max-throughput figures: the sustained output rate, what the node's own processing
    (its total p50) allows, and how much of that the whole path (player, DDS both ways,
    node) sustains."""
    tp = rep["throughput"]
    tp["sustainable_rate_hz"] = tp["output_rate_hz"]
    node_p50 = rep["node_diagnostics"]["stages_ms"].get("total", {}).get("p50")
    tp["node_allows_hz"] = 1000.0 / node_p50 if node_p50 else None
    tp["sustainable_over_node"] = (tp["sustainable_rate_hz"] / tp["node_allows_hz"]
                                   if tp["sustainable_rate_hz"] and tp["node_allows_hz"]
                                   else None)  # fmt: skip


def build_report(
    opts: ReplayOptions, plan: BagPlan, model: Path, gt: dict[int, np.ndarray],
    play: PlayResult, outputs: dict[int, tuple[int, np.ndarray]], diag: dict[str, str],
    duplicates: int, startup_s: float,
) -> dict[str, Any]:  # fmt: skip
    """Match outputs to published scans by stamp into per-frame records, and summarise
    them (scores, latency, drops). The records are ``rep["frames"]`` (``frames.jsonl``)."""
    order, published = play.order, play.published
    stamps = np.asarray(order, dtype=np.int64)
    period_ms = float(np.median(np.diff(stamps)) / 1e6) if len(stamps) > 1 else 100.0
    # late: the output came after the next scan was due (one scan period of wall time)
    late_ms = opts.late_ms if opts.late_ms is not None else (
        period_ms if opts.max_throughput else period_ms / opts.rate)
    names = model_class_names(model)
    records, confusion = replay_records(opts, play, outputs, gt, names, late_ms)
    summary = summarize_frames(records, names)
    dropped = [r["stamp"] for r in records if r["dropped"]]
    unexpected = [s for s in outputs if s not in published]
    e2e_ms = latency_values(records, "stamp_to_output")
    pub_ms = latency_values(records, "publish_to_output")
    n = len(order)
    rep: dict[str, Any] = {
        "bag": str(plan.path),
        "model": str(model),
        "backend": diag.get("backend", opts.backend),
        "mode": "max-throughput" if opts.max_throughput else f"rate {opts.rate:g}",
        "lidar_topic": plan.lidar_topic,
        "ground_truth": (str(opts.labels_dir) if opts.labels_dir else plan.labels_topic)
        if gt else None,
        "cameras": plan.cameras,
        "node_startup_s": round(startup_s, 2),
        "scans": {
            "in_bag": plan.num_scans,
            "published": n,
            "received": summary["answered"],
            "dropped": summary["dropped"],
            "dropped_fraction": summary["dropped_fraction"],
            "late": summary["late"],
            "late_threshold_ms": late_ms,
            "node_dropped_stale": _int_or_none(diag.get("scans_dropped_stale")),
            "node_received": _int_or_none(diag.get("scans_received")),
            "duplicates": duplicates,
            "unexpected_stamps": len(unexpected),
            "scored": summary["scored_frames"],
            "mismatched_point_count": sum(1 for r in records if "problem" in r),
            "without_ground_truth": sum(1 for r in records if r["answered"]
                                        and not r["has_truth"]) if gt else None,
            "dropped_stamps": dropped[:50],
        },
        "throughput": {
            "bag_scan_rate_hz": 1000.0 / period_ms if period_ms > 0 else None,
            "wall_s": play.wall_total_s,
            "output_rate_hz": (summary["answered"] / play.wall_total_s)
            if play.wall_total_s > 0 else None,
        },
        "latency_ms": {
            "stamp_to_output": _percentiles(e2e_ms),
            "publish_to_output": _percentiles(pub_ms),
        },
        "node_diagnostics": _node_stages(diag),
        "points": {"scored": summary["scored_points"], "unpredicted": summary["unscored_points"]},
        "metrics": _metrics(summary, confusion, names) if gt else None,
    }
    if opts.max_throughput:
        _add_sustainable_rate(rep)
    if opts.criteria is not None:
        rep["criteria"] = crit.check(opts.criteria, measured(rep))
    rep["frames"] = records
    return rep


def _int_or_none(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _node_stages(diag: dict[str, str]) -> dict[str, Any]:
    """The node's own figures from its last ``/diagnostics`` status."""
    stages: dict[str, dict[str, float]] = {}
    other: dict[str, str] = {}
    for k, v in diag.items():
        for q in ("p50", "p95"):
            suffix = f"_{q}_ms"
            if k.endswith(suffix):
                with contextlib.suppress(ValueError):
                    stages.setdefault(k[: -len(suffix)], {})[q] = float(v)
                break
        else:
            other[k] = v
    return {"stages_ms": stages, "status": other}


def _fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def _dds_line(dds: dict[str, Any] | None) -> str:
    if not dds:
        return "n/a"
    if dds.get("user_config"):
        return f"your configuration ({dds['user_config']})"
    return f"Fast DDS profile {dds['fastdds_profile']}" if dds.get("fastdds_profile") else (
        "Fast DDS defaults (no profile)")


def write_replay_report(out: Path, rep: dict[str, Any]) -> None:
    """``report.json`` (the summary), ``frames.jsonl`` (the records it summarises),
    ``report.md`` (tables) and ``confusion.png``."""
    from xmodelkd_ros.training.report import confusion_png

    out.mkdir(parents=True, exist_ok=True)
    write_frames(out / FRAMES_FILE, rep.get("frames", []))
    m = rep.get("metrics")
    if m is not None:
        names = list(m["iou"])
        confusion_png(np.asarray(m["confusion"]), names, out / "confusion.png",
                      title=f"replay {Path(rep['bag']).name}: rows = truth")  # fmt: skip
    (out / "report.json").write_text(
        json.dumps({k: v for k, v in rep.items() if k != "frames"}, indent=1))
    sc, lat = rep["scans"], rep["latency_ms"]
    lines = [
        "# xmodelkd_ros replay evaluation", "",
        f"- **bag**: {rep['bag']} (`{rep['lidar_topic']}`, cameras: "
        f"{', '.join(rep['cameras']) or 'none'})",
        f"- **model**: {rep['model']} (backend {rep['backend']})",
        f"- **mode**: {rep['mode']}",
        f"- **ground truth**: {rep['ground_truth'] or 'none (latency and drops only)'}",
        f"- **DDS**: {_dds_line(rep.get('dds'))}",
        "", "## Scans", "",
        "| in bag | published | received | dropped | late | scored |",
        "|---|---|---|---|---|---|",
        f"| {sc['in_bag']} | {sc['published']} | {sc['received']} | {sc['dropped']} "
        f"({100 * sc['dropped_fraction']:.1f}%) | {sc['late']} "
        f"(> {sc['late_threshold_ms']:.0f} ms) | {sc['scored']} |",
        "",
    ]  # fmt: skip
    tp = rep["throughput"]
    if tp.get("sustainable_rate_hz"):
        lines.append(f"Sustainable rate (back-pressure): **{tp['sustainable_rate_hz']:.2f} "
                     f"scans/s** (bag records {tp['bag_scan_rate_hz'] or 0:.1f} Hz)" + (
                         f"; the node's own processing (total p50) allows "
                         f"{tp['node_allows_hz']:.2f}/s, {100 * tp['sustainable_over_node']:.0f}"
                         " % of it sustained" if tp.get("sustainable_over_node") else "")
                     + ".\n")  # fmt: skip
    lines += ["## Latency (ms)", "", "| measure | p50 | p95 | p99 | max |", "|---|---|---|---|---|"]
    for k, v in lat.items():
        lines.append(f"| {k.replace('_', ' ')} | {_fmt_ms(v['p50'])} | {_fmt_ms(v['p95'])} | "
                     f"{_fmt_ms(v['p99'])} | {_fmt_ms(v['max'])} |")  # fmt: skip
    stages = rep["node_diagnostics"]["stages_ms"]
    if stages:
        lines += ["", "Node per-stage latency (its own `/diagnostics`, last window):", "",
                  "| stage | p50 | p95 |", "|---|---|---|"]  # fmt: skip
        for st, v in stages.items():
            lines.append(f"| {st} | {_fmt_ms(v.get('p50'))} | {_fmt_ms(v.get('p95'))} |")
    if m is not None:
        lines += ["", "## Segmentation", "",
                  f"**mIoU {100 * m['miou']:.2f}**, accuracy {100 * m['accuracy']:.2f} "
                  f"({rep['points']['scored']} points scored, {rep['points']['unpredicted']} "
                  "labeled points the node left unlabeled, not scored)", "",
                  "| class | IoU |", "|---|---|"]  # fmt: skip
        for c, v in m["iou"].items():
            lines.append(f"| {c} | {'n/a' if v is None else f'{100 * v:.1f}'} |")
        lines += ["", "![confusion](confusion.png)"]
    if rep.get("criteria"):
        lines += ["", *crit.markdown(rep["criteria"])]
    lines += ["", f"Per-frame records: `{FRAMES_FILE}` (schema/frames.schema.json)."]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def summary_line(rep: dict[str, Any]) -> str:
    """One line for terminals and the demo: mIoU, latency, drops."""
    sc, lat = rep["scans"], rep["latency_ms"]["stamp_to_output"]
    parts = []
    if rep.get("metrics") is not None:
        parts.append(f"mIoU {100 * rep['metrics']['miou']:.2f}")
    parts.append(f"latency p50 {_fmt_ms(lat['p50'])} ms p95 {_fmt_ms(lat['p95'])} ms "
                 f"p99 {_fmt_ms(lat['p99'])} ms")  # fmt: skip
    parts.append(f"{sc['received']}/{sc['published']} scans, {sc['dropped']} dropped, "
                 f"{sc['late']} late")  # fmt: skip
    rate = rep["throughput"].get("sustainable_rate_hz")
    if rate:
        parts.append(f"sustainable {rate:.2f} scans/s")
    return "; ".join(parts)
