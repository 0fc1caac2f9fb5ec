"""One replay from start to report: plan, start the node, play, score, write.

Why this order: every input is checked (model, bag, topics, ground truth) before rclpy is
imported, so bad inputs are one line with or without ROS; the node is started only once
the peer is up, and both are torn down whatever happens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from xmodelkd_ros.dds import PROFILE_ENV, large_data_env, user_dds_config
from xmodelkd_ros.evaluation.criteria import Criteria, CriteriaError, load_criteria
from xmodelkd_ros.replay.bag import BagPlan, plan_bag, read_ground_truth
from xmodelkd_ros.replay.node_process import (
    NodeProcess,
    check_model,
    default_params_file,
    node_params,
    output_topic,
    ros_env,
)
from xmodelkd_ros.replay.options import ReplayError, ReplayOptions, log
from xmodelkd_ros.replay.peer import Peer
from xmodelkd_ros.replay.player import PlayResult, play
from xmodelkd_ros.replay.report import build_report, model_class_names, write_replay_report


@contextlib.contextmanager
def _environ(variables: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``variables`` set, restored afterwards."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _checked_inputs(
    opts: ReplayOptions,
) -> tuple[Path, BagPlan, dict[int, np.ndarray], Path | None]:
    """Every input checked before ROS is touched: (model, bag plan, ground truth per stamp,
    node parameters file)."""
    if opts.labels_dir is not None and opts.labels_topic is not None:
        raise ReplayError("give --labels-topic or --labels-dir, not both")
    if opts.rate <= 0:
        raise ReplayError(f"--rate must be > 0, got {opts.rate}")
    model = check_model(opts.model)
    plan = plan_bag(opts.bag, opts.lidar_topic, opts.labels_topic,
                    auto_labels=opts.labels and opts.labels_dir is None,
                    cameras=opts.cameras)  # fmt: skip
    gt = read_ground_truth(plan, opts.labels_dir)
    params_file = opts.params_file or default_params_file()
    if opts.params_file is not None and not opts.params_file.is_file():
        raise ReplayError(f"params file {opts.params_file} does not exist")
    return model, plan, gt, params_file


def _criteria(opts: ReplayOptions, model: Path, gt: dict[int, np.ndarray]) -> Criteria | None:
    """The criteria file loaded and checked against what this replay measures (bad input
    before the node starts)."""
    if opts.criteria is None or isinstance(opts.criteria, Criteria):
        return opts.criteria
    no_truth = None if gt else "the replay has no ground truth (--no-labels or none in the bag)"
    try:
        criteria = load_criteria(opts.criteria)
        criteria.require({"miou": no_truth, "class_iou": no_truth, "p95_latency_ms": None,
                          "dropped_fraction": None, "answered_fraction": None,
                          "unscored_fraction": None,
                          "failed_bags": "a replay evaluates one bag (the fleet counts failed "
                                         "bags)"}, model_class_names(model))  # fmt: skip
    except CriteriaError as exc:
        raise ReplayError(str(exc)) from None
    return criteria


def _dds_env(opts: ReplayOptions) -> dict[str, str]:
    """The environment giving the player and the node the large-data DDS profile."""
    try:
        return large_data_env(os.environ, opts.dds_profile)
    except FileNotFoundError as exc:
        raise ReplayError(f"--dds-profile: {exc}") from None


def _require_ros() -> None:
    try:  # after the input checks, so bad inputs are reported the same with or without ROS
        import rclpy  # noqa: F401
        import rosgraph_msgs.msg  # noqa: F401
    except ImportError as exc:
        raise ReplayError(f"rclpy / ROS messages are not importable: {exc}", 1) from None


def _wait_for_node(
    opts: ReplayOptions, plan: BagPlan, peer: Peer, node: NodeProcess, sim_time: bool
) -> float:
    """Wait until the node subscribes to the LiDAR topic (its model loaded); seconds taken.

    Publishes ``/clock`` meanwhile under sim time; a node that exits or is not ready
    within ``opts.startup_timeout_s`` is an error.
    """
    t_start = time.monotonic()
    while not peer.ready(plan.lidar_topic):
        peer.check()
        if not node.alive():
            raise ReplayError(f"segment_node exited with code {node.proc.returncode}: "
                              f"{node.tail(3)}", 1)  # fmt: skip
        if time.monotonic() - t_start > opts.startup_timeout_s:
            raise ReplayError(f"segment_node not ready after {opts.startup_timeout_s:.0f} s: "
                              f"{node.tail(3)}", 1)  # fmt: skip
        if sim_time:
            peer.publish_clock(plan.start_ns)
        time.sleep(0.1)
    time.sleep(0.5)  # let discovery settle both ways (output subscription matched)
    return time.monotonic() - t_start


def _await_last_diagnostics(
    peer: Peer, node: NodeProcess, result: PlayResult, sim_time: bool
) -> None:
    """One more diagnostics message after the last output (the node publishes at 1 Hz of
    its clock, so ``/clock`` keeps running meanwhile); at most 3 s."""
    n0, deadline = peer.diag_count, time.monotonic() + 3.0
    while peer.diag_count == n0 and time.monotonic() < deadline and node.alive():
        peer.check()
        if sim_time:
            peer.publish_clock(result.clock_at(time.monotonic_ns()))
        time.sleep(0.02)


def run_replay(opts: ReplayOptions) -> dict[str, Any]:
    """Replay ``opts.bag`` through a freshly started node; returns the report dict, its
    per-frame records under ``"frames"`` and, with ``opts.criteria``, the checked criteria
    under ``"criteria"`` (and writes ``report.md`` / ``report.json`` / ``frames.jsonl`` /
    ``confusion.png`` when ``opts.report``)."""
    model, plan, gt, params_file = _checked_inputs(opts)
    opts = dataclasses.replace(opts, criteria=_criteria(opts, model, gt))
    topic = output_topic(params_file)
    user_dds = user_dds_config(os.environ)
    dds = _dds_env(opts)
    _require_ros()
    log(opts, f"bag {plan.path}: {plan.num_scans} scans on {plan.lidar_topic}, ground truth: "
               f"{len(gt)} scans, cameras: {', '.join(plan.cameras) or 'none'}")  # fmt: skip

    domain = opts.domain_id if opts.domain_id is not None else 100 + os.getpid() % 130
    env = ros_env(domain)
    env.update(dds)
    os.environ.update({k: env[k] for k in ("RMW_IMPLEMENTATION", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    log(opts, "DDS: " + (f"your configuration ({user_dds})" if user_dds else
                         f"Fast DDS profile {dds[PROFILE_ENV]}" if dds else
                         "Fast DDS defaults (no profile)"))  # fmt: skip
    sim_time = not opts.max_throughput
    params = node_params(plan, model, opts.backend, sim_time)
    tmp = None
    if opts.report is not None:
        workdir = Path(opts.report)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="xmodelkd_replay_")
        workdir = Path(tmp.name)

    node: NodeProcess | None = None
    peer: Peer | None = None
    try:
        # This process is the bag player: Fast DDS reads its profile when the process's
        # first participant is created (here, in Peer), so the variable is set around it.
        with _environ(dds):
            peer = Peer(domain, plan, topic)
        node = NodeProcess(params, workdir, env, params_file)
        log(opts, f"started segment_node (pid {node.proc.pid}, ROS domain {domain}), "
                   "waiting for the model to load")  # fmt: skip
        startup_s = _wait_for_node(opts, plan, peer, node, sim_time)
        log(opts, f"node ready after {startup_s:.1f} s; replaying "
                   f"{'at max throughput' if opts.max_throughput else f'at rate {opts.rate:g}'}")
        result = play(opts, plan, peer, node)
        _await_last_diagnostics(peer, node, result, sim_time)
        if not node.alive():
            raise ReplayError(f"segment_node died during the replay (code "
                              f"{node.proc.returncode}): {node.tail(3)}", 1)  # fmt: skip
    finally:
        if peer is not None:
            outputs, diag, dups = dict(peer.outputs), dict(peer.diag), peer.duplicates
            peer.close()
        if node is not None:
            node.stop()
    report = build_report(opts, plan, model, gt, result, outputs, diag, dups, startup_s)
    report["node_log"] = str(node.log_path) if opts.report is not None and node else None
    report["output_topic"] = topic
    report["dds"] = {"fastdds_profile": dds.get(PROFILE_ENV), "user_config": user_dds}
    if opts.report is not None:
        write_replay_report(Path(opts.report), report)
    if tmp is not None:
        tmp.cleanup()
    return report
