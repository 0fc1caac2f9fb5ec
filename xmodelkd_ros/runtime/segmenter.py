"""Points in, per-point labels and confidence out, whatever the backend.

The Segmenter is the only runtime code path from a point cloud to labels: it owns
voxelization and kernel maps (through :func:`xmodelkd_ros.nets.inputs.build_inputs`,
the same function training uses), the backend call and devoxelization. The ROS node
and replay evaluation both call :meth:`Segmenter.segment`, so they cannot disagree.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from xmodelkd_ros.labels import PALETTE, UNLABELED
from xmodelkd_ros.nets.inputs import build_inputs
from xmodelkd_ros.nets.student import StudentConfig
from xmodelkd_ros.runtime import tensorrt as _tensorrt  # noqa: F401  (registers "tensorrt")
from xmodelkd_ros.runtime.backends import TorchBackend, set_torch_threads
from xmodelkd_ros.runtime.metadata import ModelMetadata
from xmodelkd_ros.runtime.registry import (
    BACKEND_REGISTRY,
    Backend,
    LoadOptions,
    choose_backend,
)
from xmodelkd_ros.sparse import VoxelGridSpec, fused, fused_voxelize

__all__ = ["BACKENDS", "SegmentResult", "Segmenter", "choose_backend"]

log = logging.getLogger(__name__)

#: Every name ``Segmenter.from_model_dir(backend=...)`` accepts: "auto" and the registry
#: (the one list of backend names; the node's parameter choices come from here).
BACKENDS: tuple[str, ...] = (
    "auto",
    *sorted(
        BACKEND_REGISTRY,
        key=lambda n: BACKEND_REGISTRY[n].rank_for("cuda") if "cuda" in BACKEND_REGISTRY[n].rank
        else 99,
    ),
)
STAGES = ("voxelize", "maps", "inference", "postprocess", "total")


@dataclass
class SegmentResult:
    """Per-point output of one scan, aligned with the input rows."""

    labels: np.ndarray  # (N,) uint16 label ids, UNLABELED for invalid / out-of-range points
    confidence: np.ndarray  # (N,) float32 softmax max, 0 where unlabeled
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds


def _point_labels(logits: Tensor, valid: np.ndarray, labels: np.ndarray, conf: np.ndarray) -> None:
    """Label id (argmax + 1) and softmax maximum of each logits row into the valid entries:
    the C++ kernel of :mod:`~xmodelkd_ros.sparse.fused_voxelize` for float32 CPU logits,
    else torch (on the logits' device)."""
    if fused.enabled():
        try:
            fused_voxelize.point_labels(logits, valid, labels, conf)
            return
        except (fused.FusedUnavailableError, fused_voxelize.UnsupportedInputError):
            pass
    top, idx = logits.max(dim=1)
    # softmax max = 1 / sum(exp(l - max)): no (P, C) probability tensor needed
    point_conf = torch.exp(logits - top[:, None]).sum(dim=1).reciprocal()
    labels[valid] = (idx.cpu().numpy() + 1).astype(np.uint16)
    conf[valid] = point_conf.cpu().numpy().astype(np.float32)


class Segmenter:
    """LiDAR semantic segmentation of single scans with a swappable inference backend."""

    def __init__(
        self,
        backend: Backend,
        grid: VoxelGridSpec,
        config: StudentConfig,
        class_names: list[str] | None = None,
        palette: np.ndarray | None = None,
        metadata: ModelMetadata | None = None,
    ) -> None:
        self.backend = backend
        self.backend_name: str = backend.name
        self.grid = grid
        self.config = config
        self.class_names = list(class_names) if class_names is not None else None
        self.palette = np.asarray(palette if palette is not None else PALETTE, dtype=np.uint8)
        self.metadata = metadata

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_model_dir(
        cls,
        model_dir: str | os.PathLike,
        backend: str = "auto",
        device: str = "cpu",
        engine_cache: str | os.PathLike | None = None,
        fp16: bool = False,
        intra_op_threads: int = 0,
        max_points: int | None = None,
    ) -> Segmenter:
        """Load an export (``model.json`` + the graph or checkpoint the backend runs).

        ``auto`` picks the fastest backend available for ``device`` (see
        :func:`~xmodelkd_ros.runtime.registry.choose_backend`). Raises
        :class:`ModelLoadError` for a missing/corrupt directory, a missing or malformed
        ``model.json`` or a model file whose sha256 differs from the recorded one.
        ``intra_op_threads`` bounds the CPU threads of inference (0 = all cores): ONNX
        Runtime's intra-op pool, or for ``torch`` the process's torch threads (which its
        fused kernels use too), so the node can leave cores to the driver and the rest of
        the stack. ``max_points``
        overrides the TensorRT optimization profile's max (model.json's ``max_points``).
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        model_dir = Path(model_dir)
        meta = ModelMetadata.read(model_dir)
        if backend == "auto":
            backend = choose_backend(device, model_dir)
        options = LoadOptions(engine_cache, fp16, intra_op_threads, max_points)
        impl = BACKEND_REGISTRY[backend].cls.load(model_dir, meta, device, options)
        palette = np.asarray(meta.palette, dtype=np.uint8)
        return cls(impl, meta.grid, meta.config, meta.class_names, palette, meta)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, backend: str = "torch", device: str = "cpu", threads: int = 0
    ) -> Segmenter:
        """PyTorch straight from a training checkpoint (no export needed); ``threads`` > 0
        sets the process's torch threads (see ``intra_op_threads`` of :meth:`from_model_dir`)."""
        if backend != "torch":
            raise ValueError("from_checkpoint supports backend='torch' only; export for others")
        set_torch_threads(threads)
        ckpt, impl = TorchBackend.checkpoint_and_backend(path, device)
        return cls(impl, ckpt.grid, ckpt.config, ckpt.class_names)

    # ---------------------------------------------------------------- inference
    def _empty(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.full(n, UNLABELED, dtype=np.uint16), np.zeros(n, dtype=np.float32)

    def segment(self, points: np.ndarray | Tensor) -> SegmentResult:
        """Label one scan: ``points`` (N, >= in_channels) float, columns x, y, z, intensity, ...

        Invalid (non-finite) and out-of-range points get ``UNLABELED`` and confidence 0.
        """
        t_start = time.perf_counter()
        pts = points if isinstance(points, Tensor) else torch.from_numpy(np.asarray(points))
        c_in = self.config.in_channels
        if pts.ndim != 2 or pts.shape[1] < c_in:
            raise ValueError(f"points must be (N, >={c_in}), got {tuple(pts.shape)}")
        pts = pts.detach().to("cpu", torch.float32)
        n = int(pts.shape[0])
        timings = dict.fromkeys(STAGES, 0.0)
        labels, conf = self._empty(n)
        if n == 0:
            timings["total"] = time.perf_counter() - t_start
            return SegmentResult(labels, conf, timings)

        inputs = build_inputs([pts], self.grid, self.config.num_levels, c_in, timings=timings)

        valid = inputs.valid[0]
        if inputs.point2voxel.numel() > 0:
            t0 = time.perf_counter()
            dev = self.backend.device
            logits = self.backend.infer(inputs if dev.type == "cpu" else inputs.to(dev))
            if logits.is_cuda:
                torch.cuda.synchronize(logits.device)
            timings["inference"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            _point_labels(logits.detach(), valid.numpy(), labels, conf)
            timings["postprocess"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start
        return SegmentResult(labels, conf, timings)

    def colors(self, labels: np.ndarray) -> np.ndarray:
        """(N, 3) uint8 RGB per label id, from the model's palette."""
        return self.palette[np.asarray(labels, dtype=np.int64)]

    def __repr__(self) -> str:
        return f"Segmenter(backend={self.backend_name!r}, levels={self.config.num_levels})"
