"""The fleet report's files: ``report.json`` (the merged document), ``report.md`` (overall
mIoU with its interval, the criteria, per-bag and per-class tables, the worst frames,
failed bags) and two plots, ``per_bag_miou.png`` and ``per_class_iou.png``.

Why Pillow: the plots are drawn the way the other reports draw theirs (no plotting
library to install on a CI runner), and a PNG of the same pixels is the same bytes, so
the report is reproducible file for file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from xmodelkd_ros.evaluation import criteria as crit
from xmodelkd_ros.evaluation.report import interval_text, pct

BAG_PLOT, CLASS_PLOT = "per_bag_miou.png", "per_class_iou.png"


def _overall_lines(doc: dict[str, Any]) -> list[str]:
    ov, fr, bags, m = doc["overall"], doc["frames"], doc["bags"], doc["meta"]
    lines = [
        "# xmodelkd_ros fleet evaluation", "",
        f"- **model**: {m['model']} (backend {', '.join(m['backend']) or 'n/a'})",
        f"- **bags**: {bags['total']} ({bags['evaluated']} evaluated, {bags['failed']} failed, "
        f"{bags['with_ground_truth']} with ground truth); **scans**: {fr['frames']} "
        f"({fr['scored_frames']} scored)",
        f"- **points**: {fr['scored_points']} scored, {fr['unscored_points']} labeled points "
        f"the model left unlabeled ({100 * fr['unscored_fraction']:.2f} %, not scored)",
        "- offline through the node's Segmenter; per-frame records: `bags/*/frames.jsonl` "
        "(schema/frames.schema.json)", "",
    ]  # fmt: skip
    if ov is None:
        return [*lines, "No scan had ground truth: nothing was scored.", ""]
    b = doc["bootstrap"]
    return [*lines,
            f"**mIoU {pct(ov['miou'])}**, 95 % CI {interval_text(ov['miou_ci95'])} (bootstrap: "
            f"{b['levels']}, {b['replicates']} replicates); accuracy {pct(ov['accuracy'])}.",
            ""]  # fmt: skip


def to_markdown(doc: dict[str, Any]) -> str:
    """``report.md``: every table of the merged document, IoU in percent."""
    lines = _overall_lines(doc)
    if doc.get("criteria"):
        lines += [*crit.markdown(doc["criteria"]), ""]
    lines += ["## Bags", "", "| bag | kind | status | scans | scored | mIoU | unscored % |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in doc["per_bag"]:
        if r["status"] != "ok":
            lines.append(f"| {r['bag']} | {r['kind']} | **failed**: {r['reason']} | | | | |")
            continue
        lines.append(f"| {r['bag']} | {r['kind']} | ok | {r['frames']} | {r['scored_frames']} | "
                     f"{pct(r['miou'])} | {100 * r['unscored_fraction']:.2f} |")  # fmt: skip
    if doc["overall"] is not None:
        lines += ["", "## Classes", "", "| class | TP | FP | FN | IoU | 95 % CI |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for c in doc["overall"]["per_class"]:
            lines.append(f"| {c['class']} | {c['tp']} | {c['fp']} | {c['fn']} | {pct(c['iou'])} "
                         f"| {interval_text(c['ci95'])} |")  # fmt: skip
        lines += ["", f"## Worst {len(doc['worst_frames'])} frames", "",
                  "| bag | scan | stamp (ns) | mIoU | scored points |", "|---|---|---|---|---|"]
        for w in doc["worst_frames"]:
            lines.append(f"| {w['bag']} | {w['index']} | {w['stamp']} | {pct(w['miou'])} | "
                         f"{w['scored_points']} |")  # fmt: skip
        lines += ["", f"![per-bag mIoU]({BAG_PLOT})", "", f"![per-class IoU]({CLASS_PLOT})"]
    if doc["failed_bags"]:
        lines += ["", "## Failed bags", ""]
        lines += [f"- {f['bag']}: {f['reason']}" for f in doc["failed_bags"]]
    return "\n".join(lines) + "\n"


def _axis(draw: ImageDraw.ImageDraw, x0: int, x1: int, y: int, font: Any) -> None:
    """A 0..100 % axis from ``x0`` to ``x1`` at height ``y``, ticks every 20."""
    draw.line([(x0, y), (x1, y)], fill="gray")
    for t in range(0, 101, 20):
        x = x0 + (x1 - x0) * t / 100
        draw.line([(x, y), (x, y + 4)], fill="gray")
        draw.text((x - 8, y + 5), f"{t}", fill="gray", font=font)


def bag_png(doc: dict[str, Any], path: Path) -> None:
    """Per-bag mIoU, one bar per bag in report order (worst first when there are many)."""
    font = ImageFont.load_default()
    rows = [r for r in doc["per_bag"] if r["status"] == "ok" and r["miou"] is not None]
    if len(rows) > 60:
        rows = sorted(rows, key=lambda r: (r["miou"], r["bag"]))
    row_h = 14 if len(rows) <= 60 else max(1, 600 // max(1, len(rows)))
    left, width = 180 if len(rows) <= 60 else 20, 420
    img = Image.new("RGB", (left + width + 30, 60 + row_h * len(rows) + 30), "white")
    d = ImageDraw.Draw(img)
    ov = doc["overall"]
    d.text((10, 8), f"mIoU per bag (%); line: overall {pct(ov['miou'])}, band: 95 % CI",
           fill="black", font=font)  # fmt: skip
    lo, hi = ov["miou_ci95"]
    top = 40
    d.rectangle([left + width * lo, top, left + width * hi, top + row_h * len(rows)],
                fill=(225, 230, 245))  # fmt: skip
    for i, r in enumerate(rows):
        y = top + i * row_h
        if row_h >= 10:
            d.text((10, y), r["bag"][-28:], fill="black", font=font)
        d.rectangle([left, y + 1, left + width * r["miou"], y + max(1, row_h - 2)],
                    fill=(60, 110, 190))  # fmt: skip
    x = left + width * ov["miou"]
    d.line([(x, top - 4), (x, top + row_h * len(rows))], fill=(200, 50, 50), width=2)
    _axis(d, left, left + width, top + row_h * len(rows) + 4, font)
    img.save(path)


def class_png(doc: dict[str, Any], path: Path) -> None:
    """Per-class IoU (bar) with its 95 % interval (whisker); classes never seen left empty."""
    font = ImageFont.load_default()
    classes = doc["overall"]["per_class"]
    row_h, left, width, top = 16, 120, 420, 34
    img = Image.new("RGB", (left + width + 30, top + row_h * len(classes) + 34), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 8), "IoU per class (%), whiskers: 95 % CI (bootstrap over bags and scans)",
           fill="black", font=font)  # fmt: skip
    for i, c in enumerate(classes):
        y = top + i * row_h
        d.text((10, y + 2), c["class"], fill="black", font=font)
        if c["iou"] is None:
            continue
        d.rectangle([left, y + 3, left + width * c["iou"], y + row_h - 3], fill=(60, 150, 90))
        lo, hi = c["ci95"]
        if lo is not None and hi is not None:
            yc = y + row_h // 2
            d.line([(left + width * lo, yc), (left + width * hi, yc)], fill="black")
    _axis(d, left, left + width, top + row_h * len(classes) + 4, font)
    img.save(path)


def write_report(out: Path, doc: dict[str, Any]) -> None:
    """``report.json``, ``report.md`` and, when anything was scored, the two plots."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "report.md").write_text(to_markdown(doc))
    for name in (BAG_PLOT, CLASS_PLOT):
        (out / name).unlink(missing_ok=True)
    if doc["overall"] is not None:
        bag_png(doc, out / BAG_PLOT)
        class_png(doc, out / CLASS_PLOT)


def summary_line(doc: dict[str, Any]) -> str:
    """One line for the terminal: mIoU with its interval, bags and scans."""
    ov, bags = doc["overall"], doc["bags"]
    head = (f"mIoU {pct(ov['miou'])} (95 % CI {interval_text(ov['miou_ci95'])})" if ov
            else "no ground truth")  # fmt: skip
    return (f"{head}; {bags['evaluated']}/{bags['total']} bags, {bags['failed']} failed; "
            f"{doc['frames']['frames']} scans, {doc['frames']['scored_frames']} scored")
