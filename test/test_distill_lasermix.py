"""The distilled student that also trains the LaserMix way (``loss.distill_lasermix``):
with the LaserMix terms weighted 0 it is the distilled student weight for weight (same
loss, initialisation and data order), with them on it distils and mixes in one step."""

from __future__ import annotations

import shutil

import pytest
import torch
from training_hooks import TINY

from xmodelkd_ros.nets.checkpoint import load_student
from xmodelkd_ros.training.train import main

#: half the scans unlabeled, so the mean teacher has points to label and the pairs mix
ARGS = [*TINY, "data.label_fraction=0.5", "loss.lasermix.confidence=0.0"]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("dlm") / "teacher"
    assert main(["--stage", "teacher", "--out", str(out), *ARGS]) == 0
    return out


def _distill(teacher_run, dest, *sets: str) -> torch.nn.Module:
    shutil.copytree(teacher_run, dest)
    assert main(["--stage", "distill", "--out", str(dest), *ARGS, *sets]) == 0
    return load_student(dest / "student.pt")


def test_with_the_mixing_terms_off_it_is_the_distilled_student(teacher_run, tmp_path):
    plain = _distill(teacher_run, tmp_path / "plain")
    off = _distill(teacher_run, tmp_path / "off", "loss.distill_lasermix=true",
                   "loss.lasermix.mix=0", "loss.lasermix.consistency=0")  # fmt: skip
    assert plain.state_dict.keys() == off.state_dict.keys()
    for k, v in plain.state_dict.items():
        assert torch.equal(v, off.state_dict[k]), k
    assert "pseudo_share" in (tmp_path / "off" / "train.log").read_text()


def test_with_them_on_it_distils_and_mixes_in_one_step(teacher_run, tmp_path):
    plain = _distill(teacher_run, tmp_path / "plain")
    mixed = _distill(teacher_run, tmp_path / "mixed", "loss.distill_lasermix=true")
    log = (tmp_path / "mixed" / "train.log").read_text()
    for term in ("kd ", "feat ", "kd_all ", "mix ", "consistency ", "pseudo_share "):
        assert term in log, term
    assert mixed.provenance["recipe"]["loss"]["distill_lasermix"] is True
    assert any(not torch.equal(v, plain.state_dict[k]) for k, v in mixed.state_dict.items())
    state = torch.load(tmp_path / "mixed" / "distill" / "last.pt", weights_only=True)["model"]
    ema = {k[4:] for k in state if k.startswith("ema.")}
    assert ema == set(mixed.state_dict)  # the mean teacher resumes with the run
    assert not any(k.startswith("_teacher") for k in state)  # the teacher is not saved
