"""The live ROS 2 LiDAR segmentation node (``ros2 run xmodelkd_ros segment_node``): wiring.

Why it is built this way (the pipeline itself is :mod:`xmodelkd_ros.node.processing`,
the cameras :mod:`xmodelkd_ros.node.cameras`, the health rules
:mod:`xmodelkd_ros.node.diagnostics`, the parameters :mod:`xmodelkd_ros.node.params` and
:mod:`xmodelkd_ros.node.ros_params`):

* One process, one model and one inference worker serve all of a vehicle's LiDARs
  (``lidars.names``; one topic by default). Each LiDAR has its own topics and counters
  (:mod:`xmodelkd_ros.node.lidar_io`, :mod:`xmodelkd_ros.node.input_stats`), its
  transform into the vehicle frame, where the ego box is stated
  (:mod:`xmodelkd_ros.node.vehicle`), and its own status in ``/diagnostics``.
* Subscription callbacks only stamp scans and hand them to the inference worker
  through a latest-only slot per LiDAR, served in turn (:mod:`xmodelkd_ros.node.slot`).
  A model slower than the sensors then drops stale scans (counted) instead of queueing
  them, so latency and memory stay bounded under a burst, and a LiDAR publishing much
  faster than another cannot starve it.
* Segmentation never waits for a camera: the labeled cloud is published as soon as
  the scan is segmented. Only then does the scan enter the LiDAR-anchored
  synchronizer, which pairs it with camera frames for overlays (drawn on their own
  thread when the images arrive, or skipped and counted) and camera status.
* The node notices lost data: QoS events (message lost, incompatible QoS) where the
  rmw delivers them, and a WARN when the input has publishers but no cloud arrives.
* Every parameter is declared with its description, range and ``read_only`` flag;
  the others are re-validated and applied by an on-set callback. Startup problems
  (params file, missing/corrupt model, bad parameter) end the process with one log
  line and exit code 1, no traceback (:mod:`xmodelkd_ros.node.main`); misspelled
  parameters are warned about.
* It runs the real student network through :class:`~xmodelkd_ros.runtime.Segmenter`
  (TensorRT, ONNX Runtime or PyTorch) -- never a stand-in.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from xmodelkd_ros.msgs import CloudFormatError, encode_image, stamp_ns
from xmodelkd_ros.node.cameras import OverlayJob, OverlayRenderer, load_camera_calibration
from xmodelkd_ros.node.diagnostics import StatsSnapshot, diagnostics
from xmodelkd_ros.node.input_stats import InputStats
from xmodelkd_ros.node.params import NodeConfig
from xmodelkd_ros.node.processing import (
    ScanProcessor,
    StartupError,
    load_segmenter,
    model_intensity_range,
    warm_up,
)
from xmodelkd_ros.node.slot import FairSlots, FrameSlot, SlotClosedError
from xmodelkd_ros.procenv import cpu_wait_policy
from xmodelkd_ros.sync import LidarAnchoredSync, SyncStats

NODE_NAME = "lidar_segmentation"
#: Stages reported in diagnostics, in pipeline order. ``pipeline`` is scan arrival at the
#: node to publication of the labeled cloud (includes queue wait); ``total`` is the
#: worker's time for the scan. ``overlay`` (after publication, on its own thread) is
#: added once an overlay is drawn.
LATENCY_STAGES = ("decode", "voxelize", "maps", "inference", "postprocess", "encode",
                  "total", "pipeline")  # fmt: skip

try:  # rclpy is only needed when the node actually runs
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from xmodelkd_ros.node.lidar_io import LidarChannel
    from xmodelkd_ros.node.ros_params import NodeParameters

    #: Why rclpy (or a message package) did not import; None where ROS is installed.
    RCLPY_ERROR: str | None = None
except ImportError as _exc:  # pragma: no cover - exercised where ROS is absent
    RCLPY_ERROR = str(_exc)
    Node = object  # type: ignore[misc,assignment]


def _qos(kind: str, depth: int) -> Any:
    if kind == "sensor_data":
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=qos_profile_sensor_data.reliability,
                          durability=qos_profile_sensor_data.durability)  # fmt: skip
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE)  # fmt: skip


def _rss_mb() -> float:
    """Resident memory of this process in MiB (diagnostics: memory must stay flat)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class SegmentNode(Node):
    """Parameters, subscriptions, inference worker, publishers, overlays, diagnostics.

    Construction only declares and validates parameters (so ``build_only`` and bad
    values need no model); :meth:`start` loads the model and wires the graph.
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._started = False
        self.cfg: NodeConfig = NodeParameters(self, self._apply_config).config
        self.cpu_wait_policy = cpu_wait_policy()  # OpenMP's, as the entry point set it
        self.segmenter: Any = None
        self.channels: dict[str, LidarChannel] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _apply_config(self, cfg: NodeConfig) -> None:
        """A runtime parameter change, validated: used from the next scan on."""
        self.cfg = cfg
        for ch in self.channels.values():
            ch.processor.set_input_config(cfg.input, cfg.ego_box)

    # ------------------------------------------------------------------ startup
    def start(self) -> None:
        """Load the model, build calibration, create pubs/subs/timers and the workers."""
        cfg = self.cfg
        log = self.get_logger()
        cams = cfg.cameras.cameras
        calib = load_camera_calibration(cfg.cameras, cfg.output.overlay, log.warning)
        t0 = time.perf_counter()
        self.segmenter = load_segmenter(cfg.model)
        c_in = int(getattr(self.segmenter.config, "in_channels", 4))
        if c_in != 4:
            raise StartupError(f"model {cfg.model.path} expects {c_in} input channels; the "
                               "node feeds 4 (x, y, z, intensity)")  # fmt: skip
        warm_up(self.segmenter, cfg.model.path)
        log.info(f"model {cfg.model.path} loaded on {self.segmenter.backend_name} "
                 f"({cfg.model.device}) in {time.perf_counter() - t0:.1f} s; trained "
                 f"intensity range {model_intensity_range(self.segmenter) or 'unknown'}; "
                 f"OpenMP wait policy {self.cpu_wait_policy}")  # fmt: skip
        self.cameras = OverlayRenderer(calib, self.segmenter.palette)
        self.sync = LidarAnchoredSync([c.name for c in cams], cfg.cameras.slop_s,
                                      cfg.cameras.max_wait_s,
                                      camera_timeout_s=cfg.cameras.timeout_s)  # fmt: skip
        self.slots = FairSlots([lidar.name for lidar in cfg.lidars], cfg.queue.policy,
                               cfg.queue.depth)  # fmt: skip
        self.overlay_slot = FrameSlot("fifo", 4)  # overlays behind: oldest dropped, counted

        q, out = cfg.queue, cfg.output
        qin, qout = _qos(q.qos_input, q.qos_depth), _qos(q.qos_output, q.qos_depth)
        rate_window = max(2.0, 2 * cfg.diagnostics.period_s)
        for lidar in cfg.lidars:
            processor = ScanProcessor(self.segmenter, cfg.input, cfg.ego_box,
                                      lidar.T_vehicle_lidar)  # fmt: skip
            if processor.align is not None:
                z = processor.align[2, 3]
                log.info(f"{lidar.name or 'input'}: scans moved to the model's trained mount "
                         f"(input.align_mount; z shifted {z:+.2f} m at the origin)")  # fmt: skip
            stats = InputStats(cfg.diagnostics.window, rate_window, LATENCY_STAGES)
            self.channels[lidar.name] = LidarChannel(self, lidar, processor, stats, qin, qout,
                                                     self._on_points)  # fmt: skip
        self.pub_overlay = {
            c.name: self.create_publisher(Image, f"{out.overlay_topic_prefix}/{c.name}", qout)
            for c in cams
        } if out.overlay else {}  # fmt: skip
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._subscribe_cameras(qin)
        self.create_timer(cfg.diagnostics.period_s, self._publish_diagnostics)

        workers = [("inference", self._work)]
        if self.pub_overlay:
            workers.append(("overlay", self._overlay_work))
        for name, target in workers:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self._started = True
        for ch in self.channels.values():
            log.info(f"segmenting {ch.topic} -> "
                     f"{self.resolve_topic_name(ch.lidar.segmentation_topic)}; QoS events: "
                     f"{ch.qos_event_names}")  # fmt: skip
        log.info(f"{len(self.channels)} LiDAR(s), one model; cameras: "
                 f"{', '.join(c.name for c in cams) or 'none'}; queue {q.policy}; ego box "
                 f"{cfg.ego_box.describe()}")  # fmt: skip

    def _subscribe_cameras(self, qos: Any) -> None:
        cfg = self.cfg
        for cam in cfg.cameras.cameras:
            mtype = CompressedImage if cam.compressed else Image
            self.create_subscription(
                mtype, cam.image_topic, lambda m, n=cam.name: self._on_image(n, m), qos
            )
            if cam.info_topic:
                self.create_subscription(CameraInfo, cam.info_topic,
                                         lambda m, n=cam.name: self.cameras.on_camera_info(n, m),
                                         qos)  # fmt: skip
        if cfg.cameras.cameras:
            period = max(min(cfg.cameras.max_wait_s / 4, 0.02), 0.005)
            self.create_timer(period, self._poll_sync)

    # ------------------------------------------------------------------ callbacks
    def _on_points(self, lidar: str, msg: Any) -> None:
        now = time.monotonic_ns()
        if self.channels[lidar].stats.arrived(stamp_ns(msg.header), now):
            self.slots.put(lidar, (msg, now))

    def _on_image(self, camera: str, msg: Any) -> None:
        now = time.monotonic_ns()
        with self._lock:
            frames = self.sync.add_image(camera, stamp_ns(msg.header), msg, now)
        self._overlay_frames(frames)

    def _poll_sync(self) -> None:
        with self._lock:
            frames = self.sync.poll(time.monotonic_ns())
        self._overlay_frames(frames)

    def _overlay_frames(self, frames: list[Any]) -> None:
        """Frames the synchronizer completed (or gave up on): overlays, if wanted."""
        for f in frames:
            if not self.pub_overlay or f.scan is None:
                continue
            if not f.images:  # no camera matched: nothing to draw on
                self.cameras.count_skipped(f.missing)
            elif self.overlay_slot.put(f):
                self.cameras.count_skipped(self.pub_overlay)  # an older frame was dropped

    # ------------------------------------------------------------------ workers
    def _work(self) -> None:
        log = self.get_logger()
        while True:
            try:
                taken = self.slots.get(timeout=0.5)
            except SlotClosedError:
                return
            if taken is None:
                continue
            ch = self.channels[taken[0]]
            try:
                self._process(ch, *taken[1])
            except CloudFormatError as exc:
                ch.stats.failed(True, f"malformed cloud: {exc}")
                log.warning(f"dropping malformed cloud from {ch.topic}: {exc}",
                            throttle_duration_sec=2.0)  # fmt: skip
            except Exception as exc:  # keep segmenting; report it
                ch.stats.failed(False, f"{type(exc).__name__}: {exc}")
                log.error(f"scan from {ch.topic} failed: {ch.stats.last_error}",
                          throttle_duration_sec=2.0)  # fmt: skip

    def _process(self, ch: LidarChannel, msg: Any, arrival_ns: int) -> None:
        t0 = time.perf_counter()
        scan = ch.processor.segment(msg)
        if scan.intensity.first:
            lo, hi = scan.intensity.observed or (0.0, 0.0)
            self.get_logger().warning(
                f"{ch.topic}: intensity [{lo:g}, {hi:g}] is outside the range the model was "
                f"trained on {model_intensity_range(self.segmenter)} (input.intensity_policy "
                f"{self.cfg.input.intensity_policy}; input.intensity_scale rescales it); "
                "counted in /diagnostics, logged once")  # fmt: skip
        if scan.sensor is not None and scan.sensor.first:
            self.get_logger().warning(
                f"{ch.topic}: {scan.sensor.message}; in /diagnostics, logged once")
        t1 = time.perf_counter()
        published_ns = ch.publish(scan, self.segmenter.palette, self.cfg.output.filter_labels)
        t2 = time.perf_counter()
        if ch.lidar.name == self.cfg.cameras.lidar:
            # Only now, the labeled cloud out, does the scan meet the cameras.
            job = OverlayJob(scan.cloud.xyz, scan.labels) if self.pub_overlay else None
            with self._lock:
                frames = self.sync.add_scan(stamp_ns(msg.header), job, time.monotonic_ns())
            self._overlay_frames(frames)

        timings = dict(scan.timings, encode=t2 - t1, total=t2 - t0,
                       pipeline=(published_ns - arrival_ns) / 1e9)  # fmt: skip
        ch.publish_timings(timings)
        ch.stats.done(timings, scan.cloud.num_valid == 0, scan.ego_points)

    def _overlay_work(self) -> None:
        stats = self.channels[self.cfg.cameras.lidar].stats  # the LiDAR the cameras pair with
        while True:
            try:
                frame = self.overlay_slot.get(timeout=0.5)
            except SlotClosedError:
                return
            if frame is None:
                continue
            t0 = time.perf_counter()
            out = self.cfg.output
            try:
                for name, img, src in self.cameras.render(frame, out.overlay_alpha,
                                                          out.overlay_radius,
                                                          self._overlay_wanted):  # fmt: skip
                    self.pub_overlay[name].publish(encode_image(img, header=src.header,
                                                                image_cls=Image))  # fmt: skip
            except Exception as exc:  # an overlay must never stop the node
                stats.last_error = f"overlay: {type(exc).__name__}: {exc}"
            stats.latency.add("overlay", time.perf_counter() - t0)

    def _overlay_wanted(self, camera: str) -> bool:
        return self.pub_overlay[camera].get_subscription_count() > 0

    # ------------------------------------------------------------------ diagnostics
    def snapshot(self) -> list[StatsSnapshot]:
        """Every counter the diagnostics report, one snapshot per LiDAR, at one instant."""
        with self._lock:
            sync_stats = self.sync.stats(time.monotonic_ns())
        rss = _rss_mb()
        return [self._snapshot(ch, sync_stats, rss) for ch in self.channels.values()]

    def _snapshot(self, ch: LidarChannel, sync_stats: Any, rss: float) -> StatsSnapshot:
        cfg, st, guard = self.cfg, ch.stats, ch.processor.intensity
        slot = self.slots.slot(ch.lidar.name)
        T = ch.lidar.T_vehicle_lidar
        cams = cfg.cameras.cameras if ch.lidar.name == cfg.cameras.lidar else []
        return StatsSnapshot(
            node_name=self.get_name(),
            input_topic=ch.topic,
            camera_topics={c.name: self.resolve_topic_name(c.image_topic) for c in cams},
            backend=self.segmenter.backend_name,
            latency_ms=st.latency.summary_ms(),
            input_rate_hz=st.in_rate.rate(),
            output_rate_hz=st.out_rate.rate(),
            counts=st.snapshot_counts(),
            dropped_stale=slot.dropped,
            queue_high_water=slot.high_water,
            order=st.order(),
            sync=sync_stats if ch.lidar.name == cfg.cameras.lidar else SyncStats(),
            input_publishers=ch.publishers(),
            since_last_scan_s=st.since_last_scan_s(),
            messages_lost=st.lost,
            messages_lost_recent=st.lost_since_last_report(),
            incompatible_qos=st.incompatible_qos,
            incompatible_qos_policy=st.incompatible_policy,
            qos_events=ch.qos_event_names,
            intensity_found=ch.processor.intensity_found,
            intensity_model_range=guard.model_range,
            intensity_observed=guard.envelope,
            intensity_scans_outside=guard.scans_outside,
            intensity_normalized=cfg.input.intensity_policy == "normalize",
            rss_mb=rss,
            last_error=st.last_error,
            camera_calibrated={c.name: self.cameras.calibrated(c.name) for c in cams},
            overlays_published=dict(self.cameras.published),
            overlays_skipped=dict(self.cameras.skipped),
            camera_notes=dict(self.cameras.notes),
            lidar=ch.lidar.name,
            ego_points_last=st.ego_points_last,
            ego_points_total=st.ego_points_total,
            T_vehicle_lidar="identity" if T is None else " ".join(f"{x:g}" for x in T.ravel()),
            scans_served=self.slots.served[ch.lidar.name],
            cpu_wait_policy=self.cpu_wait_policy,
            sensor_contract=ch.processor.contract,
        )

    def _publish_diagnostics(self) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [
            DiagnosticStatus(level=bytes([s.level]), name=s.name, message=s.message,
                             hardware_id=s.hardware_id,
                             values=[KeyValue(key=k, value=v) for k, v in s.values.items()])
            for s in diagnostics(self.snapshot(), self.cfg)
        ]  # fmt: skip
        self.pub_diag.publish(arr)

    # ------------------------------------------------------------------ shutdown
    def stop(self) -> None:
        """Stop the workers (each finishes what it holds) before the node is destroyed."""
        if not self._started:
            return
        self.slots.close()
        self.overlay_slot.close()
        for t in self._threads:
            t.join(timeout=10.0)
        self._started = False
