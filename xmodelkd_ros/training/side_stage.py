"""One training stage in a second process, beside the pipeline (``train --parallel-baseline``).

Why: the LiDAR-only baseline needs nothing from the teacher (its epochs are the distilled
student's lineage, a number the recipe states), and training takes one core well (the
recipe's ``threads: 1``: scatter-adds scale badly). On a 2-core machine running it beside
teacher -> distill takes the longer of the two chains instead of their sum. It is the
same CLI in a child process, so its weights are those of a sequential run: every stage
seeds its own initialisation, augmentation and steps (:mod:`.trainer`).

The child checkpoints like any stage: when the pipeline stops (signal, error) the child
is sent SIGTERM, writes its ``last.pt`` and ``--resume`` continues both.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from xmodelkd_ros.procenv import child_env
from xmodelkd_ros.training.context import TrainingStoppedError
from xmodelkd_ros.training.hooks import HookBase

#: Seconds a stopped child gets to write its checkpoint before it is killed.
STOP_GRACE_S = 60.0


def parallel_unavailable(device_type: str, world_size: int, cpus: int) -> str | None:
    """Why a side process would not help here (None: it would): it is for one CPU
    process with cores to spare; DDP ranks and GPUs already have their own parallelism."""
    if world_size > 1:
        return "distributed training (each rank already has its share)"
    if device_type != "cpu":
        return f"device {device_type} (the side process is for CPU training)"
    if cpus < 2:
        return f"{cpus} CPU core"
    return None


class SideStage:
    """``python -m xmodelkd_ros.training.train --stage <stage>`` as a child process."""

    def __init__(self, stage: str, out: Path, argv: Sequence[str]) -> None:
        self.stage = stage
        self.out = out
        self.cmd = [sys.executable, "-m", "xmodelkd_ros.training.train", "--stage", stage, *argv]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SideStage:
        # the child imports this package the way this process did (a source checkout too)
        self.proc = subprocess.Popen(self.cmd, env=child_env())
        return self

    def wait(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Block until the child ends; a failure raises with the child's exit code. When
        ``stopping()`` turns true (this process was signalled) it stops waiting and raises
        (the caller's ``stop()`` then makes the child checkpoint)."""
        assert self.proc is not None, "start() first"
        while True:
            try:
                code = self.proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stopping():
                    raise TrainingStoppedError(
                        f"interrupted while {self.stage} trained in its second process; "
                        "checkpoints written. Continue with --resume.",
                        130,
                    ) from None
        self._raise_on_failure(code)

    def check(self) -> None:
        """Raise now if the child has already failed (it does not wait)."""
        if self.proc is not None:
            self._raise_on_failure(self.proc.poll())

    def _raise_on_failure(self, code: int | None) -> None:
        if code:
            raise TrainingStoppedError(
                f"{self.stage} (second process) exited with code {code}; its output is above "
                f"and in {self.out / 'train.log'}. Continue with --resume.",
                code,
            )

    def stop(self) -> None:
        """SIGTERM a child that still runs (it checkpoints and exits), kill it after
        :data:`STOP_GRACE_S`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class SideStageWatch(HookBase):
    """Ends the pipeline at the next epoch end when the side process has failed, instead
    of training teacher and student to the end first. Runs after the epoch's checkpoint
    (``CheckpointHook``, 90), so ``--resume`` loses nothing."""

    priority = 95

    def __init__(self, side: SideStage) -> None:
        self.side = side

    def after_epoch(self, trainer: object) -> None:
        self.side.check()
