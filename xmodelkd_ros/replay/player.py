"""Playing the bag into the node: timed (``--rate``) or with back-pressure.

Two modes:

* ``--rate R`` (default 1): messages leave at their recorded spacing divided by R, with
  ``/clock`` published (100 Hz of wall time) for the node's ``use_sim_time`` timers. A
  scan whose output never comes was dropped by the node (its latest-only queue).
* ``--max-throughput``: each scan (with the camera messages recorded before the next
  scan) is sent only after the previous output arrived (back-pressure), so nothing is
  dropped and the report gives the sustainable scan rate.

Why a result object: the report and the runner need the publish instants and the bag
clock's anchor (``t0`` <-> ``wall0``) after playback; :class:`PlayResult` carries them
as data, and :meth:`PlayResult.clock_at` derives the bag clock from them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xmodelkd_ros.replay.bag import BagPlan, groups
from xmodelkd_ros.replay.options import ReplayOptions, log

if TYPE_CHECKING:
    from xmodelkd_ros.replay.node_process import NodeProcess
    from xmodelkd_ros.replay.peer import Peer


@dataclass
class PlayResult:
    """What was published and when (monotonic ns), and the bag clock's anchor."""

    rate: float
    wall0: int  # monotonic ns when the first message left
    t0: int = 0  # bag log time of the first message (the bag clock at wall0)
    started: bool = False  # t0/wall0 set from the first message
    published: dict[int, int] = field(default_factory=dict)  # LiDAR stamp -> publish ns
    order: list[int] = field(default_factory=list)  # LiDAR stamps in publish order
    points: dict[int, int] = field(default_factory=dict)  # LiDAR stamp -> points in the scan
    wall_play_s: float = 0.0  # publishing only
    wall_total_s: float = 0.0  # first publish -> last output received
    lost_waiting: int = 0  # back-pressure waits that timed out

    def clock_at(self, now_ns: int) -> int:
        """The bag clock (ns) at monotonic instant ``now_ns``: it runs ``rate`` x wall."""
        return int(self.t0 + (now_ns - self.wall0) * self.rate)


def play(opts: ReplayOptions, plan: BagPlan, peer: Peer, node: NodeProcess) -> PlayResult:
    """Publish the bag; returns published stamps, publish instants and the wall time."""
    res = PlayResult(rate=opts.rate, wall0=time.monotonic_ns())
    clock_stop = threading.Event()

    def clock_loop() -> None:  # /clock at 100 Hz of wall time, for the node's timers
        while not clock_stop.wait(0.01):
            if res.started:
                peer.publish_clock(res.clock_at(time.monotonic_ns()))

    clock_thread = None
    if not opts.max_throughput:
        clock_thread = threading.Thread(target=clock_loop, daemon=True)
        clock_thread.start()
    try:
        for first_log, group in groups(plan):
            if not res.started:
                res.t0, res.wall0, res.started = first_log, time.monotonic_ns(), True
            for topic, log_ns, raw, stamp, points in group:
                if not opts.max_throughput:
                    target = res.wall0 + (log_ns - res.t0) / opts.rate
                    delay = (target - time.monotonic_ns()) / 1e9
                    if delay > 0:
                        time.sleep(delay)
                if stamp is not None:
                    res.published[stamp] = time.monotonic_ns()
                    res.order.append(stamp)
                    res.points[stamp] = points or 0
                peer.pubs[topic].publish(raw)
            peer.check()
            if (opts.max_throughput and res.order
                    and not peer.wait_output(res.order[-1], opts.output_timeout_s)):
                res.lost_waiting += 1
                log(opts, f"no output for scan {res.order[-1]} after "
                          f"{opts.output_timeout_s:.0f} s")  # fmt: skip
                if not node.alive():
                    break
        res.wall_play_s = (time.monotonic_ns() - res.wall0) / 1e9
        _drain(opts, res, peer, node)
    finally:
        clock_stop.set()
        if clock_thread is not None:
            clock_thread.join(timeout=1.0)
    with peer.lock:
        recv_last = max((peer.outputs[s][0] for s in res.order if s in peer.outputs),
                        default=0)  # fmt: skip
    res.wall_total_s = (max(recv_last, res.wall0) - res.wall0) / 1e9
    return res


def _drain(opts: ReplayOptions, res: PlayResult, peer: Peer, node: NodeProcess) -> None:
    """Outputs still in flight: wait until each published scan is answered or the output
    stream has been quiet for a while (dropped scans never answer)."""
    quiet_s = 2.0 if opts.max_throughput else max(2.0, 3.0 / opts.rate)
    deadline = time.monotonic() + opts.output_timeout_s
    last_n, last_change = -1, time.monotonic()
    while time.monotonic() < deadline and node.alive():
        peer.check()
        with peer.lock:
            n = sum(1 for s in res.order if s in peer.outputs)
        if n == len(res.order):
            break
        if n != last_n:
            last_n, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > quiet_s:
            break
        time.sleep(0.05)
