"""Benchmark PointCloud2 decode / encode for the layouts vehicles send.

Why: the node's preprocessing budget is a few milliseconds per scan; this shows
where msgs.py stands for a 35k-point (VLP-32-like) and a 120k-point (OS1-128-like)
cloud in a packed x,y,z,intensity,ring,time layout and Ouster's padded 48-byte one.

    python bench/bench_msgs.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from xmodelkd_ros import msgs as M

TYPES = {"f4": M.FLOAT32, "u4": M.UINT32, "u2": M.UINT16, "u1": M.UINT8}


def make_cloud(layout: str, n: int, nan_frac: float = 0.02, big: bool = False) -> M.PointCloud2:
    """A random cloud of ``n`` points in ``layout`` ('xyzirt' or 'ouster')."""
    o = ">" if big else "<"
    if layout == "xyzirt":
        spec = [
            ("x", "f4", 0),
            ("y", "f4", 4),
            ("z", "f4", 8),
            ("intensity", "f4", 12),
            ("ring", "u2", 16),
            ("time", "f4", 18),
        ]
        step = 22
    else:
        spec = [
            ("x", "f4", 0),
            ("y", "f4", 4),
            ("z", "f4", 8),
            ("intensity", "f4", 16),
            ("t", "u4", 20),
            ("reflectivity", "u2", 24),
            ("ring", "u2", 26),
            ("ambient", "u2", 28),
            ("range", "u4", 32),
        ]
        step = 48
    dt = np.dtype(
        {
            "names": [s[0] for s in spec],
            "formats": [o + s[1] for s in spec],
            "offsets": [s[2] for s in spec],
            "itemsize": step,
        }
    )
    rng = np.random.default_rng(0)
    a = np.zeros(n, dt)
    for c in "xyz":
        a[c] = rng.normal(size=n) * 20
    a["intensity"] = rng.uniform(0, 255, n)
    a["ring"] = np.arange(n) % 128
    a["x"][rng.random(n) < nan_frac] = np.nan
    fields = [M.PointField(s[0], s[2], TYPES[s[1]]) for s in spec]
    return M.PointCloud2(
        height=1,
        width=n,
        fields=fields,
        is_bigendian=big,
        point_step=step,
        row_step=step * n,
        data=a.tobytes(),
    )


def timeit_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return min(ts), statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    print(f"{'layout':<14}{'points':>8}  {'stage':<22}{'min ms':>8}{'median ms':>11}")
    for layout, big in (("xyzirt", False), ("ouster", False), ("ouster", True)):
        for n in (35_000, 120_000):
            cloud = make_cloud(layout, n, big=big)
            d = M.decode_cloud(cloud)
            labels = np.random.default_rng(1).integers(0, 20, d.num_valid).astype(np.uint16)
            conf = np.ones(d.num_valid, np.float32)
            stages = {
                "decode": lambda c=cloud: M.decode_cloud(c),
                "encode_labeled": lambda d=d, lab=labels, cf=conf: M.encode_labeled_cloud(
                    d, lab, cf
                ),
                "encode_labeled+rgb": lambda d=d, lab=labels, cf=conf: M.encode_labeled_cloud(
                    d, lab, cf, with_rgb=True
                ),
                "encode_filtered": lambda d=d, lab=labels: M.encode_filtered_cloud(d, lab, [9, 15]),
            }
            total = 0.0
            name = layout + ("-BE" if big else "")
            for stage, fn in stages.items():
                best, med = timeit_ms(fn, args.repeat)
                if stage in ("decode", "encode_labeled+rgb"):
                    total += med
                print(f"{name:<14}{n:>8}  {stage:<22}{best:>8.2f}{med:>11.2f}")
            print(f"{name:<14}{n:>8}  {'decode+encode(rgb)':<22}{'':>8}{total:>11.2f}")


if __name__ == "__main__":
    main()
