"""``evaluation.candidates``: candidates of the student stages over one shared teacher, with
the LiDAR-only controls of ``--controls`` trained from each candidate's recipe."""

from __future__ import annotations

import argparse
import hashlib

import pytest

from xmodelkd_ros.evaluation.candidates import main, parse_controls
from xmodelkd_ros.nets.checkpoint import load_student

SETS = ["data.train_scans=4", "data.val_scans=1", "data.max_points=2000",
        "data.eval_max_points=2000", "data.render_size=[60,100]", "data.image_size=[32,48]",
        "schedule.teacher_epochs=1", "schedule.student_epochs=1", "log.tensorboard=false",
        "data.label_fraction=0.5"]  # fmt: skip


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_control_trains_from_the_candidates_recipe_beside_a_shared_teacher(
    tmp_path, capfd
):
    out = tmp_path / "cands"
    argv = ["--recipe", "synthetic", "--seeds", "1", "--jobs", "2", "--no-progress",
            "--controls", "lasermix,selftrain,baseline", "--out", str(out),
            "--candidate", "c3=schedule.control_epochs=3", "--set", *SETS]  # fmt: skip
    assert main(argv) == 0
    run = out / "c3" / "seed0"
    assert _digest(run / "teacher.pt") == _digest(out / "teachers" / "seed0" / "teacher.pt")
    for name in ("baseline", "lasermix", "selftrain"):
        ck = load_student(run / f"{name}.pt")
        assert ck.provenance["stage"] == name
        assert ck.provenance["epochs"] == 3, name  # the candidate's length (lineage: 2)
    assert load_student(run / "student.pt").provenance["stage"] == "distill"
    # the children's lines go to their own files, not interleaved on the console
    console = capfd.readouterr()
    assert "epoch 1/" not in console.out + console.err
    assert "lasermix epoch 1/3" in (run / "lasermix.console.log").read_text()
    assert "teacher epoch 1/" in (out / "teachers" / "seed0" / "teacher.console.log").read_text()
    stamps = {p.name: p.stat().st_mtime_ns for p in run.glob("*.pt")}
    assert main(argv) == 0  # a second run finds every job done and retrains nothing
    assert {p.name: p.stat().st_mtime_ns for p in run.glob("*.pt")} == stamps


def test_controls_parse_in_training_order_and_selftrain_needs_its_labeller():
    assert parse_controls("selftrain, baseline") == ["baseline", "selftrain"]
    assert parse_controls("lasermix") == ["lasermix"]
    for bad in ("", "teacher", "selftrain", "baseline,mixup"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_controls(bad)


def test_a_bad_controls_list_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--candidate", "a=", "--controls", "selftrain", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "selftrain needs baseline" in capsys.readouterr().err
