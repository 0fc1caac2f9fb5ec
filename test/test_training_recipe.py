"""Recipes: _base_ inheritance, typed overrides, value checks, the resolved recipe a run
writes; the registries behind them."""

from __future__ import annotations

import pytest
import yaml

from xmodelkd_ros.registry import Registry
from xmodelkd_ros.training.data.semantickitti import DatasetError
from xmodelkd_ros.training.datasets import DATASETS, build_source
from xmodelkd_ros.training.recipe import (
    RECIPE_DIR,
    RecipeError,
    check_resume_recipe,
    deep_merge,
    known_recipes,
    load_recipe,
    recipe_from_dict,
    resume_mismatches,
    show_recipe,
    with_overrides,
    write_recipe,
)
from xmodelkd_ros.training.recipe_types import DataSection, Recipe
from xmodelkd_ros.training.stages import STAGE_KINDS
from xmodelkd_ros.training.train import STAGE_CHOICES


def _write(path, doc):
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_base_is_merged_under_the_recipe_then_overrides(tmp_path):
    _write(tmp_path / "_a.yaml", {"optim": {"lr": 1.0, "weight_decay": 2.0},
                                  "log": {"progress": False}, "data": {"train_seeds": [1, 2]}})
    _write(tmp_path / "_b.yaml", {"_base_": "_a.yaml", "optim": {"weight_decay": 3.0},
                                  "data": {"train_seeds": [9]}})  # fmt: skip
    r = _write(tmp_path / "r.yaml", {"_base_": ["_b.yaml"], "optim": {"lr": 4.0}, "data": {}})
    got = load_recipe(str(r), ["log.tensorboard=false"])
    # recipe over base over base's base; lists are replaced, not merged
    assert (got.optim.lr, got.optim.weight_decay) == (4.0, 3.0)
    assert got.data.train_seeds == [9] and not got.log.progress and not got.log.tensorboard
    assert got.source == str(r) and got.optim.warmup_steps == Recipe().optim.warmup_steps
    with pytest.raises(RecipeError, match=r"optim\.lrr"):
        load_recipe(str(r), ["optim.lrr=1"])  # typos fail, naming the key
    _write(tmp_path / "_a.yaml", {"_base_": "r.yaml"})
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(str(r))
    _write(tmp_path / "_b.yaml", {"_base_": "missing.yaml"})
    with pytest.raises(RecipeError, match=r"missing\.yaml not found"):
        load_recipe(str(r))


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ("optim.lr=fast", r"^--set optim\.lr: .*fast"),
        ("data.batch_size=2.5", r"^--set data\.batch_size: "),
        ("data.render_size=x", r"^--set data\.render_size: "),
        ("model.student_init=teacher", r"model\.student_init must be scratch or teacher3d"),
        ("optim.nan_policy=ignore", r"unknown optim\.nan_policy 'ignore' \(stop \| skip\)"),
        ("loss.kd_mask=all", r"unknown loss\.kd_mask 'all' \(fov \| fov_correct\)"),
        ("data.pretrain=folder", r"unknown data\.pretrain 'folder' \(train \| bag\)"),
        ("data.image_size=[128]", r"data\.image_size must be \[H, W\]"),
        ("loss.teacher.fusd=1", r"^unknown recipe key 'loss\.teacher\.fusd': "),
        ("optim.lr", r"--set expects key=value"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(override, problem):
    with pytest.raises(RecipeError, match=problem) as info:
        load_recipe("synthetic", [override])
    assert "\n" not in str(info.value)


def test_a_bad_key_in_a_file_names_the_file(tmp_path):
    r = _write(tmp_path / "r.yaml", {"_base_": str(RECIPE_DIR / "synthetic.yaml"),
                                     "model": {"voxle_size": 0.2}})  # fmt: skip
    with pytest.raises(RecipeError, match=r"r\.yaml: unknown recipe key 'model\.voxle_size'"):
        load_recipe(str(r))


def test_overrides_are_typed_and_the_resolved_recipe_round_trips(tmp_path):
    sets = ["optim.lr=2e-3", "data.train_scans=4", "schedule.control_epochs=7"]
    r = load_recipe("synthetic", sets)
    assert r.optim.lr == 0.002 and isinstance(r.optim.lr, float)
    assert r.data.train_scans == 4 and r.schedule.control_epochs == 7
    write_recipe(r, tmp_path / "recipe.json")
    again = load_recipe(str(tmp_path / "recipe.json"))  # a run's recipe reproduces it
    assert again == r and again.source == r.source
    assert recipe_from_dict(r.to_dict()).to_dict() == r.to_dict()
    changed = with_overrides(r, ["seed=3"])
    assert changed.seed == 3 and r.seed == 0 and changed.source == r.source
    shown = yaml.safe_load(show_recipe(r))
    assert shown == r.to_dict() and "source" not in shown


def test_deep_merge_does_not_alias_its_inputs():
    base = {"a": {"b": [1]}, "c": 1}
    out = deep_merge(base, {"a": {"d": 2}})
    out["a"]["b"].append(2)
    assert base == {"a": {"b": [1]}, "c": 1} and out["a"] == {"b": [1, 2], "d": 2}


def test_shipped_recipes_share_a_base_and_carry_no_test_knobs():
    assert known_recipes() == ["nuscenes", "semantickitti", "synthetic", "synthetic_pool",
                             "synthetic_scarce"]
    kitti, nus = load_recipe("semantickitti").to_dict(), load_recipe("nuscenes").to_dict()
    for key in ("optim", "loss", "log", "schedule"):
        assert {k: v for k, v in kitti[key].items() if not k.endswith("_epochs")} == {
            k: v for k, v in nus[key].items() if not k.endswith("_epochs")
        }
    for name in known_recipes():
        r = load_recipe(name)
        assert "debug" not in r.to_dict(), name
        assert r.data.intensity_range == [0.0, 1.0], name
        assert "_base_" in (RECIPE_DIR / f"{name}.yaml").read_text() or name == "synthetic"


def test_intensity_range_is_checked():
    for bad in ("[1, 0]", "[0]", "fast", "[0, x]"):
        with pytest.raises(RecipeError, match="intensity_range"):
            load_recipe("synthetic", [f"data.intensity_range={bad}"])
    assert DataSection().intensity_range == [0.0, 1.0]  # the readers' scale when unset


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
        "pretrain", "teacher", "distill", "baseline", "selftrain", "lasermix", "joint"
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


def test_resume_mismatches_compares_what_changes_learning(tmp_path):
    """Against a written recipe.json: the same recipe, or one that only moves, logs or
    runs on other hardware, resumes; any other changed value is named with both values;
    a key the written file lacks (a newer version's) is not a change."""
    import json

    base = load_recipe("synthetic_scarce", ["out=runs/a"])
    path = tmp_path / "recipe.json"
    assert resume_mismatches(base, path) == []  # no run yet
    write_recipe(base, path)
    assert resume_mismatches(base, path) == []
    free = with_overrides(base, ["out=elsewhere", "device=cpu", "threads=2",
                                 "data.cache_dir=/tmp/c", "log.progress=false"])  # fmt: skip
    assert resume_mismatches(free, path) == []
    changed = with_overrides(base, ["optim.lr=0.5", "data.train_scans=7"])
    diffs = resume_mismatches(changed, path)
    assert len(diffs) == 2
    assert diffs[0].startswith("data.train_scans: 40 -> 7") and diffs[1].startswith("optim.lr:")
    with pytest.raises(RecipeError, match=r"at data.train_scans: 40 -> 7 \(and 1 more\)"):
        check_resume_recipe(changed, path)
    doc = json.loads(path.read_text())
    del doc["optim"]["lr"]
    path.write_text(json.dumps(doc))
    assert resume_mismatches(changed, path) == ["data.train_scans: 40 -> 7"]
    path.write_text("{not json")
    with pytest.raises(RecipeError, match="cannot read"):
        resume_mismatches(base, path)
