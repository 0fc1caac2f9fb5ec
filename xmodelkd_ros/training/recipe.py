"""Training recipes: YAML files under the top-level ``training/`` folder, every key
overridable from the command line (``--set optim.lr=0.002 data.train_scans=40``).

A recipe is a nested dict; overrides may only replace keys the recipe already has, so
a typo fails loudly instead of training with a silently ignored setting. A recipe may
start from others (``_base_: _base_real.yaml``, a path relative to the recipe, or a
list of them): the bases are deep-merged first, the recipe's own keys on top, and
``--set`` last. Files whose name starts with ``_`` are bases, not recipes.

Recipes are found in the source tree, and in an installed tree (pip wheel, ``--prefix``
install, colcon) under ``<prefix>/share/xmodelkd_ros/training``, where setup.py puts them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

PACKAGE = "xmodelkd_ros"
#: The top-level ``training/`` folder of the source tree (recipes are data, not code).
RECIPE_DIR = Path(__file__).resolve().parents[2] / "training"
BASE_KEY = "_base_"


class RecipeError(ValueError):
    """A recipe cannot be found or an override names an unknown key / bad value."""


@contextmanager
def recipe_values(what: str) -> Iterator[None]:
    """Where recipe values become objects (datasets, networks, losses, optimizer), a
    ValueError or TypeError is the recipe's fault: re-raise it as a :class:`RecipeError`
    naming ``what`` was being built, so the CLI prints one line instead of a traceback.
    Errors raised later, while training, are bugs and keep their traceback; typed
    subclasses (a RecipeError itself, WeightLoadError, ...) pass through unchanged."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        if type(exc) not in (TypeError, ValueError):
            raise
        raise RecipeError(f"bad recipe value ({what}): {exc}") from exc


def recipe_dirs() -> list[Path]:
    """Where recipes are looked up, in order: the source tree, then the ``share`` folder
    of the prefix this package is installed in (found by walking up from the package, so
    a wheel in a venv, a ``--prefix`` / ``--user`` install and a colcon install all
    work without ROS), then the ament index."""
    dirs = [RECIPE_DIR]
    for parent in Path(__file__).resolve().parents[2:7]:
        dirs.append(parent / "share" / PACKAGE / "training")
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory(PACKAGE)) / "training")
    except Exception:  # no ament index (or the package is not in it)
        pass
    return list(dict.fromkeys(d for d in dirs if d.is_dir()))


def known_recipes() -> list[str]:
    return sorted(
        {p.stem for d in recipe_dirs() for p in d.glob("*.yaml") if not p.stem.startswith("_")}
    )


def recipe_path(name_or_path: str) -> Path:
    """``synthetic`` -> ``training/synthetic.yaml``; an existing path is used as is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    for d in recipe_dirs():
        if (d / f"{name_or_path}.yaml").is_file():
            return d / f"{name_or_path}.yaml"
    known = ", ".join(known_recipes()) or "none"
    raise RecipeError(f"recipe {name_or_path!r} not found (known: {known})")


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: mappings merge key by key, anything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One recipe file with its ``_base_`` files merged underneath."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise RecipeError(f"{path}: {BASE_KEY} cycle ({cycle})")
    if not path.is_file():
        raise RecipeError(f"{chain[-1] if chain else path}: base recipe {path} not found")
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping")
    bases = recipe.pop(BASE_KEY, None) or []
    if isinstance(bases, str):
        bases = [bases]
    merged: dict[str, Any] = {}
    for base in bases:
        merged = deep_merge(merged, _read(path.parent / str(base), (*chain, path)))
    return deep_merge(merged, recipe)


def load_recipe(name_or_path: str, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Load a recipe and apply ``key.path=value`` overrides (values parsed as YAML)."""
    path = recipe_path(name_or_path)
    recipe = apply_overrides(_read(path), overrides)
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


def intensity_range_of(recipe: dict[str, Any]) -> list[float]:
    """``data.intensity_range`` as ``[lo, hi]``: the scale of the intensity channel the
    readers deliver (and so the model learns); export writes it into ``model.json``."""
    value = get(recipe, "data.intensity_range", [0.0, 1.0])
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise RecipeError(f"data.intensity_range must be [lo, hi], got {value!r}") from None
    if not lo < hi:
        raise RecipeError(f"data.intensity_range needs lo < hi, got {value!r}")
    return [lo, hi]
