"""The live ROS 2 LiDAR segmentation node (``ros2 run xmodelkd_ros segment_node``).

Why it is built this way (see DESIGN.md, "The node's interface" and "Data flow"):

* Subscription callbacks only stamp and hand messages to the LiDAR-anchored
  synchronizer; decoding, inference and encoding run on one worker thread fed by a
  latest-only slot (:mod:`xmodelkd_ros.slot`). A model slower than the sensor then
  drops stale scans (counted in diagnostics) instead of queueing them, so latency
  and memory stay bounded under a burst.
* The scan is the anchor: a camera that dies only turns its diagnostics status to
  WARN and stops its overlay; segmentation goes on (the student is LiDAR-only).
* Every parameter is declared with a description (:mod:`xmodelkd_ros.node_params`)
  and validated before the model loads; startup problems (missing/corrupt model,
  bad parameter) end the process with one log line and exit code 1, no traceback.
* It runs the real student network through :class:`~xmodelkd_ros.runtime.Segmenter`
  (TensorRT, ONNX Runtime or PyTorch) -- never a stand-in.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from xmodelkd_ros.geometry import PinholeCamera, load_calibration
from xmodelkd_ros.msgs import (
    CloudFormatError,
    MessageFormatError,
    decode_camera_info,
    decode_cloud,
    encode_filtered_cloud,
    encode_image,
    encode_labeled_cloud,
    image_to_rgb,
    stamp_ns,
)
from xmodelkd_ros.node_params import (
    PARAM_SPECS,
    ConfigError,
    NodeConfig,
    ParamSpec,
    camera_param_specs,
    parse_config,
)
from xmodelkd_ros.overlay import draw_overlay
from xmodelkd_ros.slot import FrameSlot, SlotClosedError
from xmodelkd_ros.stats import RateMeter, StageLatencies
from xmodelkd_ros.sync import LidarAnchoredSync

NODE_NAME = "lidar_segmentation"
#: Stages reported in diagnostics, in pipeline order. ``pipeline`` is scan arrival at the
#: node to publication (includes sync wait and queue wait); ``total`` is the worker's time.
STAGES = ("decode", "voxelize", "maps", "inference", "postprocess", "encode", "overlay",
          "total", "pipeline")  # fmt: skip

try:  # rclpy is only needed when the node actually runs
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import (
        HistoryPolicy,
        QoSProfile,
        ReliabilityPolicy,
        qos_profile_sensor_data,
    )
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
    from std_msgs.msg import Float64

    _RCLPY_ERROR: str | None = None
except ImportError as _exc:  # pragma: no cover - exercised where ROS is absent
    _RCLPY_ERROR = str(_exc)
    Node = object  # type: ignore[misc,assignment]


#: debug topic name -> stage (when debug.publish_timings), as Autoware's debug publishers.
DEBUG_TOPICS = {"processing_time": "total", "inference": "inference",
                "pipeline_latency": "pipeline"}  # fmt: skip


class _NullPublisher:
    def publish(self, msg: Any) -> None:
        pass


_NULL_PUB = _NullPublisher()


class StartupError(RuntimeError):
    """Anything that keeps the node from starting; reported as one line."""



def _qos(kind: str, depth: int) -> Any:
    if kind == "sensor_data":
        q = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=depth,
            reliability=qos_profile_sensor_data.reliability,
            durability=qos_profile_sensor_data.durability,
        )
        return q
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


def load_segmenter(cfg: NodeConfig) -> Any:
    """The Segmenter for ``cfg.model``: an export dir (any backend) or a ``.pt`` (torch).

    Raises :class:`StartupError` with a one-sentence reason for every known failure.
    """
    path = Path(cfg.model).expanduser()
    if not path.exists():  # checked before importing torch: a typo fails in a blink
        raise StartupError(f"model {path} does not exist (parameter model)")
    if not path.is_dir() and cfg.backend not in ("auto", "torch"):
        raise StartupError(
            f"backend {cfg.backend} needs an exported model dir but {path} is a "
            "checkpoint: export it (python -m xmodelkd_ros.export) or use backend torch"
        )
    from xmodelkd_ros.runtime import ModelLoadError, Segmenter

    try:
        if path.is_dir():
            return Segmenter.from_model_dir(
                path, backend=cfg.backend, device=cfg.device,
                engine_cache=cfg.engine_cache_dir or None, fp16=cfg.fp16,
            )  # fmt: skip
        return Segmenter.from_checkpoint(path, backend="torch", device=cfg.device)
    except (ModelLoadError, ValueError, OSError) as exc:
        raise StartupError(f"cannot load model {path}: {exc}") from None


class SegmentNode(Node):
    """Parameters, subscriptions, synchronizer, inference worker, publishers, diagnostics.

    Construction only declares and validates parameters (so ``build_only`` and bad
    values need no model); :meth:`start` loads the model and wires the graph.
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.cfg: NodeConfig = self._read_parameters()
        self.segmenter: Any = None
        self._worker: threading.Thread | None = None
        self._started = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ parameters
    def _declare(self, spec: ParamSpec) -> Any:
        desc = spec.description
        if spec.choices:
            desc += f" One of: {', '.join(spec.choices)}."
        d = ParameterDescriptor(description=desc)
        if spec.default is None:
            ptype = {"string_array": Parameter.Type.STRING_ARRAY,
                     "double_array": Parameter.Type.DOUBLE_ARRAY}[spec.kind]  # fmt: skip
            return self.declare_parameter(spec.name, ptype, d).value
        return self.declare_parameter(spec.name, spec.default, d).value

    def _read_parameters(self) -> NodeConfig:
        values = {s.name: self._declare(s) for s in PARAM_SPECS}
        for name in values.get("cameras.names") or []:
            for s in camera_param_specs(str(name)):
                values[s.name] = self._declare(s)
        return parse_config(values)

    # ------------------------------------------------------------------ startup
    def start(self) -> None:
        """Load the model, build calibration, create pubs/subs/timers and the worker."""
        cfg = self.cfg

        self._calib = self._load_calibration()
        t0 = time.perf_counter()
        self.segmenter = load_segmenter(cfg)
        c_in = int(getattr(self.segmenter.config, "in_channels", 4))
        if c_in != 4:
            raise StartupError(
                f"model {cfg.model} expects {c_in} input channels; the node feeds 4 "
                "(x, y, z, intensity)"
            )
        self._warm_up()
        self.get_logger().info(
            f"model {cfg.model} loaded on {self.segmenter.backend_name} ({cfg.device}) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        self.sync = LidarAnchoredSync(
            [c.name for c in cfg.cameras], cfg.sync_slop_s, cfg.sync_max_wait_s,
            camera_timeout_s=cfg.camera_timeout_s,
        )  # fmt: skip
        self.slot = FrameSlot(cfg.queue_policy, cfg.queue_depth)
        self.latency = StageLatencies(cfg.diag_window, STAGES)
        self.in_rate = RateMeter(max(2.0, 2 * cfg.diag_period_s))
        self.out_rate = RateMeter(max(2.0, 2 * cfg.diag_period_s))
        self.counts = dict.fromkeys(
            ("received", "processed", "malformed", "errors", "empty"), 0
        )
        self.last_error = ""
        self.intensity_found: bool | None = None
        self._camera_info: dict[str, Any] = {}
        self._overlays_published = dict.fromkeys((c.name for c in cfg.cameras), 0)
        self._camera_note: dict[str, str] = {}

        qin, qout = _qos(cfg.qos_input, cfg.qos_depth), _qos(cfg.qos_output, cfg.qos_depth)
        self.pub_seg = self.create_publisher(PointCloud2, cfg.segmentation_topic, qout)
        self.pub_viz = (
            self.create_publisher(PointCloud2, cfg.visualization_topic, qout)
            if cfg.publish_rgb else None
        )  # fmt: skip
        self.pub_filtered = (
            self.create_publisher(PointCloud2, cfg.filtered_topic, qout)
            if cfg.publish_filtered else None
        )  # fmt: skip
        self.pub_overlay = {
            c.name: self.create_publisher(Image, f"{cfg.overlay_topic_prefix}/{c.name}", qout)
            for c in cfg.cameras
        } if cfg.overlay else {}  # fmt: skip
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.pub_debug = {
            name: self.create_publisher(Float64, f"~/debug/{name}_ms", qout)
            for name in DEBUG_TOPICS
        } if cfg.debug_timings else {}  # fmt: skip

        self.create_subscription(PointCloud2, cfg.points_topic, self._on_points, qin)
        for cam in cfg.cameras:
            mtype = CompressedImage if cam.compressed else Image
            self.create_subscription(
                mtype, cam.image_topic, lambda m, n=cam.name: self._on_image(n, m), qin
            )
            if cam.info_topic:
                self.create_subscription(
                    CameraInfo, cam.info_topic, lambda m, n=cam.name: self._on_info(n, m), qin
                )
        if cfg.cameras:
            self.create_timer(max(min(cfg.sync_max_wait_s / 4, 0.02), 0.005), self._poll_sync)
        self.create_timer(cfg.diag_period_s, self._publish_diagnostics)

        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._worker.start()
        self._started = True
        self.get_logger().info(
            f"segmenting {self.resolve_topic_name(cfg.points_topic)} -> "
            f"{self.resolve_topic_name(cfg.segmentation_topic)}; cameras: "
            f"{', '.join(c.name for c in cfg.cameras) or 'none'}; queue {cfg.queue_policy}"
        )

    def _warm_up(self) -> None:
        """One small scan through the model: the first call is slow (allocations, lazy
        init) and would otherwise show up as a dropped burst; also proves the weights run."""
        rng = np.random.default_rng(0)
        pts = np.zeros((512, 4), np.float32)
        pts[:, :3] = rng.uniform(-10, 10, (512, 3))
        try:
            self.segmenter.segment(pts)
        except Exception as exc:
            raise StartupError(f"model {self.cfg.model} fails on a test scan: {exc}") from None

    def _load_calibration(self) -> dict[str, Any]:
        """Per camera ``{"K", "width", "height", "T", "D"}`` from file and parameters."""
        calib: dict[str, dict[str, Any]] = {c.name: {} for c in self.cfg.cameras}
        if self.cfg.calibration_file:
            try:
                cams = {c.name: c for c in load_calibration(self.cfg.calibration_file)}
            except Exception as exc:
                raise StartupError(
                    f"cannot read cameras.calibration_file {self.cfg.calibration_file}: {exc}"
                ) from None
            for name, entry in calib.items():
                c = cams.get(name)
                if c is not None:
                    entry.update(K=c.K, width=c.width, height=c.height, T=c.T_cam_lidar, D=c.D)
                else:
                    self.get_logger().warning(
                        f"camera {name} is not in {self.cfg.calibration_file} "
                        f"(it has: {', '.join(cams) or 'none'})"
                    )
        for cam in self.cfg.cameras:
            if cam.T_cam_lidar is not None:
                calib[cam.name]["T"] = cam.T_cam_lidar
            if "T" not in calib[cam.name] and self.cfg.overlay:
                self.get_logger().warning(
                    f"camera {cam.name}: no extrinsic (cameras.{cam.name}.T_cam_lidar or "
                    "calibration file): no overlay for it"
                )
        return calib

    # ------------------------------------------------------------------ callbacks
    def _dispatch(self, frames: list[Any]) -> None:
        for f in frames:
            self.slot.put(f)

    def _on_points(self, msg: Any) -> None:
        now = time.monotonic_ns()
        self.in_rate.tick()
        self.counts["received"] += 1
        with self._lock:
            frames = self.sync.add_scan(stamp_ns(msg.header), (msg, now), now)
        self._dispatch(frames)

    def _on_image(self, camera: str, msg: Any) -> None:
        now = time.monotonic_ns()
        with self._lock:
            frames = self.sync.add_image(camera, stamp_ns(msg.header), msg, now)
        self._dispatch(frames)

    def _on_info(self, camera: str, msg: Any) -> None:
        try:
            self._camera_info[camera] = decode_camera_info(msg)
        except MessageFormatError as exc:
            self._camera_note[camera] = f"bad CameraInfo: {exc}"

    def _poll_sync(self) -> None:
        with self._lock:
            frames = self.sync.poll(time.monotonic_ns())
        self._dispatch(frames)

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        log = self.get_logger()
        while True:
            try:
                frame = self.slot.get(timeout=0.5)
            except SlotClosedError:
                return
            if frame is None:
                continue
            try:
                self._process(frame)
            except CloudFormatError as exc:
                self.counts["malformed"] += 1
                self.last_error = f"malformed cloud: {exc}"
                log.warning(f"dropping malformed cloud: {exc}", throttle_duration_sec=2.0)
            except Exception as exc:  # keep segmenting; report it
                self.counts["errors"] += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error(f"scan failed: {self.last_error}", throttle_duration_sec=2.0)

    def _process(self, frame: Any) -> None:
        cfg = self.cfg
        msg, arrival_ns = frame.scan
        t0 = time.perf_counter()
        cloud = decode_cloud(msg, intensity_field=cfg.intensity_fields)
        self.intensity_found = cloud.intensity_found
        m = cloud.num_valid
        pts = np.empty((m, 4), dtype=np.float32)
        pts[:, :3] = cloud.xyz
        pts[:, 3] = cloud.intensity
        if cfg.intensity_scale != 1.0:
            pts[:, 3] *= cfg.intensity_scale
        sel = None
        if cfg.max_range > 0 or cfg.min_range > 0:
            r2 = np.einsum("ij,ij->i", pts[:, :3], pts[:, :3])
            sel = r2 >= cfg.min_range**2
            if cfg.max_range > 0:
                sel &= r2 <= cfg.max_range**2
            pts = pts[sel]
        t_decode = time.perf_counter() - t0

        res = self.segmenter.segment(pts)
        if sel is None:
            labels, conf = res.labels, res.confidence
        else:
            labels = np.zeros(m, np.uint16)
            conf = np.zeros(m, np.float32)
            labels[sel] = res.labels
            conf[sel] = res.confidence
        if m == 0:
            self.counts["empty"] += 1

        t1 = time.perf_counter()
        out = encode_labeled_cloud(cloud, labels, conf, cloud_cls=PointCloud2,
                                   field_cls=PointField)  # fmt: skip
        self.pub_seg.publish(out)
        if self.pub_viz is not None and self.pub_viz.get_subscription_count() > 0:
            self.pub_viz.publish(
                encode_labeled_cloud(cloud, labels, conf, with_rgb=True,
                                     palette=self.segmenter.palette, cloud_cls=PointCloud2,
                                     field_cls=PointField)
            )
        if self.pub_filtered is not None and self.pub_filtered.get_subscription_count() > 0:
            self.pub_filtered.publish(
                encode_filtered_cloud(cloud, labels, cfg.filter_labels,
                                      cloud_cls=PointCloud2, field_cls=PointField)
            )
        t2 = time.perf_counter()
        if self.pub_overlay:
            self._publish_overlays(frame, cloud.xyz, labels)
        t3 = time.perf_counter()

        timings = {k: res.timings.get(k, 0.0) for k in ("voxelize", "maps", "inference",
                                                          "postprocess")}  # fmt: skip
        timings.update(decode=t_decode, encode=t2 - t1, overlay=t3 - t2, total=t3 - t0,
                       pipeline=(time.monotonic_ns() - arrival_ns) / 1e9)  # fmt: skip
        self.latency.add_all(timings)
        for name, stage in DEBUG_TOPICS.items():
            self.pub_debug.get(name, _NULL_PUB).publish(Float64(data=timings[stage] * 1e3))
        self.counts["processed"] += 1
        self.out_rate.tick()

    def _camera_model(self, name: str) -> Any:
        """A PinholeCamera from the calibration file / parameters / CameraInfo, or None."""
        c = self._calib.get(name, {})
        if "T" not in c:
            self._camera_note[name] = "no extrinsic"
            return None
        info = self._camera_info.get(name)
        if "K" in c:
            K, w, h, D = c["K"], c["width"], c["height"], c.get("D")
        elif info is not None:
            K, w, h, D = info.K, info.width, info.height, info.D
            if info.distortion_model not in ("", "plumb_bob", "rational_polynomial"):
                D = None  # only plumb_bob is modelled (rational's first 5 terms match)
        else:
            self._camera_note[name] = "no intrinsics yet (calibration file or CameraInfo)"
            return None
        D = D if D is not None and len(D) >= 5 else None
        return PinholeCamera(name, K, w, h, c["T"], D=None if D is None else D[:5])

    def _publish_overlays(self, frame: Any, xyz: np.ndarray, labels: np.ndarray) -> None:
        for name, (_stamp, img_msg) in frame.images.items():
            pub = self.pub_overlay.get(name)
            if pub is None or pub.get_subscription_count() == 0:
                continue
            cam = self._camera_model(name)
            if cam is None:
                continue
            try:
                rgb = image_to_rgb(img_msg)
            except MessageFormatError as exc:
                self._camera_note[name] = f"bad image: {exc}"
                continue
            img = draw_overlay(rgb, cam, xyz, labels, palette=self.segmenter.palette,
                               alpha=self.cfg.overlay_alpha,
                               radius=self.cfg.overlay_radius)  # fmt: skip
            pub.publish(encode_image(img, header=img_msg.header, image_cls=Image))
            self._overlays_published[name] += 1
            self._camera_note.pop(name, None)

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        self.pub_diag.publish(self.diagnostics())

    def diagnostics(self) -> Any:
        """The DiagnosticArray: one status for segmentation, one per camera."""
        cfg = self.cfg
        now = time.monotonic_ns()
        with self._lock:
            st = self.sync.stats(now)
        lat = self.latency.summary_ms()
        p95_total = lat.get("total", (float("nan"),) * 2)[1]
        in_hz, out_hz = self.in_rate.rate(), self.out_rate.rate()
        c = self.counts
        level, msgs = DiagnosticStatus.OK, []
        if not np.isnan(p95_total) and p95_total > cfg.diag_error_ms:
            level = DiagnosticStatus.ERROR
            msgs.append(f"p95 processing {p95_total:.0f} ms > error {cfg.diag_error_ms:.0f} ms")
        elif not np.isnan(p95_total) and p95_total > cfg.diag_warn_ms:
            level = DiagnosticStatus.WARN
            msgs.append(f"p95 processing {p95_total:.0f} ms > warn {cfg.diag_warn_ms:.0f} ms")
        if c["received"] == 0 or in_hz == 0.0:
            level = max(level, DiagnosticStatus.WARN)
            msgs.append("no input scans")
        if self.slot.dropped:
            msgs.append(f"{self.slot.dropped} stale scans dropped")
        if self.intensity_found is False:  # the network was trained with intensity
            level = max(level, DiagnosticStatus.WARN)
            msgs.append(f"no intensity field ({', '.join(cfg.intensity_fields)}): zeros used")
        if c["malformed"] or c["errors"]:
            level = max(level, DiagnosticStatus.WARN)
            msgs.append(f"{c['malformed']} malformed, {c['errors']} failed")
        kv = {
            "backend": self.segmenter.backend_name,
            "model": cfg.model,
            "device": cfg.device,
            "input_rate_hz": f"{in_hz:.2f}",
            "output_rate_hz": f"{out_hz:.2f}",
            "scans_received": c["received"],
            "scans_processed": c["processed"],
            "scans_dropped_stale": self.slot.dropped,
            "scans_dropped_sync": st.scans_dropped_late + st.scans_duplicate,
            "scans_sync_expired": st.scans_expired,
            "scans_sync_overflow": st.scans_forced_overflow,
            "malformed_clouds": c["malformed"],
            "processing_errors": c["errors"],
            "empty_scans": c["empty"],
            "queue_policy": cfg.queue_policy,
            "queue_high_water": self.slot.high_water,
            "intensity_field_found": self.intensity_found,
            "rss_mb": f"{_rss_mb():.1f}",
            "last_error": self.last_error,
        }
        for stage, (p50, p95) in lat.items():
            kv[f"{stage}_p50_ms"] = f"{p50:.2f}"
            kv[f"{stage}_p95_ms"] = f"{p95:.2f}"
        statuses = [
            DiagnosticStatus(
                level=level,
                name=f"{self.get_name()}: segmentation",
                message="; ".join(msgs) or "ok",
                hardware_id=self.resolve_topic_name(cfg.points_topic),
                values=[KeyValue(key=k, value=str(v)) for k, v in kv.items()],
            )
        ]
        for cam in cfg.cameras:
            cs = st.cameras[cam.name]
            clevel, cmsg = DiagnosticStatus.OK, "ok"
            if cs.received == 0:
                clevel, cmsg = DiagnosticStatus.WARN, "no images received"
            elif not cs.alive:
                clevel, cmsg = DiagnosticStatus.WARN, f"stale (> {cfg.camera_timeout_s} s)"
            note = self._camera_note.get(cam.name)
            if note and clevel == DiagnosticStatus.OK and cfg.overlay:
                clevel, cmsg = DiagnosticStatus.WARN, note
            ckv = {
                "image_topic": self.resolve_topic_name(cam.image_topic),
                "alive": cs.alive,
                "received": cs.received,
                "matched": cs.matched,
                "missed": cs.missed,
                "last_stamp_ns": cs.last_stamp_ns,
                "calibrated": "T" in self._calib.get(cam.name, {}),
                "overlays_published": self._overlays_published.get(cam.name, 0),
            }
            statuses.append(
                DiagnosticStatus(
                    level=clevel,
                    name=f"{self.get_name()}: camera {cam.name}",
                    message=cmsg,
                    hardware_id=self.resolve_topic_name(cam.image_topic),
                    values=[KeyValue(key=k, value=str(v)) for k, v in ckv.items()],
                )
            )
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = statuses
        return arr

    # ------------------------------------------------------------------ shutdown
    def stop(self) -> None:
        """Stop the worker (it finishes the scan in hand) before the node is destroyed."""
        if not self._started:
            return
        self.slot.close()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
        self._started = False


def _build_only(node: SegmentNode) -> None:
    cfg = node.cfg
    if not Path(cfg.model).is_dir():
        raise StartupError(f"build_only needs an exported model dir, got {cfg.model}")
    from xmodelkd_ros.runtime import build_only

    try:
        path = build_only(cfg.model, cfg.engine_cache_dir or None, fp16=cfg.fp16)
    except Exception as exc:
        raise StartupError(f"TensorRT engine build failed: {exc}") from None
    node.get_logger().info(f"build_only: TensorRT engine ready at {path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``segment_node``; returns the process exit code."""
    args = list(sys.argv if argv is None else argv)
    if _RCLPY_ERROR is not None:
        print(f"[{NODE_NAME}] FATAL: rclpy is not importable ({_RCLPY_ERROR})", file=sys.stderr)
        return 1
    rclpy.init(args=args)
    node: SegmentNode | None = None
    try:
        try:
            node = SegmentNode()
            if node.cfg.build_only:
                _build_only(node)
                return 0
            node.start()
        except (StartupError, ConfigError) as exc:
            _fatal(node, str(exc))
            return 1
        except rclpy.exceptions.ParameterException as exc:
            _fatal(node, f"bad parameter: {exc}")
            return 1
        except Exception as exc:  # unexpected, but still one line, not a traceback
            _fatal(node, f"startup failed: {type(exc).__name__}: {exc}")
            return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
            executor.spin()
        return 0
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()


def _fatal(node: SegmentNode | None, message: str) -> None:
    # One line, whatever the exception text looked like (torch errors span paragraphs).
    message = " ".join(message.split())
    if len(message) > 400:
        message = message[:397] + "..."
    if node is not None:
        node.get_logger().fatal(message)
    else:
        print(f"[FATAL] [{NODE_NAME}]: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
