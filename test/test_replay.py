"""Replay evaluation: a small synthetic bag through the live node, scored against GT.

The key check: replaying at max throughput (back-pressure, nothing dropped) gives the
*identical* confusion matrix to running the same Segmenter offline on the same scans.
Any lost, duplicated or mis-matched message (wrong stamp, wrong scan's labels) breaks
the equality. Input errors (missing topic, bag without LiDAR, model dir without
model.json) are checked without ROS.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

N_SCANS = 5


@pytest.fixture(scope="module")
def sim_bags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 5-scan, 16-beam, one small camera drive as sqlite3 and MCAP bags."""
    from xmodelkd_ros.sim import SimWorld, write_bag

    root = tmp_path_factory.mktemp("bags")
    world = SimWorld(seed=5, beams=16, cameras=1, width=160, height=96)
    return {
        "sqlite3": write_bag(root / "sqlite", world, N_SCANS, progress=False),
        "mcap": write_bag(root / "mcap", world, N_SCANS, storage="mcap", progress=False),
    }


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, student_checkpoint: Path) -> Path:
    """The untrained small student exported to ONNX (the node's real deployment path)."""
    from xmodelkd_ros.export import export_checkpoint

    out = tmp_path_factory.mktemp("export")
    export_checkpoint(student_checkpoint, out)
    return out


# ----------------------------------------------------------------------------- no ROS


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from xmodelkd_ros.replay import main

    code = main(argv)
    return code, capsys.readouterr().err.strip()


def test_node_child_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The replay's node child imports this checkout first (as the side stage and the export
    fixture do) and runs on the replay's own domain with localhost discovery."""
    import subprocess
    import sys

    from xmodelkd_ros.procenv import PACKAGE_ROOT
    from xmodelkd_ros.replay.node_process import ros_env

    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setenv("ROS_LOCALHOST_ONLY", "1")
    env = ros_env(7)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(PACKAGE_ROOT), "/elsewhere"]
    assert env["ROS_DOMAIN_ID"] == "7" and "ROS_LOCALHOST_ONLY" not in env
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    code = "import xmodelkd_ros; print(xmodelkd_ros.__file__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert Path(out.stdout.strip()).resolve().parent.parent == PACKAGE_ROOT


def test_missing_topic_is_one_clear_line(
    sim_bags: dict[str, Path], model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag = str(sim_bags["sqlite3"])
    code, err = _main(["--bag", bag, "--model", str(model_dir), "--lidar-topic", "/nope"], capsys)
    assert code == 2
    assert err.startswith("error: LiDAR topic /nope is not in bag") and "/lidar/points" in err
    assert len(err.splitlines()) == 1
    code, err = _main(["--bag", bag, "--model", str(model_dir), "--labels-topic", "/gt"], capsys)
    assert code == 2 and "labels topic /gt is not in bag" in err


def test_bag_without_lidar(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    img = T["sensor_msgs/msg/Image"](
        header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                        frame_id="cam"),
        height=2, width=2, encoding="rgb8", is_bigendian=0, step=6,
        data=np.zeros(12, np.uint8),
    )  # fmt: skip
    with Writer(tmp_path / "bag", version=8) as w:
        c = w.add_connection("/camera/front/image_raw", img.__msgtype__, typestore=ts)
        w.write(c, 1_000_000_000, ts.serialize_cdr(img, img.__msgtype__))
    code, err = _main(["--bag", str(tmp_path / "bag"), "--model", str(model_dir)], capsys)
    assert code == 2
    assert "has no LiDAR" in err and "/camera/front/image_raw" in err


def test_model_dir_without_model_json(
    sim_bags: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _main(["--bag", str(sim_bags["sqlite3"]), "--model", str(tmp_path)], capsys)
    assert code == 2 and "has no model.json" in err and "xmodelkd_ros.export" in err
    code, err = _main(["--bag", str(tmp_path / "missing"), "--model", str(tmp_path)], capsys)
    assert code == 2 and "has no model.json" in err  # model is checked before the bag


def test_labels_dir_matches_labels_topic(sim_bags: dict[str, Path], tmp_path: Path) -> None:
    """SemanticKITTI .label files (raw ids | instance << 16) give the same ground truth."""
    from xmodelkd_ros.labels import label_to_raw
    from xmodelkd_ros.replay import plan_bag, read_ground_truth

    plan = plan_bag(sim_bags["mcap"])
    gt = read_ground_truth(plan)
    assert len(gt) == N_SCANS
    for i, stamp in enumerate(sorted(gt)):
        raw = label_to_raw(gt[stamp]).astype(np.uint32) | (7 << 16)
        raw.tofile(tmp_path / f"{i:06d}.label")
    gt_dir = read_ground_truth(plan, tmp_path)
    assert sorted(gt_dir) == sorted(gt)
    for s in gt:
        np.testing.assert_array_equal(gt_dir[s], gt[s])


def test_output_topic_follows_the_params_file(tmp_path: Path) -> None:
    """The node publishes on the params file's output.segmentation_topic (resolved as the
    replay's node, in the root namespace, resolves it); the replay listens there."""
    import yaml

    from xmodelkd_ros.replay import OUTPUT_TOPIC, ReplayError
    from xmodelkd_ros.replay.node_process import output_topic

    root = Path(__file__).resolve().parents[1]
    assert OUTPUT_TOPIC == "/lidar_segmentation/output/segmentation"
    assert output_topic(None) == OUTPUT_TOPIC
    assert output_topic(root / "config" / "segment.yaml") == OUTPUT_TOPIC

    def topic_of(doc: Any) -> str:
        f = tmp_path / "p.yaml"
        f.write_text(yaml.safe_dump(doc))
        return output_topic(f)

    def params(topic: str, nested: bool = True) -> dict[str, Any]:
        p = {"output": {"segmentation_topic": topic}} if nested else {
            "output.segmentation_topic": topic}
        return {"ros__parameters": p}

    assert topic_of({"/**": params("/perception/labels")}) == "/perception/labels"
    assert topic_of({"/**": params("~/seg", nested=False)}) == "/lidar_segmentation/seg"
    assert topic_of({"/**": params("/a"), "lidar_segmentation": params("seg")}) == "/seg"
    assert topic_of({"/**": params("/a"), "/**/lidar_segmentation": params("/b")}) == "/b"
    assert topic_of({"other_node": params("/other")}) == OUTPUT_TOPIC
    assert topic_of({"/**": {"ros__parameters": {"model": "m"}}}) == OUTPUT_TOPIC
    with pytest.raises(ReplayError, match="must be a non-empty string"):
        topic_of({"/**": params("")})
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**: [unclosed\n")
    with pytest.raises(ReplayError, match="is not valid YAML"):
        output_topic(bad)


def test_missing_params_file_is_one_line(
    sim_bags: dict[str, Path], model_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    code, err = _main(["--bag", str(sim_bags["sqlite3"]), "--model", str(model_dir),
                       "--params-file", str(tmp_path / "nope.yaml")], capsys)  # fmt: skip
    assert code == 2 and err == f"error: params file {tmp_path / 'nope.yaml'} does not exist"
    code, err = _main(["--bag", str(sim_bags["sqlite3"]), "--model", str(model_dir),
                       "--dds-profile", str(tmp_path / "nope.xml")], capsys)  # fmt: skip
    assert code == 2 and err.startswith("error: --dds-profile: Fast DDS profile")
    assert len(err.splitlines()) == 1


# ----------------------------------------------------------------------------- live node


@pytest.mark.ros
@pytest.mark.slow
def test_replay_equals_offline_segmenter(
    sim_bags: dict[str, Path], model_dir: Path, ros_domain: int, tmp_path: Path
) -> None:
    """Max-throughput replay through the node == offline Segmenter, confusion for confusion."""
    from xmodelkd_ros.replay import (
        ReplayOptions,
        offline_confusion,
        plan_bag,
        read_ground_truth,
        run_replay,
    )
    from xmodelkd_ros.runtime import Segmenter

    report = tmp_path / "report"
    rep = run_replay(ReplayOptions(bag=sim_bags["sqlite3"], model=model_dir,
                                   max_throughput=True, report=report, backend="onnxruntime",
                                   domain_id=ros_domain, quiet=True))  # fmt: skip
    sc = rep["scans"]
    assert (sc["published"], sc["received"], sc["dropped"]) == (N_SCANS, N_SCANS, 0)
    assert sc["scored"] == N_SCANS
    assert sc["duplicates"] == 0 and sc["unexpected_stamps"] == 0
    assert sc["mismatched_point_count"] == 0

    plan = plan_bag(sim_bags["sqlite3"])
    seg = Segmenter.from_model_dir(model_dir, backend="onnxruntime")
    cm, counts = offline_confusion(plan, read_ground_truth(plan), seg)
    np.testing.assert_array_equal(np.asarray(rep["metrics"]["confusion"]), cm.matrix.numpy())
    assert rep["points"] == {"scored": counts.scored, "unpredicted": counts.unpredicted}
    assert rep["metrics"]["miou"] == cm.result(seg.class_names).miou

    # report artefacts: JSON, Markdown, confusion PNG, node log; latency and node stages
    doc: dict[str, Any] = json.loads((report / "report.json").read_text())
    assert doc["scans"]["received"] == N_SCANS
    lat = doc["latency_ms"]["stamp_to_output"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    tp = doc["throughput"]
    assert tp["sustainable_rate_hz"] > 0
    node_p50 = doc["node_diagnostics"]["stages_ms"]["total"]["p50"]
    assert tp["node_allows_hz"] == pytest.approx(1000.0 / node_p50)
    assert tp["sustainable_over_node"] == pytest.approx(tp["sustainable_rate_hz"]
                                                        / tp["node_allows_hz"])
    assert "inference" in doc["node_diagnostics"]["stages_ms"]
    assert doc["backend"] == "onnxruntime"
    md = (report / "report.md").read_text()
    assert "mIoU" in md and "p99" in md and "dropped" in md
    assert (report / "confusion.png").stat().st_size > 0
    assert (report / "node.log").is_file()


@pytest.mark.ros
@pytest.mark.slow
def test_replay_at_rate_without_labels_mcap(
    sim_bags: dict[str, Path], model_dir: Path, ros_domain: int, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Timed playback (with /clock, use_sim_time) of an MCAP bag: latency and drops only.

    The untrained model is slower than 10 Hz on this CPU, so drops are allowed here;
    every published scan is either received or counted dropped. The params file moves the
    output topic: the replay must follow it (it would receive nothing otherwise).
    """
    import yaml

    from xmodelkd_ros.dds import PROFILE_ENV, user_dds_config

    root = Path(__file__).resolve().parents[1]
    doc = yaml.safe_load((root / "config" / "segment.yaml").read_text())
    doc["/**"]["ros__parameters"]["output"]["segmentation_topic"] = "/perception/labels"
    params = tmp_path / "my_params.yaml"
    params.write_text(yaml.safe_dump(doc))
    code, err = _main(["--bag", str(sim_bags["mcap"]), "--model", str(model_dir), "--rate", "2",
                       "--no-labels", "--report", str(tmp_path), "--quiet",
                       "--domain-id", str(ros_domain), "--backend", "onnxruntime",
                       "--params-file", str(params)],
                      capsys)  # fmt: skip
    assert code == 0, err
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["output_topic"] == "/perception/labels"
    if user_dds_config(dict(os.environ)) is None:  # the shipped profile, on the node too
        assert doc["dds"]["fastdds_profile"].endswith("config/fastdds_large_data.xml")
        assert PROFILE_ENV not in os.environ  # set only around the player's participant
    sc = doc["scans"]
    assert doc["metrics"] is None and doc["ground_truth"] is None
    assert sc["published"] == N_SCANS and sc["received"] >= 1
    assert sc["received"] + sc["dropped"] == N_SCANS
    assert doc["mode"] == "rate 2"
    assert doc["latency_ms"]["stamp_to_output"]["p50"] > 0
    # the node's diagnostics timer runs on the replayed /clock (use_sim_time)
    assert "total" in doc["node_diagnostics"]["stages_ms"]
    assert not (tmp_path / "confusion.png").exists()
    params = (tmp_path / "replay_params.yaml").read_text()
    assert "use_sim_time: true" in params


def test_replay_launch_file_builds_a_valid_cli(
    load_launch_file, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command the replay launch file builds must parse with the replay CLI's own
    parser, so flags cannot drift apart (see ``load_launch_file`` for the scope)."""
    from xmodelkd_ros.replay import build_parser

    mod = load_launch_file(Path(__file__).resolve().parents[1] / "launch" / "replay.launch.py")
    actions = mod.generate_launch_description().args[0]
    declared = {a.args[0]: a.kwargs["default_value"] for a in actions[:-1]}
    monkeypatch.setenv("ROS_DOMAIN_ID", "42")
    for extra in ({}, {"max_throughput": "true", "report": "/tmp/r", "labels_dir": "/l"}):
        ctx = dict(declared, bag="/bags/drive", model="/models/m", **extra)
        (proc,) = actions[-1].kwargs["function"](ctx)
        cmd = proc.kwargs["cmd"]
        assert cmd[1:3] == ["-m", "xmodelkd_ros.replay"]
        a = build_parser().parse_args(cmd[3:])
        assert (str(a.bag), str(a.model), a.domain_id) == ("/bags/drive", "/models/m", 42)
        assert a.max_throughput == bool(extra)
        assert (a.report is not None) == bool(extra)


@pytest.mark.ros
@pytest.mark.slow
def test_peer_callback_error_ends_the_replay(
    sim_bags: dict[str, Path], model_dir: Path, ros_domain: int,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A message the replay's peer cannot handle (here a "labeled cloud" with only an x
    field on the node's output topic) stops its executor: the replay must end with one
    line and exit 1, not wait for outputs that can no longer arrive."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2, PointField

    from xmodelkd_ros.replay import OUTPUT_TOPIC

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=ros_domain)
    node = rclpy.create_node("bogus_output", context=ctx)
    pub = node.create_publisher(PointCloud2, OUTPUT_TOPIC,
                                QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    bogus = PointCloud2(height=1, width=1, point_step=4, row_step=4, data=b"\0" * 4,
                        fields=[PointField(name="x", offset=0, datatype=7, count=1)])
    stop = threading.Event()

    def spam() -> None:
        while not stop.wait(0.1):
            pub.publish(bogus)

    thread = threading.Thread(target=spam, daemon=True)
    thread.start()
    t0 = time.monotonic()
    try:
        code, err = _main(["--bag", str(sim_bags["sqlite3"]), "--model", str(model_dir),
                           "--max-throughput", "--quiet", "--domain-id", str(ros_domain),
                           "--backend", "onnxruntime", "--timeout", "120"], capsys)  # fmt: skip
    finally:
        stop.set()
        thread.join(timeout=2)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    assert code == 1, err
    assert err.startswith("error: the replay's ROS peer failed: CloudFormatError: "), err
    assert len(err.splitlines()) == 1
    assert time.monotonic() - t0 < 100  # ended by the error, not by the 120 s timeout
