"""What the node does to one scan, without ROS: load the model, decode, guard intensity,
segment.

Why apart from :mod:`xmodelkd_ros.node.segment_node`: the node file wires topics, timers
and threads; this is the pipeline those wires feed (as Autoware's lidar_frnet keeps its
node and its preprocess -> inference -> postprocess library apart). It runs against the real
:class:`~xmodelkd_ros.runtime.Segmenter` and is testable without rclpy; message classes
are injected, so tests pass the stand-ins of :mod:`xmodelkd_ros.msgs`.

Intensity is guarded because a network trained on one intensity scale silently degrades
on another (a driver sending 0..255 into a model trained on 0..1 looks like a working
node with bad labels). The model records its trained range (``model.json``
``intensity_range``); :class:`IntensityGuard` compares every scan with it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmodelkd_ros.msgs import DecodedCloud, decode_cloud
from xmodelkd_ros.node.params import INTENSITY_POLICIES, InputConfig, ModelConfig
from xmodelkd_ros.node.spec import ConfigError
from xmodelkd_ros.node.vehicle import EgoBox
from xmodelkd_ros.runtime.contract import ContractCheck, ContractGuard
from xmodelkd_ros.runtime.mount import alignment, apply_alignment, trained_mount

#: Fraction of the model's intensity span an input may exceed before it counts as outside
#: (float rounding and drivers that clip a little above their nominal maximum).
INTENSITY_TOLERANCE = 0.05


class StartupError(RuntimeError):
    """Anything that keeps the node from starting; reported as one line."""


def load_segmenter(cfg: ModelConfig) -> Any:
    """The Segmenter for ``cfg.path``: an export dir (any backend) or a ``.pt`` (torch).

    ``cfg.max_points`` > 0 overrides the TensorRT optimization profile's maximum
    (``Segmenter.from_model_dir(max_points=...)``); 0 leaves it to ``model.json``.
    ``cfg.inference_threads`` > 0 bounds the CPU threads inference uses (both backends).
    Raises :class:`StartupError` with a one-sentence reason for every known failure.
    """
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise StartupError(f"model {path} does not exist (parameter model)")
    if not path.is_dir() and cfg.backend not in ("auto", "torch"):
        raise StartupError(
            f"backend {cfg.backend} needs an exported model dir but {path} is a "
            "checkpoint: export it (python -m xmodelkd_ros.export) or use backend torch"
        )
    from xmodelkd_ros.runtime import ModelLoadError, Segmenter

    kw: dict[str, Any] = {"max_points": cfg.max_points} if cfg.max_points > 0 else {}
    try:
        if path.is_dir():
            return Segmenter.from_model_dir(
                path, backend=cfg.backend, device=cfg.device,
                engine_cache=cfg.engine_cache_dir or None, fp16=cfg.fp16,
                intra_op_threads=cfg.inference_threads, **kw,
            )  # fmt: skip
        return Segmenter.from_checkpoint(
            path, backend="torch", device=cfg.device, threads=cfg.inference_threads
        )
    except TypeError as exc:
        if kw and "max_points" in str(exc):
            raise StartupError(f"max_points: the runtime cannot take it ({exc})") from None
        raise
    except (ModelLoadError, ValueError, OSError) as exc:
        raise StartupError(f"cannot load model {path}: {exc}") from None


def model_intensity_range(segmenter: Any) -> tuple[float, float] | None:
    """The intensity range the model was trained on (``model.json``), or None if unknown."""
    rng = getattr(getattr(segmenter, "metadata", None), "intensity_range", None)
    if rng is None:
        return None
    lo, hi = (float(x) for x in rng)
    return (lo, hi) if np.isfinite(lo) and np.isfinite(hi) and hi > lo else None


# ----------------------------------------------------------------------------- intensity


@dataclass
class IntensityCheck:
    """What :meth:`IntensityGuard.apply` found for one scan."""

    outside: bool  # this scan's intensity left the model's range (by more than the tolerance)
    observed: tuple[float, float] | None  # this scan's (min, max); None when empty
    normalized: bool  # values were rescaled into the model's range
    first: bool = False  # the first scan found outside: the caller logs its one WARN


class IntensityGuard:
    """Compares each scan's intensity with the model's trained range; optionally rescales.

    ``warn``: values pass unchanged; scans outside are counted (the node logs once and
    reports it in diagnostics). ``normalize``: once a scan falls outside, the envelope of
    every intensity seen so far (min, max; it only grows, so the mapping settles after a
    few scans instead of jumping with each scan's content) is mapped linearly onto the
    model's range (clamped while that envelope is a single value). ``off``: nothing is
    checked. No model range (an old ``model.json`` or a ``.pt``): nothing can be checked.
    """

    def __init__(self, model_range: tuple[float, float] | None, policy: str = "warn") -> None:
        if policy not in INTENSITY_POLICIES:
            raise ValueError(f"intensity policy must be one of {INTENSITY_POLICIES}")
        self.model_range = model_range
        self.policy = policy
        self.scans_outside = 0
        self.envelope: tuple[float, float] | None = None
        self.last_observed: tuple[float, float] | None = None
        self._lock = threading.Lock()

    def is_outside(self, lo: float, hi: float) -> bool:
        """True when [lo, hi] leaves the model's range by more than the tolerance."""
        if self.model_range is None:
            return False
        m_lo, m_hi = self.model_range
        tol = INTENSITY_TOLERANCE * (m_hi - m_lo)
        return lo < m_lo - tol or hi > m_hi + tol

    def apply(self, intensity: np.ndarray) -> IntensityCheck:
        """Check ``intensity`` (float32, modified in place under ``normalize``)."""
        if self.policy == "off" or self.model_range is None or intensity.size == 0:
            return IntensityCheck(False, None, False)
        finite = intensity[np.isfinite(intensity)]
        if finite.size == 0:
            return IntensityCheck(False, None, False)
        lo, hi = float(finite.min()), float(finite.max())
        outside = self.is_outside(lo, hi)
        with self._lock:
            self.last_observed = (lo, hi)
            env = self.envelope
            self.envelope = (lo, hi) if env is None else (min(env[0], lo), max(env[1], hi))
            first = outside and self.scans_outside == 0
            self.scans_outside += int(outside)
            env = self.envelope
        normalized = self.policy == "normalize" and self.is_outside(*env)
        if normalized:
            m_lo, m_hi = self.model_range
            if env[1] > env[0]:
                intensity -= env[0]
                intensity *= (m_hi - m_lo) / (env[1] - env[0])
                intensity += m_lo
            else:  # one constant value seen so far: no span to map, clamp it
                np.clip(intensity, m_lo, m_hi, out=intensity)
        return IntensityCheck(outside, (lo, hi), normalized, first)


# ----------------------------------------------------------------------------- scan


@dataclass
class ProcessedScan:
    """One segmented scan: the decoded input, per-point outputs and stage timings (s).

    ``ego`` marks the valid points inside the ego box (None: the box is off); they carry
    label 0 and confidence 0 and never reach the network.
    """

    cloud: DecodedCloud
    labels: np.ndarray
    confidence: np.ndarray
    intensity: IntensityCheck
    timings: dict[str, float] = field(default_factory=dict)
    ego: np.ndarray | None = None
    sensor: ContractCheck | None = None  # the model's sensor contract (None: not checked)

    @property
    def ego_points(self) -> int:
        """Points of this scan inside the ego box."""
        return 0 if self.ego is None else int(np.count_nonzero(self.ego))


class ScanProcessor:
    """decode -> range filter, ego box -> intensity guard -> segment, for one LiDAR's scans.

    ``input_cfg`` and ``ego_box`` may be replaced between scans (runtime parameter
    changes): each scan reads them once at its start. ``T_vehicle_lidar`` (None =
    identity) places the LiDAR's points in the vehicle frame, where the ego box is stated;
    with ``input.align_mount`` it also moves the network's copy of each scan to the model's
    trained mount (:mod:`xmodelkd_ros.runtime.mount`; the sensor contract then checks that
    copy, so a wrong calibration shows there as a ground off the trained height or tilt).
    """

    def __init__(self, segmenter: Any, input_cfg: InputConfig, ego_box: EgoBox | None = None,
                 T_vehicle_lidar: np.ndarray | None = None) -> None:  # fmt: skip
        self.segmenter = segmenter
        self.input_cfg = input_cfg
        self.ego_box = ego_box
        self.T_vehicle_lidar = T_vehicle_lidar
        self.intensity = IntensityGuard(model_intensity_range(segmenter),
                                        input_cfg.intensity_policy)  # fmt: skip
        self.intensity_found: bool | None = None
        self.contract = ContractGuard.for_segmenter(segmenter)
        self.align = self._alignment() if input_cfg.align_mount else None

    def _alignment(self) -> np.ndarray:
        """The 4x4 moving this LiDAR's points to the model's trained mount."""
        mount = trained_mount(self.contract.contract)
        if mount is None:
            raise ConfigError("input.align_mount: the model states no trained mount (no "
                              "lidar_contract in model.json; export the checkpoint)")  # fmt: skip
        if self.T_vehicle_lidar is None:
            raise ConfigError("input.align_mount needs this LiDAR's T_vehicle_lidar")
        return alignment(self.T_vehicle_lidar, *mount)

    def set_input_config(self, cfg: InputConfig, ego_box: EgoBox | None = None) -> None:
        """Apply changed ``input.*`` (and ``ego_box.*``) parameters from the next scan on."""
        self.input_cfg = cfg
        self.intensity.policy = cfg.intensity_policy
        if ego_box is not None:
            self.ego_box = ego_box

    def _select(self, xyz: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(points fed to the network or None for all, points inside the ego box or None)."""
        cfg, box = self.input_cfg, self.ego_box
        sel = None
        if cfg.max_range > 0 or cfg.min_range > 0:
            r2 = np.einsum("ij,ij->i", xyz, xyz)
            sel = r2 >= cfg.min_range**2
            if cfg.max_range > 0:
                sel &= r2 <= cfg.max_range**2
        ego = None if box is None else box.inside(xyz, self.T_vehicle_lidar)
        if ego is not None:
            sel = ~ego if sel is None else sel & ~ego
        return sel, ego

    def segment(self, msg: Any) -> ProcessedScan:
        """Decode and segment ``msg`` (raises CloudFormatError for a malformed cloud)."""
        cfg = self.input_cfg
        t0 = time.perf_counter()
        cloud = decode_cloud(msg, intensity_field=cfg.intensity_fields)
        self.intensity_found = cloud.intensity_found
        m = cloud.num_valid
        pts = np.empty((m, 4), dtype=np.float32)
        pts[:, :3] = cloud.xyz
        pts[:, 3] = cloud.intensity
        if cfg.intensity_scale != 1.0:
            pts[:, 3] *= cfg.intensity_scale
        sel, ego = self._select(pts[:, :3])  # ranges and the ego box: the sensor's own frame
        if self.align is not None:
            pts = apply_alignment(pts, self.align)
            sensor = self.contract.apply_cloud(cloud, pts[:, :3])
        else:
            sensor = self.contract.apply_cloud(cloud)
        if sel is not None:
            pts = pts[sel]
        check = self.intensity.apply(pts[:, 3])
        t_decode = time.perf_counter() - t0

        res = self.segmenter.segment(pts)
        if sel is None:
            labels, conf = res.labels, res.confidence
        else:
            labels = np.zeros(m, np.uint16)
            conf = np.zeros(m, np.float32)
            labels[sel] = res.labels
            conf[sel] = res.confidence
        timings = {k: res.timings.get(k, 0.0) for k in ("voxelize", "maps", "inference",
                                                          "postprocess")}  # fmt: skip
        timings["decode"] = t_decode
        return ProcessedScan(cloud, labels, conf, check, timings, ego, sensor)


#: Stands in for "inside the ego box" in the labels handed to the filtered cloud's encoder
#: only: no model has this many classes, so no real label collides with it.
EGO_FILTER_LABEL = 0xFFFF


def filter_labels(scan: ProcessedScan, remove: list[int]) -> tuple[np.ndarray, list[int]]:
    """Labels and the label ids to remove for the filtered cloud: ``remove``, plus the
    points inside the ego box (whatever ``output.filter_classes`` says about label 0)."""
    if scan.ego is None or not scan.ego.any():
        return scan.labels, list(remove)
    labels = scan.labels.copy()
    labels[scan.ego] = EGO_FILTER_LABEL
    return labels, [*remove, EGO_FILTER_LABEL]


def warm_up(segmenter: Any, model: str) -> None:
    """One small scan through the model: the first call is slow (allocations, lazy init)
    and would otherwise show up as a dropped burst; also proves the weights run."""
    rng = np.random.default_rng(0)
    pts = np.zeros((512, 4), np.float32)
    pts[:, :3] = rng.uniform(-10, 10, (512, 3))
    try:
        segmenter.segment(pts)
    except Exception as exc:
        raise StartupError(f"model {model} fails on a test scan: {exc}") from None
