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
from xmodelkd_ros.nets.checkpoint import CheckpointError, load_student
from xmodelkd_ros.nets.inputs import build_inputs
from xmodelkd_ros.nets.student import StudentConfig
from xmodelkd_ros.runtime.backends import (
    Backend,
    OnnxRuntimeBackend,
    TorchBackend,
    onnxruntime_available,
)
from xmodelkd_ros.runtime.graph import flatten_inputs
from xmodelkd_ros.runtime.metadata import (
    CHECKPOINT_FILE,
    ONNX_FILE,
    ModelLoadError,
    ModelMetadata,
    sha256_file,
)
from xmodelkd_ros.sparse import VoxelGridSpec

__all__ = ["BACKENDS", "SegmentResult", "Segmenter", "choose_backend"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
STAGES = ("voxelize", "maps", "inference", "postprocess", "total")

@dataclass
class SegmentResult:
    """Per-point output of one scan, aligned with the input rows."""

    labels: np.ndarray  # (N,) uint16 label ids, UNLABELED for invalid / out-of-range points
    confidence: np.ndarray  # (N,) float32 softmax max, 0 where unlabeled
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds


def choose_backend(device: str = "cpu", has_onnx: bool = True, has_checkpoint: bool = False) -> str:
    """``auto``: TensorRT where a GPU and TensorRT are present, else ONNX Runtime, else torch."""
    from xmodelkd_ros.runtime.tensorrt import tensorrt_available

    trt_ok, trt_reason = tensorrt_available()
    if has_onnx and trt_ok and not str(device).startswith("cpu"):
        choice, why = "tensorrt", "GPU and TensorRT present"
    elif has_onnx and onnxruntime_available():
        choice, why = "onnxruntime", f"TensorRT unusable ({trt_reason}) or CPU requested"
    elif has_checkpoint:
        choice, why = "torch", "no ONNX Runtime / ONNX model"
    else:
        raise ModelLoadError("no usable backend: no onnxruntime and no checkpoint for torch")
    log.info("backend auto -> %s (%s)", choice, why)
    return choice


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
    ) -> Segmenter:
        """Load ``model.json`` + ``model.onnx`` (or ``student.pt`` for torch) from an export.

        Raises :class:`ModelLoadError` for a missing/corrupt directory, a missing or
        malformed ``model.json`` or an ONNX file whose sha256 differs from the recorded one.
        ``intra_op_threads`` bounds ONNX Runtime's CPU threads (0 = its default), so the
        node can leave cores to the driver and the rest of the stack.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        model_dir = Path(model_dir)
        meta = ModelMetadata.read(model_dir)
        onnx_path = model_dir / ONNX_FILE
        ckpt_path = model_dir / CHECKPOINT_FILE
        if backend == "auto":
            backend = choose_backend(device, onnx_path.is_file(), ckpt_path.is_file())
        palette = np.asarray(meta.palette, dtype=np.uint8)
        if backend == "torch":
            if not ckpt_path.is_file():
                raise ModelLoadError(f"torch backend needs {CHECKPOINT_FILE} in {model_dir}")
            if meta.checkpoint_sha256 and sha256_file(ckpt_path) != meta.checkpoint_sha256:
                raise ModelLoadError(f"{ckpt_path} sha256 differs from model.json")
            seg = cls.from_checkpoint(ckpt_path, backend="torch", device=device)
            seg.metadata, seg.palette = meta, palette
            return seg
        if not onnx_path.is_file():
            raise ModelLoadError(f"{ONNX_FILE} missing in {model_dir}")
        actual = sha256_file(onnx_path)
        if actual != meta.onnx_sha256:
            raise ModelLoadError(
                f"{onnx_path} sha256 {actual[:12]}.. does not match model.json "
                f"({meta.onnx_sha256[:12]}..): re-export or restore the file"
            )
        if backend == "onnxruntime":
            impl: Backend = OnnxRuntimeBackend(onnx_path, device, intra_op_threads)
        else:
            from xmodelkd_ros.runtime.tensorrt import TensorRTBackend, get_engine

            dev = torch.device(device if str(device).startswith("cuda") else "cuda")
            engine, built = get_engine(
                onnx_path, meta.onnx_sha256, engine_cache, fp16,
                meta.tensorrt_profile or None, dev.index or 0,
            )  # fmt: skip
            log.info("TensorRT engine %s (%s)", engine, "built" if built else "cache hit")
            impl = TensorRTBackend(engine, dev)
        return cls(impl, meta.grid, meta.config, meta.class_names, palette, meta)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, backend: str = "torch", device: str = "cpu"
    ) -> Segmenter:
        """Eager PyTorch straight from a training checkpoint (no export needed)."""
        if backend != "torch":
            raise ValueError("from_checkpoint supports backend='torch' only; export for others")
        try:
            ckpt = load_student(path)
            net = ckpt.build()
        except CheckpointError as exc:
            raise ModelLoadError(str(exc)) from exc
        except RuntimeError as exc:  # state_dict / config mismatch
            raise ModelLoadError(f"{path}: {exc}") from exc
        impl = TorchBackend(net, ckpt.config.num_levels, device)
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
            feeds = {k: v.to(self.backend.device) for k, v in flatten_inputs(inputs).items()}
            logits = self.backend.infer(feeds)
            if logits.is_cuda:
                torch.cuda.synchronize(logits.device)
            timings["inference"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            top, idx = logits.max(dim=1)
            # softmax max = 1 / sum(exp(l - max)): no (P, C) probability tensor needed
            point_conf = torch.exp(logits - top[:, None]).sum(dim=1).reciprocal()
            valid_np = valid.numpy()
            labels[valid_np] = (idx.cpu().numpy() + 1).astype(np.uint16)
            conf[valid_np] = point_conf.cpu().numpy().astype(np.float32)
            timings["postprocess"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start
        return SegmentResult(labels, conf, timings)

    def colors(self, labels: np.ndarray) -> np.ndarray:
        """(N, 3) uint8 RGB per label id, from the model's palette."""
        return self.palette[np.asarray(labels, dtype=np.int64)]

    def __repr__(self) -> str:
        return f"Segmenter(backend={self.backend_name!r}, levels={self.config.num_levels})"
