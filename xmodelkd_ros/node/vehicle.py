"""The vehicle's LiDARs and the geometry stated in the vehicle frame (no ROS).

Why: a vehicle carries several LiDARs, and one node process serves them all with one
model (:mod:`xmodelkd_ros.node.segment_node`). Each LiDAR is named
(``lidars.names``); its topics default to ``~/<name>/input/points`` and
``~/<name>/output/*``. What concerns the vehicle rather than one sensor, the ego box
that removes the car's own body (roof rack, mirrors, the sensor mounts) from the
outputs, is stated once in the vehicle frame (``base_link``); each LiDAR's
``T_vehicle_lidar`` maps its points there. A LiDAR without a transform is taken to be
mounted at the vehicle frame's origin (identity): with the ego box off (the default) the
node then behaves exactly as with a single topic.

The launch file takes the LiDARs as one argument and may read the transforms from a
calibration file instead of parameters (:func:`launch_parameters`):
``lidars: {<name>: {T_vehicle_lidar: [16 values, row-major]}}`` or
``{<name>: {xyz: [x, y, z], rpy: [roll, pitch, yaw]}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from xmodelkd_ros.geometry import xyz_rpy_transform
from xmodelkd_ros.node.spec import ConfigError, ParamSpec, check_name, settable

#: ``T_vehicle_lidar``'s description (per LiDAR and for the single-topic form).
T_VEHICLE_LIDAR_DOC = ("LiDAR -> vehicle frame (base_link) transform: 16 values (4x4, "
                       "row-major) or 6 (x, y, z in m, roll, pitch, yaw in rad); empty = "
                       "identity (the LiDAR at the vehicle frame's origin).")  # fmt: skip

#: The ego box's corners by default: a passenger car in its base_link frame (origin at
#: the rear axle on the ground, x forward, z up), about 5 x 2 x 2 m.
EGO_BOX_DEFAULT = {"x": (-1.0, 4.0), "y": (-1.0, 1.0), "z": (-0.3, 2.0)}

EGO_BOX_SPECS: tuple[ParamSpec, ...] = (
    settable("ego_box.enabled", False, "Remove the vehicle's own body: points inside the "
             "box (vehicle frame, see T_vehicle_lidar) are not segmented (label 0, "
             "confidence 0), are left out of the filtered cloud and are counted in "
             "/diagnostics."),
    *(settable(f"ego_box.{end}_{axis}", EGO_BOX_DEFAULT[axis][i],
               f"Ego box {'lower' if i == 0 else 'upper'} {axis} bound in the vehicle frame "
               f"(m); each min below its max.")
      for axis in "xyz" for i, end in enumerate(("min", "max"))),
)  # fmt: skip


def lidar_param_specs(name: str) -> tuple[ParamSpec, ...]:
    """The parameters declared for LiDAR ``name`` once ``lidars.names`` is read."""
    p = f"lidars.{name}."
    return (
        ParamSpec(p + "points_topic", f"~/{name}/input/points", "PointCloud2 topic of this "
                  "LiDAR (any layout)."),
        ParamSpec(p + "segmentation_topic", f"~/{name}/output/segmentation", "This LiDAR's "
                  "points + label + confidence."),
        ParamSpec(p + "visualization_topic", f"~/{name}/output/visualization", "This LiDAR's "
                  "labeled points + rgb for RViz (output.publish_rgb)."),
        ParamSpec(p + "filtered_topic", f"~/{name}/output/filtered", "This LiDAR's cloud "
                  "minus output.filter_classes and the ego box (output.publish_filtered)."),
        ParamSpec(p + "T_vehicle_lidar", None, T_VEHICLE_LIDAR_DOC, kind="double_array"),
    )


@dataclass(frozen=True)
class LidarInput:
    """One LiDAR the node segments: its topics and its mounting on the vehicle."""

    name: str  # "" for the single-topic form (input.points_topic, output.*_topic)
    points_topic: str
    segmentation_topic: str
    visualization_topic: str
    filtered_topic: str
    T_vehicle_lidar: np.ndarray | None  # (4, 4), None = identity

    @property
    def label(self) -> str:
        """How logs and diagnostics name it."""
        return self.name or "input"


@dataclass(frozen=True)
class EgoBox:
    """An axis-aligned box in the vehicle frame; ``lo`` / ``hi`` are (x, y, z) bounds."""

    enabled: bool
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def inside(self, xyz: np.ndarray, T_vehicle_lidar: np.ndarray | None) -> np.ndarray | None:
        """Which of ``xyz`` (N, 3, LiDAR frame) lie inside the box (bounds included);
        None when the box is off."""
        if not self.enabled:
            return None
        pts = np.asarray(xyz, dtype=np.float32)
        if T_vehicle_lidar is not None:
            T = np.asarray(T_vehicle_lidar, dtype=np.float32)
            pts = pts @ T[:3, :3].T + T[:3, 3]
        lo, hi = np.asarray(self.lo, np.float32), np.asarray(self.hi, np.float32)
        return np.all((pts >= lo) & (pts <= hi), axis=1)

    def describe(self) -> str:
        """One line for diagnostics and logs."""
        if not self.enabled:
            return "off"
        bounds = zip("xyz", self.lo, self.hi, strict=True)
        return " ".join(f"{a} [{lo:g}, {hi:g}]" for a, lo, hi in bounds)


def parse_ego_box(values: Mapping[str, Any]) -> EgoBox:
    """``ego_box.*`` (numbers already checked finite) -> :class:`EgoBox`; each min must lie
    below its max, also while the box is off (a later ``enabled: true`` must not fail)."""
    lo, hi = [], []
    for axis in "xyz":
        a, b = float(values[f"ego_box.min_{axis}"]), float(values[f"ego_box.max_{axis}"])
        if not a < b:
            raise ConfigError(f"ego_box.min_{axis} {a:g} must be below ego_box.max_{axis} {b:g}")
        lo.append(a)
        hi.append(b)
    return EgoBox(bool(values["ego_box.enabled"]), (lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2]))


def parse_transform(name: str, value: Any) -> np.ndarray | None:
    """A ``T_vehicle_lidar`` value: 16 values (row-major 4x4 rigid transform) or 6 (x, y,
    z, roll, pitch, yaw); empty or None -> None (identity)."""
    if value is None or len(value) == 0:
        return None
    try:
        v = np.asarray([float(x) for x in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"parameter {name} must hold numbers") from None
    if not np.all(np.isfinite(v)):
        raise ConfigError(f"parameter {name} must be finite")
    if v.size == 6:
        return xyz_rpy_transform(v[:3], v[3:])
    if v.size != 16:
        raise ConfigError(f"parameter {name} needs 16 values (4x4) or 6 (x y z roll pitch "
                          f"yaw), got {v.size}")  # fmt: skip
    T = v.reshape(4, 4)
    R = T[:3, :3]
    if (not np.allclose(T[3], [0, 0, 0, 1]) or not np.allclose(R @ R.T, np.eye(3), atol=1e-3)
            or np.linalg.det(R) <= 0):  # fmt: skip
        raise ConfigError(f"parameter {name} is not a rigid 4x4 transform (row-major)")
    return T


def parse_lidars(values: Mapping[str, Any], single: LidarInput) -> list[LidarInput]:
    """The LiDARs named in ``lidars.names`` (each with its ``lidars.<name>.*``); without
    names, ``single`` (the single-topic form)."""
    names = [str(x) for x in (values.get("lidars.names") or [])]
    if not names:
        return [single]
    if len(set(names)) != len(names):
        raise ConfigError(f"parameter lidars.names has duplicates: {names}")
    out = []
    for name in names:
        check_name("LiDAR", name)
        p = f"lidars.{name}."
        topics = {s.name[len(p):]: str(values.get(s.name) or s.default)
                  for s in lidar_param_specs(name) if s.name.endswith("_topic")}  # fmt: skip
        out.append(LidarInput(name=name, **topics,
                              T_vehicle_lidar=parse_transform(p + "T_vehicle_lidar",
                                                              values.get(p + "T_vehicle_lidar"))))
    outputs = [t for lidar in out for t in (lidar.segmentation_topic, lidar.visualization_topic,
                                            lidar.filtered_topic)]  # fmt: skip
    clash = sorted({t for t in outputs if outputs.count(t) > 1})
    if clash:
        raise ConfigError(f"lidars: two LiDARs publish on {', '.join(clash)}")
    return out


def lidar_calibration(path: str | Path) -> dict[str, list[float]]:
    """LiDAR name -> ``T_vehicle_lidar`` (16 values, row-major) from a calibration YAML
    (see the module doc); every problem one :class:`ConfigError` line."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"LiDAR calibration {path} cannot be read: "
                          f"{str(exc).splitlines()[0]}") from None  # fmt: skip
    lidars = doc.get("lidars") if isinstance(doc, dict) else None
    if not isinstance(lidars, dict) or not lidars:
        raise ConfigError(f"LiDAR calibration {path} has no 'lidars: {{<name>: ...}}' mapping")
    out = {}
    for name, entry in lidars.items():
        where = f"{path}: lidars.{name}"
        check_name("LiDAR", str(name))
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must map T_vehicle_lidar or xyz + rpy")
        if "T_vehicle_lidar" in entry:
            T = parse_transform(where + ".T_vehicle_lidar", entry["T_vehicle_lidar"])
        elif "xyz" in entry and "rpy" in entry:
            xyz, rpy = entry["xyz"], entry["rpy"]
            if not (isinstance(xyz, list) and isinstance(rpy, list) and len(xyz) == len(rpy) == 3):
                raise ConfigError(f"{where}: xyz and rpy need 3 values each")
            T = parse_transform(where, [*xyz, *rpy])
        else:
            raise ConfigError(f"{where} must give T_vehicle_lidar or xyz + rpy")
        out[str(name)] = [float(x) for x in (np.eye(4) if T is None else T).ravel()]
    return out


def launch_parameters(lidars: str, calibration: str = "") -> dict[str, Any]:
    """The node parameters for the launch file's ``lidars`` (``NAME=TOPIC,NAME=TOPIC``;
    a name alone keeps its default topic) and ``lidar_calibration`` (a file read by
    :func:`lidar_calibration`) arguments. Without names the calibration file must hold
    exactly one LiDAR: it gives ``input.T_vehicle_lidar`` of the single-topic form."""
    out: dict[str, Any] = {}
    names = []
    for entry in (e.strip() for e in lidars.split(",")):
        if not entry:
            continue
        name, _, topic = (x.strip() for x in entry.partition("="))
        check_name("LiDAR", name)
        if name in names:
            raise ConfigError(f"lidars: {name!r} is named twice")
        names.append(name)
        if topic:
            out[f"lidars.{name}.points_topic"] = topic
    if names:
        out["lidars.names"] = names
    if not calibration:
        return out
    transforms = lidar_calibration(calibration)
    if not names:
        if len(transforms) != 1:
            raise ConfigError(f"{calibration} holds {len(transforms)} LiDARs: name the ones "
                              "this node segments with lidars:=NAME=TOPIC,...")  # fmt: skip
        out["input.T_vehicle_lidar"] = next(iter(transforms.values()))
        return out
    missing = [n for n in names if n not in transforms]
    if missing:
        raise ConfigError(f"{calibration} has no transform for LiDAR(s) {', '.join(missing)}")
    for name in names:
        out[f"lidars.{name}.T_vehicle_lidar"] = transforms[name]
    return out
