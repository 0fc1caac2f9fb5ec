"""Synthetic scans and non-trivial untrained students for tests and benchmarks.

Export and backend agreement must be checked without a trained model or a dataset;
a freshly initialised student has identity BatchNorm statistics, which would hide
folding bugs, so :func:`random_student` randomises them. Test and bench support, not
deployment code: it lives with the other synthetic data, outside the runtime.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xmodelkd_ros.nets.checkpoint import StudentCheckpoint
from xmodelkd_ros.nets.inputs import build_inputs, default_grid
from xmodelkd_ros.nets.student import StudentNet, student_config
from xmodelkd_ros.procenv import child_env
from xmodelkd_ros.sparse import VoxelGridSpec

__all__ = ["exported_random_model", "random_student", "random_student_checkpoint", "synthetic_scan"]


def synthetic_scan(n: int, seed: int = 0, max_range: float = 45.0) -> np.ndarray:
    """(n, 4) float32 x, y, z, intensity: a ground ring around the sensor plus boxes.

    Clustered like a LiDAR scan (many points per voxel near the sensor, sparse far
    away) so voxel counts and kernel-map density resemble real data.
    """
    rng = np.random.default_rng(seed)
    n_ground = n // 2
    n_box = n - n_ground
    # ground: density falls with range like a spinning LiDAR
    r = 3.0 + (max_range - 3.0) * rng.random(n_ground) ** 2
    th = rng.uniform(-np.pi, np.pi, n_ground)
    ground = np.stack(
        [r * np.cos(th), r * np.sin(th), -1.7 + 0.03 * rng.standard_normal(n_ground)], 1
    )
    # boxes: points on the faces of a dozen axis-aligned boxes (cars, walls, poles)
    n_boxes = 12
    centres = np.stack(
        [rng.uniform(-30, 30, n_boxes), rng.uniform(-30, 30, n_boxes), np.full(n_boxes, -0.9)], 1
    )
    sizes = np.stack(
        [
            rng.uniform(0.3, 6, n_boxes),
            rng.uniform(0.3, 3, n_boxes),
            rng.uniform(1.2, 3.5, n_boxes),
        ],
        1,
    )
    which = rng.integers(0, n_boxes, n_box)
    u = rng.uniform(-0.5, 0.5, (n_box, 3))
    face_axis = rng.integers(0, 3, n_box)
    u[np.arange(n_box), face_axis] = np.sign(u[np.arange(n_box), face_axis]) * 0.5
    boxes = centres[which] + u * sizes[which]
    xyz = np.concatenate([ground, boxes])
    intensity = rng.uniform(0, 1, (n, 1))
    pts = np.concatenate([xyz, intensity], 1).astype(np.float32)
    return pts[rng.permutation(n)]


@torch.no_grad()
def random_student(
    preset: str = "small", seed: int = 0, grid: VoxelGridSpec | None = None, **overrides
) -> StudentNet:
    """Eval-mode student with random weights and random BN running stats / affine params."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = StudentNet(student_config(preset, **overrides))
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
            m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))
            m.weight.copy_(0.5 + torch.rand(c, generator=gen))
            m.bias.copy_(0.4 * torch.rand(c, generator=gen) - 0.2)
    net.eval()
    # An untrained net gives (nearly) one class everywhere, which would make label
    # agreement trivial: re-centre the classifier on a calibration scan so every
    # class occurs and the logits spread over several units.
    grid = grid or default_grid()
    scan = synthetic_scan(3000, seed=seed + 1)
    inputs = build_inputs([scan], grid, net.config.num_levels, net.config.in_channels)
    feats = net(inputs.voxel_feats, inputs.point_feats, inputs.point2voxel, inputs.maps).features
    mu, sd = feats.mean(0), feats.std(0) + 1e-3
    d = feats.shape[1]
    w = torch.randn(net.config.num_classes, d, generator=gen) / (sd * d**0.5) * 3.0
    net.classifier.weight.copy_(w)
    net.classifier.bias.copy_(-(w @ mu))
    return net


def random_student_checkpoint(
    preset: str = "small", seed: int = 0, grid: VoxelGridSpec | None = None, **overrides
) -> StudentCheckpoint:
    """A :class:`StudentCheckpoint` around :func:`random_student`, with dummy provenance."""
    net = random_student(preset, seed, grid, **overrides)
    return StudentCheckpoint(
        config=net.config,
        grid=grid or default_grid(),
        state_dict={k: v.clone() for k, v in net.state_dict().items()},
        provenance={
            "recipe": "untrained-test",
            "dataset": "synthetic",
            "metrics": {"miou": 0.0},
            "preset": preset,
        },
    )


_EXPORTS: dict[tuple, Path] = {}

#: The student of the demo (training/synthetic.yaml: widths and voxel size), for benchmarks.
DEMO_STUDENT = {"enc_widths": (16, 32, 48, 64), "dec_widths": (48, 32, 32)}
DEMO_VOXEL_SIZE = 0.25


def exported_random_model(
    preset: str = "small", seed: int = 0, voxel_size: float | None = None, **overrides
) -> Path:
    """Export a :func:`random_student_checkpoint` once per process through the real CLI
    (``python -m xmodelkd_ros.export``) and return the model directory.

    Export costs ~10 s on a small CPU; tests and benchmarks share one per process.
    The directory is removed at interpreter exit. ``voxel_size`` and config
    ``overrides`` give other students (e.g. :data:`DEMO_STUDENT`).
    """
    key = (preset, seed, voxel_size, tuple(sorted(overrides.items())))
    if key in _EXPORTS and (_EXPORTS[key] / "model.json").is_file():
        return _EXPORTS[key]
    from xmodelkd_ros.nets.checkpoint import save_student

    root = Path(tempfile.mkdtemp(prefix="xmodelkd_export_"))
    atexit.register(shutil.rmtree, root, True)
    ckpt_path = root / "student.ckpt"
    grid = default_grid(voxel_size) if voxel_size else None
    save_student(random_student_checkpoint(preset, seed, grid, **overrides), ckpt_path)
    out = root / "model"
    env = child_env()
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "xmodelkd_ros.export", "--checkpoint", str(ckpt_path),
           "--out", str(out), "--opt-points", "1000", "--max-points", "160000"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"export CLI failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    _EXPORTS[key] = out
    return out
