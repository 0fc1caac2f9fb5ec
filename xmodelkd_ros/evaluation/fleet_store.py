"""The fleet run's folder: one sub-folder per bag with its records and a done marker.

Why per bag: a killed run (Ctrl-C, a preempted CI job, a lost cluster) must resume with
the bags it finished, so each finished bag is written as soon as it comes back:
``bags/<id>/frames.jsonl`` first (atomically), then ``done.json``; a bag counts as done
only with both, and only when ``done.json`` records the same model and options (the
key), so changing the model re-evaluates every bag. A bag that failed twice gets
``failed.json`` with the reason and is tried again by the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from xmodelkd_ros.evaluation.fleet_bags import BagSpec
from xmodelkd_ros.evaluation.frames import FRAMES_FILE, read_frames, write_frames

DONE, FAILED = "done.json", "failed.json"


def model_digest(model: Path) -> str:
    """sha256 of a ``.pt`` checkpoint, or of an export's ``model.json`` (which records the
    sha256 of the graph it describes)."""
    f = model / "model.json" if model.is_dir() else model
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


class FleetStore:
    """``<out>/bags/<id>/`` per bag; ``key``: the model and options the records belong to."""

    def __init__(self, out: Path, key: dict[str, Any]) -> None:
        self.out = Path(out)
        self.key = key

    def folder(self, bag: BagSpec) -> Path:
        """A readable, unique folder name: the bag's name made safe, plus a short hash."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", bag.name).strip("_")[-80:] or "bag"
        tag = hashlib.sha1(bag.path.encode()).hexdigest()[:8]
        return self.out / "bags" / f"{safe}-{tag}"

    def done(self, bag: BagSpec) -> dict[str, Any] | None:
        """The done marker of a finished bag with the same key, else None."""
        d = self.folder(bag)
        try:
            doc = json.loads((d / DONE).read_text())
        except (OSError, ValueError):
            return None
        if doc.get("key") != self.key or not (d / FRAMES_FILE).is_file():
            return None
        return doc

    def save_done(self, bag: BagSpec, result: dict[str, Any]) -> None:
        d = self.folder(bag)
        d.mkdir(parents=True, exist_ok=True)
        (d / FAILED).unlink(missing_ok=True)
        write_frames(d / FRAMES_FILE, result["records"])
        _write_json(d / DONE, {"bag": bag.name, "path": bag.path, "kind": bag.kind,
                               "key": self.key, "frames": len(result["records"]),
                               "classes": result["classes"],
                               "backend": result["backend"]})  # fmt: skip

    def save_failed(self, bag: BagSpec, reason: str) -> None:
        d = self.folder(bag)
        d.mkdir(parents=True, exist_ok=True)
        (d / DONE).unlink(missing_ok=True)
        _write_json(d / FAILED, {"bag": bag.name, "path": bag.path, "key": self.key,
                                 "reason": reason})  # fmt: skip

    def failed(self, bag: BagSpec) -> str | None:
        """The reason a bag failed in this run's last attempt at it, else None."""
        try:
            doc = json.loads((self.folder(bag) / FAILED).read_text())
        except (OSError, ValueError):
            return None
        return doc.get("reason") if doc.get("key") == self.key else None

    def records(self, bag: BagSpec) -> list[dict[str, Any]]:
        return read_frames(self.folder(bag) / FRAMES_FILE)
