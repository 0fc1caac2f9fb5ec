"""Several LiDARs in one node, the vehicle frame and the ego box, without ROS: the fair
hand-off, transforms, the box, per-LiDAR parameters and diagnostics, the launch
arguments and the process's quiet threads. No rclpy, no model, well under a second each
(the one child-process test aside)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from xmodelkd_ros.geometry import invert_transform, xyz_rpy_transform
from xmodelkd_ros.msgs import PointCloud2, PointField, decode_cloud, encode_filtered_cloud
from xmodelkd_ros.node.diagnostics import OK, WARN, StatsSnapshot, diagnostics
from xmodelkd_ros.node.params import ConfigError, parse_config
from xmodelkd_ros.node.processing import ScanProcessor, filter_labels
from xmodelkd_ros.node.slot import FairSlots, SlotClosedError
from xmodelkd_ros.node.vehicle import (
    EgoBox,
    launch_parameters,
    lidar_calibration,
    parse_transform,
)
from xmodelkd_ros.procenv import openmp_loaded, quiet_cpu_threads
from xmodelkd_ros.sync import OrderStats, SyncStats

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- fair slots


def test_slots_serve_inputs_in_turn_and_drop_only_the_flooders_stale_scans():
    slots = FairSlots(["fast", "slow"])
    for i in range(10):
        slots.put("fast", i)
    slots.put("slow", "s0")
    assert slots.get(timeout=0) == ("fast", 9)  # latest only: the newest fast scan
    assert slots.get(timeout=0) == ("slow", "s0")  # then the slow one, before more fast
    assert slots.get(timeout=0) is None
    assert slots.slot("fast").dropped == 9 and slots.slot("slow").dropped == 0
    assert slots.served == {"fast": 1, "slow": 1}


@settings(max_examples=80, deadline=None)
@given(arrivals=st.lists(st.lists(st.sampled_from("abc"), max_size=12), min_size=1,
                         max_size=40))  # fmt: skip
def test_a_waiting_input_is_served_within_one_turn_of_each_other(arrivals):
    """Whatever arrives between the worker's takes, an input holding a scan is served
    before any other input is served twice (round robin over the non-empty slots)."""
    keys = ["a", "b", "c"]
    slots = FairSlots(keys)
    waiting_since: dict[str, int] = {}  # key -> takes made by others since it had a scan
    for burst in arrivals:
        for k in burst:
            slots.put(k, k)
            waiting_since.setdefault(k, 0)
        taken = slots.get(timeout=0)
        if taken is None:
            assert not waiting_since
            continue
        key = taken[0]
        assert key in waiting_since
        del waiting_since[key]
        for k in waiting_since:
            waiting_since[k] += 1
            assert waiting_since[k] < len(keys), (k, waiting_since)


def test_fifo_slots_keep_depth_per_input():
    slots = FairSlots(["a", "b"], "fifo", 2)
    for i in range(3):
        slots.put("a", i)
    slots.put("b", "x")
    got = [slots.get(timeout=0) for _ in range(3)]
    assert got == [("a", 1), ("b", "x"), ("a", 2)]
    assert slots.slot("a").dropped == 1


def test_slots_close_wakes_the_worker_and_reject_bad_keys():
    slots = FairSlots(["a"])
    raised = threading.Event()

    def worker() -> None:
        try:
            slots.get(timeout=5)
        except SlotClosedError:
            raised.set()

    t = threading.Thread(target=worker)
    t.start()
    slots.close()
    t.join(timeout=5)
    assert raised.is_set()
    assert slots.put("a", 1) is False
    for bad in ([], ["a", "a"]):
        with pytest.raises(ValueError, match="distinct"):
            FairSlots(bad)


# ----------------------------------------------------------------------------- geometry


def test_xyz_rpy_matches_the_4x4_form_and_urdf_order():
    T6 = parse_transform("t", [1.0, 2.0, 3.0, 0.1, -0.2, 0.3])
    T16 = parse_transform("t", list(T6.ravel()))
    np.testing.assert_allclose(T6, T16)
    # yaw only: x axis of the LiDAR points along +y of the vehicle
    T = xyz_rpy_transform([0, 0, 0], [0, 0, np.pi / 2])
    np.testing.assert_allclose(T[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    # roll applied first, then pitch, then yaw (fixed axes)
    r, p, y = 0.3, 0.2, 0.1
    Rx = xyz_rpy_transform([0, 0, 0], [r, 0, 0])[:3, :3]
    Ry = xyz_rpy_transform([0, 0, 0], [0, p, 0])[:3, :3]
    Rz = xyz_rpy_transform([0, 0, 0], [0, 0, y])[:3, :3]
    np.testing.assert_allclose(xyz_rpy_transform([0, 0, 0], [r, p, y])[:3, :3], Rz @ Ry @ Rx)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([1.0] * 12, "16 values"),
        ([2.0, 0, 0, 0, 0, 2.0, 0, 0, 0, 0, 2.0, 0, 0, 0, 0, 1.0], "not a rigid"),
        ([1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 0, 1.0, 0, 1.0, 0, 0, 1.0], "not a rigid"),
        ([0.0, 0.0, float("nan"), 0.0, 0.0, 0.0], "finite"),
    ],
)
def test_bad_transforms_are_refused_with_the_reason(value, match):
    with pytest.raises(ConfigError, match=match):
        parse_transform("lidars.front.T_vehicle_lidar", value)
    assert parse_transform("x", []) is None and parse_transform("x", None) is None


BOX = EgoBox(True, (-1.0, -1.0, -0.5), (4.0, 1.0, 2.0))


@settings(max_examples=60, deadline=None)
@given(pose=st.lists(st.floats(-3, 3), min_size=6, max_size=6),
       seed=st.integers(0, 2**31 - 1))  # fmt: skip
def test_ego_box_is_stated_in_the_vehicle_frame(pose, seed):
    """Points placed in the vehicle frame, seen from a LiDAR anywhere on it: those inside
    the box (with a margin against float32 rounding) are found, those outside are not."""
    rng = np.random.default_rng(seed)
    T = xyz_rpy_transform(pose[:3], pose[3:])
    lo, hi = np.array(BOX.lo), np.array(BOX.hi)
    inside = rng.uniform(lo + 0.01, hi - 0.01, (50, 3))
    outside = rng.uniform(-10, 10, (200, 3))
    outside = outside[np.any((outside < lo - 0.01) | (outside > hi + 0.01), axis=1)]
    v = np.concatenate([inside, outside])
    lidar = (v - T[:3, 3]) @ T[:3, :3]  # = invert_transform(T) applied to v
    np.testing.assert_allclose(lidar @ T[:3, :3].T + T[:3, 3], v, atol=1e-9)
    mask = BOX.inside(lidar.astype(np.float32), T)
    assert mask[: len(inside)].all() and not mask[len(inside):].any()
    np.testing.assert_allclose(invert_transform(T) @ T, np.eye(4), atol=1e-9)


def test_ego_box_off_or_without_transform():
    xyz = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]], np.float32)
    assert dataclasses.replace(BOX, enabled=False).inside(xyz, None) is None
    assert list(BOX.inside(xyz, None)) == [True, False]  # no transform: identity
    assert BOX.describe() == "x [-1, 4] y [-1, 1] z [-0.5, 2]"


# ----------------------------------------------------------------------------- parameters


def test_several_lidars_get_their_own_topics_and_transforms():
    cfg = parse_config({"model": "/m", "lidars.names": ["front", "rear"],
                        "lidars.front.points_topic": "/sensing/front/points",
                        "lidars.rear.T_vehicle_lidar": [-1.0, 0.0, 1.8, 0.0, 0.0, np.pi]})
    front, rear = cfg.lidars
    assert (front.name, front.points_topic, front.segmentation_topic) == (
        "front", "/sensing/front/points", "~/front/output/segmentation")
    assert rear.points_topic == "~/rear/input/points"
    assert rear.filtered_topic == "~/rear/output/filtered" and front.T_vehicle_lidar is None
    np.testing.assert_allclose(rear.T_vehicle_lidar[:3, 3], [-1.0, 0.0, 1.8])
    assert cfg.cameras.lidar == "front"  # cameras pair with the first LiDAR by default
    single = parse_config({"model": "/m"}).lidars
    assert [(x.name, x.points_topic, x.segmentation_topic) for x in single] == [
        ("", "~/input/points", "~/output/segmentation")]  # the single-topic form
    assert not parse_config({"model": "/m"}).ego_box.enabled


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"ego_box.min_x": 5.0}, "ego_box.min_x 5 must be below ego_box.max_x 4"),
        ({"ego_box.min_z": 2.0, "ego_box.enabled": True}, "min_z 2 must be below"),
        ({"ego_box.max_y": float("inf")}, "ego_box.max_y=inf must be finite"),
        ({"ego_box.min_x": "near"}, "is not a number"),
        ({"lidars.names": ["a", "a"]}, "duplicates"),
        ({"lidars.names": ["front/left"]}, "alphanumeric"),
        ({"lidars.names": ["a", "b"], "lidars.b.segmentation_topic": "~/a/output/segmentation"},
         "two LiDARs publish on ~/a/output/segmentation"),
        ({"lidars.names": ["a"], "lidars.a.T_vehicle_lidar": [1.0] * 5}, "got 5"),
        ({"lidars.names": ["a"], "cameras.lidar": "b"}, "cameras.lidar='b'"),
        ({"input.T_vehicle_lidar": [0.0] * 16}, "input.T_vehicle_lidar is not a rigid"),
    ],
)  # fmt: skip
def test_bad_lidar_and_ego_box_parameters_are_refused(values, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({"model": "/m", **values})


# ----------------------------------------------------------------------------- processing


def _cloud(xyz: np.ndarray) -> PointCloud2:
    pts = np.zeros((len(xyz), 4), np.float32)
    pts[:, :3] = xyz
    return PointCloud2(height=1, width=len(pts), point_step=16, row_step=16 * len(pts),
                       data=pts.tobytes(),
                       fields=[PointField(n, 4 * i) for i, n in enumerate("xyz")]
                       + [PointField("intensity", 12)])  # fmt: skip


class _Model:
    """Labels every point it is given 9 with confidence 0.8 and remembers what it got."""

    metadata = SimpleNamespace(intensity_range=None)

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def segment(self, pts: np.ndarray) -> SimpleNamespace:
        self.seen.append(pts.copy())
        n = len(pts)
        return SimpleNamespace(labels=np.full(n, 9, np.uint16),
                               confidence=np.full(n, 0.8, np.float32), timings={})  # fmt: skip


def test_ego_points_skip_the_network_are_unlabeled_and_leave_the_filtered_cloud():
    """A LiDAR mounted 1.5 m up and 2 m forward: its points on the roof (inside the box in
    the vehicle frame) never reach the model, carry label 0 / confidence 0 and are
    removed from the filtered cloud even though label 0 is not a filtered class."""
    T = xyz_rpy_transform([2.0, 0.0, 1.5], [0.0, 0.0, 0.0])
    xyz = np.array([[0.5, 0.0, 0.2],   # vehicle (2.5, 0, 1.7): on the roof
                    [-3.5, 0.5, -1.0],  # vehicle (-1.5, 0.5, 0.5): behind the bumper
                    [10.0, 0.0, 0.0],  # ahead
                    [-2.5, -0.9, -1.7]])  # vehicle (-0.5, -0.9, -0.2): inside
    cfg = parse_config({"model": "/m", "ego_box.enabled": True, "ego_box.min_z": -0.3})
    model = _Model()
    proc = ScanProcessor(model, cfg.input, cfg.ego_box, T)
    scan = proc.segment(_cloud(xyz))
    assert list(scan.ego) == [True, False, False, True] and scan.ego_points == 2
    np.testing.assert_allclose(model.seen[-1][:, :3], xyz[[1, 2]])
    assert list(scan.labels) == [0, 9, 9, 0]
    np.testing.assert_allclose(scan.confidence, [0.0, 0.8, 0.8, 0.0])
    labels, remove = filter_labels(scan, [])
    out = decode_cloud(encode_filtered_cloud(scan.cloud, labels, remove))
    np.testing.assert_allclose(out.xyz, xyz[[1, 2]])
    # a runtime change turns it off from the next scan on: everything is segmented
    proc.set_input_config(cfg.input, dataclasses.replace(cfg.ego_box, enabled=False))
    scan = proc.segment(_cloud(xyz))
    assert scan.ego is None and list(scan.labels) == [9, 9, 9, 9]
    assert filter_labels(scan, [9])[1] == [9]


# ----------------------------------------------------------------------------- diagnostics


def _snapshot(lidar: str, **kw) -> StatsSnapshot:
    base = dict(
        node_name="seg", input_topic=f"/{lidar}/points", camera_topics={},
        backend="torch", latency_ms={"total": (40.0, 50.0)}, input_rate_hz=10.0,
        output_rate_hz=10.0,
        counts=dict(received=100, processed=100, malformed=0, errors=0, empty=0),
        dropped_stale=0, queue_high_water=1, order=OrderStats(admitted=100),
        sync=SyncStats(cameras={}), input_publishers=1, since_last_scan_s=0.05,
        messages_lost=0, messages_lost_recent=0, incompatible_qos=0,
        incompatible_qos_policy="", qos_events="message_lost", intensity_found=True,
        intensity_model_range=(0.0, 1.0), intensity_observed=(0.0, 0.9),
        intensity_scans_outside=0, intensity_normalized=False, rss_mb=300.0, last_error="",
        lidar=lidar, ego_points_last=12, ego_points_total=340,
    )  # fmt: skip
    base.update(kw)
    return StatsSnapshot(**base)


def test_each_lidar_has_its_own_status_and_a_dead_one_is_reported():
    cfg = parse_config({"model": "/m", "lidars.names": ["front", "rear"],
                        "ego_box.enabled": True})  # fmt: skip
    dead = _snapshot("rear", input_publishers=0, input_rate_hz=0.0, since_last_scan_s=4.2)
    front, rear = diagnostics([_snapshot("front"), dead], cfg)
    assert (front.name, front.level, front.message) == ("seg: segmentation front", OK, "ok")
    assert rear.name == "seg: segmentation rear" and rear.level == WARN
    assert "no input scans for 4.2 s" in rear.message and rear.hardware_id == "/rear/points"
    kv = front.values
    assert (kv["ego_box_points_last_scan"], kv["ego_box_points_total"]) == ("12", "340")
    assert kv["ego_box"] == "x [-1, 4] y [-1, 1] z [-0.3, 2]" and kv["lidars_in_process"] == "2"


# ----------------------------------------------------------------------------- launch


def test_launch_parameters_from_the_lidar_list_and_a_calibration_file(tmp_path):
    calib = tmp_path / "lidars.yaml"
    calib.write_text(yaml.safe_dump({"lidars": {
        "front": {"xyz": [3.8, 0.0, 0.6], "rpy": [0.0, 0.0, 0.0]},
        "rear": {"T_vehicle_lidar": [float(x) for x in np.eye(4).ravel()]}}}))  # fmt: skip
    p = launch_parameters("front=/sensing/front/points, rear", str(calib))
    assert p["lidars.names"] == ["front", "rear"]
    assert p["lidars.front.points_topic"] == "/sensing/front/points"
    assert "lidars.rear.points_topic" not in p  # its default topic
    assert p["lidars.front.T_vehicle_lidar"][3] == 3.8
    assert len(p["lidars.rear.T_vehicle_lidar"]) == 16
    cfg = parse_config({"model": "/m", **p})
    np.testing.assert_allclose(cfg.lidars[0].T_vehicle_lidar[:3, 3], [3.8, 0.0, 0.6])
    assert launch_parameters("") == {}
    with pytest.raises(ConfigError, match="holds 2 LiDARs"):
        launch_parameters("", str(calib))
    with pytest.raises(ConfigError, match=r"no transform for LiDAR\(s\) side"):
        launch_parameters("front,side", str(calib))
    with pytest.raises(ConfigError, match="named twice"):
        launch_parameters("a,a")
    calib.write_text("lidars: {front: {xyz: [1, 2], rpy: [0, 0, 0]}}")
    with pytest.raises(ConfigError, match="3 values each"):
        lidar_calibration(calib)


def test_launch_file_passes_the_lidars_and_the_ego_box(load_launch_file, tmp_path):
    mod = load_launch_file(ROOT / "launch" / "segment.launch.py")
    actions = mod.generate_launch_description().args[0]
    declared = {a.args[0]: a.kwargs["default_value"] for a in actions[:-1]}
    ctx = dict(declared, lidars="front=/f/points,rear=/r/points", ego_box="true")
    (node,) = actions[-1].kwargs["function"](ctx)
    params = node.kwargs["parameters"][1]
    assert params["lidars.names"] == ["front", "rear"] and params["ego_box.enabled"] is True
    assert params["lidars.rear.points_topic"] == "/r/points"
    (node,) = actions[-1].kwargs["function"](declared)  # defaults: the single-topic node
    assert set(node.kwargs["parameters"][1]) == {"use_sim_time"}


# ----------------------------------------------------------------------------- shared CPU


def test_quiet_threads_default_keeps_the_users_choice():
    env: dict[str, str] = {}
    assert quiet_cpu_threads(env) == "PASSIVE (set by the node)"
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert quiet_cpu_threads(env) == "ACTIVE (from the environment)"
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert openmp_loaded("7f00 r-xp /usr/lib/x86_64-linux-gnu/libgomp.so.1")
    assert not openmp_loaded("7f00 r-xp /usr/lib/libc.so.6")


def test_node_entry_point_sets_the_wait_policy_before_openmp_loads():
    """The node's module sets the policy before any of its imports loads OpenMP (torch,
    the fused kernels): in a fresh process it reports 'set by the node', not 'too late',
    and the OpenMP runtime is loaded by the time the node module finished importing."""
    code = ("import xmodelkd_ros.node.main as m, os\nfrom xmodelkd_ros.procenv import "
            "openmp_loaded\nimport torch\ntorch.ones(4).sum()\n"
            "print(m.CPU_WAIT_POLICY, os.environ['OMP_WAIT_POLICY'], openmp_loaded())")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["PASSIVE", "(set", "by", "the", "node)", "PASSIVE", "True"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.stdout.split()[:4] == ["ACTIVE", "(from", "the", "environment)"], out.stderr
