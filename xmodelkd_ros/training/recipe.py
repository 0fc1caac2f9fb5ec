"""Training recipes: YAML files under the top-level ``training/`` folder, every key
overridable from the command line (``--set optim.lr=0.002 data.train_scans=40``).

A recipe file is YAML; what it becomes is a typed :class:`~xmodelkd_ros.training.
recipe_types.Recipe` (one dataclass per section, defaults in one place). OmegaConf does the
merging and the type checks: a key the schema does not have, or a value of the wrong type,
fails loudly with the key's name instead of training with a silently ignored setting. A
recipe may start from others (``_base_: _base_real.yaml``, a path relative to the recipe, or
a list of them): the bases are deep-merged first, the recipe's own keys on top, and
``--set`` last. Files whose name starts with ``_`` are bases, not recipes. The base chain
is resolved here (relative paths, cycles, missing files named) before OmegaConf sees it.

Recipes are found in the source tree, and in an installed tree (pip wheel, ``--prefix``
install, colcon) under ``<prefix>/share/xmodelkd_ros/training``, where setup.py puts them.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from xmodelkd_ros.dotted import flatten_dotted
from xmodelkd_ros.training.recipe_types import Recipe, RecipeError

__all__ = [
    "Recipe",
    "RecipeError",
    "known_recipes",
    "load_recipe",
    "recipe_from_dict",
    "recipe_path",
    "recipe_values",
    "show_recipe",
    "with_overrides",
    "write_recipe",
]

PACKAGE = "xmodelkd_ros"
#: The top-level ``training/`` folder of the source tree (recipes are data, not code).
RECIPE_DIR = Path(__file__).resolve().parents[2] / "training"
BASE_KEY = "_base_"


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
    """``synthetic`` -> ``training/synthetic.yaml``; an existing path (a YAML recipe, or a
    run's resolved ``recipe.json``) is used as is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml", ".json") and p.is_file():
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


def _as_recipe(doc: dict[str, Any], overrides: Iterable[str], where: str) -> Recipe:
    """``doc`` (a merged recipe file) and ``key=value`` overrides on the typed schema: an
    unknown key or a value of the wrong type is a one-line :class:`RecipeError` naming
    the key; checks beyond types run in the sections' ``__post_init__``."""
    try:
        config = OmegaConf.merge(OmegaConf.structured(Recipe), doc)
    except OmegaConfBaseException as exc:
        raise RecipeError(f"{where}: {_one_line(exc)}") from None
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set expects key=value, got {item!r}")
        try:
            config = OmegaConf.merge(config, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as exc:
            raise RecipeError(_one_line(exc, "--set ")) from None
    try:
        recipe = OmegaConf.to_object(config)
    except OmegaConfBaseException as exc:
        raise RecipeError(f"{where}: {_one_line(exc)}") from None
    assert isinstance(recipe, Recipe)
    return recipe


def _one_line(exc: OmegaConfBaseException, prefix: str = "") -> str:
    """OmegaConf's message without its multi-line context, led by the key it concerns."""
    msg = str(getattr(exc, "msg", None) or exc).splitlines()[0]
    key = getattr(exc, "full_key", None) or "?"
    if isinstance(exc, ConfigKeyError):
        return f"unknown recipe key {key!r}: {msg}"
    return f"{prefix}{key}: {msg}"


def load_recipe(name_or_path: str, overrides: Iterable[str] = ()) -> Recipe:
    """Load a recipe (its ``_base_`` files merged underneath) and apply ``key.path=value``
    overrides, onto the typed sections of :class:`Recipe`."""
    path = recipe_path(name_or_path)
    if path.suffix == ".json":  # a run's recipe.json: already resolved, keeps its source
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RecipeError(f"{path}: cannot read a resolved recipe: {exc}") from None
        if not isinstance(doc, dict):
            raise RecipeError(f"{path}: a recipe must be a mapping")
        return recipe_from_dict(doc, overrides)
    recipe = _as_recipe(_read(path), overrides, str(path))
    recipe.source = str(path)
    return recipe


def recipe_from_dict(doc: dict[str, Any], overrides: Iterable[str] = ()) -> Recipe:
    """A :class:`Recipe` from a resolved recipe document (``recipe.json`` of a run, a
    checkpoint's provenance); its ``_source`` key, when present, becomes ``source``."""
    doc = dict(doc)
    source = doc.pop("_source", None)
    recipe = _as_recipe(doc, overrides, str(source or "recipe"))
    recipe.source = source
    return recipe


def with_overrides(recipe: Recipe, overrides: Iterable[str]) -> Recipe:
    """A copy of ``recipe`` with ``key=value`` overrides applied (same checks as --set)."""
    out = _as_recipe(recipe.to_dict(), overrides, "recipe")
    out.source = recipe.source
    return out


def write_recipe(recipe: Recipe, path: Path) -> None:
    """``recipe.json``: the resolved recipe and the file it came from; what a child
    process (``--recipe path``) and the tools reading a run folder load back. Written to a
    temporary file and renamed, so a child starting while another job of the same folder
    writes it never reads half a file."""
    doc = {**recipe.to_dict(), "_source": recipe.source}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


# Keys that may change between a run and its resumption without changing what it learns:
# where it writes and reads, the hardware it runs on, how it logs.
RESUME_FREE_KEYS = ("out", "device", "threads", "data.cache_dir", "data.root", "data.workers")
RESUME_FREE_SECTIONS = ("log",)


def resume_mismatches(recipe: Recipe, path: Path) -> list[str]:
    """The keys (``key: old -> new``) where ``recipe`` differs from a run's written
    ``recipe.json`` at ``path``; empty when it does not exist. Why: a checkpoint only
    tells whether the network's and optimizer's shapes still fit, so a changed learning
    rate, loss weight or schedule would otherwise resume silently and mix two recipes in
    one network. Keys one side lacks (a newer version's new key) and the keys that do not
    change what is learned (``RESUME_FREE_KEYS``, ``log``) are not compared."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RecipeError(f"cannot read {path} to check the resumed recipe: {exc}") from None
    old = flatten_dotted({k: v for k, v in old.items() if k != "_source"})
    new = flatten_dotted(json.loads(json.dumps(recipe.to_dict())))
    free = set(RESUME_FREE_KEYS)
    return [
        f"{key}: {old[key]!r} -> {new[key]!r}"
        for key in sorted(old.keys() & new.keys())
        if old[key] != new[key]
        and key not in free
        and key.split(".")[0] not in RESUME_FREE_SECTIONS
    ]


def check_resume_recipe(recipe: Recipe, path: Path) -> None:
    """A one-line :class:`RecipeError` when resuming under a recipe that differs from the
    run's ``recipe.json`` (see :func:`resume_mismatches`)."""
    diffs = resume_mismatches(recipe, path)
    if diffs:
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise RecipeError(
            f"cannot resume {Path(path).parent}: the recipe differs from the run's "
            f"{Path(path).name} at {diffs[0]}{more}; train into a new --out, or without "
            "--resume to start over"
        )


def show_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML (``--show-recipe``)."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
