"""``python -m xmodelkd_ros.evaluation.cross_sensor``: trained students on other LiDARs.

Why: a student meets the LiDAR its vehicle carries. A model trained on a 32-beam rig and
deployed behind 16, 64 or 128 beams, another vertical field of view or another mounting
can lose accuracy silently; the benchmark scores one rig only. This command takes trained
students (the benchmark's run folders, a ``train`` output folder, or explicit checkpoint
paths; one or more seeds), renders the SAME reserved test streets through every rig asked
for, scores every labeled point through the node's ``Segmenter`` (as the benchmark does),
and reports per rig and model the mIoU, the drop against the training rig paired scan by
scan with a bootstrap 95 % interval over seeds, streets and their scans, per class, and
whether the distilled student loses less than the baseline. A diagnosis (:mod:`.sensor_stats`) says
how each rig's scans differ from the training rig's: density per voxel, vertical extent,
ground height and tilt, range, intensity, class mix. ``--align`` adds, for every rig
mounted otherwise than the training rig, the node's mounting alignment (``input.align_mount``
with the rig's true pose as the calibration) as a row ``<rig>+aligned``. Writes
``cross_sensor.md`` / ``cross_sensor.json`` (and the per-scan confusions,
``cross_sensor_scores.npz``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
    tool_prog,
)
from xmodelkd_ros.evaluation.cross_sensor_report import (
    class_markdown,
    rig_label,
    summarize,
    table_markdown,
)
from xmodelkd_ros.evaluation.score import (
    BenchmarkError,
    held_out_scans,
    score_student,
    trained_recipe,
)
from xmodelkd_ros.evaluation.sensor_stats import compare, diagnosis_markdown, public, rig_stats
from xmodelkd_ros.runtime.mount import alignment, apply_alignment, rig_pose
from xmodelkd_ros.sim.rigs import CROSS_SENSOR_RIGS, RigError, rig, rigs_of
from xmodelkd_ros.sim.splits import check_seeds

#: The row of a rig's scans moved to the training rig's mount (``--align``).
ALIGNED = "+aligned"

#: Checkpoint file of each model in a run folder (as ``train`` and the benchmark write them).
MODEL_FILES = {"distilled": "student.pt", "baseline": "baseline.pt"}


def seed_dirs(run: Path) -> list[Path]:
    """The seed folders of ``run``: itself when it holds a checkpoint, else its ``seed*``
    folders, else those of its one ``labels*`` folder (the benchmark's layout)."""
    if any((run / f).is_file() for f in MODEL_FILES.values()):
        return [run]
    found = sorted(p for p in run.glob("seed*") if p.is_dir())
    if found:
        return found
    labels = sorted(p for p in run.glob("labels*") if p.is_dir())
    if len(labels) > 1:
        names = ", ".join(p.name for p in labels)
        raise BenchmarkError(f"{run} holds several label fractions ({names}): pass one")
    if labels:
        return sorted(p for p in labels[0].glob("seed*") if p.is_dir())
    raise BenchmarkError(f"no student.pt / baseline.pt under {run}")


def find_checkpoints(args: argparse.Namespace) -> dict[str, list[Path]]:
    """Model -> checkpoint per seed (paired by position), from ``--runs`` or the explicit
    ``--distilled`` / ``--baseline`` lists; a model missing from some seed is an error."""
    out: dict[str, list[Path]] = {}
    if args.runs:
        dirs = [d for run in args.runs for d in seed_dirs(Path(run))]
        for model, file in MODEL_FILES.items():
            have = [d / file for d in dirs if (d / file).is_file()]
            if have and len(have) != len(dirs):
                missing = [str(d) for d in dirs if not (d / file).is_file()]
                raise BenchmarkError(f"{file} missing in {', '.join(missing)}")
            if have:
                out[model] = have
    for model in MODEL_FILES:
        paths = [Path(p) for p in getattr(args, model) or []]
        for p in paths:
            if not p.is_file():
                raise BenchmarkError(f"checkpoint not found: {p}")
        if paths:
            out[model] = out.get(model, []) + paths
    if not out:
        raise BenchmarkError("no checkpoints: give --runs or --distilled / --baseline")
    counts = {m: len(p) for m, p in out.items()}
    if len(set(counts.values())) != 1:
        raise BenchmarkError(f"models need one checkpoint per seed each, got {counts}")
    return out


def trained_rigs(path: Path) -> list[str]:
    """The rigs a student checkpoint was trained on, from its recipe (provenance)."""
    data = trained_recipe(path).get("data") or {}
    try:
        return [r.name for r in rigs_of(str(data.get("dataset", "synthetic")),
                                        list(data.get("rigs") or ()))]  # fmt: skip
    except RigError as exc:
        raise BenchmarkError(f"{path}: {exc}") from None


def reference_rig(args: argparse.Namespace, ckpts: dict[str, list[Path]]) -> str:
    """``--reference``, else the rig every checkpoint was trained on (the first of a mix)."""
    if args.reference:
        return rig(args.reference).name
    firsts = {(trained_rigs(p) or ["32"])[0] for paths in ckpts.values() for p in paths}
    if len(firsts) != 1:
        raise BenchmarkError(f"the checkpoints were trained on different rigs {sorted(firsts)}: "
                             "pass --reference")  # fmt: skip
    return firsts.pop()


def mounted_otherwise(rigs: list[str], reference: str) -> list[str]:
    """The rigs whose height or pitch differs from ``reference``'s (``--align`` rows)."""
    ref = rig(reference)
    return [r for r in rigs
            if (rig(r).height, rig(r).pitch_deg) != (ref.height, ref.pitch_deg)]  # fmt: skip


def aligned_scans(scans: list[Any], name: str, reference: str) -> list[Any]:
    """``scans`` of rig ``name`` moved to ``reference``'s mount, as the node's
    ``input.align_mount`` does with the rig's true pose as its calibration."""
    r, ref = rig(name), rig(reference)
    T = alignment(rig_pose(r.height, r.pitch_deg), ref.height, ref.pitch_deg)
    return [dataclasses.replace(s, points=apply_alignment(s.points, T)) for s in scans]


def score_rigs(args: argparse.Namespace, ckpts: dict[str, list[Path]], rigs: list[str],
               log: Any, align: Sequence[str] = ()
               ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:  # fmt: skip
    """Render the test streets through each rig and score every checkpoint on them:
    model -> rig -> (seeds, scans, K, K) confusions, and rig -> diagnosis statistics; the
    rigs of ``align`` also moved to ``rigs[0]``'s mount, as rows ``<rig>+aligned``."""
    from xmodelkd_ros.nets.checkpoint import load_student

    grid = load_student(next(iter(ckpts.values()))[0]).grid
    seeds = list(args.test_seeds)  # checked by run() before anything was loaded
    cms: dict[str, dict[str, np.ndarray]] = {m: {} for m in ckpts}
    stats: dict[str, Any] = {}
    n_runs = sum(len(p) for p in ckpts.values())
    total = (len(rigs) + len(align)) * n_runs
    bar = progress_bar(args.progress, total, "cross-sensor (rig, checkpoint)")
    for name in rigs:
        t0 = time.perf_counter()
        scans = held_out_scans(seeds, args.test_scans, args.test_stride, name, 0, (1, 1),
                               None, args.split)  # fmt: skip
        rows = [(name, scans)]
        if name in align:
            rows.append((name + ALIGNED, aligned_scans(scans, name, rigs[0])))
        for row, row_scans in rows:
            stats[row] = rig_stats(row_scans, grid)
            for model, paths in ckpts.items():
                cms[model][row] = np.stack([score_student(p, row_scans) for p in paths])
                if bar is not None:
                    bar.update(len(paths))
        log(f"{name}: {len(scans)} scans, {stats[name]['points_per_scan']:.0f} points each, "
            f"scored in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    if bar is not None:
        bar.close()
    return cms, stats


def markdown(doc: dict[str, Any], notes: dict[str, list[str]], stats: dict[str, Any]) -> str:
    m = doc["meta"]
    seeds = len(m["checkpoints"][m["models"][0]])
    lines = ["# Cross-sensor table", ""]
    if seeds == 1:
        lines += ["**One training seed.** The intervals resample the test scans only, not "
                  "training: read them as the spread of this measurement, not as a gain.", ""]
    lines += [
        f"Students trained on rig **{m['reference']}** ({m['reference_label']}), scored on "
        f"the same {len(m['test_seeds'])} {m['split']} streets ({m['test_seeds_text']}) x "
        f"{m['test_scans']} scans (every {m['test_stride']} frames) rendered through each "
        f"rig; {seeds} seed(s) per model; every labeled point counts (out of the grid = "
        "wrong). mIoU in %, drop = rig - trained rig, paired scan by scan; intervals: "
        f"bootstrap over seeds, streets and their scans ({m['bootstrap_reps']} replicates).",
        "",
        *table_markdown(doc),
        "",
        *class_markdown(doc),
        "",
        "## Where the drop comes from",
        "",
        *diagnosis_markdown(stats, notes, m["reference"]),
        "",
        f"Command: `{m['command']}` (commit {m['commit'][:10]}"
        f"{', dirty' if m['dirty'] else ''}).",
        "",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    check_seeds(args.split, args.test_seeds)  # before anything is loaded or rendered
    registered = check_registered(args, args.split, args.test_seeds)
    ckpts = find_checkpoints(args)
    reference = reference_rig(args, ckpts)
    try:
        rigs = [rig(r).name for r in args.rigs]
    except RigError as exc:
        raise BenchmarkError(str(exc)) from None
    rigs = [reference] + [r for r in dict.fromkeys(rigs) if r != reference]
    align = mounted_otherwise(rigs, reference) if args.align else []
    log(f"cross-sensor: {', '.join(f'{m} x {len(p)}' for m, p in ckpts.items())}, "
        f"trained on {reference}, rigs {', '.join(rigs)}"
        f"{'; aligned to its mount: ' + ', '.join(align) if align else ''}")  # fmt: skip
    cms, stats = score_rigs(args, ckpts, rigs, log, align)
    notes = compare(stats, reference)
    commit, dirty = git_commit(Path(__file__).resolve().parents[1])
    doc = {
        "meta": {
            "command": f"{tool_prog('cross_sensor')} {shlex.join(args.argv)}",
            "commit": commit,
            "dirty": dirty,
            "models": list(ckpts),
            "checkpoints": {m: [str(p) for p in ps] for m, ps in ckpts.items()},
            "trained_on": {m: [trained_rigs(p) for p in ps] for m, ps in ckpts.items()},
            "reference": reference,
            "reference_label": rig_label(rig(reference).to_dict()),
            "rig_specs": {
                **{r: rig(r).to_dict() for r in rigs},
                **{r + ALIGNED: {**rig(r).to_dict(), "aligned_to": reference} for r in align},
            },
            "aligned": [r + ALIGNED for r in align],
            "split": args.split,
            "test_seeds": list(args.test_seeds),
            "test_seeds_text": args.test_seeds_text,
            "registered": registered,
            "test_scans": args.test_scans,
            "test_stride": args.test_stride,
            "bootstrap_reps": args.bootstrap,
        },
        "rigs": summarize(cms, reference, args.bootstrap, len(args.test_seeds)),
        "diagnosis": {r: {**public(s), "differs": notes[r]} for r, s in stats.items()},
    }
    flat = {f"{m}/{r}": cm for m, by in cms.items() for r, cm in by.items()}
    np.savez_compressed(out / "cross_sensor_scores.npz", **flat)
    (out / "cross_sensor.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "cross_sensor.md").write_text(markdown(doc, notes, stats))
    log(f"cross-sensor: wrote {out / 'cross_sensor.md'}")
    return doc


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(
        "cross_sensor",
        "Score trained students on the same reserved test streets rendered through several "
        "LiDAR rigs (beams, vertical field of view, mounting height, pitch): mIoU per rig, "
        "the paired drop against the training rig with its 95%% bootstrap interval, per "
        "class, and where the drop comes from. Writes cross_sensor.md / .json.",
    )
    p.add_argument("--runs", nargs="+", default=[],
                   help="run folders: a train output (student.pt, baseline.pt), a folder of "
                   "seed* runs, or a benchmark output (labels*/seed*)")  # fmt: skip
    p.add_argument("--distilled", nargs="+", metavar="CKPT",
                   help="distilled student checkpoints, one per seed")  # fmt: skip
    p.add_argument("--baseline", nargs="+", metavar="CKPT",
                   help="baseline checkpoints, one per seed (paired with --distilled)")  # fmt: skip
    p.add_argument("--rigs", type=lambda t: [x for x in t.split(",") if x.strip()],
                   default=list(CROSS_SENSOR_RIGS),
                   help="rigs to render the test streets with (xmodelkd_ros.sim.rigs)")  # fmt: skip
    p.add_argument("--reference", default=None,
                   help="the rig the drops are measured against (default: the training rig "
                   "recorded in the checkpoints)")  # fmt: skip
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="test: reserved streets, for the measurement; val: validation "
                   "streets, for choosing the training options")  # fmt: skip
    p.add_argument("--test-seeds", required=True,
                   help="streets of --split: reserved test streets 9000-9999 never used "
                   "before (`python -m xmodelkd_ros.evaluation.ledger next` prints free "
                   "ones), e.g. 9908-9915; validation "
                   "streets 100-999")  # fmt: skip
    p.add_argument("--align", action="store_true",
                   help="also score every rig mounted otherwise than the training rig with "
                   "its scans moved to the training mount (the node's input.align_mount, "
                   "the rig's true pose as calibration): rows <rig>+aligned")  # fmt: skip
    p.add_argument("--test-scans", type=int, default=4, help="scans per test street")
    p.add_argument("--test-stride", type=int, default=10, help="frames between test scans")
    p.add_argument("--out", default="runs/cross_sensor", help="output folder")
    add_registered_args(p)
    add_report_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_tool_args(build_parser(), argv)
    if args.test_scans < 1:
        print("error: --test-scans must be >= 1", file=sys.stderr)
        return 2
    try:
        args.test_seeds_text = args.test_seeds
        args.test_seeds = parse_seeds(args.test_seeds)
    except argparse.ArgumentTypeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def work() -> int:
        run(args)
        return 0

    return run_tool(work)


if __name__ == "__main__":
    sys.exit(main())
