"""Latency percentiles and rate meters for the node's diagnostics (no ROS, thread-safe).

Why: ``/diagnostics`` must report p50/p95 per pipeline stage and input/output rates
at 1 Hz without growing memory on a vehicle that runs for days, so both keep a
bounded window (last ``size`` samples, last ``window_s`` seconds) instead of history.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable

import numpy as np


class LatencyWindow:
    """The last ``size`` samples of one stage's latency (seconds)."""

    def __init__(self, size: int = 200) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self._buf: deque[float] = deque(maxlen=int(size))
        self._lock = threading.Lock()
        self.count = 0
        self.last = float("nan")

    def add(self, seconds: float) -> None:
        """Record one sample."""
        with self._lock:
            self._buf.append(float(seconds))
            self.count += 1
            self.last = float(seconds)

    def percentiles(self, qs: Iterable[float] = (50.0, 95.0)) -> list[float]:
        """Percentiles of the window in seconds (NaN when empty)."""
        qs = list(qs)
        with self._lock:
            data = np.fromiter(self._buf, dtype=np.float64, count=len(self._buf))
        if data.size == 0:
            return [float("nan")] * len(qs)
        return [float(v) for v in np.percentile(data, qs)]

    def __len__(self) -> int:
        return len(self._buf)


class StageLatencies:
    """One :class:`LatencyWindow` per named stage, created on first use."""

    def __init__(self, size: int = 200, stages: Iterable[str] = ()) -> None:
        self.size = int(size)
        self._lock = threading.Lock()
        self._stages: dict[str, LatencyWindow] = {s: LatencyWindow(self.size) for s in stages}

    def add(self, stage: str, seconds: float) -> None:
        """Record ``seconds`` for ``stage``."""
        with self._lock:
            w = self._stages.get(stage)
            if w is None:
                w = self._stages[stage] = LatencyWindow(self.size)
        w.add(seconds)

    def add_all(self, timings: dict[str, float]) -> None:
        """Record several stages at once (a ``{stage: seconds}`` dict)."""
        for k, v in timings.items():
            self.add(k, v)

    def summary_ms(self) -> dict[str, tuple[float, float]]:
        """``{stage: (p50_ms, p95_ms)}`` in insertion order."""
        with self._lock:
            items = list(self._stages.items())
        out = {}
        for name, w in items:
            p50, p95 = w.percentiles((50.0, 95.0))
            out[name] = (p50 * 1e3, p95 * 1e3)
        return out

    def get(self, stage: str) -> LatencyWindow | None:
        with self._lock:
            return self._stages.get(stage)


class RateMeter:
    """Events per second over the last ``window_s`` seconds (monotonic clock).

    Keeps only the event times inside the window, bounded by ``max_events``, so a
    burst cannot grow it without limit.
    """

    def __init__(self, window_s: float = 2.0, max_events: int = 10_000) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.window_s = float(window_s)
        self._times: deque[float] = deque(maxlen=int(max_events))
        self._lock = threading.Lock()
        self.total = 0

    def tick(self, now: float | None = None) -> None:
        """Record one event."""
        t = time.monotonic() if now is None else float(now)
        with self._lock:
            self._times.append(t)
            self.total += 1

    def rate(self, now: float | None = None) -> float:
        """Events per second in the window ending at ``now``."""
        t = time.monotonic() if now is None else float(now)
        with self._lock:
            while self._times and self._times[0] < t - self.window_s:
                self._times.popleft()
            n = len(self._times)
        return n / self.window_s
