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
from xmodelkd_ros.runtime.contract import ContractCheck, ContractGuard

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
    """One segmented scan: the decoded input, per-point outputs and stage timings (s)."""

    cloud: DecodedCloud
    labels: np.ndarray
    confidence: np.ndarray
    intensity: IntensityCheck
    timings: dict[str, float] = field(default_factory=dict)
    sensor: ContractCheck | None = None  # the model's sensor contract (None: not checked)


class ScanProcessor:
    """decode -> range filter -> intensity guard -> segment, for one scan.

    ``input_cfg`` may be replaced between scans (runtime parameter changes): each scan
    reads it once at its start.
    """

    def __init__(self, segmenter: Any, input_cfg: InputConfig) -> None:
        self.segmenter = segmenter
        self.input_cfg = input_cfg
        self.intensity = IntensityGuard(model_intensity_range(segmenter),
                                        input_cfg.intensity_policy)  # fmt: skip
        self.intensity_found: bool | None = None
        self.contract = ContractGuard.for_segmenter(segmenter)

    def set_input_config(self, cfg: InputConfig) -> None:
        """Apply changed ``input.*`` parameters from the next scan on."""
        self.input_cfg = cfg
        self.intensity.policy = cfg.intensity_policy

    def segment(self, msg: Any) -> ProcessedScan:
        """Decode and segment ``msg`` (raises CloudFormatError for a malformed cloud)."""
        cfg = self.input_cfg
        t0 = time.perf_counter()
        cloud = decode_cloud(msg, intensity_field=cfg.intensity_fields)
        self.intensity_found = cloud.intensity_found
        sensor = self.contract.apply_cloud(cloud)
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
        return ProcessedScan(cloud, labels, conf, check, timings, sensor)


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
