"""TensorRT engine builder, engine cache and runtime backend (TensorRT 10+ tensor API).

Engines are specific to a GPU model and TensorRT version and take minutes to build,
so they are built once from ``model.onnx`` and cached under a key made of the GPU
name, the TensorRT version, the ONNX sha256, the precision and the optimization
profile: a new model or GPU rebuilds, an unchanged one deserializes in well under
a second. ``tensorrt`` is imported lazily so CPU machines never need it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from xmodelkd_ros.nets.inputs import NetInputs
from xmodelkd_ros.runtime.graph import OUTPUT_LOGITS, flatten_inputs, level_of_input
from xmodelkd_ros.runtime.metadata import (
    ONNX_FILE,
    ModelLoadError,
    ModelMetadata,
    sha256_file,
    verified_onnx,
)
from xmodelkd_ros.runtime.registry import LoadOptions, device_type, register_backend

__all__ = [
    "DEFAULT_PROFILE",
    "TensorRTBackend",
    "build_engine",
    "build_only",
    "default_cache_dir",
    "engine_cache_key",
    "get_engine",
    "profile_shapes",
    "profile_with_max_points",
    "tensorrt_available",
]

log = logging.getLogger(__name__)

#: min / opt / max for points and level-0 voxels; min 1 so a 1-point scan runs.
DEFAULT_PROFILE: dict[str, list[int]] = {
    "points": [1, 120_000, 200_000],
    "voxels": [1, 80_000, 200_000],
}


def tensorrt_available() -> tuple[bool, str]:
    """(usable, reason): TensorRT imports and a CUDA device is visible."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return False, f"tensorrt not importable: {exc}"
    if not torch.cuda.is_available():
        return False, "no CUDA device visible to torch"
    return True, "ok"


def profile_with_max_points(
    profile: dict[str, list[int]] | None, max_points: int | None
) -> dict[str, list[int]]:
    """``profile`` (default :data:`DEFAULT_PROFILE`) with its max points, and the voxel max
    with it (a scan never has more voxels than points), set to ``max_points``."""
    out = {k: list(v) for k, v in (profile or DEFAULT_PROFILE).items()}
    out.setdefault("points", list(DEFAULT_PROFILE["points"]))
    out.setdefault("voxels", list(DEFAULT_PROFILE["voxels"]))
    if max_points is None or max_points == out["points"][2]:
        return out
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    for what in ("points", "voxels"):
        lo, opt, _ = out[what]
        out[what] = [min(lo, max_points), min(opt, max_points), int(max_points)]
    return out


def _trt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ModelLoadError(f"TensorRT backend requested but tensorrt is missing: {exc}") from exc
    major = int(trt.__version__.split(".")[0])
    if major < 10:
        raise ModelLoadError(f"TensorRT >= 10 required (tensor API), found {trt.__version__}")
    return trt


def default_cache_dir(model_dir: str | os.PathLike | None = None) -> Path:
    """``$XMODELKD_ENGINE_CACHE``, else ``<model_dir>/engines`` if writable, else ~/.cache."""
    env = os.environ.get("XMODELKD_ENGINE_CACHE")
    if env:
        return Path(env)
    if model_dir is not None:
        cand = Path(model_dir) / "engines"
        if os.access(cand if cand.exists() else Path(model_dir), os.W_OK):
            return cand
    return Path.home() / ".cache" / "xmodelkd_ros" / "engines"


def _static_input_shapes(onnx_path: Path) -> dict[str, list[int | None]]:
    """Graph input name -> shape with None for dynamic dims (read from the ONNX file)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    init = {i.name for i in model.graph.initializer}
    shapes: dict[str, list[int | None]] = {}
    for inp in model.graph.input:
        if inp.name in init:
            continue
        dims = inp.type.tensor_type.shape.dim
        shapes[inp.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def profile_shapes(
    input_shapes: dict[str, list[int | None]], profile: dict[str, list[int]]
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Per-input (min, opt, max) shapes for the optimization profile.

    Coarser levels never hold more voxels than level 0, so their max is level 0's;
    their opt shrinks by ~3x per level, about what LiDAR scans show.
    """
    pts = profile.get("points", DEFAULT_PROFILE["points"])
    vox = profile.get("voxels", DEFAULT_PROFILE["voxels"])
    out = {}
    for name, dims in input_shapes.items():
        level = level_of_input(name)
        rng = pts if level is None else [vox[0], max(vox[0], vox[1] // (3**level)), vox[2]]
        shapes = []
        for value in rng:
            shapes.append(tuple(int(value) if d is None else int(d) for d in dims))
        out[name] = (shapes[0], shapes[1], shapes[2])
    return out


def engine_cache_key(
    gpu_name: str, trt_version: str, onnx_sha256: str, fp16: bool, profile: dict[str, list[int]]
) -> str:
    """sha256 of everything that makes an engine invalid when it changes."""
    blob = json.dumps(
        {
            "gpu": gpu_name,
            "trt": trt_version,
            "onnx": onnx_sha256,
            "fp16": bool(fp16),
            "profile": {k: list(v) for k, v in sorted(profile.items())},
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def build_engine(
    onnx_path: str | os.PathLike,
    profile: dict[str, list[int]] | None = None,
    fp16: bool = False,
    workspace_bytes: int = 4 << 30,
) -> bytes:
    """Parse the ONNX, add one optimization profile, build and serialize the engine."""
    trt = _trt()
    onnx_path = Path(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelLoadError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        # weakly-typed FP16 (the builder picks per-layer precision); TensorRT releases that
        # dropped the flag need an FP16 ONNX instead, which we do not produce
        flag = getattr(trt.BuilderFlag, "FP16", None)
        if flag is None:
            raise ModelLoadError(f"TensorRT {trt.__version__} has no FP16 builder flag")
        config.set_flag(flag)
    opt_profile = builder.create_optimization_profile()
    shapes = profile_shapes(_static_input_shapes(onnx_path), profile or DEFAULT_PROFILE)
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        lo, opt, hi = shapes[name]
        opt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelLoadError(f"TensorRT engine build failed for {onnx_path}")
    log.info("built TensorRT engine in %.1f s (fp16=%s)", time.perf_counter() - t0, fp16)
    return bytes(serialized)


def get_engine(
    onnx_path: str | os.PathLike,
    onnx_sha256: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    fp16: bool = False,
    profile: dict[str, list[int]] | None = None,
    device: int = 0,
) -> tuple[Path, bool]:
    """Path of the cached engine for this ONNX/GPU/TRT/precision/profile, building if absent.

    Returns ``(path, built)``; ``built`` is False when the cache was hit.
    """
    ok, reason = tensorrt_available()
    if not ok:
        raise ModelLoadError(f"cannot use TensorRT: {reason}")
    trt = _trt()
    onnx_path = Path(onnx_path)
    profile = profile or DEFAULT_PROFILE
    onnx_sha256 = onnx_sha256 or sha256_file(onnx_path)
    gpu = torch.cuda.get_device_name(device)
    key = engine_cache_key(gpu, trt.__version__, onnx_sha256, fp16, profile)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(onnx_path.parent)
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{key[:32]}.engine"
    if path.is_file():
        return path, False
    data = build_engine(onnx_path, profile, fp16)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=cache)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    info = {"gpu": gpu, "tensorrt": trt.__version__, "onnx_sha256": onnx_sha256,
            "fp16": fp16, "profile": profile}  # fmt: skip
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return path, True


def build_only(
    model_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    fp16: bool = False,
    profile: dict[str, list[int]] | None = None,
    max_points: int | None = None,
) -> Path:
    """Build (or find) the engine for ``model_dir`` and return its path; for the node's
    ``build_only`` parameter, so a vehicle can be prepared before it drives.

    Same profile as ``Segmenter.from_model_dir(..., max_points=...)`` so the engine built
    here is the one the Segmenter finds in the cache."""
    meta = ModelMetadata.read(model_dir)
    onnx_path = Path(model_dir) / ONNX_FILE
    profile = profile_with_max_points(
        profile or meta.tensorrt_profile or None, max_points or meta.max_points
    )
    path, built = get_engine(
        onnx_path, meta.onnx_sha256, cache_dir or default_cache_dir(model_dir), fp16, profile
    )
    log.info("TensorRT engine %s: %s", "built" if built else "cached", path)
    return path


@register_backend("tensorrt", rank={"cuda": 0})
class TensorRTBackend:
    """Runs a serialized engine with torch CUDA tensors as I/O buffers."""

    name = "tensorrt"

    @staticmethod
    def available(device: str, model_dir: Path) -> tuple[bool, str]:
        if device_type(device) != "cuda":
            return False, "CPU requested"
        if not (model_dir / ONNX_FILE).is_file():
            return False, f"no {ONNX_FILE}"
        return tensorrt_available()

    @classmethod
    def load(
        cls, model_dir: Path, meta: ModelMetadata, device: str, options: LoadOptions
    ) -> TensorRTBackend:
        onnx_path = verified_onnx(model_dir, meta)
        dev = torch.device(device if device_type(device) == "cuda" else "cuda")
        profile = profile_with_max_points(
            meta.tensorrt_profile or None, options.max_points or meta.max_points
        )
        engine, built = get_engine(
            onnx_path, meta.onnx_sha256, options.engine_cache, options.fp16, profile,
            dev.index or 0,
        )  # fmt: skip
        log.info("TensorRT engine %s (%s)", engine, "built" if built else "cache hit")
        return cls(engine, dev)

    def __init__(self, engine_path: str | os.PathLike, device: str | torch.device = "cuda") -> None:
        trt = _trt()
        self.device = torch.device(device)
        if self.device.type != "cuda":
            self.device = torch.device("cuda")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        data = Path(engine_path).read_bytes()
        self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise ModelLoadError(f"cannot deserialize TensorRT engine {engine_path}")
        self.context = self.engine.create_execution_context()
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.dtypes: dict[str, torch.dtype] = {}
        to_torch = {
            trt.float32: torch.float32,
            trt.float16: torch.float16,
            trt.int32: torch.int32,
            trt.int64: torch.int64,
            trt.bool: torch.bool,
        }
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            self.dtypes[name] = to_torch[self.engine.get_tensor_dtype(name)]
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs.append(name)
            else:
                self.outputs.append(name)
        self.stream = torch.cuda.Stream(device=self.device)

    def infer(self, inputs: NetInputs) -> Tensor:
        feeds = flatten_inputs(inputs)
        keep = []  # buffers must outlive the asynchronous execution
        current = torch.cuda.current_stream(self.device)
        for name in self.inputs:
            t = feeds[name].to(self.device, self.dtypes[name], non_blocking=True).contiguous()
            keep.append(t)
            if not self.context.set_input_shape(name, tuple(t.shape)):
                raise ValueError(f"shape {tuple(t.shape)} of {name} is outside the engine profile")
            self.context.set_tensor_address(name, t.data_ptr())
        outs: dict[str, Tensor] = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outs[name].data_ptr())
        self.stream.wait_stream(current)
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        self.stream.synchronize()
        del keep
        return outs[OUTPUT_LOGITS].float()
