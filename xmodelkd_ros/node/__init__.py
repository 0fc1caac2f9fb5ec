"""The live ROS 2 segmentation node (``ros2 run xmodelkd_ros segment_node``).

Why a package of small modules: the rclpy wiring (:mod:`.segment_node`, with the
parameter declarations of :mod:`.ros_params`) stays apart from what can be tested on a
machine without ROS: the parameter specs and their validation (:mod:`.params`), the
generated schema and parameter table (:mod:`.schema`), the per-scan pipeline
(:mod:`.processing`), camera overlays (:mod:`.cameras`, :mod:`.overlay`), the health
rules (:mod:`.diagnostics`) and the worker hand-off (:mod:`.slot`). This file imports
nothing, so importing any of the ROS-free modules never pulls in rclpy.
"""
