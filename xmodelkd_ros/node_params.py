"""The segmentation node's parameters: names, defaults, descriptions and validation (no ROS).

Why a separate module: the parameter table is the node's user interface on a vehicle.
Keeping it as data lets the node declare every parameter with its description (so
``ros2 param describe`` explains it), lets ``config/segment.yaml`` be checked against
it in tests, and lets bad values fail at startup with one sentence naming the
parameter instead of a traceback from deep inside the pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xmodelkd_ros.labels import CLASS_NAMES
from xmodelkd_ros.slot import POLICIES

BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime", "torch")
QOS_CHOICES = ("sensor_data", "reliable")


class ConfigError(ValueError):
    """A parameter value the node cannot run with (message names the parameter)."""


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter. ``default`` None + ``kind`` means 'declared by type only'."""

    name: str
    default: Any
    description: str
    kind: str = ""  # for defaults whose type cannot be inferred: "string_array", "double_array"
    choices: tuple[str, ...] = ()


# Global parameters, in the order they appear in config/segment.yaml.
PARAM_SPECS: tuple[ParamSpec, ...] = (
    # --- model and backend
    ParamSpec("model", "", "Exported model dir (model.json + model.onnx) or a student .pt "
              "checkpoint (torch backend). Required."),
    ParamSpec("backend", "auto", "Inference backend: auto picks TensorRT on a GPU with "
              "TensorRT, else ONNX Runtime, else torch.", choices=BACKEND_CHOICES),
    ParamSpec("device", "cpu", "Device for inference: cpu, cuda or cuda:N."),
    ParamSpec("engine_cache_dir", "", "TensorRT engine cache directory ('' = next to the "
              "model)."),
    ParamSpec("fp16", False, "Build the TensorRT engine in FP16."),
    ParamSpec("build_only", False, "Build the TensorRT engine from the ONNX model, then exit "
              "(prepares a vehicle before it drives)."),
    # --- input
    ParamSpec("input.points_topic", "~/input/points", "LiDAR PointCloud2 topic (any layout)."),
    ParamSpec("input.intensity_fields", ["intensity", "reflectivity", "i"],
              "Point fields fed to the network as intensity, first present wins; none "
              "present gives zeros (reported in diagnostics)."),
    ParamSpec("input.intensity_scale", 1.0, "Multiplier applied to intensity before the "
              "network (e.g. 1/255 for 8-bit reflectivity when trained on 0..1)."),
    ParamSpec("input.min_range", 0.0, "Points closer than this (m, 3D) are not segmented "
              "(label 0); 0 disables."),
    ParamSpec("input.max_range", 0.0, "Points farther than this (m, 3D) are not segmented "
              "(label 0); 0 disables."),
    # --- cameras
    ParamSpec("cameras.names", None, "Camera names; per camera declare "
              "cameras.<name>.image_topic / info_topic / compressed / T_cam_lidar.",
              kind="string_array"),
    ParamSpec("cameras.calibration_file", "", "calibration.yaml (per camera K, size, "
              "T_cam_lidar) giving extrinsics; per-camera T_cam_lidar overrides it."),
    ParamSpec("cameras.timeout_s", 1.0, "A camera with no image for this long is reported "
              "stale in diagnostics (segmentation continues)."),
    ParamSpec("sync.slop_s", 0.05, "Max |image stamp - scan stamp| for an image to belong "
              "to a scan."),
    ParamSpec("sync.max_wait_s", 0.1, "Longest a scan waits for camera images before it is "
              "processed with whichever cameras arrived."),
    # --- output
    ParamSpec("output.segmentation_topic", "~/output/segmentation", "Input points + label "
              "(uint16) + confidence (float32)."),
    ParamSpec("output.visualization_topic", "~/output/visualization", "Input points + label "
              "+ confidence + rgb (class palette) for RViz."),
    ParamSpec("output.filtered_topic", "~/output/filtered", "Input cloud in its own format "
              "minus the classes in output.filter_classes."),
    ParamSpec("output.overlay_topic_prefix", "~/output/overlay", "Overlay images go to "
              "<prefix>/<camera>."),
    ParamSpec("output.publish_rgb", True, "Publish the visualization cloud (with rgb)."),
    ParamSpec("output.publish_filtered", True, "Publish the filtered cloud."),
    ParamSpec("output.filter_classes", ["road", "parking", "sidewalk", "other-ground",
                                        "terrain"],
              "Class names removed from the filtered cloud (e.g. ground for obstacle "
              "detection)."),
    ParamSpec("output.overlay", False, "Publish a debug overlay image per camera (labels "
              "projected on the synchronized image)."),
    ParamSpec("output.overlay_alpha", 0.7, "Overlay blend factor (0..1)."),
    ParamSpec("output.overlay_radius", 1, "Overlay dot radius in pixels."),
    # --- QoS and queueing
    ParamSpec("qos.input", "sensor_data", "Input QoS: sensor_data (best effort) or reliable.",
              choices=QOS_CHOICES),
    ParamSpec("qos.output", "reliable", "Output QoS: reliable (RViz, recorders) or "
              "sensor_data (best effort).", choices=QOS_CHOICES),
    ParamSpec("qos.depth", 5, "History depth of every subscription and publisher."),
    ParamSpec("queue.policy", "latest", "latest: the worker takes the newest scan, older "
              "waiting ones are dropped (counted); fifo: keep up to queue.depth.",
              choices=POLICIES),
    ParamSpec("queue.depth", 1, "Scans held for the worker with the fifo policy."),
    # --- diagnostics
    ParamSpec("diagnostics.period_s", 1.0, "Diagnostics publish period."),
    ParamSpec("diagnostics.warn_ms", 100.0, "p95 processing time above this is WARN."),
    ParamSpec("diagnostics.error_ms", 200.0, "p95 processing time above this is ERROR."),
    ParamSpec("diagnostics.window", 200, "Samples kept for latency percentiles."),
    ParamSpec("debug.publish_timings", False, "Publish per-scan timings (std_msgs/Float64, "
              "ms) on ~/debug/<stage>_ms for plotting: processing_time, inference, "
              "pipeline_latency."),
)


def camera_param_specs(name: str) -> tuple[ParamSpec, ...]:
    """The parameters declared for camera ``name`` once ``cameras.names`` is read."""
    p = f"cameras.{name}."
    return (
        ParamSpec(p + "image_topic", f"/camera/{name}/image_raw", "Image (or CompressedImage "
                  "with compressed=true) topic."),
        ParamSpec(p + "info_topic", f"/camera/{name}/camera_info", "CameraInfo topic "
                  "(intrinsics when the calibration file has none); '' disables."),
        ParamSpec(p + "compressed", False, "Subscribe to sensor_msgs/CompressedImage."),
        ParamSpec(p + "T_cam_lidar", None, "LiDAR->camera 4x4 extrinsic, row-major (16 "
                  "values); empty = from cameras.calibration_file.", kind="double_array"),
    )


@dataclass
class CameraConfig:
    """One camera's topics and (optional) calibration."""

    name: str
    image_topic: str
    info_topic: str
    compressed: bool
    T_cam_lidar: np.ndarray | None  # (4, 4) or None (then no overlay until known)


@dataclass
class NodeConfig:
    """Validated parameter values (see :data:`PARAM_SPECS` for meanings)."""

    model: str
    backend: str
    device: str
    engine_cache_dir: str
    fp16: bool
    build_only: bool
    points_topic: str
    intensity_fields: list[str]
    intensity_scale: float
    min_range: float
    max_range: float
    cameras: list[CameraConfig]
    calibration_file: str
    camera_timeout_s: float
    sync_slop_s: float
    sync_max_wait_s: float
    segmentation_topic: str
    visualization_topic: str
    filtered_topic: str
    overlay_topic_prefix: str
    publish_rgb: bool
    publish_filtered: bool
    filter_labels: list[int]
    overlay: bool
    overlay_alpha: float
    overlay_radius: int
    qos_input: str
    qos_output: str
    qos_depth: int
    queue_policy: str
    queue_depth: int
    diag_period_s: float
    diag_warn_ms: float
    diag_error_ms: float
    diag_window: int
    debug_timings: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


def _choice(values: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str:
    v = str(values[name])
    if v not in choices:
        raise ConfigError(f"parameter {name}={v!r} is not one of {', '.join(choices)}")
    return v


def _positive(values: Mapping[str, Any], name: str, allow_zero: bool = False) -> float:
    v = float(values[name])
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ConfigError(f"parameter {name}={v} must be {'>= 0' if allow_zero else '> 0'}")
    return v


def class_labels(names: list[str]) -> list[int]:
    """Class names (or numeric label ids as strings) -> label ids; unknown names raise."""
    out = []
    for n in names:
        s = str(n).strip()
        if s.isdigit():
            out.append(int(s))
        elif s in CLASS_NAMES:
            out.append(CLASS_NAMES.index(s) + 1)
        elif s == "unlabeled":
            out.append(0)
        else:
            raise ConfigError(
                f"output.filter_classes: unknown class {s!r} (known: unlabeled, "
                f"{', '.join(CLASS_NAMES)})"
            )
    return out


def parse_camera(name: str, values: Mapping[str, Any]) -> CameraConfig:
    """Validate one camera's parameters (``values`` keyed by full parameter name)."""
    p = f"cameras.{name}."
    T = values.get(p + "T_cam_lidar")
    T_arr = None
    if T is not None and len(T) > 0:
        if len(T) != 16:
            raise ConfigError(f"parameter {p}T_cam_lidar needs 16 values, got {len(T)}")
        T_arr = np.asarray(T, dtype=np.float64).reshape(4, 4)
        if not np.all(np.isfinite(T_arr)) or not np.allclose(T_arr[3], [0, 0, 0, 1]):
            raise ConfigError(f"parameter {p}T_cam_lidar is not a rigid 4x4 transform")
    topic = str(values.get(p + "image_topic", ""))
    if not topic:
        raise ConfigError(f"parameter {p}image_topic must not be empty")
    return CameraConfig(
        name=name,
        image_topic=topic,
        info_topic=str(values.get(p + "info_topic", "")),
        compressed=bool(values.get(p + "compressed", False)),
        T_cam_lidar=T_arr,
    )


def parse_config(values: Mapping[str, Any]) -> NodeConfig:
    """Check every value and build a :class:`NodeConfig`; raises :class:`ConfigError`."""
    v = {s.name: s.default for s in PARAM_SPECS}
    v.update({k: x for k, x in values.items() if x is not None})
    if not str(v["model"]):
        raise ConfigError("parameter model is empty: give an exported model dir or a .pt file")
    names = [str(n) for n in (v["cameras.names"] or [])]
    if len(set(names)) != len(names):
        raise ConfigError(f"parameter cameras.names has duplicates: {names}")
    for n in names:
        if not n or not n.replace("_", "").isalnum():
            raise ConfigError(f"camera name {n!r} must be alphanumeric/underscore")
    cameras = [parse_camera(n, v) for n in names]
    min_r = _positive(v, "input.min_range", allow_zero=True)
    max_r = _positive(v, "input.max_range", allow_zero=True)
    if max_r and min_r >= max_r:
        raise ConfigError(f"input.min_range {min_r} must be below input.max_range {max_r}")
    warn, err = _positive(v, "diagnostics.warn_ms"), _positive(v, "diagnostics.error_ms")
    if err < warn:
        raise ConfigError(f"diagnostics.error_ms {err} must be >= diagnostics.warn_ms {warn}")
    for k in ("qos.depth", "queue.depth", "diagnostics.window"):
        if int(v[k]) < 1:
            raise ConfigError(f"parameter {k}={v[k]} must be >= 1")
    alpha = float(v["output.overlay_alpha"])
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"parameter output.overlay_alpha={alpha} must be in [0, 1]")
    if not str(v["input.points_topic"]):
        raise ConfigError("parameter input.points_topic must not be empty")
    return NodeConfig(
        model=str(v["model"]),
        backend=_choice(v, "backend", BACKEND_CHOICES),
        device=str(v["device"]),
        engine_cache_dir=str(v["engine_cache_dir"]),
        fp16=bool(v["fp16"]),
        build_only=bool(v["build_only"]),
        points_topic=str(v["input.points_topic"]),
        intensity_fields=[str(x) for x in v["input.intensity_fields"]],
        intensity_scale=float(v["input.intensity_scale"]),
        min_range=min_r,
        max_range=max_r,
        cameras=cameras,
        calibration_file=str(v["cameras.calibration_file"]),
        camera_timeout_s=_positive(v, "cameras.timeout_s"),
        sync_slop_s=_positive(v, "sync.slop_s", allow_zero=True),
        sync_max_wait_s=_positive(v, "sync.max_wait_s", allow_zero=True),
        segmentation_topic=str(v["output.segmentation_topic"]),
        visualization_topic=str(v["output.visualization_topic"]),
        filtered_topic=str(v["output.filtered_topic"]),
        overlay_topic_prefix=str(v["output.overlay_topic_prefix"]).rstrip("/"),
        publish_rgb=bool(v["output.publish_rgb"]),
        publish_filtered=bool(v["output.publish_filtered"]),
        filter_labels=class_labels(list(v["output.filter_classes"] or [])),
        overlay=bool(v["output.overlay"]),
        overlay_alpha=alpha,
        overlay_radius=int(v["output.overlay_radius"]),
        qos_input=_choice(v, "qos.input", QOS_CHOICES),
        qos_output=_choice(v, "qos.output", QOS_CHOICES),
        qos_depth=int(v["qos.depth"]),
        queue_policy=_choice(v, "queue.policy", POLICIES),
        queue_depth=int(v["queue.depth"]),
        diag_period_s=_positive(v, "diagnostics.period_s"),
        diag_warn_ms=warn,
        diag_error_ms=err,
        diag_window=int(v["diagnostics.window"]),
        debug_timings=bool(v["debug.publish_timings"]),
    )
