"""``python -m xmodelkd_ros.evaluation.benchmark``: the one way accuracy is claimed.

Why: a gain measured on the street that chose the recipe, on one seed, with out-of-grid
points dropped, is not evidence. This command trains the teacher, the distilled student
and the labels-only baseline for several seeds (paired: same initialisation and data order
for distilled and baseline, as ``train`` does), on the recipe's training streets, with any
selection on its validation streets, and scores them on held-out test streets from a
reserved seed range (:mod:`xmodelkd_ros.sim.splits`) that training and validation refuse.
Every labeled test point counts (out-of-grid points are wrong); students go through the
node's ``Segmenter``. It reports the mean paired gain with a 95 % bootstrap interval over
seeds, test streets and their scans, per-class deltas and the test class counts
(``benchmark.md`` / ``benchmark.json`` / ``benchmark.png``).

Training goes through the training API (``training.api.train``) in this process, with the
recipe loaded once and a copy per (label fraction, seed), each in its own output folder; a
finished (fraction, seed) is kept, so a killed benchmark continues where it stopped (a
half-trained stage resumes from its checkpoint).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xmodelkd_ros.evaluation.arms import ARMS, method_markdown, method_summary, parse_arms
from xmodelkd_ros.evaluation.cli import (
    HeldOutTool,
    add_output_args,
    add_report_args,
    add_test_street_args,
    parse_fraction,
    parse_fractions,
    parse_seeds,
    parse_tool_args,
    progress_bar,
    run_tool,
    tool_parser,
)
from xmodelkd_ros.evaluation.score import (
    BenchmarkError,
    class_counts,
    score_student,
    score_teacher,
)
from xmodelkd_ros.sim.splits import check_seeds
from xmodelkd_ros.training.api import RECIPE_FILE
from xmodelkd_ros.training.recipe import Recipe, RecipeError, load_recipe
from xmodelkd_ros.training.stages import recipe_epochs

CHECKPOINTS = {"teacher": "teacher.pt", "distilled": "student.pt", "baseline": "baseline.pt"}
#: the stated minimum: every class has at least this many labeled points in the test split
MIN_CLASS_POINTS = 200
#: --quick: the plumbing end to end in minutes (numbers meaningless)
QUICK_SET = [
    "schedule.teacher_epochs=2",
    "schedule.student_epochs=2",
    "data.train_scans=8",
    "data.val_scans=3",
]
QUICK_TEST = {"test_seeds": "9000-9001", "test_scans": 2, "seeds": 2}


def run_training(recipe: Recipe, stage: str, *, threads: int | None, parallel: bool) -> None:
    """Train ``stage`` of ``recipe`` in this process, resuming what a stopped run left (the
    one place the benchmark starts training); a failure is a :class:`BenchmarkError`."""
    from xmodelkd_ros.nets.checkpoint import CheckpointError
    from xmodelkd_ros.nets.image_encoder import WeightLoadError
    from xmodelkd_ros.training.api import train
    from xmodelkd_ros.training.context import TrainingStoppedError
    from xmodelkd_ros.training.data.semantickitti import DatasetError

    try:
        train(recipe, stage, resume=True, progress=False, threads=threads,
              parallel_baseline=parallel)  # fmt: skip
    except TrainingStoppedError as exc:
        if exc.code == 130:
            raise KeyboardInterrupt from exc  # checkpoints written; the same command resumes
        raise BenchmarkError(f"training stopped in {recipe.out}: {exc}") from exc
    except (DatasetError, CheckpointError, RecipeError, WeightLoadError) as exc:
        raise BenchmarkError(f"training failed in {recipe.out}: {exc}") from exc


class Benchmark(HeldOutTool):
    """One benchmark run: settings, the test scans, and the per-(fraction, seed) work."""

    tool = "benchmark"

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.fractions = args.regimes or [args.label_fraction]
        self.test_seeds = check_seeds("test", args.test_seeds)
        self.sets = (QUICK_SET if args.quick else []) + list(args.overrides)  # user wins
        self.key = {
            "recipe": args.recipe,
            "set": self.sets,
            "test_seeds": self.test_seeds,
            "test_scans": args.test_scans,
            "test_stride": args.test_stride,
            "beams": args.beams,
            "cameras": args.cameras,
        }
        self.arms = list(args.arms)  # the ablations' extra arms (arms.py)
        if self.arms:
            self.key["arms"] = self.arms
        try:  # a bad recipe or --set fails here, before anything trains
            self.base_recipe = load_recipe(args.recipe, self.sets)
        except RecipeError as exc:
            raise BenchmarkError(str(exc)) from None

    def run_dir(self, fraction: float, seed: int) -> Path:
        return self.out / f"labels{fraction:g}" / f"seed{seed}"

    def recipe(self, run_dir: Path) -> Recipe:
        """The resolved recipe a run trained with (its ``recipe.json``)."""
        try:
            return load_recipe(str(run_dir / RECIPE_FILE))
        except RecipeError as exc:
            raise BenchmarkError(str(exc)) from None

    def scans(self, recipe: Recipe) -> list[Any]:
        """The test scans, rendered at the first run's ``render_size`` (once a run)."""
        return self.street_scans(
            "test", self.test_seeds, self.args.test_scans, self.args.test_stride,
            self.args.cameras, tuple(recipe.data.render_size),
        )  # fmt: skip

    def run_recipe(self, fraction: float, seed: int, run_dir: Path) -> Recipe:
        """The benchmark's recipe for one (label fraction, seed): its own folder."""
        recipe = copy.deepcopy(self.base_recipe)
        recipe.out, recipe.seed = str(run_dir), seed
        recipe.data.label_fraction = fraction
        return recipe

    def train(self, fraction: float, seed: int, run_dir: Path) -> None:
        recipe = self.run_recipe(fraction, seed, run_dir)
        for stage in ("all", *self.arms):  # the arms' stages run after the pipeline
            parallel = stage == "all" and self.args.parallel_baseline
            self.log(f"train: {stage} stage of {run_dir / RECIPE_FILE}"
                     f"{' (baseline in parallel)' if parallel else ''}")  # fmt: skip
            run_training(recipe, stage, threads=self.args.threads, parallel=parallel)

    def seed_result(self, fraction: float, seed: int) -> dict[str, Any]:
        """Train and score one (label fraction, seed), or load it when already done."""
        run_dir = self.run_dir(fraction, seed)
        done = run_dir / "bench_scores.json"
        if done.is_file():
            doc = json.loads(done.read_text())
            if doc.get("key") == self.key:
                self.log(f"labels {fraction:g} seed {seed}: already done ({done})")
                doc["confusion"] = np.load(run_dir / "bench_scores.npz")
                return doc
            self.log(f"labels {fraction:g} seed {seed}: settings changed, scoring again")
        run_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        self.train(fraction, seed, run_dir)
        t_train = time.perf_counter() - t0
        recipe = self.recipe(run_dir)
        scans = self.scans(recipe)
        t1 = time.perf_counter()
        cms = {"teacher": score_teacher(run_dir / CHECKPOINTS["teacher"], scans, recipe)}
        for name in ("distilled", "baseline", *self.arms):
            cms[name] = score_student(run_dir / {**CHECKPOINTS, **ARMS}[name], scans)
        val = {}
        report = run_dir / "report.json"
        if report.is_file():
            models = json.loads(report.read_text()).get("models", {})
            val = {k: v.get("miou") for k, v in models.items()}
        doc = {
            "key": self.key,
            "label_fraction": fraction,
            "seed": seed,
            "validation_miou": val,
            "train_s": t_train,
            "score_s": time.perf_counter() - t1,
        }
        np.savez_compressed(run_dir / "bench_scores.npz", **cms)
        done.write_text(json.dumps(doc, indent=1))
        doc["confusion"] = cms
        return doc

    def run(self) -> dict[str, Any]:
        from xmodelkd_ros.evaluation.report import summarize, write_outputs

        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        commit, dirty = self.commit()
        self.log(
            f"benchmark: label fractions {self.fractions}, seeds {self.seeds}, test streets "
            f"{self.test_seeds} x {self.args.test_scans} scans, {self.args.beams} beams, "
            f"{self.args.cameras} cameras, commit {commit[:10]}{' (dirty)' if dirty else ''}"
        )
        # seed-major: a run stopped early still has every fraction for its first seeds
        todo = [(f, s) for s in self.seeds for f in self.fractions]
        bar = progress_bar(self.args.progress, len(todo), "benchmark (fraction, seed)")
        results: dict[float, list[dict[str, Any]]] = {f: [] for f in self.fractions}
        for f, s in todo:
            if bar is not None:
                bar.set_postfix(labels=f"{f:g}", seed=s)
            results[f].append(self.seed_result(f, s))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        recipe = self.recipe(self.run_dir(self.fractions[0], self.seeds[0]))
        counts = class_counts(self.scans(recipe))
        doc = summarize(
            results,
            counts,
            meta={
                "command": f"{self.prog} {shlex.join(self.args.argv)}",
                "commit": commit,
                "dirty": dirty,
                **self.key,
                "seeds": self.seeds,
                "label_fractions": self.fractions,
                "min_class_points": MIN_CLASS_POINTS,
                "bootstrap_reps": self.args.bootstrap,
                "validation_seeds": recipe.data.val_seeds,
                "train_seeds": recipe.data.train_seeds,
                "schedule": dataclasses.asdict(recipe.schedule),
                "epochs": recipe_epochs(recipe),
            },
            reps=self.args.bootstrap,
            streets=len(self.test_seeds),
        )
        doc["wall_s"] = {
            "train_and_score": sum(r["train_s"] + r["score_s"] for rs in results.values()
                                   for r in rs),
            "this_invocation": time.perf_counter() - t0,
        }  # fmt: skip
        dirs = {f: [self.run_dir(f, s) for s in self.seeds] for f in self.fractions}
        doc["method"] = method_summary(results, self.arms, dirs, self.args.bootstrap,
                                       len(self.test_seeds))
        write_outputs(self.out, doc)
        with open(self.out / "benchmark.md", "a") as fh:
            fh.write(method_markdown(doc["method"]))
        self.log(f"benchmark: wrote {self.out / 'benchmark.md'}")
        return doc


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(
        "benchmark",
        "Held-out accuracy benchmark: train teacher, distilled student and "
        "baseline for several seeds on the recipe's training streets and score them on "
        "reserved test streets (every labeled point; students through the node's Segmenter). "
        "Writes benchmark.md / .json / .png with the mean paired gain and its 95%% bootstrap "
        "interval. Measured on an idle 2-core CPU: one (label fraction, seed) of the default "
        "recipe trains in 10-16 min with --parallel-baseline (the demo's training), its scoring "
        "~0.5 min; --quick 2.2 min. A killed run continues where it stopped.",
    )
    p.add_argument("--recipe", default="synthetic", help="training recipe (name or YAML path)")
    add_output_args(p, "runs/benchmark", "training seeds 0..N-1 (paired runs)")
    add_test_street_args(p, parse_seeds("9000-9003"), "held-out test streets (world seeds "
                         "from the reserved range 9000-9999), e.g. 9000-9003 or 9000,9010")
    p.add_argument("--cameras", type=int, default=3, help="cameras of the test rig (teacher)")
    p.add_argument("--label-fraction", type=parse_fraction, default=1.0,
                   help="share of training scans with labels (the rest: images only)")  # fmt: skip
    p.add_argument("--regimes", type=parse_fractions, default=None,
                   help="several label fractions in one run, e.g. 1.0,0.1 "
                   "(overrides --label-fraction)")  # fmt: skip
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                   metavar="KEY=VALUE", help="recipe overrides passed to training")  # fmt: skip
    p.add_argument("--arms", type=parse_arms, default=[],
                   help="extra arms trained after the pipeline and scored like the students: "
                   "selftrain (LiDAR-only self-training control), lasermix (LiDAR-only "
                   "LaserMix control), joint (2DPASS-style single stage), e.g. "
                   "--arms selftrain,lasermix")  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="plumbing check: 2 seeds, 2+2 epochs, 8 training scans, 2 test streets "
                   "x 2 scans (its numbers mean nothing)")  # fmt: skip
    p.add_argument("--threads", type=int, help="torch CPU threads for training")
    p.add_argument("--parallel-baseline", action="store_true",
                   help="train each seed's baseline in a second process beside its teacher -> "
                   "distill (train --parallel-baseline; same weights, less wall time on 2+ "
                   "cores)")  # fmt: skip
    add_report_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_tool_args(parser, argv)
    if args.quick:  # smaller defaults; explicit flags still win
        for k, v in QUICK_TEST.items():
            if getattr(args, k) == parser.get_default(k):
                setattr(args, k, parse_seeds(v) if k == "test_seeds" else v)
    if args.seeds < 1 or args.test_scans < 1 or args.cameras < 1:
        print("error: --seeds, --test-scans and --cameras (the teacher's) must be >= 1",
              file=sys.stderr)  # fmt: skip
        return 2

    def work() -> int:
        Benchmark(args).run()
        return 0

    return run_tool(work)


if __name__ == "__main__":
    sys.exit(main())
