"""Shared fixtures: single-threaded torch for tiny-tensor tests, and the ROS node tests'
real middleware (Fast DDS on loopback).

Why: several developers and CI jobs run these tests on one machine at once. Each test
gets its own ``ROS_DOMAIN_ID`` (derived from the pytest process id plus a counter), so
parallel runs never see each other's topics, and discovery stays on loopback.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

_domain_counter = itertools.count()


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threads only add OpenMP barrier overhead (several-fold on
    a shared, oversubscribed CI box), so tests that use this run single-threaded."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rclpy_missing() -> str | None:
    try:
        import diagnostic_msgs.msg  # noqa: F401
        import rclpy  # noqa: F401
        import sensor_msgs.msg  # noqa: F401
    except ImportError as exc:
        return f"rclpy / ROS message packages are not importable: {exc}"
    return None


@pytest.fixture(scope="session")
def rclpy_available() -> None:
    """Skip (with the reason) where rclpy or the message packages cannot be imported."""
    reason = _rclpy_missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def ros_domain(rclpy_available: None) -> int:
    """A ROS domain id unique to this test within this run and unlikely to clash with
    other runs (pid-derived; domains 1..230 are valid with Fast DDS default ports)."""
    return 1 + (os.getpid() * 7 + next(_domain_counter)) % 230


@pytest.fixture
def ros_env(ros_domain: int) -> dict[str, str]:
    """Environment for child ROS processes: own domain, Fast DDS, loopback discovery."""
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(ros_domain),
        RMW_IMPLEMENTATION="rmw_fastrtps_cpp",
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        PYTHONUNBUFFERED="1",
        RCUTILS_COLORIZED_OUTPUT="0",
        OMP_NUM_THREADS="1",  # two cores shared with the test process and other runs
    )
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; conflicts with the range variable
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="session")
def student_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained student checkpoint (the real network, narrow so CPU tests stay fast)."""
    from xmodelkd_ros.nets import StudentCheckpoint, StudentNet, save_student, student_config
    from xmodelkd_ros.nets.inputs import default_grid

    cfg = student_config("small", enc_widths=(8, 16), dec_widths=(8,))
    path = tmp_path_factory.mktemp("model") / "student.pt"
    save_student(StudentCheckpoint(cfg, default_grid(), StudentNet(cfg).state_dict()), path)
    return path


@pytest.fixture(scope="session")
def exported_model(student_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``student_checkpoint`` exported to a model dir (model.onnx + model.json)."""
    pytest.importorskip("onnx", reason="ONNX export needs the 'export' extra")
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is in the 'export' extra")
    from xmodelkd_ros.export import export_checkpoint

    out = tmp_path_factory.mktemp("export") / "model"
    export_checkpoint(student_checkpoint, out)
    return out


class _Recorder:
    """Stand-in for a launch action/substitution: records its constructor arguments."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Recorder):
    def perform(self, context: dict[str, str]) -> str:
        return context[self.args[0]]


class _FindPackageShare(_Recorder):
    def perform(self, context: dict[str, str]) -> str:
        return f"/opt/share/{self.args[0]}"


@pytest.fixture
def load_launch_file(monkeypatch: pytest.MonkeyPatch):
    """Load a launch file against minimal stand-ins of the ``launch`` / ``launch_ros`` names.

    Honest scope: those packages have no wheels here, so tests can only check what *our*
    launch code does with them (arguments declared, node or command built, remappings);
    ``ros2 launch`` on a ROS install proves compatibility with the real API.
    """
    import importlib.util
    import sys
    import types

    mods = {
        "launch": {"LaunchDescription": type("LaunchDescription", (_Recorder,), {})},
        "launch.actions": {
            name: type(name, (_Recorder,), {})
            for name in ("DeclareLaunchArgument", "ExecuteProcess", "OpaqueFunction")
        },
        "launch.substitutions": {"LaunchConfiguration": _LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"Node": type("Node", (_Recorder,), {})},
        "launch_ros.substitutions": {"FindPackageShare": _FindPackageShare},
    }
    for name, attrs in mods.items():
        module = types.ModuleType(name)
        for key, value in attrs.items():
            setattr(module, key, value)
        monkeypatch.setitem(sys.modules, name, module)

    def load(path: Path):
        compile(path.read_text(), str(path), "exec")
        spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
