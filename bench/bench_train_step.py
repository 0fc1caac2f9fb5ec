"""What one training step of each student-stage arm costs on this CPU, side by side.

Why: every accuracy measurement here is a grid of training lengths on 2 cores, and which
grid fits in a session depends on what a step of each arm costs (the distilled student
runs the fusion teacher forward; LaserMix a mean teacher and a second, mixed pass; the
distilled LaserMix student both). Logged ``points/s`` are not comparable between arms
(each counts what it processes), so this times whole steps: the interval between two
``before_step`` calls of the trainer, data loading included, in the real training loop
(``train.main`` with a timing hook) on the recipe's own data.

Arms run in interleaved rounds (baseline, distill, lasermix, distill + LaserMix, then
again; a first round fills the render cache and is not counted), so a slow phase of the
machine hits them alike; the first ``--warmup`` steps of a run are dropped, a run's cost
is its median step, an arm's the median over rounds, and the ratios are taken per round
before their median. A one-step teacher serves the distilling arms (its size, not its
accuracy, sets their cost).

Run: ``python bench/bench_train_step.py [--steps 20 --rounds 3 --pool 40]``; ``--doc
docs/performance.md`` replaces the ``bench_train_step`` block there.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from doc_block import replace_block

from xmodelkd_ros.training.hooks import HookBase
from xmodelkd_ros.training.train import main as train_main

#: arm -> (stage, extra recipe overrides)
ARMS = {
    "baseline": ("baseline", []),
    "distill": ("distill", []),
    "lasermix": ("lasermix", []),
    "distill + LaserMix": ("distill", ["loss.distill_lasermix=true"]),
}


class StepClock(HookBase):
    """Wall time between successive ``before_step`` calls (one step, loading included)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def before_step(self, trainer: object) -> None:
        self.stamps.append(time.perf_counter())

    def intervals(self, warmup: int) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)][warmup:]


def recipe_sets(args: argparse.Namespace, cache: Path) -> list[str]:
    pool = ([f"data.unlabeled_seeds=[{','.join(str(s) for s in range(10, 20))}]",
             f"data.unlabeled_scans={args.pool}"] if args.pool else [])  # fmt: skip
    return ["data.label_fraction=0.1", "data.labeled_per_batch=1", "data.val_scans=1",
            "data.temporal_views=0", "schedule.pretrain_epochs=0", f"data.cache_dir={cache}",
            "log.tensorboard=false", f"threads={args.threads}", *pool]  # fmt: skip


def run_arm(arm: str, folder: Path, teacher: Path, args: argparse.Namespace,
            sets: list[str]) -> float:  # fmt: skip
    """Median step time (s) of one short run of ``arm`` in a fresh ``folder``."""
    stage, extra = ARMS[arm]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copy(teacher, folder / "teacher.pt")
    clock = StepClock()
    argv = ["--recipe", args.recipe, "--stage", stage, "--out", str(folder), "--no-progress",
            "--set", *sets, *extra, "schedule.student_epochs=1", "schedule.control_epochs=1",
            f"schedule.steps_per_epoch={args.steps + args.warmup + 1}"]  # fmt: skip
    if train_main(argv, hooks=[clock]) != 0:
        raise SystemExit(f"error: the {arm} run failed ({folder / 'train.log'})")
    return statistics.median(clock.intervals(args.warmup))


def table(costs: dict[str, list[float]], rounds: int) -> str:
    base = costs["baseline"]
    ratio = {a: statistics.median(c[r] / base[r] for r in range(rounds)) for a, c in costs.items()}
    lines = ["| arm | median step (s) | x baseline |", "| --- | --- | --- |"]
    for arm, c in costs.items():
        lines.append(f"| {arm} | {statistics.median(c):.3f} | {ratio[arm]:.2f}x |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="synthetic_scarce", help="training recipe")
    p.add_argument("--steps", type=int, default=20, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed first steps per run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all arms")
    p.add_argument("--pool", type=int, default=40, help="unlabeled pool scans (0 = none)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp)")
    p.add_argument("--doc", type=Path, default=None, help="write the table into this page")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_train_step_"))
    sets = recipe_sets(args, work / "cache")
    teacher_dir = work / "teacher"
    argv = ["--recipe", args.recipe, "--stage", "teacher", "--out", str(teacher_dir),
            "--no-progress", "--set", *sets, "schedule.teacher_epochs=1",
            "schedule.steps_per_epoch=1"]  # fmt: skip
    if train_main(argv) != 0:
        raise SystemExit(f"error: the teacher run failed ({teacher_dir / 'train.log'})")
    costs: dict[str, list[float]] = {a: [] for a in ARMS}
    for r in range(-1, args.rounds):  # round -1: untimed, renders and caches the scans
        for arm in ARMS:
            cost = run_arm(arm, work / "run", teacher_dir / "teacher.pt", args, sets)
            if r >= 0:
                costs[arm].append(cost)
            print(f"round {r + 1}/{args.rounds} {arm}: {cost:.3f} s/step"
                  + (" (warm-up, not counted)" if r < 0 else ""), file=sys.stderr)  # fmt: skip
    text = (f"`python bench/bench_train_step.py --steps {args.steps} --rounds {args.rounds} "
            f"--pool {args.pool} --threads {args.threads}` ({args.recipe}, 10 % labels, "
            "one labeled scan per batch)\n\n" + table(costs, args.rounds))  # fmt: skip
    print(text)
    if args.doc is not None:
        replace_block(args.doc, "bench_train_step", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
