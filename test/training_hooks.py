"""Test-only trainer hooks (were ``debug:`` recipe keys): registered with
``main(argv, hooks=[...])`` so shipped recipes carry no test knobs; and ``TINY``, the
CI-sized training overrides the training tests share.

Also run as a script under torchrun (``test_training_ddp.py``): ``python
test/training_hooks.py <train args>`` trains with :class:`DumpRankWeights`.
"""

from __future__ import annotations

import os
import signal
import sys

import torch

from xmodelkd_ros.training.hooks import HookBase

#: A training run small enough for CI (seconds): the overrides the training tests share.
TINY = [
    "--no-progress",
    "--set",
    "data.train_scans=4",
    "data.val_scans=2",
    "data.max_points=2000",
    "data.eval_max_points=2000",
    "data.render_size=[60,100]",
    "data.image_size=[32,48]",
    "schedule.teacher_epochs=1",
    "schedule.student_epochs=1",
    "log.tensorboard=false",
    "threads=1",
]

#: A benchmark run small enough for CI: one seed, one test street x 2 scans, 50 bootstrap
#: replicates; the training overrides close the list (``--set``), so more may follow.
BENCH_TINY = [
    "--seeds", "1", "--test-seeds", "9000", "--test-scans", "2", "--bootstrap", "50",
    "--no-progress", "--threads", "1", "--set",
    "data.train_scans=2", "data.val_scans=1", "data.max_points=2000",
    "data.eval_max_points=2000", "data.render_size=[60,100]", "data.image_size=[32,48]",
    "schedule.teacher_epochs=1", "schedule.student_epochs=1", "log.tensorboard=false",
]  # fmt: skip

class NanAtStep(HookBase):
    """Make the loss NaN at global step ``step`` of every stage (before the guard sees it)."""

    priority = 10

    def __init__(self, step: int) -> None:
        self.step = step

    def after_forward(self, trainer) -> None:
        if trainer.global_step == self.step:
            trainer.loss = trainer.loss * float("nan")


class SignalAtStep(HookBase):
    """Send this process a real SIGTERM once global step ``step`` is applied (mid-epoch)."""

    priority = 80  # before the checkpoint hook's stop check

    def __init__(self, step: int) -> None:
        self.step = step

    def after_step(self, trainer) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class DumpRankWeights(HookBase):
    """Every DDP rank saves its parameters to ``<out>/<stage>/rank<N>_params.pt``."""

    def after_train(self, trainer) -> None:
        params = {k: v.detach().cpu() for k, v in trainer.stage.named_parameters()}
        torch.save(params, trainer.stage_dir / f"rank{trainer.ctx.dist.rank}_params.pt")


if __name__ == "__main__":
    from xmodelkd_ros.training.train import main

    sys.exit(main(sys.argv[1:], hooks=[DumpRankWeights()]))
