"""Launch the LiDAR segmentation node: ``ros2 launch xmodelkd_ros segment.launch.py``.

Arguments (``ros2 launch xmodelkd_ros segment.launch.py --show-args``):

* ``params_file``: node parameters (default: the installed ``config/segment.yaml``)
* ``model``: exported model dir or student ``.pt``; empty keeps the params file's value
* ``backend`` / ``device``: override the params file when non-empty
* ``namespace``, ``node_name``, ``use_sim_time`` (true when replaying a bag with --clock)
* ``input_points``, ``output_segmentation``, ``output_visualization``, ``output_filtered``:
  topic remappings of ``~/input/points`` and ``~/output/*``
* ``lidars``: several LiDARs in this one node and model, ``NAME=TOPIC,NAME=TOPIC``; each
  LiDAR's outputs go to ``~/NAME/output/*``
* ``lidar_calibration``: a YAML with each LiDAR's ``T_vehicle_lidar`` (``lidars: {NAME:
  {T_vehicle_lidar: [16 values]}}`` or ``{NAME: {xyz: [...], rpy: [...]}}``)
* ``ego_box``: ``true`` removes the vehicle's own body (the ``ego_box.*`` box, vehicle
  frame) from the outputs
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
from xmodelkd_ros.node.vehicle import launch_parameters

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
    ("lidars", "", "Several LiDARs in one node: NAME=TOPIC,NAME=TOPIC (outputs on "
     "~/NAME/output/*; '' = one LiDAR on input_points)"),
    ("lidar_calibration", "", "YAML with each LiDAR's T_vehicle_lidar (lidars: {NAME: "
     "{T_vehicle_lidar: [16 values]} or {xyz: [..], rpy: [..]}}); '' = from params_file"),
    ("ego_box", "", "true | false: remove the vehicle's own body from the outputs "
     "('' = value from params_file)"),
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
    overrides.update(launch_parameters(arg("lidars"), arg("lidar_calibration")))
    if arg("ego_box"):
        overrides["ego_box.enabled"] = _truthy(arg("ego_box"))
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
