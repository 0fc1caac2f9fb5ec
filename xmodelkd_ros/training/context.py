"""What every part of a training run shares: the resolved recipe, the output folder, the
device and process group, the stop flag set by signals, the data readers (built once per
split) and the DataLoader / batch plan.

The batch plan lives here (not in the loop) because training and evaluation, every DDP
rank and a resumed run must all cut the same epochs into the same batches.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from xmodelkd_ros.nets.inputs import default_grid
from xmodelkd_ros.sparse import VoxelGridSpec
from xmodelkd_ros.training import distributed as D
from xmodelkd_ros.training.data.collate import collate
from xmodelkd_ros.training.datasets import PreparedDataset, build_source
from xmodelkd_ros.training.recipe import recipe_values
from xmodelkd_ros.training.recipe_types import ModelSection, Recipe


class TrainingStoppedError(RuntimeError):
    """Training ended early on purpose (signal, non-finite loss); ``code`` is the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checkpoints after the current step and exits."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, _frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: leave now
        self.signum = signum


@dataclass
class Context:
    recipe: Recipe
    out: Path
    device: torch.device
    dist: D.DistInfo
    resume: bool
    progress: bool
    stop: StopFlag = field(default_factory=StopFlag)
    sources: dict[str, Any] = field(default_factory=dict)
    writer: Any = None
    #: Hooks added to every stage's trainer on top of the defaults (tests, tools).
    hooks: list[Any] = field(default_factory=list)

    def log(self, msg: str) -> None:
        if self.dist.is_main:
            print(msg, file=sys.stderr, flush=True)
            with open(self.out / "train.log", "a") as fh:
                fh.write(msg + "\n")

    def source(self, split: str) -> Any:
        if split not in self.sources:
            with recipe_values(f"data, {split} split"):
                self.sources[split] = build_source(self.recipe, split)
        return self.sources[split]

    @property
    def seed(self) -> int:
        return self.recipe.seed


def grid_of(model: ModelSection) -> VoxelGridSpec:
    """The voxel grid of the recipe's ``model`` section."""
    return default_grid(model.voxel_size, model.xy_range)


def make_loader(
    ctx: Context, ds: PreparedDataset, batches: list[list[int]], num_levels: int, in_channels: int
) -> DataLoader:
    return DataLoader(
        ds,
        batch_sampler=batches,
        collate_fn=partial(
            collate,
            grid=grid_of(ctx.recipe.model),
            num_levels=num_levels,
            in_channels=in_channels,
            image_hw=tuple(ctx.recipe.data.image_size),
        ),
        num_workers=ctx.recipe.data.workers,
    )


def epoch_batches(
    ctx: Context, n: int, epoch: int, batch_size: int, cap: int | None
) -> list[list[int]]:
    """This rank's batches of ``epoch``: a DistributedSampler permutation (rank 0 of 1 when
    not distributed, so single-process and DDP runs shuffle the same way)."""
    sampler = DistributedSampler(
        range(n), num_replicas=ctx.dist.world_size, rank=ctx.dist.rank, shuffle=True, seed=ctx.seed
    )
    sampler.set_epoch(epoch)
    order = list(sampler)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        batches = batches[:-1]  # BatchNorm and DDP want equal, non-trivial batches
    return batches[:cap] if cap else batches


def train_batches(
    ctx: Context, source: Any, epoch: int, batch_size: int, cap: int | None
) -> list[list[int]]:
    """This rank's training batches of ``epoch``: :func:`epoch_batches` over all scans, or
    with ``data.labeled_per_batch`` = k, :func:`labeled_batches` (k labeled scans in
    every batch) when ``source`` has labeled scans and enough unlabeled ones."""
    k = ctx.recipe.data.labeled_per_batch
    labeled = getattr(source, "labeled", None)
    if k is None or labeled is None or not bool(np.any(labeled)) \
            or int(np.sum(~np.asarray(labeled, bool))) < batch_size - k:
        return epoch_batches(ctx, len(source), epoch, batch_size, cap)
    return labeled_batches(ctx, np.asarray(labeled, bool), epoch, batch_size, k, cap)


def labeled_batches(
    ctx: Context, labeled: np.ndarray, epoch: int, batch_size: int, k: int, cap: int | None
) -> list[list[int]]:
    """Batches of ``k`` labeled and ``batch_size - k`` unlabeled scans: an epoch is one pass
    over the unlabeled scans (shuffled), the labeled ones are drawn from reshuffled passes
    over the labeled set as often as needed. So the labeled scans are seen at the same
    rate however large the unlabeled pool (the semi-supervised methods' sampling); the
    order is a function of (seed, epoch). Ranks take every ``world_size``-th batch."""
    m = batch_size - k
    lab, unl = np.flatnonzero(labeled), np.flatnonzero(~labeled)
    rng = np.random.default_rng([ctx.seed, epoch, 0x1AB])
    u = rng.permutation(unl)
    n = len(u) // m
    passes = -(-n * k // len(lab))
    lab_order = np.concatenate([rng.permutation(lab) for _ in range(passes)] or [lab[:0]])
    batches = [[*map(int, lab_order[b * k:(b + 1) * k]), *map(int, u[b * m:(b + 1) * m])]
               for b in range(n)]  # fmt: skip
    world, rank = ctx.dist.world_size, ctx.dist.rank
    batches = batches[rank:len(batches) // world * world:world]
    return batches[:cap] if cap else batches


def progress(ctx: Context, it: Any, desc: str, total: int) -> Any:
    """A tqdm bar on the main rank when progress is on, else ``it`` itself."""
    if not (ctx.progress and ctx.dist.is_main):
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, total=total, dynamic_ncols=True, leave=False)
