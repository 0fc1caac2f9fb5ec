"""The replay's own rclpy node: publishes the bag and ``/clock``, receives the outputs.

Why one small class: it is the only place in the replay that touches rclpy (imported
inside, so planning and scoring run without ROS). It spins in a thread and keeps each
output's arrival instant and labels by header stamp (the node keeps the input header).
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import numpy as np

from xmodelkd_ros.msgs import stamp_ns
from xmodelkd_ros.replay.bag import BagPlan, cloud_labels
from xmodelkd_ros.replay.node_process import OUTPUT_TOPIC
from xmodelkd_ros.replay.options import ReplayError
from xmodelkd_ros.ros_peer import SpinningPeer


def _message_class(msgtype: str) -> Any:
    pkg, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


class Peer(SpinningPeer):
    """The replay's own rclpy node: publishers for the bag topics and ``/clock``,
    subscribers for the node's output and ``/diagnostics``; spins in a thread.

    An exception in a callback stops the spin thread; it is kept in ``error`` and
    :meth:`check` turns it into a :class:`ReplayError` (the replay ends, exit 1) instead
    of the replay waiting for outputs that can no longer arrive.
    """

    def __init__(self, domain: int, plan: BagPlan, output_topic: str = OUTPUT_TOPIC) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import PointCloud2

        super().__init__(domain, "xmodelkd_replay")
        rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {
            plan.lidar_topic: self.node.create_publisher(PointCloud2, plan.lidar_topic, rel)
        }
        for t, (mtype, _n) in plan.camera_topics.items():
            self.pubs[t] = self.node.create_publisher(_message_class(mtype), t, rel)
        self.pub_clock = self.node.create_publisher(
            Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                        durability=DurabilityPolicy.VOLATILE))  # fmt: skip
        self._Clock = Clock
        self.outputs: dict[int, tuple[int, np.ndarray]] = {}  # stamp -> (recv ns, labels)
        self.duplicates = 0
        self.diag: dict[str, str] = {}
        self.diag_count = 0
        self.output_topic = output_topic
        self.node.create_subscription(PointCloud2, output_topic, self._on_output, rel)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.start()

    def check(self) -> None:
        """Raise :class:`ReplayError` (exit 1) when a callback has failed."""
        if self.error is not None:
            e = self.error
            raise ReplayError(f"the replay's ROS peer failed: {type(e).__name__}: "
                              f"{' '.join(str(e).split())}", 1)  # fmt: skip

    def _on_output(self, msg: Any) -> None:
        now = time.monotonic_ns()
        stamp = stamp_ns(msg.header)
        labels = cloud_labels(msg)
        with self.cond:
            if stamp in self.outputs:
                self.duplicates += 1
            else:
                self.outputs[stamp] = (now, labels)
            self.cond.notify_all()

    def _on_diag(self, msg: Any) -> None:
        for st in msg.status:
            if st.name.endswith(": segmentation"):
                with self.lock:
                    self.diag = {kv.key: kv.value for kv in st.values}
                    lvl = st.level
                    self.diag["level"] = str(lvl[0] if isinstance(lvl, bytes) else int(lvl))
                    self.diag["message"] = st.message
                    self.diag_count += 1

    def publish_clock(self, t_ns: int) -> None:
        from builtin_interfaces.msg import Time

        sec, nsec = divmod(int(t_ns), 1_000_000_000)
        self.pub_clock.publish(self._Clock(clock=Time(sec=sec, nanosec=nsec)))

    def ready(self, lidar_topic: str) -> bool:
        """The node subscribes to the LiDAR topic only once its model is loaded."""
        return (self.pubs[lidar_topic].get_subscription_count() > 0
                and self.node.count_publishers(self.output_topic) > 0)  # fmt: skip

    def wait_output(self, stamp: int, timeout: float) -> bool:
        """True once the output of scan ``stamp`` arrived, False after ``timeout``;
        raises :class:`ReplayError` when a callback failed meanwhile."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while stamp not in self.outputs and self.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.5))
        self.check()
        return True
