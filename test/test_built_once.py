"""``BuiltOnce``: the native libraries' build-once cache. Many threads asking at once
build once; a failure is remembered (no rebuild, same reason); reset forgets both."""

from __future__ import annotations

import threading
import time

import pytest

from xmodelkd_ros.sparse.built_once import BuiltOnce


class _UnavailableError(RuntimeError):
    pass


def test_concurrent_first_calls_build_once_and_share_the_value():
    calls = []

    def build():
        calls.append(threading.get_ident())
        time.sleep(0.05)  # long enough for every thread to be waiting on the lock
        return object()

    lib = BuiltOnce(build, _UnavailableError)
    got = []
    threads = [threading.Thread(target=lambda: got.append(lib.get())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 8 and all(g is got[0] for g in got)
    assert lib.available() == (True, "")


@pytest.mark.parametrize("exc", [_UnavailableError("no compiler"), OSError("no compiler")])
def test_a_failure_is_built_once_reported_alike_and_reset_retries(exc):
    calls, warned = [], []

    def build():
        calls.append(1)
        if len(calls) == 1:
            raise exc
        return "lib"

    lib = BuiltOnce(build, _UnavailableError, (OSError,), warned.append)
    for _ in range(3):
        with pytest.raises(_UnavailableError, match=r"^no compiler$"):
            lib.get()
    assert lib.available() == (False, "no compiler")
    assert len(calls) == 1 and warned == ["no compiler"]
    lib.reset()
    assert lib.get() == "lib" and len(calls) == 2


def test_an_unexpected_error_is_not_swallowed_and_not_remembered():
    calls = []

    def build():
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("bug")
        return "lib"

    lib = BuiltOnce(build, _UnavailableError)
    with pytest.raises(KeyError):
        lib.get()
    assert lib.get() == "lib"  # a bug is raised as is, and the next call tries again
