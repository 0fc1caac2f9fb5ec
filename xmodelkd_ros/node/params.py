"""The segmentation node's parameters: names, defaults, ranges, descriptions, validation (no ROS).

Why a separate module: the parameter table is the node's user interface on a vehicle.
Keeping it as data lets the node declare every parameter with its description, range
and ``read_only`` flag (so ``ros2 param describe`` explains it and ``ros2 param set``
refuses what cannot change while running), lets the JSON schema and the table in
docs/parameters.md be generated from it (:mod:`xmodelkd_ros.node.schema`), lets
``config/segment.yaml`` be checked against it in tests, and lets bad values fail at
startup with one sentence naming the parameter instead of a traceback from deep inside the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from xmodelkd_ros.labels import CLASS_NAMES
from xmodelkd_ros.node.slot import POLICIES
from xmodelkd_ros.node.spec import ConfigError, ParamSpec, check_name, choice, number
from xmodelkd_ros.node.spec import settable as _runtime
from xmodelkd_ros.node.vehicle import (
    EGO_BOX_SPECS,
    T_VEHICLE_LIDAR_DOC,
    EgoBox,
    LidarInput,
    parse_ego_box,
    parse_lidars,
    parse_transform,
)
from xmodelkd_ros.runtime import BACKENDS

QOS_CHOICES = ("sensor_data", "reliable")
#: What the node does when a scan's intensity lies outside the model's trained range.
INTENSITY_POLICIES = ("warn", "normalize", "off")


# Global parameters, in the order they appear in config/segment.yaml.
PARAM_SPECS: tuple[ParamSpec, ...] = (
    # --- model and backend
    ParamSpec("model", "", "Exported model dir (model.json + model.onnx) or a student .pt "
              "checkpoint (torch backend). Required."),
    ParamSpec("backend", "auto", "Inference backend: auto picks the fastest available for "
              "the device: on a GPU TensorRT, else ONNX Runtime with its CUDA provider, else "
              "torch; on CPU ONNX Runtime with its custom-op library (fused graph), else "
              "torch with its fused C++ kernels, else ONNX Runtime's standard-ops graph "
              "(docs/performance.md).", choices=BACKENDS),
    ParamSpec("device", "cpu", "Device for inference: cpu, cuda or cuda:N."),
    ParamSpec("engine_cache_dir", "", "TensorRT engine cache directory ('' = next to the "
              "model)."),
    ParamSpec("fp16", False, "Build the TensorRT engine in FP16."),
    ParamSpec("max_points", 0, "Largest scan (points) the TensorRT optimization profile "
              "accepts; 0 = the model's max_points (model.json).", minimum=0),
    ParamSpec("inference_threads", 0, "CPU threads for inference (torch with its fused "
              "kernels, or ONNX Runtime's intra-op pool), shared by all LiDARs; 0 = all "
              "cores. Set it to leave cores to the driver and the rest of the stack. The "
              "node's threads sleep rather than spin while they wait (OpenMP's passive wait "
              "policy unless OMP_WAIT_POLICY is set; ONNX Runtime without spinning), so a "
              "busy CPU slows it in proportion, not in spikes (docs/performance.md).",
              minimum=0),
    ParamSpec("build_only", False, "Build the TensorRT engine from the ONNX model, then exit "
              "(prepares a vehicle before it drives)."),
    # --- input
    ParamSpec("input.points_topic", "~/input/points", "LiDAR PointCloud2 topic (any layout) "
              "when lidars.names is empty (one LiDAR, outputs on output.*_topic)."),
    ParamSpec("input.T_vehicle_lidar", None, T_VEHICLE_LIDAR_DOC + " For "
              "input.points_topic; each named LiDAR has its own.", kind="double_array"),
    _runtime("input.intensity_fields", ["intensity", "reflectivity", "i"],
             "Point fields fed to the network as intensity, first present wins; none "
             "present gives zeros (reported in diagnostics)."),
    _runtime("input.intensity_scale", 1.0, "Multiplier applied to intensity before the "
             "network (e.g. 1/255 for 8-bit reflectivity when trained on 0..1).",
             minimum=0.0),
    _runtime("input.intensity_policy", "warn", "Intensity outside the model's trained range "
             "(model.json): warn (once in the log, counted in diagnostics), normalize "
             "(rescale the observed range into the model's) or off.",
             choices=INTENSITY_POLICIES),
    _runtime("input.min_range", 0.0, "Points closer than this (m, 3D) are not segmented "
             "(label 0); 0 disables.", minimum=0.0),
    _runtime("input.max_range", 0.0, "Points farther than this (m, 3D) are not segmented "
             "(label 0); 0 disables.", minimum=0.0),
    ParamSpec("input.align_mount", False, "Re-express every scan at the mount the model was "
              "trained on (height and pitch from model.json's lidar_contract) using the "
              "LiDAR's T_vehicle_lidar, whose vehicle frame must have z = 0 on the ground "
              "(base_footprint): a LiDAR mounted higher, lower or tilted then looks to the "
              "network like the one it learned from (docs/cross-sensor.md). Needs "
              "T_vehicle_lidar for every LiDAR and an exported model with a lidar_contract."),
    _runtime("input.timeout_s", 1.0, "Diagnostics WARN when the input topic has publishers "
             "but no cloud arrived for this long (lost in DDS, QoS mismatch).",
             minimum=0.01),
    # --- several LiDARs, the vehicle frame
    ParamSpec("lidars.names", None, "LiDARs segmented by this one process and model (input.* "
              "applies to each); per LiDAR declare lidars.<name>.points_topic / "
              "segmentation_topic / visualization_topic / filtered_topic / T_vehicle_lidar. "
              "Empty = one LiDAR on input.points_topic.", kind="string_array"),
    *EGO_BOX_SPECS,
    # --- cameras
    ParamSpec("cameras.names", None, "Camera names; per camera declare "
              "cameras.<name>.image_topic / info_topic / compressed / T_cam_lidar.",
              kind="string_array"),
    ParamSpec("cameras.lidar", "", "The LiDAR (of lidars.names) whose scans meet the cameras "
              "for overlays, T_cam_lidar relative to it; '' = the first."),
    ParamSpec("cameras.calibration_file", "", "calibration.yaml (per camera K, size, "
              "T_cam_lidar) giving extrinsics; per-camera T_cam_lidar overrides it."),
    ParamSpec("cameras.timeout_s", 1.0, "A camera with no image for this long is reported "
              "stale in diagnostics (segmentation continues).", minimum=0.01),
    ParamSpec("sync.slop_s", 0.05, "Max |image stamp - scan stamp| for an image to belong "
              "to a scan.", minimum=0.0, maximum=10.0),
    ParamSpec("sync.max_wait_s", 0.1, "Longest a segmented scan waits for camera images "
              "before its overlay is skipped (the labeled cloud never waits).",
              minimum=0.0, maximum=10.0),
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
    _runtime("output.filter_classes", ["road", "parking", "sidewalk", "other-ground",
                                       "terrain"],
             "Class names removed from the filtered cloud (e.g. ground for obstacle "
             "detection); [] removes nothing."),
    ParamSpec("output.overlay", False, "Publish a debug overlay image per camera (labels "
              "projected on the synchronized image)."),
    _runtime("output.overlay_alpha", 0.7, "Overlay blend factor (0..1).", minimum=0.0,
             maximum=1.0),
    _runtime("output.overlay_radius", 1, "Overlay dot radius in pixels.", minimum=0,
             maximum=20),
    # --- QoS and queueing
    ParamSpec("qos.input", "sensor_data", "Input QoS: sensor_data (best effort) or reliable.",
              choices=QOS_CHOICES),
    ParamSpec("qos.output", "reliable", "Output QoS: reliable (RViz, recorders) or "
              "sensor_data (best effort).", choices=QOS_CHOICES),
    ParamSpec("qos.depth", 5, "History depth of every subscription and publisher.",
              minimum=1, maximum=1000),
    ParamSpec("queue.policy", "latest", "latest: the worker takes the newest scan, older "
              "waiting ones are dropped (counted); fifo: keep up to queue.depth. One queue "
              "per LiDAR, served in turn.", choices=POLICIES),
    ParamSpec("queue.depth", 1, "Scans held per LiDAR for the worker with the fifo policy.",
              minimum=1, maximum=1000),
    # --- diagnostics
    ParamSpec("diagnostics.period_s", 1.0, "Diagnostics publish period.", minimum=0.01),
    _runtime("diagnostics.warn_ms", 100.0, "p95 processing time above this is WARN.",
             minimum=0.001),
    _runtime("diagnostics.error_ms", 200.0, "p95 processing time above this is ERROR.",
             minimum=0.001),
    ParamSpec("diagnostics.window", 200, "Samples kept for latency percentiles.", minimum=1,
              maximum=100_000),
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


def unknown_parameters(given: Iterable[str], declared: Iterable[str]) -> list[str]:
    """Names set for the node (params file, ``-p``) that it never declares: misspellings.

    ROS' own parameters (``use_sim_time``, ``qos_overrides.*``) are not ours to judge.
    """
    known = set(declared)
    return sorted(n for n in given if n not in known and n != "use_sim_time"
                  and not n.startswith("qos_overrides."))  # fmt: skip


def params_file_args(args: Sequence[str]) -> list[str]:
    """The ``--params-file`` paths inside the ``--ros-args`` sections of ``args``."""
    out, inside, it = [], False, iter(args)
    for a in it:
        if a == "--ros-args":
            inside = True
        elif a == "--":
            inside = False
        elif inside and a == "--params-file":
            out.append(next(it, ""))
    return out


def check_params_file(path: str) -> None:
    """Raise :class:`ConfigError` (one line) when ``path`` is not a readable ROS params
    file: missing, not YAML, or not ``<node>: {ros__parameters: {...}}`` at the top.

    rcl's own parser would stop ``rclpy.init`` with a multi-line error naming C sources.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"params file {path!r} does not exist")
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"params file {path} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"params file {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(f"params file {path} must map node names to ros__parameters "
                          "(e.g. '/**: {ros__parameters: {model: ...}}')")  # fmt: skip
    for node, body in doc.items():
        if not isinstance(body, dict) or not isinstance(body.get("ros__parameters"), dict):
            raise ConfigError(f"params file {path}: {node!r} has no ros__parameters mapping "
                              "(e.g. '/**: {ros__parameters: {model: ...}}')")  # fmt: skip


def check_params_files(args: Sequence[str]) -> None:
    """:func:`check_params_file` for every ``--params-file`` in the command line."""
    for path in params_file_args(args):
        check_params_file(path)


# ----------------------------------------------------------------------------- config


@dataclass
class CameraConfig:
    """One camera's topics and (optional) calibration."""

    name: str
    image_topic: str
    info_topic: str
    compressed: bool
    T_cam_lidar: np.ndarray | None  # (4, 4) or None (then no overlay until known)


@dataclass(frozen=True)
class ModelConfig:
    """Top-level parameters: which model runs where."""

    path: str
    backend: str
    device: str
    engine_cache_dir: str
    fp16: bool
    max_points: int
    inference_threads: int
    build_only: bool


@dataclass(frozen=True)
class InputConfig:
    """``input.*``"""

    points_topic: str
    intensity_fields: list[str]
    intensity_scale: float
    intensity_policy: str
    min_range: float
    max_range: float
    timeout_s: float
    align_mount: bool = False


@dataclass(frozen=True)
class CamerasConfig:
    """``cameras.*`` and ``sync.*`` (the synchronizer only serves the cameras)."""

    cameras: list[CameraConfig]
    lidar: str  # the LiDAR (LidarInput.name) whose scans meet the cameras
    calibration_file: str
    timeout_s: float
    slop_s: float
    max_wait_s: float


@dataclass(frozen=True)
class OutputConfig:
    """``output.*``"""

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


@dataclass(frozen=True)
class QueueConfig:
    """``qos.*`` and ``queue.*``: how scans travel to and through the node."""

    qos_input: str
    qos_output: str
    qos_depth: int
    policy: str
    depth: int


@dataclass(frozen=True)
class DiagnosticsConfig:
    """``diagnostics.*`` and ``debug.*``"""

    period_s: float
    warn_ms: float
    error_ms: float
    window: int
    publish_timings: bool


@dataclass(frozen=True)
class NodeConfig:
    """Validated parameter values grouped by prefix (see :data:`PARAM_SPECS`)."""

    model: ModelConfig
    input: InputConfig
    cameras: CamerasConfig
    output: OutputConfig
    queue: QueueConfig
    diagnostics: DiagnosticsConfig
    lidars: list[LidarInput]  # one per LiDAR; the single-topic form has one named ""
    ego_box: EgoBox


# ----------------------------------------------------------------------------- validation


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


def _lidars(v: Mapping[str, Any]) -> tuple[list[LidarInput], str]:
    """The LiDARs (named, or the single-topic form) and the one the cameras pair with;
    with ``input.align_mount`` each needs its pose."""
    lidars = parse_lidars(v, LidarInput(
        "", str(v["input.points_topic"]), str(v["output.segmentation_topic"]),
        str(v["output.visualization_topic"]), str(v["output.filtered_topic"]),
        parse_transform("input.T_vehicle_lidar", v["input.T_vehicle_lidar"])))  # fmt: skip
    cam_lidar = str(v["cameras.lidar"]) or lidars[0].name
    if cam_lidar not in {lidar.name for lidar in lidars}:
        raise ConfigError(f"parameter cameras.lidar={cam_lidar!r} is not one of lidars.names")
    unposed = [lidar.name or "input" for lidar in lidars if lidar.T_vehicle_lidar is None]
    if v["input.align_mount"] and unposed:
        raise ConfigError(f"input.align_mount needs T_vehicle_lidar for every LiDAR; none for "
                          f"{', '.join(unposed)}")  # fmt: skip
    return lidars, cam_lidar


def _camera_names(v: Mapping[str, Any]) -> list[str]:
    names = [str(x) for x in (v["cameras.names"] or [])]
    if len(set(names)) != len(names):
        raise ConfigError(f"parameter cameras.names has duplicates: {names}")
    for cam in names:
        check_name("camera", cam)
    return names


def parse_config(values: Mapping[str, Any]) -> NodeConfig:
    """Check every value and build a :class:`NodeConfig`; raises :class:`ConfigError`.

    A value of None means 'not given' (the default applies); an empty list is empty.
    """
    v = {s.name: s.default for s in PARAM_SPECS}
    v.update({k: x for k, x in values.items() if x is not None})
    n = {s.name: number(v, s) for s in PARAM_SPECS if s.type_name in ("int", "double")}
    if not str(v["model"]):
        raise ConfigError("parameter model is empty: give an exported model dir or a .pt file")
    names = _camera_names(v)
    min_r, max_r = n["input.min_range"], n["input.max_range"]
    if max_r and min_r >= max_r:
        raise ConfigError(f"input.min_range {min_r} must be below input.max_range {max_r}")
    warn, err = n["diagnostics.warn_ms"], n["diagnostics.error_ms"]
    if err < warn:
        raise ConfigError(f"diagnostics.error_ms {err} must be >= diagnostics.warn_ms {warn}")
    for k in ("input.points_topic", "output.segmentation_topic"):
        if not str(v[k]):
            raise ConfigError(f"parameter {k} must not be empty")
    lidars, cam_lidar = _lidars(v)
    return NodeConfig(
        model=ModelConfig(
            path=str(v["model"]),
            backend=choice(v, "backend", BACKENDS),
            device=str(v["device"]),
            engine_cache_dir=str(v["engine_cache_dir"]),
            fp16=bool(v["fp16"]),
            max_points=int(n["max_points"]),
            inference_threads=int(n["inference_threads"]),
            build_only=bool(v["build_only"]),
        ),
        input=InputConfig(
            points_topic=str(v["input.points_topic"]),
            intensity_fields=[str(x) for x in v["input.intensity_fields"]],
            intensity_scale=n["input.intensity_scale"],
            intensity_policy=choice(v, "input.intensity_policy", INTENSITY_POLICIES),
            min_range=min_r,
            max_range=max_r,
            timeout_s=n["input.timeout_s"],
            align_mount=bool(v["input.align_mount"]),
        ),
        cameras=CamerasConfig(
            cameras=[parse_camera(cam, v) for cam in names],
            lidar=cam_lidar,
            calibration_file=str(v["cameras.calibration_file"]),
            timeout_s=n["cameras.timeout_s"],
            slop_s=n["sync.slop_s"],
            max_wait_s=n["sync.max_wait_s"],
        ),
        output=OutputConfig(
            segmentation_topic=str(v["output.segmentation_topic"]),
            visualization_topic=str(v["output.visualization_topic"]),
            filtered_topic=str(v["output.filtered_topic"]),
            overlay_topic_prefix=str(v["output.overlay_topic_prefix"]).rstrip("/"),
            publish_rgb=bool(v["output.publish_rgb"]),
            publish_filtered=bool(v["output.publish_filtered"]),
            filter_labels=class_labels(list(v["output.filter_classes"])),
            overlay=bool(v["output.overlay"]),
            overlay_alpha=n["output.overlay_alpha"],
            overlay_radius=int(n["output.overlay_radius"]),
        ),
        queue=QueueConfig(
            qos_input=choice(v, "qos.input", QOS_CHOICES),
            qos_output=choice(v, "qos.output", QOS_CHOICES),
            qos_depth=int(n["qos.depth"]),
            policy=choice(v, "queue.policy", POLICIES),
            depth=int(n["queue.depth"]),
        ),
        diagnostics=DiagnosticsConfig(
            period_s=n["diagnostics.period_s"],
            warn_ms=warn,
            error_ms=err,
            window=int(n["diagnostics.window"]),
            publish_timings=bool(v["debug.publish_timings"]),
        ),
        lidars=lidars,
        ego_box=parse_ego_box(n | {"ego_box.enabled": v["ego_box.enabled"]}),
    )
