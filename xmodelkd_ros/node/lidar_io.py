"""One LiDAR's topics on the node: its cloud subscription with QoS events, its
segmentation / visualization / filtered publishers, its debug timings (rclpy).

Why apart from :mod:`xmodelkd_ros.node.segment_node`: the node serves several LiDARs
with one model and one worker, and everything that exists once per LiDAR (topics, QoS
event handling, what its outputs hold) lives here, once; the node keeps what is shared
(the model, the worker, the cameras, the diagnostics timer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rclpy.event_handler import (
    SubscriptionEventCallbacks,
    UnsupportedEventTypeError,
    qos_policy_name_from_kind,
)
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Float64

from xmodelkd_ros.msgs import encode_filtered_cloud, encode_labeled_cloud
from xmodelkd_ros.node.input_stats import InputStats
from xmodelkd_ros.node.processing import ProcessedScan, ScanProcessor, filter_labels
from xmodelkd_ros.node.vehicle import LidarInput

#: debug topic name -> stage (when debug.publish_timings), as Autoware's debug publishers.
DEBUG_TOPICS = {"processing_time": "total", "inference": "inference",
                "pipeline_latency": "pipeline"}  # fmt: skip


class LidarChannel:
    """The subscription and publishers of ``lidar`` on ``node``, its processor and counters.

    ``on_points(name, msg)`` is called for every cloud (the node stamps and queues it).
    """

    def __init__(self, node: Any, lidar: LidarInput, processor: ScanProcessor,
                 stats: InputStats, qos_in: Any, qos_out: Any,
                 on_points: Callable[[str, Any], None]) -> None:  # fmt: skip
        cfg = node.cfg
        self.node, self.lidar, self.processor, self.stats = node, lidar, processor, stats
        self.pub_seg = node.create_publisher(PointCloud2, lidar.segmentation_topic, qos_out)
        self.pub_viz = (node.create_publisher(PointCloud2, lidar.visualization_topic, qos_out)
                        if cfg.output.publish_rgb else None)  # fmt: skip
        self.pub_filtered = (node.create_publisher(PointCloud2, lidar.filtered_topic, qos_out)
                             if cfg.output.publish_filtered else None)  # fmt: skip
        prefix = f"~/{lidar.name}/debug" if lidar.name else "~/debug"
        self.pub_debug = {
            name: node.create_publisher(Float64, f"{prefix}/{name}_ms", qos_out)
            for name in DEBUG_TOPICS
        } if cfg.diagnostics.publish_timings else {}  # fmt: skip
        self._subscribe(qos_in, lambda msg: on_points(lidar.name, msg))

    def _subscribe(self, qos: Any, callback: Callable[[Any], None]) -> None:
        """The cloud subscription with QoS event callbacks (message lost only where the rmw
        supports it: rclpy raises for an unsupported one, so fall back without it)."""
        topic = self.lidar.points_topic
        cbs = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos,
                                         message_lost=self._on_message_lost)  # fmt: skip
        try:
            self.sub = self.node.create_subscription(PointCloud2, topic, callback, qos,
                                                     event_callbacks=cbs)  # fmt: skip
            self.qos_event_names = "message_lost, incompatible_qos"
        except UnsupportedEventTypeError:
            cbs = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
            self.sub = self.node.create_subscription(PointCloud2, topic, callback, qos,
                                                     event_callbacks=cbs)  # fmt: skip
            self.qos_event_names = "incompatible_qos (rmw reports no message_lost)"

    @property
    def topic(self) -> str:
        """The resolved input topic."""
        return self.sub.topic_name

    def publishers(self) -> int:
        """Publishers of the input topic (a silent input with publishers is reported)."""
        return self.node.count_publishers(self.sub.topic_name)

    def _on_message_lost(self, info: Any) -> None:
        self.stats.lost = int(info.total_count)

    def _on_incompatible_qos(self, info: Any) -> None:
        self.stats.incompatible_qos = int(info.total_count)
        self.stats.incompatible_policy = qos_policy_name_from_kind(info.last_policy_kind)
        self.node.get_logger().error(
            f"a publisher of {self.topic} has QoS incompatible with ours "
            f"({self.stats.incompatible_policy}): its clouds never arrive; set qos.input to "
            "match it")  # fmt: skip

    def publish(self, scan: ProcessedScan, palette: Any, filter_classes: list[int]) -> int:
        """Publish the labeled cloud, then (when someone listens) the visualization and the
        filtered cloud; returns the monotonic time (ns) the labeled cloud went out."""
        self.pub_seg.publish(encode_labeled_cloud(scan.cloud, scan.labels, scan.confidence,
                                                  cloud_cls=PointCloud2, field_cls=PointField))
        published_ns = time.monotonic_ns()
        if self.pub_viz is not None and self.pub_viz.get_subscription_count() > 0:
            self.pub_viz.publish(encode_labeled_cloud(
                scan.cloud, scan.labels, scan.confidence, with_rgb=True, palette=palette,
                cloud_cls=PointCloud2, field_cls=PointField))  # fmt: skip
        if self.pub_filtered is not None and self.pub_filtered.get_subscription_count() > 0:
            labels, remove = filter_labels(scan, filter_classes)
            self.pub_filtered.publish(encode_filtered_cloud(
                scan.cloud, labels, remove, cloud_cls=PointCloud2, field_cls=PointField))
        return published_ns

    def publish_timings(self, timings: dict[str, float]) -> None:
        """The debug timing topics (debug.publish_timings), in ms."""
        for name, stage in DEBUG_TOPICS.items():
            if name in self.pub_debug:
                self.pub_debug[name].publish(Float64(data=timings[stage] * 1e3))
