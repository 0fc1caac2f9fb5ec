"""The model's sensor contract: the LiDARs a model was trained on, and a check of live scans
against them (no ROS, no torch).

Why: a student trained behind a 32-beam sensor at 1.73 m keeps producing labels behind a
64-beam one, a wider vertical field of view or a higher mounting, only worse ones, and
nothing in its output says so. The export records in ``model.json`` (``lidar_contract``)
the rig(s) of the training recipe (``data.rigs``, else the dataset's own rig: beams,
vertical field of view, mounting height and pitch, range), widened by the sensor
augmentation it trained with (beam subsampling lowers the ring count it has seen, mounting
jitter widens height, pitch and elevations). The node compares what each live scan shows
(its rings, from the ring field or the elevation comb; its vertical extent; the height and
tilt of the ground plane around the vehicle; its far range) with that envelope
(:class:`ContractGuard`), logs once and reports in ``/diagnostics`` when the sensor falls
outside it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xmodelkd_ros.rings import elevation_deg, ring_count

#: ``model.json`` key of the contract.
CONTRACT_KEY = "lidar_contract"
#: Tolerances of the check: fewer rings than trained below this share (upper beams often
#: see only sky), more above this share; degrees of elevation, metres of ground height,
#: degrees of ground tilt, share of range beyond the trained maximum.
RING_LOW, RING_HIGH = 0.75, 1.1
ELEVATION_TOL_DEG, HEIGHT_TOL_M, TILT_TOL_DEG, RANGE_TOL = 2.0, 0.25, 2.0, 1.1


def contract_from_provenance(provenance: dict[str, Any]) -> dict[str, Any] | None:
    """The contract of a checkpoint: its recipe's rigs widened by its sensor augmentation;
    None when the recipe names no rig and its dataset's rig is unknown (a bag, an old
    checkpoint without a recipe)."""
    from xmodelkd_ros.sim.rigs import RigError, rigs_of

    recipe = provenance.get("recipe")
    if not isinstance(recipe, dict):
        return None
    data, aug = recipe.get("data") or {}, recipe.get("augment") or {}
    names = list(data.get("rigs") or ())
    try:
        rigs = rigs_of(str(data.get("dataset", "synthetic")), names)
    except RigError:
        return None
    if not rigs:
        return None
    k = max(int(v) for v in aug.get("beam_subsample") or [1])
    dh, dp = float(aug.get("mount_height", 0.0)), float(aug.get("mount_pitch_deg", 0.0))
    beams = [r.beams for r in rigs]
    sensor_keys = ("beam_subsample", "ring_dropout", "range_dropout", "elevation_cap",
                   "elevation_cap_p", "mount_height", "mount_pitch_deg")  # fmt: skip
    return {
        "rigs": [r.to_dict() for r in rigs],
        "source": "data.rigs" if names else f"the {data.get('dataset')} dataset's rig",
        "rings": [max(1, min(beams) // k), max(beams)],
        "vertical_fov_deg": [
            min(r.fov_deg[0] for r in rigs) - dp,
            max(r.fov_deg[1] for r in rigs) + dp,
        ],
        "height_m": [min(r.height for r in rigs) - dh, max(r.height for r in rigs) + dh],
        "pitch_deg": [min(r.pitch_deg for r in rigs) - dp, max(r.pitch_deg for r in rigs) + dp],
        "max_range_m": max(r.max_range for r in rigs),
        "augment": {key: aug[key] for key in sensor_keys if key in aug},
    }


def _low_points(xyz: np.ndarray) -> np.ndarray:
    """Ground candidates: the lowest point (5th percentile of z) of each of 72 azimuth
    sectors x 6 range bands 3-21 m away that holds at least 5 points."""
    r = np.hypot(xyz[:, 0], xyz[:, 1])
    m = (r > 3.0) & (r < 21.0)
    sector = ((np.arctan2(xyz[m, 1], xyz[m, 0]) + np.pi) / (2 * np.pi) * 72).astype(np.int64)
    cell = np.minimum(sector, 71) * 6 + np.minimum(((r[m] - 3.0) / 3.0).astype(np.int64), 5)
    order = np.lexsort((xyz[m, 2], cell))  # by cell, then by height within it
    _, starts, counts = np.unique(cell[order], return_index=True, return_counts=True)
    ok = counts >= 5
    pick = order[starts[ok] + counts[ok] // 20]
    return xyz[m][pick].astype(np.float64)


def ground_plane(xyz: np.ndarray, seed: int = 0) -> tuple[float, float] | None:
    """(sensor height above the ground in m, ground tilt in degrees) without labels: the
    plane through the most ground candidates (:func:`_low_points`; within 10 cm) among 64
    three-point samples whose normal is within 20 degrees of the sensor's up axis, refitted
    to its inliers by least squares. Parked cars and walls also give low points, so the
    plane with the most support, not a fit through all, is the ground. None when fewer than
    12 candidates agree."""
    low = _low_points(xyz)
    if len(low) < 12:
        return None
    rng = np.random.default_rng(seed)
    best = np.zeros(len(low), bool)
    for _ in range(64):
        a, b, c = low[rng.choice(len(low), 3, replace=False)]
        n = np.cross(b - a, c - a)
        norm = np.linalg.norm(n)
        if norm < 1e-9 or abs(n[2]) / norm < np.cos(np.deg2rad(20)):
            continue
        inl = np.abs((low - a) @ (n / norm)) < 0.1
        if inl.sum() > best.sum():
            best = inl
    if best.sum() < 12:
        return None
    A = np.stack([low[best, 0], low[best, 1], np.ones(best.sum())], 1)
    (ga, gb, gc), *_ = np.linalg.lstsq(A, low[best, 2], rcond=None)
    tilt = float(np.degrees(np.arctan(np.hypot(ga, gb))))
    return float(-gc / np.sqrt(1 + ga * ga + gb * gb)), tilt


@dataclass
class Observation:
    """What one live scan shows of its sensor."""

    rings: int | None
    elevation_deg: tuple[float, float]  # 0.5th and 99.5th percentiles
    ground: tuple[float, float] | None  # (height m, tilt deg)
    range_m: float  # 99th percentile of the distance


def observe(xyz: np.ndarray, ring: np.ndarray | None = None,
            ground_xyz: np.ndarray | None = None) -> Observation:  # fmt: skip
    """:class:`Observation` of a scan (``xyz`` in the LiDAR frame; ``ring``: its ring field;
    ``ground_xyz``: the same points where the network sees them, when the node moved them
    to the trained mount: the ground is fitted there, the sensor's own rings, elevations
    and ranges in its frame)."""
    el = elevation_deg(xyz)
    rng = np.linalg.norm(xyz, axis=1)
    return Observation(
        rings=ring_count(xyz, ring),
        elevation_deg=(float(np.percentile(el, 0.5)), float(np.percentile(el, 99.5))),
        ground=ground_plane(xyz if ground_xyz is None else ground_xyz),
        range_m=float(np.percentile(rng, 99)),
    )


def outside(contract: dict[str, Any], obs: Observation) -> list[str]:
    """Why ``obs`` lies outside ``contract`` (empty: inside), one phrase per reason."""
    out = []
    lo, hi = contract["rings"]
    if obs.rings is not None and not lo * RING_LOW <= obs.rings <= hi * RING_HIGH:
        out.append(f"{obs.rings} rings (trained on {lo}..{hi})")
    f_lo, f_hi = contract["vertical_fov_deg"]
    e_lo, e_hi = obs.elevation_deg
    if e_lo < f_lo - ELEVATION_TOL_DEG or e_hi > f_hi + ELEVATION_TOL_DEG:
        out.append(f"elevations {e_lo:+.1f}..{e_hi:+.1f} deg (trained on {f_lo:+.1f}..{f_hi:+.1f})")
    if obs.ground is not None:
        h, tilt = obs.ground
        h_lo, h_hi = contract["height_m"]
        if not h_lo - HEIGHT_TOL_M <= h <= h_hi + HEIGHT_TOL_M:
            out.append(f"mounted {h:.2f} m above the ground (trained on {h_lo:.2f}..{h_hi:.2f})")
        p_max = max(abs(p) for p in contract["pitch_deg"])
        if tilt > p_max + TILT_TOL_DEG:
            out.append(f"ground tilted {tilt:.1f} deg (trained on <= {p_max:.1f})")
    if obs.range_m > contract["max_range_m"] * RANGE_TOL:
        out.append(f"ranges to {obs.range_m:.0f} m (trained on <= {contract['max_range_m']:.0f})")
    return out


@dataclass
class ContractCheck:
    """What :meth:`ContractGuard.apply` found for one scan (None: not checked)."""

    outside: bool
    reasons: list[str] = field(default_factory=list)
    first: bool = False  # the first scan found outside: the caller logs its one WARN

    @property
    def message(self) -> str:
        return "LiDAR outside the model's sensor contract: " + "; ".join(self.reasons)


class ContractGuard:
    """Checks every ``every``-th scan (the first included) against the model's contract and
    counts the scans outside it; thread-safe. No contract: nothing is checked."""

    def __init__(self, contract: dict[str, Any] | None, every: int = 10) -> None:
        self.contract = contract
        self.every = max(1, int(every))
        self.scans_seen = self.scans_checked = self.scans_outside = 0
        self.last_reasons: list[str] = []
        self._lock = threading.Lock()

    @classmethod
    def for_segmenter(cls, segmenter: Any, every: int = 10) -> ContractGuard:
        """The guard of a loaded model: its ``model.json`` contract (a ``.pt``: none)."""
        meta = getattr(segmenter, "metadata", None)
        return cls(getattr(meta, "lidar_contract", None), every)

    def _turn(self) -> bool:
        """Count one scan; True when it is to be checked."""
        with self._lock:
            turn = self.scans_seen % self.every == 0
            self.scans_seen += 1
        return turn and self.contract is not None

    def apply(self, xyz: np.ndarray, ring: np.ndarray | None = None) -> ContractCheck | None:
        """Check one scan (when its turn comes); None when it is not checked."""
        return self._check(xyz, ring) if self._turn() else None

    def _check(self, xyz: np.ndarray, ring: np.ndarray | None,
               ground_xyz: np.ndarray | None = None) -> ContractCheck | None:  # fmt: skip
        if len(xyz) < 100 or self.contract is None:
            return None
        reasons = outside(self.contract, observe(xyz, ring, ground_xyz))
        with self._lock:
            self.scans_checked += 1
            first = bool(reasons) and self.scans_outside == 0
            self.scans_outside += int(bool(reasons))
            if reasons:
                self.last_reasons = reasons
        return ContractCheck(bool(reasons), reasons, first)

    def apply_cloud(self, cloud: Any, xyz: np.ndarray | None = None) -> ContractCheck | None:
        """:meth:`apply` on a decoded cloud (its valid points and ``ring`` field if any);
        ``xyz``: its points as the network sees them, when moved (mounting alignment): the
        ground is checked there, the sensor itself on the cloud's points."""
        if not self._turn():
            return None
        ring = cloud.column("ring") if cloud.field("ring") is not None else None
        return self._check(cloud.xyz, ring, xyz)

    def report(self) -> tuple[bool, str, dict[str, str]]:
        """(warn, message, diagnostics key/values) of the scans checked so far."""
        values = {
            "sensor_contract": "none in model.json" if self.contract is None else "checked",
            "sensor_scans_checked": str(self.scans_checked),
            "sensor_scans_outside": str(self.scans_outside),
            "sensor_outside_reasons": "; ".join(self.last_reasons) or "-",
        }
        if not self.scans_outside:
            return False, "", values
        msg = (f"LiDAR outside the model's sensor contract in {self.scans_outside} of "
               f"{self.scans_checked} checked scans ({'; '.join(self.last_reasons)})")  # fmt: skip
        return True, msg, values
