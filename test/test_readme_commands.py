"""Every command the README shows answers ``--help``: the guide a user reads first must
not name a module or script that moved. ``ros2 launch`` / ``ros2 run`` need a ROS
installation's CLI and are left to the node tests (which start the node itself)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[list[str]]:
    """``python -m MODULE`` and ``python SCRIPT.py`` in the README, each once, in order."""
    text = (ROOT / "README.md").read_text()
    found = re.findall(r"python (-m [\w.]+|[\w/]+\.py)", text)
    return [item.split() for item in dict.fromkeys(found)]


def test_the_readme_shows_the_main_commands():
    commands = {" ".join(c) for c in _readme_commands()}
    for expected in ("-m xmodelkd_ros.demo", "-m xmodelkd_ros.training.train",
                     "-m xmodelkd_ros.evaluation.benchmark", "-m xmodelkd_ros.replay"):  # fmt: skip
        assert expected in commands


@pytest.mark.parametrize("command", _readme_commands(), ids=" ".join)
def test_readme_command_answers_help(command):
    proc = subprocess.run(
        [sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout
