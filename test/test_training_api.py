"""The training API: ``train(recipe, stage)`` in-process, the CLI over it and the same call
in a child process give the very same weights; bad calls are typed errors."""

from __future__ import annotations

import copy

import pytest
import torch
from training_hooks import TINY

from xmodelkd_ros.nets.checkpoint import load_student
from xmodelkd_ros.training.api import train, train_in_child
from xmodelkd_ros.training.recipe import RecipeError, load_recipe
from xmodelkd_ros.training.recipe_types import Recipe
from xmodelkd_ros.training.train import main

#: TINY's recipe overrides (after its ``--no-progress --set``).
TINY_SETS = TINY[TINY.index("--set") + 1 :]


def _tiny(out) -> Recipe:
    return load_recipe("synthetic", [*TINY_SETS, f"out={out}"])


def _weights(path) -> dict[str, torch.Tensor]:
    return load_student(path).state_dict


def test_api_cli_and_child_process_train_the_same_weights(tmp_path):
    recipe = _tiny(tmp_path / "api")
    metrics = train(recipe, "baseline", progress=False)
    assert 0.0 <= metrics["miou"] <= 1.0
    assert main(["--stage", "baseline", "--out", str(tmp_path / "cli"), *TINY]) == 0
    child = copy.deepcopy(recipe)
    child.out = str(tmp_path / "child")
    assert train_in_child(child, "baseline", threads=1) == 0
    ref = _weights(tmp_path / "api" / "baseline.pt")
    for other in ("cli", "child"):
        got = _weights(tmp_path / other / "baseline.pt")
        assert got.keys() == ref.keys()
        assert all(torch.equal(got[k], ref[k]) for k in ref), other
    # the child loaded the run's recipe.json, which keeps the recipe file it came from
    again = load_recipe(str(tmp_path / "child" / "recipe.json"))
    assert again.source == recipe.source and again.out == child.out


def test_bad_calls_are_recipe_errors(tmp_path):
    recipe = _tiny(tmp_path)
    with pytest.raises(RecipeError, match="unknown stage 'teach'"):
        train(recipe, "teach")
    with pytest.raises(RecipeError, match="parallel_baseline needs stage all"):
        train(recipe, "baseline", parallel_baseline=True)
    recipe.optim.sparse_impl = "dense"
    with pytest.raises(RecipeError, match=r"unknown optim\.sparse_impl 'dense'"):
        train(recipe, "baseline")
