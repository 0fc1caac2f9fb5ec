"""Training recipes: YAML files under the top-level ``training/`` folder, every key
overridable from the command line (``--set optim.lr=0.002 data.train_scans=40``).

A recipe is a nested dict; overrides may only replace keys the recipe already has, so
a typo fails loudly instead of training with a silently ignored setting.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

#: The top-level ``training/`` folder of the source tree (recipes are data, not code).
RECIPE_DIR = Path(__file__).resolve().parents[2] / "training"


class RecipeError(ValueError):
    """A recipe cannot be found or an override names an unknown key / bad value."""


def recipe_path(name_or_path: str) -> Path:
    """``synthetic`` -> ``training/synthetic.yaml``; an existing path is used as is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    candidates = [RECIPE_DIR / f"{name_or_path}.yaml"]
    try:  # installed with colcon: share/xmodelkd_ros/training
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("xmodelkd_ros"))
        candidates.append(share / "training" / f"{name_or_path}.yaml")
    except Exception:  # no ament index: source tree only
        pass
    for c in candidates:
        if c.is_file():
            return c
    known = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")) if RECIPE_DIR.is_dir() else []
    raise RecipeError(f"recipe {name_or_path!r} not found (known: {', '.join(known) or 'none'})")


def load_recipe(name_or_path: str, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Load a recipe and apply ``key.path=value`` overrides (values parsed as YAML)."""
    path = recipe_path(name_or_path)
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping")
    recipe = apply_overrides(recipe, overrides)
    recipe["_source"] = str(path)
    return recipe


def apply_overrides(recipe: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``recipe`` with each ``a.b.c=value`` applied."""
    out = copy.deepcopy(recipe)
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = out
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[:depth]) or "<top level>"
                options = sorted(node) if isinstance(node, dict) else []
                raise RecipeError(
                    f"unknown recipe key {key!r}: {where} has no {part!r} "
                    f"(keys there: {', '.join(map(str, options))})"
                )
            if depth == len(parts) - 1:
                try:
                    value = yaml.safe_load(raw) if raw != "" else None
                except yaml.YAMLError as exc:
                    raise RecipeError(f"--set {key}: cannot parse value {raw!r}: {exc}") from None
                if isinstance(node[part], dict) and not isinstance(value, dict):
                    raise RecipeError(f"--set {key}: is a section, set its keys instead")
                node[part] = value
            else:
                node = node[part]
    return out


def get(recipe: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """``get(r, "optim.lr")``; missing keys give ``default``."""
    node: Any = recipe
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node
