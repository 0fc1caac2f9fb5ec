"""How long the LiDAR-only controls train: the distilled student's lineage, by default."""

from __future__ import annotations

import pytest

from xmodelkd_ros.training.recipe import RecipeError, load_recipe
from xmodelkd_ros.training.recipe_types import Recipe, ScheduleSection
from xmodelkd_ros.training.stages import (
    BaselineStage,
    DistillStage,
    SelfTrainStage,
    control_epochs,
    lineage_epochs,
)


def _recipe(*overrides: str) -> Recipe:
    return load_recipe("synthetic", overrides)


def test_default_recipe_gives_controls_the_students_lineage():
    r = _recipe()
    s = r.schedule
    assert r.model.student_init == "teacher3d" and s.control_epochs == "lineage"
    expected = s.pretrain_epochs + s.teacher_epochs + s.student_epochs
    assert lineage_epochs(r) == expected == 64
    assert BaselineStage().epochs(r) == SelfTrainStage().epochs(r) == expected
    assert DistillStage().epochs(r) == s.student_epochs


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["schedule.pretrain_epochs=8"], 8 + 40 + 24),  # the teacher starts from pretraining
        (["model.student_init=scratch"], 24),  # fresh weights: only the student's epochs
        (["schedule.control_epochs=student"], 24),  # the first protocol
        (["schedule.control_epochs=7"], 7),
    ],
)
def test_control_epochs_options(overrides, expected):
    assert control_epochs(_recipe(*overrides)) == expected


@pytest.mark.parametrize("value", ["longest", "0", "-3", "true", "2.5"])
def test_bad_control_epochs_is_a_recipe_error(value):
    with pytest.raises(RecipeError, match=r"schedule\.control_epochs"):
        control_epochs(_recipe(f"schedule.control_epochs={value}"))


def test_the_schedules_default_is_the_lineage():
    """A recipe that does not state it gets what every shipped recipe states."""
    assert ScheduleSection().control_epochs == "lineage"
    r = _recipe("schedule.control_epochs=student")
    assert control_epochs(r) == r.schedule.student_epochs
