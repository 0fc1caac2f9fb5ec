"""Declaring the node's parameters on an rclpy node and applying runtime changes.

Why apart from the node's wiring: this is the one place that turns
:data:`~xmodelkd_ros.node.params.PARAM_SPECS` into ROS descriptors (description,
range, ``read_only``), keeps the values the node runs with, re-validates a runtime set
as a whole (a refused set names the parameter and the reason, and never takes the
node down) and warns about parameters given for the node that it never declares.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.parameter import Parameter

from xmodelkd_ros.node.params import (
    PARAM_SPECS,
    NodeConfig,
    ParamSpec,
    camera_param_specs,
    parse_config,
    unknown_parameters,
)
from xmodelkd_ros.node.spec import check_name
from xmodelkd_ros.node.vehicle import lidar_param_specs

_INT64_MAX = 2**63 - 1


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ParameterDescriptor of ``spec``: description, choices, range, read_only."""
    desc = spec.description + (f" One of: {', '.join(spec.choices)}." if spec.choices else "")
    d = ParameterDescriptor(description=desc, read_only=spec.read_only)
    if spec.choices:
        d.additional_constraints = f"one of: {', '.join(spec.choices)}"
    bounded = spec.minimum is not None or spec.maximum is not None
    if spec.type_name == "double" and bounded:
        d.floating_point_range = [FloatingPointRange(
            from_value=float("-inf") if spec.minimum is None else float(spec.minimum),
            to_value=float("inf") if spec.maximum is None else float(spec.maximum))]
    elif spec.type_name == "int" and bounded:
        d.integer_range = [IntegerRange(
            from_value=-_INT64_MAX if spec.minimum is None else int(spec.minimum),
            to_value=_INT64_MAX if spec.maximum is None else int(spec.maximum))]
    return d


class NodeParameters:
    """Declares every parameter on ``node``; :attr:`config` is the validated result.

    Raises :class:`~xmodelkd_ros.node.params.ConfigError` (or rclpy's
    ParameterException for a wrong type or range) when the given values cannot run.
    ``on_change`` receives the new :class:`NodeConfig` after an accepted runtime set.
    """

    def __init__(self, node: Any, on_change: Callable[[NodeConfig], None]) -> None:
        self._node = node
        self._on_change = on_change
        self._specs: dict[str, ParamSpec] = {}
        # Every value given for this node (params files matched to its name, -p): rclpy
        # keeps them in this attribute and offers no public accessor.
        self._overrides = dict(getattr(node, "_parameter_overrides", {}) or {})
        self._values = {s.name: self._declare(s) for s in PARAM_SPECS}
        for key, kind, specs in (("cameras.names", "camera", camera_param_specs),
                                 ("lidars.names", "LiDAR", lidar_param_specs)):  # fmt: skip
            for name in self._values.get(key) or []:
                check_name(kind, str(name))  # before it becomes part of parameter names
                for s in specs(str(name)):
                    self._values[s.name] = self._declare(s)
        self.config = parse_config(self._values)
        node.add_on_set_parameters_callback(self._on_set)
        unknown = unknown_parameters(self._overrides, self._specs)
        if unknown:
            node.get_logger().warning(
                f"ignoring unknown parameter(s) {', '.join(unknown)}: not declared by this "
                "node (misspelled? see config/segment.yaml)"
            )

    def _declare(self, spec: ParamSpec) -> Any:
        self._specs[spec.name] = spec
        d = descriptor(spec)
        if spec.default is None:
            ptype = {"string_array": Parameter.Type.STRING_ARRAY,
                     "double_array": Parameter.Type.DOUBLE_ARRAY}[spec.kind]  # fmt: skip
            value = self._node.declare_parameter(spec.name, ptype, d).value
        else:
            value = self._node.declare_parameter(spec.name, spec.default, d).value
        return self._empty_list(spec, value, spec.name in self._overrides)

    @staticmethod
    def _empty_list(spec: ParamSpec, value: Any, given: bool) -> Any:
        # An empty YAML list has no type: rcl hands it over as NOT_SET (value None).
        # Given for a list parameter, it means "empty", never "the default".
        return [] if value is None and given and spec.type_name.endswith("_array") else value

    def _on_set(self, params: list[Any]) -> SetParametersResult:
        """Validate a runtime change as a whole, then apply it (read_only ones never get
        here: rclpy refuses them with the reason first)."""
        values = dict(self._values)
        for p in params:
            spec = self._specs.get(p.name)
            if spec is not None:
                values[p.name] = self._empty_list(spec, p.value, True)
        try:
            cfg = parse_config(values)
            self._on_change(cfg)
        except Exception as exc:  # a refused set must never take the node down
            return SetParametersResult(successful=False, reason=str(exc))
        self._values, self.config = values, cfg
        return SetParametersResult(successful=True)
