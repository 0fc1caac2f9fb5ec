"""The ROS side of a node test: one rclpy node in its own context and domain, spun on a
thread, storing every message it receives under a key. The tests' peers subclass it and
add their publishers and subscriptions (``self._store(key)`` as the callback), then call
:meth:`RosPeer.spin_in_background`."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any


class RosPeer:
    def __init__(self, domain: int, name: str) -> None:
        import rclpy

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.lock = threading.Lock()
        self.got: dict[str, list[Any]] = {}
        self.subs: list[Any] = []

    def spin_in_background(self) -> None:
        """Start receiving (after the subclass made its subscriptions)."""
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        with contextlib.suppress(Exception):  # context shut down under us at teardown
            self.executor.spin()

    def _store(self, key: str) -> Callable[[Any], None]:
        def cb(msg: Any) -> None:
            with self.lock:
                self.got.setdefault(key, []).append(msg)

        return cb

    def msgs(self, key: str) -> list[Any]:
        with self.lock:
            return list(self.got.get(key, []))

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2)
        self.node.destroy_node()
        self.ctx.try_shutdown()
        self.thread.join(timeout=5)
