"""One bag of a fleet evaluation: every scan through the node's ``Segmenter``, scored.

Why a plain function of picklable inputs: the same :func:`evaluate_bag` runs in a local
worker process and as a Ray task on any node of a cluster, so both engines produce the
same records by construction. The result travels back to the driver (which alone writes
files), so cluster nodes need no shared output folder, only the bags and the model.

The Segmenter is loaded once per worker process and reused for every bag it is given.
Its inputs are the node's (decoded PointCloud2, valid points, intensity field), and the
records are the replay's (:mod:`xmodelkd_ros.evaluation.frames`), so an offline run and a
max-throughput replay of the same bag give the same per-class counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodelkd_ros.evaluation.fleet_bags import BagSpec, FleetError, read_scans
from xmodelkd_ros.evaluation.frames import frame_record, score_frame


@dataclass(frozen=True)
class ModelSpec:
    """The model every worker loads: a model dir (``model.json``) or a student ``.pt``."""

    path: str
    backend: str = "auto"
    device: str = "cpu"
    threads: int = 1  # CPU threads of one worker's inference


@dataclass(frozen=True)
class BagTask:
    """One unit of work: a bag, the model, and the topics to read (None: auto)."""

    bag: BagSpec
    model: ModelSpec
    lidar_topic: str | None = None
    labels_topic: str | None = None


_SEGMENTERS: dict[ModelSpec, Any] = {}


def load_segmenter(model: ModelSpec) -> Any:
    """The worker process's Segmenter for ``model`` (loaded on first use)."""
    if model not in _SEGMENTERS:
        from xmodelkd_ros.runtime import Segmenter
        from xmodelkd_ros.runtime.backends import set_torch_threads

        set_torch_threads(model.threads)
        path = Path(model.path)
        if path.is_dir():
            seg = Segmenter.from_model_dir(path, backend=model.backend, device=model.device,
                                           intra_op_threads=model.threads)  # fmt: skip
        elif model.backend in ("auto", "torch"):
            seg = Segmenter.from_checkpoint(path, device=model.device, threads=model.threads)
        else:
            raise FleetError(f"a .pt checkpoint runs on torch only, not {model.backend}: "
                             "export it for other backends")  # fmt: skip
        _SEGMENTERS.clear()  # one model per worker at a time
        _SEGMENTERS[model] = seg
    return _SEGMENTERS[model]


def class_names_of(seg: Any) -> list[str]:
    from xmodelkd_ros.labels import CLASS_NAMES

    return list(seg.class_names or CLASS_NAMES)


def evaluate_bag(task: BagTask) -> dict[str, Any]:
    """Segment and score every scan of ``task.bag``; returns ``{"bag", "records",
    "classes", "backend", "worker"}`` with one record per scan, in scan order."""
    seg = load_segmenter(task.model)
    names = class_names_of(seg)
    records = []
    for scan in read_scans(task.bag, task.lidar_topic, task.labels_topic):
        res = seg.segment(scan.xyzi)
        labels = res.labels
        if scan.valid is not None:
            labels = np.zeros(scan.points, dtype=np.uint16)
            labels[scan.valid] = res.labels
        score = None if scan.truth is None else score_frame(scan.truth, labels, len(names))
        extra: dict[str, Any] = {"answered": True}
        if scan.truth is not None and score is None:
            extra["problem"] = (f"ground truth has {len(scan.truth)} points, the scan "
                                f"{scan.points}")  # fmt: skip
        records.append(frame_record("offline", task.bag.name, scan.index, scan.stamp,
                                    scan.points, score, names, scan.truth is not None,
                                    **extra))  # fmt: skip
    if not records:
        raise FleetError(f"bag {task.bag.path} holds no LiDAR scan")
    records.sort(key=lambda r: r["index"])
    return {"bag": task.bag.name, "records": records, "classes": names,
            "backend": seg.backend_name, "worker": os.getpid()}  # fmt: skip
