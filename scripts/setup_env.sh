#!/usr/bin/env bash
# Creates ./.venv with everything the project, its tests and its benchmarks need on a
# CPU machine. torch is pinned to the CPU wheel first: an unpinned torch (asked for by
# any package) would otherwise pull a multi-GB CUDA build. GPU machines: see README.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
# The ROS 2 wheels (rclpy + Fast DDS) stand in for a ROS distribution on bare machines;
# skip them with WITH_ROS=0 on a vehicle whose rclpy comes from /opt/ros.
EXTRAS="dev,export,train,fleet"
if [ "${WITH_ROS:-1}" = "1" ]; then
    EXTRAS="$EXTRAS,ros"
fi
"$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]" "$TORCH_SPEC"
# The pretrained 2D branch's architecture (EfficientNet-Lite, xmodelkd_ros/nets/
# image_efficientnet.py). --no-deps: geffnet's metadata asks for torchvision, whose wheels
# on the package index are CUDA builds that would pull another torch and fail to import
# beside this one; geffnet itself needs only torch.
"$VENV/bin/python" -m pip install --quiet --no-deps "geffnet==1.0.2"
# ONNX Runtime's API headers for the fused CPU graph's custom-op library (optional: without
# them ONNX Runtime runs the standard-ops graph). Skip with WITH_ORT_OPS=0.
if [ "${WITH_ORT_OPS:-1}" = "1" ]; then
    VENV="$VENV" bash scripts/fetch_ort_headers.sh "$VENV/include/onnxruntime" \
        || echo "warning: no ONNX Runtime headers; onnxruntime runs model_cpu.onnx (standard ops)"
fi
"$VENV/bin/python" -c "import torch, xmodelkd_ros; print('environment ready: torch', torch.__version__)"
