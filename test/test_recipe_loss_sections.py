"""The recipe's ``loss.*`` sections against the loss settings they become.

Why: each section repeats the fields of a loss's frozen settings class (the recipe's
defaults are the shipped recipe's, the class's the library's, and they differ on
purpose: e.g. ``kd_all`` 0.5 in a recipe, 0 for a bare ``DistillLoss``). A field added to
one side only would be a recipe key that trains nothing, or a loss setting no recipe can
reach; this keeps the two sides' names and values in step."""

from __future__ import annotations

import dataclasses

import pytest

from xmodelkd_ros.training.lasermix import LaserMixWeights
from xmodelkd_ros.training.method_steps import JointWeights
from xmodelkd_ros.training.objectives import DistillWeights, TeacherWeights
from xmodelkd_ros.training.recipe import known_recipes, load_recipe

#: recipe section (under ``loss``) -> the settings class it is turned into
PAIRS = {"teacher": TeacherWeights, "distill": DistillWeights,
         "lasermix": LaserMixWeights, "joint": JointWeights}  # fmt: skip
#: set by the pipeline, never by a recipe
NOT_RECIPE_KEYS = {"ignore_index"}


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("section", sorted(PAIRS))
def test_a_section_has_exactly_its_loss_settings(section: str) -> None:
    recipe_cls = type(getattr(load_recipe("synthetic").loss, section))
    assert _names(recipe_cls) == _names(PAIRS[section]) - NOT_RECIPE_KEYS


def test_pretrain_settings_are_teacher_settings() -> None:
    pretrain = type(load_recipe("synthetic").loss.pretrain)
    assert _names(pretrain) <= _names(TeacherWeights) - NOT_RECIPE_KEYS


@pytest.mark.parametrize("name", known_recipes())
def test_every_shipped_recipe_becomes_its_loss_settings_value_for_value(name: str) -> None:
    """Through the settings classes' own strict constructors: an unknown key would raise,
    a value must come through unchanged."""
    loss = load_recipe(name).loss
    for section, cls in PAIRS.items():
        values = dataclasses.asdict(getattr(loss, section))
        if cls is LaserMixWeights:
            values["areas"] = tuple(values["areas"])
        built = cls(**values)
        assert {k: getattr(built, k) for k in values} == values, (name, section)
