"""What a replay is asked to do (:class:`ReplayOptions`) and how it fails (:class:`ReplayError`).

Why a module of its own: every other part of the replay (bag planning, the node process,
the player, the CLI) raises the same one-line error and reads the same options; keeping
them here lets those modules import each other in one direction only.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xmodelkd_ros.evaluation.criteria import Criteria

STARTUP_TIMEOUT_S = 180.0  # torch + rclpy import and model load on a loaded 2-core machine


class ReplayError(RuntimeError):
    """A user-facing problem (bad bag, topic, model, node failure): one line, exit 2/1."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ReplayOptions:
    """Everything :func:`run_replay` needs (the CLI flags)."""

    bag: Path
    model: Path
    labels_topic: str | None = None
    labels_dir: Path | None = None
    labels: bool = True  # False: latency and drops only, even where the bag has labels
    lidar_topic: str | None = None
    rate: float = 1.0
    max_throughput: bool = False
    report: Path | None = None
    backend: str = "auto"
    params_file: Path | None = None
    domain_id: int | None = None
    cameras: bool = True
    output_timeout_s: float = 30.0
    startup_timeout_s: float = STARTUP_TIMEOUT_S
    late_ms: float | None = None  # default: one scan period of the bag
    quiet: bool = False
    #: Fast DDS profile for the bag player (this process) and the node: "default" (the
    #: shipped large-data profile), a path, or "none"; never overrides the user's own.
    dds_profile: str = "default"
    #: pass/fail criteria (a YAML path, loaded and checked before the node starts)
    criteria: Path | Criteria | None = None


def log(opts: ReplayOptions, msg: str) -> None:
    if not opts.quiet:
        print(f"[replay] {msg}", file=sys.stderr, flush=True)
