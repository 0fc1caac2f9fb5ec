"""Scoring on the held-out test streets: every labeled point of every test scan.

Why its own module: the benchmark must score the students exactly as the node runs them,
so they go through :class:`xmodelkd_ros.runtime.Segmenter` (points in, label ids out; a
point outside the voxel grid comes back unlabeled and counts as wrong). The teacher needs
the cameras, which the Segmenter does not take; it is scored through the training input
pipeline with augmentation off, on the same scans, with the same out-of-grid rule.
The result of a model on a street set is a stack of per-scan confusion matrices
(:func:`xmodelkd_ros.evaluation.stats.confusion`), which the bootstrap resamples.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmodelkd_ros.evaluation.stats import confusion
from xmodelkd_ros.labels import NUM_CLASSES
from xmodelkd_ros.sim.splits import check_seeds
from xmodelkd_ros.training.data.sample import Sample, label_ids_to_classes
from xmodelkd_ros.training.recipe_types import Recipe


class BenchmarkError(RuntimeError):
    """The benchmark cannot run as asked (bad arguments, missing checkpoints, bad splits)."""


@dataclass
class HeldOutScan:
    """One held-out scan: LiDAR points, ground-truth label ids, images and cameras."""

    name: str
    points: np.ndarray
    labels: np.ndarray  #: (N,) uint16 label ids, 0 = unlabeled
    images: list[np.ndarray]
    cameras: list[Any]


def held_out_scans(
    seeds: Sequence[int],
    per_street: int,
    stride: int,
    beams: int | str,
    cameras: int,
    render_hw: tuple[int, int],
    progress: Any = None,
    split: str = "test",
) -> list[HeldOutScan]:
    """``per_street`` scans of each street of ``split`` (``test``: reserved seeds only;
    ``val``: validation seeds, for choosing; checked either way). ``beams``: the LiDAR, a
    beam count or a named rig (:mod:`xmodelkd_ros.sim.rigs`). ``cameras`` 0 renders no
    images (enough for LiDAR-only students)."""
    from xmodelkd_ros.sim import SimWorld

    seeds = check_seeds(split, seeds)
    out: list[HeldOutScan] = []
    h, w = render_hw
    for s in seeds:
        world = SimWorld(s, beams=beams, cameras=cameras, width=w, height=h)
        for j in range(per_street):
            f = world.scan(j * stride, images=cameras > 0)
            names = [c.name for c in f.cameras]
            out.append(
                HeldOutScan(f"sim{s}/{j * stride:06d}", f.points, f.labels,
                         [f.images[n] for n in names], list(f.cameras))
            )  # fmt: skip
            if progress is not None:
                progress.update(1)
    return out


def class_counts(scans: Sequence[HeldOutScan]) -> np.ndarray:
    """(C+1,) labeled points per label id over ``scans`` (index 0: unlabeled)."""
    return sum(np.bincount(s.labels, minlength=NUM_CLASSES + 1) for s in scans)


def score_student(checkpoint: Path, scans: Sequence[HeldOutScan]) -> np.ndarray:
    """(N, C+1, C+1) confusions of a student checkpoint, run through the node's Segmenter."""
    from xmodelkd_ros.runtime import Segmenter

    seg = Segmenter.from_checkpoint(checkpoint, backend="torch", device="cpu")
    return np.stack(
        [confusion(s.labels, seg.segment(s.points).labels, NUM_CLASSES) for s in scans]
    )


def trained_recipe(checkpoint: Path) -> dict[str, Any]:
    """The recipe a student checkpoint trained with (its provenance; ``{}`` when it
    records none), its errors as :class:`BenchmarkError`. Read per network, not from the
    run folder's ``recipe.json``: one folder holds arms trained with other settings, and
    that file is whichever stage wrote it last."""
    from xmodelkd_ros.nets.checkpoint import CheckpointError, load_student

    try:
        recipe = load_student(checkpoint).provenance.get("recipe")
    except CheckpointError as exc:
        raise BenchmarkError(str(exc)) from None
    return recipe if isinstance(recipe, dict) else {}


def load_teacher(path: Path) -> Any:
    """The run's fusion teacher (``teacher.pt``) on the CPU, in eval mode: the training
    side's loader, its errors turned into :class:`BenchmarkError` (one line in the CLI)."""
    from xmodelkd_ros.nets.checkpoint import CheckpointError
    from xmodelkd_ros.training.stages import load_teacher as load_run_teacher

    try:
        return load_run_teacher(path).eval()
    except CheckpointError as exc:
        raise BenchmarkError(str(exc)) from None


@torch.no_grad()
def score_teacher(
    path: Path, scans: Sequence[HeldOutScan], recipe: Recipe
) -> np.ndarray:
    """(N, C+1, C+1) confusions of the camera+LiDAR teacher on ``scans`` (with images)."""
    from xmodelkd_ros.nets.inputs import default_grid
    from xmodelkd_ros.nets.teacher import PointPixelCorrespondence
    from xmodelkd_ros.training.augment import AugmentConfig, prepare_sample
    from xmodelkd_ros.training.data.collate import collate

    net = load_teacher(path)
    cfg = net.config.student
    grid = default_grid(recipe.model.voxel_size, recipe.model.xy_range)
    image_hw = tuple(recipe.data.image_size)
    out = []
    for k, s in enumerate(scans):
        sample = Sample(s.points, label_ids_to_classes(s.labels), list(s.images),
                        list(s.cameras), s.name)  # fmt: skip
        prep = prepare_sample(sample, AugmentConfig(enabled=False),
                              np.random.default_rng([k]), image_hw)  # fmt: skip
        b = collate([prep], grid, cfg.num_levels, cfg.in_channels, image_hw)
        corr = PointPixelCorrespondence(b.point_idx, b.image_idx, b.uv, b.image_size)
        logits = net(b.inputs, b.images, corr).logits
        pred = np.zeros(len(s.points), dtype=np.int64)  # out of the grid: no prediction
        pred[b.inputs.valid[0].numpy()] = logits.argmax(1).numpy() + 1
        out.append(confusion(s.labels, pred, NUM_CLASSES))
    return np.stack(out)


def cached_confusions(
    folder: Path, stem: str, street_set: dict[str, Any], checkpoint: Path,
    compute: Callable[[], np.ndarray],
) -> np.ndarray:
    """``compute()``'s per-scan confusions of ``checkpoint`` on ``street_set``, kept in
    ``folder/<stem>_<digest>.npz``: a tool cut off (or rerun with one more network)
    scores again only what it has not scored. The digest covers the street set and the
    checkpoint's path, size and modification time, so a retrained network is scored anew.
    The file is written under another name and renamed, so a cut write leaves no cache."""
    stat = checkpoint.stat()
    key = {**street_set, "checkpoint": str(checkpoint.resolve()),
           "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}  # fmt: skip
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = folder / f"{stem}_{digest}.npz"
    if path.is_file():
        return np.load(path)["confusion"]
    cm = compute()
    folder.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.stem + ".part.npz")
    np.savez_compressed(part, confusion=cm, key=json.dumps(key))
    os.replace(part, path)
    return cm
