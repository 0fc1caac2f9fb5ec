"""The node's ROS-free parts: parameters, the hand-off slot, statistics, overlay, launch file.

These run everywhere (no rclpy needed) and in well under a second.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from xmodelkd_ros.geometry import PinholeCamera
from xmodelkd_ros.labels import CLASS_NAMES, PALETTE
from xmodelkd_ros.node.overlay import draw_overlay
from xmodelkd_ros.node.params import (
    PARAM_SPECS,
    ConfigError,
    camera_param_specs,
    class_labels,
    parse_config,
)
from xmodelkd_ros.node.slot import FrameSlot, SlotClosedError
from xmodelkd_ros.stats import LatencyWindow, RateMeter, StageLatencies

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- parameters


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def test_config_file_matches_declared_parameters():
    """config/segment.yaml sets exactly the declared parameters, with matching types."""
    doc = yaml.safe_load((ROOT / "config" / "segment.yaml").read_text())
    values = _flatten(doc["/**"]["ros__parameters"])
    specs = {s.name: s for s in PARAM_SPECS}
    assert set(values) == set(specs)
    for name, v in values.items():
        d = specs[name].default
        if d is not None and not isinstance(d, list):
            assert type(v) is type(d), (name, v, d)  # ROS parameters are strictly typed
    for s in PARAM_SPECS:
        assert len(s.description) > 15, s.name


def test_parse_config_defaults_and_cameras():
    cfg = parse_config({
        "model": "/m", "cameras.names": ["front", "back_left"],
        "cameras.front.image_topic": "/f", "cameras.front.T_cam_lidar": list(np.eye(4).ravel()),
        "cameras.back_left.image_topic": "/b",
    })  # fmt: skip
    assert cfg.model.backend == "auto" and cfg.queue.policy == "latest"
    assert cfg.model.inference_threads == 0  # all cores
    assert cfg.queue.qos_input == "sensor_data"
    cams = cfg.cameras.cameras
    assert [c.name for c in cams] == ["front", "back_left"]
    assert cams[0].T_cam_lidar.shape == (4, 4) and cams[1].T_cam_lidar is None
    assert cfg.output.filter_labels == class_labels(["road", "parking", "sidewalk", "other-ground",
                                              "terrain"])  # fmt: skip
    assert camera_param_specs("front")[0].name == "cameras.front.image_topic"


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"model": ""}, "model is empty"),
        ({"backend": "cuda"}, "backend='cuda'"),
        ({"qos.input": "fast"}, "qos.input"),
        ({"queue.policy": "lifo"}, "queue.policy"),
        ({"queue.depth": 0}, "queue.depth"),
        ({"inference_threads": -1}, "inference_threads"),
        ({"input.min_range": 5.0, "input.max_range": 2.0}, "min_range"),
        ({"diagnostics.warn_ms": 300.0}, "error_ms"),
        ({"output.filter_classes": ["roads"]}, "unknown class 'roads'"),
        ({"output.overlay_alpha": 2.0}, "overlay_alpha"),
        ({"cameras.names": ["a", "a"]}, "duplicates"),
        ({"cameras.names": ["a"], "cameras.a.image_topic": "/a",
          "cameras.a.T_cam_lidar": [1.0] * 12}, "16 values"),
    ],
)
def test_parse_config_rejects_bad_values(values, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({"model": "/m", **values})


def test_class_labels():
    assert class_labels(["car", "road", "0", "unlabeled"]) == [1, CLASS_NAMES.index("road") + 1,
                                                               0, 0]  # fmt: skip


# ----------------------------------------------------------------------------- slot


def test_latest_slot_drops_stale_and_stays_bounded():
    slot = FrameSlot("latest")
    for i in range(50):
        slot.put(i)
    assert len(slot) == 1 and slot.dropped == 49 and slot.high_water == 1
    assert slot.get(timeout=0) == 49
    assert slot.get(timeout=0.01) is None


def test_fifo_slot_keeps_depth_oldest_dropped():
    slot = FrameSlot("fifo", depth=3)
    for i in range(5):
        slot.put(i)
    assert [slot.get(0), slot.get(0), slot.get(0)] == [2, 3, 4]
    assert slot.dropped == 2


def test_slot_close_wakes_worker():
    slot = FrameSlot()
    seen: list[Any] = []

    def worker() -> None:
        while True:
            try:
                item = slot.get(timeout=5)
            except SlotClosedError:
                seen.append("closed")
                return
            if item is not None:
                seen.append(item)

    t = threading.Thread(target=worker)
    t.start()
    slot.put("a")
    while not seen:
        threading.Event().wait(0.01)
    slot.close()
    t.join(timeout=2)
    assert not t.is_alive() and seen == ["a", "closed"]
    assert slot.put("late") is False


def test_slot_rejects_bad_policy():
    with pytest.raises(ValueError, match="queue policy"):
        FrameSlot("lifo")


# ----------------------------------------------------------------------------- stats


def test_latency_percentiles_bounded_window():
    w = LatencyWindow(size=100)
    assert np.isnan(w.percentiles()[0])
    for v in range(1000):
        w.add(v / 1000)
    assert len(w) == 100 and w.count == 1000
    p50, p95 = w.percentiles()
    assert p50 == pytest.approx(0.9495) and p95 == pytest.approx(0.99405)
    s = StageLatencies(10, ("decode",))
    s.add_all({"decode": 0.002, "inference": 0.010})
    assert s.summary_ms() == {"decode": (2.0, 2.0), "inference": (10.0, 10.0)}


def test_rate_meter_window():
    r = RateMeter(window_s=2.0)
    for i in range(20):
        r.tick(now=100.0 + i * 0.1)  # 10 Hz for 2 s
    assert r.rate(now=101.95) == pytest.approx(10.0)
    assert r.rate(now=110.0) == 0.0
    assert r.total == 20


# ----------------------------------------------------------------------------- overlay


def _forward_camera() -> PinholeCamera:
    T = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    return PinholeCamera("front", K, 64, 48, T)


def test_overlay_paints_projected_labels_near_on_top():
    cam = _forward_camera()
    img = np.full((48, 64, 3), 7, np.uint8)
    xyz = np.array([[20.0, 0, 0], [10.0, 0, 0], [-10.0, 0, 0], [10.0, 0.4, 0]])
    labels = np.array([9, 1, 1, 0])  # road far, car near (same pixel), behind, unlabeled
    out = draw_overlay(img, cam, xyz, labels, alpha=1.0, radius=0)
    assert tuple(out[24, 32]) == tuple(PALETTE[1])  # the nearer car wins the pixel
    changed = np.argwhere(np.any(out != img, axis=2))
    assert changed.tolist() == [[24, 32]]  # behind-camera and unlabeled points not drawn
    assert np.array_equal(img, np.full((48, 64, 3), 7, np.uint8))  # input untouched


def test_overlay_scales_to_resized_image():
    cam = _forward_camera()
    img = np.zeros((24, 32, 3), np.uint8)  # half resolution stream
    out = draw_overlay(img, cam, np.array([[10.0, 0, 0]]), np.array([1]), alpha=1.0, radius=0)
    assert tuple(out[12, 16]) == tuple(PALETTE[1])


# ----------------------------------------------------------------------------- launch file


def test_launch_file_compiles_and_declares_arguments(load_launch_file):
    """Arguments declared, node built with params, overrides, remappings (see the
    ``load_launch_file`` fixture for what this does and does not prove)."""
    mod = load_launch_file(ROOT / "launch" / "segment.launch.py")
    ld = mod.generate_launch_description()
    actions = ld.args[0]
    declared = {a.args[0]: a.kwargs["default_value"] for a in actions[:-1]}
    for name in ("params_file", "model", "namespace", "use_sim_time", "input_points",
                 "output_segmentation", "output_visualization", "output_filtered"):
        assert name in declared
    assert all(a.kwargs["description"] for a in actions[:-1])

    ctx = dict(declared, model="/models/student", use_sim_time="true", namespace="sensing",
               input_points="/lidar/points")  # fmt: skip
    (node,) = actions[-1].kwargs["function"](ctx)
    kw = node.kwargs
    assert kw["package"] == "xmodelkd_ros" and kw["executable"] == "segment_node"
    assert kw["namespace"] == "sensing"
    assert kw["parameters"][0] == "/opt/share/xmodelkd_ros/config/segment.yaml"
    assert kw["parameters"][1] == {"use_sim_time": True, "model": "/models/student"}
    assert kw["remappings"] == [("~/input/points", "/lidar/points")]
