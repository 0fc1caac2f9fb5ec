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
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmodelkd_ros.nets.checkpoint import CheckpointError
from xmodelkd_ros.nets.image_encoder import WeightLoadError
from xmodelkd_ros.sparse import get_default_impl, set_default_impl
from xmodelkd_ros.sparse.conv import IMPLS
from xmodelkd_ros.sparse.spconv_train import SpconvTrainingError, check_spconv_training
from xmodelkd_ros.training import distributed as D
from xmodelkd_ros.training.context import Context, TrainingStoppedError
from xmodelkd_ros.training.data.semantickitti import DatasetError
from xmodelkd_ros.training.datasets import class_names_of
from xmodelkd_ros.training.evaluate import evaluate_outputs, finish_report
from xmodelkd_ros.training.hooks import HookBase
from xmodelkd_ros.training.metrics import SegMetrics, seg_metrics
from xmodelkd_ros.training.recipe import RecipeError, intensity_range_of, load_recipe
from xmodelkd_ros.training.side_stage import SideStage, SideStageWatch, parallel_unavailable
from xmodelkd_ros.training.stages import STAGE_KINDS
from xmodelkd_ros.training.trainer import Trainer

#: What ``--stage`` accepts: every registered stage kind, the whole pipeline, re-evaluation.
STAGE_CHOICES = (*STAGE_KINDS.names(), "all", "evaluate")


#: ``optim.sparse_impl``: the pure-PyTorch forms, or spconv's kernels (CUDA training).
SPARSE_IMPLS = (*IMPLS, "spconv")


def check_sparse_impl(impl: str, device: torch.device) -> None:
    if impl not in SPARSE_IMPLS:
        raise RecipeError(f"unknown optim.sparse_impl {impl!r} ({' | '.join(SPARSE_IMPLS)})")
    if impl == "spconv":
        check_spconv_training(device)


def train_stage(ctx: Context, name: str) -> dict[str, Any]:
    """Train the stage kind ``name``; its validation metrics (empty without labels)."""
    return Trainer(ctx, STAGE_KINDS.get(name)()).train()


def run(ctx: Context, stage: str, side: SideStage | None = None) -> dict[str, Any]:
    """Train ``stage``; for ``all`` with a ``side`` process, the baseline trains there."""
    if stage == "evaluate":
        return evaluate_outputs(ctx) if ctx.dist.is_main else {}
    if stage != "all":
        return train_stage(ctx, stage)
    results: dict[str, SegMetrics] = {}
    if side is not None:
        side.start()
    try:
        if int(ctx.recipe["schedule"].get("pretrain_epochs") or 0) > 0:
            train_stage(ctx, "pretrain")
        names = class_names_of(ctx.source("train"))
        for kind, name in (
            ("teacher", "teacher"), ("distill", "distilled"), ("baseline", "baseline"),
        ):  # fmt: skip
            if kind == "baseline" and side is not None:
                side.wait(lambda: ctx.stop.signum is not None)
                # it finished there: resuming reads its checkpoint's metrics
                m = train_stage(dataclasses.replace(ctx, resume=True), kind)
            else:
                m = train_stage(ctx, kind)
            if m:
                results[name] = seg_metrics(np.asarray(m["confusion"]), names)
    finally:
        if side is not None:
            side.stop()
    if not ctx.dist.is_main:
        return {}
    return finish_report(ctx, results, names)


# ----------------------------------------------------------------------------- CLI


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
        "student from teacher + labels; baseline: student from labels only; all: "
        "[pretrain ->] teacher -> distill, baseline -> report; evaluate: re-evaluate <out>",
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
    """The CLI; ``hooks`` are added to every stage's trainer (tests, tools)."""
    args = build_parser().parse_args(argv)
    overrides = list(args.overrides)
    for key, value in (("out", args.out), ("seed", args.seed), ("device", args.device)):
        if value is not None:
            overrides.append(f"{key}={value}")
    try:
        recipe = load_recipe(args.recipe, overrides)
        intensity_range_of(recipe)
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.show_recipe:
        import yaml

        print(
            yaml.safe_dump(
                {k: v for k, v in recipe.items() if not k.startswith("_")}, sort_keys=False
            )
        )
        return 0
    if args.parallel_baseline and args.stage != "all":
        print("error: --parallel-baseline needs --stage all", file=sys.stderr)
        return 2
    threads = args.threads or recipe.get("threads")
    try:
        device = D.resolve_device(str(recipe.get("device", "auto")))
    except (RuntimeError, ValueError) as exc:
        print(f"error: bad device {recipe.get('device')!r}: {exc}", file=sys.stderr)
        return 2
    impl = str(recipe["optim"].get("sparse_impl", "pairs"))
    try:
        check_sparse_impl(impl, device)
    except (RecipeError, SpconvTrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dist = D.init_distributed(device)
    out = Path(recipe.get("out") or "runs/default")
    out.mkdir(parents=True, exist_ok=True)
    side, why_not = None, None
    if args.parallel_baseline:
        cpus = os.cpu_count() or 1
        why_not = parallel_unavailable(device.type, dist.world_size, cpus)
        if why_not is None:
            threads = threads or max(1, cpus // 2)
            argv_side = ["--recipe", args.recipe, "--no-progress", "--threads", str(threads)]
            argv_side += ["--resume"] if args.resume else []
            argv_side += ["--set", *overrides] if overrides else []
            side = SideStage("baseline", out, argv_side)
    if threads:
        torch.set_num_threads(int(threads))
    # process-wide switch: restored below so a caller (tests, the demo) keeps its own
    previous_impl = get_default_impl()
    set_default_impl("pairs" if impl == "spconv" else impl)  # spconv: per layer, see stages
    ctx = Context(
        recipe,
        out,
        device,
        dist,
        args.resume,
        recipe["log"].get("progress", True) and not args.no_progress,
        hooks=[*hooks, *([SideStageWatch(side)] if side is not None else [])],
    )
    if why_not is not None:
        ctx.log(f"--parallel-baseline not used: {why_not}; the baseline trains after distill")
    old = {s: signal.signal(s, ctx.stop) for s in (signal.SIGINT, signal.SIGTERM)}
    if dist.is_main and recipe["log"].get("tensorboard", True):
        try:
            from torch.utils.tensorboard import SummaryWriter

            ctx.writer = SummaryWriter(str(out / "tb"))
        except ImportError:
            ctx.log(
                "tensorboard is not installed: scalars are not logged (pip install tensorboard)"
            )
    if dist.is_main:
        (out / "recipe.json").write_text(json.dumps(recipe, indent=1))
    code = 0
    try:
        run(ctx, args.stage, side)
    except TrainingStoppedError as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        code = exc.code
    except (DatasetError, CheckpointError, RecipeError, WeightLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    finally:
        set_default_impl(previous_impl)
        for s, h in old.items():
            signal.signal(s, h)
        if ctx.writer is not None:
            ctx.writer.close()
        D.cleanup(dist)
    return code


if __name__ == "__main__":
    sys.exit(main())
