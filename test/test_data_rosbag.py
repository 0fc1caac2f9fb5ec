"""Unlabeled ROS 2 bag -> LiDAR + camera pairs, and the label-free pretrain stage on it."""

from __future__ import annotations

import numpy as np

from xmodelkd_ros.sim.bag import LIDAR_TOPIC, image_topic, write_bag
from xmodelkd_ros.sim.world import SimWorld
from xmodelkd_ros.training.data.rosbag import RosbagPairs
from xmodelkd_ros.training.data.sample import compute_correspondences
from xmodelkd_ros.training.train import main


def test_rosbag_pairs_and_pretrain(tmp_path):
    world = SimWorld(3, cameras=1, width=100, height=60)
    bag = write_bag(tmp_path, world, scans=3, progress=False)
    ds = RosbagPairs(bag, LIDAR_TOPIC, [image_topic("front")], tmp_path / "calibration.yaml")
    assert len(ds) == 3
    s = ds[1]
    frame = world.scan(1)
    assert s.labels is None
    np.testing.assert_allclose(s.points[:, :3], frame.points[:, :3])
    np.testing.assert_array_equal(s.images[0], frame.images["front"])
    assert len(compute_correspondences(s.points, s.cameras)) > 50

    out = tmp_path / "run"
    code = main([
        "--stage", "pretrain", "--out", str(out), "--no-progress", "--set",
        "data.pretrain=bag", f"data.bag.path={bag}", f"data.bag.lidar_topic={LIDAR_TOPIC}",
        f"data.bag.camera_topics=[{image_topic('front')}]",
        f"data.bag.calibration={tmp_path / 'calibration.yaml'}",
        "data.max_points=1500", "data.image_size=[32,48]", "schedule.pretrain_epochs=1",
        "log.tensorboard=false", "threads=1",
    ])  # fmt: skip
    assert code == 0
    assert (out / "pretrain.pt").is_file()
