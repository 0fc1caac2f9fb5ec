"""The node's ROS-free health logic: intensity guard, diagnostics rules, params files,
unknown and empty parameters. No rclpy, no model, no clock."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xmodelkd_ros.node.diagnostics import ERROR, OK, WARN, StatsSnapshot, diagnostics
from xmodelkd_ros.node.params import (
    ConfigError,
    check_params_file,
    check_params_files,
    params_file_args,
    parse_config,
    unknown_parameters,
)
from xmodelkd_ros.node.processing import (
    INTENSITY_TOLERANCE,
    IntensityGuard,
    ScanProcessor,
    model_intensity_range,
)
from xmodelkd_ros.sync import CameraStats, OrderStats, SyncStats

# ----------------------------------------------------------------------------- intensity


def test_warn_policy_counts_outside_scans_and_flags_the_first_once():
    g = IntensityGuard((0.0, 1.0), "warn")
    inside = g.apply(np.array([0.0, 0.5, 1.0 + INTENSITY_TOLERANCE / 2], np.float32))
    assert not inside.outside and not inside.first
    raw = np.array([0.0, 17.0, 255.0], np.float32)
    a, b = g.apply(raw.copy()), g.apply(raw.copy())
    assert a.outside and a.first and not a.normalized
    assert b.outside and not b.first  # logged once, counted every time
    assert g.scans_outside == 2 and a.observed == (0.0, 255.0)


def test_normalize_maps_the_seen_envelope_onto_the_model_range():
    g = IntensityGuard((0.0, 1.0), "normalize")
    x = np.array([0.0, 51.0, 255.0], np.float32)
    c = g.apply(x)
    assert c.normalized
    np.testing.assert_allclose(x, [0.0, 0.2, 1.0], rtol=1e-6)
    y = np.array([25.5, 127.5], np.float32)  # a later, darker scan: same mapping, not stretched
    g.apply(y)
    np.testing.assert_allclose(y, [0.1, 0.5], rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(lo=st.floats(-5, 5), span=st.floats(0.5, 10),
       data=st.lists(st.floats(-1000, 1000, width=32), min_size=1, max_size=50))  # fmt: skip
def test_normalized_values_always_land_in_the_model_range(lo, span, data):
    g = IntensityGuard((lo, lo + span), "normalize")
    x = np.array(data, np.float32)
    c = g.apply(x)
    if c.normalized:
        tol = 1e-4 * max(1.0, abs(lo) + span)
        assert x.min() >= lo - tol and x.max() <= lo + span + tol
    else:  # nothing outside: values untouched, and indeed inside (with the tolerance)
        np.testing.assert_array_equal(x, np.array(data, np.float32))
        assert not g.is_outside(float(x.min()), float(x.max()))


def test_off_policy_and_unknown_range_check_nothing():
    for g in (IntensityGuard((0.0, 1.0), "off"), IntensityGuard(None, "normalize")):
        x = np.array([300.0], np.float32)
        assert not g.apply(x).outside and x[0] == 300.0 and g.scans_outside == 0
    with pytest.raises(ValueError, match="intensity policy"):
        IntensityGuard((0.0, 1.0), "clip")


def test_model_range_read_from_metadata_when_present():
    seg = SimpleNamespace(metadata=SimpleNamespace(intensity_range=[0, 255]))
    assert model_intensity_range(seg) == (0.0, 255.0)
    assert model_intensity_range(SimpleNamespace(metadata=None)) is None
    assert model_intensity_range(SimpleNamespace()) is None  # older runtime: no attribute
    bad = SimpleNamespace(metadata=SimpleNamespace(intensity_range=[1.0, 1.0]))
    assert model_intensity_range(bad) is None


def test_processor_applies_scale_then_guard_and_feeds_the_model():
    """The model receives the scaled, normalized intensity; a runtime policy change
    applies from the next scan."""
    from xmodelkd_ros.msgs import PointCloud2, PointField

    seen = []

    class Model:
        metadata = SimpleNamespace(intensity_range=(0.0, 1.0))

        def segment(self, pts):
            seen.append(pts.copy())
            n = len(pts)
            return SimpleNamespace(labels=np.ones(n, np.uint16),
                                   confidence=np.ones(n, np.float32), timings={})  # fmt: skip

    pts = np.array([[1, 0, 0, 0], [2, 0, 0, 100], [3, 0, 0, 200]], np.float32)
    msg = PointCloud2(height=1, width=3, point_step=16, row_step=48, data=pts.tobytes(),
                      fields=[PointField(n, 4 * i) for i, n in enumerate("xyz")]
                      + [PointField("intensity", 12)])  # fmt: skip
    cfg = parse_config({"model": "/m", "input.intensity_scale": 0.5,
                        "input.intensity_policy": "warn"})  # fmt: skip
    proc = ScanProcessor(Model(), cfg.input)
    out = proc.segment(msg)
    np.testing.assert_allclose(seen[-1][:, 3], [0, 50, 100])
    assert out.intensity.outside and out.intensity.first and list(out.labels) == [1, 1, 1]
    proc.set_input_config(dataclasses.replace(cfg.input, intensity_policy="normalize"))
    proc.segment(msg)
    np.testing.assert_allclose(seen[-1][:, 3], [0, 0.5, 1.0], rtol=1e-6)


# ----------------------------------------------------------------------------- diagnostics


def _snapshot(**kw) -> StatsSnapshot:
    base = dict(
        node_name="seg", input_topic="/points", camera_topics={"front": "/f"},
        backend="torch", latency_ms={"total": (40.0, 50.0)}, input_rate_hz=10.0,
        output_rate_hz=10.0,
        counts=dict(received=100, processed=100, malformed=0, errors=0, empty=0),
        dropped_stale=0, queue_high_water=1, order=OrderStats(admitted=100),
        sync=SyncStats(cameras={"front": CameraStats(received=100, matched=99, alive=True)}),
        input_publishers=1, since_last_scan_s=0.05, messages_lost=0, messages_lost_recent=0,
        incompatible_qos=0, incompatible_qos_policy="", qos_events="message_lost",
        intensity_found=True, intensity_model_range=(0.0, 1.0),
        intensity_observed=(0.0, 0.9), intensity_scans_outside=0,
        intensity_normalized=False, rss_mb=300.0, last_error="",
    )  # fmt: skip
    base.update(kw)
    return StatsSnapshot(**base)


CFG = parse_config({"model": "/m", "cameras.names": ["front"],
                    "cameras.front.image_topic": "/f", "input.timeout_s": 1.0})  # fmt: skip


def test_healthy_node_is_ok():
    seg, cam = diagnostics(_snapshot(), CFG)
    assert (seg.level, seg.message, cam.level) == (OK, "ok", OK)
    assert seg.values["input_publishers"] == "1" and seg.values["input_rate_hz"] == "10.00"
    assert cam.name == "seg: camera front" and cam.values["matched"] == "99"


@pytest.mark.parametrize(
    ("kw", "level", "text"),
    [
        ({"latency_ms": {"total": (90.0, 150.0)}}, WARN, "p95 processing 150 ms > warn"),
        ({"latency_ms": {"total": (90.0, 250.0)}}, ERROR, "> error 200 ms"),
        ({"since_last_scan_s": 3.0}, WARN, "1 publisher(s) but no cloud arrived for 3.0 s"),
        ({"since_last_scan_s": None, "counts": dict(received=0, processed=0, malformed=0,
                                                    errors=0, empty=0)},
         WARN, "no cloud arrived ever"),
        ({"input_publishers": 0, "since_last_scan_s": None, "input_rate_hz": 0.0,
          "counts": dict(received=0, processed=0, malformed=0, errors=0, empty=0)},
         WARN, "no input scans"),
        ({"messages_lost": 7, "messages_lost_recent": 3}, WARN, "3 clouds lost in DDS"),
        ({"incompatible_qos": 1, "incompatible_qos_policy": "RELIABILITY"}, ERROR,
         "incompatible QoS (RELIABILITY)"),
        ({"intensity_scans_outside": 4, "intensity_observed": (0.0, 255.0)}, WARN,
         "intensity [0, 255] outside the model's [0, 1] in 4 scans"),
        ({"intensity_found": False}, WARN, "no intensity field"),
        ({"counts": dict(received=10, processed=8, malformed=1, errors=1, empty=0)}, WARN,
         "1 malformed, 1 failed"),
    ],
)  # fmt: skip
def test_each_problem_raises_the_level_and_says_why(kw, level, text):
    seg = diagnostics(_snapshot(**kw), CFG)[0]
    assert seg.level == level and text in seg.message, seg.message


def test_normalized_intensity_is_reported_but_not_a_warning():
    seg = diagnostics(_snapshot(intensity_scans_outside=4, intensity_normalized=True), CFG)[0]
    assert seg.level == OK and "normalized" in seg.message


def test_lost_messages_warn_only_while_new_ones_are_lost():
    seg = diagnostics(_snapshot(messages_lost=7, messages_lost_recent=0), CFG)[0]
    assert seg.level == OK and seg.values["messages_lost"] == "7"


def test_camera_statuses():
    dead = SyncStats(cameras={"front": CameraStats(received=0, missed=5)})
    assert diagnostics(_snapshot(sync=dead), CFG)[1].message == "no images received"
    stale = SyncStats(cameras={"front": CameraStats(received=5, alive=False)})
    assert "stale" in diagnostics(_snapshot(sync=stale), CFG)[1].message
    cfg = parse_config({"model": "/m", "cameras.names": ["front"], "output.overlay": True,
                        "cameras.front.image_topic": "/f"})  # fmt: skip
    cam = diagnostics(_snapshot(camera_notes={"front": "no extrinsic"},
                                overlays_skipped={"front": 3}), cfg)[1]  # fmt: skip
    assert (cam.level, cam.message, cam.values["overlays_skipped"]) == (WARN, "no extrinsic", "3")


# ----------------------------------------------------------------------------- parameters


def test_params_file_args_only_inside_ros_args():
    args = ["node", "--params-file", "x", "--ros-args", "-p", "a:=1", "--params-file", "a.yaml",
            "--", "--params-file", "y", "--ros-args", "--params-file", "b.yaml"]  # fmt: skip
    assert params_file_args(args) == ["a.yaml", "b.yaml"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        ("/**:\n  ros__parameters:\n    model: [\n", "not valid YAML at line"),
        ("just a string\n", "must map node names"),
        ("/**:\n  model: x\n", "has no ros__parameters"),
    ],
)
def test_bad_params_files_are_one_line_errors(tmp_path, content, match):
    path = tmp_path / "p.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=match) as err:
        check_params_files(["n", "--ros-args", "--params-file", str(path)])
    assert "\n" not in str(err.value)


def test_good_params_file_passes(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    model: /m\n")
    check_params_file(str(path))


def test_unknown_parameters_are_named_ros_ones_ignored():
    given_ = ["model", "bakend", "input.points_topic", "use_sim_time",
              "qos_overrides./points.subscription.reliability", "output.filter_clases"]
    assert unknown_parameters(given_, ["model", "input.points_topic"]) == [
        "bakend", "output.filter_clases"]  # fmt: skip


def test_empty_list_means_empty_not_default():
    assert parse_config({"model": "/m", "output.filter_classes": []}).output.filter_labels == []
    assert parse_config({"model": "/m"}).output.filter_labels != []
    assert parse_config({"model": "/m", "input.intensity_fields": []}).input.intensity_fields == []


# ----------------------------------------------------------------------------- model loading


def test_max_points_reaches_the_runtime_only_when_set(tmp_path, monkeypatch):
    """Contract with the runtime: ``from_model_dir(..., max_points=N)`` overrides the
    TensorRT profile; 0 leaves model.json's value (the keyword is not passed at all)."""
    import xmodelkd_ros.runtime as runtime
    from xmodelkd_ros.node.processing import StartupError, load_segmenter

    calls = []

    def fake(cls, path, **kw):
        calls.append(kw)
        return "segmenter"

    monkeypatch.setattr(runtime.Segmenter, "from_model_dir", classmethod(fake))
    for n in (0, 300_000):
        cfg = parse_config({"model": str(tmp_path), "max_points": n}).model
        assert load_segmenter(cfg) == "segmenter"
    assert "max_points" not in calls[0] and calls[1]["max_points"] == 300_000

    def old_runtime(cls, path, backend="auto", device="cpu", engine_cache=None, fp16=False):
        return "old"

    monkeypatch.setattr(runtime.Segmenter, "from_model_dir", classmethod(old_runtime))
    with pytest.raises(StartupError, match="max_points"):
        load_segmenter(parse_config({"model": str(tmp_path), "max_points": 5}).model)


def test_descriptors_carry_ranges_choices_and_read_only():
    pytest.importorskip("rcl_interfaces", reason="ROS message packages are not installed")
    from xmodelkd_ros.node.params import PARAM_SPECS
    from xmodelkd_ros.node.ros_params import descriptor

    specs = {s.name: s for s in PARAM_SPECS}
    alpha = descriptor(specs["output.overlay_alpha"])
    assert not alpha.read_only
    assert (alpha.floating_point_range[0].from_value, alpha.floating_point_range[0].to_value) \
        == (0.0, 1.0)
    depth = descriptor(specs["qos.depth"])
    assert depth.read_only and depth.integer_range[0].from_value == 1
    assert "sensor_data" in descriptor(specs["qos.input"]).additional_constraints
    timeout = descriptor(specs["input.timeout_s"]).floating_point_range[0]
    assert timeout.from_value == 0.01 and timeout.to_value == float("inf")
    assert descriptor(specs["model"]).read_only and not descriptor(specs["model"]).integer_range
