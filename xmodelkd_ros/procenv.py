"""The environment of this package's processes: children that import this checkout, and
threads that do not spin on a shared CPU.

Why: a child started with ``sys.executable`` must import this very package, also from a
source checkout that is not installed (tests, the demo run from a clone); putting the
checkout first on ``PYTHONPATH`` does that without touching the caller's other entries.

And a vehicle's CPU is shared. OpenMP's threads (the fused C++ kernels', torch's
intra-op pool) by default spin after each parallel region waiting for the next one;
with another busy process on the cores, a spinning thread holds a core the
descheduled one needs, and a 3 ms voxelize took 80 ms at p95 (2 cores, one busy
process beside the node). The passive wait policy puts them to sleep instead. OpenMP
reads it once, when its runtime loads (``import torch``, the first fused kernel), so
the node's entry point calls :func:`quiet_cpu_threads` before any such import; a value
the user exported is kept. ONNX Runtime's pools are told not to spin by their session
options (:mod:`xmodelkd_ros.runtime.backends`).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

#: The folder that holds the ``xmodelkd_ros`` package.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]

#: What the node's process sets unless its environment already does (GNU, LLVM and
#: Intel OpenMP all read ``OMP_WAIT_POLICY``).
QUIET_THREADS_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}

#: Shared-library names of the OpenMP runtimes torch and the fused kernels load.
_OPENMP_LIBS = ("libgomp", "libiomp", "libomp")
#: What :func:`quiet_cpu_threads` reported for this process (None: never called on it).
_process_policy: str | None = None


def child_env() -> dict[str, str]:
    """``os.environ`` with :data:`PACKAGE_ROOT` prepended to ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    return env


def openmp_loaded(maps: str | None = None) -> bool:
    """True when an OpenMP runtime is already mapped into this process (Linux
    ``/proc/self/maps``; False where that file does not exist)."""
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return False
    return any(lib in maps for lib in _OPENMP_LIBS)


def quiet_cpu_threads(environ: MutableMapping[str, str] | None = None) -> str:
    """Set :data:`QUIET_THREADS_ENV` in ``environ`` (default ``os.environ``) where unset;
    returns the effective wait policy and where it came from, for diagnostics."""
    global _process_policy
    env = os.environ if environ is None else environ
    ours = all(k not in env for k in QUIET_THREADS_ENV)
    for key, value in QUIET_THREADS_ENV.items():
        env.setdefault(key, value)
    policy = env["OMP_WAIT_POLICY"]
    source = "set by the node" if ours else "from the environment"
    if ours and environ is None and openmp_loaded():
        source = "set too late: OpenMP was already loaded"
    result = f"{policy} ({source})"
    if environ is None:
        _process_policy = result
    return result


def cpu_wait_policy() -> str:
    """This process's OpenMP wait policy as :func:`quiet_cpu_threads` reported it, or the
    environment's when it never ran here."""
    if _process_policy is not None:
        return _process_policy
    return f"{os.environ.get('OMP_WAIT_POLICY', 'unset')} (not set by the node)"
