"""Train candidate option sets of the student stages over shared teachers, paired by seed.

Why: a choice between options of the student stages (sensor augmentation, KD weights, a
student length) is fair only when the candidates differ in nothing else. Each seed's
teacher is trained once (or taken from ``--teachers``) and copied into every candidate's
folder, so every candidate's distilled student starts from the same teacher and every
baseline from the same initialisation and data order; only the candidate's ``--set``
differs. Jobs (teacher per seed, then the LiDAR-only controls of ``--controls``, default
``baseline``, and ``distill`` per candidate and seed) run as child processes, ``--jobs`` at
a time, each on one thread; a killed run resumes from each stage's ``last.pt`` when the
same command runs again. The controls train with the candidate's recipe too, so a
candidate that sets a length or an unlabeled pool sets it for the student and its
controls alike (``selftrain`` waits for its folder's ``baseline``, its labeller).

Output: ``<out>/teachers/seed<s>/`` and ``<out>/<candidate>/seed<s>/`` (``teacher.pt``,
``student.pt``, ``baseline.pt`` and the other controls' checkpoints, ``recipe.json``, and
each stage's console output in ``<stage>.console.log``, so jobs side by side do not
interleave their lines), the layout ``cross_sensor --runs <out>/<candidate>`` and
``choose`` read. It scores nothing:
validation and test scoring are separate commands, so training never sees a street that
judges it.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from xmodelkd_ros.evaluation.cli import (
    HeldOutTool,
    parse_tool_args,
    progress_bar,
    run_tool,
    tool_parser,
)
from xmodelkd_ros.evaluation.score import BenchmarkError
from xmodelkd_ros.training.recipe import load_recipe
from xmodelkd_ros.training.recipe_types import Recipe, RecipeError
from xmodelkd_ros.training.stages import STAGE_KINDS

#: the LiDAR-only control stages a candidate can train beside its distilled student
CONTROLS = ("baseline", "lasermix", "selftrain")


def final_checkpoint(stage: str) -> str:
    """The file a stage's finished run leaves in its folder (``teacher.pt``, ...)."""
    return STAGE_KINDS[stage].final


@dataclass
class Job:
    """One stage of one seed in one folder; ``after``: the job whose output it needs."""

    stage: str
    seed: int
    recipe: Recipe
    after: Job | None = None
    done: threading.Event = field(default_factory=threading.Event)
    failed: str | None = None

    @property
    def out(self) -> Path:
        return Path(self.recipe.out)

    @property
    def label(self) -> str:
        return f"{self.stage} {self.out}"


def parse_candidate(text: str) -> tuple[str, list[str]]:
    """``NAME=KEY=VALUE KEY=VALUE`` (``NAME=`` for none) -> (name, overrides)."""
    name, sep, sets = text.partition("=")
    name = name.strip()
    if not sep or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise argparse.ArgumentTypeError(
            f"bad candidate {text!r}: NAME=KEY=VALUE [KEY=VALUE ...] (NAME: letters, digits, _ -)"
        )
    return name, shlex.split(sets)


def parse_controls(text: str) -> list[str]:
    """``baseline,lasermix`` -> the control stages in training order (``selftrain`` after the
    ``baseline`` it needs as its labeller)."""
    names = [c.strip() for c in str(text).split(",") if c.strip()]
    unknown = [c for c in names if c not in CONTROLS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"controls are a comma list of {' | '.join(CONTROLS)}, got {text!r}"
        )
    if "selftrain" in names and "baseline" not in names:
        raise argparse.ArgumentTypeError("selftrain needs baseline (its labeller) in --controls")
    return [c for c in CONTROLS if c in names]


class Candidates(HeldOutTool):
    """The jobs of one run and the pool that trains them."""

    tool = "candidates"

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        names = [n for n, _ in args.candidate]
        if len(set(names)) != len(names) or "teachers" in names:
            raise BenchmarkError(f"candidate names must be unique and not 'teachers': {names}")
        try:  # every candidate's recipe loads before anything trains
            self.base = load_recipe(args.recipe, list(args.overrides))
            self.recipes = {n: load_recipe(args.recipe, [*args.overrides, *sets])
                            for n, sets in args.candidate}  # fmt: skip
        except RecipeError as exc:
            raise BenchmarkError(str(exc)) from None

    def seeded(self, recipe: Recipe, folder: Path, seed: int) -> Recipe:
        r = copy.deepcopy(recipe)
        r.out, r.seed = str(folder / f"seed{seed}"), seed
        return r

    def jobs(self) -> list[Job]:
        """Teachers first (the distills wait for theirs), then controls, then distills."""
        teachers: list[Job] = []
        controls: list[Job] = []
        students: list[Job] = []
        for s in self.seeds:
            given = Path(self.args.teachers) / f"seed{s}" if self.args.teachers else None
            t = Job("teacher", s, self.seeded(self.base, self.out / "teachers", s))
            if given is not None:
                if not (given / final_checkpoint("teacher")).is_file():
                    raise BenchmarkError(f"no teacher.pt in {given} (--teachers)")
                t.recipe.out = str(given)
            teachers.append(t)
            for name, recipe in self.recipes.items():
                mine: dict[str, Job] = {}
                for stage in self.args.controls:
                    after = mine.get("baseline") if stage == "selftrain" else None
                    mine[stage] = Job(stage, s, self.seeded(recipe, self.out / name, s), after)
                controls.extend(mine.values())
                students.append(Job("distill", s, self.seeded(recipe, self.out / name, s), t))
        return [*teachers, *controls, *students]

    def run_job(self, job: Job) -> None:
        from xmodelkd_ros.training.api import train_in_child

        if job.after is not None:
            job.after.done.wait()
            if job.after.failed:
                job.failed = f"the job it needs failed ({job.after.label})"
                return
            if job.after.stage == "teacher":  # the distill's own copy of its seed's teacher
                job.out.mkdir(parents=True, exist_ok=True)
                src = job.after.out / final_checkpoint("teacher")
                dst = job.out / final_checkpoint("teacher")
                if not dst.is_file():
                    shutil.copy2(src, dst)
        if (job.out / final_checkpoint(job.stage)).is_file():
            self.log(f"{job.label}: already done")
            return
        self.log(f"{job.label}: training")
        t0 = time.perf_counter()
        console = job.out / f"{job.stage}.console.log"
        code = train_in_child(job.recipe, job.stage, resume=True, threads=1, console=console)
        if code != 0:
            job.failed = f"exit {code}"
            self.log(f"{job.label}: FAILED ({job.failed}; see {console})")
        else:
            self.log(f"{job.label}: done in {(time.perf_counter() - t0) / 60:.1f} min")

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        commit, dirty = self.commit()
        self.log(f"candidates: {', '.join(self.recipes)} x seeds {self.seeds}, {self.args.jobs} "
                 f"jobs, commit {commit[:10]}{' (dirty)' if dirty else ''}")  # fmt: skip
        jobs = self.jobs()
        bar = progress_bar(self.args.progress, len(jobs), "candidate jobs")

        def one(job: Job) -> None:
            try:
                self.run_job(job)
            except OSError as exc:
                job.failed = str(exc)
                self.log(f"{job.label}: FAILED ({exc})")
            finally:
                job.done.set()
                if bar is not None:
                    bar.update(1)

        # a job waits only for a job queued before it, so the pool never deadlocks
        with ThreadPoolExecutor(max_workers=self.args.jobs) as pool:
            list(pool.map(one, jobs))
        if bar is not None:
            bar.close()
        failed = [j for j in jobs if j.failed]
        for j in failed:
            self.log(f"unfinished: {j.label} ({j.failed})")
        self.log(f"candidates: {len(jobs) - len(failed)}/{len(jobs)} jobs finished")
        return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser("candidates", __doc__.split("\n\n")[0])
    p.add_argument("--candidate", type=parse_candidate, action="append", required=True,
                   metavar="NAME=KEY=VALUE ...",
                   help="a candidate: its name and the recipe overrides of its student stages "
                   "(quoted; NAME= for the recipe as it is); repeat for each")  # fmt: skip
    p.add_argument("--recipe", default="synthetic", help="training recipe (name or YAML path)")
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="overrides shared by the teachers and every candidate",
    )
    p.add_argument("--controls", type=parse_controls, default=["baseline"],
                   help="LiDAR-only controls trained per candidate and seed, a comma list of "
                   f"{', '.join(CONTROLS)} (default baseline)")  # fmt: skip
    p.add_argument("--out", default="runs/candidates", help="output folder")
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1 (paired)")
    p.add_argument(
        "--teachers",
        default=None,
        help="a folder of seed<s>/teacher.pt to use instead of training teachers",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="training processes at a time (one thread each: one per core)",
    )
    p.set_defaults(progress=True)
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=argparse.SUPPRESS,
        help="no tqdm progress bar",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_tool_args(build_parser(), argv)
    if args.seeds < 1 or args.jobs < 1:
        print("error: --seeds and --jobs must be >= 1", file=sys.stderr)
        return 2
    return run_tool(lambda: Candidates(args).run())


if __name__ == "__main__":
    raise SystemExit(main())
