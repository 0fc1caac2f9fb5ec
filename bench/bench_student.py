"""Student network cost on this CPU: parameters, input building and forward per preset.

Scans come from the synthetic world (32- and 64-beam LiDAR), so point counts and voxel
occupancy look like a real drive rather than uniform noise. Prints one table, which
docs/performance.md points to. Run: ``python bench/bench_student.py [--repeats 5] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from xmodelkd_ros.nets import (
    StudentNet,
    build_inputs,
    count_parameters,
    default_grid,
    student_config,
)
from xmodelkd_ros.sim import SimWorld
from xmodelkd_ros.sparse import use_impl


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, thread pool
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--presets", nargs="+", default=["small", "base"])
    parser.add_argument("--beams", nargs="+", type=int, default=[32, 64])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    grid = default_grid()

    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats}")
    header = f"{'preset':>6} {'params':>9} {'beams':>5} {'points':>7} {'voxels':>7} "
    header += f"{'inputs ms':>9} {'gather ms':>9} {'pairs ms':>9}"
    print(header)
    scans = {
        b: SimWorld(seed=0, beams=b, cameras=0).scan(0, images=False).points for b in args.beams
    }
    for preset in args.presets:
        net = StudentNet(student_config(preset)).eval()
        for beams, points in scans.items():
            inputs = build_inputs([points], grid, net.config.num_levels)
            t_inputs = _median_time(
                lambda p=points, n=net: build_inputs([p], grid, n.config.num_levels), args.repeats
            )
            row = []
            for impl in ("gather", "pairs"):
                with torch.inference_mode(), use_impl(impl):
                    row.append(
                        _median_time(
                            lambda n=net, i=inputs: n(
                                i.voxel_feats, i.point_feats, i.point2voxel, i.maps
                            ),
                            args.repeats,
                        )
                    )
            print(
                f"{preset:>6} {count_parameters(net):>9,} {beams:>5} {len(points):>7} "
                f"{inputs.voxel_feats.shape[0]:>7} {t_inputs * 1e3:>9.1f} "
                f"{row[0] * 1e3:>9.1f} {row[1] * 1e3:>9.1f}"
            )


if __name__ == "__main__":
    main()
