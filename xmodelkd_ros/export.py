"""Export a student checkpoint to ONNX graphs + ``model.json`` (+ a TensorRT engine).

``python -m xmodelkd_ros.export --checkpoint CKPT --out DIR [--tensorrt] [--fp16]``

All graphs are the BN-folded student with the kernel maps and the point->voxel
indices as inputs (see :mod:`xmodelkd_ros.runtime.graph` for the three forms):

* ``model.onnx`` (tables form): only Gather / MatMul / Add / Relu / Concat-style
  operators, so TensorRT builds it with no plugin; also ONNX Runtime's CUDA graph.
* ``model_cpu.onnx`` (pairs form): touches only the real neighbour pairs
  (ScatterND-add), ~4x less work on CPU; what ONNX Runtime runs on CPU with standard
  operators only.
* ``model_cpu_fused.onnx`` (fused form): the pairs form with every sparse conv as one
  ``ai.xmodelkd::SparseConv`` node; what ONNX Runtime runs on CPU where the custom-op
  library (:mod:`xmodelkd_ros.sparse.ort_ops`) can be built.

``model.json`` names which file is for which target. Every voxel level, pair list
and the point count are separate dynamic dims.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmodelkd_ros.labels import PALETTE
from xmodelkd_ros.nets.checkpoint import StudentCheckpoint, load_student
from xmodelkd_ros.nets.fold import fold_batchnorm
from xmodelkd_ros.nets.inputs import build_inputs
from xmodelkd_ros.nets.student import PRESETS, StudentConfig
from xmodelkd_ros.runtime.contract import contract_from_provenance
from xmodelkd_ros.runtime.graph import (
    OUTPUT_LOGITS,
    OUTPUT_PROBS,
    ExportWrapper,
    dynamic_axes,
    flatten_inputs,
    input_names,
)
from xmodelkd_ros.runtime.metadata import (
    CHECKPOINT_FILE,
    CPU_FUSED_ONNX_FILE,
    CPU_ONNX_FILE,
    ONNX_FILE,
    ModelMetadata,
    sha256_file,
)
from xmodelkd_ros.runtime.tensorrt import DEFAULT_PROFILE
from xmodelkd_ros.sparse import VoxelGridSpec, ort_ops, use_impl

__all__ = [
    "DEFAULT_OPSET",
    "detect_preset",
    "example_scan",
    "export_checkpoint",
    "export_onnx",
    "main",
]

log = logging.getLogger("xmodelkd_ros.export")

DEFAULT_OPSET = 17
INPUT_FIELDS = ("x", "y", "z", "intensity")


def detect_preset(config: StudentConfig) -> str:
    """Name of the preset ``config`` was made from (ignoring class/channel/normalisation
    overrides), or ``"custom"``."""
    keep = ("enc_widths", "dec_widths", "blocks")
    for name, preset in PRESETS.items():
        if all(getattr(preset, k) == getattr(config, k) for k in keep):
            return name
    return "custom"


def example_scan(grid: VoxelGridSpec, in_channels: int, n: int = 4000, seed: int = 0) -> np.ndarray:
    """A small clustered scan inside ``grid`` used only to trace the graph.

    Points are spread over several voxels per level so no kernel offset is empty;
    tracing does not specialise on data, the sample only has to be valid.
    """
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(grid.range_min), np.asarray(grid.range_max)
    centre = (lo + hi) / 2
    span = np.minimum(hi - lo, 8.0) / 2
    xyz = centre + rng.uniform(-1, 1, (n, 3)) * span
    extra = rng.uniform(0, 1, (n, max(in_channels - 3, 0)))
    return np.concatenate([xyz, extra], axis=1).astype(np.float32)


def export_onnx(
    ckpt: StudentCheckpoint,
    onnx_path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    with_probs: bool = False,
    form: str = "tables",
) -> list[str]:
    """Fold BN, trace the graph ``form`` (``tables``: Gather form of every conv, for
    TensorRT; ``pairs``: pair lists, for CPU; ``fused``: pair lists and one custom node
    per conv, for ONNX Runtime with the custom-op library) and write the ONNX file.

    Returns the graph input names. ``onnx.checker`` runs on the result.
    """
    import onnx

    if opset < 17:
        raise ValueError("opset >= 17 required")
    cfg = ckpt.config
    net = fold_batchnorm(ckpt.build())
    wrapper = ExportWrapper(net, cfg.num_levels, with_probs, form).eval()
    sample = build_inputs(
        [example_scan(ckpt.grid, cfg.in_channels)], ckpt.grid, cfg.num_levels, cfg.in_channels
    )
    feeds = flatten_inputs(sample, form)
    names = input_names(cfg.num_levels, form)
    outputs = [OUTPUT_LOGITS, OUTPUT_PROBS] if with_probs else [OUTPUT_LOGITS]
    onnx_path = Path(onnx_path)
    with use_impl("gather"), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation / tracer notes
        # dynamo=False: the TorchScript exporter needs no onnxscript and takes
        # per-name dynamic axes, which is exactly the interface we want.
        torch.onnx.export(
            wrapper,
            tuple(feeds[n] for n in names),
            str(onnx_path),
            input_names=names,
            output_names=outputs,
            dynamic_axes=dynamic_axes(cfg.num_levels, with_probs, form),
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
            custom_opsets={ort_ops.DOMAIN: 1} if form == "fused" else None,
        )
    onnx.checker.check_model(onnx.load(str(onnx_path)), full_check=True)
    return names


def _export_graphs(
    ckpt: StudentCheckpoint, out: Path, opset: int, with_probs: bool
) -> dict[str, list[str]]:
    """Write the three graph forms into ``out`` (each through a temporary file, so a failed
    export never leaves a half-written graph under its final name); their input names."""
    names: dict[str, list[str]] = {}
    for form, file in (("tables", ONNX_FILE), ("pairs", CPU_ONNX_FILE),
                       ("fused", CPU_FUSED_ONNX_FILE)):  # fmt: skip
        tmp_onnx = out / f".{file}.tmp"
        names[form] = export_onnx(ckpt, tmp_onnx, opset, with_probs, form)
        os.replace(tmp_onnx, out / file)
    return names


def _copy_checkpoint(ckpt: StudentCheckpoint, ckpt_path: Path | None, out: Path) -> str:
    """Place the checkpoint beside the graphs as ``student.pt`` (the torch backend loads
    it); its sha256."""
    dst = out / CHECKPOINT_FILE
    if ckpt_path is not None:
        if ckpt_path.resolve() != dst.resolve():
            shutil.copyfile(ckpt_path, dst)
    else:
        from xmodelkd_ros.nets.checkpoint import save_student

        save_student(ckpt, dst)
    return sha256_file(dst)


def _export_provenance(ckpt: StudentCheckpoint, ckpt_path: Path | None) -> dict[str, Any]:
    """The checkpoint's provenance for ``model.json``: recipe, dataset and metrics first,
    then everything else it recorded, then where it was exported from."""
    return {
        "recipe": ckpt.provenance.get("recipe"),
        "dataset": ckpt.provenance.get("dataset"),
        "metrics": ckpt.provenance.get("metrics", {}),
        **{
            k: v
            for k, v in ckpt.provenance.items()
            if k not in ("recipe", "dataset", "metrics")
        },
        "source_checkpoint": str(ckpt_path) if ckpt_path else None,
    }


def export_checkpoint(
    checkpoint: str | os.PathLike | StudentCheckpoint,
    out_dir: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    profile: dict[str, list[int]] | None = None,
    with_probs: bool = False,
    copy_checkpoint: bool = True,
) -> ModelMetadata:
    """Write ``model.onnx``, ``model.json`` (and ``student.pt`` for the torch backend)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(checkpoint, StudentCheckpoint):
        ckpt, ckpt_path = checkpoint, None
    else:
        ckpt_path = Path(checkpoint)
        ckpt = load_student(ckpt_path)
    names = _export_graphs(ckpt, out, opset, with_probs)
    profile = dict(profile or DEFAULT_PROFILE)
    intensity = ckpt.provenance.get("intensity_range")
    ckpt_sha = _copy_checkpoint(ckpt, ckpt_path, out) if copy_checkpoint else None

    meta = ModelMetadata(
        class_names=list(ckpt.class_names),
        palette=PALETTE[: len(ckpt.class_names) + 1].tolist(),
        grid=ckpt.grid,
        config=ckpt.config,
        input_fields=list(INPUT_FIELDS[: ckpt.config.in_channels])
        + [f"f{i}" for i in range(len(INPUT_FIELDS), ckpt.config.in_channels)],
        preset=str(ckpt.provenance.get("preset") or detect_preset(ckpt.config)),
        onnx_sha256=sha256_file(out / ONNX_FILE),
        opset=opset,
        input_names=names["tables"],
        output_names=[OUTPUT_LOGITS, OUTPUT_PROBS] if with_probs else [OUTPUT_LOGITS],
        provenance=_export_provenance(ckpt, ckpt_path),
        tensorrt_profile=profile,
        checkpoint_sha256=ckpt_sha,
        cpu_onnx={
            "file": CPU_ONNX_FILE,
            "sha256": sha256_file(out / CPU_ONNX_FILE),
            "form": "pairs",
            "inputs": names["pairs"],
        },
        cpu_fused_onnx={
            "file": CPU_FUSED_ONNX_FILE,
            "sha256": sha256_file(out / CPU_FUSED_ONNX_FILE),
            "form": "fused",
            "inputs": names["fused"],
            "custom_ops": {"domain": ort_ops.DOMAIN, "version": 1, "ops": list(ort_ops.OPS)},
        },
        intensity_range=(float(intensity[0]), float(intensity[1])) if intensity else None,
        max_points=int(profile["points"][2]),
        lidar_contract=contract_from_provenance(ckpt.provenance),
        extra={
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch_version": torch.__version__,
        },
    )
    meta.write(out)
    return meta


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m xmodelkd_ros.export",
        description="Export a student checkpoint to ONNX (+ model.json, optional TensorRT engine).",
    )
    p.add_argument("--checkpoint", required=True, help="student checkpoint (.pt)")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--probs", action="store_true", help="also output softmax probabilities")
    p.add_argument("--tensorrt", action="store_true", help="build the TensorRT engine too")
    p.add_argument("--fp16", action="store_true", help="TensorRT FP16 engine")
    p.add_argument("--engine-cache", default=None, help="engine cache dir (default DIR/engines)")
    for what in ("points", "voxels"):
        for i, stage in enumerate(("min", "opt", "max")):
            p.add_argument(
                f"--{stage}-{what}", type=int, default=None,
                help=f"TensorRT profile {stage} {what} (default {DEFAULT_PROFILE[what][i]})",
            )  # fmt: skip
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    profile = {k: list(v) for k, v in DEFAULT_PROFILE.items()}
    if args.max_voxels is None and args.max_points is not None:
        # a scan never has more voxels than points: a larger point max needs the voxel max too
        profile["voxels"][2] = args.max_points
        profile["voxels"][1] = min(profile["voxels"][1], args.max_points)
    for what in ("points", "voxels"):
        for i, stage in enumerate(("min", "opt", "max")):
            value = getattr(args, f"{stage}_{what}")
            if value is not None:
                profile[what][i] = value
        lo, opt, hi = profile[what]
        if not 1 <= lo <= opt <= hi:
            print(f"error: need 1 <= min <= opt <= max for {what}, got {profile[what]}",
                  file=sys.stderr)  # fmt: skip
            return 2
    try:
        meta = export_checkpoint(args.checkpoint, args.out, args.opset, profile, args.probs)
    except Exception as exc:  # CLI: one clear line instead of a trace for user errors
        from xmodelkd_ros.nets.checkpoint import CheckpointError

        if isinstance(exc, (CheckpointError, ValueError)):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
    log.info("wrote %s (sha256 %s) and model.json", Path(args.out) / ONNX_FILE, meta.onnx_sha256)
    if args.tensorrt:
        from xmodelkd_ros.runtime.tensorrt import build_only, tensorrt_available

        ok, reason = tensorrt_available()
        if not ok:
            print(f"error: cannot build TensorRT engine: {reason}", file=sys.stderr)
            return 1
        path = build_only(args.out, args.engine_cache, args.fp16, profile)
        log.info("TensorRT engine: %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
