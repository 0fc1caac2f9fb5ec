"""The replay's per-frame records: each published scan matched to its output, scored, timed.

Why its own step: the report (``report.json`` / ``report.md``) is a summary of these
records (:func:`xmodelkd_ros.evaluation.frames.summarize_frames`), and ``frames.jsonl``
keeps them, so a failed gate can be traced to the scans that were dropped, late or wrong.
A record per published scan: answered or dropped, its latency stages (bag stamp -> output,
publish -> output), late or not, and its per-class counts where ground truth exists.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xmodelkd_ros.evaluation.frames import frame_record, score_frame
from xmodelkd_ros.replay.options import ReplayOptions
from xmodelkd_ros.replay.player import PlayResult


def latency_ms(opts: ReplayOptions, play: PlayResult, stamp: int, recv_ns: int
               ) -> tuple[float, float]:  # fmt: skip
    """(bag stamp -> output, publish -> output) of one answered scan, in ms.

    At rate R the bag clock runs R x wall time from the first message; at max throughput a
    scan's stamp is taken as its publish instant.
    """
    pub = (recv_ns - play.published[stamp]) / 1e6
    if opts.max_throughput:
        return pub, pub
    sim_recv = play.t0 + (recv_ns - play.wall0) * opts.rate
    return (sim_recv - stamp) / 1e6 / opts.rate, pub


def replay_records(
    opts: ReplayOptions, play: PlayResult, outputs: dict[int, tuple[int, np.ndarray]],
    gt: dict[int, np.ndarray], names: list[str], late_ms: float,
) -> tuple[list[dict[str, Any]], np.ndarray]:  # fmt: skip
    """One record per published scan (publish order) and the summed (C, C) confusion of the
    scored scans (rows = truth), for ``confusion.png``."""
    bag = str(opts.bag)
    total = np.zeros((len(names), len(names)), dtype=np.int64)
    records = []
    for i, s in enumerate(play.order):
        out = outputs.get(s)
        score, extra = None, {}
        if out is None:
            points = play.points.get(s, len(gt[s]) if s in gt else 0)
            extra = {"answered": False, "dropped": True, "late": None, "latency_ms": None}
        else:
            points = len(out[1])
            e2e, pub = latency_ms(opts, play, s, out[0])
            extra = {"answered": True, "dropped": False, "late": bool(e2e > late_ms),
                     "latency_ms": {"stamp_to_output": e2e, "publish_to_output": pub}}  # fmt: skip
            if s in gt:
                score = score_frame(gt[s], out[1], len(names))
                if score is None:
                    extra["problem"] = (f"ground truth has {len(gt[s])} points, the output "
                                        f"{len(out[1])}")  # fmt: skip
                else:
                    total += score.confusion
        records.append(frame_record("replay", bag, i, s, points, score, names,
                                    has_truth=s in gt, **extra))  # fmt: skip
    return records, total
