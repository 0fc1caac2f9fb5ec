"""The live ROS 2 LiDAR segmentation node (``ros2 run xmodelkd_ros segment_node``): wiring.

Why it is built this way (the pipeline itself is :mod:`xmodelkd_ros.node.processing`,
the cameras :mod:`xmodelkd_ros.node.cameras`, the health rules
:mod:`xmodelkd_ros.node.diagnostics`, the parameters :mod:`xmodelkd_ros.node.params` and
:mod:`xmodelkd_ros.node.ros_params`):

* Subscription callbacks only stamp scans and hand them to one inference worker
  through a latest-only slot (:mod:`xmodelkd_ros.node.slot`). A model slower than the
  sensor then drops stale scans (counted) instead of queueing them, so latency and
  memory stay bounded under a burst.
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

from xmodelkd_ros.msgs import (
    CloudFormatError,
    encode_filtered_cloud,
    encode_image,
    encode_labeled_cloud,
    stamp_ns,
)
from xmodelkd_ros.node.cameras import OverlayJob, OverlayRenderer, load_camera_calibration
from xmodelkd_ros.node.diagnostics import StatsSnapshot, diagnostics
from xmodelkd_ros.node.params import NodeConfig
from xmodelkd_ros.node.processing import (
    ScanProcessor,
    StartupError,
    load_segmenter,
    model_intensity_range,
    warm_up,
)
from xmodelkd_ros.node.slot import FrameSlot, SlotClosedError
from xmodelkd_ros.stats import RateMeter, StageLatencies
from xmodelkd_ros.sync import LidarAnchoredSync, ScanOrder

NODE_NAME = "lidar_segmentation"
#: Stages reported in diagnostics, in pipeline order. ``pipeline`` is scan arrival at the
#: node to publication of the labeled cloud (includes queue wait); ``total`` is the
#: worker's time for the scan. ``overlay`` (after publication, on its own thread) is
#: added once an overlay is drawn.
LATENCY_STAGES = ("decode", "voxelize", "maps", "inference", "postprocess", "encode",
                  "total", "pipeline")  # fmt: skip

try:  # rclpy is only needed when the node actually runs
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rclpy.event_handler import (
        SubscriptionEventCallbacks,
        UnsupportedEventTypeError,
        qos_policy_name_from_kind,
    )
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
    from std_msgs.msg import Float64

    from xmodelkd_ros.node.ros_params import NodeParameters

    #: Why rclpy (or a message package) did not import; None where ROS is installed.
    RCLPY_ERROR: str | None = None
except ImportError as _exc:  # pragma: no cover - exercised where ROS is absent
    RCLPY_ERROR = str(_exc)
    Node = object  # type: ignore[misc,assignment]


#: debug topic name -> stage (when debug.publish_timings), as Autoware's debug publishers.
DEBUG_TOPICS = {"processing_time": "total", "inference": "inference",
                "pipeline_latency": "pipeline"}  # fmt: skip


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
        self.segmenter: Any = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _apply_config(self, cfg: NodeConfig) -> None:
        """A runtime parameter change, validated: used from the next scan on."""
        self.cfg = cfg
        if self._started:
            self.processor.set_input_config(cfg.input)

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
                 f"intensity range {model_intensity_range(self.segmenter) or 'unknown'}")
        self.processor = ScanProcessor(self.segmenter, cfg.input)
        self.cameras = OverlayRenderer(calib, self.segmenter.palette)
        self.order = ScanOrder()
        self.sync = LidarAnchoredSync([c.name for c in cams], cfg.cameras.slop_s,
                                      cfg.cameras.max_wait_s,
                                      camera_timeout_s=cfg.cameras.timeout_s)  # fmt: skip
        self.slot = FrameSlot(cfg.queue.policy, cfg.queue.depth)
        self.overlay_slot = FrameSlot("fifo", 4)  # overlays behind: oldest dropped, counted
        self.latency = StageLatencies(cfg.diagnostics.window, LATENCY_STAGES)
        window = max(2.0, 2 * cfg.diagnostics.period_s)
        self.in_rate, self.out_rate = RateMeter(window), RateMeter(window)
        self.counts = dict.fromkeys(("received", "processed", "malformed", "errors", "empty"), 0)
        self.last_error = ""
        self._last_scan_mono: float | None = None
        self._qos_events = {"lost": 0, "lost_reported": 0, "incompatible": 0}
        self._qos_policy = ""

        q = cfg.queue
        qin, qout = _qos(q.qos_input, q.qos_depth), _qos(q.qos_output, q.qos_depth)
        out = cfg.output
        self.pub_seg = self.create_publisher(PointCloud2, out.segmentation_topic, qout)
        self.pub_viz = (self.create_publisher(PointCloud2, out.visualization_topic, qout)
                        if out.publish_rgb else None)  # fmt: skip
        self.pub_filtered = (self.create_publisher(PointCloud2, out.filtered_topic, qout)
                             if out.publish_filtered else None)  # fmt: skip
        self.pub_overlay = {
            c.name: self.create_publisher(Image, f"{out.overlay_topic_prefix}/{c.name}", qout)
            for c in cams
        } if out.overlay else {}  # fmt: skip
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.pub_debug = {
            name: self.create_publisher(Float64, f"~/debug/{name}_ms", qout)
            for name in DEBUG_TOPICS
        } if cfg.diagnostics.publish_timings else {}  # fmt: skip

        self._subscribe_points(qin)
        for cam in cams:
            mtype = CompressedImage if cam.compressed else Image
            self.create_subscription(
                mtype, cam.image_topic, lambda m, n=cam.name: self._on_image(n, m), qin
            )
            if cam.info_topic:
                self.create_subscription(CameraInfo, cam.info_topic,
                                         lambda m, n=cam.name: self.cameras.on_camera_info(n, m),
                                         qin)  # fmt: skip
        if cams:
            period = max(min(cfg.cameras.max_wait_s / 4, 0.02), 0.005)
            self.create_timer(period, self._poll_sync)
        self.create_timer(cfg.diagnostics.period_s, self._publish_diagnostics)

        workers = [("inference", self._work)]
        if self.pub_overlay:
            workers.append(("overlay", self._overlay_work))
        for name, target in workers:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self._started = True
        log.info(
            f"segmenting {self.resolve_topic_name(cfg.input.points_topic)} -> "
            f"{self.resolve_topic_name(out.segmentation_topic)}; cameras: "
            f"{', '.join(c.name for c in cams) or 'none'}; queue {q.policy}; "
            f"QoS events: {self._qos_event_names}"
        )

    def _subscribe_points(self, qos: Any) -> None:
        """The cloud subscription with QoS event callbacks (message lost only where the rmw
        supports it: rclpy raises for an unsupported one, so fall back without it)."""
        topic = self.cfg.input.points_topic
        cbs = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos,
                                         message_lost=self._on_message_lost)  # fmt: skip
        try:
            self.sub_points = self.create_subscription(PointCloud2, topic, self._on_points, qos,
                                                       event_callbacks=cbs)  # fmt: skip
            self._qos_event_names = "message_lost, incompatible_qos"
        except UnsupportedEventTypeError:
            cbs = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
            self.sub_points = self.create_subscription(PointCloud2, topic, self._on_points, qos,
                                                       event_callbacks=cbs)  # fmt: skip
            self._qos_event_names = "incompatible_qos (rmw reports no message_lost)"

    # ------------------------------------------------------------------ callbacks
    def _on_message_lost(self, info: Any) -> None:
        self._qos_events["lost"] = int(info.total_count)

    def _on_incompatible_qos(self, info: Any) -> None:
        self._qos_events["incompatible"] = int(info.total_count)
        self._qos_policy = qos_policy_name_from_kind(info.last_policy_kind)
        self.get_logger().error(
            f"a publisher of {self.resolve_topic_name(self.cfg.input.points_topic)} has QoS "
            f"incompatible with ours ({self._qos_policy}): its clouds never arrive; set "
            "qos.input to match it")  # fmt: skip

    def _on_points(self, msg: Any) -> None:
        now = time.monotonic_ns()
        self._last_scan_mono = now / 1e9
        self.in_rate.tick()
        self.counts["received"] += 1
        with self._lock:
            admitted = self.order.admit(stamp_ns(msg.header))
        if admitted:
            self.slot.put((msg, now))

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
                item = self.slot.get(timeout=0.5)
            except SlotClosedError:
                return
            if item is None:
                continue
            try:
                self._process(*item)
            except CloudFormatError as exc:
                self.counts["malformed"] += 1
                self.last_error = f"malformed cloud: {exc}"
                log.warning(f"dropping malformed cloud: {exc}", throttle_duration_sec=2.0)
            except Exception as exc:  # keep segmenting; report it
                self.counts["errors"] += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error(f"scan failed: {self.last_error}", throttle_duration_sec=2.0)

    def _process(self, msg: Any, arrival_ns: int) -> None:
        t0 = time.perf_counter()
        scan = self.processor.segment(msg)
        if scan.intensity.first:
            lo, hi = scan.intensity.observed or (0.0, 0.0)
            self.get_logger().warning(
                f"intensity [{lo:g}, {hi:g}] is outside the range the model was trained on "
                f"{model_intensity_range(self.segmenter)} (input.intensity_policy "
                f"{self.cfg.input.intensity_policy}; input.intensity_scale rescales it); "
                "counted in /diagnostics, logged once")  # fmt: skip
        if scan.sensor is not None and scan.sensor.first:
            self.get_logger().warning(f"{scan.sensor.message}; in /diagnostics, logged once")
        if scan.cloud.num_valid == 0:
            self.counts["empty"] += 1
        t1 = time.perf_counter()
        self.pub_seg.publish(encode_labeled_cloud(scan.cloud, scan.labels, scan.confidence,
                                                  cloud_cls=PointCloud2, field_cls=PointField))
        published_ns = time.monotonic_ns()
        if self.pub_viz is not None and self.pub_viz.get_subscription_count() > 0:
            self.pub_viz.publish(encode_labeled_cloud(
                scan.cloud, scan.labels, scan.confidence, with_rgb=True,
                palette=self.segmenter.palette, cloud_cls=PointCloud2, field_cls=PointField))
        if self.pub_filtered is not None and self.pub_filtered.get_subscription_count() > 0:
            self.pub_filtered.publish(encode_filtered_cloud(
                scan.cloud, scan.labels, self.cfg.output.filter_labels, cloud_cls=PointCloud2,
                field_cls=PointField))  # fmt: skip
        t2 = time.perf_counter()
        # Only now, the labeled cloud out, does the scan meet the cameras.
        job = OverlayJob(scan.cloud.xyz, scan.labels) if self.pub_overlay else None
        with self._lock:
            frames = self.sync.add_scan(stamp_ns(msg.header), job, time.monotonic_ns())
        self._overlay_frames(frames)

        timings = dict(scan.timings, encode=t2 - t1, total=t2 - t0,
                       pipeline=(published_ns - arrival_ns) / 1e9)  # fmt: skip
        self.latency.add_all(timings)
        for name, stage in DEBUG_TOPICS.items():
            if name in self.pub_debug:
                self.pub_debug[name].publish(Float64(data=timings[stage] * 1e3))
        self.counts["processed"] += 1
        self.out_rate.tick()

    def _overlay_work(self) -> None:
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
                self.last_error = f"overlay: {type(exc).__name__}: {exc}"
            self.latency.add("overlay", time.perf_counter() - t0)

    def _overlay_wanted(self, camera: str) -> bool:
        return self.pub_overlay[camera].get_subscription_count() > 0

    # ------------------------------------------------------------------ diagnostics
    def snapshot(self) -> StatsSnapshot:
        """Gather every counter the diagnostics report, at one instant."""
        cfg = self.cfg
        with self._lock:
            sync_stats = self.sync.stats(time.monotonic_ns())
            order = self.order.stats()
        ev = self._qos_events
        lost_recent = ev["lost"] - ev["lost_reported"]
        ev["lost_reported"] = ev["lost"]
        last = self._last_scan_mono
        guard = self.processor.intensity
        return StatsSnapshot(
            node_name=self.get_name(),
            input_topic=self.resolve_topic_name(cfg.input.points_topic),
            camera_topics={c.name: self.resolve_topic_name(c.image_topic)
                           for c in cfg.cameras.cameras},
            backend=self.segmenter.backend_name,
            latency_ms=self.latency.summary_ms(),
            input_rate_hz=self.in_rate.rate(),
            output_rate_hz=self.out_rate.rate(),
            counts=dict(self.counts),
            dropped_stale=self.slot.dropped,
            queue_high_water=self.slot.high_water,
            order=order,
            sync=sync_stats,
            input_publishers=self.count_publishers(self.sub_points.topic_name),
            since_last_scan_s=None if last is None else time.monotonic() - last,
            messages_lost=ev["lost"],
            messages_lost_recent=lost_recent,
            incompatible_qos=ev["incompatible"],
            incompatible_qos_policy=self._qos_policy,
            qos_events=self._qos_event_names,
            intensity_found=self.processor.intensity_found,
            intensity_model_range=guard.model_range,
            intensity_observed=guard.envelope,
            intensity_scans_outside=guard.scans_outside,
            intensity_normalized=cfg.input.intensity_policy == "normalize",
            rss_mb=_rss_mb(),
            last_error=self.last_error,
            camera_calibrated={c.name: self.cameras.calibrated(c.name)
                               for c in cfg.cameras.cameras},
            overlays_published=dict(self.cameras.published),
            overlays_skipped=dict(self.cameras.skipped),
            camera_notes=dict(self.cameras.notes),
            sensor_contract=self.processor.contract,
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
        self.slot.close()
        self.overlay_slot.close()
        for t in self._threads:
            t.join(timeout=10.0)
        self._started = False
