"""What the node counts for each LiDAR it segments (no ROS).

Why per LiDAR: one node process serves several LiDARs through one inference worker,
and a vehicle's monitoring must see each sensor on its own: a dead front LiDAR must not
hide behind a healthy rear one, and a flooding one must show its own drops and latency.
The subscription callbacks, the worker and the diagnostics timer all touch these
counters, so the ones updated together change under one lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from xmodelkd_ros.stats import RateMeter, StageLatencies
from xmodelkd_ros.sync import OrderStats, ScanOrder

#: Per-scan counters of one input, in the order diagnostics report them.
COUNTS = ("received", "processed", "malformed", "errors", "empty")


class InputStats:
    """Arrivals, results, failures, rates, per-stage latency and the ego box's count."""

    def __init__(self, window: int, rate_window_s: float, stages: Iterable[str]) -> None:
        self.latency = StageLatencies(window, stages)
        self.in_rate, self.out_rate = RateMeter(rate_window_s), RateMeter(rate_window_s)
        self.counts = dict.fromkeys(COUNTS, 0)
        self.last_error = ""
        self.last_scan_mono: float | None = None
        self.ego_points_total = 0
        self.ego_points_last = 0
        self.lost = 0  # clouds the rmw reported lost (its running total)
        self.incompatible_qos = 0
        self.incompatible_policy = ""
        self._lost_reported = 0
        self._order = ScanOrder()
        self._lock = threading.Lock()

    def arrived(self, stamp_ns: int, now_ns: int | None = None) -> bool:
        """A cloud stamped ``stamp_ns`` arrived; True when it is in stamp order (to be
        segmented), False for a late or duplicate one (counted by the order)."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        self.in_rate.tick(now_ns / 1e9)
        with self._lock:
            self.last_scan_mono = now_ns / 1e9
            self.counts["received"] += 1
            return self._order.admit(stamp_ns)

    def done(self, timings: dict[str, float], empty: bool, ego_points: int) -> None:
        """A scan was segmented and published."""
        self.latency.add_all(timings)
        with self._lock:
            self.counts["processed"] += 1
            self.counts["empty"] += int(empty)
            self.ego_points_last = ego_points
            self.ego_points_total += ego_points
        self.out_rate.tick()

    def failed(self, malformed: bool, message: str) -> None:
        """A scan could not be segmented: a malformed cloud or an error in the pipeline."""
        with self._lock:
            self.counts["malformed" if malformed else "errors"] += 1
            self.last_error = message

    def lost_since_last_report(self) -> int:
        """Clouds reported lost since the previous call (diagnostics call it once a period)."""
        with self._lock:
            recent, self._lost_reported = self.lost - self._lost_reported, self.lost
            return recent

    def order(self) -> OrderStats:
        with self._lock:
            return self._order.stats()

    def snapshot_counts(self) -> dict[str, Any]:
        """The counters at one instant."""
        with self._lock:
            return dict(self.counts)

    def since_last_scan_s(self, now: float | None = None) -> float | None:
        """Seconds since the last cloud arrived; None when none ever did."""
        last = self.last_scan_mono
        return None if last is None else (time.monotonic() if now is None else now) - last
