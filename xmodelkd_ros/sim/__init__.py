"""Synthetic driving world: LiDAR, cameras and labels, in memory or as SemanticKITTI / ROS 2 bags.

Why it exists: no public dataset can be downloaded where this project is built and tested,
yet training, export, the node, replay evaluation and the benchmarks all need realistic
multi-modal data with ground truth. This package generates it procedurally, deterministic by
seed, fast enough to be produced on the fly during training (one 32-beam sweep plus three
640x360 images in well under a second on two CPU cores).

In-memory API (what training uses, no disk)::

    from xmodelkd_ros.sim import SimWorld
    world = SimWorld(seed=0, beams=32, cameras=3)   # cameras: 0..6 or list[PinholeCamera]
                                                    # beams: 16|32|64|128 or a rig (sim.rigs)
    f = world.scan(i)                               # any order, any process: pure in (seed, i)
    f.points      # (N, 6) float32 [x, y, z, intensity, ring, time] in the LiDAR frame
    f.labels      # (N,) uint16 label ids 0..19 (xmodelkd_ros.labels; 0 = unlabeled)
    f.raw         # (N,) uint16 raw SemanticKITTI ids (60 lane marking, 252 moving car, ...)
    f.instances   # (N,) uint16 instance ids (0 for stuff classes)
    f.images      # {camera name: (H, W, 3) uint8 RGB}
    f.image_labels  # {camera name: (H, W) uint16 label id rendered at each pixel, 0 = sky}
    f.cameras     # list[xmodelkd_ros.geometry.PinholeCamera] (K, size, T_cam_lidar)
    f.stamp_ns, f.image_stamps_ns, f.pose  # sweep start stamp, camera stamps, 4x4 lidar->world
    world.scan(i, images=False)             # LiDAR only (fast)

Conventions (other modules rely on them):

* LiDAR frame ``lidar`` (x forward, y left, z up); camera frames ``camera_<name>`` (optical:
  x right, y down, z forward); camera names ``front, front_left, front_right, back,
  back_left, back_right`` (an ``n``-camera rig takes the first ``n``).
* ``ring`` 0 is the lowest beam; ``time`` is seconds since the sweep start (10 Hz sweeps,
  clockwise from behind). The sweep is cast from the pose at its stamp (no motion skew).
* Cameras run at their own rate (default 10 Hz) with a fixed per-camera offset of a few ms
  after the sweep start and +-1 ms jitter; ``scan(i)`` uses each camera's closest frame.
* Appearance-separable ground: road / lane marking / parking (height 0) and sidewalk /
  terrain / other-ground (curb height) differ strongly in colour and texture, only weakly
  in LiDAR intensity; parking sits at the road edge, sidewalk beyond it.

On disk (``python -m xmodelkd_ros.sim --out DIR --scans N --format kitti|bag
[--storage sqlite3|mcap] [--beams 32|RIG] [--cameras 3] [--seed S]``):

* :func:`write_kitti` -- SemanticKITTI ``sequences/NN`` (``.label`` = raw id | instance << 16).
* :func:`write_bag` -- rosbag2 with ``/lidar/points``, ``/lidar/labels`` (GT ``label`` uint16
  label ids), ``/camera/<name>/image_raw``, ``/camera/<name>/camera_info``, ``/tf_static``,
  and ``calibration.yaml`` beside the bag directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .rigs import RIGS, LidarRig, lidar_model, rig
from .sensors import LIDAR_PRESETS, LidarModel
from .world import Frame, SimWorld


def write_kitti(*args: Any, **kwargs: Any) -> Path:
    """Lazy alias of :func:`xmodelkd_ros.sim.kitti.write_kitti` (avoids importing Pillow)."""
    from .kitti import write_kitti as _w

    return _w(*args, **kwargs)


def write_bag(*args: Any, **kwargs: Any) -> Path:
    """Lazy alias of :func:`xmodelkd_ros.sim.bag.write_bag` (avoids importing rosbags)."""
    from .bag import write_bag as _w

    return _w(*args, **kwargs)


__all__ = [
    "LIDAR_PRESETS",
    "RIGS",
    "Frame",
    "LidarModel",
    "LidarRig",
    "SimWorld",
    "lidar_model",
    "rig",
    "write_bag",
    "write_kitti",
]
