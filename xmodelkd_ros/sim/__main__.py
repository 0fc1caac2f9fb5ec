"""CLI: ``python -m xmodelkd_ros.sim --out DIR --scans N --format kitti|bag ...``."""

from __future__ import annotations

import argparse
import sys

from .rigs import RIGS, rig_arg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m xmodelkd_ros.sim",
        description="Generate the synthetic driving world as SemanticKITTI or a ROS 2 bag.",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--scans", type=int, default=100, help="number of LiDAR sweeps")
    p.add_argument("--format", choices=("kitti", "bag"), default="kitti")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.add_argument("--beams", type=rig_arg, default=32,
                   help=f"LiDAR: beams or a named rig ({', '.join(RIGS)})")  # fmt: skip
    p.add_argument("--cameras", type=int, default=None,
                   help="1..6 (default: 1 for kitti, 3 for bag)")  # fmt: skip
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sequence", type=int, default=0, help="KITTI sequence number")
    p.add_argument("--start", type=int, default=0, help="index of the first sweep")
    p.add_argument("--camera-rate", type=float, default=10.0, help="camera rate (Hz)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)

    from .world import SimWorld

    n_cams = a.cameras if a.cameras is not None else (1 if a.format == "kitti" else 3)
    world = SimWorld(
        seed=a.seed,
        beams=a.beams,
        cameras=n_cams,
        width=a.width,
        height=a.height,
        camera_rate_hz=a.camera_rate,
    )
    if a.format == "kitti":
        from .kitti import write_kitti

        path = write_kitti(a.out, world, a.scans, a.sequence, a.start, not a.no_progress)
    else:
        from .bag import write_bag

        path = write_bag(a.out, world, a.scans, a.storage, a.start, not a.no_progress)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
