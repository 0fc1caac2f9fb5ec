"""One rclpy node in its own context and DDS domain, spun on a background thread: the
other side of the segmentation node for the replay, the tests and the benchmarks.

Why one class: each of them needs the same few steps in the same order (a private
context, so two peers never share a domain or a shutdown; the executor started only
after the subscriptions exist; a teardown that survives the context going down under the
spinning thread), and the copies of them had started to differ. rclpy is imported inside,
so importing this module costs nothing where ROS is absent.
"""

from __future__ import annotations

import threading
from typing import Any


class SpinningPeer:
    """``self.node`` in a private context on ``domain``; subclasses create their
    publishers and subscriptions, then call :meth:`start`.

    An exception that stops the spinning thread is kept in ``error`` (and ``cond`` is
    notified, so a waiter wakes up instead of waiting for messages that can no longer
    arrive), unless it came from :meth:`close` shutting the context down.
    """

    def __init__(self, domain: int, name: str) -> None:
        import rclpy

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.error: BaseException | None = None
        self.executor: Any = None
        self.thread: threading.Thread | None = None
        self._closing = False

    def start(self) -> None:
        """Start receiving (after the subclass made its subscriptions)."""
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception as exc:
            if not self._closing:  # else: the context was shut down under us at teardown
                with self.cond:
                    self.error = exc
                    self.cond.notify_all()

    def close(self, timeout: float = 2.0) -> None:
        """Stop spinning, destroy the node and shut its context down."""
        import rclpy

        self._closing = True
        try:
            if self.executor is not None:
                self.executor.shutdown(timeout_sec=timeout)
            self.node.destroy_node()
        finally:
            rclpy.try_shutdown(context=self.ctx)
            if self.thread is not None:
                self.thread.join(timeout=timeout)
