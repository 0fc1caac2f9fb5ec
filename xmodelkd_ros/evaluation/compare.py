"""Named networks scored on one set of streets, and the paired gains between named pairs.

Why its own tool: a pre-registered measurement that is neither one recipe's arms (the
benchmark) nor a choice among schedules (``choose``) — e.g. "the student of a teacher
trained with the pretrained image branch against the one without", or "the distilled
student at the largest unlabeled pool against the smallest, and against LaserMix with the
same pool" — compares networks that live in arbitrary run folders. Each network is a path
pattern with ``{seed}`` (one checkpoint per training seed); students are scored through the
node's Segmenter, teachers (``--teacher``) through the training input pipeline with their
cameras (:mod:`.score`), every labeled point of every scan. A pair ``A:B`` is A - B,
paired by seed over the same scans, with the benchmark's two-level bootstrap interval, on
the seeds both networks have (a seed one of them lacks is reported, never imputed).

    python -m xmodelkd_ros.evaluation.compare \\
        --net distilled=runs/pool/p280/seed{seed}/student.pt \\
        --net lasermix=runs/pool/p280/seed{seed}/lasermix.pt \\
        --pair distilled:lasermix --seeds 0-2 --streets 140-149 --split val
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodelkd_ros.evaluation.claim import seed_span
from xmodelkd_ros.evaluation.cli import (
    add_registered_args,
    add_report_args,
    check_registered,
    git_commit,
    parse_seeds,
    parse_tool_args,
    progress_bar,
    run_tool,
    tool_parser,
)
from xmodelkd_ros.evaluation.report import ci_text, gain_doc, pct
from xmodelkd_ros.evaluation.score import (
    BenchmarkError,
    HeldOutScan,
    cached_confusions,
    held_out_scans,
    score_student,
    score_teacher,
)
from xmodelkd_ros.evaluation.stats import miou_from_confusion, paired_gain
from xmodelkd_ros.sim.rigs import rig_arg
from xmodelkd_ros.sim.splits import check_seeds


@dataclass(frozen=True)
class Net:
    """A named network: ``pattern`` with ``{seed}`` gives its checkpoint of each seed."""

    name: str
    pattern: str
    teacher: bool = False

    def path(self, seed: int) -> Path:
        return Path(self.pattern.format(seed=seed))


def parse_net(text: str) -> tuple[str, str]:
    """``NAME=PATTERN`` (the pattern holds ``{seed}``) -> (name, pattern)."""
    name, sep, pattern = str(text).partition("=")
    if not sep or not name.strip() or not pattern:
        raise argparse.ArgumentTypeError(f"expected NAME=PATTERN, got {text!r}")
    if ":" in name:
        raise argparse.ArgumentTypeError(f"a network's name cannot hold ':' ({name!r})")
    if "{seed}" not in pattern:
        raise argparse.ArgumentTypeError(f"{pattern!r} has no {{seed}}: one checkpoint per seed")
    try:
        pattern.format(seed=0)
    except (KeyError, IndexError, ValueError):
        raise argparse.ArgumentTypeError(f"{pattern!r}: only {{seed}} may be substituted") from None
    return name.strip(), pattern


def parse_pair(text: str) -> tuple[str, str]:
    """``A:B`` (the gain A - B) -> (A, B)."""
    a, sep, b = str(text).partition(":")
    if not sep or not a or not b or a == b:
        raise argparse.ArgumentTypeError(f"expected A:B naming two networks, got {text!r}")
    return a, b


def build_nets(args: argparse.Namespace) -> list[Net]:
    """The ``--net`` / ``--teacher`` networks; a name given twice is refused."""
    nets = [Net(n, p) for n, p in args.net or []] + [Net(n, p, True) for n, p in args.teacher or []]
    names = [n.name for n in nets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BenchmarkError(f"network names given twice: {', '.join(twice)}")
    if not nets:
        raise BenchmarkError("nothing to score: give --net NAME=PATTERN (or --teacher)")
    for a, b in args.pair or []:
        for n in (a, b):
            if n not in names:
                raise BenchmarkError(f"--pair {a}:{b}: no network named {n!r}")
    return nets


def found_seeds(net: Net, seeds: Sequence[int]) -> list[int]:
    """The seeds whose checkpoint exists; an error when none does."""
    have = [s for s in seeds if net.path(s).is_file()]
    if not have:
        raise BenchmarkError(
            f"{net.name}: no checkpoint for seeds {list(seeds)} ({net.path(seeds[0])} ...)"
        )
    return have


def teacher_recipe(path: Path) -> Any:
    """The recipe a teacher was trained with (its run's ``recipe.json``)."""
    from xmodelkd_ros.training.recipe import RecipeError, load_recipe

    rj = path.parent / "recipe.json"
    if not rj.is_file():
        raise BenchmarkError(f"{path}: no recipe.json beside it (a teacher needs its run's recipe)")
    try:
        return load_recipe(str(rj))
    except RecipeError as exc:
        raise BenchmarkError(f"{rj}: {exc}") from None


def camera_rig(teachers: Sequence[Net], seeds: Sequence[int]) -> tuple[int, tuple[int, int]]:
    """(cameras, render H x W) the scans need: the teachers' (all alike), or none."""
    rigs = {}
    for net in teachers:
        for s in found_seeds(net, seeds):
            r = teacher_recipe(net.path(s))
            rigs[(r.data.cameras, tuple(r.data.render_size))] = f"{net.name} seed {s}"
    if len(rigs) > 1:
        raise BenchmarkError(
            "the teachers were trained with different cameras / render sizes: "
            + "; ".join(f"{who}: {c} x {hw}" for (c, hw), who in rigs.items())
        )
    return next(iter(rigs), (0, (180, 320)))


def score_nets(
    nets: Sequence[Net],
    seeds: Sequence[int],
    scans: Callable[[], list[HeldOutScan]],
    folder: Path,
    street_set: dict[str, Any],
    bar: Any = None,
) -> dict[str, dict[int, np.ndarray]]:
    """(N, C+1, C+1) confusions of every network and found seed: ``{name: {seed: cm}}``.
    ``scans`` renders the street set when first needed; each network's confusions are
    kept in ``folder`` (:func:`~.score.cached_confusions`, keyed by ``street_set``)."""
    from xmodelkd_ros.nets.checkpoint import CheckpointError

    out: dict[str, dict[int, np.ndarray]] = {}
    for net in nets:
        out[net.name] = {}
        for s in found_seeds(net, seeds):
            path = net.path(s)

            def compute(path: Path = path, net: Net = net) -> np.ndarray:
                try:
                    if net.teacher:
                        return score_teacher(path, scans(), teacher_recipe(path))
                    return score_student(path, scans())
                except CheckpointError as exc:
                    raise BenchmarkError(str(exc)) from None

            kind = {"kind": "teacher"} if net.teacher else {}
            out[net.name][s] = cached_confusions(
                folder / net.name, f"seed{s}", {**street_set, **kind}, path, compute
            )
            if bar is not None:
                bar.update(1)
    return out


def pair_doc(
    a: dict[int, np.ndarray], b: dict[int, np.ndarray], reps: int, streets: int | None = None
) -> dict[str, Any]:
    """A - B on the seeds both have (:func:`~.report.gain_doc`, fractions), with those seeds;
    ``streets``: the scans are that many streets' (resampled as such)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return {"seeds": [], "mean": None, "ci95": None, "per_seed": [], "per_class": {}}
    g = paired_gain(np.stack([a[s] for s in seeds]), np.stack([b[s] for s in seeds]), reps=reps,
                    streets=streets)  # fmt: skip
    return {"seeds": seeds, **gain_doc(g)}


def compare_doc(
    nets: Sequence[Net],
    cms: dict[str, dict[int, np.ndarray]],
    pairs: Sequence[tuple[str, str]],
    seeds: Sequence[int],
    reps: int,
    streets: int | None = None,
) -> dict[str, Any]:
    """Every network's mIoU per seed and every pair's paired gain (``streets``: how many
    streets the scans are, resampled as such)."""
    net_docs = {}
    for net in nets:
        by_seed = {s: float(miou_from_confusion(cm.sum(0))) for s, cm in cms[net.name].items()}
        net_docs[net.name] = {
            "kind": "teacher" if net.teacher else "student",
            "pattern": net.pattern,
            "miou": {str(s): v for s, v in by_seed.items()},
            "mean": float(np.mean(list(by_seed.values()))),
            "missing_seeds": [s for s in seeds if s not in by_seed],
        }
    pair_docs = {f"{a} - {b}": pair_doc(cms[a], cms[b], reps, streets) for a, b in pairs}
    return {"nets": net_docs, "pairs": pair_docs}


def markdown(doc: dict[str, Any]) -> str:
    """The comparison as two Markdown tables (networks, then pairs), in mIoU points."""
    w = doc["streets"]
    lines = [
        f"Scored on {w['split']} streets {w['seeds']} x {w['scans_per_street']} scans "
        f"(stride {w['stride']}, LiDAR {w['beams']}), commit {doc['commit'][:10]}.",
        "",
        "| network | kind | mIoU per seed | mean | missing seeds |",
        "|---|---|---|---|---|",
    ]
    for name, n in doc["nets"].items():
        per = " / ".join(pct(v) for v in n["miou"].values())
        miss = ", ".join(map(str, n["missing_seeds"])) or "-"
        lines.append(f"| {name} | {n['kind']} | {per} | {pct(n['mean'])} | {miss} |")
    if doc["pairs"]:
        lines += [
            "",
            "| pair (A - B) | seeds | gain [95 % CI] | per seed |",
            "|---|---|---|---|",
        ]
        for name, p in doc["pairs"].items():
            gain = ci_text(p)
            per = " / ".join(pct(v, True) for v in p["per_seed"]) or "-"
            seeds = ", ".join(map(str, p["seeds"])) or "none in common"
            lines.append(f"| {name} | {seeds} | {gain} | {per} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser("compare", __doc__.split("\n\n")[0])
    p.add_argument(
        "--net",
        type=parse_net,
        action="append",
        metavar="NAME=PATTERN",
        help="a student network: checkpoint path with {seed}, scored through the "
        "node's Segmenter (repeatable)",
    )
    p.add_argument(
        "--teacher",
        type=parse_net,
        action="append",
        metavar="NAME=PATTERN",
        help="a fusion teacher (teacher.pt with its run's recipe.json beside it), "
        "scored with its cameras (repeatable)",
    )
    p.add_argument(
        "--pair",
        type=parse_pair,
        action="append",
        metavar="A:B",
        help="report the paired gain A - B (repeatable)",
    )
    p.add_argument("--seeds", type=parse_seeds, default=[0, 1, 2], help="training seeds")
    p.add_argument(
        "--split",
        choices=("val", "test"),
        default="val",
        help="val: validation streets (100-999); test: reserved streets (9000-9999)",
    )
    p.add_argument("--streets", type=parse_seeds, required=True, help="world seeds, e.g. 140-149")
    p.add_argument("--scans", type=int, default=4, help="scans per street")
    p.add_argument("--stride", type=int, default=10, help="frames between a street's scans")
    p.add_argument("--beams", type=rig_arg, default=32, help="LiDAR: beams or a named rig")
    p.add_argument(
        "--out",
        required=True,
        help="output folder (compare.json, .md, scores.npz; scores/ keeps each network's "
        "confusions, so a rerun scores only what is new)",
    )
    add_registered_args(p)
    add_report_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    check_seeds(args.split, args.streets)  # before anything, cached or not
    registered = check_registered(args, args.split, args.streets)
    nets = build_nets(args)
    pairs = list(args.pair or [])
    cams, hw = camera_rig([n for n in nets if n.teacher], args.seeds)
    street_set = {"split": args.split, "seeds": list(args.streets), "scans": args.scans,
                  "stride": args.stride, "beams": str(args.beams), "cameras": cams,
                  "render_hw": list(hw)}  # fmt: skip
    rendered: list[list[HeldOutScan]] = []

    def scans() -> list[HeldOutScan]:
        """The street set, rendered once and only if some network is not cached."""
        if not rendered:
            bar = progress_bar(args.progress, len(args.streets) * args.scans, f"{args.split} scans")
            rendered.append(held_out_scans(
                args.streets, args.scans, args.stride, args.beams, cams, hw, bar, split=args.split
            ))  # fmt: skip
        return rendered[0]

    out = Path(args.out)
    total = sum(len(found_seeds(n, args.seeds)) for n in nets)
    bar = progress_bar(args.progress, total, "networks")
    cms = score_nets(nets, args.seeds, scans, out / "scores", street_set, bar)
    doc = compare_doc(nets, cms, pairs, args.seeds, args.bootstrap, len(args.streets))
    rev, dirty = git_commit(Path(__file__).resolve().parents[1])
    doc = {
        "streets": {
            "split": args.split,
            "seeds": seed_span(args.streets),
            "scans_per_street": args.scans,
            "stride": args.stride,
            "beams": str(args.beams),
            "registered": registered,
        },
        "commit": rev + ("+dirty" if dirty else ""),
        "command": "python -m xmodelkd_ros.evaluation.compare " + " ".join(args.argv),
        **doc,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "compare.md").write_text(markdown(doc))
    np.savez_compressed(
        out / "scores.npz", **{f"{n}_seed{s}": cm for n, by in cms.items() for s, cm in by.items()}
    )
    print(markdown(doc), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_tool_args(build_parser(), argv)
    return run_tool(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
