"""Extra benchmark arms for the method's ablations, kept apart from the core.

``python -m xmodelkd_ros.evaluation.benchmark --arms selftrain,joint`` trains, after the
usual teacher / distilled / baseline of each (label fraction, seed), the named stage kinds
in the same output folder and scores their students on the same test scans:

* ``selftrain`` - the LiDAR-only self-training control (pseudo-labels from the baseline on
  the unlabeled scans): ``distilled - selftrain`` isolates what the cameras bring from what
  more data brings;
* ``lasermix`` - the LiDAR-only LaserMix control (scans mixed by bands of laser
  inclination, a mean teacher's targets): the stronger LiDAR-only use of the same
  unlabeled scans;
* ``joint`` - 2DPASS-style single-stage training, its 3D branch scored as a student.

Each arm is paired with the baseline (same seed, initialisation stream and data order) and
reported like the main gain: mean paired gain with its 95 % bootstrap interval. The share
of contrastive points with >= 2 views (from ``train.log``) is reported per seed too.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import numpy as np

from xmodelkd_ros.evaluation.stats import miou_from_confusion, paired_gain

#: arm name -> the student checkpoint its stage writes
ARMS = {"selftrain": "selftrain.pt", "lasermix": "lasermix.pt", "joint": "joint.pt"}


def parse_arms(text: str) -> list[str]:
    arms = [a.strip() for a in str(text).split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown arm(s) {unknown} ({' | '.join(ARMS)})")
    return arms


def _last_logged(run_dir: Path, pattern: str) -> float | None:
    """The number ``pattern`` (one group, matched per line) last caught in the run's
    ``train.log``; None without a log or a match."""
    log = run_dir / "train.log"
    if not log.is_file():
        return None
    found = re.findall(pattern, log.read_text(), flags=re.M)
    return float(found[-1]) if found else None


def multiview_share_of(run_dir: Path) -> float | None:
    """The last logged ``multiview_share`` of the contrastive stages (None: not logged)."""
    return _last_logged(run_dir, r"^(?:pretrain|teacher|joint) epoch .*multiview_share ([0-9.]+)")


def validation_miou_of(run_dir: Path, stage: str) -> float | None:
    """The stage's validation mIoU (fraction) from ``train.log`` (its last report), the
    number an arm's settings are chosen by; None when not logged."""
    miou = _last_logged(run_dir, rf"^{re.escape(stage)}: val mIoU ([0-9.]+)")
    return None if miou is None else miou / 100.0


def _gain(a: np.ndarray, b: np.ndarray, reps: int, streets: int | None) -> dict[str, Any]:
    g = paired_gain(a, b, reps=reps, streets=streets)
    return {"mean": g.mean, "ci95": list(g.ci), "per_seed": [float(x) for x in g.per_seed]}


def method_summary(
    results: dict[float, list[dict[str, Any]]],
    arms: list[str],
    run_dirs: dict[float, list[Path]],
    reps: int,
    streets: int | None = None,
) -> dict[str, Any]:
    """Per label fraction: the multi-view share per seed and, per arm, its mIoU, its paired
    gain over the baseline and the distilled student's paired gain over it."""
    out: dict[str, Any] = {}
    for fraction, seeds in results.items():
        cms = {m: np.stack([np.asarray(r["confusion"][m]) for r in seeds])
               for m in ("distilled", "baseline", *arms)}  # fmt: skip
        regime: dict[str, Any] = {
            "multiview_share": [multiview_share_of(d) for d in run_dirs[fraction]],
            "arms": {},
        }
        for arm in arms:
            regime["arms"][arm] = {
                "miou": float(miou_from_confusion(cms[arm].sum(1)).mean()),
                "validation_miou": [validation_miou_of(d, arm) for d in run_dirs[fraction]],
                "gain_vs_baseline": _gain(cms[arm], cms["baseline"], reps, streets),
                "distilled_minus_arm": _gain(cms["distilled"], cms[arm], reps, streets),
            }
        out[f"{fraction:g}"] = regime
    return out


def method_markdown(summary: dict[str, Any]) -> str:
    """A section for ``benchmark.md``: the arms' held-out numbers."""
    pct = lambda v: "n/a" if v is None else f"{100 * v:+.2f}"  # noqa: E731
    lines = ["", "## Method arms", ""]
    for key, regime in summary.items():
        shares = ", ".join("n/a" if s is None else f"{100 * s:.1f} %"
                           for s in regime["multiview_share"])  # fmt: skip
        lines += [f"### {float(key) * 100:g} % labels", "",
                  f"Contrastive points with >= 2 views, per seed: {shares}", ""]  # fmt: skip
        if regime["arms"]:
            lines += ["| arm | mIoU | arm - baseline (95 % CI) | distilled - arm (95 % CI) "
                      "| validation mIoU per seed |",
                      "| --- | --- | --- | --- | --- |"]  # fmt: skip
            for arm, r in regime["arms"].items():
                g, d = r["gain_vs_baseline"], r["distilled_minus_arm"]
                val = " / ".join("n/a" if v is None else f"{100 * v:.1f}"
                                 for v in r.get("validation_miou", []))  # fmt: skip
                lines.append(
                    f"| {arm} | {100 * r['miou']:.2f} | {pct(g['mean'])} "
                    f"[{pct(g['ci95'][0])}, {pct(g['ci95'][1])}] | {pct(d['mean'])} "
                    f"[{pct(d['ci95'][0])}, {pct(d['ci95'][1])}] | {val} |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"
