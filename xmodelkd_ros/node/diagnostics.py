"""The node's /diagnostics content as a pure function of a statistics snapshot (no ROS).

Why: what counts as WARN or ERROR (slow inference, clouds lost in DDS, a publisher whose
clouds never arrive, intensity outside the trained range, a dead camera) is the node's
health contract with the vehicle's monitoring. Building it from a plain snapshot lets
the tests state each rule directly, without a middleware, a model or a clock; the node
only gathers the snapshot and converts :class:`Status` to ``DiagnosticStatus``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from xmodelkd_ros.node.params import NodeConfig
from xmodelkd_ros.sync import OrderStats, SyncStats

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


@dataclass(frozen=True)
class Status:
    """One ``DiagnosticStatus`` (level, name, message, hardware_id, key/values)."""

    level: int
    name: str
    message: str
    hardware_id: str
    values: dict[str, str]


@dataclass
class StatsSnapshot:
    """Everything the diagnostics report, gathered at one instant by the node."""

    node_name: str
    input_topic: str  # resolved names
    camera_topics: dict[str, str]
    backend: str
    latency_ms: dict[str, tuple[float, float]]  # stage -> (p50, p95)
    input_rate_hz: float
    output_rate_hz: float
    counts: dict[str, int]  # received, processed, malformed, errors, empty
    dropped_stale: int
    queue_high_water: int
    order: OrderStats
    sync: SyncStats
    input_publishers: int
    since_last_scan_s: float | None  # None: no scan ever arrived
    messages_lost: int  # total reported by the rmw's message-lost event
    messages_lost_recent: int  # since the previous report
    incompatible_qos: int
    incompatible_qos_policy: str
    qos_events: str  # which QoS events the rmw delivers ("message_lost, incompatible_qos")
    intensity_found: bool | None
    intensity_model_range: tuple[float, float] | None
    intensity_observed: tuple[float, float] | None
    intensity_scans_outside: int
    intensity_normalized: bool
    rss_mb: float
    last_error: str
    camera_calibrated: dict[str, bool] = field(default_factory=dict)
    overlays_published: dict[str, int] = field(default_factory=dict)
    overlays_skipped: dict[str, int] = field(default_factory=dict)
    camera_notes: dict[str, str] = field(default_factory=dict)
    sensor_contract: Any = None  # runtime.contract.ContractGuard (None: not checked)


def _fmt_range(r: tuple[float, float] | None) -> str:
    return "unknown" if r is None else f"[{r[0]:g}, {r[1]:g}]"


def segmentation_status(s: StatsSnapshot, cfg: NodeConfig) -> Status:
    """The segmentation status: latency vs thresholds, input health, drops, intensity."""
    d, c = cfg.diagnostics, s.counts
    level, msgs = OK, []
    p95 = s.latency_ms.get("total", (math.nan, math.nan))[1]
    if not math.isnan(p95) and p95 > d.error_ms:
        level = ERROR
        msgs.append(f"p95 processing {p95:.0f} ms > error {d.error_ms:.0f} ms")
    elif not math.isnan(p95) and p95 > d.warn_ms:
        level = WARN
        msgs.append(f"p95 processing {p95:.0f} ms > warn {d.warn_ms:.0f} ms")
    silent = s.since_last_scan_s is None or s.since_last_scan_s > cfg.input.timeout_s
    if s.input_publishers > 0 and silent:
        level = max(level, WARN)
        since = "ever" if s.since_last_scan_s is None else f"for {s.since_last_scan_s:.1f} s"
        msgs.append(f"input has {s.input_publishers} publisher(s) but no cloud arrived "
                    f"{since} (lost in DDS? QoS?)")  # fmt: skip
    elif c["received"] == 0 or s.input_rate_hz == 0.0:
        level = max(level, WARN)
        msgs.append("no input scans")
    if s.incompatible_qos:
        level = ERROR
        msgs.append(f"{s.incompatible_qos} publisher(s) with incompatible QoS "
                    f"({s.incompatible_qos_policy}): their clouds never arrive")  # fmt: skip
    if s.messages_lost_recent:
        level = max(level, WARN)
        msgs.append(f"{s.messages_lost_recent} clouds lost in DDS since the last report")
    if s.dropped_stale:
        msgs.append(f"{s.dropped_stale} stale scans dropped")
    if s.intensity_found is False:  # the network was trained with intensity
        level = max(level, WARN)
        msgs.append(f"no intensity field ({', '.join(cfg.input.intensity_fields)}): zeros used")
    if s.intensity_scans_outside:
        outside = (f"intensity {_fmt_range(s.intensity_observed)} outside the model's "
                   f"{_fmt_range(s.intensity_model_range)} in {s.intensity_scans_outside} "
                   "scans")  # fmt: skip
        if s.intensity_normalized:
            msgs.append(outside + ": normalized")
        else:
            level = max(level, WARN)
            msgs.append(outside + " (set input.intensity_scale or intensity_policy normalize)")
    if c["malformed"] or c["errors"]:
        level = max(level, WARN)
        msgs.append(f"{c['malformed']} malformed, {c['errors']} failed")
    kv: dict[str, Any] = {
        "backend": s.backend,
        "model": cfg.model.path,
        "device": cfg.model.device,
        "input_rate_hz": f"{s.input_rate_hz:.2f}",
        "output_rate_hz": f"{s.output_rate_hz:.2f}",
        "input_publishers": s.input_publishers,
        "seconds_since_last_scan": "never" if s.since_last_scan_s is None
        else f"{s.since_last_scan_s:.2f}",
        "scans_received": c["received"],
        "scans_processed": c["processed"],
        "scans_dropped_stale": s.dropped_stale,
        "scans_dropped_sync": s.order.dropped_late + s.order.duplicate,
        "scans_sync_expired": s.sync.scans_expired,
        "scans_sync_overflow": s.sync.scans_forced_overflow,
        "messages_lost": s.messages_lost,
        "incompatible_qos": s.incompatible_qos,
        "qos_events": s.qos_events,
        "malformed_clouds": c["malformed"],
        "processing_errors": c["errors"],
        "empty_scans": c["empty"],
        "queue_policy": cfg.queue.policy,
        "queue_high_water": s.queue_high_water,
        "intensity_field_found": s.intensity_found,
        "intensity_policy": cfg.input.intensity_policy,
        "intensity_model_range": _fmt_range(s.intensity_model_range),
        "intensity_observed": _fmt_range(s.intensity_observed),
        "intensity_scans_outside": s.intensity_scans_outside,
        "rss_mb": f"{s.rss_mb:.1f}",
        "last_error": s.last_error,
    }
    for stage, (p50, p95_) in s.latency_ms.items():
        kv[f"{stage}_p50_ms"] = f"{p50:.2f}"
        kv[f"{stage}_p95_ms"] = f"{p95_:.2f}"
    return Status(level, f"{s.node_name}: segmentation", "; ".join(msgs) or "ok",
                  s.input_topic, {k: str(v) for k, v in kv.items()})  # fmt: skip


def camera_status(s: StatsSnapshot, cfg: NodeConfig, name: str) -> Status:
    """One camera: receiving, alive, matched to scans; why it has no overlay."""
    cs = s.sync.cameras[name]
    level, msg = OK, "ok"
    if cs.received == 0:
        level, msg = WARN, "no images received"
    elif not cs.alive:
        level, msg = WARN, f"stale (> {cfg.cameras.timeout_s} s)"
    note = s.camera_notes.get(name)
    if note and level == OK and cfg.output.overlay:
        level, msg = WARN, note
    kv = {
        "image_topic": s.camera_topics[name],
        "alive": cs.alive,
        "received": cs.received,
        "matched": cs.matched,
        "missed": cs.missed,
        "last_stamp_ns": cs.last_stamp_ns,
        "calibrated": s.camera_calibrated.get(name, False),
        "overlays_published": s.overlays_published.get(name, 0),
        "overlays_skipped": s.overlays_skipped.get(name, 0),
    }
    return Status(level, f"{s.node_name}: camera {name}", msg, s.camera_topics[name],
                  {k: str(v) for k, v in kv.items()})  # fmt: skip


def sensor_status(s: StatsSnapshot) -> list[Status]:
    """The LiDAR against the model's sensor contract (runtime/contract.py); none unchecked."""
    if s.sensor_contract is None:
        return []
    warn, msg, values = s.sensor_contract.report()
    return [Status(WARN if warn else OK, f"{s.node_name}: sensor contract", msg or "ok",
                   s.input_topic, values)]  # fmt: skip


def diagnostics(s: StatsSnapshot, cfg: NodeConfig) -> list[Status]:
    """One status for segmentation, the sensor contract's, then one per configured camera."""
    return [segmentation_status(s, cfg), *sensor_status(s)] + [
        camera_status(s, cfg, c.name) for c in cfg.cameras.cameras]  # fmt: skip
