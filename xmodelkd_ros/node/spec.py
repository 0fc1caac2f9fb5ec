"""What one node parameter is (:class:`ParamSpec`) and how a value is checked (no ROS).

Why its own module: the parameter table (:mod:`xmodelkd_ros.node.params`) and the
vehicle's geometry (:mod:`xmodelkd_ros.node.vehicle`: the LiDARs, their transforms, the
ego box) both declare parameters and validate them with the same rules and the same
one-line :class:`ConfigError`, and neither should import the other to get them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


class ConfigError(ValueError):
    """A parameter value the node cannot run with (message names the parameter)."""


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter. ``default`` None + ``kind`` means 'declared by type only'.

    ``minimum`` / ``maximum`` become the descriptor's range (ROS refuses values outside
    it) and the schema's bounds. ``read_only`` parameters are fixed once the node runs
    (topics, QoS, the model): a runtime set is refused with the reason. The others are
    re-validated and applied by the node's on-set callback.
    """

    name: str
    default: Any
    description: str
    kind: str = ""  # for defaults whose type cannot be inferred: "string_array", "double_array"
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    read_only: bool = True

    @property
    def type_name(self) -> str:
        """``bool`` | ``int`` | ``double`` | ``string`` | ``string_array`` | ``double_array``."""
        if self.kind:
            return self.kind
        d = self.default
        if isinstance(d, bool):
            return "bool"
        if isinstance(d, int):
            return "int"
        if isinstance(d, float):
            return "double"
        if isinstance(d, list):
            return "string_array"
        return "string"


def settable(name: str, default: Any, description: str, **kw: Any) -> ParamSpec:
    """A parameter the node applies while running (read per scan)."""
    return ParamSpec(name, default, description, read_only=False, **kw)


def choice(values: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str:
    """``values[name]`` as a string, when it is one of ``choices``."""
    v = str(values[name])
    if v not in choices:
        raise ConfigError(f"parameter {name}={v!r} is not one of {', '.join(choices)}")
    return v


def number(values: Mapping[str, Any], spec: ParamSpec) -> float:
    """A finite number inside the spec's range (what the ROS descriptor enforces too)."""
    try:
        v = float(values[spec.name])
    except (TypeError, ValueError):
        raise ConfigError(f"parameter {spec.name}={values[spec.name]!r} is not a number") from None
    if not np.isfinite(v):
        raise ConfigError(f"parameter {spec.name}={v} must be finite")
    if spec.minimum is not None and v < spec.minimum:
        raise ConfigError(f"parameter {spec.name}={v:g} must be >= {spec.minimum:g}")
    if spec.maximum is not None and v > spec.maximum:
        raise ConfigError(f"parameter {spec.name}={v:g} must be <= {spec.maximum:g}")
    return v


def check_name(kind: str, name: str) -> None:
    """A camera or LiDAR name becomes part of parameter and topic names: letters, digits
    and underscores only."""
    if not name or not name.replace("_", "").isalnum():
        raise ConfigError(f"{kind} name {name!r} must be alphanumeric/underscore")
