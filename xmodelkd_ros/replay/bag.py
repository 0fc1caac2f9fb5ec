"""The bag side of a replay: which topics to play and score, the ground truth, the messages.

Why separate: planning reads only the bag (rosbags, no ROS import), so every input error
(missing topic, bag without LiDAR, wrong ``.label`` count) is reported as one line before
any process starts, the same with or without a ROS install.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmodelkd_ros.msgs import stamp_ns
from xmodelkd_ros.replay.options import ReplayError

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
DEFAULT_LABELS_TOPIC = "/lidar/labels"

#: One bag message to publish: (topic, log time ns, raw CDR, LiDAR header stamp or None,
#: LiDAR point count or None).
BagMessage = tuple[str, int, bytes, "int | None", "int | None"]


@dataclass
class BagPlan:
    """What the replay reads from the bag: topics, their types, and the scan count."""

    path: Path
    lidar_topic: str
    labels_topic: str | None
    camera_topics: dict[str, tuple[str, str]]  # topic -> (msgtype, camera name)
    num_scans: int
    topics: dict[str, str] = field(default_factory=dict)  # every topic -> msgtype
    start_ns: int = 0  # first log time in the bag (the /clock before playback starts)

    @property
    def cameras(self) -> list[str]:
        names: list[str] = []
        for mtype, name in self.camera_topics.values():
            if mtype in IMAGE_TYPES and name not in names:
                names.append(name)
        return names


def open_reader(path: Path) -> Any:
    from rosbags.highlevel import AnyReader

    if not path.exists():
        raise ReplayError(f"bag {path} does not exist")
    if path.is_file() and (path.parent / "metadata.yaml").is_file():
        path = path.parent  # a .db3/.mcap inside a rosbag2 directory
    try:
        reader = AnyReader([path])
        reader.open()
    except Exception as exc:  # rosbags raises its own error types per storage
        raise ReplayError(f"cannot open bag {path}: {' '.join(str(exc).split())}") from None
    return reader


def _camera_name(topic: str) -> str:
    """``/camera/front/image_raw`` -> ``front``; otherwise the topic made alphanumeric."""
    parts = [p for p in topic.split("/") if p]
    if len(parts) >= 2 and parts[0] in ("camera", "cameras"):
        name = parts[1]
    else:
        name = "_".join(parts[:-1]) or parts[-1]
    return "".join(c if c.isalnum() else "_" for c in name)


def plan_bag(
    path: str | os.PathLike, lidar_topic: str | None = None, labels_topic: str | None = None,
    auto_labels: bool = True, cameras: bool = True,
) -> BagPlan:  # fmt: skip
    """Inspect the bag: pick the LiDAR and ground-truth topics and the camera topics.

    ``labels_topic`` None with ``auto_labels`` uses ``/lidar/labels`` when present.
    ``lidar_topic`` None picks the only PointCloud2 topic that is not the labels topic
    (``/lidar/points`` when several). Raises :class:`ReplayError` naming the topics that
    exist when a requested topic is missing or the bag holds no PointCloud2 at all.
    """
    path = Path(path)
    reader = open_reader(path)
    try:
        topics = {c.topic: c.msgtype for c in reader.connections}
        start_ns = int(reader.start_time) if topics else 0
        counts: dict[str, int] = {}
        for c in reader.connections:
            counts[c.topic] = counts.get(c.topic, 0) + int(c.msgcount)
    finally:
        reader.close()
    listing = ", ".join(f"{t} ({m.rsplit('/', 1)[-1]})" for t, m in sorted(topics.items()))
    clouds = [t for t, m in topics.items() if m == POINTCLOUD2]
    if labels_topic is None and DEFAULT_LABELS_TOPIC in topics and auto_labels:
        labels_topic = DEFAULT_LABELS_TOPIC
    if labels_topic is not None and labels_topic not in topics:
        raise ReplayError(f"labels topic {labels_topic} is not in bag {path} (topics: {listing})")
    if labels_topic is not None and topics[labels_topic] != POINTCLOUD2:
        raise ReplayError(f"labels topic {labels_topic} is {topics[labels_topic]}, not PointCloud2")
    if lidar_topic is None:
        candidates = [t for t in clouds if t != labels_topic]
        if not candidates:
            raise ReplayError(
                f"bag {path} has no LiDAR (no sensor_msgs/PointCloud2 topic besides the "
                f"labels); topics: {listing or 'none'}"
            )
        lidar_topic = "/lidar/points" if "/lidar/points" in candidates else candidates[0]
        if len(candidates) > 1 and lidar_topic != "/lidar/points":
            raise ReplayError(
                f"bag {path} has several PointCloud2 topics ({', '.join(candidates)}): "
                "choose one with --lidar-topic"
            )
    elif lidar_topic not in topics:
        raise ReplayError(f"LiDAR topic {lidar_topic} is not in bag {path} (topics: {listing})")
    elif topics[lidar_topic] != POINTCLOUD2:
        raise ReplayError(f"LiDAR topic {lidar_topic} is {topics[lidar_topic]}, not PointCloud2")
    if counts.get(lidar_topic, 0) == 0:
        raise ReplayError(f"bag {path} has no messages on the LiDAR topic {lidar_topic}")
    cams: dict[str, tuple[str, str]] = {}
    if cameras:
        for t, m in topics.items():
            if m in IMAGE_TYPES or m == CAMERA_INFO:
                cams[t] = (m, _camera_name(t))
    return BagPlan(path, lidar_topic, labels_topic, cams, counts[lidar_topic], topics, start_ns)


def cloud_labels(msg: Any) -> np.ndarray:
    """The ``label`` field of a PointCloud2 as uint16 label ids (all points, in order)."""
    from xmodelkd_ros.msgs import decode_cloud

    cloud = decode_cloud(msg, intensity_field=None)
    return cloud.column("label", valid_only=False).astype(np.uint16)


def read_ground_truth(
    plan: BagPlan, labels_dir: str | os.PathLike | None = None
) -> dict[int, np.ndarray]:
    """Ground-truth label ids per LiDAR stamp (ns): from the bag's labels topic, or from
    SemanticKITTI ``.label`` files matched to the LiDAR messages in order."""
    from xmodelkd_ros.labels import raw_to_label

    gt: dict[int, np.ndarray] = {}
    if labels_dir is not None:
        files = sorted(Path(labels_dir).glob("*.label"))
        if not files:
            raise ReplayError(f"--labels-dir {labels_dir} holds no .label files")
        stamps = [s for s, _ in iter_scans(plan)]
        if len(files) != len(stamps):
            raise ReplayError(
                f"--labels-dir has {len(files)} .label files but the bag has {len(stamps)} "
                f"scans on {plan.lidar_topic}"
            )
        for s, f in zip(stamps, files, strict=True):
            raw = np.fromfile(f, dtype=np.uint32) & 0xFFFF
            gt[s] = raw_to_label(raw.astype(np.uint16))
        return gt
    if plan.labels_topic is None:
        return gt
    reader = open_reader(plan.path)
    try:
        conns = [c for c in reader.connections if c.topic == plan.labels_topic]
        for conn, _t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            gt[stamp_ns(msg.header)] = cloud_labels(msg)
    finally:
        reader.close()
    return gt


def iter_scans(plan: BagPlan) -> Iterator[tuple[int, Any]]:
    """(stamp ns, deserialized PointCloud2) of every LiDAR message, in bag order."""
    reader = open_reader(plan.path)
    try:
        conns = [c for c in reader.connections if c.topic == plan.lidar_topic]
        for conn, _t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            yield stamp_ns(msg.header), msg
    finally:
        reader.close()


def groups(plan: BagPlan) -> Iterator[tuple[int, list[BagMessage]]]:
    """Bag messages in log-time order, grouped: each LiDAR message with the camera
    messages that follow it until the next scan. Yields (log time of the group's first
    message, [(topic, log ns, raw CDR, LiDAR stamp or None, LiDAR points or None)])."""
    reader = open_reader(plan.path)
    try:
        wanted = {plan.lidar_topic, *plan.camera_topics}
        conns = [c for c in reader.connections if c.topic in wanted]
        group: list[BagMessage] = []
        for conn, t, raw in reader.messages(connections=conns):
            stamp = points = None
            if conn.topic == plan.lidar_topic:
                msg = reader.deserialize(raw, conn.msgtype)
                stamp, points = stamp_ns(msg.header), int(msg.width) * int(msg.height)
                if group:
                    yield group[0][1], group
                group = []
            group.append((conn.topic, int(t), bytes(raw), stamp, points))
        if group:
            yield group[0][1], group
    finally:
        reader.close()
