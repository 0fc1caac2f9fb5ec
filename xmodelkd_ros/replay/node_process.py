"""The node under test: the real ``segment_node`` in a child process, and its parameters.

Why a child process: users judge a perception node by replaying recorded drives into the
very process that runs on the vehicle (same parameters, middleware, queueing and drop
policy). The replay's parameters (model, the bag's topics, reliable QoS, cameras) are
written to a params file applied after the user's own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from xmodelkd_ros.dds import config_path
from xmodelkd_ros.dotted import flatten_dotted
from xmodelkd_ros.node.segment_node import NODE_NAME
from xmodelkd_ros.procenv import child_env
from xmodelkd_ros.replay.bag import CAMERA_INFO, IMAGE_TYPES, BagPlan
from xmodelkd_ros.replay.options import ReplayError

OUTPUT_TOPIC = f"/{NODE_NAME}/output/segmentation"
_SEGMENTATION_PARAM = "output.segmentation_topic"
# params-file keys that address the replay's node (no namespace): rcl's wildcards and name
_NODE_KEYS = ("/**", "**", NODE_NAME, f"/{NODE_NAME}", f"/**/{NODE_NAME}")


def default_params_file() -> Path | None:
    """The package's ``config/segment.yaml`` (source tree or installed share)."""
    return config_path("segment.yaml")


def _resolve_topic(name: str) -> str:
    """A node-relative topic name as the replay's node (root namespace) resolves it."""
    if name.startswith("~"):
        return f"/{NODE_NAME}" + name[1:]
    return name if name.startswith("/") else f"/{name}"


def output_topic(params_file: Path | None) -> str:
    """The labeled-cloud topic the node publishes given ``params_file`` (its
    ``output.segmentation_topic`` for this node, resolved), ``OUTPUT_TOPIC`` by default."""
    if params_file is None:
        return OUTPUT_TOPIC
    import yaml

    try:
        doc = yaml.safe_load(Path(params_file).read_text())
    except OSError as exc:
        raise ReplayError(f"cannot read params file {params_file}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ReplayError(f"params file {params_file} is not valid YAML: "
                          f"{' '.join(str(exc).split())}") from None  # fmt: skip
    topic = None
    for key, section in (doc if isinstance(doc, dict) else {}).items():
        if key in _NODE_KEYS and isinstance(section, dict):
            params = flatten_dotted(section.get("ros__parameters") or {})
            topic = params.get(_SEGMENTATION_PARAM, topic)
    if topic is None:
        return OUTPUT_TOPIC
    if not isinstance(topic, str) or not topic:
        raise ReplayError(f"params file {params_file}: {_SEGMENTATION_PARAM} must be a "
                          f"non-empty string, got {topic!r}")  # fmt: skip
    return _resolve_topic(topic)


def check_model(model: str | os.PathLike) -> Path:
    """A model dir must hold ``model.json`` (an export); a ``.pt`` runs on torch."""
    path = Path(model).expanduser()
    if not path.exists():
        raise ReplayError(f"model {path} does not exist")
    if path.is_dir() and not (path / "model.json").is_file():
        raise ReplayError(
            f"model dir {path} has no model.json: export a checkpoint first "
            "(python -m xmodelkd_ros.export --checkpoint CKPT --out DIR)"
        )
    return path.resolve()


def node_params(plan: BagPlan, model: Path, backend: str, sim_time: bool) -> dict[str, Any]:
    """Parameters for the replay's node: the bag's topics, reliable input, its cameras."""
    p: dict[str, Any] = {
        "model": str(model),
        "backend": backend,
        "input.points_topic": plan.lidar_topic,
        # Reliable input: the replay judges the node, not best-effort UDP on loopback.
        "qos.input": "reliable",
        "qos.output": "reliable",
        "use_sim_time": sim_time,
    }
    if model.suffix == ".pt" and backend == "auto":
        p["backend"] = "torch"
    names = plan.cameras
    if names:
        p["cameras.names"] = names
        for t, (mtype, name) in plan.camera_topics.items():
            if mtype in IMAGE_TYPES:
                p[f"cameras.{name}.image_topic"] = t
                p[f"cameras.{name}.compressed"] = mtype.endswith("CompressedImage")
            elif mtype == CAMERA_INFO:
                p[f"cameras.{name}.info_topic"] = t
        for calib in (plan.path.parent / "calibration.yaml", plan.path / "calibration.yaml"):
            if calib.is_file():
                p["cameras.calibration_file"] = str(calib.resolve())
                break
    return p


class NodeProcess:
    """The real ``segment_node`` in a child process (log to a file, killed in ``stop``)."""

    def __init__(self, params: dict[str, Any], workdir: Path, env: dict[str, str],
                 params_file: Path | None) -> None:  # fmt: skip
        import yaml

        self.params_path = workdir / "replay_params.yaml"
        self.params_path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        self.log_path = workdir / "node.log"
        cmd = [sys.executable, "-m", "xmodelkd_ros.node.main", "--ros-args"]
        if params_file is not None:
            cmd += ["--params-file", str(params_file)]
        cmd += ["--params-file", str(self.params_path)]
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 6) -> str:
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-n:])

    def stop(self) -> int | None:
        """SIGINT for a clean shutdown, SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode


def ros_env(domain: int) -> dict[str, str]:
    """The node child's environment: :func:`~xmodelkd_ros.procenv.child_env` (so the child
    imports this very package, also from an uninstalled checkout, as the side stage and the
    export fixture do), isolated on ``domain``, Fast DDS, localhost discovery."""
    env = child_env()
    env.update(ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env
