"""Which bags a fleet evaluation covers, and their scans with ground truth, read offline.

Why a module of its own: finding the bags (a folder of drives, a list, SemanticKITTI
sequences) and reading their scans is all the fleet knows about storage; the worker only
sees :class:`Scan` objects. Two kinds are read:

* ``rosbag2``: a ROS 2 bag directory (``metadata.yaml``; sqlite3 or MCAP) as the simulator
  writes it (``python -m xmodelkd_ros.sim --format bag``): LiDAR on ``/lidar/points`` (or
  the only other PointCloud2), ground truth on ``/lidar/labels`` (a PointCloud2 with a
  ``label`` field, same points and order), matched by header stamp. Topics are picked by
  :func:`xmodelkd_ros.replay.bag.plan_bag`, the replay's own rules.
* ``kitti``: a SemanticKITTI sequence (``velodyne/*.bin``, ``labels/*.label``, optional
  ``times.txt`` for the stamps).

Scans are streamed: the ground truth is joined to the LiDAR messages by stamp while the
bag is read once, so a long drive never sits in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

INTENSITY_FIELDS = ("intensity", "reflectivity", "i")


class FleetError(RuntimeError):
    """Bad input to the fleet evaluation (no bags, unreadable list, bad options): one line."""


@dataclass(frozen=True)
class BagSpec:
    """One bag of the fleet: its name in the report, absolute path, and kind."""

    name: str
    path: str
    kind: str  # "rosbag2" | "kitti"


@dataclass
class Scan:
    """One LiDAR scan: all ``points`` rows are reported; ``xyzi`` (M, 4) are the valid
    ones (``valid`` (N,) marks them, None when all are) that the model sees; ``truth`` (N,)
    label ids or None."""

    index: int
    stamp: int
    points: int
    xyzi: np.ndarray
    valid: np.ndarray | None
    truth: np.ndarray | None


def _kind(path: Path) -> str | None:
    if (path / "metadata.yaml").is_file():
        return "rosbag2"
    if (path / "velodyne").is_dir():
        return "kitti"
    return None


def _found_under(root: Path) -> list[Path]:
    """Bags (rosbag2 dirs, KITTI sequences) at or below ``root``, not inside one another."""
    if _kind(root):
        return [root]
    out: list[Path] = []
    for dirpath, dirnames, _files in os.walk(root):
        here = Path(dirpath)
        if here != root and _kind(here):
            out.append(here)
            dirnames[:] = []  # a bag's own folders are not bags
        else:
            dirnames.sort()
    return out


def find_bags(inputs: Sequence[str | os.PathLike], list_file: str | None = None) -> list[BagSpec]:
    """The bags named by ``inputs`` (bags, folders searched for bags) and ``list_file``
    (one path per line, ``#`` comments), each once, sorted by name.

    A bag's name is its path relative to the folder all bags share (unique by construction).
    Raises :class:`FleetError` for a missing path or when nothing is found."""
    paths = [Path(p) for p in inputs]
    if list_file is not None:
        try:
            lines = Path(list_file).read_text().splitlines()
        except OSError as exc:
            raise FleetError(f"cannot read bag list {list_file}: {exc.strerror}") from None
        base = Path(list_file).parent
        paths += [base / s for s in (ln.split("#", 1)[0].strip() for ln in lines) if s]
    if not paths:
        raise FleetError("no bags given: name bags or folders, or --list FILE")
    found: dict[Path, str] = {}
    for p in paths:
        if p.is_file() and (p.parent / "metadata.yaml").is_file():
            p = p.parent  # a .db3 / .mcap inside its rosbag2 directory
        if not p.exists():
            raise FleetError(f"{p} does not exist")
        under = _found_under(p.resolve()) if p.is_dir() else []
        if not under:
            raise FleetError(f"{p} holds no ROS 2 bag (a folder with metadata.yaml) and no "
                             "SemanticKITTI sequence (a folder with velodyne/)")  # fmt: skip
        for b in under:
            found[b] = _kind(b) or ""
    roots = list(found)
    common = Path(os.path.commonpath([str(b.parent) for b in roots]))
    specs = [BagSpec(str(b.relative_to(common)), str(b), k) for b, k in found.items()]
    return sorted(specs, key=lambda s: s.name)


def read_scans(spec: BagSpec, lidar_topic: str | None = None,
               labels_topic: str | None = None) -> Iterator[Scan]:  # fmt: skip
    """Every scan of the bag in order (see the module doc for what each kind holds)."""
    if spec.kind == "kitti":
        yield from _kitti_scans(Path(spec.path))
    else:
        yield from _rosbag_scans(Path(spec.path), lidar_topic, labels_topic)


def _kitti_scans(seq: Path) -> Iterator[Scan]:
    from xmodelkd_ros.labels import raw_to_label

    bins = sorted((seq / "velodyne").glob("*.bin"))
    if not bins:
        raise FleetError(f"{seq}/velodyne holds no .bin scans")
    times = None
    if (seq / "times.txt").is_file():
        times = np.loadtxt(seq / "times.txt", ndmin=1)
    for i, b in enumerate(bins):
        pts = np.fromfile(b, dtype=np.float32)
        if pts.size % 4:
            raise FleetError(f"{b}: size is not a multiple of 4 float32 (x, y, z, remission)")
        pts = pts.reshape(-1, 4)
        truth = None
        lab = seq / "labels" / f"{b.stem}.label"
        if lab.is_file():
            raw = np.fromfile(lab, dtype=np.uint32)
            if len(raw) != len(pts):
                raise FleetError(f"{lab}: {len(raw)} labels for {len(pts)} points")
            truth = raw_to_label((raw & 0xFFFF).astype(np.uint16))
        stamp = round(float(times[i]) * 1e9) if times is not None and i < len(times) else i
        valid = np.isfinite(pts[:, :3]).all(1)
        yield Scan(i, stamp, len(pts), pts[valid], None if valid.all() else valid, truth)


def _cloud_scan(index: int, msg: Any) -> Scan:
    from xmodelkd_ros.msgs import decode_cloud, stamp_ns

    cloud = decode_cloud(msg, intensity_field=list(INTENSITY_FIELDS))
    xyzi = np.empty((cloud.num_valid, 4), dtype=np.float32)
    xyzi[:, :3] = cloud.xyz
    xyzi[:, 3] = cloud.intensity
    valid = None if cloud.num_valid == cloud.num_points else cloud.valid
    return Scan(index, stamp_ns(msg.header), cloud.num_points, xyzi, valid, None)


def _rosbag_scans(path: Path, lidar_topic: str | None, labels_topic: str | None
                  ) -> Iterator[Scan]:  # fmt: skip
    """LiDAR and ground-truth messages read in one pass and joined by stamp; a scan waits
    only until its ground truth arrives (the simulator writes both at the same instant)."""
    from xmodelkd_ros.msgs import stamp_ns
    from xmodelkd_ros.replay.bag import cloud_labels, open_reader, plan_bag

    plan = plan_bag(path, lidar_topic, labels_topic, cameras=False)
    reader = open_reader(plan.path)
    waiting: dict[int, Scan] = {}  # LiDAR scans whose ground truth has not come yet
    truths: dict[int, np.ndarray] = {}  # ground truth whose scan has not come yet
    index = 0
    try:
        wanted = {plan.lidar_topic, plan.labels_topic}
        conns = [c for c in reader.connections if c.topic in wanted]
        for conn, _t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == plan.lidar_topic:
                scan = _cloud_scan(index, msg)
                index += 1
                if plan.labels_topic is None:
                    yield scan
                elif scan.stamp in truths:
                    scan.truth = truths.pop(scan.stamp)
                    yield scan
                else:
                    waiting[scan.stamp] = scan
            else:
                stamp = stamp_ns(msg.header)
                if stamp in waiting:
                    scan = waiting.pop(stamp)
                    scan.truth = cloud_labels(msg)
                    yield scan
                else:
                    truths[stamp] = cloud_labels(msg)
    finally:
        reader.close()
    yield from sorted(waiting.values(), key=lambda s: s.index)  # no ground truth for these
