"""``python -m xmodelkd_ros.training.train``: the method itself, as a command line.

Stages (the stage kinds of :mod:`~xmodelkd_ros.training.stages`, each trained by a
:class:`~xmodelkd_ros.training.trainer.Trainer`):

* ``pretrain`` - label-free 2D-3D contrastive alignment of the fusion teacher (multi-view
  InfoNCE only); uses the training scans' images or an unlabeled ROS 2 bag.
* ``teacher``  - the camera+LiDAR fusion teacher on labels (+ the contrastive term),
  starting from ``pretrain`` when it ran.
* ``distill``  - the LiDAR-only student from labels and the frozen teacher (KL on softened
  logits + feature alignment on the points the cameras see) -> ``<out>/student.pt``.
* ``baseline`` - the same student, labels only, same schedule -> ``<out>/baseline.pt``.
* ``all``      - [pretrain ->] teacher -> distill, baseline, then the side-by-side report;
  with ``--parallel-baseline`` the baseline trains in a second process beside teacher ->
  distill (CPU, 2+ cores: the wall time of the longer chain, same weights).
* ``evaluate`` - evaluate the checkpoints already in ``<out>`` and rewrite the report.

Every stage checkpoints atomically each epoch and on SIGINT/SIGTERM; ``--resume``
continues exactly (weights, optimizer, scheduler, RNG, epoch and step). A non-finite loss
stops (or, with ``optim.nan_policy=skip``, skips) the step before any weight changes.

Exit codes: 0 done, 2 bad recipe / data / checkpoint, 3 non-finite loss, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from xmodelkd_ros.nets.checkpoint import CheckpointError
from xmodelkd_ros.nets.image_encoder import WeightLoadError
from xmodelkd_ros.sparse.spconv_train import SpconvTrainingError
from xmodelkd_ros.training.api import STAGE_CHOICES, train
from xmodelkd_ros.training.context import TrainingStoppedError
from xmodelkd_ros.training.data.semantickitti import DatasetError
from xmodelkd_ros.training.hooks import HookBase
from xmodelkd_ros.training.recipe import RecipeError, load_recipe, show_recipe

__all__ = ["STAGE_CHOICES", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m xmodelkd_ros.training.train",
        description="Train the fusion teacher, distil it into the LiDAR-only student, train the "
        "labels-only baseline and report both mIoUs. Recipes live in the top-level training/ "
        "folder; multi-GPU/multi-node: torchrun --nproc_per_node N -m xmodelkd_ros.training.train",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--recipe",
        default="synthetic",
        help="recipe name in training/ (synthetic, semantickitti, nuscenes) or a YAML path",
    )
    p.add_argument(
        "--stage",
        choices=STAGE_CHOICES,
        default="all",
        help="pretrain: contrastive only, no labels; teacher: fusion teacher; distill: "
        "student from teacher + labels; baseline: student from labels only; selftrain, "
        "lasermix: LiDAR-only semi-supervised controls; joint: 2DPASS-style single stage; "
        "all: [pretrain ->] teacher -> distill, baseline -> report; evaluate: re-evaluate <out>",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override recipe keys (dotted path, YAML value), e.g. --set optim.lr=0.002 "
        "data.train_scans=40; see --show-recipe for every key",
    )
    p.add_argument("--out", help="output folder (same as --set out=DIR)")
    p.add_argument("--seed", type=int, help="random seed (same as --set seed=N)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (same as --set device=...)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from <out>/<stage>/last.pt exactly (weights, optimizer, scheduler, "
        "RNG, epoch, step); finished stages are skipped",
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument(
        "--parallel-baseline",
        action="store_true",
        help="with --stage all on a CPU: train the baseline in a second process beside "
        "teacher -> distill (same weights as in sequence; each process takes the recipe's "
        "threads, or half the cores)",
    )
    p.add_argument(
        "--show-recipe", action="store_true", help="print the resolved recipe (YAML) and exit"
    )
    return p


def main(argv: Sequence[str] | None = None, hooks: Sequence[HookBase] = ()) -> int:
    """The CLI over :func:`~xmodelkd_ros.training.api.train`; ``hooks`` are added to every
    stage's trainer (tests, tools). Typed errors become one line and an exit status."""
    args = build_parser().parse_args(argv)
    overrides = list(args.overrides)
    for key, value in (("out", args.out), ("seed", args.seed), ("device", args.device)):
        if value is not None:
            overrides.append(f"{key}={value}")
    try:
        recipe = load_recipe(args.recipe, overrides)
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.show_recipe:
        print(show_recipe(recipe))
        return 0
    if args.parallel_baseline and args.stage != "all":
        print("error: --parallel-baseline needs --stage all", file=sys.stderr)
        return 2
    try:
        train(
            recipe,
            args.stage,
            resume=args.resume,
            progress=False if args.no_progress else None,
            threads=args.threads,
            hooks=hooks,
            parallel_baseline=args.parallel_baseline,
        )
    except TrainingStoppedError as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return exc.code
    except (
        DatasetError, CheckpointError, RecipeError, WeightLoadError, SpconvTrainingError
    ) as exc:  # fmt: skip
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
