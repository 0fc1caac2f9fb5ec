"""Unlabeled ROS 2 bags (read with ``rosbags``, no ROS install): LiDAR + camera pairs.

The label-free contrastive stage (``pretrain``) only needs scans with synchronized
images and the rig calibration, which is what a vehicle records anyway. Each LiDAR
message is paired with the image of every camera topic whose header stamp is nearest,
within ``max_dt`` seconds; scans missing a camera are skipped.

Bags are long, so the reader streams: messages are deserialised one at a time, images
are kept only while some pending scan could still pair with them (a window of
``max_dt`` around the scans waiting for their cameras), and ``limit`` stops the reading
as soon as enough scans are paired. Memory is the kept samples plus that window, flat in
the bag's length. Pairing by sorted stamps assumes each topic's header stamps do not go
back in time (what a driver publishes); a camera that stays silent or lags by more than
``MAX_PENDING`` scans leaves those scans unpaired rather than growing the window.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from xmodelkd_ros.geometry import PinholeCamera, load_calibration
from xmodelkd_ros.msgs import decode_cloud, image_to_rgb, stamp_ns
from xmodelkd_ros.training.data.sample import Sample
from xmodelkd_ros.training.data.semantickitti import DatasetError

#: Scans waiting for a camera before the oldest is paired with what has arrived.
MAX_PENDING = 64


def _stamp(msg: Any, fallback: int) -> int:
    """Header stamp in ns; the bag's log time for messages without a header."""
    return stamp_ns(msg.header) if hasattr(msg, "header") else fallback


class StampPairer:
    """Streaming nearest-stamp pairing of one LiDAR topic with N camera topics.

    ``add_*`` the messages in bag order; ``ready()`` / ``flush()`` yield
    ``(stamp, cloud, [image per camera] or None)`` in LiDAR order. The image chosen for a
    scan is the one with the smallest ``|dt|`` (the earliest-added one on ties), exactly
    what an argmin over every image of the bag would pick; None when a camera has no
    image within ``max_ns``.
    """

    def __init__(self, cameras: list[str], max_ns: int) -> None:
        self.max_ns = int(max_ns)
        self.pending: deque[tuple[int, Any]] = deque()
        # per camera: sorted (stamp, arrival, msg); arrival breaks ties like bag order
        self.images: dict[str, list[tuple[int, int, Any]]] = {c: [] for c in cameras}
        self.latest: dict[str, int | None] = dict.fromkeys(cameras)
        self.last_scan: int | None = None
        self._arrival = 0

    def add_cloud(self, stamp: int, msg: Any) -> None:
        self.pending.append((stamp, msg))
        self.last_scan = stamp if self.last_scan is None else max(self.last_scan, stamp)

    def add_image(self, camera: str, stamp: int, msg: Any) -> None:
        self._arrival += 1
        # the key stops at (stamp, arrival): messages are never compared
        buf = self.images[camera]
        bisect.insort(buf, (stamp, self._arrival, msg), key=lambda e: (e[0], e[1]))
        latest = self.latest[camera]
        self.latest[camera] = stamp if latest is None else max(latest, stamp)
        if len(buf) > 4 * MAX_PENDING:
            del buf[0]  # a scan that old would have been flushed already

    def _complete(self, stamp: int) -> bool:
        """Every camera has moved past ``stamp`` + max_dt: no closer image can come."""
        return all(t is not None and t > stamp + self.max_ns for t in self.latest.values())

    def _pair(self, stamp: int) -> list[Any] | None:
        chosen = []
        for buf in self.images.values():
            lo = bisect.bisect_left(buf, stamp - self.max_ns, key=lambda e: e[0])
            hi = bisect.bisect_right(buf, stamp + self.max_ns, key=lambda e: e[0])
            if lo == hi:
                return None
            best = min(buf[lo:hi], key=lambda e: (abs(e[0] - stamp), e[1]))
            chosen.append(best[2])
        return chosen

    def _prune(self) -> None:
        """Drop images no pending or future scan can pair with (stamps only go forward)."""
        ref = self.pending[0][0] if self.pending else self.last_scan
        if ref is None:
            return
        for buf in self.images.values():
            cut = bisect.bisect_left(buf, ref - self.max_ns, key=lambda e: e[0])
            del buf[:cut]

    def ready(self) -> Iterator[tuple[int, Any, list[Any] | None]]:
        while self.pending and (
            self._complete(self.pending[0][0]) or len(self.pending) > MAX_PENDING
        ):
            stamp, cloud = self.pending.popleft()
            yield stamp, cloud, self._pair(stamp)
            self._prune()

    def flush(self) -> Iterator[tuple[int, Any, list[Any] | None]]:
        """End of the bag: pair the remaining scans with what arrived."""
        while self.pending:
            stamp, cloud = self.pending.popleft()
            yield stamp, cloud, self._pair(stamp)

    def buffered(self) -> int:
        return len(self.pending) + sum(len(b) for b in self.images.values())


class RosbagPairs:
    """``camera_topics[i]`` is seen through the calibration entry named ``camera_names[i]``
    (by default the calibration's cameras in order)."""

    class_names: tuple[str, ...] = ()

    def __init__(
        self,
        bag: str | Path,
        lidar_topic: str,
        camera_topics: list[str],
        calibration: str | Path,
        camera_names: list[str] | None = None,
        max_dt: float = 0.05,
        limit: int | None = None,
    ) -> None:
        from rosbags.highlevel import AnyReader

        bag = Path(bag)
        if not bag.exists():
            raise DatasetError(f"bag {bag} does not exist")
        if not Path(calibration).is_file():
            raise DatasetError(f"calibration file {calibration} does not exist")
        cams = {c.name: c for c in load_calibration(str(calibration))}
        names = camera_names or list(cams)[: len(camera_topics)]
        if len(names) != len(camera_topics) or any(n not in cams for n in names):
            raise DatasetError(
                f"cannot match camera topics {camera_topics} to calibration {list(cams)}"
            )
        self.cameras: list[PinholeCamera] = [cams[n] for n in names]
        self.samples: list[Sample] = []
        self.limit = int(limit) if limit else None
        #: Most messages held at once while reading (scans waiting + images in the window).
        self.peak_buffered = 0
        pairer = StampPairer(list(camera_topics), int(max_dt * 1e9))
        with AnyReader([bag]) as reader:
            topics = {c.topic for c in reader.connections}
            missing = [t for t in [lidar_topic, *camera_topics] if t not in topics]
            if missing:
                raise DatasetError(f"bag {bag} lacks topics {missing}; has {sorted(topics)}")
            conns = [c for c in reader.connections if c.topic in {lidar_topic, *camera_topics}]
            for conn, t, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                if conn.topic == lidar_topic:
                    pairer.add_cloud(_stamp(msg, t), msg)
                else:
                    pairer.add_image(conn.topic, _stamp(msg, t), msg)
                self.peak_buffered = max(self.peak_buffered, pairer.buffered())
                if self._take(pairer.ready(), bag.name):
                    break
            else:
                self._take(pairer.flush(), bag.name)
        if not self.samples:
            raise DatasetError(f"no LiDAR scan in {bag} has all cameras within {max_dt} s")

    def _take(self, paired: Iterator[tuple[int, Any, list[Any] | None]], bag_name: str) -> bool:
        """Decode the paired scans into samples; True once ``limit`` is reached."""
        for stamp, cloud, images in paired:
            if images is None:
                continue
            dec = decode_cloud(cloud)
            pts = np.concatenate([dec.xyz, dec.intensity[:, None]], axis=1)
            rgb = [image_to_rgb(m) for m in images]
            self.samples.append(
                Sample(pts, None, rgb, list(self.cameras), name=f"{bag_name}@{stamp}")
            )
            if self.limit and len(self.samples) >= self.limit:
                return True
        return False

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]
