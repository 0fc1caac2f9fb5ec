"""Benchmark of the synthetic world: how long one frame takes to generate on this machine.

Why: training generates frames on the fly on few CPU cores; the bar is one 32-beam sweep
plus three 640x360 images in under 1 s and a 64-beam sweep in under 2 s.

    python bench/bench_sim.py [--frames 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from xmodelkd_ros.sim import SimWorld


def bench(world: SimWorld, frames: int, images: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Wall-clock and CPU seconds per frame (CPU time is robust to a shared, loaded host)."""
    world.scan(0, images=images)  # warm-up: chunk generation, ray tables
    wall, cpu, npts = [], [], 0
    for i in range(1, frames + 1):
        t, c = time.perf_counter(), time.process_time()
        f = world.scan(i, images=images)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        npts += len(f.points)
    return np.array(wall), np.array(cpu), npts // frames


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    cases = [
        ("32-beam + 3 cams 640x360", SimWorld(a.seed, beams=32, cameras=3), True),
        ("32-beam LiDAR only", SimWorld(a.seed, beams=32, cameras=0), False),
        ("64-beam LiDAR only", SimWorld(a.seed, beams=64, cameras=0), False),
        ("64-beam + 3 cams 640x360", SimWorld(a.seed, beams=64, cameras=3), True),
    ]
    print(f"{'case':28s} {'wall mean':>9s} {'wall max':>9s} {'cpu mean':>9s} {'points':>8s}")
    for name, world, images in cases:
        wall, cpu, n = bench(world, a.frames, images)
        print(f"{name:28s} {wall.mean():9.3f} {wall.max():9.3f} {cpu.mean():9.3f} {n:8d}")
    print(f"host load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
