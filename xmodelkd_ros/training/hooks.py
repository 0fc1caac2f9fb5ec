"""Everything around the optimisation step, as hooks the :class:`Trainer` calls.

The loop itself (``run_step``: forward, backward, clip, step) knows nothing about
checkpoints, logging or evaluation; those are hooks with a ``priority`` (lower runs
first). Tests and tools add their own (a NaN at step N, a SIGTERM at step N, a dump of
every rank's weights) through ``main(argv, hooks=[...])`` instead of recipe keys.

Call points, in order: ``before_train`` -> per epoch ``before_epoch`` -> per step
``before_step`` -> forward -> ``after_forward`` (may set ``trainer.skip_step``) ->
backward / optimizer step -> ``after_step`` (only for applied steps) -> ``after_epoch``
-> ``after_train`` -> the stage's final checkpoint.

Every rank must call the same collectives in the same order, so a hook that calls one
(``D.any_flag``) runs on every rank and decides the same way on each.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from xmodelkd_ros.nets.checkpoint import CheckpointError, read_torch_file
from xmodelkd_ros.training import distributed as D
from xmodelkd_ros.training.context import TrainingStoppedError
from xmodelkd_ros.training.evaluate import evaluate
from xmodelkd_ros.training.losses import NonFiniteLossError, check_finite

if TYPE_CHECKING:
    from xmodelkd_ros.training.trainer import Trainer


class HookBase:
    """No-op call points; ``priority`` orders hooks (lower first, stable)."""

    priority: int = 50

    def before_train(self, trainer: Trainer) -> None: ...

    def before_epoch(self, trainer: Trainer) -> None: ...

    def before_step(self, trainer: Trainer) -> None: ...

    def after_forward(self, trainer: Trainer) -> None: ...

    def after_step(self, trainer: Trainer) -> None: ...

    def after_epoch(self, trainer: Trainer) -> None: ...

    def after_train(self, trainer: Trainer) -> None: ...


class CheckpointHook(HookBase):
    """Atomic ``<out>/<stage>/last.pt``: resumes from it, writes it at every epoch end and
    when a signal (SIGINT/SIGTERM, caught by the context's stop flag) asks to stop."""

    priority = 90  # after every hook that may send or react to a signal

    def before_train(self, trainer: Trainer) -> None:
        ctx, last = trainer.ctx, trainer.last
        if not (ctx.resume and last.is_file()):
            return
        ck = read_torch_file(last)  # a corrupt file: one CheckpointError line, exit 2
        if ck.get("done") and (ctx.out / trainer.kind.final).is_file():
            ctx.log(f"{trainer.name}: already finished ({ctx.out / trainer.kind.final}), skipping")
            trainer.finished = dict(ck.get("metrics") or {})
            return
        try:
            trainer.load_state(ck)
        except (RuntimeError, ValueError, KeyError) as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            # torch's state-dict errors open with a header line; the first mismatch says more
            reason = (lines[1] if len(lines) > 1 and lines[0].endswith(":") else
                      (lines or [type(exc).__name__])[0])  # fmt: skip
            reason = reason if len(reason) <= 160 else reason[:157] + "..."
            raise CheckpointError(
                f"cannot resume from {last}: it does not fit this stage's network or optimizer "
                f"({reason}); was the recipe changed? Train without --resume or into a new --out"
            ) from None
        ctx.log(
            f"{trainer.name}: resumed at epoch {trainer.epoch} step {trainer.start_step} ({last})"
        )

    def after_step(self, trainer: Trainer) -> None:
        if D.any_flag(trainer.ctx.stop.signum is not None, trainer.ctx.dist):
            trainer.save_checkpoint(trainer.epoch, trainer.step_in_epoch + 1)
            raise TrainingStoppedError(
                f"{trainer.name}: interrupted; checkpoint written to {trainer.last}. "
                "Continue with --resume.",
                130,
            )

    def after_epoch(self, trainer: Trainer) -> None:
        trainer.save_checkpoint(trainer.epoch + 1, 0)


class ProgressHook(HookBase):
    """Tells the stage's loss where the stage is before each step (``set_progress``, a
    fraction of its steps), for weights that follow a schedule
    (``loss.distill.teacher_decay``). Computed from the global step, so a resumed run
    continues the same schedule; a loss without ``set_progress`` is left alone."""

    priority = 20

    def before_step(self, trainer: Trainer) -> None:
        set_progress = getattr(getattr(trainer.stage, "loss", None), "set_progress", None)
        if set_progress is not None:
            set_progress(trainer.global_step / trainer.total_steps)


class NonFiniteGuardHook(HookBase):
    """A NaN/inf loss on any rank skips the step on every rank before any weight changes:
    ``optim.nan_policy=stop`` checkpoints the last finite weights and exits with code 3,
    ``skip`` logs and goes on with the next batch."""

    def __init__(self, policy: str) -> None:
        self.policy = policy

    def after_forward(self, trainer: Trainer) -> None:
        bad = ""
        try:
            check_finite(trainer.loss, f"{trainer.name} loss")
        except NonFiniteLossError as exc:
            logs = ", ".join(f"{k}={float(v):.4g}" for k, v in trainer.logs.items())
            bad = f"{exc} ({logs})"
        if not D.any_flag(bool(bad), trainer.ctx.dist):
            return
        why = bad or "non-finite loss on another rank"
        if self.policy == "skip":
            trainer.ctx.log(f"{trainer.name}: skipping step {trainer.global_step}: {why}")
            trainer.skip_step = True
            return
        trainer.save_checkpoint(trainer.epoch, trainer.step_in_epoch)
        raise TrainingStoppedError(
            f"{trainer.name}: {why} at epoch {trainer.epoch}, step {trainer.step_in_epoch} "
            f"(global {trainer.global_step}). The step was not applied; the weights in "
            f"{trainer.last} are the last finite ones. Lower optim.lr, check the data, or set "
            "optim.nan_policy=skip.",
            3,
        )


class LoggerHook(HookBase):
    """Per-epoch mean of every loss term and the point rate: tqdm postfix and train.log."""

    priority = 60

    def before_epoch(self, trainer: Trainer) -> None:
        self.sums: dict[str, float] = {}
        self.t0, self.points = time.perf_counter(), 0

    def after_step(self, trainer: Trainer) -> None:
        self.points += trainer.batch.num_points
        for k, v in trainer.logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        trainer.points_per_s = self.points / max(1e-9, time.perf_counter() - self.t0)
        if hasattr(trainer.bar, "set_postfix"):
            trainer.bar.set_postfix(
                loss=f"{float(trainer.logs['total']):.3f}", pts_s=f"{trainer.points_per_s:.0f}"
            )

    def after_epoch(self, trainer: Trainer) -> None:
        n = max(1, trainer.steps_this_epoch)
        rate = self.points / max(1e-9, time.perf_counter() - self.t0)
        trainer.ctx.log(
            f"{trainer.name} epoch {trainer.epoch + 1}/{trainer.epochs}: "
            + ", ".join(f"{k} {v / n:.4f}" for k, v in self.sums.items())
            + f", {rate:.0f} points/s"
        )


class TensorBoardHook(HookBase):
    """Every loss term, the learning rate and the point rate per step (main rank)."""

    priority = 70  # after LoggerHook, which measures the rate

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def after_step(self, trainer: Trainer) -> None:
        step, name = trainer.global_step, trainer.name
        for k, v in trainer.logs.items():
            self.writer.add_scalar(f"{name}/{k}", float(v), step)
        self.writer.add_scalar(f"{name}/lr", trainer.sched.get_last_lr()[0], step)
        self.writer.add_scalar(f"{name}/points_per_s", trainer.points_per_s, step)


class EvaluationHook(HookBase):
    """Validation mIoU of the trained network (main rank) into ``trainer.metrics``."""

    def after_train(self, trainer: Trainer) -> None:
        if not (trainer.ctx.dist.is_main and trainer.kind.evaluates):
            return
        result = evaluate(trainer.ctx, trainer.name, trainer.stage.net, trainer.class_names)
        trainer.metrics = result.to_dict()
        trainer.ctx.log(f"{trainer.name}: val mIoU {100 * result.miou:.2f}")
