"""Hand-off between the ROS executor and the inference worker (no ROS).

Why: a model slower than the LiDAR must not build a backlog. With the ``latest``
policy the worker always gets the newest scan and every scan it never got to is
dropped and counted; ``fifo`` keeps up to ``depth`` scans (oldest dropped when full)
for offline replay where every scan matters more than latency. Either way the
memory held is bounded by ``depth`` items. With several LiDARs each has its own slot
and the worker serves them in turn (:class:`FairSlots`).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

POLICIES = ("latest", "fifo")


class SlotClosedError(Exception):
    """Raised by :meth:`FrameSlot.get` once the slot is closed and empty."""


class FrameSlot:
    """A bounded, drop-oldest hand-off queue; ``latest`` is ``fifo`` with depth 1."""

    def __init__(self, policy: str = "latest", depth: int = 1) -> None:
        if policy not in POLICIES:
            raise ValueError(f"queue policy must be one of {POLICIES}, got {policy!r}")
        if depth < 1:
            raise ValueError(f"queue depth must be >= 1, got {depth}")
        self.policy = policy
        self.depth = 1 if policy == "latest" else int(depth)
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.put_count = 0
        self.dropped = 0
        self.high_water = 0

    def put(self, item: Any) -> bool:
        """Offer an item; returns True when an older item was dropped to make room."""
        with self._cond:
            if self._closed:
                return False
            dropped = False
            while len(self._items) >= self.depth:
                self._items.popleft()
                self.dropped += 1
                dropped = True
            self._items.append(item)
            self.put_count += 1
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> Any | None:
        """The oldest item held; None on timeout; :class:`SlotClosedError` once closed."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._items:
                return self._items.popleft()
            if self._closed:
                raise SlotClosedError
            return None

    def close(self) -> None:
        """Wake the worker and make further :meth:`get` calls raise (pending items dropped)."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class FairSlots:
    """One bounded slot per input (``policy`` / ``depth`` as :class:`FrameSlot`), one
    worker taking from them in turn.

    Why: several LiDARs share one inference worker. Served by arrival, an input
    publishing ten times as fast would fill nine turns in ten and the slow one's scans
    would go stale waiting; served in turn, every input with a scan waiting gets the next
    turn after at most one scan of each other input, whatever the rates. A flooding
    input only drops its own stale scans (counted per input).
    """

    def __init__(self, keys: list[str], policy: str = "latest", depth: int = 1) -> None:
        if not keys or len(set(keys)) != len(keys):
            raise ValueError(f"keys must be distinct and at least one, got {keys}")
        self._slots = {k: FrameSlot(policy, depth) for k in keys}
        self._keys = list(keys)
        self._next = 0  # index of the key served first at the next get
        self._cond = threading.Condition()
        self._closed = False
        self.served = dict.fromkeys(keys, 0)

    def slot(self, key: str) -> FrameSlot:
        """The slot of ``key`` (its ``dropped`` / ``high_water`` / ``put_count`` counters)."""
        return self._slots[key]

    def put(self, key: str, item: Any) -> bool:
        """Offer ``item`` for ``key``; True when an older item of ``key`` was dropped."""
        with self._cond:
            if self._closed:
                return False
            dropped = self._slots[key].put(item)
            self._cond.notify()
            return dropped

    def _take(self) -> tuple[str, Any] | None:
        n = len(self._keys)
        for i in range(n):
            key = self._keys[(self._next + i) % n]
            slot = self._slots[key]
            if len(slot):
                self._next = (self._next + i + 1) % n
                self.served[key] += 1
                return key, slot.get(timeout=0)
        return None

    def get(self, timeout: float | None = None) -> tuple[str, Any] | None:
        """``(key, item)`` from the next input in turn that holds one; None on timeout;
        :class:`SlotClosedError` once closed."""
        with self._cond:
            taken = self._take()
            if taken is None and not self._closed:
                self._cond.wait(timeout)
                taken = self._take()
            if taken is not None:
                return taken
            if self._closed:
                raise SlotClosedError
            return None

    def close(self) -> None:
        """Wake the worker and make further :meth:`get` calls raise (pending items dropped)."""
        with self._cond:
            self._closed = True
            for slot in self._slots.values():
                slot.close()
            self._cond.notify_all()
