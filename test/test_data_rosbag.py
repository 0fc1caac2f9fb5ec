"""Unlabeled ROS 2 bag -> LiDAR + camera pairs, and the label-free pretrain stage on it."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from xmodelkd_ros.sim.bag import LIDAR_TOPIC, image_topic, write_bag
from xmodelkd_ros.sim.world import SimWorld
from xmodelkd_ros.training.data.rosbag import RosbagPairs, StampPairer
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


def _argmin_pairs(events, cameras, max_ns):
    """Oracle: the old whole-bag pairing (argmin over every image, first on ties)."""
    clouds = [(s, m) for kind, s, m in events if kind == "lidar"]
    out = []
    for stamp, cloud in clouds:
        chosen = []
        for cam in cameras:
            imgs = [(s, m) for kind, s, m in events if kind == cam]
            if not imgs:
                chosen = None
                break
            dts = [abs(s - stamp) for s, _ in imgs]
            k = int(np.argmin(dts))
            if dts[k] > max_ns:
                chosen = None
                break
            chosen.append(imgs[k][1])
        out.append((stamp, cloud, chosen))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_streaming_pairing_equals_whole_bag_argmin(seed):
    rng = np.random.default_rng(seed)
    cameras = ["front", "left"][: 1 + seed % 2]
    max_ns = int(rng.integers(5, 60))
    events = []
    for topic, period, n in [("lidar", 100, 30), *[(c, int(rng.integers(30, 120)), 40)
                                                   for c in cameras]]:
        stamps = np.cumsum(rng.integers(period // 2, period * 3 // 2, n)) + rng.integers(0, 50)
        if topic != "lidar" and seed % 3 == 0:
            stamps[5:9] = stamps[5]  # duplicate stamps: ties resolve to the first received
        # log time = stamp + a jittering transport delay; one topic arrives in stamp order
        logs = np.maximum.accumulate(stamps + rng.integers(0, 80, n))
        events += [(int(g), topic, int(t), f"{topic}{i}")
                   for i, (t, g) in enumerate(zip(stamps, logs, strict=True))]
    events.sort(key=lambda e: e[0])
    if seed % 4 == 1:
        events = [e for e in events if not (e[1] == cameras[0] and 8 <= int(e[3][5:]) < 20)]
    bag = [(topic, stamp, msg) for _, topic, stamp, msg in events]
    pairer = StampPairer(cameras, max_ns)
    got = []
    for topic, stamp, msg in bag:
        if topic == "lidar":
            pairer.add_cloud(stamp, msg)
        else:
            pairer.add_image(topic, stamp, msg)
        got += list(pairer.ready())
    got += list(pairer.flush())
    assert got == _argmin_pairs(bag, cameras, max_ns)


def test_bag_longer_than_limit_reads_in_flat_memory(tmp_path):
    """Memory is the limit's samples plus a stamp window, not the bag: a 16-scan bag costs
    what a 3-scan bag does (reading all of it used to cost ~3x)."""
    world = SimWorld(3, cameras=1, width=100, height=60)
    short = write_bag(tmp_path / "short", world, scans=3, progress=False)
    long = write_bag(tmp_path / "long", world, scans=16, progress=False)
    topics = (LIDAR_TOPIC, [image_topic("front")])

    def peak(bag, limit):
        tracemalloc.start()
        try:
            ds = RosbagPairs(bag, *topics, bag.parent / "calibration.yaml", limit=limit)
            return tracemalloc.get_traced_memory()[1], ds
        finally:
            tracemalloc.stop()

    peak(short, 2)  # first read imports and caches message types
    p_short, ds_short = peak(short, 2)
    p_long, ds_long = peak(long, 2)
    assert len(ds_short) == len(ds_long) == 2
    np.testing.assert_array_equal(ds_long[1].points, ds_short[1].points)
    assert p_long < 1.3 * p_short, (p_long, p_short)
    # Without a limit every scan is kept, but the pairing window stays a few messages.
    _, ds_all = peak(long, None)
    assert len(ds_all) == 16 and ds_all.peak_buffered <= 4
