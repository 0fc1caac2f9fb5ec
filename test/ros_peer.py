"""The ROS side of a node test: a :class:`~xmodelkd_ros.ros_peer.SpinningPeer` (one rclpy
node in its own context and domain, spun on a thread) storing every message it receives
under a key. The tests' peers subclass it and add their publishers and subscriptions
(``self._store(key)`` as the callback), then call :meth:`start`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xmodelkd_ros.ros_peer import SpinningPeer


class RosPeer(SpinningPeer):
    def __init__(self, domain: int, name: str) -> None:
        super().__init__(domain, name)
        self.got: dict[str, list[Any]] = {}
        self.subs: list[Any] = []

    def _store(self, key: str) -> Callable[[Any], None]:
        def cb(msg: Any) -> None:
            with self.lock:
                self.got.setdefault(key, []).append(msg)

        return cb

    def msgs(self, key: str) -> list[Any]:
        with self.lock:
            return list(self.got.get(key, []))
