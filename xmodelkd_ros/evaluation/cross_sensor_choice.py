"""Compare training candidates across sensors, and choose one by a fixed rule.

Why: ``cross_sensor`` scores one candidate (its seeds) on one set of streets rendered
through several rigs. Choosing sensor-robustness options needs the candidates side by
side on the same streets: each one's mIoU on the training rig, its drop on every other
rig, its cost on the training rig against the first candidate (the recipe as shipped),
paired by seed and scan, and how much of the first candidate's drop it removes. With
``--choose`` the rule is applied (the one written in the pre-registration): among the
candidates that cost at most ``--max-cost`` mIoU on the training rig, the one whose worst
mean drop over the judged rigs is smallest; ties within 0.1 go to the one listed first.
Without it the table is a measurement that chooses nothing.

Input: ``cross_sensor`` output folders (``cross_sensor.json`` + ``cross_sensor_scores.npz``),
one per candidate, scored on the same streets, scans and rigs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xmodelkd_ros.evaluation.cli import parse_tool_args, run_tool, tool_parser
from xmodelkd_ros.evaluation.cross_sensor_report import drop_difference
from xmodelkd_ros.evaluation.report import ci_text, gain_doc
from xmodelkd_ros.evaluation.score import BenchmarkError
from xmodelkd_ros.evaluation.stats import miou_from_confusion, paired_gain

#: what must match for two cross_sensor outputs to be paired scan by scan
SAME = ("reference", "split", "test_seeds", "test_scans", "test_stride")
#: mean-drop differences within this are ties (mIoU points)
TIE = 0.1


def load_output(folder: Path, model: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(``cross_sensor.json``'s meta, rig -> (S, N, K, K) confusions of ``model``)."""
    try:
        meta = json.loads((folder / "cross_sensor.json").read_text())["meta"]
        with np.load(folder / "cross_sensor_scores.npz") as z:
            cms = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(model + "/")}
    except (OSError, KeyError, ValueError) as exc:
        raise BenchmarkError(f"{folder}: not a cross_sensor output ({exc})") from None
    if not cms:
        raise BenchmarkError(f"{folder}: no {model} scores")
    return meta, cms


def compare(cands: dict[str, dict[str, np.ndarray]], reference: str, judged: list[str],
            reps: int, streets: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Per candidate: mIoU per rig (mean over seeds, %), drop per judged rig, the worst of
    them, and against the first candidate its cost on ``reference`` and its change of
    drop per rig, each with a paired 95 % interval."""
    names = list(cands)
    first = cands[names[0]]
    out: dict[str, Any] = {}
    for name, cms in cands.items():
        miou = {r: 100.0 * float(miou_from_confusion(cm.sum(1)).mean()) for r, cm in cms.items()}
        drops = {r: miou[r] - miou[reference] for r in judged}
        doc: dict[str, Any] = {"miou": miou, "drop": drops, "worst": min(drops.values())}
        if name != names[0]:
            doc["cost"] = gain_doc(paired_gain(cms[reference], first[reference], reps=reps,
                                                streets=streets))  # fmt: skip
            doc["drop_change"] = {
                r: drop_difference(cms[r], cms[reference], first[r], first[reference], reps,
                                   streets)
                for r in judged
            }
        out[name] = doc
    return out


def choose(doc: dict[str, Any], ref: str, max_cost: float) -> tuple[str, dict[str, str]]:
    """The rule: eligible = mIoU on the training rig ``ref`` at most ``max_cost`` below the
    first candidate's (the first always); among them the largest worst drop, ties within
    :data:`TIE` to the first listed. Returns the choice and why each other one lost."""
    names = list(doc)
    base = doc[names[0]]["miou"]
    why: dict[str, str] = {}
    eligible = []
    for n in names:
        cost = doc[n]["miou"][ref] - base[ref]
        if cost < -max_cost:
            why[n] = f"costs {cost:+.1f} on {ref} (limit -{max_cost:g})"
        else:
            eligible.append(n)
    best = max(doc[n]["worst"] for n in eligible)
    chosen = next(n for n in eligible if doc[n]["worst"] >= best - TIE)
    for n in eligible:
        if n != chosen:
            why[n] = f"worst drop {doc[n]['worst']:+.1f} vs {doc[chosen]['worst']:+.1f}"
    return chosen, why


def markdown(doc: dict[str, Any], meta: dict[str, Any], judged: list[str],
             choice: tuple[str, dict[str, str]] | None) -> str:  # fmt: skip
    ref = meta["reference"]
    names = list(doc)
    lines = ["# Cross-sensor candidates", "",
             f"Model: {meta['model']}; {meta['split']} streets {meta['test_seeds_text']} x "
             f"{meta['test_scans']} scans; {meta['seeds']} seeds; trained on rig {ref}. mIoU in "
             f"%, drop = rig - {ref}; cost and change of drop against `{names[0]}`, paired by "
             "seed and scan (95 % bootstrap).", ""]  # fmt: skip
    head = ["candidate", f"{ref}", *judged, "worst drop", f"cost on {ref}"]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for n, d in doc.items():
        cells = [f"`{n}`", f"{d['miou'][ref]:.1f}"]
        cells += [f"{d['miou'][r]:.1f} ({d['drop'][r]:+.1f})" for r in judged]
        cells += [f"{d['worst']:+.1f}", ci_text(d["cost"]) if "cost" in d else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Change of drop against `{names[0]}` (> 0: loses less):",
        "",
        "| candidate | " + " | ".join(judged) + " |",
        "|" + " --- |" * (len(judged) + 1),
    ]
    for n, d in doc.items():
        if "drop_change" in d:
            cells = [ci_text(d["drop_change"][r]) for r in judged]
            lines.append(f"| `{n}` | " + " | ".join(cells) + " |")
    if choice is not None:
        chosen, why = choice
        lines += [
            "",
            f"**Chosen: `{chosen}`** (rule: cost on {ref} >= -{meta['max_cost']:g}, "
            f"then the smallest worst drop, ties within {TIE} to the first listed).",
        ]
        lines += [f"- `{n}`: {w}" for n, w in why.items()]
    else:
        lines += ["", "A measurement: nothing was chosen here."]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    metas, cands = {}, {}
    for name, folder in args.candidate:
        metas[name], cands[name] = load_output(Path(folder), args.model)
    first = next(iter(metas.values()))
    for name, m in metas.items():
        differ = [k for k in SAME if m.get(k) != first.get(k)]
        if differ:
            raise BenchmarkError(f"{name} was scored on other streets/scans ({', '.join(differ)})")
    ref = first["reference"]
    rigs = [r for r in next(iter(cands.values())) if r != ref]
    judged = args.rigs or rigs
    for name, cms in cands.items():
        missing = [r for r in [ref, *judged] if r not in cms]
        if missing:
            raise BenchmarkError(f"{name}: no scores on rig(s) {', '.join(missing)}")
    shapes = {cm.shape for cms in cands.values() for cm in cms.values()}
    if len(shapes) != 1:
        raise BenchmarkError(f"candidates differ in seeds x scans: {sorted(shapes)}")
    doc = compare(cands, ref, judged, args.bootstrap, len(first["test_seeds"]))
    choice = choose(doc, ref, args.max_cost) if args.choose else None
    meta = {**{k: first.get(k) for k in (*SAME, "test_seeds_text")}, "model": args.model,
            "seeds": shapes.pop()[0], "max_cost": args.max_cost, "judged": judged,
            "candidates": {n: f for n, f in args.candidate}}  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"meta": meta, "candidates": doc, "chosen": choice[0] if choice else None}
    (out / "choice.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "choice.md").write_text(markdown(doc, meta, judged, choice))
    print((out / "choice.md").read_text())
    return 0


def _candidate(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"bad candidate {text!r}: NAME=FOLDER")
    return name, folder


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser("cross_sensor_choice", __doc__.split("\n\n")[0])
    p.add_argument("--candidate", type=_candidate, action="append", required=True,
                   metavar="NAME=FOLDER", help="a cross_sensor output per candidate; the "
                   "first is the one costs are measured against")  # fmt: skip
    p.add_argument("--model", default="distilled", help="which model's scores decide")
    p.add_argument(
        "--rigs",
        type=lambda t: [x for x in t.split(",") if x],
        default=None,
        help="rigs judged by the rule (default: every rig but the training rig)",
    )
    p.add_argument("--choose", action="store_true", help="apply the rule (validation only)")
    p.add_argument(
        "--max-cost",
        type=float,
        default=1.0,
        help="largest mIoU a candidate may lose on the training rig",
    )
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates")
    p.add_argument("--out", default="runs/cross_sensor_choice", help="output folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_tool_args(build_parser(), argv)
    if len(args.candidate) < 2 and args.choose:
        print("error: --choose needs at least two candidates", file=sys.stderr)
        return 2
    return run_tool(lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())
