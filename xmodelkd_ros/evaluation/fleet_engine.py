"""Where the bags of a fleet evaluation run: local worker processes, or a Ray cluster.

Why two engines and no scheduler of our own: on one machine a process pool is all it
takes (no cluster to start, nothing listening); beyond one machine Ray places the tasks,
retries them (``max_retries=1``, exceptions included) and moves the results back. Both
run :func:`~xmodelkd_ros.evaluation.fleet_worker.evaluate_bag`, one task per bag, and
report each bag to the driver as it finishes (``on_done`` / ``on_failed``), so finished
bags are kept even when the run is killed. A bag that fails twice is reported with the
last reason; none is dropped.

Ray nodes must see the bags and the model at the same paths (shared storage); the
package itself is shipped to the workers (``runtime_env`` ``py_modules``).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from xmodelkd_ros.evaluation.fleet_bags import FleetError
from xmodelkd_ros.evaluation.fleet_worker import BagTask, evaluate_bag
from xmodelkd_ros.procenv import PACKAGE_ROOT

#: attempts per bag: the first and one retry
ATTEMPTS = 2
OnDone = Callable[[BagTask, dict[str, Any]], None]
OnFailed = Callable[[BagTask, str], None]


def failure_reason(exc: BaseException) -> str:
    """One line: the message of an expected input error, else the type and the message."""
    from xmodelkd_ros.replay.options import ReplayError

    cause = getattr(exc, "cause", None)  # a RayTaskError wraps the task's own exception
    if isinstance(cause, BaseException):
        exc = cause
    text = " ".join(str(exc).split())
    if isinstance(exc, FleetError | ReplayError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _init_worker(threads: int) -> None:
    """Before torch is imported in a worker: its OpenMP threads."""
    os.environ["OMP_NUM_THREADS"] = str(threads)


def run_local(tasks: Sequence[BagTask], workers: int, on_done: OnDone, on_failed: OnFailed,
              log: Callable[[str], None]) -> None:  # fmt: skip
    """Run ``tasks`` on ``workers`` spawned processes, retrying each failed bag once.

    A worker that dies (killed, out of memory, crashed) breaks the pool: every bag in
    flight then counts one attempt with that reason, and a fresh pool takes the rest."""
    attempts = dict.fromkeys(range(len(tasks)), 0)
    todo = list(range(len(tasks)))
    threads = tasks[0].model.threads if tasks else 1
    while todo:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads,)) as pool:  # fmt: skip
            pending: dict[Future, int] = {pool.submit(evaluate_bag, tasks[i]): i for i in todo}
            todo = []
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        reason = "a worker process died (killed, out of memory or crashed)"
                    except Exception as exc:
                        reason = failure_reason(exc)
                    else:
                        on_done(tasks[i], result)
                        continue
                    attempts[i] += 1
                    if attempts[i] >= ATTEMPTS:
                        on_failed(tasks[i], reason)
                        continue
                    log(f"bag {tasks[i].bag.name} failed ({reason}); retrying once")
                    try:
                        pending[pool.submit(evaluate_bag, tasks[i])] = i
                    except BrokenProcessPool:
                        todo.append(i)  # the next pool takes it


#: the job's environment on every Ray worker: this package, shipped from here (a cluster's
#: nodes then need its dependencies only); set when this process connects
RUNTIME_ENV = {"py_modules": [str(PACKAGE_ROOT / "xmodelkd_ros")],
               "excludes": ["__pycache__", "*.pyc"]}  # fmt: skip


def start_local_ray(num_cpus: int) -> None:
    """A throwaway Ray cluster on this machine, reachable on loopback only."""
    # Ray binds and advertises the node's address: loopback when clusters are "disabled"
    # (the constant is read at import, so it is set both in the environment and in Ray)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    # "local": a new instance even where RAY_ADDRESS is set or `ray start` left a cluster
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
             logging_level="ERROR", log_to_driver=False, runtime_env=RUNTIME_ENV)  # fmt: skip


def _reachable(address: str, timeout_s: float = 10.0) -> None:
    """Ray retries an address that does not answer for minutes: a ``host:port`` (or
    ``ray://host:port``) is tried once with a TCP connection first."""
    import socket

    host, sep, port = address.split("://")[-1].rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise FleetError(f"cannot reach the Ray cluster at {address}: "
                         f"{exc.strerror or exc}") from None  # fmt: skip


def connect_ray(address: str, workers: int) -> tuple[Any, bool]:
    """``ray`` connected to ``address`` (``local``: start one here, ``auto``: the running
    cluster); also whether this call started the connection (and must shut it down).
    Already connected (a caller's ``ray.init``): that connection, whose job environment
    must then provide this package."""
    try:
        import ray
    except ImportError:
        raise FleetError("--ray needs Ray: pip install 'xmodelkd_ros[fleet]' (ray)") from None
    if ray.is_initialized():
        return ray, False
    if address != "local":
        _reachable(address)
    try:
        if address == "local":
            start_local_ray(workers)
        else:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False,
                     runtime_env=RUNTIME_ENV)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise FleetError(f"cannot connect to the Ray cluster at {address}: "
                         f"{' '.join(str(exc).split())}") from None  # fmt: skip
    return ray, True


def run_ray(ray: Any, tasks: Sequence[BagTask], on_done: OnDone, on_failed: OnFailed) -> None:
    """One Ray task per bag (``num_cpus`` = the worker threads); Ray retries a failed task
    once, whether it raised or its worker died."""
    threads = tasks[0].model.threads if tasks else 1
    remote = ray.remote(evaluate_bag).options(
        num_cpus=threads, max_retries=ATTEMPTS - 1, retry_exceptions=True,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads)}},
    )  # fmt: skip
    pending = {remote.remote(t): t for t in tasks}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            task = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # RayTaskError, WorkerCrashedError, ...
                on_failed(task, failure_reason(exc))
            else:
                on_done(task, result)
