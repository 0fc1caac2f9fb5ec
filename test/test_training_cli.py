"""The training CLI end to end on a tiny synthetic world: all stages, resume, NaN guard, errors."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch
from training_hooks import TINY, NanAtStep, SignalAtStep

from xmodelkd_ros.nets.checkpoint import load_student
from xmodelkd_ros.training.hooks import HookBase
from xmodelkd_ros.training.train import main


def test_all_stages_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "baseline mIoU" in printed and "distilled mIoU" in printed and "gain" in printed
    for name in ("teacher.pt", "student.pt", "baseline.pt", "report.md", "report.json"):
        assert (out / name).is_file(), name
    for name in ("teacher", "distilled", "baseline"):
        assert (out / f"confusion_{name}.png").is_file()
    ck = load_student(out / "student.pt")
    assert ck.provenance["stage"] == "distill" and "miou" in ck.provenance["metrics"]
    assert ck.provenance["dataset"] == "synthetic"
    assert ck.provenance["intensity_range"] == [0.0, 1.0]  # export copies it to model.json
    assert load_student(out / "baseline.pt").provenance["stage"] == "baseline"
    # The baseline trains as long as the distilled student's lineage: teacher 1 + student 1.
    assert ck.provenance["epochs"] == 1
    assert load_student(out / "baseline.pt").provenance["epochs"] == 2
    report = json.loads((out / "report.json").read_text())
    gain = report["models"]["distilled"]["miou"] - report["models"]["baseline"]["miou"]
    assert report["miou_gain"] == pytest.approx(gain)
    # Distillation restricted to the points the teacher gets right runs from the same teacher.
    assert main(["--out", str(out), "--stage", "distill", *TINY, "loss.kd_mask=fov_correct"]) == 0
    assert main(["--out", str(out), "--stage", "distill", *TINY, "loss.kd_mask=bogus"]) == 2
    assert "unknown loss.kd_mask" in capsys.readouterr().err
    # Re-evaluating the saved checkpoints reproduces the numbers of the run.
    assert main(["--out", str(out), "--stage", "evaluate", *TINY]) == 0
    again = json.loads((out / "report.json").read_text())
    for name in ("teacher", "baseline"):
        assert again["models"][name]["miou"] == pytest.approx(report["models"][name]["miou"])


def _params(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_resume_is_exact(tmp_path):
    """2 epochs straight == interrupted by SIGTERM mid-epoch 1, then --resume."""
    common = [*TINY, "schedule.student_epochs=2", "data.train_scans=6"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["--stage", "baseline", "--out", str(a), *common]) == 0
    code = main(["--stage", "baseline", "--out", str(b), *common], hooks=[SignalAtStep(2)])
    assert code == 130
    ck = torch.load(b / "baseline" / "last.pt", map_location="cpu", weights_only=True)
    assert (ck["epoch"], ck["step_in_epoch"], ck["done"]) == (0, 2, False)
    assert not (b / "baseline.pt").exists()
    assert main(["--stage", "baseline", "--out", str(b), "--resume", *common]) == 0
    wa, wb = _params(a / "baseline" / "last.pt"), _params(b / "baseline" / "last.pt")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    # A finished stage is skipped on --resume.
    assert main(["--stage", "baseline", "--out", str(b), "--resume", *common]) == 0


@pytest.mark.parametrize("recipe_json", ["kept", "removed"])
def test_resume_under_another_recipe_is_one_line(tmp_path, capsys, recipe_json):
    """A cut run resumed with another recipe: one line, exit 2, the checkpoint and the
    run's recipe.json left as they were. With the run's recipe.json the recipes are
    compared first (the first differing key named); without it (a copied checkpoint) the
    checkpoint's fit is the check (the network is wider)."""
    out = tmp_path / "run"
    common = [*TINY, "schedule.student_epochs=2", "data.train_scans=6"]
    code = main(["--stage", "baseline", "--out", str(out), *common], hooks=[SignalAtStep(2)])
    assert code == 130
    last, written = out / "baseline" / "last.pt", out / "recipe.json"
    before = last.read_bytes()
    if recipe_json == "removed":
        written.unlink()
    else:
        recipe_before = written.read_text()
    capsys.readouterr()
    wider = [*common, "model.preset=base"]
    assert main(["--stage", "baseline", "--out", str(out), "--resume", *wider]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    if recipe_json == "removed":
        assert f"cannot resume from {last}" in err
    else:
        assert f"cannot resume {out}" in err and "model.preset: 'small' -> 'base'" in err
        assert written.read_text() == recipe_before
    assert last.read_bytes() == before


def test_resume_with_a_changed_value_that_keeps_every_shape_stops(tmp_path, capsys):
    """A new learning rate fits every checkpoint tensor, so only the recipe comparison can
    see it; where the run writes and how many threads it uses may change."""
    out = tmp_path / "run"
    common = [*TINY, "schedule.student_epochs=2", "data.train_scans=6"]
    code = main(["--stage", "baseline", "--out", str(out), *common], hooks=[SignalAtStep(2)])
    assert code == 130
    capsys.readouterr()
    lr = [*common, "optim.lr=0.0123"]
    assert main(["--stage", "baseline", "--out", str(out), "--resume", *lr]) == 2
    err = capsys.readouterr().err
    assert "optim.lr:" in err and "-> 0.0123" in err and "--resume to start over" in err
    assert main(["--stage", "baseline", "--out", str(out), "--resume", "--threads", "1",
                 *common, "log.tensorboard=false"]) == 0  # fmt: skip
    assert (out / "baseline.pt").is_file()


def test_nan_loss_stops_before_touching_weights(tmp_path, capsys):
    out = tmp_path / "nan"
    code = main(["--stage", "baseline", "--out", str(out), *TINY], hooks=[NanAtStep(1)])
    assert code == 3
    err = capsys.readouterr().err
    assert "non-finite" in err and "not applied" in err
    ck = torch.load(out / "baseline" / "last.pt", map_location="cpu", weights_only=True)
    assert ck["global_step"] == 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    # nan_policy=skip carries on.
    out2 = tmp_path / "skip"
    args = ["--stage", "baseline", "--out", str(out2), *TINY, "optim.nan_policy=skip"]
    args += ["data.intensity_range=[0,255]", "log.tensorboard=true"]
    args += ["schedule.control_epochs=student"]  # one epoch: the logged steps below
    assert main(args, hooks=[NanAtStep(0)]) == 0
    assert load_student(out2 / "baseline.pt").provenance["intensity_range"] == [0.0, 255.0]
    # The TensorBoard hook logged the applied steps (the skipped step 0 is not one).
    acc = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = acc.EventAccumulator(str(out2 / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("baseline/total")] == [2]


def test_clear_errors_without_traceback(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--set", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe key 'optim.lrr'" in err and "Traceback" not in err
    code = main(
        [
            "--recipe",
            "semantickitti",
            "--out",
            str(tmp_path),
            "--set",
            f"data.root={tmp_path / 'missing'}",
        ]
    )
    assert code == 2
    assert "no 'sequences' folder" in capsys.readouterr().err
    assert main(["--recipe", "nope"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--set", "data.intensity_range=[1,0]"]) == 2
    assert "data.intensity_range needs lo < hi" in capsys.readouterr().err
    assert main(["--stage", "distill", "--out", str(tmp_path / "x"), *TINY]) == 2
    assert "run --stage teacher first" in capsys.readouterr().err


def test_image_weights_that_do_not_fit_are_an_error(tmp_path, capsys):
    weights = tmp_path / "resnet.pth"
    torch.save({"conv9.weight": torch.zeros(1)}, weights)
    args = ["--stage", "teacher", "--out", str(tmp_path / "t"), *TINY]
    assert main([*args, f"model.image_weights={weights}"]) == 2
    err = capsys.readouterr().err
    assert "1 unexpected keys: conv9.weight" in err and "72 missing keys: bn1.bias" in err
    assert "Traceback" not in err


def test_help_documents_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in (
        "--recipe",
        "--stage",
        "--set",
        "--out",
        "--seed",
        "--device",
        "--resume",
        "--no-progress",
        "--threads",
        "--show-recipe",
    ):
        assert opt in text


def test_show_recipe_applies_overrides(capsys):
    assert main(["--show-recipe", "--set", "optim.lr=0.5", "data.train_scans=7"]) == 0
    text = capsys.readouterr().out
    assert "lr: 0.5" in text and "train_scans: 7" in text


def test_parallel_baseline_trains_the_same_weights(tmp_path, capsys):
    """--parallel-baseline: the baseline in a second process, bit for bit the sequential one
    (every stage seeds itself), and the report still holds all three models."""
    seq, par = tmp_path / "seq", tmp_path / "par"
    assert main(["--out", str(seq), *TINY]) == 0
    assert main(["--out", str(par), "--parallel-baseline", *TINY]) == 0
    for name in ("baseline.pt", "student.pt"):
        a, b = (torch.load(d / name, weights_only=True)["state_dict"] for d in (seq, par))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{name} {k}")
    report = json.loads((par / "report.json").read_text())
    expected = json.loads((seq / "report.json").read_text())
    for name in ("teacher", "distilled", "baseline"):
        assert report["models"][name]["miou"] == pytest.approx(expected["models"][name]["miou"])
    assert "baseline: already finished" in (par / "train.log").read_text()
    capsys.readouterr()
    assert main(["--out", str(par), "--stage", "baseline", "--parallel-baseline", *TINY]) == 2
    assert "--parallel-baseline needs --stage all" in capsys.readouterr().err


def test_parallel_baseline_failure_is_one_line(tmp_path, capsys):
    """A second process that fails ends the pipeline with its exit code, not a traceback."""
    out = tmp_path / "run"
    # a checkpoint only the baseline reads is corrupt: teacher and distill run, the
    # baseline's process refuses to resume from it (every recipe value is checked at load)
    (out / "baseline").mkdir(parents=True)
    (out / "baseline" / "last.pt").write_bytes(b"not a checkpoint")
    code = main(["--out", str(out), "--parallel-baseline", "--resume", *TINY])
    assert code == 2
    err = capsys.readouterr().err
    assert "baseline (second process) exited with code 2" in err
    assert "Traceback" not in err


class _SignalAfterDistill(HookBase):
    """A real SIGTERM to this process when the distill stage has trained, once the
    baseline's process has logged an epoch (so it is surely training, not importing)."""

    def after_train(self, trainer) -> None:
        if trainer.kind.final != "student.pt":
            return
        log = trainer.ctx.out / "train.log"
        deadline = time.monotonic() + 120
        while "baseline epoch 1/" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)


def test_parallel_baseline_stops_with_the_pipeline(tmp_path, capsys):
    """Signalled while the baseline still trains in its second process: the pipeline
    exits 130 at once and the child checkpoints instead of being lost."""
    out = tmp_path / "run"
    slow = [*TINY, "schedule.control_epochs=80"]  # far longer than teacher + distill
    code = main(["--out", str(out), "--parallel-baseline", *slow], hooks=[_SignalAfterDistill()])
    assert code == 130
    assert "interrupted while baseline trained in its second process" in capsys.readouterr().err
    ck = torch.load(out / "baseline" / "last.pt", map_location="cpu", weights_only=True)
    assert not ck["done"] and ck["epoch"] < 80
    assert not (out / "baseline.pt").exists()


class _ValueErrorAtStep(HookBase):
    """A bug inside the training loop (not a recipe value): must keep its traceback."""

    def before_step(self, trainer):
        raise ValueError("unknown config in a hook: a bug, not the recipe")


def test_recipe_value_errors_are_one_line_and_bugs_are_not(tmp_path, capsys):
    # Values only the network builder rejects (no override check can see them) fail at
    # the stage's start as one line naming the stage.
    args = ["--stage", "teacher", "--out", str(tmp_path / "t"), *TINY]
    assert main([*args, "model.image.arch=resnet7"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(lines) == 1
    assert "bad recipe value (teacher stage)" in lines[0] and "resnet7" in lines[0]
    # A value of the wrong type fails earlier, when the recipe loads, naming the key.
    assert main([*args, "optim.lr=fast"]) == 2
    assert "error: --set optim.lr: Value 'fast'" in capsys.readouterr().err
    # The same exception type raised while training is a bug: it propagates, whatever
    # its text says (the former filter let any "unknown"/"config" ValueError pass as a
    # recipe error).
    with pytest.raises(ValueError, match="a bug, not the recipe"):
        main(["--stage", "baseline", "--out", str(tmp_path / "b"), *TINY],
             hooks=[_ValueErrorAtStep()])  # fmt: skip
