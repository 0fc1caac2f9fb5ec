"""ROS 2 bag writer: read back with ``rosbags`` (sqlite3 and MCAP) and compare with the world."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from xmodelkd_ros.geometry import load_calibration
from xmodelkd_ros.sim import SimWorld, write_bag
from xmodelkd_ros.sim.bag import LABEL_DTYPE, POINT_DTYPE, quat_to_rot

N = 3
TS = get_typestore(Stores.ROS2_HUMBLE)


def _world() -> SimWorld:
    return SimWorld(seed=11, beams=16, cameras=3, width=160, height=90)


@pytest.fixture(scope="module", params=["sqlite3", "mcap"])
def bag(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"bag_{request.param}")
    path = write_bag(out, _world(), N, storage=request.param, progress=False)
    msgs = defaultdict(list)
    with Reader(path) as r:
        conns = {c.topic: c for c in r.connections}
        for conn, t, raw in r.messages():
            msgs[conn.topic].append((t, TS.deserialize_cdr(raw, conn.msgtype)))
    return out, path, conns, msgs


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_topics_types_counts(bag) -> None:
    _, _, conns, msgs = bag
    names = ["front", "front_left", "front_right"]
    expect = {"/lidar/points": "sensor_msgs/msg/PointCloud2",
              "/lidar/labels": "sensor_msgs/msg/PointCloud2",
              "/tf_static": "tf2_msgs/msg/TFMessage"}  # fmt: skip
    for n in names:
        expect[f"/camera/{n}/image_raw"] = "sensor_msgs/msg/Image"
        expect[f"/camera/{n}/camera_info"] = "sensor_msgs/msg/CameraInfo"
    assert {k: c.msgtype for k, c in conns.items()} == expect
    assert len(msgs["/lidar/points"]) == len(msgs["/lidar/labels"]) == N
    for n in names:
        assert len(msgs[f"/camera/{n}/image_raw"]) == N
        assert len(msgs[f"/camera/{n}/camera_info"]) == N
    assert len(msgs["/tf_static"]) == 1
    assert conns["/tf_static"].ext.offered_qos_profiles[0].durability.name == "TRANSIENT_LOCAL"


def test_clouds_match_world(bag) -> None:
    _, _, _, msgs = bag
    w = _world()
    for i, ((t, pc), (_, gt)) in enumerate(zip(msgs["/lidar/points"], msgs["/lidar/labels"],
                                                strict=True)):  # fmt: skip
        f = w.scan(i, images=False)
        assert pc.header.frame_id == "lidar" and _stamp(pc) == f.stamp_ns
        assert t >= _stamp(pc)
        assert [(x.name, x.offset, x.datatype) for x in pc.fields] == [
            ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("intensity", 12, 7), ("ring", 16, 4),
            ("time", 20, 7)]  # fmt: skip
        a = np.frombuffer(pc.data.tobytes(), dtype=POINT_DTYPE)
        assert pc.width == len(a) == len(f.points) and pc.point_step == 24
        np.testing.assert_array_equal(a["x"], f.points[:, 0])
        np.testing.assert_array_equal(a["ring"], f.points[:, 4].astype(np.uint16))
        np.testing.assert_array_equal(a["time"], f.points[:, 5])
        assert "label" in [x.name for x in gt.fields]
        g = np.frombuffer(gt.data.tobytes(), dtype=LABEL_DTYPE)
        assert g["label"].dtype == np.uint16
        np.testing.assert_array_equal(g["label"], f.labels)
        np.testing.assert_array_equal(g["z"], f.points[:, 2])
        assert _stamp(gt) == f.stamp_ns


def test_stamps_rates_offsets(bag) -> None:
    _, _, _, msgs = bag
    lidar = np.array([_stamp(m) for _, m in msgs["/lidar/points"]])
    np.testing.assert_array_equal(np.diff(lidar), 100_000_000)
    offs = []
    for n in ("front", "front_left", "front_right"):
        cam = np.array([_stamp(m) for _, m in msgs[f"/camera/{n}/image_raw"]])
        info = np.array([_stamp(m) for _, m in msgs[f"/camera/{n}/camera_info"]])
        np.testing.assert_array_equal(cam, info)
        d = cam - lidar
        assert np.all((d > 1_000_000) & (d < 15_000_000))  # a few ms after each sweep
        assert np.all(np.abs(np.diff(cam) - 100_000_000) < 3_000_000)  # own 10 Hz with jitter
        offs.append(d.mean())
    assert len({round(o / 1e6) for o in offs}) > 1  # distinct per-camera offsets
    log = [t for ms in msgs.values() for t, _ in ms]
    assert min(log) >= lidar[0]


def test_calibration_round_trip(bag) -> None:
    out, path, _, msgs = bag
    cams = load_calibration(str(Path(out) / "calibration.yaml"))
    assert [c.name for c in cams] == ["front", "front_left", "front_right"]
    w = _world()
    for c, ref in zip(cams, w.cameras, strict=True):
        np.testing.assert_allclose(c.T_cam_lidar, ref.T_cam_lidar, atol=1e-12)
        _, info = msgs[f"/camera/{c.name}/camera_info"][0]
        assert (info.width, info.height) == (160, 90)
        assert info.header.frame_id == f"camera_{c.name}"
        np.testing.assert_allclose(info.k.reshape(3, 3), c.K)
        np.testing.assert_allclose(info.p.reshape(3, 4)[:, :3], c.K)
        _, img = msgs[f"/camera/{c.name}/image_raw"][0]
        assert img.encoding == "rgb8" and img.step == 160 * 3 and len(img.data) == 160 * 90 * 3
    _, tf = msgs["/tf_static"][0]
    by_child = {t.child_frame_id: t for t in tf.transforms}
    for c in cams:
        t = by_child[c.frame_id]
        assert t.header.frame_id == "lidar"
        r = t.transform.rotation
        R = quat_to_rot([r.x, r.y, r.z, r.w])
        tr = t.transform.translation
        np.testing.assert_allclose(R, c.T_lidar_cam[:3, :3], atol=1e-9)
        np.testing.assert_allclose([tr.x, tr.y, tr.z], c.T_lidar_cam[:3, 3], atol=1e-9)
    meta = yaml.safe_load((Path(path) / "metadata.yaml").read_text())
    custom = meta["rosbag2_bagfile_information"].get("custom_data") or {}
    assert "xmodelkd_ros.calibration" in custom


def test_bag_images_match_world(bag) -> None:
    _, _, _, msgs = bag
    w = _world()
    _, img = msgs["/camera/front/image_raw"][1]
    ref, _, _ = w.render(w.cameras[0], _stamp(img))
    np.testing.assert_array_equal(img.data.reshape(90, 160, 3), ref)
