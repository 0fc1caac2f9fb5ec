"""Pass/fail criteria for an evaluation run: a YAML file in, a verdict and a table out.

Why a file and an exit code: a release is gated in CI on the evaluation of recorded drives
(``exit 0`` pass, ``1`` fail, ``2`` bad input), and the thresholds belong under version
control next to the model, not in a CI script. Every criterion is checked against a value
measured from the run's per-frame records, and the table (criterion, threshold, measured,
verdict) goes into the report and to the terminal so a failed gate says why.

The file (every key optional; ``config/criteria.yaml`` is an example)::

    min_miou: 0.40                 # overall mIoU, 0..1
    min_class_iou: {car: 0.50}     # per-class IoU floors, 0..1
    max_p95_latency_ms: 150        # replay: p95 of bag stamp -> output
    max_dropped_fraction: 0.02     # replay: scans the node never answered
    min_answered_fraction: 0.98    # scans that got labels
    max_unscored_fraction: 0.05    # labeled points the model left unlabeled
    max_failed_bags: 0             # fleet: bags that could not be evaluated

A criterion the run cannot measure (latency offline, mIoU without ground truth) is bad
input, reported before the run starts: a gate must never pass on a number nobody took.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: key -> (measured quantity, "min" or "max", unit shown in tables)
SCALAR_KEYS: dict[str, tuple[str, str, str]] = {
    "min_miou": ("miou", "min", ""),
    "max_p95_latency_ms": ("p95_latency_ms", "max", " ms"),
    "max_dropped_fraction": ("dropped_fraction", "max", ""),
    "min_answered_fraction": ("answered_fraction", "min", ""),
    "max_unscored_fraction": ("unscored_fraction", "max", ""),
    "max_failed_bags": ("failed_bags", "max", ""),
}
CLASS_KEY = "min_class_iou"
FRACTIONS = {"min_miou", "max_dropped_fraction", "min_answered_fraction",
             "max_unscored_fraction"}  # fmt: skip


class CriteriaError(ValueError):
    """The criteria file is unreadable, malformed, or asks for what the run cannot measure."""


@dataclass
class Criteria:
    """The thresholds of a criteria file (``scalars``: key -> threshold)."""

    path: str
    scalars: dict[str, float] = field(default_factory=dict)
    class_iou: dict[str, float] = field(default_factory=dict)

    def quantities(self) -> set[str]:
        """What the run must measure for these criteria."""
        out = {SCALAR_KEYS[k][0] for k in self.scalars}
        if self.class_iou:
            out.add("class_iou")
        return out

    def require(self, measurable: dict[str, str | None], class_names: Sequence[str]) -> None:
        """Raise :class:`CriteriaError` for a criterion the run cannot measure.

        ``measurable``: quantity -> None when measured, else why it is not; ``class_names``:
        the model's classes (a floor for another class is a typo, not a pass)."""
        for q in sorted(self.quantities()):
            why = measurable.get(q, "this run does not measure it")
            if why is not None:
                keys = [k for k, v in SCALAR_KEYS.items() if v[0] == q and k in self.scalars]
                raise CriteriaError(f"criteria {self.path}: {(keys or [CLASS_KEY])[0]} cannot "
                                    f"be checked: {why}")  # fmt: skip
        unknown = sorted(set(self.class_iou) - set(class_names))
        if unknown:
            raise CriteriaError(f"criteria {self.path}: {CLASS_KEY} names classes the model "
                                f"does not have: {', '.join(unknown)} (classes: "
                                f"{', '.join(class_names)})")  # fmt: skip


def _number(path: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CriteriaError(f"criteria {path}: {key} must be a number, got {value!r}")
    value = float(value)
    fraction = key in FRACTIONS or key.startswith(CLASS_KEY)
    if value < 0 or (fraction and value > 1):
        bound = "between 0 and 1" if fraction else ">= 0"
        raise CriteriaError(f"criteria {path}: {key} must be {bound}, got {value:g}")
    return value


def load_criteria(path: str | os.PathLike) -> Criteria:
    """Read and check a criteria file; every problem is one :class:`CriteriaError` line."""
    import yaml

    p = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise CriteriaError(f"cannot read criteria {p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise CriteriaError(f"criteria {p} is not valid YAML: {' '.join(str(exc).split())}"
                            ) from None  # fmt: skip
    if not isinstance(doc, dict) or not doc:
        raise CriteriaError(f"criteria {p} must be a mapping of criteria (keys: "
                            f"{', '.join([*SCALAR_KEYS, CLASS_KEY])})")  # fmt: skip
    out = Criteria(p)
    for key, value in doc.items():
        if key == CLASS_KEY:
            if not isinstance(value, dict) or not value:
                raise CriteriaError(f"criteria {p}: {CLASS_KEY} must map class names to IoU "
                                    "floors, e.g. {car: 0.5}")  # fmt: skip
            out.class_iou = {str(c): _number(p, f"{CLASS_KEY}.{c}", v) for c, v in value.items()}
        elif key in SCALAR_KEYS:
            out.scalars[key] = _number(p, key, value)
        else:
            raise CriteriaError(f"criteria {p}: unknown key {key!r} (keys: "
                                f"{', '.join([*SCALAR_KEYS, CLASS_KEY])})")  # fmt: skip
    return out


def check(criteria: Criteria, measured: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per criterion: ``criterion``, ``threshold``, ``measured`` (None: could not
    be taken, e.g. a class absent from the data, which fails) and ``passed``.

    ``measured``: quantity -> value, ``class_iou``: class -> IoU or None."""
    rows = []
    for key, threshold in criteria.scalars.items():
        quantity, kind, _unit = SCALAR_KEYS[key]
        rows.append(_row(key, kind, threshold, measured.get(quantity)))
    for name, threshold in criteria.class_iou.items():
        rows.append(_row(f"{CLASS_KEY}.{name}", "min", threshold,
                         (measured.get("class_iou") or {}).get(name)))  # fmt: skip
    return rows


def _row(key: str, kind: str, threshold: float, value: Any) -> dict[str, Any]:
    ok = value is not None and (value >= threshold if kind == "min" else value <= threshold)
    return {"criterion": key, "threshold": threshold, "measured": value, "passed": bool(ok)}


def passed(rows: Sequence[dict[str, Any]]) -> bool:
    return all(r["passed"] for r in rows)


def _fmt(key: str, v: float | None) -> str:
    if v is None:
        return "not measured"
    unit = SCALAR_KEYS.get(key, ("", "", ""))[2]
    return f"{v:.4g}{unit}" if unit or key.endswith("bags") else f"{v:.4f}"


def _sign(key: str) -> str:
    kind = SCALAR_KEYS[key][1] if key in SCALAR_KEYS else "min"
    return ">=" if kind == "min" else "<="


def markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The criteria table as Markdown lines (report.md)."""
    lines = [f"## Criteria: {'PASS' if passed(rows) else 'FAIL'}", "",
             "| criterion | threshold | measured | verdict |", "|---|---|---|---|"]  # fmt: skip
    for r in rows:
        k = r["criterion"]
        lines.append(f"| {k} | {_sign(k)} {_fmt(k, r['threshold'])} | {_fmt(k, r['measured'])} "
                     f"| {'pass' if r['passed'] else '**FAIL**'} |")  # fmt: skip
    return lines


def terminal(rows: Sequence[dict[str, Any]]) -> str:
    """The criteria table for the terminal, aligned, with the verdict last."""
    table = [("criterion", "threshold", "measured", "verdict")]
    for r in rows:
        k = r["criterion"]
        table.append((k, f"{_sign(k)} {_fmt(k, r['threshold'])}", _fmt(k, r["measured"]),
                      "pass" if r["passed"] else "FAIL"))  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in table]  # fmt: skip
    n_fail = sum(1 for r in rows if not r["passed"])
    lines.append(f"criteria: {'PASS' if not n_fail else 'FAIL'} "
                 f"({len(rows) - n_fail}/{len(rows)} met)")  # fmt: skip
    return "\n".join(lines)
