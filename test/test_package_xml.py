"""package.xml lists exactly what the code imports from ROS (rosdep installs from it, so a
missing key breaks a colcon build on a vehicle, and an unused one installs for nothing)."""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Imported, but installed with pip (setup.py), not by rosdep.
PIP_ONLY = {"torch", "onnx", "onnxruntime", "tensorrt", "spconv", "rosbags", "nuscenes",
            "tensorboard", "pytest", "hypothesis", "omegaconf", "geffnet",
            "ray"}  # fmt: skip
#: rosdep keys for Python libraries -> the module they provide.
PYTHON_KEYS = {"python3-numpy": "numpy", "python3-yaml": "yaml", "python3-tqdm": "tqdm",
               "python3-pil": "PIL", "python3-opencv": "cv2"}  # fmt: skip
#: Depended on for a command, not an import: `ros2 launch` runs launch/*.py.
COMMANDS = {"ros2launch"}


def _imports() -> set[str]:
    mods: set[str] = set()
    for path in [*(ROOT / "xmodelkd_ros").rglob("*.py"), *(ROOT / "launch").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                mods.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    return mods - set(sys.stdlib_module_names) - {"xmodelkd_ros"}


def test_exec_depends_match_imports():
    tree = ET.parse(ROOT / "package.xml")
    deps = {e.text.strip() for e in tree.getroot().iter("exec_depend")}
    imported = _imports()
    ros_deps = {d for d in deps if d not in PYTHON_KEYS and d not in COMMANDS}
    ros_imported = imported - PIP_ONLY - set(PYTHON_KEYS.values())
    assert ros_imported == ros_deps, (
        f"imported but not in package.xml: {sorted(ros_imported - ros_deps)}; "
        f"in package.xml but never imported: {sorted(ros_deps - ros_imported)}"
    )
    for key in deps & set(PYTHON_KEYS):
        assert PYTHON_KEYS[key] in imported, f"{key} is never imported"
    assert "ament_flake8" not in {e.text for e in tree.getroot().iter()}
