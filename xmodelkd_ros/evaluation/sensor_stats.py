"""Where a cross-sensor drop comes from: what each LiDAR rig's scans look like to a student.

Why: a student trained on one rig and scored on another can lose accuracy for several
reasons that call for different remedies: more (or fewer) points per voxel (density), a
vertical field of view that shows the model heights it never saw, a mounting that moves
the ground (height) or tilts it (pitch), ranges beyond the voxel grid (counted as wrong),
another intensity distribution, or simply another mix of classes in view. This module
measures each of them on the very scans the cross-sensor table scores, per rig, and names
the ones that differ from the training rig, so the table's drops come with their likely
causes. Pure numpy on :class:`~xmodelkd_ros.evaluation.score.HeldOutScan` lists.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from xmodelkd_ros.labels import CLASS_NAMES
from xmodelkd_ros.rings import elevation_deg, ring_count
from xmodelkd_ros.sparse import VoxelGridSpec

#: Elevation histogram bin edges (degrees) of the report.
ELEVATION_EDGES = tuple(range(-35, 30, 5))
#: Horizontal range bands (m) of the points-per-voxel columns.
RANGE_BANDS = ((0.0, 10.0), (10.0, 25.0), (25.0, float("inf")))
#: Ground classes the ground plane is fitted to (label ids: class index + 1).
GROUND_IDS = tuple(CLASS_NAMES.index(c) + 1 for c in ("road", "parking", "sidewalk"))


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (largest gap of the empirical CDFs)."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def _in_grid(xyz: np.ndarray, grid: VoxelGridSpec) -> np.ndarray:
    lo, hi = np.asarray(grid.range_min), np.asarray(grid.range_max)
    return ((xyz >= lo) & (xyz < hi)).all(1)


def voxel_density(xyz: np.ndarray, grid: VoxelGridSpec) -> list[tuple[int, int]]:
    """Per :data:`RANGE_BANDS` band, (points, occupied voxels) of the in-grid points; a
    voxel's band is that of its first point."""
    lo, size = np.asarray(grid.range_min), np.asarray(grid.voxel_size)
    shape = np.asarray(grid.spatial_shape, dtype=np.int64)
    xyz = xyz[_in_grid(xyz, grid)]
    cell = np.floor((xyz - lo) / size).astype(np.int64)
    cell = np.minimum(cell, shape - 1)
    key = (cell[:, 0] * shape[1] + cell[:, 1]) * shape[2] + cell[:, 2]
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    r = np.hypot(xyz[first, 0], xyz[first, 1])
    out = []
    for b_lo, b_hi in RANGE_BANDS:
        m = (r >= b_lo) & (r < b_hi)
        out.append((int(counts[m].sum()), int(m.sum())))
    return out


def ground_plane(xyz: np.ndarray, labels: np.ndarray) -> tuple[float, float] | None:
    """(height of the sensor above the fitted ground plane in m, the plane's tilt in
    degrees) from road / parking / sidewalk points 3-20 m away; None without enough."""
    r = np.hypot(xyz[:, 0], xyz[:, 1])
    m = np.isin(labels, GROUND_IDS) & (r > 3.0) & (r < 20.0)
    if m.sum() < 50:
        return None
    x, y, z = (xyz[m, k].astype(np.float64) for k in range(3))
    (a, b, c), *_ = np.linalg.lstsq(np.stack([x, y, np.ones_like(x)], 1), z, rcond=None)
    return float(-c / np.sqrt(1 + a * a + b * b)), float(np.degrees(np.arctan(np.hypot(a, b))))


def rig_stats(scans: Sequence[Any], grid: VoxelGridSpec) -> dict[str, Any]:
    """What the scans of one rig look like: counts, density, extent, range, intensity,
    ground and class mix (JSON-ready; ``_samples`` holds arrays for :func:`compare`)."""
    n_scans = max(len(scans), 1)
    xyz = np.concatenate([s.points[:, :3] for s in scans])
    inten = np.concatenate([s.points[:, 3] for s in scans])
    labels = np.concatenate([s.labels for s in scans])
    el = elevation_deg(xyz)
    rng = np.hypot(xyz[:, 0], xyz[:, 1])
    dens = np.sum([voxel_density(s.points[:, :3], grid) for s in scans], axis=0)
    rings = [ring_count(s.points, s.points[:, 4] if s.points.shape[1] > 4 else None)
             for s in scans]  # fmt: skip
    grounds = [g for s in scans if (g := ground_plane(s.points[:, :3], s.labels)) is not None]
    hist, _ = np.histogram(el, bins=[-90, *ELEVATION_EDGES, 90])
    counts = np.bincount(labels.astype(np.int64), minlength=len(CLASS_NAMES) + 1)[1:]
    q = np.percentile
    return {
        "points_per_scan": float(len(xyz) / n_scans),
        "labeled_per_scan": float((labels > 0).sum() / n_scans),
        "in_grid": float(_in_grid(xyz, grid).mean()) if len(xyz) else float("nan"),
        "points_per_voxel": [float(p / v) if v else float("nan") for p, v in dens],
        "rings": float(np.mean(known)) if (known := [r for r in rings if r is not None]) else None,
        "elevation_deg": [float(q(el, 1)), float(q(el, 99))],
        "elevation_hist": [float(h / max(len(el), 1)) for h in hist],
        "range_m": [float(q(rng, 10)), float(q(rng, 50)), float(q(rng, 90))],
        "ground_height_m": float(np.mean([g[0] for g in grounds])) if grounds else None,
        "ground_tilt_deg": float(np.mean([g[1] for g in grounds])) if grounds else None,
        "intensity": [float(inten.mean()), float(inten.std())],
        "class_share": {
            c: float(n / max(counts.sum(), 1)) for c, n in zip(CLASS_NAMES, counts, strict=True)
        },
        "_samples": {"intensity": _thin(inten), "range": _thin(rng), "elevation": _thin(el)},
    }


def _thin(a: np.ndarray, n: int = 20000) -> np.ndarray:
    """At most ``n`` evenly spaced values of ``a`` (KS distances need no more)."""
    return a if len(a) <= n else a[np.linspace(0, len(a) - 1, n).astype(np.int64)]


def compare(stats: dict[str, dict[str, Any]], reference: str) -> dict[str, list[str]]:
    """Per rig, the properties that differ from the ``reference`` rig's (the causes a drop
    may have), each a short phrase; also stores the KS distances in ``stats``."""
    ref = stats[reference]
    notes: dict[str, list[str]] = {}
    for name, s in stats.items():
        for key in ("intensity", "range", "elevation"):
            s[f"ks_{key}"] = ks_distance(s["_samples"][key], ref["_samples"][key])
        out: list[str] = []
        near = s["points_per_voxel"][0] / ref["points_per_voxel"][0]
        if not 0.75 <= near <= 1.33:
            out.append(f"density x{near:.2f} (points per voxel < 10 m)")
        lo, hi = s["elevation_deg"]
        r_lo, r_hi = ref["elevation_deg"]
        if abs(lo - r_lo) > 2 or abs(hi - r_hi) > 2:
            out.append(f"vertical extent {lo:+.0f}..{hi:+.0f} deg vs {r_lo:+.0f}..{r_hi:+.0f}")
        if None not in (s["ground_height_m"], ref["ground_height_m"]):
            dh = s["ground_height_m"] - ref["ground_height_m"]
            if abs(dh) > 0.1:
                out.append(f"ground {dh:+.2f} m lower (mounting height)")
            dt = s["ground_tilt_deg"] - ref["ground_tilt_deg"]
            if abs(dt) > 1.0:
                out.append(f"ground tilted {dt:+.1f} deg (pitch)")
        if ref["in_grid"] - s["in_grid"] > 0.01:
            out.append(f"in grid {100 * s['in_grid']:.1f} % vs {100 * ref['in_grid']:.1f} %")
        if s["ks_intensity"] > 0.05:
            out.append(f"intensity distribution (KS {s['ks_intensity']:.2f})")
        if s["ks_range"] > 0.1:
            out.append(f"range distribution (KS {s['ks_range']:.2f})")
        tv = 0.5 * sum(abs(s["class_share"][c] - ref["class_share"][c]) for c in CLASS_NAMES)
        s["class_mix_tv"] = float(tv)
        if tv > 0.05:
            out.append(f"class mix (total variation {tv:.2f})")
        notes[name] = out
    return notes


def public(stats: dict[str, Any]) -> dict[str, Any]:
    """``stats`` without its sample arrays (what the JSON holds)."""
    return {k: v for k, v in stats.items() if not k.startswith("_")}


def _f(v: float | None, fmt: str) -> str:
    return "n/a" if v is None or not np.isfinite(v) else format(v, fmt)


def diagnosis_markdown(stats: dict[str, dict[str, Any]], notes: dict[str, list[str]],
                       reference: str) -> list[str]:  # fmt: skip
    """The diagnosis tables: per rig its properties, then the elevation histogram."""
    bands = " / ".join(f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">{lo:g}"
                       for lo, hi in RANGE_BANDS)  # fmt: skip
    lines = [
        f"| rig | points / scan | rings | points per voxel ({bands} m) | in grid | "
        "elevation p1..p99 (deg) | range p10 / p50 / p90 (m) | ground height / tilt | "
        f"intensity mean (std), KS | differs from {reference} |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in stats.items():
        ppv = " / ".join(_f(v, ".2f") for v in s["points_per_voxel"])
        lines.append(
            f"| {name} | {s['points_per_scan']:.0f} | {_f(s['rings'], '.0f')} | {ppv} | "
            f"{100 * s['in_grid']:.1f} % | "
            f"{s['elevation_deg'][0]:+.1f}..{s['elevation_deg'][1]:+.1f} | "
            f"{' / '.join(f'{v:.1f}' for v in s['range_m'])} | "
            f"{_f(s['ground_height_m'], '.2f')} m / {_f(s['ground_tilt_deg'], '.1f')} deg | "
            f"{s['intensity'][0]:.3f} ({s['intensity'][1]:.3f}), {_f(s.get('ks_intensity'), '.2f')}"
            f" | {'; '.join(notes.get(name, [])) or '-'} |"
        )
    edges = [-90, *ELEVATION_EDGES, 90]
    head = [f"{lo}..{hi}" for lo, hi in itertools.pairwise(edges)]
    lines += ["", "Share of points per elevation band (degrees, sensor frame), %:", "",
              "| rig | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]  # fmt: skip
    for name, s in stats.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * h:.1f}" for h in s["elevation_hist"])
                     + " |")  # fmt: skip
    return lines
