"""Rendered synthetic scans cached on disk, keyed by everything that determines them.

Why: a growing unlabeled pool (hundreds of scans, each with three rendered camera
images, ~0.25 s apiece on one core) would otherwise be rendered again by every stage,
seed and benchmark run. A scan is a pure function of its street (world seed), its frame
index, the simulator's settings, its temporal views and the code that renders it, so
the key is a hash of exactly those; the code part is a digest of the source files that
produce a :class:`~.sample.Sample` from the simulator, so editing the simulator or the
reader never serves a stale scan. Entries are ``.npz`` files (arrays and the cameras'
calibration; no pickles), written atomically, so parallel runs may share one folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from xmodelkd_ros.geometry import PinholeCamera
from xmodelkd_ros.training.data.sample import Sample

#: Bumped when the file layout below changes.
FORMAT = 1
_PACKAGE = Path(__file__).resolve().parents[2]
#: The sources a cached scan depends on: the simulator, the camera model, the label
#: table and the reader that turns a frame into a Sample (temporal views included).
SOURCES = ("sim/*.py", "geometry.py", "labels.py", "training/data/synthetic.py",
           "training/data/temporal.py", "training/data/sample.py")  # fmt: skip


def code_digest() -> str:
    """sha256 of the sources in :data:`SOURCES` (paths and contents, in sorted order)."""
    h = hashlib.sha256()
    for pattern in SOURCES:
        for path in sorted(_PACKAGE.glob(pattern)):
            h.update(str(path.relative_to(_PACKAGE)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def scan_key(fields: dict[str, Any], digest: str) -> str:
    """The cache key of one scan: ``fields`` (JSON-able) plus the code digest."""
    text = json.dumps({"format": FORMAT, "code": digest, **fields}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _pack(sample: Sample) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {"points": sample.points}
    if sample.labels is not None:
        arrays["labels"] = sample.labels
    cams = sample.cameras
    meta = {"name": sample.name, "offsets": list(sample.image_offsets),
            "cameras": [{"name": c.name, "width": c.width, "height": c.height,
                         "near": c.near, "distorted": c.D is not None} for c in cams]}  # fmt: skip
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    for i, (img, cam) in enumerate(zip(sample.images, cams, strict=True)):
        arrays[f"image{i}"] = img
        arrays[f"K{i}"] = cam.K
        arrays[f"T{i}"] = cam.T_cam_lidar
        if cam.D is not None:
            arrays[f"D{i}"] = cam.D
    return arrays


def _unpack(data: Any) -> Sample:
    meta = json.loads(bytes(data["meta"]).decode())
    cams, images = [], []
    for i, c in enumerate(meta["cameras"]):
        cams.append(PinholeCamera(c["name"], data[f"K{i}"], c["width"], c["height"],
                                  data[f"T{i}"], data[f"D{i}"] if c["distorted"] else None,
                                  c["near"]))  # fmt: skip
        images.append(np.array(data[f"image{i}"]))
    labels = np.array(data["labels"]) if "labels" in data.files else None
    return Sample(np.array(data["points"]), labels, images, cams, meta["name"], meta["offsets"])


class ScanCache:
    """A folder of cached scans; ``get`` / ``put`` by the fields that determine a scan."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.digest = code_digest()

    def path(self, fields: dict[str, Any]) -> Path:
        return self.root / f"{scan_key(fields, self.digest)}.npz"

    def get(self, fields: dict[str, Any]) -> Sample | None:
        """The cached scan, or None (absent or unreadable: it is rendered again)."""
        path = self.path(fields)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return _unpack(data)
        except (OSError, ValueError, KeyError):
            return None

    def put(self, fields: dict[str, Any], sample: Sample) -> None:
        """Write ``sample`` atomically (a temporary file renamed into place)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **_pack(sample))
            os.replace(tmp, self.path(fields))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
