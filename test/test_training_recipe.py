"""Recipes: _base_ inheritance, overrides, intensity range; the registries behind them."""

from __future__ import annotations

import pytest
import yaml

from xmodelkd_ros.registry import Registry
from xmodelkd_ros.training.data.semantickitti import DatasetError
from xmodelkd_ros.training.datasets import DATASETS, build_source
from xmodelkd_ros.training.recipe import (
    RECIPE_DIR,
    RecipeError,
    deep_merge,
    intensity_range_of,
    known_recipes,
    load_recipe,
)
from xmodelkd_ros.training.stages import STAGE_KINDS
from xmodelkd_ros.training.train import STAGE_CHOICES


def _write(path, doc):
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_base_is_merged_under_the_recipe_then_overrides(tmp_path):
    _write(tmp_path / "_a.yaml", {"optim": {"lr": 1.0, "wd": 2.0}, "log": {"x": 1}, "l": [1, 2]})
    _write(tmp_path / "_b.yaml", {"_base_": "_a.yaml", "optim": {"wd": 3.0}, "l": [9]})
    r = _write(tmp_path / "r.yaml", {"_base_": ["_b.yaml"], "optim": {"lr": 4.0}, "data": {}})
    got = load_recipe(str(r), ["log.x=5"])
    assert got["optim"] == {"lr": 4.0, "wd": 3.0}  # recipe over base over base's base
    assert got["l"] == [9] and got["log"] == {"x": 5} and "_base_" not in got
    with pytest.raises(RecipeError, match=r"unknown recipe key 'optim\.lrr'"):
        load_recipe(str(r), ["optim.lrr=1"])  # merged keys only, typos still fail
    _write(tmp_path / "_a.yaml", {"_base_": "r.yaml"})
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(str(r))
    _write(tmp_path / "_b.yaml", {"_base_": "missing.yaml"})
    with pytest.raises(RecipeError, match=r"missing\.yaml not found"):
        load_recipe(str(r))


def test_deep_merge_does_not_alias_its_inputs():
    base = {"a": {"b": [1]}, "c": 1}
    out = deep_merge(base, {"a": {"d": 2}})
    out["a"]["b"].append(2)
    assert base == {"a": {"b": [1]}, "c": 1} and out["a"] == {"b": [1, 2], "d": 2}


def test_shipped_recipes_share_a_base_and_carry_no_test_knobs():
    assert known_recipes() == ["nuscenes", "semantickitti", "synthetic", "synthetic_scarce"]
    kitti, nus = load_recipe("semantickitti"), load_recipe("nuscenes")
    for key in ("optim", "loss", "log", "schedule"):
        assert {k: v for k, v in kitti[key].items() if not k.endswith("_epochs")} == {
            k: v for k, v in nus[key].items() if not k.endswith("_epochs")
        }
    for name in known_recipes():
        r = load_recipe(name)
        assert "debug" not in r, name
        assert intensity_range_of(r) == [0.0, 1.0], name
        assert "_base_" in (RECIPE_DIR / f"{name}.yaml").read_text() or name == "synthetic"


def test_intensity_range_is_checked():
    r = load_recipe("synthetic")
    for bad in ("[1, 0]", "[0]", "fast", "[0, x]"):
        with pytest.raises(RecipeError, match="intensity_range"):
            intensity_range_of(load_recipe("synthetic", [f"data.intensity_range={bad}"]))
    del r["data"]["intensity_range"]
    assert intensity_range_of(r) == [0.0, 1.0]  # the readers' scale when unset


def test_registry_rejects_duplicates_and_names_the_known_entries():
    reg: Registry[type] = Registry("widget", LookupError)

    @reg.register("a")
    class A:
        pass

    assert reg.get("a") is A and "a" in reg and list(reg) == ["a"]
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(A)
    with pytest.raises(LookupError, match=r"unknown widget 'b' \(a\)"):
        reg.get("b")
    assert (*STAGE_KINDS.names(), "all", "evaluate") == STAGE_CHOICES
    assert STAGE_KINDS.names() == (
        "pretrain", "teacher", "distill", "baseline", "selftrain", "joint"
    )


def test_a_new_dataset_is_one_decorated_class():
    recipe = load_recipe("synthetic", ["data.dataset=in_memory_test"])
    with pytest.raises(DatasetError, match=r"unknown data\.dataset 'in_memory_test'"):
        build_source(recipe, "train")

    @DATASETS.register("in_memory_test")
    class InMemory:
        @staticmethod
        def build(recipe, part):
            return [part] * 3

    try:
        assert build_source(recipe, "val") == ["val"] * 3
        assert build_source(recipe, "pretrain") == ["train"] * 3  # pretrain reads train
    finally:
        DATASETS._entries.pop("in_memory_test")


def test_recipe_values_converts_plain_value_errors_only():
    from xmodelkd_ros.nets.image_encoder import WeightLoadError
    from xmodelkd_ros.training.recipe import recipe_values

    for exc in (ValueError("x must be > 0"), TypeError("got an unexpected keyword 'y'")):
        match = r"^bad recipe value \(the net\): "
        with pytest.raises(RecipeError, match=match) as info, recipe_values("the net"):
            raise exc
        assert info.value.__cause__ is exc
    typed = (RecipeError("typo"), WeightLoadError("bad weights"), KeyError("k"))
    for exc in typed:  # typed errors keep their own type (and handler)
        with pytest.raises(type(exc)) as info, recipe_values("the net"):
            raise exc
        assert info.value is exc
