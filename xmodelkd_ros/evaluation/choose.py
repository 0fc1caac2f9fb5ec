"""``python -m xmodelkd_ros.evaluation.choose``: each arm's schedule chosen on many validation
streets, then the chosen pair measured once on held-out test streets.

Why: the benchmark trains the LiDAR-only baseline as long as the distilled student's
lineage. That fixes the baseline's length by the student's recipe, not by what serves the
baseline best, and a network that has not converged loses to one trained longer whatever
the method. The fair comparison gives every arm the length that is best *for it*, chosen
on validation streets, and compares the chosen networks once on test streets that chose
nothing. The recipe's three validation streets (12 scans) are too few to choose by: per
seed, their gain and the test streets' differed by up to 10 mIoU. So this command scores
the candidates on as many validation streets as asked (default 20 x 4 scans).

Candidates are finished benchmark folders that differ in schedule (``NAME=DIR``, each with
``labels<f>/seed<k>/student.pt``, ``baseline.pt`` and, with ``--arms selftrain``,
``selftrain.pt``, e.g. from ``benchmark --set schedule.student_epochs=88``; or a
``candidates`` folder ``<out>/<candidate>`` with ``seed<k>/`` directly;
``NAME:baseline=DIR`` makes a folder a candidate for the named arms only). For each arm
(``distilled`` and its controls ``baseline``, ``selftrain``, ``lasermix``) the candidate
with the best mean validation mIoU over the seeds is chosen; candidates within ``--tie`` of
the best go to the one listed first (list the cheapest first). ``--measure`` then scores
the chosen student and each chosen control, paired by seed, on the test streets: the mean
gain with the benchmark's two-level 95 % bootstrap interval. A measurement is recorded with the
choice it followed and is not repeated for another choice on the same ``--out``: a second
look at the same test streets would make them validation streets.

Outputs in ``--out``: ``choice.json`` / ``choice.md`` (validation mIoU per candidate, arm and
seed; the choice; which arms' choices sit at their grid's edge, :mod:`.choose_report`) and,
with ``--measure``, ``measure.json`` / ``measure.md``. Scores are
cached per (split, candidate, seed, arm) under ``scores/``; a rerun scores only what is new.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodelkd_ros.evaluation.choose_report import (
    choice_markdown,
    grid_edges,
    measure_markdown,
)
from xmodelkd_ros.evaluation.claim import image_branch
from xmodelkd_ros.evaluation.cli import (
    HeldOutTool,
    add_output_args,
    add_registered_args,
    add_report_args,
    add_test_street_args,
    check_registered,
    parse_fraction,
    parse_seeds,
    parse_tool_args,
    progress_bar,
    run_tool,
    tool_parser,
)
from xmodelkd_ros.evaluation.report import ci_text, gain_doc
from xmodelkd_ros.evaluation.score import (
    BenchmarkError,
    cached_confusions,
    score_student,
    trained_recipe,
)
from xmodelkd_ros.evaluation.stats import miou_from_confusion, paired_gain
from xmodelkd_ros.runtime.metadata import ModelLoadError
from xmodelkd_ros.sim.splits import check_seeds
from xmodelkd_ros.training.recipe import load_recipe, recipe_from_dict
from xmodelkd_ros.training.recipe_types import RecipeError
from xmodelkd_ros.training.stages import recipe_epochs

#: recipe keys that say how and where a run trained, not what it trained: not a variant
RUN_KEYS = ("schedule", "seed", "out", "device", "threads", "log")

#: arm -> the checkpoint of a benchmark run folder it is scored from
ARM_CHECKPOINTS = {"distilled": "student.pt", "baseline": "baseline.pt",
                   "selftrain": "selftrain.pt", "lasermix": "lasermix.pt"}  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """One finished benchmark folder, named by the schedule it stands for; ``arms`` limits
    the arms it is a candidate for (None: every arm it has checkpoints of)."""

    name: str
    root: Path
    arms: tuple[str, ...] | None = None

    def run_dir(self, fraction: float, seed: int) -> Path:
        """``labels<f>/seed<k>`` of a benchmark folder, or ``seed<k>`` of a ``candidates``
        folder (one label regime, no ``labels<f>`` level)."""
        per_regime = self.root / f"labels{fraction:g}"
        if not per_regime.is_dir() and (self.root / f"seed{seed}").is_dir():
            return self.root / f"seed{seed}"
        return per_regime / f"seed{seed}"

    def checkpoint(self, fraction: float, seed: int, arm: str) -> Path:
        return self.run_dir(fraction, seed) / ARM_CHECKPOINTS[arm]

    def trained_recipe(self, fraction: float, seed: int, arm: str) -> dict[str, Any]:
        """:func:`~.score.trained_recipe` of the arm's network, naming the candidate."""
        try:
            return trained_recipe(self.checkpoint(fraction, seed, arm))
        except BenchmarkError as exc:
            raise BenchmarkError(f"candidate {self.name}: {exc}") from None

    def pool_scans(self, fraction: float, seed: int, arm: str) -> int:
        """Unlabeled scans from extra streets the arm's network trained with (0 = none). A
        claim is only the claim for a run that trains on the same data (:mod:`.claim`)."""
        data = self.trained_recipe(fraction, seed, arm).get("data") or {}
        return int(data.get("unlabeled_scans") or 0)

    def image_branch(self, fraction: float, seed: int, arm: str) -> str:
        """:func:`~.claim.image_branch` of the arm's network: the 2D branch its teacher saw
        the cameras with (recorded for the distilled arm; a claim matches on it)."""
        return image_branch(self.trained_recipe(fraction, seed, arm))

    def variant(self, fraction: float, seed: int, arm: str) -> str:
        """What the arm's network is apart from its length: a short digest of its recipe
        without the schedule and the run's bookkeeping. Candidates of one arm with the same
        variant form one length grid; a choice is bracketed only within its own (a 192-epoch
        student with another loss is no shorter neighbour of a 384-epoch one)."""
        raw = self.trained_recipe(fraction, seed, arm)
        try:  # through the schema, so a key added since (at its default) changes nothing
            full = recipe_from_dict(raw).to_dict() if raw else {}
        except RecipeError:
            full = raw  # a key since removed: compared as recorded
        recipe = {k: v for k, v in full.items() if k not in RUN_KEYS}
        if isinstance(recipe.get("data"), dict):
            recipe["data"] = {k: v for k, v in recipe["data"].items() if k != "cache_dir"}
        text = json.dumps(recipe, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    def epochs(self, fraction: float, seed: int) -> dict[str, int] | None:
        """The run's stated epochs (``recipe.json``), or None for a folder without one."""
        path = self.run_dir(fraction, seed) / "recipe.json"
        if not path.is_file():
            return None
        return recipe_epochs(load_recipe(str(path)))


def parse_candidate(text: str) -> Candidate:
    """``NAME=DIR`` or ``NAME:ARM,ARM=DIR`` -> :class:`Candidate` (the folder is checked
    when it is scored)."""
    head, sep, root = str(text).partition("=")
    name, _, arms_text = head.partition(":")
    name = name.strip()
    if not sep or not name or not root.strip():
        raise argparse.ArgumentTypeError(f"a candidate is NAME[:ARM,...]=DIR, got {text!r}")
    if "/" in name:
        raise argparse.ArgumentTypeError(f"candidate name {name!r} may not contain '/'")
    arms = tuple(a.strip() for a in arms_text.split(",") if a.strip()) or None
    unknown = [a for a in arms or () if a not in ARM_CHECKPOINTS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"candidate {name}: unknown arm(s) {unknown} ({' | '.join(ARM_CHECKPOINTS)})"
        )
    return Candidate(name, Path(root.strip()), arms)


def parse_arm_list(text: str) -> list[str]:
    """``distilled,baseline[,selftrain]``: the arms to choose; ``distilled`` must be one."""
    arms = [a.strip() for a in str(text).split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARM_CHECKPOINTS]
    if unknown or "distilled" not in arms or len(arms) < 2:
        raise argparse.ArgumentTypeError(
            f"arms are distilled and at least one control ({' | '.join(ARM_CHECKPOINTS)}), "
            f"got {text!r}"
        )
    return ["distilled", *dict.fromkeys(a for a in arms if a != "distilled")]


def choose(means: dict[str, float], tie: float) -> str:
    """The candidate with the highest mean; one within ``tie`` of it that comes earlier in
    ``means``' order wins instead (the caller lists candidates cheapest first)."""
    best = max(means.values())
    return next(name for name, m in means.items() if m >= best - tie)


class Chooser(HeldOutTool):
    """Scores candidates on a street set (cached) and keeps the bookkeeping of the choice."""

    tool = "choose"

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.candidates: list[Candidate] = list(args.candidates)
        self.arms: list[str] = list(args.arms)
        self.fraction = args.label_fraction

    def pool(self, arm: str) -> list[Candidate]:
        """The candidates for ``arm``: those that name it, or name no arms and have its
        checkpoint for the first seed (a folder without a self-training arm is no
        candidate for it). A missing checkpoint of a later seed is an error when scored."""
        out = [
            c for c in self.candidates
            if (arm in c.arms if c.arms is not None
                else c.checkpoint(self.fraction, self.seeds[0], arm).is_file())
        ]  # fmt: skip
        if not out:
            raise BenchmarkError(
                f"no candidate for the {arm} arm (no {ARM_CHECKPOINTS[arm]} in "
                f"labels{self.fraction:g}/seed{self.seeds[0]} of any candidate folder)"
            )
        return out

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)

    def pool_scans_of(self, arm: str, name: str) -> int:
        """The chosen candidate's unlabeled pool for ``arm`` (its first seed's network)."""
        return self.candidate(name).pool_scans(self.fraction, self.seeds[0], arm)

    def street_set(self, split: str) -> dict[str, Any]:
        a = self.args
        if split == "val":
            return {"split": "val", "seeds": a.val_seeds, "scans": a.val_scans,
                    "stride": a.val_stride, "beams": a.beams}  # fmt: skip
        return {"split": "test", "seeds": a.test_seeds, "scans": a.test_scans,
                "stride": a.test_stride, "beams": a.beams}  # fmt: skip

    def scans(self, split: str) -> list[Any]:
        """``split``'s scans without images (students only), rendered once a run."""
        st = self.street_set(split)
        return self.street_scans(split, st["seeds"], st["scans"], st["stride"], 0, (180, 320))

    def confusions(self, split: str, cand: Candidate, seed: int, arm: str) -> np.ndarray:
        """(N, K, K) per-scan confusions of one checkpoint on ``split``'s streets (cached,
        keyed by the street set and the checkpoint's size and modification time)."""
        ck = cand.checkpoint(self.fraction, seed, arm)
        if not ck.is_file():
            raise BenchmarkError(
                f"candidate {cand.name}: no {ck} (is {cand.root} a finished benchmark folder "
                f"with label fraction {self.fraction:g} and seeds 0-{self.seeds[-1]}?)"
            )
        folder = self.out / "scores" / split / cand.name

        def compute() -> np.ndarray:
            try:
                return score_student(ck, self.scans(split))
            except ModelLoadError as exc:
                raise BenchmarkError(f"candidate {cand.name}: {exc}") from None

        return cached_confusions(folder, f"seed{seed}_{arm}", self.street_set(split), ck, compute)

    def score_all(self, split: str, jobs: Sequence[tuple[str, Candidate]]
                  ) -> dict[str, dict[str, np.ndarray]]:  # fmt: skip
        """For each (arm, candidate): arm -> candidate name -> (S, N, K, K) confusions."""
        bar = progress_bar(self.args.progress, len(jobs) * len(self.seeds),
                        f"scoring on {split} streets")  # fmt: skip
        out: dict[str, dict[str, np.ndarray]] = {}
        for arm, c in jobs:
            per_seed = []
            for s in self.seeds:
                per_seed.append(self.confusions(split, c, s, arm))
                if bar is not None:
                    bar.update(1)
            out.setdefault(arm, {})[c.name] = np.stack(per_seed)
        if bar is not None:
            bar.close()
        return out

    def run_choice(self) -> dict[str, Any]:
        """Score every arm's candidates on the validation streets and choose per arm."""
        pools = {a: self.pool(a) for a in self.arms}
        cms = self.score_all("val", [(a, c) for a in self.arms for c in pools[a]])
        per_seed = {a: {n: miou_from_confusion(cm.sum(1)) for n, cm in cms[a].items()}
                    for a in self.arms}  # fmt: skip
        choice = {a: choose({n: float(v.mean()) for n, v in per_seed[a].items()},
                            self.args.tie) for a in self.arms}  # fmt: skip
        student = cms["distilled"][choice["distilled"]]
        streets = len(self.street_set("val")["seeds"])
        gains = {a: gain_doc(paired_gain(student, cms[a][choice[a]], reps=self.args.bootstrap,
                                         streets=streets))
                 for a in self.arms[1:]}  # fmt: skip
        commit, dirty = self.commit()
        doc = {
            "command": f"{self.prog} {' '.join(self.args.argv)}",
            "commit": commit,
            "dirty": dirty,
            "label_fraction": self.fraction,
            "seeds": self.seeds,
            "arms": self.arms,
            "validation": {**self.street_set("val"), "n_scans": int(student.shape[1])},
            "tie": self.args.tie,
            "candidates": [
                {
                    "name": c.name,
                    "dir": str(c.root),
                    "epochs": c.epochs(self.fraction, self.seeds[0]),
                    "miou": {a: float(per_seed[a][c.name].mean())
                             for a in self.arms if c.name in per_seed[a]},
                    "per_seed": {a: [float(x) for x in per_seed[a][c.name]]
                                 for a in self.arms if c.name in per_seed[a]},
                    "variant": {a: c.variant(self.fraction, self.seeds[0], a)
                                for a in self.arms if c.name in per_seed[a]},
                }
                for c in self.candidates
            ],
            "choice": choice,
            "pool_scans": {a: self.pool_scans_of(a, choice[a]) for a in self.arms},
            "image_branch": self.candidate(choice["distilled"]).image_branch(
                self.fraction, self.seeds[0], "distilled"),
            "validation_gain": gains,
        }
        doc["edges"] = grid_edges(doc)
        return doc

    def run_measure(self, choice_doc: dict[str, Any]) -> dict[str, Any]:
        """Score the chosen arms (and, with ``--measure-all``, every candidate) on the test
        streets: the paired gain of the chosen student over each chosen control."""
        by_name = {c.name: c for c in self.candidates}
        chosen = choice_doc["choice"]
        if self.args.measure_all:
            jobs = [(a, c) for a in self.arms for c in self.pool(a)]
        else:
            jobs = [(a, by_name[chosen[a]]) for a in self.arms]
        cms = self.score_all("test", jobs)
        streets = len(self.street_set("test")["seeds"])
        student = cms["distilled"][chosen["distilled"]]
        commit, dirty = self.commit()
        doc: dict[str, Any] = {
            "commit": commit,  # the code whose statistic the intervals are (a rerun rewrites)
            "dirty": dirty,
            "choice": chosen,
            "test": {**self.street_set("test"), "n_scans": int(student.shape[1]),
                     "registered": self.args.registered},
            "miou": {a: float(miou_from_confusion(cms[a][chosen[a]].sum(1)).mean())
                     for a in self.arms},
            "gains": {},
            "ablation": {},
        }
        for a in self.arms[1:]:
            doc["gains"][a] = gain_doc(paired_gain(student, cms[a][chosen[a]],
                                                   reps=self.args.bootstrap,
                                                   streets=streets))  # fmt: skip
        if self.args.measure_all:  # every candidate on the same streets: reported, not chosen
            for a in self.arms:
                for n, cm in cms[a].items():
                    doc["ablation"].setdefault(n, {"miou": {}, "gains": {}})["miou"][a] = float(
                        miou_from_confusion(cm.sum(1)).mean()
                    )
            for n, row in doc["ablation"].items():  # a candidate's own student vs controls
                for a in self.arms[1:]:
                    if n in cms["distilled"] and n in cms[a]:
                        g = paired_gain(cms["distilled"][n], cms[a][n], reps=self.args.bootstrap,
                                        streets=streets)
                        row["gains"][a] = gain_doc(g)
        return doc

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.log(f"choose: {len(self.candidates)} candidates, arms {self.arms}, seeds "
                 f"{self.seeds}, validation streets {self.args.val_seeds} x "
                 f"{self.args.val_scans} scans")  # fmt: skip
        doc = self.run_choice()
        (self.out / "choice.json").write_text(json.dumps(doc, indent=1))
        (self.out / "choice.md").write_text(choice_markdown(doc))
        self.log("choose: " + ", ".join(f"{a} {n}" for a, n in doc["choice"].items())
                 + f" ({self.out / 'choice.md'})")  # fmt: skip
        for arm, e in doc["edges"].items():
            if e["edge"] is not None:
                self.log(f"choose: {arm} is not bracketed by its grid ({e['edge']}: "
                         f"{e['epochs']} of {e['grid']}); see choice.md")  # fmt: skip
        if not self.args.measure:
            return 0
        done = self.out / "measure.json"
        if done.is_file():
            before = json.loads(done.read_text())
            same_streets = before.get("test", {}).get("seeds") == self.args.test_seeds
            if same_streets and before.get("choice") != doc["choice"]:
                raise BenchmarkError(
                    f"{done} already measured the choice {before.get('choice')} on these test "
                    f"streets; measuring another choice there would make them validation "
                    f"streets (use new --test-seeds and a new --out)"
                )
        if self.args.registered is None:
            self.log("measure: the test streets are not checked against the street ledger "
                     "(a pre-registered measurement names its entry: --registered NAME)")
        m = self.run_measure(doc)
        done.write_text(json.dumps(m, indent=1))
        (self.out / "measure.md").write_text(measure_markdown(m, doc))
        for a, g in m["gains"].items():
            self.log(f"measure: distilled - {a} {ci_text(g)} mIoU ({self.out / 'measure.md'})")
        return 0


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(
        "choose",
        "Choose each arm's schedule (the distilled student and its LiDAR-only "
        "controls) among finished benchmark folders on validation streets, then (--measure) "
        "score the chosen arms once on test streets no earlier comparison was judged on. "
        "Measured on a 2-core CPU: 40 student checkpoints on 64 test scans in ~2 min, i.e. "
        "one candidate (2 arms x 5 seeds) on 80 validation scans in ~30 s.",
    )
    p.add_argument("--candidate", dest="candidates", type=parse_candidate, action="append",
                   required=True, metavar="NAME[:ARMS]=DIR",
                   help="a finished benchmark folder and its name, optionally the arms it is a "
                   "candidate for (e.g. 80:baseline=runs/ctl80); list cheapest first (ties go "
                   "to the first); at least two")  # fmt: skip
    p.add_argument("--arms", type=parse_arm_list, default=["distilled", "baseline"],
                   help="arms to choose: distilled and the controls it is compared with, "
                   "e.g. distilled,baseline,selftrain (10 %% labels)")  # fmt: skip
    add_output_args(p, "runs/choose", "training seeds 0..N-1 of every candidate")
    p.add_argument("--label-fraction", type=parse_fraction, default=1.0,
                   help="which labels<f> folder of the candidates")  # fmt: skip
    p.add_argument("--val-seeds", type=parse_seeds, default=parse_seeds("104-123"),
                   help="validation streets (world seeds 100-999)")  # fmt: skip
    p.add_argument("--val-scans", type=int, default=4, help="scans per validation street")
    p.add_argument("--val-stride", type=int, default=10, help="frames between validation scans")
    p.add_argument("--tie", type=float, default=0.1,
                   help="mIoU points within which the earlier-listed candidate wins")  # fmt: skip
    p.add_argument("--measure", action="store_true",
                   help="score the chosen arms on the test streets (once per --out)")  # fmt: skip
    p.add_argument("--measure-all", action="store_true",
                   help="with --measure: every candidate too (an ablation)")  # fmt: skip
    add_test_street_args(p, None, "with --measure (required): held-out test streets from the "
                         "reserved range 9000-9999 that the candidates were not compared on "
                         "before, e.g. 9004-9011 when the benchmark used its default 9000-9003")
    add_registered_args(p)
    add_report_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_tool_args(build_parser(), argv)
    args.tie = args.tie / 100.0  # mIoU points -> the fractions the scores are in
    names = [c.name for c in args.candidates]
    problems = []
    if len(names) < 2 or len(set(names)) != len(names):
        problems.append("give at least two candidates with distinct names")
    if args.seeds < 1 or args.val_scans < 1 or args.test_scans < 1:
        problems.append("--seeds, --val-scans and --test-scans must be >= 1")
    if args.measure_all and not args.measure:
        problems.append("--measure-all needs --measure")
    if args.registered and not args.measure:
        problems.append("--registered names the test streets of --measure")
    if args.measure and args.test_seeds is None:
        problems.append("--measure needs --test-seeds (streets the candidates were not "
                        "compared on, e.g. 9004-9011)")  # fmt: skip
    if problems:
        print(f"error: {'; '.join(problems)}", file=sys.stderr)
        return 2

    def work() -> int:
        check_seeds("val", args.val_seeds)
        if args.test_seeds is not None:
            check_seeds("test", args.test_seeds)
            check_registered(args, "test", args.test_seeds)
        return Chooser(args).run()

    return run_tool(work)


if __name__ == "__main__":
    sys.exit(main())
