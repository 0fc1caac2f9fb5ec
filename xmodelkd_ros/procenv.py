"""The environment for a child ``python -m xmodelkd_ros...`` process.

Why: a child started with ``sys.executable`` must import this very package, also from a
source checkout that is not installed (tests, the demo run from a clone); putting the
checkout first on ``PYTHONPATH`` does that without touching the caller's other entries.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The folder that holds the ``xmodelkd_ros`` package.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    """``os.environ`` with :data:`PACKAGE_ROOT` prepended to ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    return env
