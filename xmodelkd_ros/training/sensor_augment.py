"""Sensor augmentation: training scans that look as if another LiDAR, or another mounting,
had recorded them.

Why: a student trained on one rig is deployed behind others (fewer or more beams, another
vertical field of view, another height or pitch). These operations show training the
variations a change of sensor brings, each off by default:

* beam subsampling (keep every k-th ring, k drawn per scan, random phase): a 32-beam scan
  becomes a 16-beam one over the same field of view;
* ring dropout (drop whole rings at random): irregular vertical spacing, fewer beams;
* an elevation cap (with probability ``elevation_cap_p`` every point above an elevation
  drawn per scan from ``elevation_cap`` degrees is dropped): the narrower upper field of
  view of another sensor (an HDL-64E sees nothing above +2 degrees, a 32-beam rig up to
  +10.7), so walls and trees without their upper parts are still walls and trees;
* range-dependent point dropout (drop probability rising linearly with range to
  ``range_dropout`` at ``range_dropout_at`` metres): the sparser far field of a sensor
  with fewer beams or less power;
* mounting jitter (sensor height and pitch, uniform per scan): a rigid transform of the
  scan into the frame of a sensor mounted higher / lower or tilted.

Rings come from the points when the reader delivers them (column 4: simulator, nuScenes),
else from the elevation comb (:func:`xmodelkd_ros.rings.point_rings`). The drops run
before the point-pixel correspondences are computed (they remove points, so the indices
stay right); the mounting transform runs with the other point augmentations after them
(it moves points, which never breaks an index). All randomness comes from the generator
``prepare_sample`` hands in, itself a pure function of (seed, stage, epoch, index).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xmodelkd_ros.rings import point_rings
from xmodelkd_ros.runtime.mount import alignment, apply_alignment


def drops_points(cfg: Any) -> bool:
    """Whether any point-dropping option of ``cfg`` (an ``AugmentConfig``) is on."""
    return (
        any(k > 1 for k in cfg.beam_subsample)
        or cfg.ring_dropout > 0
        or cfg.range_dropout > 0
        or caps_elevation(cfg)
    )


def caps_elevation(cfg: Any) -> bool:
    """Whether the elevation cap of ``cfg`` is on."""
    return len(cfg.elevation_cap) == 2 and cfg.elevation_cap_p > 0


def moves_sensor(cfg: Any) -> bool:
    """Whether the mounting jitter of ``cfg`` is on."""
    return cfg.mount_height > 0 or cfg.mount_pitch_deg > 0


def sensor_active(cfg: Any) -> bool:
    """Whether any sensor augmentation of ``cfg`` is on (else no random draw is made)."""
    return drops_points(cfg) or moves_sensor(cfg)


def ring_keep(ring: np.ndarray, subsample: int, dropout: float, rng: np.random.Generator
              ) -> np.ndarray:  # fmt: skip
    """(N,) bool: points on the rings kept by subsampling (every ``subsample``-th ring from
    a random phase) and ``dropout`` (each remaining ring dropped with that probability; if
    every ring would go, none is dropped)."""
    keep = np.ones(len(ring), bool)
    if len(ring) == 0:
        return keep
    if subsample > 1:
        keep &= ring % subsample == rng.integers(subsample)
    if dropout > 0:
        rings = np.unique(ring[keep])
        dropped = rings[rng.random(len(rings)) < dropout]
        if len(dropped) < len(rings):
            keep &= ~np.isin(ring, dropped)
    return keep


def range_keep(xyz: np.ndarray, dropout: float, at: float, rng: np.random.Generator
               ) -> np.ndarray:  # fmt: skip
    """(N,) bool: each point kept with probability ``1 - dropout * min(r / at, 1)``
    (``r``: its distance from the sensor)."""
    r = np.linalg.norm(np.asarray(xyz, np.float64), axis=1)
    return rng.random(len(r)) >= dropout * np.minimum(r / at, 1.0)


def elevation_keep(xyz: np.ndarray, cap: tuple[float, float], p: float,
                   rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """(N,) bool: with probability ``p`` the points at or below an elevation (degrees,
    seen from the sensor) drawn from ``U(cap[0], cap[1])``; else every point."""
    if rng.random() >= p:
        return np.ones(len(xyz), bool)
    top = rng.uniform(cap[0], cap[1])
    xyz = np.asarray(xyz, np.float64)
    elevation = np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))
    return elevation <= top


def sensor_keep(points: np.ndarray, cfg: Any, rng: np.random.Generator) -> np.ndarray:
    """(N,) bool: which points survive beam subsampling, ring dropout, range dropout and
    the elevation cap."""
    keep = np.ones(len(points), bool)
    k = int(rng.choice(cfg.beam_subsample)) if any(v > 1 for v in cfg.beam_subsample) else 1
    if k > 1 or cfg.ring_dropout > 0:
        keep &= ring_keep(point_rings(points), k, cfg.ring_dropout, rng)
    if cfg.range_dropout > 0:
        keep &= range_keep(points[:, :3], cfg.range_dropout, cfg.range_dropout_at, rng)
    if caps_elevation(cfg):
        lo, hi = cfg.elevation_cap
        keep &= elevation_keep(points[:, :3], (lo, hi), cfg.elevation_cap_p, rng)
    return keep


def mount_jitter(points: np.ndarray, cfg: Any, rng: np.random.Generator) -> np.ndarray:
    """The scan seen from a sensor mounted ``U(-mount_height, mount_height)`` m higher and
    pitched ``U(-mount_pitch_deg, mount_pitch_deg)`` degrees; other columns untouched."""
    h = rng.uniform(-cfg.mount_height, cfg.mount_height) if cfg.mount_height > 0 else 0.0
    p = rng.uniform(-cfg.mount_pitch_deg, cfg.mount_pitch_deg) if cfg.mount_pitch_deg > 0 else 0.0
    # the deployed node's mount alignment (runtime.mount), here from a sensor at the origin
    return apply_alignment(points, alignment(np.eye(4), h, p))
