"""Benchmark the pure-PyTorch sparse conv against spconv's CPU forward on a LiDAR-like scan.

Usage: python bench/bench_sparse.py [--points 35000 120000] [--repeats 7]

The scan is ray-cast from a synthetic 64-beam sensor (ground plane, boxes, walls)
so the voxel occupancy pattern -- dense near the sensor, thin rings far away --
resembles a real scan; a uniform random cloud would have almost no neighbours
and flatter the gather form.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

# runnable from a checkout without installing the package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xmodelkd_ros.sparse import (
    ConvPairs,
    SparseConv3d,
    VoxelGridSpec,
    build_kernel_maps,
    fused,
    set_fused_voxelize,
    spconv_available,
    to_spconv,
    voxelize,
)
from xmodelkd_ros.sparse import maps as maps_mod
from xmodelkd_ros.sparse.spconv_backend import make_sparse_tensor

RANGE_MIN, RANGE_MAX = (-50.0, -50.0, -4.0), (50.0, 50.0, 4.0)
SENSOR_HEIGHT = 1.8


def _boxes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Car-sized boxes around the sensor plus four long walls (buildings)."""
    centre = rng.uniform(-35, 35, size=(n, 2))
    centre = centre[np.linalg.norm(centre, axis=1) > 4]
    size = np.stack(
        [rng.uniform(1.6, 5.0, len(centre)), rng.uniform(1.6, 5.0, len(centre)),
         rng.uniform(1.4, 3.0, len(centre))], 1,
    )  # fmt: skip
    lo = np.concatenate([centre - size[:, :2] / 2, np.full((len(centre), 1), -SENSOR_HEIGHT)], 1)
    hi = lo + size
    walls_lo = np.array([[-45, 25, -1.8], [-45, -27, -1.8], [30, -40, -1.8], [-33, -40, -1.8]])
    walls_hi = np.array([[45, 26, 6.0], [45, -26, 6.0], [31, 40, 6.0], [-32, 40, 6.0]])
    return np.concatenate([lo, walls_lo]), np.concatenate([hi, walls_hi])


def synth_scan(num_points: int, seed: int = 0) -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity: first hit of each ray against ground and boxes."""
    rng = np.random.default_rng(seed)
    lo, hi = _boxes(rng, 40)
    elev = np.deg2rad(np.linspace(-24.8, 2.0, 64))
    n_az = int(np.ceil(num_points / 64 * 1.4))
    az = np.linspace(-np.pi, np.pi, n_az, endpoint=False)
    el, a = np.meshgrid(elev, az, indexing="ij")
    d = np.stack([np.cos(el) * np.cos(a), np.cos(el) * np.sin(a), np.sin(el)], -1).reshape(-1, 3)
    t = np.full(len(d), np.inf)
    down = d[:, 2] < -1e-6
    t[down] = SENSOR_HEIGHT / -d[down, 2]
    # slab test, chunked over rays to bound memory
    for s in range(0, len(d), 20000):
        dd = d[s : s + 20000, None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            t0 = (lo[None] - 0.0) / dd
            t1 = (hi[None] - 0.0) / dd
        tmin = np.nanmax(np.minimum(t0, t1), axis=2)
        tmax = np.nanmin(np.maximum(t0, t1), axis=2)
        hit = (tmax >= tmin) & (tmax > 0)
        tb = np.where(hit, np.maximum(tmin, 0.0), np.inf).min(axis=1)
        t[s : s + 20000] = np.minimum(t[s : s + 20000], tb)
    ok = np.isfinite(t) & (t < 70) & (t > 1.0)
    pts = d[ok] * (t[ok, None] + rng.normal(0, 0.02, size=(ok.sum(), 1)))
    if len(pts) > num_points:
        pts = pts[rng.choice(len(pts), num_points, replace=False)]
    inten = rng.uniform(0, 1, size=(len(pts), 1))
    return np.concatenate([pts, inten], 1).astype(np.float32)


def timeit(fn: Callable[[], object], repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Median (wall ms, process-CPU ms). Median because the machine is shared; CPU time
    alongside because wall time on an oversubscribed box mostly measures the neighbours."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append((time.perf_counter() - t0) * 1e3)
        cpus.append((time.process_time() - c0) * 1e3)
    return statistics.median(walls), statistics.median(cpus)


Row = tuple[str, tuple[float, float], str]


def _ratio(t: tuple[float, float], ref: tuple[float, float]) -> str:
    return f"{t[0] / ref[0]:5.2f}x  {t[1] / ref[1]:5.2f}x"


def bench_conv(c: int, vox: object, table: torch.Tensor, repeats: int) -> list[Row]:
    """subm c->c at level 0 with one weight shared by our layer and spconv's."""
    torch.manual_seed(0)
    layer = SparseConv3d(c, c, 3, "subm").eval()
    x = torch.randn(table.shape[0], c)
    pairs = ConvPairs.from_table(table, x.shape[0])
    _ = pairs.scatter  # built on first use: keep it out of the cached timing
    t_g = timeit(lambda: layer(x, table, impl="gather"), repeats)
    t_p = timeit(lambda: layer(x, pairs), repeats)  # the fused C++ kernel where built
    with fused.disabled():
        t_pe = timeit(lambda: layer(x, pairs), repeats)  # the eager torch ops
    t_pc = timeit(lambda: layer(x, table, impl="pairs"), repeats)  # pair lists built per call
    t_sp = t_sp_full = (float("nan"), float("nan"))
    if spconv_available():
        sp_layer = to_spconv(layer, indice_key="subm0").eval()

        def fresh() -> object:
            return sp_layer(make_sparse_tensor(x, vox.coords, vox.spatial_shape, 1))

        ours = layer(x, table)
        # spconv 2.3.8's CPU conv races when multi-threaded: check against a 1-thread run
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        torch.testing.assert_close(fresh().features, ours, rtol=1e-3, atol=1e-3)
        torch.set_num_threads(threads)
        ref = fresh()
        racy = int(((ref.features - ours).abs().amax(1) > 1e-3).sum())
        print(f"  {c}->{c}: ours == spconv (1 thread); spconv ({threads} threads): {racy} rows off")
        # the output carries the indice pairs under "subm0"; feeding it back reuses them
        st = ref.replace_feature(x)
        t_sp = timeit(lambda: sp_layer(st), repeats)
        t_sp_full = timeit(fresh, repeats)
    return [
        (f"subm {c}->{c} ours gather", t_g, _ratio(t_g, t_sp)),
        (f"subm {c}->{c} ours pairs fused (cached pair lists)", t_p, _ratio(t_p, t_sp)),
        (f"subm {c}->{c} ours pairs eager (cached pair lists)", t_pe, _ratio(t_pe, t_sp)),
        (f"subm {c}->{c} ours pairs (incl. pair lists)", t_pc, _ratio(t_pc, t_sp)),
        (f"subm {c}->{c} spconv (cached indices)", t_sp, _ratio(t_sp, t_sp)),
        (f"subm {c}->{c} spconv (incl. index build)", t_sp_full, _ratio(t_sp_full, t_sp)),
    ]


def torch_vs_fused(
    label: str, switch: Callable[[bool], None], fn: Callable[[], object], repeats: int
) -> list[Row]:
    """``fn`` with the torch code (``switch(False)``) and with the C++ one of the fused
    library, timed alternately in one run (ratio: this row / torch)."""
    ok, why = fused.available()
    if not ok:
        print(f"  fused {label} unavailable ({why}): torch only")

    def run(use_fused: bool) -> Callable[[], object]:
        def go() -> object:
            switch(use_fused)
            try:
                return fn()
            finally:
                switch(True)

        return go

    variants = [("torch", False)] + ([("fused C++", True)] if ok else [])
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in variants}
    for _ in range(3):  # interleaved: load changes on a shared box hit both alike
        for name, flag in variants:
            times[name].append(timeit(run(flag), max(1, repeats // 3 + 1)))
    med = {n: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
           for n, t in times.items()}  # fmt: skip
    return [(f"{label}, {n}", med[n], _ratio(med[n], med["torch"]) + " vs torch")
            for n, _ in variants]  # fmt: skip


def bench_maps(vox: object, repeats: int) -> list[Row]:
    """Kernel maps (4 levels) and all their pair lists, torch vs C++ builder."""
    return torch_vs_fused(
        "maps + pair lists", maps_mod.set_fused_maps,
        lambda: build_kernel_maps(vox.coords, vox.spatial_shape, 4).all_pairs(), repeats,
    )  # fmt: skip


def bench_voxelize(scan: torch.Tensor, grid: VoxelGridSpec, repeats: int) -> list[Row]:
    """The torch voxelizer and the C++ one (bit-identical outputs)."""
    return torch_vs_fused("voxelize", set_fused_voxelize, lambda: voxelize(scan, grid), repeats)


def bench_one(num_points: int, channels: list[int], repeats: int, voxel: float) -> list[Row]:
    scan = torch.from_numpy(synth_scan(num_points))
    grid = VoxelGridSpec((voxel,) * 3, RANGE_MIN, RANGE_MAX)
    rows: list[Row] = []
    with torch.inference_mode():
        vox = voxelize(scan, grid)
        rows += bench_voxelize(scan, grid, repeats)
        maps = build_kernel_maps(vox.coords, vox.spatial_shape, 4)
        t_maps = timeit(lambda: build_kernel_maps(vox.coords, vox.spatial_shape, 4), repeats)
        sizes = maps.sizes()
        fill = (maps.subm[0] < sizes[0]).float().sum(1).mean().item()
        print(
            f"\n== {len(scan)} points, voxel {voxel} m -> voxels per level {sizes}, "
            f"mean active neighbours (level 0) {fill:.1f}/27"
        )
        rows.append(("build_kernel_maps (4 levels)", t_maps, ""))
        rows += bench_maps(vox, repeats)
        for c in channels:
            rows += bench_conv(c, vox, maps.subm[0], repeats)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, nargs="+", default=[35000, 120000])
    ap.add_argument("--channels", type=int, nargs="*", default=[32, 64],
                    help="conv widths to time; none: voxelize and maps only")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--voxel", type=float, default=0.1, help="voxel edge in metres")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads; use 1 on a shared box: OpenMP barriers of an"
        " oversubscribed multi-threaded run inflate every number several-fold",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"spconv {'available' if spconv_available() else 'NOT available'}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    for n in args.points:
        rows = bench_one(n, args.channels, args.repeats, args.voxel)
        print(f"{'step':46s} {'wall ms':>9s} {'cpu ms':>9s}  vs spconv (wall, cpu)")
        for name, (wall, cpu), ratio in rows:
            print(f"{name:46s} {wall:9.1f} {cpu:9.1f}  {ratio}")


if __name__ == "__main__":
    main()
