"""One stage's training loop: a small Trainer whose concerns around the step are hooks.

The trainer owns the state (network, optimizer, scheduler, epoch, step) and the step
itself; checkpointing and signals, the non-finite guard, logging, TensorBoard and
evaluation are :mod:`~xmodelkd_ros.training.hooks`. What differs between stages (data
split, epochs, network, loss, saver) comes from its :class:`~.stages.StageKind`.

Determinism is part of the contract: initialisation is seeded per stage, augmentation is
a function of (seed, stage, epoch, index), the per-step generator of (seed, global step),
and a checkpoint holds the torch RNG, so ``--resume`` and every DDP rank reproduce an
uninterrupted single run bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from xmodelkd_ros.nets.checkpoint import atomic_torch_save
from xmodelkd_ros.nets.image_encoder import FpnHead
from xmodelkd_ros.training import distributed as D
from xmodelkd_ros.training.context import Context, make_loader, progress, train_batches
from xmodelkd_ros.training.datasets import PreparedDataset, augment_config, class_names_of
from xmodelkd_ros.training.hooks import (
    CheckpointHook,
    EvaluationHook,
    HookBase,
    LoggerHook,
    NonFiniteGuardHook,
    ProgressHook,
    TensorBoardHook,
)
from xmodelkd_ros.training.recipe import recipe_values
from xmodelkd_ros.training.recipe_types import Recipe
from xmodelkd_ros.training.stages import StageKind, on_sparse_backend


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up for ``warmup`` steps, then cosine decay to 0 at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


def pretrained_backbone_parameters(stage: nn.Module, recipe: Recipe) -> list[nn.Parameter]:
    """The 2D backbones' parameters when the recipe loads pretrained image weights
    (``model.image_weights``), else none."""
    if not recipe.model.image_weights:
        return []
    return [p for m in stage.modules() if isinstance(m, FpnHead)
            for _, p in m.backbone_parameters()]  # fmt: skip


def freeze_zero_lr_backbone(stage: nn.Module, recipe: Recipe) -> None:
    """With ``optim.pretrained_lr_factor`` 0 the pretrained 2D backbone is fixed: its
    parameters stop requiring gradients, so backpropagation skips the trunk, gradient
    clipping measures only what trains, and the optimizer never holds it."""
    if recipe.optim.pretrained_lr_factor == 0:
        for p in pretrained_backbone_parameters(stage, recipe):
            p.requires_grad_(False)


def param_groups(stage: nn.Module, params: list[nn.Parameter], recipe: Recipe) -> list[Any]:
    """The optimizer's parameter groups: ``params`` as one group, or, with pretrained image
    weights (``model.image_weights``) and ``optim.pretrained_lr_factor`` != 1, the 2D
    backbones' trainable parameters in a second group at ``lr * factor`` (the LR schedule
    scales both alike; a factor of 0 froze them already: :func:`freeze_zero_lr_backbone`)."""
    factor = recipe.optim.pretrained_lr_factor
    pretrained = {id(p) for p in pretrained_backbone_parameters(stage, recipe)}
    backbone = [p for p in params if id(p) in pretrained]
    if factor == 1.0 or not backbone:
        return params
    return [
        {"params": [p for p in params if id(p) not in pretrained]},
        {"params": backbone, "lr": recipe.optim.lr * factor},
    ]


def default_hooks(ctx: Context) -> list[HookBase]:
    hooks: list[HookBase] = [
        ProgressHook(),
        NonFiniteGuardHook(ctx.recipe.optim.nan_policy),
        LoggerHook(),
        CheckpointHook(),
        EvaluationHook(),
    ]
    if ctx.writer is not None:
        hooks.append(TensorBoardHook(ctx.writer))
    return hooks


class Trainer:
    """Train one stage (resuming if asked), evaluate it, write its final checkpoint."""

    def __init__(self, ctx: Context, kind: StageKind) -> None:
        self.ctx, self.kind, self.name = ctx, kind, kind.name
        r = ctx.recipe
        stage_dir = ctx.out / kind.name
        stage_dir.mkdir(parents=True, exist_ok=True)
        self.stage_dir, self.last = stage_dir, stage_dir / "last.pt"
        with recipe_values(f"{kind.name} stage"):
            self.source = ctx.source(kind.split)
            labelled = self.source if kind.split == "pretrain" else ctx.source("train")
            self.class_names = class_names_of(labelled)
            torch.manual_seed(ctx.seed * 1000 + kind.stream)  # same init for every run and rank
            stage = on_sparse_backend(ctx, kind.build(ctx, len(self.class_names)))
            self.stage: nn.Module = stage.to(ctx.device)
            self.model: nn.Module = self.stage  # DDP-wrapped in train() when distributed
            self.net_cfg = kind.network_config(self.stage)
            freeze_zero_lr_backbone(self.stage, r)
            self.params = [p for p in self.stage.parameters() if p.requires_grad]
            o = r.optim
            self.optim = torch.optim.AdamW(
                param_groups(self.stage, self.params, r), lr=o.lr, weight_decay=o.weight_decay
            )
            self.epochs = kind.epochs(r)
            self.batch_size = r.data.batch_size
            self.cap = r.schedule.steps_per_epoch
            self.steps_per_epoch = len(
                train_batches(ctx, self.source, 0, self.batch_size, self.cap)
            )
            #: The stage's optimizer steps: the end of the LR schedule and of ``set_progress``.
            self.total_steps = max(1, self.epochs * self.steps_per_epoch)
            self.sched = torch.optim.lr_scheduler.LambdaLR(
                self.optim, lr_lambda(o.warmup_steps, self.total_steps)
            )
            self.clip = float(o.grad_clip or 0)
            self.dataset = PreparedDataset(
                self.source,
                augment_config(r.augment, True),
                tuple(r.data.image_size),
                ctx.seed,
                kind.stream,
                r.data.max_points,
                r.data.views,
                use_images=kind.uses_images,
                temporal=kind.uses_temporal,
            )
        # defaults + the run's own (ctx.hooks), lower priority first, stable
        self.hooks = sorted([*default_hooks(ctx), *ctx.hooks], key=lambda h: h.priority)
        # loop state (hooks read and write these)
        self.epoch = self.start_step = self.global_step = self.step_in_epoch = 0
        self.steps_this_epoch = 0
        self.batch: Any = None
        self.bar: Any = None
        self.loss: torch.Tensor | None = None
        self.logs: dict[str, Any] = {}
        self.skip_step = False
        self.points_per_s = 0.0
        self.metrics: dict[str, Any] = {}
        #: Set by a hook in before_train when the stage already finished (--resume).
        self.finished: dict[str, Any] | None = None

    def call(self, point: str) -> None:
        for hook in self.hooks:
            getattr(hook, point)(self)

    # ------------------------------------------------------------------------- state

    def save_checkpoint(
        self, epoch: int, step_in_epoch: int, done: bool = False, metrics: dict | None = None
    ) -> None:
        """Everything ``--resume`` needs, written atomically by the main rank."""
        if not self.ctx.dist.is_main:
            return
        atomic_torch_save(
            {
                "stage": self.name,
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "global_step": self.global_step,
                "model": self.stage.state_dict(),
                "optim": self.optim.state_dict(),
                "sched": self.sched.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "done": done,
                "metrics": metrics or {},
            },
            self.last,
        )

    def load_state(self, ck: dict[str, Any]) -> None:
        self.stage.load_state_dict(ck["model"])
        self.optim.load_state_dict(ck["optim"])
        self.sched.load_state_dict(ck["sched"])
        torch.set_rng_state(ck["torch_rng"])
        self.epoch, self.start_step = ck["epoch"], ck["step_in_epoch"]
        self.global_step = ck["global_step"]

    # ------------------------------------------------------------------------- loop

    def train(self) -> dict[str, Any]:
        ctx = self.ctx
        self.call("before_train")
        if self.finished is not None:
            return self.finished
        if ctx.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                self.stage,
                device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        ctx.log(
            f"{self.name}: {self.epochs} epochs x {self.steps_per_epoch} steps, "
            f"{len(self.source)} scans, {sum(p.numel() for p in self.params)} trainable "
            f"parameters, device {ctx.device}"
        )
        for epoch in range(self.epoch, self.epochs):
            self.epoch = epoch
            self.run_epoch(self.start_step)  # mid-epoch only for the first resumed epoch
            self.start_step = 0
        self.call("after_train")
        return self.finish()

    def run_epoch(self, first: int) -> None:
        ctx, epoch = self.ctx, self.epoch
        self.stage.train()
        self.dataset.set_epoch(epoch)
        batches = train_batches(ctx, self.source, epoch, self.batch_size, self.cap)
        cfg = self.net_cfg
        loader = make_loader(ctx, self.dataset, batches[first:], cfg.num_levels, cfg.in_channels)
        self.steps_this_epoch = len(batches) - first
        desc = f"{self.name} {epoch + 1}/{self.epochs}"
        self.bar = progress(ctx, loader, desc, self.steps_this_epoch)
        self.call("before_epoch")
        for step_in_epoch, batch in enumerate(self.bar, start=first):
            self.step_in_epoch, self.batch = step_in_epoch, batch
            self.call("before_step")
            if self.run_step():
                self.call("after_step")
        self.call("after_epoch")

    def run_step(self) -> bool:
        """Forward, guard, backward, clip, step; False when the step was skipped."""
        ctx = self.ctx
        self.batch = self.batch.to(ctx.device)
        gen = torch.Generator(device="cpu").manual_seed(ctx.seed * 1_000_003 + self.global_step)
        self.loss, self.logs = self.model(self.batch, gen)
        self.skip_step = False
        self.call("after_forward")
        if self.skip_step:
            self.optim.zero_grad(set_to_none=True)
            self.global_step += 1
            return False
        self.optim.zero_grad(set_to_none=True)
        self.loss.backward()
        clip = self.clip if self.clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        if D.any_flag(not bool(torch.isfinite(norm)), ctx.dist):
            ctx.log(f"{self.name}: non-finite gradient at step {self.global_step}; step skipped")
            self.optim.zero_grad(set_to_none=True)
        else:
            self.optim.step()
        self.sched.step()
        self.global_step += 1
        return True

    def finish(self) -> dict[str, Any]:
        """The stage's final checkpoint (main rank), with the provenance export reads."""
        ctx, r = self.ctx, self.ctx.recipe
        if ctx.dist.is_main:
            provenance = {
                "recipe": r.to_dict(),
                "recipe_file": r.source,
                "dataset": r.data.dataset,
                "stage": self.name,
                "epochs": self.epochs,
                "metrics": {k: v for k, v in self.metrics.items() if k != "confusion"},
                # the input intensity scale the model learned; export copies it to model.json
                "intensity_range": [float(v) for v in r.data.intensity_range],
            }
            final = ctx.out / self.kind.final
            self.kind.save(ctx, self.stage, final, self.class_names, provenance)
            self.save_checkpoint(self.epochs, 0, done=True, metrics=self.metrics)
            ctx.log(f"{self.name}: wrote {final}")
        D.barrier(ctx.dist)
        return self.metrics
