"""Dataset readers (SemanticKITTI, nuScenes, the simulator, ROS 2 bags) and collation.

A regular package, so non-editable installs (wheels, colcon) ship it.
"""
