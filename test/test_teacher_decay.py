"""``loss.distill.teacher_decay``: the teacher terms' weights follow a schedule over the
distill stage. The factor against its closed forms and properties, the loss against a
sum of its components computed independently, and a real (tiny) distill run whose steps
see the schedule the trainer's global step implies."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from training_hooks import TINY

from xmodelkd_ros.training.hooks import HookBase
from xmodelkd_ros.training.losses import feature_distill, kd_kl, lovasz_softmax
from xmodelkd_ros.training.objectives import (
    TEACHER_DECAYS,
    DistillLoss,
    DistillWeights,
    teacher_decay_factor,
)
from xmodelkd_ros.training.train import main

_progress = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(p=_progress, q=_progress)
def test_decay_factor_falls_from_one_tozero_loss(p, q):
    lo, hi = min(p, q), max(p, q)
    for kind in TEACHER_DECAYS:
        f_lo, f_hi = teacher_decay_factor(kind, lo), teacher_decay_factor(kind, hi)
        assert 0.0 <= f_hi <= f_lo <= 1.0 + 1e-12  # never rises, stays in [0, 1]
    assert teacher_decay_factor("none", p) == 1.0
    assert teacher_decay_factor("linear", p) == pytest.approx(1.0 - p)
    assert teacher_decay_factor("cosine", p) == pytest.approx(math.cos(math.pi * p / 2) ** 2)


def test_decay_factor_ends_and_clamps():
    for kind in ("linear", "cosine"):
        assert teacher_decay_factor(kind, 0.0) == 1.0
        assert teacher_decay_factor(kind, 1.0) == pytest.approx(0.0, abs=1e-12)
        assert teacher_decay_factor(kind, 0.5) == pytest.approx(0.5)
        assert teacher_decay_factor(kind, 1.5) == teacher_decay_factor(kind, 1.0)
        assert teacher_decay_factor(kind, -0.5) == 1.0
    with pytest.raises(ValueError, match=r"unknown teacher_decay .* \(none \| linear \| cosine\)"):
        teacher_decay_factor("exponential", 0.3)


def _outputs(n: int = 16, c: int = 5, d: int = 8):
    g = torch.Generator().manual_seed(3)
    student = SimpleNamespace(logits=torch.randn(n, c, generator=g, requires_grad=True),
                              features=torch.randn(n, d, generator=g, requires_grad=True))
    teacher = SimpleNamespace(logits=torch.randn(n, c, generator=g),
                              features=torch.randn(n, d, generator=g),
                              logits_3d=torch.randn(n, c, generator=g),
                              features_3d=torch.randn(n, d, generator=g))
    labels = torch.randint(-1, c, (n,), generator=g)
    labels[0] = 0
    return student, teacher, labels  # fmt: skip


@pytest.mark.parametrize("kind,progress", [("linear", 0.25), ("cosine", 0.7), ("none", 0.9)])
def test_only_the_teacher_terms_are_scaled(kind, progress):
    student, teacher, labels = _outputs()
    fov = torch.arange(16) % 3 != 0
    w = DistillWeights(lovasz=0.5, kd=2.0, feat=0.3, kd_all=0.4, teacher_decay=kind)
    loss_fn = DistillLoss(8, 8, 8, w)
    loss_fn.set_progress(progress)
    total, parts = loss_fn(student, labels, teacher, fov)
    f = teacher_decay_factor(kind, progress)
    valid = labels != -1
    labels_part = torch.nn.functional.cross_entropy(student.logits[valid], labels[valid]) + (
        0.5 * lovasz_softmax(torch.softmax(student.logits, 1), labels, -1)
    )
    teacher_part = (
        2.0 * kd_kl(student.logits, teacher.logits, 2.0, fov)
        + 0.3 * feature_distill(student.features, teacher.features, loss_fn.head, fov)
        + 0.4 * kd_kl(student.logits, teacher.logits_3d, 2.0)
    )
    torch.testing.assert_close(total, labels_part + f * teacher_part)
    # the components are logged unscaled; the factor beside them when a schedule is on
    torch.testing.assert_close(parts["kd"], kd_kl(student.logits, teacher.logits, 2.0, fov))
    assert ("teacher_scale" in parts) == (kind != "none")
    if kind != "none":
        assert float(parts["teacher_scale"]) == pytest.approx(f)
    # labels only (the baseline's path): nothing to scale, nothing logged
    _, base_parts = loss_fn(student, labels)
    assert set(base_parts) == {"ce", "lovasz", "total"}


def test_unknown_schedule_fails_when_the_loss_is_built():
    with pytest.raises(ValueError, match="unknown teacher_decay"):
        DistillLoss(8, 8, 8, DistillWeights(teacher_decay="step"))


class _RecordScale(HookBase):
    """The teacher factor each distill step trains with (after the trainer moved it)."""

    priority = 30  # after ProgressHook (20)

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, float]] = []

    def before_step(self, trainer) -> None:
        if trainer.name == "distill":
            total = trainer.epochs * trainer.steps_per_epoch
            self.seen.append((trainer.global_step, total, trainer.stage.loss.teacher_scale))


def test_a_distill_run_follows_the_schedule_and_logs_it(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--out", str(out), *TINY, "schedule.student_epochs=3", "schedule.steps_per_epoch=2"]
    assert main(["--stage", "teacher", *common]) == 0
    record = _RecordScale()
    code = main(["--stage", "distill", *common, "loss.distill.teacher_decay=linear"],
                hooks=[record])  # fmt: skip
    assert code == 0
    assert [s for s, _, _ in record.seen] == list(range(6))
    for step, total, scale in record.seen:
        assert total == 6 and scale == pytest.approx(1.0 - step / total)
    log = (out / "train.log").read_text()
    assert "teacher_scale" in log
    capsys.readouterr()
    assert main(["--stage", "distill", *common, "loss.distill.teacher_decay=steps"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 1 and "unknown teacher_decay" in errors[0]
