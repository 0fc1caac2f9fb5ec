"""Deployment runtime: one Segmenter over TensorRT, ONNX Runtime and PyTorch backends."""

from xmodelkd_ros.runtime.backends import OnnxRuntimeBackend, TorchBackend
from xmodelkd_ros.runtime.metadata import ModelLoadError, ModelMetadata, sha256_file
from xmodelkd_ros.runtime.registry import (
    BACKEND_REGISTRY,
    Backend,
    LoadOptions,
    choose_backend,
    register_backend,
)
from xmodelkd_ros.runtime.segmenter import BACKENDS, Segmenter, SegmentResult
from xmodelkd_ros.runtime.tensorrt import build_only, tensorrt_available
from xmodelkd_ros.runtime.trt_ops import FORBIDDEN_OPS, TENSORRT_ONNX_OPS

__all__ = [
    "BACKENDS",
    "BACKEND_REGISTRY",
    "FORBIDDEN_OPS",
    "TENSORRT_ONNX_OPS",
    "Backend",
    "LoadOptions",
    "ModelLoadError",
    "ModelMetadata",
    "OnnxRuntimeBackend",
    "SegmentResult",
    "Segmenter",
    "TorchBackend",
    "build_only",
    "choose_backend",
    "register_backend",
    "sha256_file",
    "tensorrt_available",
]
