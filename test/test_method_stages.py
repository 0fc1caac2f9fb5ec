"""The method's alternative stage kinds end to end on a tiny synthetic world: ``selftrain`` (the
LiDAR-only self-training control) and ``joint`` (2DPASS-style, exported as a student),
with temporal views and confidence-masked KD switched on."""

from __future__ import annotations

import torch
from training_hooks import TINY

from xmodelkd_ros.nets.checkpoint import load_student
from xmodelkd_ros.training.stages import STAGE_KINDS
from xmodelkd_ros.training.train import main


def test_stage_kinds_are_registered():
    assert {"selftrain", "joint"} <= set(STAGE_KINDS.names())


def test_selftrain_needs_its_labeller_then_trains(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--stage", "selftrain", "--out", str(out), *TINY]) == 2
    assert "run --stage baseline first" in capsys.readouterr().err
    assert main(["--stage", "baseline", "--out", str(out), *TINY, "data.label_fraction=0.5"]) == 0
    args = [*TINY, "data.label_fraction=0.5", "loss.selftrain.confidence=0.0"]
    assert main(["--stage", "selftrain", "--out", str(out), *args]) == 0
    ck = load_student(out / "selftrain.pt")
    assert ck.provenance["stage"] == "selftrain"
    log = (out / "train.log").read_text()
    # half the scans are unlabeled and confidence 0 labels them all
    share = float(log.split("pseudo_share ")[1].split(",")[0])
    assert 0.2 < share < 0.8
    # paired with the baseline like distill: same initialisation/augmentation stream
    assert STAGE_KINDS.get("selftrain").stream == STAGE_KINDS.get("baseline").stream
    assert STAGE_KINDS.get("joint").stream == STAGE_KINDS.get("baseline").stream


def test_joint_exports_its_3d_branch_as_a_student(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "data.temporal_views=1", "loss.joint.contrastive=0.1",
            "loss.joint.kd_mask=fov_correct", "loss.joint.kd_min_confidence=0.1"]  # fmt: skip
    assert main(["--stage", "joint", "--out", str(out), *args]) == 0
    ck = load_student(out / "joint.pt")
    assert ck.provenance["stage"] == "joint" and "miou" in ck.provenance["metrics"]
    state = torch.load(out / "joint" / "last.pt", weights_only=True)["model"]
    branch = {k[len("fusion.branch_3d."):]: v for k, v in state.items()
              if k.startswith("fusion.branch_3d.")}  # fmt: skip
    assert branch.keys() == ck.state_dict.keys()
    for k, v in branch.items():
        assert torch.equal(v, ck.state_dict[k]), k
    ck.build()  # loads strictly into a plain StudentNet
    log = (out / "train.log").read_text()
    assert "multiview_share" in log and "kd_share" in log


def test_teacher_with_temporal_views_and_confident_distillation(tmp_path):
    out = tmp_path / "run"
    assert main(["--stage", "teacher", "--out", str(out), *TINY, "data.temporal_views=1"]) == 0
    share = float((out / "train.log").read_text().split("multiview_share ")[1].split(",")[0])
    assert share > 0.1  # one frame either side: many points have >= 2 views
    args = [*TINY, "data.temporal_views=1", "loss.kd_min_confidence=0.2",
            "loss.distill.kd_all=0.5"]  # fmt: skip
    assert main(["--stage", "distill", "--out", str(out), *args]) == 0
    assert load_student(out / "student.pt").provenance["stage"] == "distill"


def test_joint_3d_branch_starts_where_the_baseline_starts():
    """Same seed and stream: the joint stage's 3D branch is initialised exactly like the
    baseline's student, so joint vs baseline is a paired comparison."""
    from xmodelkd_ros.nets.student import StudentConfig, StudentNet
    from xmodelkd_ros.nets.teacher import FusionTeacher, TeacherConfig

    cfg = StudentConfig(enc_widths=(8, 16), dec_widths=(8,))
    torch.manual_seed(7003)
    student = StudentNet(cfg)
    torch.manual_seed(7003)
    fusion = FusionTeacher(TeacherConfig(student=cfg))
    for k, v in student.state_dict().items():
        assert torch.equal(v, fusion.branch_3d.state_dict()[k]), k


def test_unknown_student_init_is_a_one_line_recipe_error(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["--stage", "teacher", "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    assert main(["--stage", "distill", "--out", str(out), *TINY,
                 "model.student_init=teacher3D"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "model.student_init must be scratch or teacher3d, got 'teacher3D'" in err
    assert "Traceback" not in err
