"""Rosbag replay evaluation through the live segmentation node.

``python -m xmodelkd_ros.replay --bag PATH --model DIR [--labels-topic T | --labels-dir D]
[--rate 1.0 | --max-throughput] [--report DIR]``

Why through the live node: users judge a perception node by replaying recorded drives
into the very process that runs on the vehicle (same parameters, middleware, queueing
and drop policy). So this tool starts the real ``segment_node`` as a child process,
publishes the bag's LiDAR and camera messages to it over rclpy (Fast DDS), receives the
labeled clouds, matches them to ground truth by header stamp (the node keeps the input
header) and scores them with the training metrics (:mod:`xmodelkd_ros.training.metrics`),
so the replay mIoU and the training mIoU are one definition.

Two modes:

* ``--rate R`` (default 1): messages leave at their recorded spacing divided by R, with
  ``/clock`` published and ``use_sim_time`` set on the node. A scan whose output never
  comes was dropped by the node (its latest-only queue) and counts against it; an output
  later than one scan period after its bag stamp is "late".
* ``--max-throughput``: each scan (with the camera messages recorded before the next
  scan) is sent only after the previous output arrived (back-pressure), so nothing is
  dropped and the report gives the sustainable scan rate.

Points the node leaves unlabeled (outside the model's voxel grid, non-finite) are not
scored, as in training evaluation; their count is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmodelkd_ros.msgs import stamp_ns
from xmodelkd_ros.node import NODE_NAME

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
DEFAULT_LABELS_TOPIC = "/lidar/labels"
STARTUP_TIMEOUT_S = 180.0  # torch + rclpy import and model load on a loaded 2-core machine
OUTPUT_TOPIC = f"/{NODE_NAME}/output/segmentation"


class ReplayError(RuntimeError):
    """A user-facing problem (bad bag, topic, model, node failure): one line, exit 2/1."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------- bag side


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


def _open_reader(path: Path) -> Any:
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
    reader = _open_reader(path)
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



def _cloud_labels(msg: Any) -> np.ndarray:
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
    reader = _open_reader(plan.path)
    try:
        conns = [c for c in reader.connections if c.topic == plan.labels_topic]
        for conn, _t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            gt[stamp_ns(msg.header)] = _cloud_labels(msg)
    finally:
        reader.close()
    return gt


def iter_scans(plan: BagPlan) -> Iterator[tuple[int, Any]]:
    """(stamp ns, deserialized PointCloud2) of every LiDAR message, in bag order."""
    reader = _open_reader(plan.path)
    try:
        conns = [c for c in reader.connections if c.topic == plan.lidar_topic]
        for conn, _t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            yield stamp_ns(msg.header), msg
    finally:
        reader.close()


# ----------------------------------------------------------------------------- scoring


@dataclass
class ScoreCounts:
    """Points left out of the score and why (reported next to the mIoU)."""

    scored: int = 0
    unpredicted: int = 0  # ground truth labeled, node output unlabeled (outside the grid)
    mismatched_scans: int = 0  # output and ground truth differ in point count


def score_scan(cm: Any, gt: np.ndarray, pred: np.ndarray, counts: ScoreCounts) -> bool:
    """Add one scan to ``cm`` (a training ``ConfusionMatrix``); label ids -> class indices.

    Ground-truth unlabeled (0) points are ignored (IGNORE_INDEX); points the node left
    unlabeled are not scored but counted. False when the point counts differ.
    """
    import torch

    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        counts.mismatched_scans += 1
        return False
    labeled = gt != 0
    keep = labeled & (pred != 0)
    counts.unpredicted += int(labeled.sum() - keep.sum())
    counts.scored += int(keep.sum())
    cm.update(
        torch.from_numpy(pred[keep].astype(np.int64) - 1),
        torch.from_numpy(gt[keep].astype(np.int64) - 1),
    )
    return True


def offline_confusion(
    plan: BagPlan, gt: dict[int, np.ndarray], segmenter: Any,
    intensity_fields: Sequence[str] = ("intensity", "reflectivity", "i"),
) -> tuple[Any, ScoreCounts]:  # fmt: skip
    """Score the bag's scans with ``segmenter`` in this process (no ROS): the reference a
    replay through the node must reproduce exactly (same inputs as the node builds)."""
    from xmodelkd_ros.msgs import decode_cloud
    from xmodelkd_ros.training.metrics import ConfusionMatrix

    cm = ConfusionMatrix(len(segmenter.class_names or _class_names()))
    counts = ScoreCounts()
    for stamp, msg in iter_scans(plan):
        if stamp not in gt:
            continue
        cloud = decode_cloud(msg, intensity_field=list(intensity_fields))
        pts = np.empty((cloud.num_valid, 4), dtype=np.float32)
        pts[:, :3] = cloud.xyz
        pts[:, 3] = cloud.intensity
        res = segmenter.segment(pts)
        labels = np.zeros(cloud.num_points, np.uint16)
        labels[cloud.valid] = res.labels
        score_scan(cm, gt[stamp], labels, counts)
    return cm, counts


def _class_names() -> list[str]:
    from xmodelkd_ros.labels import CLASS_NAMES

    return list(CLASS_NAMES)


# ----------------------------------------------------------------------------- node


def _default_params_file() -> Path | None:
    p = Path(__file__).resolve().parents[1] / "config" / "segment.yaml"
    if p.is_file():
        return p
    try:  # installed ament package
        from ament_index_python.packages import get_package_share_directory

        q = Path(get_package_share_directory("xmodelkd_ros")) / "config" / "segment.yaml"
        return q if q.is_file() else None
    except Exception:
        return None


def check_model(model: str | os.PathLike) -> Path:
    """A model dir must hold ``model.json`` (an export); a ``.pt`` runs on torch."""
    path = Path(model).expanduser()
    if not path.exists():
        raise ReplayError(f"model {path} does not exist")
    if path.is_dir() and not (path / "model.json").is_file():
        raise ReplayError(
            f"model dir {path} has no model.json: export a checkpoint first "
            "(python -m xmodelkd_ros.export --checkpoint CKPT --out DIR)"
        )
    return path.resolve()


def node_params(plan: BagPlan, model: Path, backend: str, sim_time: bool) -> dict[str, Any]:
    """Parameters for the replay's node: the bag's topics, reliable input, its cameras."""
    p: dict[str, Any] = {
        "model": str(model),
        "backend": backend,
        "input.points_topic": plan.lidar_topic,
        # Reliable input: the replay judges the node, not best-effort UDP on loopback.
        "qos.input": "reliable",
        "qos.output": "reliable",
        "use_sim_time": sim_time,
    }
    if model.suffix == ".pt" and backend == "auto":
        p["backend"] = "torch"
    names = plan.cameras
    if names:
        p["cameras.names"] = names
        for t, (mtype, name) in plan.camera_topics.items():
            if mtype in IMAGE_TYPES:
                p[f"cameras.{name}.image_topic"] = t
                p[f"cameras.{name}.compressed"] = mtype.endswith("CompressedImage")
            elif mtype == CAMERA_INFO:
                p[f"cameras.{name}.info_topic"] = t
        for calib in (plan.path.parent / "calibration.yaml", plan.path / "calibration.yaml"):
            if calib.is_file():
                p["cameras.calibration_file"] = str(calib.resolve())
                break
    return p


class NodeProcess:
    """The real ``segment_node`` in a child process (log to a file, killed in ``stop``)."""

    def __init__(self, params: dict[str, Any], workdir: Path, env: dict[str, str],
                 params_file: Path | None) -> None:  # fmt: skip
        import yaml

        self.params_path = workdir / "replay_params.yaml"
        self.params_path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        self.log_path = workdir / "node.log"
        cmd = [sys.executable, "-m", "xmodelkd_ros.node", "--ros-args"]
        if params_file is not None:
            cmd += ["--params-file", str(params_file)]
        cmd += ["--params-file", str(self.params_path)]
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 6) -> str:
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-n:])

    def stop(self) -> int | None:
        """SIGINT for a clean shutdown, SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode


def _message_class(msgtype: str) -> Any:
    pkg, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


class Peer:
    """The replay's own rclpy node: publishers for the bag topics and ``/clock``,
    subscribers for the node's output and ``/diagnostics``; spins in a thread."""

    def __init__(self, domain: int, plan: BagPlan) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import PointCloud2

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("xmodelkd_replay", context=self.ctx)
        rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {
            plan.lidar_topic: self.node.create_publisher(PointCloud2, plan.lidar_topic, rel)
        }
        for t, (mtype, _n) in plan.camera_topics.items():
            self.pubs[t] = self.node.create_publisher(_message_class(mtype), t, rel)
        self.pub_clock = self.node.create_publisher(
            Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                        durability=DurabilityPolicy.VOLATILE))  # fmt: skip
        self._Clock = Clock
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.outputs: dict[int, tuple[int, np.ndarray]] = {}  # stamp -> (recv ns, labels)
        self.duplicates = 0
        self.diag: dict[str, str] = {}
        self.diag_count = 0
        self.node.create_subscription(PointCloud2, OUTPUT_TOPIC, self._on_output, rel)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # context shut down under us at teardown
            return

    def _on_output(self, msg: Any) -> None:
        now = time.monotonic_ns()
        stamp = stamp_ns(msg.header)
        labels = _cloud_labels(msg)
        with self.cond:
            if stamp in self.outputs:
                self.duplicates += 1
            else:
                self.outputs[stamp] = (now, labels)
            self.cond.notify_all()

    def _on_diag(self, msg: Any) -> None:
        for st in msg.status:
            if st.name.endswith(": segmentation"):
                with self.lock:
                    self.diag = {kv.key: kv.value for kv in st.values}
                    lvl = st.level
                    self.diag["level"] = str(lvl[0] if isinstance(lvl, bytes) else int(lvl))
                    self.diag["message"] = st.message
                    self.diag_count += 1

    def publish_clock(self, t_ns: int) -> None:
        from builtin_interfaces.msg import Time

        sec, nsec = divmod(int(t_ns), 1_000_000_000)
        self.pub_clock.publish(self._Clock(clock=Time(sec=sec, nanosec=nsec)))

    def ready(self, lidar_topic: str) -> bool:
        """The node subscribes to the LiDAR topic only once its model is loaded."""
        return (self.pubs[lidar_topic].get_subscription_count() > 0
                and self.node.count_publishers(OUTPUT_TOPIC) > 0)  # fmt: skip

    def wait_output(self, stamp: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while stamp not in self.outputs:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.5))
        return True

    def close(self) -> None:
        import rclpy

        try:
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            rclpy.try_shutdown(context=self.ctx)
            self.thread.join(timeout=2.0)


# ----------------------------------------------------------------------------- replay


@dataclass
class ReplayOptions:
    """Everything :func:`run_replay` needs (the CLI flags)."""

    bag: Path
    model: Path
    labels_topic: str | None = None
    labels_dir: Path | None = None
    labels: bool = True  # False: latency and drops only, even where the bag has labels
    lidar_topic: str | None = None
    rate: float = 1.0
    max_throughput: bool = False
    report: Path | None = None
    backend: str = "auto"
    params_file: Path | None = None
    domain_id: int | None = None
    cameras: bool = True
    output_timeout_s: float = 30.0
    startup_timeout_s: float = STARTUP_TIMEOUT_S
    late_ms: float | None = None  # default: one scan period of the bag
    quiet: bool = False


def _percentiles(values_ms: Sequence[float]) -> dict[str, float | None]:
    if not values_ms:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    a = np.asarray(values_ms, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()),
            "max": float(a.max())}  # fmt: skip


def _groups(plan: BagPlan) -> Iterator[tuple[int, list[tuple[str, int, bytes, int | None]]]]:
    """Bag messages in log-time order, grouped: each LiDAR message with the camera
    messages that follow it until the next scan. Yields (log time of the group's first
    message, [(topic, log ns, raw CDR, LiDAR stamp or None)])."""
    reader = _open_reader(plan.path)
    try:
        wanted = {plan.lidar_topic, *plan.camera_topics}
        conns = [c for c in reader.connections if c.topic in wanted]
        group: list[tuple[str, int, bytes, int | None]] = []
        for conn, t, raw in reader.messages(connections=conns):
            stamp = None
            if conn.topic == plan.lidar_topic:
                stamp = stamp_ns(reader.deserialize(raw, conn.msgtype).header)
                if group:
                    yield group[0][1], group
                group = []
            group.append((conn.topic, int(t), bytes(raw), stamp))
        if group:
            yield group[0][1], group
    finally:
        reader.close()


def _ros_env(domain: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


def _log(opts: ReplayOptions, msg: str) -> None:
    if not opts.quiet:
        print(f"[replay] {msg}", file=sys.stderr, flush=True)


def run_replay(opts: ReplayOptions) -> dict[str, Any]:
    """Replay ``opts.bag`` through a freshly started node; returns the report dict (and
    writes ``report.md`` / ``report.json`` / ``confusion.png`` when ``opts.report``)."""
    if opts.labels_dir is not None and opts.labels_topic is not None:
        raise ReplayError("give --labels-topic or --labels-dir, not both")
    if opts.rate <= 0:
        raise ReplayError(f"--rate must be > 0, got {opts.rate}")
    model = check_model(opts.model)
    plan = plan_bag(opts.bag, opts.lidar_topic, opts.labels_topic,
                    auto_labels=opts.labels and opts.labels_dir is None,
                    cameras=opts.cameras)  # fmt: skip
    gt = read_ground_truth(plan, opts.labels_dir)
    try:  # after the input checks, so bad inputs are reported the same with or without ROS
        import rclpy  # noqa: F401
        import rosgraph_msgs.msg  # noqa: F401
    except ImportError as exc:
        raise ReplayError(f"rclpy / ROS messages are not importable: {exc}", 1) from None
    _log(opts, f"bag {plan.path}: {plan.num_scans} scans on {plan.lidar_topic}, ground truth: "
               f"{len(gt)} scans, cameras: {', '.join(plan.cameras) or 'none'}")  # fmt: skip

    domain = opts.domain_id if opts.domain_id is not None else 100 + os.getpid() % 130
    env = _ros_env(domain)
    os.environ.update({k: env[k] for k in ("RMW_IMPLEMENTATION", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    sim_time = not opts.max_throughput
    params = node_params(plan, model, opts.backend, sim_time)
    params_file = opts.params_file or _default_params_file()
    tmp = None
    if opts.report is not None:
        workdir = Path(opts.report)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="xmodelkd_replay_")
        workdir = Path(tmp.name)

    node: NodeProcess | None = None
    peer: Peer | None = None
    try:
        peer = Peer(domain, plan)
        node = NodeProcess(params, workdir, env, params_file)
        _log(opts, f"started segment_node (pid {node.proc.pid}, ROS domain {domain}), "
                   "waiting for the model to load")  # fmt: skip
        t_start = time.monotonic()
        while not peer.ready(plan.lidar_topic):
            if not node.alive():
                raise ReplayError(f"segment_node exited with code {node.proc.returncode}: "
                                  f"{node.tail(3)}", 1)  # fmt: skip
            if time.monotonic() - t_start > opts.startup_timeout_s:
                raise ReplayError(f"segment_node not ready after {opts.startup_timeout_s:.0f} s: "
                                  f"{node.tail(3)}", 1)  # fmt: skip
            if sim_time:
                peer.publish_clock(plan.start_ns)
            time.sleep(0.1)
        time.sleep(0.5)  # let discovery settle both ways (output subscription matched)
        startup_s = time.monotonic() - t_start
        _log(opts, f"node ready after {startup_s:.1f} s; replaying "
                   f"{'at max throughput' if opts.max_throughput else f'at rate {opts.rate:g}'}")
        result = _play(opts, plan, peer, node)
        clock_at = result.pop("clock_at")
        # one more diagnostics message after the last output (the node publishes at 1 Hz
        # of its clock, so /clock keeps running meanwhile)
        n0, deadline = peer.diag_count, time.monotonic() + 3.0
        while peer.diag_count == n0 and time.monotonic() < deadline and node.alive():
            if sim_time:
                peer.publish_clock(clock_at(time.monotonic_ns()))
            time.sleep(0.02)
        if not node.alive():
            raise ReplayError(f"segment_node died during the replay (code "
                              f"{node.proc.returncode}): {node.tail(3)}", 1)  # fmt: skip
    finally:
        if peer is not None:
            outputs, diag, dups = dict(peer.outputs), dict(peer.diag), peer.duplicates
            peer.close()
        if node is not None:
            node.stop()
    report = build_report(opts, plan, model, gt, result, outputs, diag, dups, startup_s)
    report["node_log"] = str(node.log_path) if opts.report is not None and node else None
    if opts.report is not None:
        write_replay_report(Path(opts.report), report)
    if tmp is not None:
        tmp.cleanup()
    return report


def _play(opts: ReplayOptions, plan: BagPlan, peer: Peer, node: NodeProcess) -> dict[str, Any]:
    """Publish the bag; returns published stamps, publish instants and the wall time."""
    published: dict[int, int] = {}  # LiDAR stamp -> publish monotonic ns
    order: list[int] = []
    wall0 = time.monotonic_ns()
    t0: int | None = None
    lost_waiting = 0
    clock_stop = threading.Event()

    def clock_at(now_ns: int) -> int:
        return int((t0 or 0) + (now_ns - wall0) * opts.rate)

    def clock_loop() -> None:  # /clock at 100 Hz of wall time, for the node's timers
        while not clock_stop.wait(0.01):
            if t0 is not None:
                peer.publish_clock(clock_at(time.monotonic_ns()))

    clock_thread = None
    if not opts.max_throughput:
        clock_thread = threading.Thread(target=clock_loop, daemon=True)
        clock_thread.start()
    try:
        for first_log, group in _groups(plan):
            if t0 is None:
                t0, wall0 = first_log, time.monotonic_ns()
            for topic, log_ns, raw, stamp in group:
                if not opts.max_throughput:
                    target = wall0 + (log_ns - t0) / opts.rate
                    delay = (target - time.monotonic_ns()) / 1e9
                    if delay > 0:
                        time.sleep(delay)
                if stamp is not None:
                    published[stamp] = time.monotonic_ns()
                    order.append(stamp)
                peer.pubs[topic].publish(raw)
            if (opts.max_throughput and order
                    and not peer.wait_output(order[-1], opts.output_timeout_s)):
                lost_waiting += 1
                _log(opts, f"no output for scan {order[-1]} after "
                           f"{opts.output_timeout_s:.0f} s")  # fmt: skip
                if not node.alive():
                    break
        wall_play = (time.monotonic_ns() - wall0) / 1e9
        # Outputs still in flight: wait until each published scan is answered or the
        # output stream has been quiet for a while (dropped scans never answer).
        quiet_s = 2.0 if opts.max_throughput else max(2.0, 3.0 / opts.rate)
        deadline = time.monotonic() + opts.output_timeout_s
        last_n, last_change = -1, time.monotonic()
        while time.monotonic() < deadline and node.alive():
            with peer.lock:
                n = sum(1 for s in order if s in peer.outputs)
            if n == len(order):
                break
            if n != last_n:
                last_n, last_change = n, time.monotonic()
            elif time.monotonic() - last_change > quiet_s:
                break
            time.sleep(0.05)
    finally:
        clock_stop.set()
        if clock_thread is not None:
            clock_thread.join(timeout=1.0)
    with peer.lock:
        recv_last = max((peer.outputs[s][0] for s in order if s in peer.outputs), default=0)
    wall_total = (max(recv_last, wall0) - wall0) / 1e9
    return {"published": published, "order": order, "wall0": wall0, "t0": t0,
            "wall_play_s": wall_play, "wall_total_s": wall_total,
            "lost_waiting": lost_waiting, "clock_at": clock_at}  # fmt: skip


def build_report(
    opts: ReplayOptions, plan: BagPlan, model: Path, gt: dict[int, np.ndarray],
    play: dict[str, Any], outputs: dict[int, tuple[int, np.ndarray]], diag: dict[str, str],
    duplicates: int, startup_s: float,
) -> dict[str, Any]:  # fmt: skip
    """Match outputs to published scans by stamp, score, and summarise latency/drops."""
    from xmodelkd_ros.training.metrics import ConfusionMatrix

    order: list[int] = play["order"]
    published: dict[int, int] = play["published"]
    stamps = np.asarray(order, dtype=np.int64)
    period_ms = float(np.median(np.diff(stamps)) / 1e6) if len(stamps) > 1 else 100.0
    # late: the output came after the next scan was due (one scan period of wall time)
    late_ms = opts.late_ms if opts.late_ms is not None else (
        period_ms if opts.max_throughput else period_ms / opts.rate)
    answered = [s for s in order if s in outputs]
    dropped = [s for s in order if s not in outputs]
    unexpected = [s for s in outputs if s not in published]
    # bag stamp -> output received: at rate R the bag clock runs R x wall time from the
    # first message; at max throughput a scan's stamp is taken as its publish instant.
    e2e_ms, pub_ms = [], []
    for s in answered:
        recv = outputs[s][0]
        pub_ms.append((recv - published[s]) / 1e6)
        if opts.max_throughput:
            e2e_ms.append((recv - published[s]) / 1e6)
        else:
            sim_recv = play["t0"] + (recv - play["wall0"]) * opts.rate
            e2e_ms.append((sim_recv - s) / 1e6 / opts.rate)
    late = int(sum(1 for v in e2e_ms if v > late_ms))

    class_names = _class_names()
    try:
        from xmodelkd_ros.runtime import ModelMetadata

        if model.is_dir():
            class_names = list(ModelMetadata.read(model).class_names)
    except Exception:
        pass
    metrics = None
    counts = ScoreCounts()
    scored_scans = 0
    if gt:
        cm = ConfusionMatrix(len(class_names))
        for s in answered:
            if s in gt and score_scan(cm, gt[s], outputs[s][1], counts):
                scored_scans += 1
        metrics = cm.result(class_names)
    n = len(order)
    rep: dict[str, Any] = {
        "bag": str(plan.path),
        "model": str(model),
        "backend": diag.get("backend", opts.backend),
        "mode": "max-throughput" if opts.max_throughput else f"rate {opts.rate:g}",
        "lidar_topic": plan.lidar_topic,
        "ground_truth": (str(opts.labels_dir) if opts.labels_dir else plan.labels_topic)
        if gt else None,
        "cameras": plan.cameras,
        "node_startup_s": round(startup_s, 2),
        "scans": {
            "in_bag": plan.num_scans,
            "published": n,
            "received": len(answered),
            "dropped": len(dropped),
            "dropped_fraction": (len(dropped) / n) if n else 0.0,
            "late": late,
            "late_threshold_ms": late_ms,
            "node_dropped_stale": _int_or_none(diag.get("scans_dropped_stale")),
            "node_received": _int_or_none(diag.get("scans_received")),
            "duplicates": duplicates,
            "unexpected_stamps": len(unexpected),
            "scored": scored_scans,
            "mismatched_point_count": counts.mismatched_scans,
            "without_ground_truth": sum(1 for s in answered if s not in gt) if gt else None,
            "dropped_stamps": dropped[:50],
        },
        "throughput": {
            "bag_scan_rate_hz": 1000.0 / period_ms if period_ms > 0 else None,
            "wall_s": play["wall_total_s"],
            "output_rate_hz": (len(answered) / play["wall_total_s"])
            if play["wall_total_s"] > 0 else None,
        },
        "latency_ms": {
            "stamp_to_output": _percentiles(e2e_ms),
            "publish_to_output": _percentiles(pub_ms),
        },
        "node_diagnostics": _node_stages(diag),
        "points": {"scored": counts.scored, "unpredicted": counts.unpredicted},
        "metrics": metrics.to_dict() if metrics is not None else None,
    }
    if opts.max_throughput:
        rep["throughput"]["sustainable_rate_hz"] = rep["throughput"]["output_rate_hz"]
    return rep


def _int_or_none(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _node_stages(diag: dict[str, str]) -> dict[str, Any]:
    """The node's own figures from its last ``/diagnostics`` status."""
    stages: dict[str, dict[str, float]] = {}
    other: dict[str, str] = {}
    for k, v in diag.items():
        for q in ("p50", "p95"):
            suffix = f"_{q}_ms"
            if k.endswith(suffix):
                with contextlib.suppress(ValueError):
                    stages.setdefault(k[: -len(suffix)], {})[q] = float(v)
                break
        else:
            other[k] = v
    return {"stages_ms": stages, "status": other}


# ----------------------------------------------------------------------------- report


def _fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def write_replay_report(out: Path, rep: dict[str, Any]) -> None:
    """``report.json`` (everything), ``report.md`` (tables) and ``confusion.png``."""
    from xmodelkd_ros.training.report import confusion_png

    out.mkdir(parents=True, exist_ok=True)
    m = rep.get("metrics")
    if m is not None:
        names = list(m["iou"])
        confusion_png(np.asarray(m["confusion"]), names, out / "confusion.png",
                      title=f"replay {Path(rep['bag']).name}: rows = truth")  # fmt: skip
    (out / "report.json").write_text(json.dumps(rep, indent=1))
    sc, lat = rep["scans"], rep["latency_ms"]
    lines = [
        "# xmodelkd_ros replay evaluation", "",
        f"- **bag**: {rep['bag']} (`{rep['lidar_topic']}`, cameras: "
        f"{', '.join(rep['cameras']) or 'none'})",
        f"- **model**: {rep['model']} (backend {rep['backend']})",
        f"- **mode**: {rep['mode']}",
        f"- **ground truth**: {rep['ground_truth'] or 'none (latency and drops only)'}",
        "", "## Scans", "",
        "| in bag | published | received | dropped | late | scored |",
        "|---|---|---|---|---|---|",
        f"| {sc['in_bag']} | {sc['published']} | {sc['received']} | {sc['dropped']} "
        f"({100 * sc['dropped_fraction']:.1f}%) | {sc['late']} "
        f"(> {sc['late_threshold_ms']:.0f} ms) | {sc['scored']} |",
        "",
    ]  # fmt: skip
    tp = rep["throughput"]
    if tp.get("sustainable_rate_hz"):
        lines.append(f"Sustainable rate (back-pressure): **{tp['sustainable_rate_hz']:.2f} "
                     f"scans/s** (bag records {tp['bag_scan_rate_hz'] or 0:.1f} Hz).\n")
    lines += ["## Latency (ms)", "", "| measure | p50 | p95 | p99 | max |", "|---|---|---|---|---|"]
    for k, v in lat.items():
        lines.append(f"| {k.replace('_', ' ')} | {_fmt_ms(v['p50'])} | {_fmt_ms(v['p95'])} | "
                     f"{_fmt_ms(v['p99'])} | {_fmt_ms(v['max'])} |")  # fmt: skip
    stages = rep["node_diagnostics"]["stages_ms"]
    if stages:
        lines += ["", "Node per-stage latency (its own `/diagnostics`, last window):", "",
                  "| stage | p50 | p95 |", "|---|---|---|"]  # fmt: skip
        for st, v in stages.items():
            lines.append(f"| {st} | {_fmt_ms(v.get('p50'))} | {_fmt_ms(v.get('p95'))} |")
    if m is not None:
        lines += ["", "## Segmentation", "",
                  f"**mIoU {100 * m['miou']:.2f}**, accuracy {100 * m['accuracy']:.2f} "
                  f"({rep['points']['scored']} points scored, {rep['points']['unpredicted']} "
                  "labeled points the node left unlabeled, not scored)", "",
                  "| class | IoU |", "|---|---|"]  # fmt: skip
        for c, v in m["iou"].items():
            lines.append(f"| {c} | {'n/a' if v is None else f'{100 * v:.1f}'} |")
        lines += ["", "![confusion](confusion.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def summary_line(rep: dict[str, Any]) -> str:
    """One line for terminals and the demo: mIoU, latency, drops."""
    sc, lat = rep["scans"], rep["latency_ms"]["stamp_to_output"]
    parts = []
    if rep.get("metrics") is not None:
        parts.append(f"mIoU {100 * rep['metrics']['miou']:.2f}")
    parts.append(f"latency p50 {_fmt_ms(lat['p50'])} ms p95 {_fmt_ms(lat['p95'])} ms "
                 f"p99 {_fmt_ms(lat['p99'])} ms")  # fmt: skip
    parts.append(f"{sc['received']}/{sc['published']} scans, {sc['dropped']} dropped, "
                 f"{sc['late']} late")  # fmt: skip
    rate = rep["throughput"].get("sustainable_rate_hz")
    if rate:
        parts.append(f"sustainable {rate:.2f} scans/s")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The CLI (also used by the README and the demo)."""
    p = argparse.ArgumentParser(
        prog="python -m xmodelkd_ros.replay",
        description="Replay a rosbag through the live segmentation node and score it.",
    )
    p.add_argument("--bag", required=True, type=Path, help="rosbag2 directory (sqlite3 or MCAP)")
    p.add_argument("--model", required=True, type=Path,
                   help="exported model dir (model.json + model.onnx) or a student .pt")
    gt = p.add_mutually_exclusive_group()
    gt.add_argument("--labels-topic", default=None,
                    help=f"ground-truth PointCloud2 with a 'label' field (default "
                         f"{DEFAULT_LABELS_TOPIC} when the bag has it)")
    gt.add_argument("--labels-dir", type=Path, default=None,
                    help="SemanticKITTI .label files, one per LiDAR message in order")
    p.add_argument("--no-labels", action="store_true", help="latency and drops only")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--rate", type=float, default=1.0,
                       help="playback rate; /clock published, node on use_sim_time")
    speed.add_argument("--max-throughput", action="store_true",
                       help="send each scan once the previous output arrived (back-pressure)")
    p.add_argument("--report", type=Path, default=None,
                   help="write report.md, report.json, confusion.png, node.log here")
    p.add_argument("--lidar-topic", default=None, help="LiDAR topic (default: auto)")
    p.add_argument("--backend", default="auto", choices=("auto", "tensorrt", "onnxruntime",
                                                          "torch"))
    p.add_argument("--params-file", type=Path, default=None,
                   help="node params file (default: config/segment.yaml); the replay's "
                        "model, topics, reliable QoS and cameras are applied on top")
    p.add_argument("--domain-id", type=int, default=None,
                   help="ROS domain (default: a private one, so a replay never talks to a "
                        "live stack or to another replay)")
    p.add_argument("--no-cameras", action="store_true", help="do not publish camera topics")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for one output before counting it lost")
    p.add_argument("--late-ms", type=float, default=None,
                   help="an output later than this after its stamp is late (default: the "
                        "bag's scan period)")
    p.add_argument("--quiet", action="store_true")
    return p  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints the summary line, returns the exit code."""
    a = build_parser().parse_args(argv)
    if a.no_labels and (a.labels_topic or a.labels_dir):
        print("error: --no-labels conflicts with --labels-topic/--labels-dir", file=sys.stderr)
        return 2
    opts = ReplayOptions(
        bag=a.bag, model=a.model, labels_topic=a.labels_topic, labels_dir=a.labels_dir,
        labels=not a.no_labels,
        lidar_topic=a.lidar_topic, rate=a.rate, max_throughput=a.max_throughput,
        report=a.report, backend=a.backend, params_file=a.params_file, domain_id=a.domain_id,
        cameras=not a.no_cameras, output_timeout_s=a.timeout, late_ms=a.late_ms,
        quiet=a.quiet,
    )  # fmt: skip
    try:
        rep = run_replay(opts)
    except ReplayError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(summary_line(rep), flush=True)
    if a.report is not None:
        print(f"report: {a.report / 'report.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
