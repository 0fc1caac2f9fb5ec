"""``python -m xmodelkd_ros.training.train``: the method itself.

Stages (DESIGN.md, "The method"):

* ``pretrain`` - label-free 2D-3D contrastive alignment of the fusion teacher (multi-view
  InfoNCE only); uses the training scans' images or an unlabeled ROS 2 bag.
* ``teacher``  - the camera+LiDAR fusion teacher on labels (+ the contrastive term),
  starting from ``pretrain`` when it ran.
* ``distill``  - the LiDAR-only student from labels and the frozen teacher (KL on softened
  logits + feature alignment on the points the cameras see) -> ``<out>/student.pt``.
* ``baseline`` - the same student, labels only, same schedule -> ``<out>/baseline.pt``.
* ``all``      - [pretrain ->] teacher -> distill, baseline, then the side-by-side report.
* ``evaluate`` - evaluate the checkpoints already in ``<out>`` and rewrite the report.

Every stage checkpoints atomically each epoch and on SIGINT/SIGTERM; ``--resume``
continues exactly (weights, optimizer, scheduler, RNG, epoch and step). A non-finite loss
stops (or, with ``optim.nan_policy=skip``, skips) the step before any weight changes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler

from xmodelkd_ros.nets.checkpoint import (
    CheckpointError,
    StudentCheckpoint,
    atomic_torch_save,
    load_student,
    save_student,
)
from xmodelkd_ros.nets.image_encoder import ImageEncoderConfig
from xmodelkd_ros.nets.inputs import default_grid
from xmodelkd_ros.nets.student import StudentConfig, StudentNet, student_config
from xmodelkd_ros.nets.teacher import FusionTeacher, PointPixelCorrespondence, TeacherConfig
from xmodelkd_ros.sparse import VoxelGridSpec, get_default_impl, set_default_impl
from xmodelkd_ros.training import distributed as D
from xmodelkd_ros.training.data.collate import Batch, collate
from xmodelkd_ros.training.data.sample import IGNORE_INDEX
from xmodelkd_ros.training.data.semantickitti import DatasetError
from xmodelkd_ros.training.datasets import (
    PreparedDataset,
    augment_config,
    build_source,
    class_names_of,
)
from xmodelkd_ros.training.losses import (
    DistillLoss,
    DistillWeights,
    NonFiniteLossError,
    TeacherLoss,
    TeacherWeights,
    check_finite,
)
from xmodelkd_ros.training.metrics import ConfusionMatrix, SegMetrics, seg_metrics
from xmodelkd_ros.training.recipe import RecipeError, load_recipe
from xmodelkd_ros.training.report import write_report

STAGES = ("pretrain", "teacher", "distill", "baseline", "all", "evaluate")
TEACHER_FORMAT = "xmodelkd_ros.teacher/1"
FINAL = {
    "pretrain": "pretrain.pt",
    "teacher": "teacher.pt",
    "distill": "student.pt",
    "baseline": "baseline.pt",
}
STREAM = {"pretrain": 1, "teacher": 2, "distill": 3, "baseline": 3, "eval": 9}


class TrainingStoppedError(RuntimeError):
    """Training ended early on purpose (signal, non-finite loss); ``code`` is the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _StopFlag:
    """Set by SIGINT/SIGTERM; the loop checkpoints after the current step and exits."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, _frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: leave now
        self.signum = signum


@dataclass
class Context:
    recipe: dict[str, Any]
    out: Path
    device: torch.device
    dist: D.DistInfo
    resume: bool
    progress: bool
    stop: _StopFlag = field(default_factory=_StopFlag)
    sources: dict[str, Any] = field(default_factory=dict)
    writer: Any = None

    def log(self, msg: str) -> None:
        if self.dist.is_main:
            print(msg, file=sys.stderr, flush=True)
            with open(self.out / "train.log", "a") as fh:
                fh.write(msg + "\n")

    def source(self, split: str) -> Any:
        if split not in self.sources:
            self.sources[split] = build_source(self.recipe, split)
        return self.sources[split]

    @property
    def seed(self) -> int:
        return int(self.recipe.get("seed", 0))


# ----------------------------------------------------------------------------- models


def grid_of(recipe: dict[str, Any]) -> VoxelGridSpec:
    m = recipe["model"]
    return default_grid(float(m.get("voxel_size", 0.1)), float(m.get("xy_range", 51.2)))


def student_cfg_of(recipe: dict[str, Any], num_classes: int) -> StudentConfig:
    m = recipe["model"]
    return student_config(
        m.get("preset", "small"), num_classes=num_classes, **(m.get("student") or {})
    )


def teacher_cfg_of(recipe: dict[str, Any], num_classes: int) -> TeacherConfig:
    m = recipe["model"]
    image = {k: tuple(v) if isinstance(v, list) else v for k, v in (m.get("image") or {}).items()}
    return TeacherConfig(
        student=student_cfg_of(recipe, num_classes),
        image=ImageEncoderConfig(**image),
        contrast_dim=int(m.get("contrast_dim", 64)),
    )


def save_teacher(model: FusionTeacher, path: Path, provenance: dict[str, Any]) -> None:
    atomic_torch_save(
        {
            "format": TEACHER_FORMAT,
            "teacher_config": model.config.to_dict(),
            "state_dict": model.state_dict(),
            "provenance": provenance,
        },
        path,
    )


def load_teacher(path: Path) -> FusionTeacher:
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint {path} not found: run --stage teacher first")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != TEACHER_FORMAT:
        raise CheckpointError(f"{path} is not a {TEACHER_FORMAT} checkpoint")
    model = FusionTeacher(TeacherConfig.from_dict(payload["teacher_config"]))
    model.load_state_dict(payload["state_dict"])
    return model


def _corr(batch: Batch) -> PointPixelCorrespondence:
    return PointPixelCorrespondence(batch.point_idx, batch.image_idx, batch.uv, batch.image_size)


def _labels(batch: Batch) -> Tensor:
    if batch.labels is not None:
        return batch.labels
    return torch.full((batch.num_points,), IGNORE_INDEX, dtype=torch.long, device=batch.uv.device)


class StageNet(nn.Module):
    """What one stage optimises: ``forward(batch) -> (loss, logs)``; DDP wraps this.

    The frozen teacher of ``distill`` is kept out of the module tree (no parameters, no
    state_dict entries), so only the student and its projection heads are trained/saved.
    """

    def __init__(
        self,
        kind: str,
        net: nn.Module,
        loss: nn.Module,
        teacher: nn.Module | None = None,
        kd_mask: str = "fov",
    ):
        super().__init__()
        self.kind, self.net, self.loss = kind, net, loss
        self._teacher = (teacher,) if teacher is not None else ()
        if kd_mask not in ("fov", "fov_correct"):
            raise ValueError(f"unknown loss.kd_mask {kd_mask!r} (fov | fov_correct)")
        self.kd_mask = kd_mask

    def forward(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict]:
        labels = _labels(batch)
        if self.kind in ("pretrain", "teacher"):
            out = self.net(batch.inputs, batch.images, _corr(batch))
            return self.loss(out, labels, batch.point_idx, generator)
        i = batch.inputs
        out = self.net(i.voxel_feats, i.point_feats, i.point2voxel, i.maps)
        if not self._teacher:
            return self.loss(out, labels)
        teacher = self._teacher[0]
        with torch.no_grad():
            t_out = teacher(batch.inputs, batch.images, _corr(batch))
        mask = t_out.seen
        if self.kd_mask == "fov_correct":
            # Distil only where the teacher is right (or the label is unknown): elsewhere its
            # soft targets would teach the student the teacher's own mistakes.
            right = (t_out.logits.argmax(1) == labels) | (labels == IGNORE_INDEX)
            mask = mask & right
        return self.loss(out, labels, t_out, mask)


def build_stage(ctx: Context, kind: str, num_classes: int) -> StageNet:
    r = ctx.recipe
    loss_cfg = r.get("loss") or {}
    if kind in ("pretrain", "teacher"):
        model = FusionTeacher(teacher_cfg_of(r, num_classes))
        if kind == "teacher" and (ctx.out / FINAL["pretrain"]).is_file():
            model.load_state_dict(load_teacher(ctx.out / FINAL["pretrain"]).state_dict())
            ctx.log("teacher: starting from the contrastive pretraining (pretrain.pt)")
        elif r["model"].get("image_weights"):
            report = model.load_image_weights(r["model"]["image_weights"])
            ctx.log(f"teacher: image weights {report}")
        if kind == "pretrain":
            p = dict(loss_cfg.get("pretrain") or {})
            w = TeacherWeights(
                fused=0.0,
                branch_3d=0.0,
                contrastive=float(p.get("contrastive", 1.0)),
                temperature=float(p.get("temperature", 0.07)),
                max_points=int(p.get("max_points", 2048)),
                ignore_index=IGNORE_INDEX,
            )
        else:
            w = TeacherWeights(**{**(loss_cfg.get("teacher") or {}), "ignore_index": IGNORE_INDEX})
        return StageNet(kind, model, TeacherLoss(w))
    student = StudentNet(student_cfg_of(r, num_classes))
    teacher = None
    weights = dict(loss_cfg.get("distill") or {})
    weights["ignore_index"] = IGNORE_INDEX
    if kind == "distill":
        teacher = load_teacher(ctx.out / FINAL["teacher"]).to(ctx.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        d_t = teacher.feature_dim
        if r["model"].get("student_init", "scratch") == "teacher3d":
            # The teacher's 3D branch has the student's architecture and was trained with
            # the image branch and the 2D-3D contrastive term: start the student there.
            student.load_state_dict(teacher.branch_3d.state_dict())
            ctx.log("distill: student initialised from the teacher's 3D branch")
    else:
        d_t = student.config.feature_dim
        for k in ("kd", "feat", "kd_all", "feat_all"):
            weights[k] = 0.0
    loss = DistillLoss(student.config.feature_dim, d_t, d_t, DistillWeights.from_dict(weights))
    return StageNet(kind, student, loss, teacher, str(loss_cfg.get("kd_mask", "fov")))


# ----------------------------------------------------------------------------- data


def _loader(
    ctx: Context, ds: PreparedDataset, batches: list[list[int]], num_levels: int, in_channels: int
) -> DataLoader:
    return DataLoader(
        ds,
        batch_sampler=batches,
        collate_fn=partial(
            collate,
            grid=grid_of(ctx.recipe),
            num_levels=num_levels,
            in_channels=in_channels,
            image_hw=tuple(ctx.recipe["data"]["image_size"]),
        ),
        num_workers=int(ctx.recipe["data"].get("workers", 0)),
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


# ----------------------------------------------------------------------------- training


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


def train_stage(ctx: Context, kind: str) -> dict[str, Any]:
    """Train one stage (resuming if asked), evaluate it, write its final checkpoint."""
    r = ctx.recipe
    stage_dir = ctx.out / kind
    stage_dir.mkdir(parents=True, exist_ok=True)
    last = stage_dir / "last.pt"
    split = "pretrain" if kind == "pretrain" else "train"
    train_src = ctx.source(split)
    class_names = class_names_of(ctx.source("train") if kind != "pretrain" else train_src)
    torch.manual_seed(ctx.seed * 1000 + STREAM[kind])  # same init for every run and rank
    stage = build_stage(ctx, kind, len(class_names)).to(ctx.device)
    net_cfg = stage.net.config.student if kind in ("pretrain", "teacher") else stage.net.config
    params = [p for p in stage.parameters() if p.requires_grad]
    o = r["optim"]
    optim = torch.optim.AdamW(params, lr=float(o["lr"]), weight_decay=float(o["weight_decay"]))
    epochs = int(
        r["schedule"][
            "pretrain_epochs"
            if kind == "pretrain"
            else ("teacher_epochs" if kind == "teacher" else "student_epochs")
        ]
    )
    bs = int(r["data"]["batch_size"])
    cap = r["schedule"].get("steps_per_epoch")
    steps_per_epoch = len(epoch_batches(ctx, len(train_src), 0, bs, cap))
    total = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, _lr_lambda(int(o.get("warmup_steps", 0)), total)
    )
    start_epoch, start_step, global_step = 0, 0, 0
    if ctx.resume and last.is_file():
        ck = torch.load(last, map_location="cpu", weights_only=True)
        if ck.get("done") and (ctx.out / FINAL[kind]).is_file():
            ctx.log(f"{kind}: already finished ({ctx.out / FINAL[kind]}), skipping")
            return dict(ck.get("metrics") or {})
        stage.load_state_dict(ck["model"])
        optim.load_state_dict(ck["optim"])
        sched.load_state_dict(ck["sched"])
        torch.set_rng_state(ck["torch_rng"])
        start_epoch, start_step, global_step = ck["epoch"], ck["step_in_epoch"], ck["global_step"]
        ctx.log(f"{kind}: resumed at epoch {start_epoch} step {start_step} ({last})")

    model: nn.Module = stage
    if ctx.dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            stage,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=True,
        )

    def checkpoint(
        epoch: int, step_in_epoch: int, done: bool = False, metrics: dict | None = None
    ) -> None:
        if ctx.dist.is_main:
            atomic_torch_save(
                {
                    "stage": kind,
                    "epoch": epoch,
                    "step_in_epoch": step_in_epoch,
                    "global_step": global_step,
                    "model": stage.state_dict(),
                    "optim": optim.state_dict(),
                    "sched": sched.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "done": done,
                    "metrics": metrics or {},
                },
                last,
            )

    ds = PreparedDataset(
        train_src,
        augment_config(r, True),
        tuple(r["data"]["image_size"]),
        ctx.seed,
        STREAM[kind],
        r["data"].get("max_points"),
        int(r["data"].get("views", 1)),
        use_images=kind != "baseline",
    )
    nan_policy = o.get("nan_policy", "stop")
    debug = r.get("debug") or {}
    inject = int(debug.get("inject_nan_step", -1))
    signal_at = int(debug.get("signal_at_step", -1))
    clip = float(o.get("grad_clip") or 0)
    ctx.log(
        f"{kind}: {epochs} epochs x {steps_per_epoch} steps, {len(train_src)} scans, "
        f"{sum(p.numel() for p in params)} trainable parameters, device {ctx.device}"
    )
    for epoch in range(start_epoch, epochs):
        stage.train()
        ds.set_epoch(epoch)
        batches = epoch_batches(ctx, len(train_src), epoch, bs, cap)
        first = start_step if epoch == start_epoch else 0
        loader = _loader(ctx, ds, batches[first:], net_cfg.num_levels, net_cfg.in_channels)
        bar = _progress(ctx, loader, f"{kind} {epoch + 1}/{epochs}", len(batches) - first)
        sums: dict[str, float] = {}
        t0, npts = time.perf_counter(), 0
        for step_in_epoch, batch in enumerate(bar, start=first):
            batch = batch.to(ctx.device)
            gen = torch.Generator(device="cpu").manual_seed(ctx.seed * 1_000_003 + global_step)
            loss, logs = model(batch, gen)
            if global_step == inject:
                loss = loss * float("nan")
            bad = ""
            try:
                check_finite(loss, f"{kind} loss")
            except NonFiniteLossError as exc:
                bad = (
                    str(exc)
                    + " ("
                    + ", ".join(f"{k}={float(v):.4g}" for k, v in logs.items())
                    + ")"
                )
            if D.any_flag(bool(bad), ctx.dist):
                if nan_policy == "skip":
                    ctx.log(
                        f"{kind}: skipping step {global_step}: "
                        f"{bad or 'non-finite loss on another rank'}"
                    )
                    optim.zero_grad(set_to_none=True)
                    global_step += 1
                    continue
                checkpoint(epoch, step_in_epoch)
                raise TrainingStoppedError(
                    f"{kind}: {bad or 'non-finite loss on another rank'} at epoch {epoch}, "
                    f"step {step_in_epoch} (global {global_step}). The step was not applied; "
                    f"the weights in {last} are the last finite ones. Lower optim.lr, check the "
                    "data, or set optim.nan_policy=skip.",
                    3,
                )
            optim.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
            if D.any_flag(not bool(torch.isfinite(norm)), ctx.dist):
                ctx.log(f"{kind}: non-finite gradient at step {global_step}; step skipped")
                optim.zero_grad(set_to_none=True)
            else:
                optim.step()
            sched.step()
            global_step += 1
            npts += batch.num_points
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            rate = npts / max(1e-9, time.perf_counter() - t0)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(logs['total']):.3f}", pts_s=f"{rate:.0f}")
            if ctx.writer is not None:
                for k, v in logs.items():
                    ctx.writer.add_scalar(f"{kind}/{k}", float(v), global_step)
                ctx.writer.add_scalar(f"{kind}/lr", sched.get_last_lr()[0], global_step)
                ctx.writer.add_scalar(f"{kind}/points_per_s", rate, global_step)
            if global_step == signal_at:
                os.kill(os.getpid(), signal.SIGTERM)  # test hook: a real signal, mid-epoch
            if D.any_flag(ctx.stop.signum is not None, ctx.dist):
                checkpoint(epoch, step_in_epoch + 1)
                raise TrainingStoppedError(
                    f"{kind}: interrupted; checkpoint written to {last}. Continue with --resume.",
                    130,
                )
        n = max(1, len(batches) - first)
        ctx.log(
            f"{kind} epoch {epoch + 1}/{epochs}: "
            + ", ".join(f"{k} {v / n:.4f}" for k, v in sums.items())
            + f", {npts / max(1e-9, time.perf_counter() - t0):.0f} points/s"
        )
        checkpoint(epoch + 1, 0)
        start_step = 0

    if debug.get("dump_rank_weights"):
        params_now = {k: v.detach().cpu() for k, v in stage.named_parameters()}
        torch.save(params_now, stage_dir / f"rank{ctx.dist.rank}_params.pt")
    metrics: dict[str, Any] = {}
    if ctx.dist.is_main and kind != "pretrain":
        result = evaluate(ctx, kind, stage.net, class_names)
        metrics = result.to_dict()
        ctx.log(f"{kind}: val mIoU {100 * result.miou:.2f}")
    if ctx.dist.is_main:
        provenance = {
            "recipe": {k: v for k, v in r.items() if not k.startswith("_")},
            "recipe_file": r.get("_source"),
            "dataset": r["data"].get("dataset"),
            "stage": kind,
            "epochs": epochs,
            "metrics": {k: v for k, v in metrics.items() if k != "confusion"},
        }
        final = ctx.out / FINAL[kind]
        if kind in ("pretrain", "teacher"):
            save_teacher(stage.net, final, provenance)
        else:
            save_student(
                StudentCheckpoint(
                    stage.net.config, grid_of(r), _cpu_state(stage.net), class_names, provenance
                ),
                final,
            )
        checkpoint(epochs, 0, done=True, metrics=metrics)
        ctx.log(f"{kind}: wrote {final}")
    D.barrier(ctx.dist)
    return metrics


def _cpu_state(net: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


def _progress(ctx: Context, it: Any, desc: str, total: int) -> Any:
    if not (ctx.progress and ctx.dist.is_main):
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, total=total, dynamic_ncols=True, leave=False)


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(ctx: Context, kind: str, net: nn.Module, class_names: Sequence[str]) -> SegMetrics:
    """mIoU on the validation split; the teacher sees the images, students do not."""
    r = ctx.recipe
    src = ctx.source("val")
    is_teacher = isinstance(net, FusionTeacher)
    cfg = net.config.student if is_teacher else net.config
    ds = PreparedDataset(
        src,
        augment_config(r, False),
        tuple(r["data"]["image_size"]),
        ctx.seed,
        STREAM["eval"],
        r["data"].get("eval_max_points"),
        1,
        use_images=is_teacher,
    )
    bs = int(r["data"].get("eval_batch_size", 1))
    batches = [list(range(i, min(i + bs, len(src)))) for i in range(0, len(src), bs)]
    loader = _loader(ctx, ds, batches, cfg.num_levels, cfg.in_channels)
    was_training = net.training
    net.eval()
    cm = ConfusionMatrix(len(class_names))
    for batch in _progress(ctx, loader, f"eval {kind}", len(batches)):
        batch = batch.to(ctx.device)
        if batch.labels is None:
            raise DatasetError("the validation split has no labels")
        if is_teacher:
            logits = net(batch.inputs, batch.images, _corr(batch)).logits
        else:
            i = batch.inputs
            logits = net(i.voxel_feats, i.point_feats, i.point2voxel, i.maps).logits
        cm.update(logits.argmax(1), batch.labels)
    net.train(was_training)
    return cm.result(class_names)


def evaluate_outputs(ctx: Context) -> dict[str, Any]:
    """Evaluate whatever final checkpoints exist in ``<out>`` and write the report."""
    results: dict[str, SegMetrics] = {}
    class_names: list[str] = []
    for name, fname in (
        ("teacher", "teacher.pt"),
        ("baseline", "baseline.pt"),
        ("distilled", "student.pt"),
    ):
        path = ctx.out / fname
        if not path.is_file():
            continue
        if name == "teacher":
            net = load_teacher(path)
            class_names = class_names or class_names_of(ctx.source("train"))
        else:
            ck = load_student(path)
            net, class_names = ck.build(), list(ck.class_names)
        results[name] = evaluate(ctx, name, net.to(ctx.device), class_names)
    if not results:
        raise CheckpointError(f"no teacher.pt / baseline.pt / student.pt in {ctx.out} to evaluate")
    return finish_report(ctx, results, class_names)


def finish_report(
    ctx: Context, results: dict[str, SegMetrics], class_names: Sequence[str]
) -> dict[str, Any]:
    r = ctx.recipe
    meta = {
        "recipe": r.get("_source"),
        "dataset": r["data"].get("dataset"),
        "seed": ctx.seed,
        "validation scans": len(ctx.source("val")),
        "distilled student init": r["model"].get("student_init", "scratch"),
        "distillation weights": (r.get("loss") or {}).get("distill"),
        "epochs (teacher / students)": (
            f"{r['schedule']['teacher_epochs']} / {r['schedule']['student_epochs']}"
        ),
    }
    doc = write_report(ctx.out, results, class_names, meta)
    line = "  ".join(f"{k} mIoU {100 * m.miou:.2f}" for k, m in results.items())
    if "miou_gain" in doc:
        line += f"  gain {100 * doc['miou_gain']:+.2f}"
    print(line, flush=True)
    ctx.log(f"report: {ctx.out / 'report.md'}")
    return doc


def _metrics_from_dict(d: dict[str, Any], class_names: Sequence[str]) -> SegMetrics:
    return seg_metrics(np.asarray(d["confusion"]), class_names)


def run(ctx: Context, stage: str) -> dict[str, Any]:
    if stage == "evaluate":
        return evaluate_outputs(ctx) if ctx.dist.is_main else {}
    if stage != "all":
        return train_stage(ctx, stage)
    if int(ctx.recipe["schedule"].get("pretrain_epochs") or 0) > 0:
        train_stage(ctx, "pretrain")
    results: dict[str, SegMetrics] = {}
    names = class_names_of(ctx.source("train"))
    for kind, name in (("teacher", "teacher"), ("distill", "distilled"), ("baseline", "baseline")):
        m = train_stage(ctx, kind)
        if m:
            results[name] = _metrics_from_dict(m, names)
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
        choices=STAGES,
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
        "--show-recipe", action="store_true", help="print the resolved recipe (YAML) and exit"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
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
        import yaml

        print(
            yaml.safe_dump(
                {k: v for k, v in recipe.items() if not k.startswith("_")}, sort_keys=False
            )
        )
        return 0
    threads = args.threads or recipe.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    try:
        device = D.resolve_device(str(recipe.get("device", "auto")))
    except (RuntimeError, ValueError) as exc:
        print(f"error: bad device {recipe.get('device')!r}: {exc}", file=sys.stderr)
        return 2
    dist = D.init_distributed(device)
    out = Path(recipe.get("out") or "runs/default")
    out.mkdir(parents=True, exist_ok=True)
    # process-wide switch: restored below so a caller (tests, the demo) keeps its own
    previous_impl = get_default_impl()
    set_default_impl(recipe["optim"].get("sparse_impl", "pairs"))
    ctx = Context(
        recipe,
        out,
        device,
        dist,
        args.resume,
        recipe["log"].get("progress", True) and not args.no_progress,
    )
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
        run(ctx, args.stage)
    except TrainingStoppedError as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        code = exc.code
    except (DatasetError, CheckpointError, RecipeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except (TypeError, ValueError) as exc:
        if "config" not in str(exc) and "unknown" not in str(exc):
            raise
        print(f"error: bad recipe value: {exc}", file=sys.stderr)
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
