"""The rings (beams) of a spinning LiDAR's scan: read from the cloud or found from elevation.

Why one module: training (ring dropout, beam subsampling), the cross-sensor diagnosis and
the node's sensor contract all ask which beam each point came from. The simulator and
nuScenes deliver it (column 4 of the points, the ``ring`` field of a Velodyne cloud);
SemanticKITTI's ``.bin`` files and many drivers do not. A spinning LiDAR's beams sit at
fixed elevations, so a scan's elevation histogram is a comb of narrow peaks separated by
empty gaps: each run of occupied histogram bins is one ring. That holds exactly in the
simulator (ranges are noisy along the ray, never across it) and approximately for real
sensors (per-laser calibration, two laser blocks); a sensor without rings (non-repetitive
scanning, a merged cloud) shows runs wider than any beam and gets no ring estimate.
"""

from __future__ import annotations

import numpy as np

#: Histogram resolution of :func:`rings_from_elevation` (degrees).
BIN_DEG = 0.02
#: Empty elevation between two rings (degrees): half the spacing of a 128-beam, 40-degree
#: sensor's beams.
MIN_GAP_DEG = 0.1
#: A run of occupied bins wider than this (degrees) is not one beam.
MAX_RING_WIDTH_DEG = 0.6
#: Column of the ring in the points of the readers that deliver it (simulator, nuScenes).
RING_COLUMN = 4


def elevation_deg(xyz: np.ndarray) -> np.ndarray:
    """(N,) elevation of each point above the sensor's horizontal plane, degrees."""
    xyz = np.asarray(xyz, dtype=np.float64)
    return np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))


def rings_from_elevation(xyz: np.ndarray, min_points: int = 2) -> np.ndarray | None:
    """(N,) int64 ring index (0 = lowest beam) found from the points' elevations, or None
    when the scan does not look like a multi-beam sweep (a run of occupied elevation wider
    than :data:`MAX_RING_WIDTH_DEG`). Histogram bins with fewer than ``min_points`` points
    count as empty (a stray point does not bridge two rings)."""
    n = len(xyz)
    if n == 0:
        return np.zeros(0, np.int64)
    el = elevation_deg(xyz)
    lo = float(el.min())
    idx = np.floor((el - lo) / BIN_DEG).astype(np.int64)
    counts = np.bincount(idx)
    occupied = counts >= min(min_points, int(counts.max()))
    gap = max(1, round(MIN_GAP_DEG / BIN_DEG))
    # a ring starts at an occupied bin that follows at least ``gap`` empty ones
    occ = np.flatnonzero(occupied)
    starts = np.concatenate([[True], np.diff(occ) > gap])
    ring_of_occ = np.cumsum(starts) - 1
    first, last = occ[starts], occ[np.concatenate([starts[1:], [True]])]
    if ((last - first + 1) * BIN_DEG).max() > MAX_RING_WIDTH_DEG:
        return None
    # a point in a sparse bin (inside a gap) belongs to the ring of the nearest occupied bin
    j = np.searchsorted(occ, idx)
    below, above = np.clip(j - 1, 0, len(occ) - 1), np.clip(j, 0, len(occ) - 1)
    nearest = np.where(np.abs(occ[above] - idx) < np.abs(idx - occ[below]), above, below)
    ring = ring_of_occ[nearest]
    return ring.astype(np.int64)


def point_rings(points: np.ndarray, fallback_deg: float = 0.4) -> np.ndarray:
    """(N,) int64 ring of each point: column :data:`RING_COLUMN` when the points carry it,
    else :func:`rings_from_elevation`, else elevation bands of ``fallback_deg``."""
    if points.shape[1] > RING_COLUMN:
        return np.round(points[:, RING_COLUMN]).astype(np.int64)
    found = rings_from_elevation(points[:, :3])
    if found is not None:
        return found
    el = elevation_deg(points[:, :3])
    return np.floor((el - el.min()) / fallback_deg).astype(np.int64)


def ring_count(points: np.ndarray, ring: np.ndarray | None = None) -> int | None:
    """Distinct rings of a scan: of ``ring`` (a cloud's ring field) when given, else found
    from elevation; None when the scan has no ring structure."""
    if ring is not None:
        return len(np.unique(ring[np.isfinite(ring)]))
    found = rings_from_elevation(points[:, :3])
    return None if found is None else int(found.max() + 1) if len(found) else 0
