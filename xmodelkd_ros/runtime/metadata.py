"""``model.json``: everything the runtime needs besides the ONNX weights.

The node must voxelize exactly as training did and colour labels the way the
dataset does, without importing the training recipe; so grid, input layout,
classes, palette and provenance travel with the model, and the ONNX file's
sha256 ties the two files together.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmodelkd_ros.nets.checkpoint import CheckpointError, grid_from_dict
from xmodelkd_ros.nets.student import StudentConfig
from xmodelkd_ros.sparse import VoxelGridSpec

__all__ = [
    "CHECKPOINT_FILE",
    "CPU_FUSED_ONNX_FILE",
    "CPU_ONNX_FILE",
    "DEFAULT_MAX_POINTS",
    "FORMAT",
    "METADATA_FILE",
    "ONNX_FILE",
    "ModelLoadError",
    "ModelMetadata",
    "atomic_write_text",
    "sha256_file",
    "verified_onnx",
]

FORMAT = "xmodelkd_ros.model/1"
METADATA_FILE = "model.json"
ONNX_FILE = "model.onnx"
CPU_ONNX_FILE = "model_cpu.onnx"
CPU_FUSED_ONNX_FILE = "model_cpu_fused.onnx"
#: TensorRT profile max points of exports that predate the ``max_points`` key.
DEFAULT_MAX_POINTS = 200_000
CHECKPOINT_FILE = "student.pt"


class ModelLoadError(RuntimeError):
    """The model directory is missing, incomplete, corrupt or inconsistent."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Temp file + rename, so a reader never sees half a model.json."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class ModelMetadata:
    """Parsed ``model.json`` (see ``models/README.md`` for the field list)."""

    class_names: list[str]
    palette: list[list[int]]
    grid: VoxelGridSpec
    config: StudentConfig
    input_fields: list[str]
    preset: str
    onnx_sha256: str
    opset: int
    input_names: list[str]
    output_names: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)
    tensorrt_profile: dict[str, list[int]] = field(default_factory=dict)
    checkpoint_sha256: str | None = None
    #: The pairs-form graph for ONNX Runtime on CPU (file, sha256, form, inputs); None in
    #: exports that predate it, which then run ``model.onnx`` everywhere.
    cpu_onnx: dict[str, Any] | None = None
    #: The fused-form graph (one custom node per conv) for ONNX Runtime on CPU with the
    #: custom-op library (file, sha256, form, inputs, custom_ops); None in older exports.
    cpu_fused_onnx: dict[str, Any] | None = None
    #: Intensity range the model was trained on ([lo, hi]); None if the checkpoint lacks it.
    intensity_range: tuple[float, float] | None = None
    #: Largest scan the TensorRT optimization profile accepts.
    max_points: int = DEFAULT_MAX_POINTS
    #: The LiDAR rig(s) the model was trained on and the envelope live scans are checked
    #: against (:mod:`xmodelkd_ros.runtime.contract`); None when unknown or in older exports.
    lidar_contract: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_levels(self) -> int:
        return self.config.num_levels

    def to_dict(self) -> dict[str, Any]:
        from xmodelkd_ros.nets.checkpoint import grid_to_dict

        return {
            "format": FORMAT,
            "classes": list(self.class_names),
            "label_ids": {name: i + 1 for i, name in enumerate(self.class_names)},
            "unlabeled": 0,
            "palette": [list(map(int, c)) for c in self.palette],
            "grid": grid_to_dict(self.grid),
            "input": {
                "fields": list(self.input_fields),
                "in_channels": self.config.in_channels,
                "normalization": {
                    "mean": list(self.config.in_mean),
                    "std": list(self.config.in_std),
                    "applied": "inside the graph: (x - mean) / std on voxel and point features",
                },
            },
            "network": {"preset": self.preset, "config": self.config.to_dict()},
            "onnx": {
                "file": ONNX_FILE,
                "sha256": self.onnx_sha256,
                "opset": self.opset,
                "inputs": list(self.input_names),
                "outputs": list(self.output_names),
                "batchnorm_folded": True,
                "form": "tables",
                "for": "tensorrt, onnxruntime on CUDA (and on CPU when onnx_cpu is absent)",
            },
            "onnx_cpu": {**self.cpu_onnx, "for": "onnxruntime on CPU"} if self.cpu_onnx else None,
            "onnx_cpu_fused": {
                **self.cpu_fused_onnx,
                "for": "onnxruntime on CPU with the custom-op library (sparse/ort_ops.py)",
            }
            if self.cpu_fused_onnx
            else None,
            "checkpoint": {"file": CHECKPOINT_FILE, "sha256": self.checkpoint_sha256}
            if self.checkpoint_sha256
            else None,
            "tensorrt_profile": self.tensorrt_profile,
            "max_points": int(self.max_points),
            "intensity_range": list(self.intensity_range) if self.intensity_range else None,
            "lidar_contract": self.lidar_contract,
            "provenance": self.provenance,
            **self.extra,
        }

    def write(self, model_dir: str | os.PathLike) -> Path:
        path = Path(model_dir) / METADATA_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetadata:
        if data.get("format") != FORMAT:
            raise ModelLoadError(f"model.json format is {data.get('format')!r}, expected {FORMAT}")
        try:
            onnx_info = data["onnx"]
            ckpt = data.get("checkpoint") or {}
            known = {
                "format", "classes", "label_ids", "unlabeled", "palette", "grid", "input",
                "network", "onnx", "checkpoint", "tensorrt_profile", "provenance",
                "onnx_cpu", "onnx_cpu_fused", "max_points", "intensity_range", "lidar_contract",
            }  # fmt: skip
            profile = dict(data.get("tensorrt_profile") or {})
            max_points = data.get("max_points") or profile.get("points", [0, 0, 0])[2]
            rng = data.get("intensity_range")
            cpu = data.get("onnx_cpu")
            fused = data.get("onnx_cpu_fused")
            return cls(
                class_names=list(data["classes"]),
                palette=[list(c) for c in data["palette"]],
                grid=grid_from_dict(data["grid"]),
                config=StudentConfig.from_dict(data["network"]["config"]),
                input_fields=list(data["input"]["fields"]),
                preset=str(data["network"].get("preset", "custom")),
                onnx_sha256=str(onnx_info["sha256"]),
                opset=int(onnx_info["opset"]),
                input_names=list(onnx_info["inputs"]),
                output_names=list(onnx_info["outputs"]),
                provenance=dict(data.get("provenance") or {}),
                tensorrt_profile=profile,
                checkpoint_sha256=ckpt.get("sha256"),
                cpu_onnx={k: v for k, v in cpu.items() if k != "for"} if cpu else None,
                cpu_fused_onnx={k: v for k, v in fused.items() if k != "for"} if fused else None,
                intensity_range=(float(rng[0]), float(rng[1])) if rng else None,
                max_points=int(max_points or DEFAULT_MAX_POINTS),
                lidar_contract=dict(data["lidar_contract"]) if data.get("lidar_contract") else None,
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError, CheckpointError) as exc:
            raise ModelLoadError(f"malformed model.json: {exc!r}") from exc

    @classmethod
    def read(cls, model_dir: str | os.PathLike) -> ModelMetadata:
        """Parse ``model_dir/model.json``; every failure is a :class:`ModelLoadError`."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ModelLoadError(f"model directory not found: {model_dir}")
        path = model_dir / METADATA_FILE
        if not path.is_file():
            raise ModelLoadError(f"{METADATA_FILE} missing in {model_dir}")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"cannot parse {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelLoadError(f"{path} does not hold a JSON object")
        return cls.from_dict(data)


def verified_onnx(
    model_dir: str | os.PathLike, meta: ModelMetadata, cpu: bool = False, fused: bool = False
) -> Path:
    """Path of the tables graph (or, with ``cpu``, the pairs graph; with ``fused`` too,
    the fused graph) after checking that it exists and its sha256 matches
    ``model.json``; :class:`ModelLoadError` otherwise."""
    if cpu and fused:
        info = meta.cpu_fused_onnx or {}
    elif cpu:
        info = meta.cpu_onnx or {}
    else:
        info = {"file": ONNX_FILE, "sha256": meta.onnx_sha256}
    if not info.get("file"):
        what = "fused CPU graph" if fused else "CPU graph"
        raise ModelLoadError(f"model.json in {model_dir} has no {what}")
    path = Path(model_dir) / str(info["file"])
    if not path.is_file():
        raise ModelLoadError(f"{path.name} missing in {model_dir}")
    actual = sha256_file(path)
    if actual != info.get("sha256"):
        raise ModelLoadError(
            f"{path} sha256 {actual[:12]}.. does not match model.json "
            f"({str(info.get('sha256'))[:12]}..): re-export or restore the file"
        )
    return path
