"""Evaluation artefacts: confusion-matrix PNG and the final baseline-vs-distilled report.

The PNG is drawn with Pillow only (no matplotlib): a row-normalised heat map with class
names, so it can be produced on any training machine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from xmodelkd_ros.training.metrics import SegMetrics


def confusion_png(
    confusion: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = ""
) -> None:
    """Row-normalised confusion matrix (rows = ground truth, columns = prediction)."""
    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(class_names)
    cell, left, top = 22, 120, 130
    img = Image.new("RGB", (left + k * cell + 10, top + k * cell + 10), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    if title:
        draw.text((4, 4), title, fill="black", font=font)
    for i, name in enumerate(class_names):
        draw.text((4, top + i * cell + 5), name[:18], fill="black", font=font)
        label = Image.new("RGB", (top - 20, cell), "white")
        ImageDraw.Draw(label).text((2, 5), name[:18], fill="black", font=font)
        label = label.rotate(90, expand=True)
        img.paste(label, (left + i * cell, 18))
    for i in range(k):
        for j in range(k):
            v = norm[i, j]
            shade = int(255 * (1 - v))
            colour = (shade, shade, 255) if i != j else (shade, 255, shade)
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle(
                [x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour, outline=(200, 200, 200)
            )
            if v >= 0.1:
                draw.text((x0 + 2, y0 + 6), f"{round(100 * v):d}", fill="black", font=font)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def write_report(
    out_dir: str | Path,
    results: dict[str, SegMetrics],
    class_names: Sequence[str],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """``report.md`` + ``report.json``: every evaluated model side by side, and the
    distilled student's mIoU gain over the baseline when both were evaluated."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"meta": meta, "models": {k: m.to_dict() for k, m in results.items()}}
    if "baseline" in results and "distilled" in results:
        doc["miou_gain"] = results["distilled"].miou - results["baseline"].miou
    names = list(results)
    lines = ["# xmodelkd_ros training report", ""]
    for k, v in meta.items():
        lines.append(f"- **{k}**: {v}")
    lines += ["", "| class | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines.append("| **mIoU** | " + " | ".join(f"**{_fmt(results[n].miou)}**" for n in names) + " |")
    lines.append("| accuracy | " + " | ".join(_fmt(results[n].accuracy) for n in names) + " |")
    for c in class_names:
        lines.append(f"| {c} | " + " | ".join(_fmt(results[n].iou.get(c)) for n in names) + " |")
    if "miou_gain" in doc:
        lines += [
            "",
            f"**mIoU gain, distilled student over baseline: {100 * doc['miou_gain']:+.2f}**",
        ]
    lines += ["", "IoU in percent; n/a: class absent from ground truth and predictions."]
    for n in names:
        png = f"confusion_{n}.png"
        confusion_png(results[n].confusion, class_names, out_dir / png, title=f"{n}: rows = truth")
        lines.append(f"\n![{n} confusion]({png})")
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    (out_dir / "report.json").write_text(json.dumps(doc, indent=1))
    return doc
