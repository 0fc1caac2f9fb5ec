"""Launch the LiDAR segmentation node: ``ros2 launch xmodelkd_ros segment.launch.py``.

Arguments (``ros2 launch xmodelkd_ros segment.launch.py --show-args``):

* ``params_file``: node parameters (default: the installed ``config/segment.yaml``)
* ``model``: exported model dir or student ``.pt``; empty keeps the params file's value
* ``backend`` / ``device``: override the params file when non-empty
* ``namespace``, ``node_name``, ``use_sim_time`` (true when replaying a bag with --clock)
* ``input_points``, ``output_segmentation``, ``output_visualization``, ``output_filtered``:
  topic remappings of ``~/input/points`` and ``~/output/*``
* ``log_level``
* ``dds_profile``: Fast DDS profile for the node's process (``FASTDDS_DEFAULT_PROFILES_FILE``):
  ``default`` = the installed ``config/fastdds_large_data.xml`` (large clouds through
  shared memory), a path, or ``none``. Never applied when the environment already chose a
  DDS configuration (``FASTDDS_DEFAULT_PROFILES_FILE``, a non-Fast-DDS
  ``RMW_IMPLEMENTATION``, ``CYCLONEDDS_URI``). The profile matters most on the LiDAR
  driver's side: see docs/large-clouds-dds.md.
"""

import os

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription
from xmodelkd_ros.dds import FASTDDS_PROFILE, PROFILE_ENV, user_dds_config

PACKAGE = "xmodelkd_ros"

# (name, default, description); defaults are strings as launch arguments are.
ARGUMENTS = (
    ("params_file", "", "Node parameters YAML ('' = the package's config/segment.yaml)"),
    ("model", "", "Exported model dir or student .pt ('' = value from params_file)"),
    ("backend", "", "auto | tensorrt | onnxruntime | torch ('' = value from params_file)"),
    ("device", "", "cpu | cuda | cuda:N ('' = value from params_file)"),
    ("namespace", "", "Namespace of the node"),
    ("node_name", "lidar_segmentation", "Name of the node"),
    ("use_sim_time", "false", "Use /clock (bag replay with --clock)"),
    ("input_points", "~/input/points", "Remap the input PointCloud2 topic"),
    ("output_segmentation", "~/output/segmentation", "Remap the labeled cloud topic"),
    ("output_visualization", "~/output/visualization", "Remap the RViz cloud topic"),
    ("output_filtered", "~/output/filtered", "Remap the filtered cloud topic"),
    ("log_level", "info", "Logging level of the node"),
    ("dds_profile", "default", "Fast DDS profile of the node's process: default (the "
     "package's large-data profile) | PATH | none; never overrides one set in the environment"),
)


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _node(context, *args, **kwargs):
    """Build the Node action once the arguments are known (optional overrides)."""

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    params_file = arg("params_file") or (
        FindPackageShare(PACKAGE).perform(context) + "/config/segment.yaml"
    )
    overrides = {"use_sim_time": _truthy(arg("use_sim_time"))}
    for name in ("model", "backend", "device"):
        if arg(name):
            overrides[name] = arg(name)
    additional_env = {}
    profile = arg("dds_profile").strip()
    env = getattr(context, "environment", os.environ)
    if profile not in ("", "none") and user_dds_config(env) is None:
        if profile == "default":
            profile = FindPackageShare(PACKAGE).perform(context) + "/config/" + FASTDDS_PROFILE
        additional_env[PROFILE_ENV] = profile
    remaps = [
        ("~/input/points", arg("input_points")),
        ("~/output/segmentation", arg("output_segmentation")),
        ("~/output/visualization", arg("output_visualization")),
        ("~/output/filtered", arg("output_filtered")),
    ]
    return [
        Node(
            package=PACKAGE,
            executable="segment_node",
            name=arg("node_name"),
            namespace=arg("namespace"),
            parameters=[params_file, overrides],
            remappings=[(a, b) for a, b in remaps if a != b],
            arguments=["--ros-args", "--log-level", arg("log_level")],
            additional_env=additional_env,
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    """Declared arguments plus the node (built after argument substitution)."""
    return LaunchDescription(
        [DeclareLaunchArgument(n, default_value=d, description=t) for n, d, t in ARGUMENTS]
        + [OpaqueFunction(function=_node)]
    )
