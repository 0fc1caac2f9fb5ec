"""LiDAR semantic segmentation for ROS 2 with a cross-modally distilled student.

Only the rclpy wiring of :mod:`xmodelkd_ros.node` (``segment_node`` and ``ros_params``)
and :mod:`xmodelkd_ros.replay` import rclpy; every other module works (and is tested) on
a machine without ROS.
"""

__version__ = "0.1.0"
