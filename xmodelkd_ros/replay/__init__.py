"""Rosbag replay evaluation through the live segmentation node.

``python -m xmodelkd_ros.replay --bag PATH --model DIR [--labels-topic T | --labels-dir D]
[--rate 1.0 | --max-throughput] [--report DIR]``

Why through the live node: users judge a perception node by replaying recorded drives
into the very process that runs on the vehicle (same parameters, middleware, queueing
and drop policy). So this tool starts the real ``segment_node`` as a child process,
publishes the bag's LiDAR and camera messages to it over rclpy (Fast DDS), receives the
labeled clouds, matches them to ground truth by header stamp (the node keeps the input
header) and scores them with the training metrics (:mod:`xmodelkd_ros.training.metrics`),
so the replay mIoU and the training mIoU are one definition.

Two modes:

* ``--rate R`` (default 1): messages leave at their recorded spacing divided by R, with
  ``/clock`` published and ``use_sim_time`` set on the node. A scan whose output never
  comes was dropped by the node (its latest-only queue) and counts against it; an output
  later than one scan period after its bag stamp is "late".
* ``--max-throughput``: each scan (with the camera messages recorded before the next
  scan) is sent only after the previous output arrived (back-pressure), so nothing is
  dropped and the report gives the sustainable scan rate.

Points the node leaves unlabeled (outside the model's voxel grid, non-finite) are not
scored, as in training evaluation; their count is reported.

Modules, one concern each: :mod:`.options` (options, the one-line error), :mod:`.bag`
(topics, ground truth, messages), :mod:`.scoring`, :mod:`.node_process` (the node under
test), :mod:`.peer` (the rclpy side), :mod:`.player`, :mod:`.report`, :mod:`.runner`
(start to report) and :mod:`.cli`.
"""

from xmodelkd_ros.replay.bag import (
    DEFAULT_LABELS_TOPIC,
    BagPlan,
    iter_scans,
    plan_bag,
    read_ground_truth,
)
from xmodelkd_ros.replay.cli import build_parser, main
from xmodelkd_ros.replay.node_process import OUTPUT_TOPIC, NodeProcess, check_model, node_params
from xmodelkd_ros.replay.options import ReplayError, ReplayOptions
from xmodelkd_ros.replay.player import PlayResult
from xmodelkd_ros.replay.report import build_report, summary_line, write_replay_report
from xmodelkd_ros.replay.runner import run_replay
from xmodelkd_ros.replay.scoring import ScoreCounts, offline_confusion, score_scan

__all__ = [
    "DEFAULT_LABELS_TOPIC",
    "OUTPUT_TOPIC",
    "BagPlan",
    "NodeProcess",
    "PlayResult",
    "ReplayError",
    "ReplayOptions",
    "ScoreCounts",
    "build_parser",
    "build_report",
    "check_model",
    "iter_scans",
    "main",
    "node_params",
    "offline_confusion",
    "plan_bag",
    "read_ground_truth",
    "run_replay",
    "score_scan",
    "summary_line",
    "write_replay_report",
]
