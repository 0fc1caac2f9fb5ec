"""Replay evaluation from ``ros2 launch``: ``ros2 launch xmodelkd_ros replay.launch.py
bag:=/path/to/bag model:=/path/to/model [report:=DIR] [rate:=1.0 | max_throughput:=true]``.

A thin wrapper over ``python3 -m xmodelkd_ros.replay`` (which starts the live
``segment_node`` itself, publishes the bag and ``/clock``, and scores the outputs). Unlike
the CLI default (a private ROS domain), the launch file keeps the caller's
``ROS_DOMAIN_ID`` unless ``domain_id`` is given, so RViz can watch the node's
``~/output/visualization`` during the replay.
"""

import os

from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

# (name, default, description); defaults are strings as launch arguments are.
ARGUMENTS = (
    ("bag", "", "rosbag2 directory (sqlite3 or MCAP). Required."),
    ("model", "", "Exported model dir (model.json + model.onnx) or student .pt. Required."),
    ("report", "", "Report folder (report.md, report.json, confusion.png); '' = none"),
    ("rate", "1.0", "Playback rate (with /clock and use_sim_time on the node)"),
    ("max_throughput", "false", "Back-pressure replay: each scan after the previous output"),
    ("labels_topic", "", "Ground-truth PointCloud2 topic ('' = /lidar/labels if present)"),
    ("labels_dir", "", "SemanticKITTI .label files instead of a labels topic"),
    ("backend", "auto", "auto | tensorrt | onnxruntime | torch"),
    ("params_file", "", "Node parameters YAML ('' = the package's config/segment.yaml)"),
    ("domain_id", "", "ROS domain of the replay ('' = this shell's ROS_DOMAIN_ID)"),
    ("dds_profile", "default", "Fast DDS profile of the bag player and the node: default "
     "(config/fastdds_large_data.xml) | PATH | none; never overrides one already set"),
    ("python", "python3", "Python interpreter that has xmodelkd_ros installed"),
)


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _replay(context, *args, **kwargs):
    """Build the replay command once the arguments are known."""

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    cmd = [arg("python"), "-m", "xmodelkd_ros.replay", "--bag", arg("bag"),
           "--model", arg("model"), "--backend", arg("backend")]  # fmt: skip
    if _truthy(arg("max_throughput")):
        cmd.append("--max-throughput")
    else:
        cmd += ["--rate", arg("rate")]
    optional = {"report": "--report", "labels_topic": "--labels-topic",
                "labels_dir": "--labels-dir", "params_file": "--params-file",
                "dds_profile": "--dds-profile"}  # fmt: skip
    for name, flag in optional.items():
        if arg(name):
            cmd += [flag, arg(name)]
    cmd += ["--domain-id", arg("domain_id") or os.environ.get("ROS_DOMAIN_ID", "0")]
    return [ExecuteProcess(cmd=cmd, output="screen", emulate_tty=True)]


def generate_launch_description() -> LaunchDescription:
    """Declared arguments plus the replay process."""
    return LaunchDescription(
        [DeclareLaunchArgument(n, default_value=d, description=t) for n, d, t in ARGUMENTS]
        + [OpaqueFunction(function=_replay)]
    )
