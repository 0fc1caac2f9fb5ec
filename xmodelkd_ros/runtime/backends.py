"""Inference backends: one ``infer(feeds) -> logits`` call each.

The Segmenter owns everything around the network (voxelization, maps,
devoxelization), so a backend is only "run this graph on these named tensors";
that keeps the three backends interchangeable and comparable.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from xmodelkd_ros.runtime.graph import OUTPUT_LOGITS
from xmodelkd_ros.runtime.metadata import ModelLoadError
from xmodelkd_ros.sparse import use_impl

__all__ = ["Backend", "OnnxRuntimeBackend", "TorchBackend", "onnxruntime_available"]

log = logging.getLogger(__name__)


class Backend(Protocol):
    """What the Segmenter needs from an inference engine."""

    name: str
    #: Device the feeds should live on before ``infer`` (avoids a second copy).
    device: torch.device

    def infer(self, feeds: dict[str, Tensor]) -> Tensor:
        """Named graph inputs -> per-point logits (P, num_classes), float32."""
        ...


class TorchBackend:
    """Eager PyTorch (CPU or CUDA) on the unfolded eval-mode student.

    Running the original (unfolded) module makes it the reference the exported
    backends are checked against. It uses the pair-list conv form, which gives the same
    numbers as the exported Gather+MatMul form but skips the empty kernel offsets
    (3-4x less work on a LiDAR scan, see bench/bench_sparse.py).
    """

    name = "torch"

    def __init__(self, net: nn.Module, num_levels: int, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError("torch backend asked for CUDA but no CUDA device is available")
        self.net = net.eval().to(self.device)
        self.num_levels = num_levels

    def infer(self, feeds: dict[str, Tensor]) -> Tensor:
        L = self.num_levels
        with torch.inference_mode(), use_impl("pairs"):
            out = self.net.forward_tables(
                feeds["voxel_feats"],
                feeds["point_feats"],
                feeds["point2voxel"],
                [feeds[f"subm_{i}"] for i in range(L)],
                [feeds[f"down_{i}"] for i in range(L - 1)],
                [feeds[f"up_{i}"] for i in range(L - 1)],
            )
        return out.logits.float()


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxRuntimeBackend:
    """ONNX Runtime session on ``model.onnx``: CPU, or the CUDA provider where present."""

    name = "onnxruntime"

    def __init__(
        self, onnx_path: str | Path, device: str = "cpu", intra_op_threads: int = 0
    ) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                log.warning("onnxruntime has no CUDA provider here; running on CPU")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for bad files
            raise ModelLoadError(f"onnxruntime cannot load {onnx_path}: {exc}") from exc
        self.providers = self.session.get_providers()
        self.device = torch.device("cpu")
        self.input_names = [i.name for i in self.session.get_inputs()]

    def infer(self, feeds: dict[str, Tensor]) -> Tensor:
        arrays = {n: np.ascontiguousarray(feeds[n].cpu().numpy()) for n in self.input_names}
        (logits,) = self.session.run([OUTPUT_LOGITS], arrays)
        return torch.from_numpy(logits)
