"""The training API: :func:`train` runs one stage (or the whole pipeline) of a typed
:class:`~xmodelkd_ros.training.recipe_types.Recipe` in this process.

Why one function: the CLI, the held-out benchmark, the schedule choice and the demo all
train. Going through ``main(argv)`` made each of them turn settings into command-line
strings for the CLI to parse back; here they pass the recipe itself (a changed copy for a
seed or a label fraction), and :func:`train_in_child` runs the same call in a child
process from the run's ``recipe.json``, never from re-assembled ``--set`` strings.

Errors are typed (``RecipeError``, ``DatasetError``, ``CheckpointError``,
``WeightLoadError``, ``TrainingStoppedError`` with its exit code); the CLI turns them
into one line and an exit status.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmodelkd_ros.procenv import child_env
from xmodelkd_ros.sparse import get_default_impl, set_default_impl
from xmodelkd_ros.sparse.conv import IMPLS
from xmodelkd_ros.sparse.spconv_train import check_spconv_training
from xmodelkd_ros.training import distributed as D
from xmodelkd_ros.training.context import Context
from xmodelkd_ros.training.datasets import class_names_of
from xmodelkd_ros.training.evaluate import evaluate_outputs, finish_report
from xmodelkd_ros.training.hooks import HookBase
from xmodelkd_ros.training.metrics import SegMetrics, seg_metrics
from xmodelkd_ros.training.recipe import check_resume_recipe, write_recipe
from xmodelkd_ros.training.recipe_types import Recipe, RecipeError
from xmodelkd_ros.training.side_stage import SideStage, SideStageWatch, parallel_unavailable
from xmodelkd_ros.training.stages import STAGE_KINDS
from xmodelkd_ros.training.trainer import Trainer

#: What ``stage`` accepts: every registered stage kind, the whole pipeline, re-evaluation.
STAGE_CHOICES = (*STAGE_KINDS.names(), "all", "evaluate")

#: ``optim.sparse_impl``: the pure-PyTorch forms, or spconv's kernels (CUDA training).
SPARSE_IMPLS = (*IMPLS, "spconv")

#: The resolved recipe of a run, in its output folder (what a child process loads).
RECIPE_FILE = "recipe.json"


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
        if ctx.recipe.schedule.pretrain_epochs > 0:
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


@contextmanager
def _stop_on_signals(ctx: Context) -> Iterator[None]:
    """SIGINT / SIGTERM set the run's stop flag (checkpoint, then stop); only the main
    thread can install handlers, so a call from another thread trains without them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, ctx.stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _tensorboard(ctx: Context) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        ctx.log("tensorboard is not installed: scalars are not logged (pip install tensorboard)")
        return None
    return SummaryWriter(str(ctx.out / "tb"))


def _side_stage(
    recipe: Recipe, out: Path, device: torch.device, dist: D.DistInfo, resume: bool,
    threads: int | None,
) -> tuple[SideStage | None, str | None, int | None]:  # fmt: skip
    """The baseline's second process (``parallel_baseline``), why not, and the threads
    each process then takes."""
    cpus = os.cpu_count() or 1
    why_not = parallel_unavailable(device.type, dist.world_size, cpus)
    if why_not is not None:
        return None, why_not, threads
    threads = threads or max(1, cpus // 2)
    argv = ["--recipe", str(out / RECIPE_FILE), "--no-progress", "--threads", str(threads)]
    return SideStage("baseline", out, [*argv, *(["--resume"] if resume else [])]), None, threads


def train(
    recipe: Recipe,
    stage: str = "all",
    *,
    resume: bool = False,
    progress: bool | None = None,
    threads: int | None = None,
    hooks: Sequence[HookBase] = (),
    parallel_baseline: bool = False,
) -> dict[str, Any]:
    """Train ``stage`` of ``recipe`` into ``recipe.out`` in this process.

    ``stage``: a stage kind, ``all`` ([pretrain ->] teacher -> distill, baseline, report)
    or ``evaluate``. Returns the stage's validation metrics (``all`` / ``evaluate``: the
    report). ``resume`` continues from each stage's ``last.pt``; ``progress`` None follows
    ``log.progress``; ``threads`` None follows the recipe's ``threads``; ``hooks`` are added
    to every stage's trainer; ``parallel_baseline`` (``all`` on a CPU) trains the baseline
    in a second process beside teacher -> distill, with the same weights.
    """
    if stage not in STAGE_CHOICES:
        raise RecipeError(f"unknown stage {stage!r} ({' | '.join(STAGE_CHOICES)})")
    if parallel_baseline and stage != "all":
        raise RecipeError("parallel_baseline needs stage all")
    try:
        device = D.resolve_device(recipe.device)
    except (RuntimeError, ValueError) as exc:
        raise RecipeError(f"bad device {recipe.device!r}: {exc}") from None
    impl = recipe.optim.sparse_impl
    check_sparse_impl(impl, device)
    threads = threads or recipe.threads
    dist = D.init_distributed(device)
    out = Path(recipe.out or "runs/default")
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        check_resume_recipe(recipe, out / RECIPE_FILE)
    side, why_not = None, None
    if parallel_baseline:
        side, why_not, threads = _side_stage(recipe, out, device, dist, resume, threads)
    if threads:
        torch.set_num_threads(int(threads))
    # process-wide switch: restored below so a caller (tests, the demo) keeps its own
    previous_impl = get_default_impl()
    set_default_impl("pairs" if impl == "spconv" else impl)  # spconv: per layer, see stages
    show = recipe.log.progress if progress is None else progress
    watch = [SideStageWatch(side)] if side is not None else []
    ctx = Context(recipe, out, device, dist, resume, show, hooks=[*hooks, *watch])
    if why_not is not None:
        ctx.log(f"--parallel-baseline not used: {why_not}; the baseline trains after distill")
    try:
        with _stop_on_signals(ctx):
            if dist.is_main and recipe.log.tensorboard:
                ctx.writer = _tensorboard(ctx)
            if dist.is_main:
                write_recipe(recipe, out / RECIPE_FILE)
            return run(ctx, stage, side)
    finally:
        set_default_impl(previous_impl)
        if ctx.writer is not None:
            ctx.writer.close()
        D.cleanup(dist)


def train_in_child(
    recipe: Recipe,
    stage: str,
    *,
    resume: bool = False,
    threads: int | None = None,
    console: Path | None = None,
) -> int:
    """:func:`train` in a child process (its own memory, its own threads): the recipe goes
    to ``<out>/recipe.json`` and the child loads it from there. ``console``: a file the
    child's stdout and stderr are appended to (default: this process's), so children
    trained side by side do not interleave their lines. The child's exit code."""
    import subprocess
    import sys

    out = Path(recipe.out)
    out.mkdir(parents=True, exist_ok=True)
    if resume:  # before the child's recipe.json replaces the run's, which it is checked against
        check_resume_recipe(recipe, out / RECIPE_FILE)
    write_recipe(recipe, out / RECIPE_FILE)
    cmd = [sys.executable, "-m", "xmodelkd_ros.training.train", "--stage", stage,
           "--recipe", str(out / RECIPE_FILE), "--no-progress"]  # fmt: skip
    cmd += ["--resume"] if resume else []
    cmd += ["--threads", str(threads)] if threads else []
    if console is None:
        return subprocess.run(cmd, env=child_env(), check=False).returncode
    console.parent.mkdir(parents=True, exist_ok=True)
    with console.open("a") as sink:
        return subprocess.run(cmd, env=child_env(), check=False, stdout=sink,
                              stderr=subprocess.STDOUT).returncode  # fmt: skip
