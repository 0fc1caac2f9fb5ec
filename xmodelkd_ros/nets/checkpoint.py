"""The student checkpoint: the hand-over between training, export and the runtime.

A checkpoint carries everything needed to rebuild the exact model and its inputs
(architecture, voxel grid, class names, provenance), so export and the ``torch``
backend never depend on a recipe file that may have changed since training.
Writes are atomic (temp file + rename): a crash mid-save never leaves a truncated
file where a good one was.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xmodelkd_ros.labels import CLASS_NAMES
from xmodelkd_ros.nets.student import StudentConfig, StudentNet
from xmodelkd_ros.sparse import VoxelGridSpec

FORMAT = "xmodelkd_ros.student/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or not a student checkpoint."""


@dataclass
class StudentCheckpoint:
    config: StudentConfig
    grid: VoxelGridSpec
    state_dict: dict[str, torch.Tensor]
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    #: Free-form: recipe, dataset, metrics, git revision ... copied into model.json.
    provenance: dict[str, Any] = field(default_factory=dict)

    def build(self) -> StudentNet:
        net = StudentNet(self.config)
        net.load_state_dict(self.state_dict)
        return net.eval()

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "student_config": self.config.to_dict(),
            "grid": grid_to_dict(self.grid),
            "class_names": list(self.class_names),
            "provenance": self.provenance,
            "state_dict": self.state_dict,
        }


def grid_to_dict(grid: VoxelGridSpec) -> dict[str, list[float]]:
    return {
        "voxel_size": list(grid.voxel_size),
        "range_min": list(grid.range_min),
        "range_max": list(grid.range_max),
    }


def grid_from_dict(data: dict[str, Any]) -> VoxelGridSpec:
    try:
        return VoxelGridSpec(
            voxel_size=tuple(float(v) for v in data["voxel_size"]),
            range_min=tuple(float(v) for v in data["range_min"]),
            range_max=tuple(float(v) for v in data["range_max"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"bad voxel grid description {data!r}: {exc}") from exc


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temp file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_student(ckpt: StudentCheckpoint, path: str | os.PathLike) -> None:
    atomic_torch_save(ckpt.to_payload(), path)


def read_torch_file(path: Path) -> Any:
    """``torch.load`` (tensors only) with a one-line :class:`CheckpointError` for a file it
    cannot read. Why: torch's own message for a corrupt or foreign file is a paragraph that
    suggests ``weights_only=False``, which a node loading a model must never do."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        import pickle

        if isinstance(exc, pickle.UnpicklingError):
            why = "corrupt, truncated, or holding objects other than tensors"
        else:
            why = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()),
                       type(exc).__name__)  # fmt: skip
        raise CheckpointError(f"cannot read checkpoint {path}: {why}") from exc


def load_student(path: str | os.PathLike) -> StudentCheckpoint:
    """Load a student checkpoint, or the one a training checkpoint holds under "student"."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    payload = read_torch_file(path)
    if isinstance(payload, dict) and isinstance(payload.get("student"), dict):
        payload = payload["student"]
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint")
    try:
        config = StudentConfig.from_dict(payload["student_config"])
        return StudentCheckpoint(
            config=config,
            grid=grid_from_dict(payload["grid"]),
            state_dict=payload["state_dict"],
            class_names=list(payload.get("class_names", CLASS_NAMES)),
            provenance=dict(payload.get("provenance", {})),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: malformed checkpoint: {exc}") from exc
