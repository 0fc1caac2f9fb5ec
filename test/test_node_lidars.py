"""Several LiDARs in one node over real Fast DDS: both answered at different rates, a
flooding LiDAR does not starve a slow one, a dead LiDAR is reported while the other
keeps going, the ego box (vehicle frame) unlabels the car's own points and removes them
from the filtered cloud, and an invalid box is refused with the reason. Same harness as
test_node_ros (node in its own process, own ROS domain, the real untrained student)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from ros_peer import RosPeer
from test_node_live import _set
from test_node_ros import (
    NODE,
    STARTUP_S,
    NodeProcess,
    base_params,
    make_cloud,
    sim_frame,  # noqa: F401 - the fixture
    stamp_of,
    structured,
    wait_for,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]


class LidarsPeer(RosPeer):
    """Publishers of each LiDAR's clouds, subscribers of its outputs and /diagnostics."""

    def __init__(self, domain: int, lidars: list[str]) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2

        super().__init__(domain, "test_lidars_peer")
        rel = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = {n: self.node.create_publisher(PointCloud2, f"/{NODE}/{n}/input/points", rel)
                    for n in lidars}  # fmt: skip
        self.subs = [self.node.create_subscription(
            PointCloud2, f"/{NODE}/{n}/output/{kind}", self._store(f"{kind}/{n}"), rel)
            for n in lidars for kind in ("segmentation", "filtered")]  # fmt: skip
        self.subs.append(self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                                       self._store("diag"), 10))  # fmt: skip
        self.start()

    def stamps(self, lidar: str) -> set[int]:
        return {stamp_of(m) for m in self.msgs(f"segmentation/{lidar}")}

    def status(self, lidar: str) -> tuple[int, str, dict[str, str]] | None:
        """Latest diagnostics status of ``lidar``: (level, message, key/values)."""
        for arr in reversed(self.msgs("diag")):
            for s in arr.status:
                if s.name == f"{NODE}: segmentation {lidar}":
                    return ord(s.level) if isinstance(s.level, bytes) else int(s.level), \
                        s.message, {kv.key: kv.value for kv in s.values}
        return None

    def connected(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in self.pub.values()) and all(
            s.get_publisher_count() > 0 for s in self.subs)  # fmt: skip


def _start(params: dict[str, Any], tmp: Any, env: dict[str, str], domain: int,
           lidars: list[str]) -> tuple[NodeProcess, LidarsPeer]:  # fmt: skip
    node = NodeProcess(params, tmp, env)
    peer = LidarsPeer(domain, lidars)
    wait_for(lambda: all(peer.status(n) for n in lidars) and peer.connected(), STARTUP_S,
             "node startup and discovery", node)  # fmt: skip
    return node, peer


def _params(model: Any, lidars: dict[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    given = {k: v for k, v in lidars.items() if v}  # an empty mapping is no parameter
    return base_params(model, lidars={"names": list(lidars), **given},
                       qos={"input": "reliable", "depth": 100}, **extra)  # fmt: skip


def test_flooding_lidar_does_not_starve_a_slow_one(sim_frame, student_checkpoint,  # noqa: F811
                                                   ros_env, ros_domain, tmp_path):  # fmt: skip
    """'fast' publishes 16x larger scans at 10x the rate of 'slow' (100 vs 10 Hz) for >= 5 s,
    more than the worker can segment: both are answered on their own topics, the slow
    one >= 90 % of its scans; the fast one's stale scans are dropped and counted."""
    _frame, pts = sim_frame
    big = np.tile(pts, (16, 1))
    big[:, 0] += np.repeat(np.arange(16, dtype=np.float32) * 0.01, len(pts))
    msgs = {"fast": make_cloud(big, 0), "slow": make_cloud(pts, 0)}  # restamped per send
    node, peer = None, None
    try:
        node, peer = _start(_params(student_checkpoint, {"fast": {}, "slow": {}}), tmp_path,
                            ros_env, ros_domain, ["fast", "slow"])  # fmt: skip
        t0 = 1_700_010_000_000_000_000
        peer.pub["slow"].publish(make_cloud(pts, t0 - 1))  # warm both paths
        wait_for(lambda: peer.stamps("slow"), 60, "warm-up scan", node)
        sent: dict[str, list[int]] = {"fast": [], "slow": []}
        rates: dict[str, float] = {}
        # fast at 100 Hz, slow every 10th tick. Paced from the previous tick, never catching
        # up: a publisher held up by a loaded machine would otherwise send a burst with two
        # slow scans back to back, and 'latest' rightly keeps only the newer one.
        period, start, tick = 0.01, time.monotonic(), time.monotonic()
        for i in range(500):
            time.sleep(max(0.0, tick + period - time.monotonic()))
            tick = time.monotonic()
            if i == 400:  # 4 s in: the rates of the last diagnostics window, per LiDAR
                rates = {n: float(peer.status(n)[2]["input_rate_hz"]) for n in sent}
            for name in ("fast", "slow") if i % 10 == 0 else ("fast",):
                stamp = t0 + i * 10_000_000
                msg = msgs[name]
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
                peer.pub[name].publish(msg)
                sent[name].append(stamp)
        wait_for(lambda: int(peer.status("fast")[2]["scans_received"]) == 500
                 and int(peer.status("slow")[2]["scans_received"]) == 51,
                 30, "all scans received", node)  # fmt: skip
        time.sleep(2.0)  # the last ones through the worker, the next diagnostics out
        answered = {n: len(peer.stamps(n) & set(sent[n])) / len(sent[n]) for n in sent}
        (_, _, fast), (_, _, slow) = peer.status("fast"), peer.status("slow")
        print(f"answered: fast {answered['fast']:.0%} (dropped {fast['scans_dropped_stale']}, "
              f"total p50 {fast['total_p50_ms']} ms), slow {answered['slow']:.0%} (dropped "
              f"{slow['scans_dropped_stale']}); sent in {time.monotonic() - start:.1f} s, "
              f"rates {rates}")  # fmt: skip
        assert answered["slow"] >= 0.9, (answered, slow)
        assert answered["fast"] > 0.1, answered  # answered too, on its own topic
        assert int(fast["scans_dropped_stale"]) > 0, fast  # it did flood the worker
        assert rates["fast"] > 3 * rates["slow"] > 0, rates
        for name, st, n in (("fast", fast, 500), ("slow", slow, 51)):  # every scan counted
            assert int(st["scans_processed"]) + int(st["scans_dropped_stale"]) == n, (name, st)
            assert st["scans_served"] == st["scans_processed"], st
        assert fast["lidars_in_process"] == "2" and fast["cpu_wait_policy"].startswith("PASSIVE")
    finally:
        if peer is not None:
            peer.close()
        if node is not None:
            assert node.stop() == 0, node.log()


def test_ego_box_dead_lidar_and_an_invalid_box(sim_frame, student_checkpoint,  # noqa: F811
                                                ros_env, ros_domain, tmp_path):  # fmt: skip
    """'roof' is mounted 1.8 m up: points of the car's roof (inside the ego box in the
    vehicle frame) come out unlabeled with confidence 0 and are absent from the filtered
    cloud; an invalid box is refused with the reason, a valid change applies from the
    next scan; 'front' going silent is reported while 'roof' keeps being segmented."""
    _frame, pts = sim_frame
    roof = np.zeros((40, pts.shape[1]), np.float32)  # the car's roof seen from the LiDAR
    roof[:, 0] = np.linspace(-0.5, 2.0, 40)
    roof[:, 1] = np.tile([-0.4, 0.4], 20)
    roof[:, 2] = -0.35
    cloud = np.concatenate([pts, roof])
    lo, hi = np.array([-1.0, -1.0, -0.3]), np.array([4.0, 1.0, 2.0])
    vehicle = cloud[:, :3] + [0.0, 0.0, 1.8]
    inside = np.all((vehicle >= lo) & (vehicle <= hi), axis=1)
    assert inside[-40:].all()
    lidars = {"front": {}, "roof": {"T_vehicle_lidar": [0.0, 0.0, 1.8, 0.0, 0.0, 0.0]}}
    params = _params(student_checkpoint, lidars, ego_box={"enabled": True},
                     output={"filter_classes": []})  # fmt: skip
    node, peer = None, None
    try:
        node, peer = _start(params, tmp_path, ros_env, ros_domain, list(lidars))
        t0 = 1_700_020_000_000_000_000
        for i in range(3):
            for name in lidars:
                peer.pub[name].publish(make_cloud(cloud, t0 + i * 100_000_000))
            wait_for(lambda s=t0 + i * 100_000_000, k=i: all(s in peer.stamps(n) for n in lidars)
                     and len(peer.msgs("filtered/roof")) > k, 30, f"scan {i}", node)  # fmt: skip
        seg = structured(peer.msgs("segmentation/roof")[-1])
        assert (seg["label"][inside] == 0).all() and (seg["confidence"][inside] == 0).all()
        assert (seg["label"][~inside] > 0).sum() > 0.5 * (~inside).sum()
        filt = structured(peer.msgs("filtered/roof")[-1])
        assert len(filt) == int((~inside).sum())
        np.testing.assert_array_equal(filt["x"], cloud[~inside, 0])
        front_ego = int(((cloud[:, :3] >= lo) & (cloud[:, :3] <= hi)).all(axis=1).sum())
        wait_for(lambda: peer.status("roof")[2]["ego_box_points_last_scan"] == str(inside.sum())
                 and peer.status("front")[2]["ego_box_points_last_scan"] == str(front_ego),
                 10, "ego box counts in diagnostics", node)  # fmt: skip

        (bad,) = _set(peer, ego_box__min_x=5.0)
        assert not bad.successful and "ego_box.min_x 5 must be below ego_box.max_x 4" in bad.reason
        (ok,) = _set(peer, ego_box__enabled=False)
        assert ok.successful, ok.reason
        peer.pub["roof"].publish(make_cloud(cloud, t0 + 10 * 100_000_000))
        wait_for(lambda: t0 + 10 * 100_000_000 in peer.stamps("roof"), 30, "scan after set",
                 node)  # fmt: skip
        seg = structured(peer.msgs("segmentation/roof")[-1])
        assert (seg["label"][-40:] > 0).all()  # the roof is segmented again

        # 'front' goes silent (its driver still up): reported, 'roof' keeps going
        before = int(peer.status("roof")[2]["scans_processed"])
        for i in range(11, 31):
            peer.pub["roof"].publish(make_cloud(cloud, t0 + i * 100_000_000))
            time.sleep(0.2)
        level, msg, _kv = peer.status("front")
        assert level == 1 and "no cloud arrived for" in msg, msg
        _level, msg, kv = peer.status("roof")
        assert "no cloud arrived" not in msg and "no input scans" not in msg, msg
        assert int(kv["scans_processed"]) >= before + 10
    finally:
        if peer is not None:
            peer.close()
        if node is not None:
            assert node.stop() == 0, node.log()
