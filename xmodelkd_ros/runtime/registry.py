"""Backend registry: a backend is one decorated class, and ``auto`` is a rule over them.

Each backend registers its name, whether it can run here (``available``), how to load
itself from an exported model directory (``load``) and its speed rank per device
type, measured by ``bench/bench_runtime.py`` (lower is faster). ``choose_backend``
then picks, for the requested device, the available backend with the lowest rank,
so the default is always the fastest backend that can run, and adding a backend
never touches the Segmenter. The entries are held by the package's
:class:`~xmodelkd_ros.registry.Registry`, the one the training's stages and datasets use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from xmodelkd_ros.registry import Registry
from xmodelkd_ros.runtime.metadata import ModelLoadError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from xmodelkd_ros.nets.inputs import NetInputs
    from xmodelkd_ros.runtime.metadata import ModelMetadata

__all__ = [
    "BACKEND_REGISTRY",
    "Backend",
    "LoadOptions",
    "choose_backend",
    "device_type",
    "register_backend",
]

log = logging.getLogger(__name__)


class Backend(Protocol):
    """What the Segmenter needs from an inference engine."""

    name: str
    #: Device the network inputs should live on before ``infer`` (avoids a second copy).
    device: torch.device

    def infer(self, inputs: NetInputs) -> Tensor:
        """Network inputs of one scan -> per-point logits (P, num_classes), float32."""
        ...


@dataclass(frozen=True)
class LoadOptions:
    """Backend-specific knobs of ``Segmenter.from_model_dir`` (each backend reads its own)."""

    engine_cache: str | os.PathLike | None = None
    fp16: bool = False
    #: CPU threads of inference, 0 = all cores (ONNX Runtime's pool; torch's threads).
    intra_op_threads: int = 0
    #: Overrides the TensorRT optimization profile's max points (None: model.json's).
    max_points: int | None = None


class BackendClass(Protocol):
    """The class-level interface a registered backend provides."""

    @staticmethod
    def available(device: str, model_dir: Path) -> tuple[bool, str]: ...

    @classmethod
    def load(
        cls, model_dir: Path, meta: ModelMetadata, device: str, options: LoadOptions
    ) -> Backend: ...


@dataclass(frozen=True)
class BackendEntry:
    name: str
    cls: Any  # a BackendClass
    #: device type ("cpu", "cuda") -> rank, or a function of the model directory giving it
    #: (a backend whose speed depends on what this machine offers and what the export
    #: wrote; None: no particular model); absent = never chosen by auto on that device.
    rank: dict[str, int | Callable[[Path | None], int]]

    def rank_for(self, dtype: str, model_dir: Path | None = None) -> int:
        r = self.rank[dtype]
        return int(r(model_dir) if callable(r) else r)


#: backend name -> its class and speed ranks (the package's one kind of registry)
BACKEND_REGISTRY: Registry[BackendEntry] = Registry("backend")


def register_backend(
    name: str, rank: dict[str, int | Callable[[Path | None], int]]
) -> Callable[[type], type]:
    """Class decorator: ``@register_backend("onnxruntime", rank={"cpu": 1, "cuda": 1})``;
    the class must provide ``available``, ``load`` and ``infer``."""

    def deco(cls: type) -> type:
        for attr in ("available", "load", "infer"):
            if not callable(getattr(cls, attr, None)):
                raise TypeError(f"backend {name!r} ({cls.__name__}) lacks {attr}()")
        BACKEND_REGISTRY.register(name)(BackendEntry(name, cls, dict(rank)))
        return cls

    return deco


def device_type(device: str) -> str:
    """``"cuda"`` for ``cuda`` / ``cuda:N``, else ``"cpu"``."""
    return "cuda" if str(device).startswith("cuda") else "cpu"


def choose_backend(device: str, model_dir: str | os.PathLike) -> str:
    """``auto``: the available backend with the lowest rank for ``device``'s type.

    Raises :class:`ModelLoadError` naming every backend's reason when none can run.
    """
    dtype = device_type(device)
    model_dir = Path(model_dir)
    candidates = sorted(
        (e for e in BACKEND_REGISTRY.values() if dtype in e.rank),
        key=lambda e: e.rank_for(dtype, model_dir),
    )
    reasons = []
    for entry in candidates:
        ok, why = entry.cls.available(str(device), model_dir)
        if ok:
            skipped = f" (skipped: {'; '.join(reasons)})" if reasons else ""
            log.info("backend auto -> %s on %s, fastest available%s", entry.name, dtype, skipped)
            return entry.name
        reasons.append(f"{entry.name}: {why}")
    raise ModelLoadError(f"no usable backend on {dtype}: {'; '.join(reasons) or 'none registered'}")
