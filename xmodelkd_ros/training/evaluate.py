"""Validation mIoU and the side-by-side report.

Kept apart from the loop so ``--stage evaluate`` (re-evaluating saved checkpoints) and
the end of every stage run the very same code: the report of a finished run and of a
later re-evaluation agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from xmodelkd_ros.nets.checkpoint import CheckpointError, load_student
from xmodelkd_ros.nets.teacher import FusionTeacher, PointPixelCorrespondence
from xmodelkd_ros.training.context import Context, make_loader, progress
from xmodelkd_ros.training.data.semantickitti import DatasetError
from xmodelkd_ros.training.datasets import PreparedDataset, augment_config, class_names_of
from xmodelkd_ros.training.metrics import ConfusionMatrix, SegMetrics
from xmodelkd_ros.training.report import write_report
from xmodelkd_ros.training.stages import EVAL_STREAM, load_teacher, recipe_epochs


@torch.no_grad()
def evaluate(ctx: Context, name: str, net: nn.Module, class_names: Sequence[str]) -> SegMetrics:
    """mIoU on the validation split; the teacher sees the images, students do not."""
    r = ctx.recipe
    src = ctx.source("val")
    is_teacher = isinstance(net, FusionTeacher)
    cfg = net.config.student if is_teacher else net.config
    ds = PreparedDataset(
        src,
        augment_config(r.augment, False),
        tuple(r.data.image_size),
        ctx.seed,
        EVAL_STREAM,
        r.data.eval_max_points,
        1,
        use_images=is_teacher,
    )
    bs = r.data.eval_batch_size
    batches = [list(range(i, min(i + bs, len(src)))) for i in range(0, len(src), bs)]
    loader = make_loader(ctx, ds, batches, cfg.num_levels, cfg.in_channels)
    was_training = net.training
    net.eval()
    cm = ConfusionMatrix(len(class_names))
    for batch in progress(ctx, loader, f"eval {name}", len(batches)):
        batch = batch.to(ctx.device)
        if batch.labels is None:
            raise DatasetError("the validation split has no labels")
        if is_teacher:
            pairs = PointPixelCorrespondence.from_batch(batch)
            logits = net(batch.inputs, batch.images, pairs).logits
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
    """Write ``report.md`` / ``report.json`` and print the one-line summary."""
    r = ctx.recipe
    e = recipe_epochs(r)
    meta = {
        "recipe": r.source,
        "dataset": r.data.dataset,
        "seed": ctx.seed,
        "validation scans": len(ctx.source("val")),
        "distilled student init": r.model.student_init,
        "distillation weights": dataclasses.asdict(r.loss.distill),
        "epochs (teacher / distilled / LiDAR-only controls)": " / ".join(
            str(e[k]) for k in ("teacher", "distilled", "controls")
        ),
    }
    doc = write_report(ctx.out, results, class_names, meta)
    line = "  ".join(f"{k} mIoU {100 * m.miou:.2f}" for k, m in results.items())
    if "miou_gain" in doc:
        line += f"  gain {100 * doc['miou_gain']:+.2f}"
    print(line, flush=True)
    ctx.log(f"report: {ctx.out / 'report.md'}")
    return doc
