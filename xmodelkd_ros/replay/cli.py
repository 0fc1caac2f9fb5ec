"""``python -m xmodelkd_ros.replay``: the command line of the replay evaluation.

Why thin: the flags map one to one onto :class:`ReplayOptions`; the launch file builds
its command against :func:`build_parser`, so the two cannot drift apart. Errors are one
line on stderr with exit code 2 (bad input) or 1 (node or middleware failure); with
``--criteria`` a criterion not met is exit 1 too, after the table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from xmodelkd_ros.evaluation import criteria as crit
from xmodelkd_ros.replay.bag import DEFAULT_LABELS_TOPIC
from xmodelkd_ros.replay.options import ReplayError, ReplayOptions
from xmodelkd_ros.replay.report import summary_line
from xmodelkd_ros.replay.runner import run_replay


def build_parser() -> argparse.ArgumentParser:
    """The CLI (also used by the README and the demo)."""
    p = argparse.ArgumentParser(
        prog="python -m xmodelkd_ros.replay",
        description="Replay a rosbag through the live segmentation node and score it.",
    )
    p.add_argument("--bag", required=True, type=Path, help="rosbag2 directory (sqlite3 or MCAP)")
    p.add_argument("--model", required=True, type=Path,
                   help="exported model dir (model.json + model.onnx) or a student .pt")
    gt = p.add_mutually_exclusive_group()
    gt.add_argument("--labels-topic", default=None,
                    help=f"ground-truth PointCloud2 with a 'label' field (default "
                         f"{DEFAULT_LABELS_TOPIC} when the bag has it)")
    gt.add_argument("--labels-dir", type=Path, default=None,
                    help="SemanticKITTI .label files, one per LiDAR message in order")
    p.add_argument("--no-labels", action="store_true", help="latency and drops only")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--rate", type=float, default=1.0,
                       help="playback rate; /clock published, node on use_sim_time")
    speed.add_argument("--max-throughput", action="store_true",
                       help="send each scan once the previous output arrived (back-pressure)")
    p.add_argument("--report", type=Path, default=None,
                   help="write report.md, report.json, confusion.png, node.log here")
    p.add_argument("--lidar-topic", default=None, help="LiDAR topic (default: auto)")
    p.add_argument("--backend", default="auto", choices=("auto", "tensorrt", "onnxruntime",
                                                          "torch"))
    p.add_argument("--params-file", type=Path, default=None,
                   help="node params file (default: config/segment.yaml); the replay's "
                        "model, topics, reliable QoS and cameras are applied on top")
    p.add_argument("--domain-id", type=int, default=None,
                   help="ROS domain (default: a private one, so a replay never talks to a "
                        "live stack or to another replay)")
    p.add_argument("--no-cameras", action="store_true", help="do not publish camera topics")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for one output before counting it lost")
    p.add_argument("--late-ms", type=float, default=None,
                   help="an output later than this after its stamp is late (default: the "
                        "bag's scan period)")
    p.add_argument("--dds-profile", default="default", metavar="default|PATH|none",
                   help="Fast DDS profile for the bag player and the node (default: the "
                        "package's large-data profile, config/fastdds_large_data.xml); "
                        "never overrides FASTDDS_DEFAULT_PROFILES_FILE, CYCLONEDDS_URI or a "
                        "non-Fast-DDS RMW_IMPLEMENTATION already set")
    p.add_argument("--criteria", type=Path, default=None,
                   help="pass/fail criteria (YAML, e.g. config/criteria.yaml): the table goes "
                        "to the terminal and report.md; exit 1 when one is not met")
    p.add_argument("--quiet", action="store_true")
    return p  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints the summary line, returns the exit code."""
    a = build_parser().parse_args(argv)
    if a.no_labels and (a.labels_topic or a.labels_dir):
        print("error: --no-labels conflicts with --labels-topic/--labels-dir", file=sys.stderr)
        return 2
    opts = ReplayOptions(
        bag=a.bag, model=a.model, labels_topic=a.labels_topic, labels_dir=a.labels_dir,
        labels=not a.no_labels,
        lidar_topic=a.lidar_topic, rate=a.rate, max_throughput=a.max_throughput,
        report=a.report, backend=a.backend, params_file=a.params_file, domain_id=a.domain_id,
        cameras=not a.no_cameras, output_timeout_s=a.timeout, late_ms=a.late_ms,
        quiet=a.quiet, dds_profile=a.dds_profile, criteria=a.criteria,
    )  # fmt: skip
    try:
        rep = run_replay(opts)
    except ReplayError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(summary_line(rep), flush=True)
    if a.report is not None:
        print(f"report: {a.report / 'report.md'}", flush=True)
    if rep.get("criteria") is not None:
        print(crit.terminal(rep["criteria"]), flush=True)
        return 0 if crit.passed(rep["criteria"]) else 1
    return 0
