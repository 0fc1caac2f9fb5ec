"""A native library built (or loaded) once per process, its failure remembered.

Both C++ libraries of the CPU runtime (:mod:`.fused`, the kernels ctypes calls;
:mod:`.ort_ops`, ONNX Runtime's custom ops) compile on first use, which takes seconds
and may fail (no compiler, missing headers). Every caller after the first must get the
same library, or the same one-line reason, without compiling again and without racing
another thread's build: the node's executor threads may all reach it at start-up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class BuiltOnce(Generic[T]):
    """``build()`` run on the first :meth:`get`, under a lock; its result or its failure
    (an exception of ``failures``, kept as a message) returned / raised as ``error``
    from then on. ``on_failure(reason)`` runs once, when the build fails."""

    def __init__(
        self,
        build: Callable[[], T],
        error: type[Exception],
        failures: tuple[type[BaseException], ...] = (OSError,),
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._build, self._error = build, error
        self._failures = (error, *failures)
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._value: T | None = None
        self._reason: str | None = None

    def get(self) -> T:
        """The built value; ``error`` with the reason where it could not be built."""
        if self._value is None and self._reason is None:
            with self._lock:
                if self._value is None and self._reason is None:
                    try:
                        self._value = self._build()
                    except self._failures as exc:
                        self._reason = str(exc) or type(exc).__name__
                        if self._on_failure is not None:
                            self._on_failure(self._reason)
        if self._value is None:
            raise self._error(str(self._reason))
        return self._value

    def available(self) -> tuple[bool, str]:
        """(usable, why not): builds on the first call."""
        try:
            self.get()
        except self._error as exc:
            return False, str(exc)
        return True, ""

    def reset(self) -> None:
        """Forget the value and any failure (tests change the environment)."""
        with self._lock:
            self._value, self._reason = None, None
