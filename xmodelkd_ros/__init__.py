"""LiDAR semantic segmentation for ROS 2 with a cross-modally distilled student.

Only :mod:`xmodelkd_ros.node` (with its ``node_ros_params``) and :mod:`xmodelkd_ros.replay`
import rclpy; every other
module works (and is tested) on a machine without ROS.
"""

__version__ = "0.1.0"
