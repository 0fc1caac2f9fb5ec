"""A non-editable install (a wheel into a temporary prefix) finds its training recipes.

Recipes are data under the top-level training/ folder; setup.py installs them into
<prefix>/share/xmodelkd_ros/training. This builds and installs the package the way pip
does for users (no editable hooks), then runs the CLI from outside the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from xmodelkd_ros.training.recipe import known_recipes

ROOT = Path(__file__).resolve().parents[1]
# What setup.py reads (the package, the data it installs, the metadata).
SOURCES = ["setup.py", "setup.cfg", "pyproject.toml", "package.xml", "README.md",
           "resource", "launch", "config", "models", "training", "xmodelkd_ros"]  # fmt: skip


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, **kw)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_installed_tree_runs_recipes_from_outside_the_source(tmp_path):
    src, prefix, elsewhere = tmp_path / "src", tmp_path / "prefix", tmp_path / "elsewhere"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "engines", "*.egg-info", "build")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        elif path.exists():
            shutil.copy2(path, src / name)
    # --ignore-installed: without it pip first uninstalls the environment's own
    # xmodelkd_ros (a developer's editable install) before installing into the prefix.
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
           "--no-index", "--no-compile", "--quiet", "--ignore-installed",
           "--prefix", str(prefix), str(src)]  # fmt: skip
    try:
        _run(pip)
    except AssertionError as exc:
        if "No module named pip" in str(exc):
            pytest.skip("pip is not available in this interpreter")
        raise
    site = Path(sysconfig.get_path("purelib", vars={"base": str(prefix)}))
    shutil.rmtree(src)  # nothing may come from the copy it was built from
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    where = _run(
        [sys.executable, "-c", "import xmodelkd_ros.training.recipe as r; "
         "import xmodelkd_ros.sparse.fused as f; "
         "print(r.__file__); print(r.recipe_path('synthetic')); print(r.known_recipes()); "
         "print(all(p.is_file() for p in f.SOURCES))"],
        cwd=elsewhere, env=env,
    ).stdout.splitlines()  # fmt: skip
    assert Path(where[0]).is_relative_to(site), where
    assert Path(where[1]) == prefix / "share" / "xmodelkd_ros" / "training" / "synthetic.yaml"
    assert where[2] == str(known_recipes())  # every shipped recipe, found from the install
    assert where[3] == "True"  # the fused kernels' C++ sources ship: they build from an install
    for recipe, expect in (("synthetic", "dataset: synthetic"),
                           ("semantickitti", "voxel_size: 0.05")):  # a _base_ recipe too
        out = _run([sys.executable, "-m", "xmodelkd_ros.training.train", "--show-recipe",
                    "--recipe", recipe, "--set", "optim.lr=0.125"], cwd=elsewhere, env=env).stdout
        assert expect in out and "lr: 0.125" in out and "intensity_range" in out
