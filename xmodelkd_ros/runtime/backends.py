"""CPU-capable inference backends: eager PyTorch and ONNX Runtime.

The Segmenter owns everything around the network (voxelization, maps,
devoxelization), so a backend is only "run the network on these inputs"; that keeps
the backends interchangeable and comparable. Each registers itself with its speed
rank per device (:mod:`xmodelkd_ros.runtime.registry`); the ranks come from
``bench/bench_runtime.py`` on the demo model (see docs/performance.md). On CPU, in
order: ONNX Runtime on the fused graph (each conv and the point branch one custom node
running the C++ kernels of ``sparse/fused_conv.cpp``, :mod:`xmodelkd_ros.sparse.ort_ops`),
level with or slightly ahead of the torch backend on the same kernels
(docs/performance.md); then torch with those kernels; then ONNX
Runtime on the standard-ops pairs graph (~3x slower: a ScatterND per kernel offset);
then eager torch, which fell 3x behind whenever other jobs loaded the cores (~1500
small OpenMP ops against one session).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from xmodelkd_ros.nets.checkpoint import CheckpointError, StudentCheckpoint, load_student
from xmodelkd_ros.nets.fold import fold_batchnorm
from xmodelkd_ros.nets.inputs import NetInputs
from xmodelkd_ros.runtime.graph import OUTPUT_LOGITS, flatten_inputs
from xmodelkd_ros.runtime.metadata import (
    CHECKPOINT_FILE,
    CPU_ONNX_FILE,
    ONNX_FILE,
    ModelLoadError,
    ModelMetadata,
    sha256_file,
    verified_onnx,
)
from xmodelkd_ros.runtime.registry import LoadOptions, device_type, register_backend
from xmodelkd_ros.sparse import fused, ort_ops

__all__ = ["OnnxRuntimeBackend", "TorchBackend", "load_checkpoint", "onnxruntime_available"]

log = logging.getLogger(__name__)


def load_checkpoint(path: str | Path) -> tuple[StudentCheckpoint, nn.Module]:
    """A student checkpoint and its built network; every failure a ModelLoadError."""
    try:
        ckpt = load_student(path)
        return ckpt, ckpt.build()
    except CheckpointError as exc:
        raise ModelLoadError(str(exc)) from exc
    except RuntimeError as exc:  # state_dict / config mismatch
        raise ModelLoadError(f"{path}: {exc}") from exc


def set_torch_threads(threads: int) -> None:
    """Bound the process's torch CPU threads (its fused kernels read the same number);
    0 leaves torch's default (all cores). Process-wide: the node is its own process."""
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)


def _torch_cpu_rank(model_dir: Path | None = None) -> int:
    """Second on CPU with the fused kernels (building them on first call, ~2 s), last
    without them (see the module docstring)."""
    return 1 if fused.available()[0] else 3


def _onnxruntime_cpu_rank(model_dir: Path | None = None) -> int:
    """First on CPU where the export wrote the fused graph (None: a current export) and
    the custom-op library builds; else after the torch backend's fused kernels."""
    if model_dir is not None:
        try:
            if ModelMetadata.read(model_dir).cpu_fused_onnx is None:
                return 2
        except ModelLoadError:
            return 2
    return 0 if ort_ops.available()[0] else 2


@register_backend("torch", rank={"cpu": _torch_cpu_rank, "cuda": 2})
class TorchBackend:
    """Eager PyTorch (CPU or CUDA) on the BN-folded eval-mode student.

    It runs the pair-list conv form (:mod:`xmodelkd_ros.sparse.pairs`), which gives the
    same numbers as the exported Gather+MatMul form but touches only the real neighbour
    pairs (~1/4 of a LiDAR table). BatchNorm is folded into the weights as in the
    export, which removes one pass over every activation. On CPU each conv and the point
    branch run in the fused C++ kernels of :mod:`xmodelkd_ros.sparse.fused` when they
    could be built (eager torch ops otherwise, same numbers to float rounding).
    """

    name = "torch"

    def __init__(self, net: nn.Module, num_levels: int, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError("torch backend asked for CUDA but no CUDA device is available")
        self.net = fold_batchnorm(net).to(self.device)
        self.num_levels = num_levels
        if self.device.type == "cpu":  # build the kernels now, not on the first scan
            ok, why = fused.available()
            log.info("torch backend: %s", "fused C++ kernels" if ok else f"eager ops ({why})")

    @staticmethod
    def available(device: str, model_dir: Path) -> tuple[bool, str]:
        if not (model_dir / CHECKPOINT_FILE).is_file():
            return False, f"no {CHECKPOINT_FILE}"
        if device_type(device) == "cuda" and not torch.cuda.is_available():
            return False, "no CUDA device visible to torch"
        return True, "ok"

    @classmethod
    def load(
        cls, model_dir: Path, meta: ModelMetadata, device: str, options: LoadOptions
    ) -> TorchBackend:
        path = model_dir / CHECKPOINT_FILE
        if not path.is_file():
            raise ModelLoadError(f"torch backend needs {CHECKPOINT_FILE} in {model_dir}")
        if meta.checkpoint_sha256 and sha256_file(path) != meta.checkpoint_sha256:
            raise ModelLoadError(f"{path} sha256 differs from model.json")
        set_torch_threads(options.intra_op_threads)
        return cls.from_checkpoint(path, device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> TorchBackend:
        return cls.checkpoint_and_backend(path, device)[1]

    @classmethod
    def checkpoint_and_backend(
        cls, path: str | Path, device: str = "cpu"
    ) -> tuple[StudentCheckpoint, TorchBackend]:
        """A student checkpoint (its grid, config and class names describe the model) and
        the backend running its network; every failure a ModelLoadError."""
        ckpt, net = load_checkpoint(path)
        return ckpt, cls(net, ckpt.config.num_levels, device)

    def infer(self, inputs: NetInputs) -> Tensor:
        with torch.inference_mode():
            # the maps cache each table's pair list: compacted once, shared by its layers
            logits = self.net.infer_logits(
                inputs.voxel_feats, inputs.point_feats, inputs.point2voxel,
                *inputs.maps.all_pairs(),
            )  # fmt: skip
        return logits.float()


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@register_backend("onnxruntime", rank={"cpu": _onnxruntime_cpu_rank, "cuda": 1})
class OnnxRuntimeBackend:
    """ONNX Runtime session: on CPU the fused graph where the custom-op library builds
    (:mod:`xmodelkd_ros.sparse.ort_ops`), else the pairs graph (standard ops); the
    tables graph on CUDA.

    ``form`` is the graph form of ``onnx_path`` (see :mod:`xmodelkd_ros.runtime.graph`);
    the ``fused`` form registers the custom-op library with the session.
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | Path,
        device: str = "cpu",
        intra_op_threads: int = 0,
        form: str = "tables",
    ) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device_type(device) == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                log.warning("onnxruntime has no CUDA provider here; running on CPU")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's pool spins after each run by default, taking the cores from the voxelize /
        # kernel-map code that runs next on its own OpenMP threads: on 2 cores that made
        # them ~2x slower (35 k points: 9.1 + 10.8 ms vs 4.8 + 6.1 ms without spinning, and
        # the network itself no slower; measured one process per setting, bench_runtime.py).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if form == "fused":
            try:
                ort_ops.session_options(opts)
            except ort_ops.OrtOpsUnavailableError as exc:
                name = Path(onnx_path).name
                raise ModelLoadError(f"{name} needs the custom-op library: {exc}") from exc
        try:
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for bad files
            raise ModelLoadError(f"onnxruntime cannot load {onnx_path}: {exc}") from exc
        self.providers = self.session.get_providers()
        self.device = torch.device("cpu")
        self.form = form
        self.input_names = [i.name for i in self.session.get_inputs()]

    @staticmethod
    def available(device: str, model_dir: Path) -> tuple[bool, str]:
        """For ``auto``: on CUDA only with ORT's CUDA provider. The plain ``onnxruntime``
        wheel has none and would run the scan on the CPU: on an H200 machine without
        TensorRT that made ``auto`` pick a 390 ms CPU session over the 40 ms torch-CUDA
        backend (35k points). Asked for by name, it still runs there on the CPU, warned."""
        if not onnxruntime_available():
            return False, "onnxruntime not importable"
        if not (model_dir / ONNX_FILE).is_file():
            return False, f"no {ONNX_FILE}"
        if device_type(device) == "cuda":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return False, "onnxruntime has no CUDA provider (a CPU-only build)"
        return True, "ok"

    @classmethod
    def load(
        cls, model_dir: Path, meta: ModelMetadata, device: str, options: LoadOptions
    ) -> OnnxRuntimeBackend:
        path, form = cls.graph_for(model_dir, meta, device)
        return cls(path, device, options.intra_op_threads, form)

    @staticmethod
    def graph_for(model_dir: Path, meta: ModelMetadata, device: str) -> tuple[Path, str]:
        """(verified graph file, form) this backend runs for ``device``: on CPU the fused
        graph where the export wrote one and the custom-op library builds, else the pairs
        graph (older exports: tables); on CUDA the tables graph."""
        if device_type(device) != "cpu" or meta.cpu_onnx is None:
            return verified_onnx(model_dir, meta), "tables"
        if meta.cpu_fused_onnx is not None:
            ok, why = ort_ops.available()
            if ok:
                return verified_onnx(model_dir, meta, cpu=True, fused=True), "fused"
            log.info("onnxruntime: standard-ops graph %s (custom ops unavailable: %s)",
                     CPU_ONNX_FILE, why)  # fmt: skip
        path = verified_onnx(model_dir, meta, cpu=True)
        if path.name != CPU_ONNX_FILE:
            raise ModelLoadError(f"model.json names {path.name} for CPU, expected {CPU_ONNX_FILE}")
        return path, "pairs"

    def infer(self, inputs: NetInputs) -> Tensor:
        feeds = flatten_inputs(inputs, self.form)
        arrays = {n: np.ascontiguousarray(feeds[n].cpu().numpy()) for n in self.input_names}
        (logits,) = self.session.run([OUTPUT_LOGITS], arrays)
        return torch.from_numpy(logits)
