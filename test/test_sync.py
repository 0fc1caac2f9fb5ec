"""Tests for the LiDAR-anchored synchronizer: scenarios plus property tests with an oracle."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xmodelkd_ros.sync import NS, LidarAnchoredSync, ScanOrder, SyncedFrame

MS = 1_000_000


def mk(cams: tuple[str, ...] = ("front", "left"), **kw: Any) -> LidarAnchoredSync:
    args = {"slop_s": 0.05, "max_wait_s": 0.1, "max_pending_scans": 4, "camera_buffer": 16}
    args.update(kw)
    return LidarAnchoredSync(cams, **args)


# ---------------------------------------------------------------- scenarios


def test_zero_cameras_emit_immediately() -> None:
    s = mk(())
    out = s.add_scan(100 * MS, "scan", now_ns=0)
    assert [(f.stamp_ns, f.scan, f.missing, f.complete) for f in out] == [
        (100 * MS, "scan", (), True)
    ]
    assert s.poll(10 * NS) == []


def test_nearest_image_and_emit_when_streams_pass_the_scan() -> None:
    s = mk()
    for t in (70, 95, 130):
        assert s.add_image("front", t * MS, f"f{t}", now_ns=0) == []
    assert s.add_image("left", 90 * MS, "l90", now_ns=0) == []
    out = s.add_scan(100 * MS, "scan", now_ns=1)
    assert out == []  # left has not passed the scan yet
    out = s.add_image("left", 160 * MS, "l160", now_ns=2)  # > scan + slop: final
    assert len(out) == 1
    f = out[0]
    assert f.images == {"front": (95 * MS, "f95"), "left": (90 * MS, "l90")}
    assert f.complete and not f.expired


def test_image_at_or_after_scan_no_farther_than_choice_is_final() -> None:
    s = mk(("front",))
    s.add_image("front", 99 * MS, "a", now_ns=0)
    assert s.add_scan(100 * MS, "scan", now_ns=0) == []
    out = s.add_image("front", 101 * MS, "b", now_ns=0)  # nothing nearer can follow
    assert [f.images["front"][1] for f in out] == ["a"]  # tie -> earlier


def test_dead_camera_flagged_after_max_wait_and_stats() -> None:
    s = mk(camera_timeout_s=0.5)
    s.add_image("front", 0, "f0", now_ns=0)
    s.add_image("left", 0, "l0", now_ns=0)
    for k in range(1, 6):
        t = k * 100 * MS
        s.add_image("front", t, f"f{k}", now_ns=t)
        s.add_image("front", t + 60 * MS, f"f{k}b", now_ns=t)
    out = s.add_scan(500 * MS, "scan", now_ns=500 * MS)
    assert out == []
    assert s.poll(599 * MS) == []
    out = s.poll(600 * MS)
    assert len(out) == 1 and out[0].missing == ("left",) and out[0].expired
    assert out[0].images["front"] == (500 * MS, "f5")
    st = s.stats(now_ns=700 * MS)
    assert st.cameras["front"].alive and not st.cameras["left"].alive
    assert st.cameras["left"].missed == 1 and st.cameras["front"].matched == 1
    assert st.scans_expired == 1 and st.scans_emitted == 1


def test_late_and_duplicate_scans_are_dropped_and_counted() -> None:
    s = mk(())
    assert len(s.add_scan(200 * MS, "a", 0)) == 1
    assert s.add_scan(200 * MS, "dup", 0) == []
    assert s.add_scan(150 * MS, "late", 0) == []
    st = s.stats()
    assert st.scans_dropped_late == 2 and st.scans_emitted == 1
    s2 = mk(("front",))
    s2.add_scan(100 * MS, "a", 0)
    s2.add_scan(100 * MS, "a2", 0)
    assert s2.stats().scans_duplicate == 1 and s2.pending_stamps == [100 * MS]


def test_out_of_order_scans_come_out_sorted() -> None:
    s = mk(("front",))
    s.add_scan(200 * MS, "b", 0)
    s.add_scan(100 * MS, "a", 0)
    out = s.add_image("front", 400 * MS, "x", 0)
    assert [f.scan for f in out] == ["a", "b"]
    assert all(f.missing == ("front",) for f in out)


def test_later_expiry_pushes_earlier_scans_out() -> None:
    s = mk(("front",), max_wait_s=0.1)
    s.add_scan(200 * MS, "b", now_ns=0)
    s.add_scan(100 * MS, "a", now_ns=50 * MS)  # arrives later, expires later
    out = s.poll(100 * MS)  # b expired; a must go first
    assert [f.scan for f in out] == ["a", "b"]


def test_bag_loop_resets_and_keeps_going() -> None:
    s = mk(("front",))
    for k in range(5):
        t = 10 * NS + k * 100 * MS
        s.add_image("front", t, k, now_ns=t)
        s.add_scan(t, f"s{k}", now_ns=t)
    s.add_scan(10 * NS + 500 * MS, "pending", now_ns=11 * NS)
    # The bag loops: camera first, then LiDAR.
    assert s.add_image("front", 10 * MS, "n0", now_ns=11 * NS) == []
    assert s.stats().cameras["front"].resets == 1
    out = s.add_scan(12 * MS, "new", now_ns=11 * NS)
    assert [f.scan for f in out] == ["pending"]  # flushed before the reset
    assert s.stats().resets == 1
    out = s.add_image("front", 100 * MS, "n1", now_ns=11 * NS)
    assert [(f.scan, f.images["front"][1]) for f in out] == [("new", "n0")]


def test_bag_loop_lidar_first_clears_stale_camera_buffer() -> None:
    s = mk(("front",))
    s.add_image("front", 10 * NS, "old", now_ns=0)
    s.add_scan(10 * NS, "s", now_ns=0)
    s.add_scan(5 * MS, "new", now_ns=1)
    assert s.buffered("front") == []
    out = s.add_image("front", 2 * MS, "n", now_ns=2)
    assert out == []  # a later image could still be nearer
    out = s.add_image("front", 6 * MS, "n2", now_ns=3)  # 1 ms after vs 3 ms before: final
    assert [(f.scan, f.images["front"][1]) for f in out] == [("new", "n2")]


def test_overflow_forces_oldest_out() -> None:
    s = mk(("front",), max_pending_scans=2)
    s.add_scan(100 * MS, "a", 0)
    s.add_scan(200 * MS, "b", 0)
    out = s.add_scan(300 * MS, "c", 0)
    assert [f.scan for f in out] == ["a"] and out[0].expired
    assert s.stats().scans_forced_overflow == 1 and s.pending_stamps == [200 * MS, 300 * MS]


def test_clock_going_back_does_not_stall() -> None:
    s = mk(("front",))
    s.add_scan(100 * MS, "a", now_ns=5 * NS)
    assert [f.scan for f in s.poll(1 * NS)] == ["a"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        LidarAnchoredSync(["a", "a"])
    with pytest.raises(KeyError, match="unknown camera"):
        mk().add_image("rear", 0, None, 0)


# ---------------------------------------------------------------- property tests

CAMS = ("c0", "c1", "c2")


@st.composite
def event_streams(draw: Any, jumps: bool) -> tuple[int, list[tuple]]:
    """Random interleavings: jittered stamps, drops, duplicates, reordering, (loops)."""
    ncam = draw(st.integers(0, 3))
    events: list[tuple] = []
    t = 10 * NS
    n = draw(st.integers(1, 60))
    for _ in range(n):
        kind = draw(st.sampled_from(["scan", "img", "img", "img", "poll", "adv"]))
        if kind == "adv":
            t += draw(st.integers(0, 120)) * MS
            if jumps and draw(st.integers(0, 9)) == 0:
                t -= draw(st.integers(2, 5)) * NS  # the bag loops
            continue
        dnow = draw(st.integers(0, 60)) * MS
        if kind == "poll":
            events.append(("poll", dnow))
        elif kind == "scan":
            stamp = t + draw(st.integers(-80, 20)) * MS
            reps = draw(st.sampled_from([1, 1, 1, 2]))  # duplicates
            for _ in range(reps):
                events.append(("scan", dnow, stamp))
        elif ncam:
            cam = CAMS[draw(st.integers(0, ncam - 1))]
            stamp = t + draw(st.integers(-60, 60)) * MS
            events.append(("img", dnow, cam, stamp))
    return ncam, events


def run(sync: LidarAnchoredSync, events: list[tuple], check: Any) -> list[SyncedFrame]:
    now = 0
    out: list[SyncedFrame] = []
    for k, ev in enumerate(events):
        now += ev[1]
        if ev[0] == "scan":
            got = sync.add_scan(ev[2], ("scan", k, ev[2]), now)
        elif ev[0] == "img":
            got = sync.add_image(ev[2], ev[3], ("img", k, ev[2], ev[3]), now)
        else:
            got = sync.poll(now)
        check(k, ev, now, got)
        out.extend(got)
    return out


PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(event_streams(jumps=False), st.integers(10, 80), st.integers(0, 150))
def test_oracle_without_time_jumps(case: tuple, slop_ms: int, wait_ms: int) -> None:
    ncam, events = case
    cams = CAMS[:ncam]
    slop = slop_ms * MS
    sync = LidarAnchoredSync(
        cams,
        slop_s=slop_ms / 1e3,
        max_wait_s=wait_ms / 1e3,
        max_pending_scans=5,
        camera_buffer=10_000,
    )
    received: dict[str, list[tuple[int, Any]]] = {c: [] for c in cams}
    arrival: dict[int, int] = {}
    emitted: list[SyncedFrame] = []

    def oracle_choice(c: str, s: int) -> tuple[int | None, bool]:
        """Brute force: best |dt| within slop over everything received, and finality."""
        imgs = received[c]
        ds = [abs(t - s) for t, _ in imgs if abs(t - s) <= slop]
        best = min(ds) if ds else None
        if not imgs:
            return best, False
        newest = max(t for t, _ in imgs)
        final = newest > s + slop or (newest >= s and best is not None and best <= newest - s)
        return best, final

    def check(k: int, ev: tuple, now: int, got: list[SyncedFrame]) -> None:
        if ev[0] == "img":
            received[ev[2]].append((ev[3], ("img", k, ev[2], ev[3])))
        if ev[0] == "scan" and ev[2] not in arrival:
            arrival[ev[2]] = now
        for f in got:
            # Ordering: strictly increasing scan stamps, each scan at most once.
            assert not emitted or f.stamp_ns > emitted[-1].stamp_ns
            emitted.append(f)
            assert set(f.images) | set(f.missing) == set(cams)
            assert not set(f.images) & set(f.missing)
            for c in cams:
                best, final = oracle_choice(c, f.stamp_ns)
                if c in f.missing:
                    assert best is None
                else:
                    t_img, img = f.images[c]
                    assert abs(t_img - f.stamp_ns) == best <= slop
                    assert img[0] == "img" and img[2] == c and img[3] == t_img
                    # duplicates of a stamp: the latest one wins
                    assert img == [i for t, i in received[c] if t == t_img][-1]
                if not f.expired:
                    assert final
        # Promptness: nothing left waiting that should have gone out.
        pend = sync.pending_stamps
        assert len(pend) <= 5
        for p in pend:
            assert now - arrival[p] < wait_ms * MS
        if pend:
            assert not all(oracle_choice(c, pend[0])[1] for c in cams)

    run(sync, events, check)
    out = sync.poll(10**6 * NS)
    emitted.extend(out)
    st_ = sync.stats()
    assert sync.pending_stamps == []
    scans = sum(1 for e in events if e[0] == "scan")
    assert st_.scans_received == scans
    assert st_.scans_emitted == len(emitted)
    assert st_.scans_emitted + st_.scans_dropped_late + st_.scans_duplicate == scans
    for c in cams:
        assert st_.cameras[c].matched + st_.cameras[c].missed == len(emitted)


@PROPS
@given(event_streams(jumps=True), st.integers(1, 4), st.integers(1, 6))
def test_bounds_and_accounting_with_loops(case: tuple, max_pending: int, cap: int) -> None:
    ncam, events = case
    cams = CAMS[:ncam]
    sync = LidarAnchoredSync(
        cams, slop_s=0.04, max_wait_s=0.08, max_pending_scans=max_pending, camera_buffer=cap
    )
    seen: set[Any] = set()
    stamps: list[int] = []

    def check(k: int, ev: tuple, now: int, got: list[SyncedFrame]) -> None:
        assert len(sync.pending_stamps) <= max_pending
        for c in cams:
            assert len(sync.buffered(c)) <= cap
        for f in got:
            assert f.scan not in seen  # at most once
            seen.add(f.scan)
            stamps.append(f.stamp_ns)
            for t, img in f.images.values():
                assert abs(t - f.stamp_ns) <= 40 * MS and img[3] == t

    run(sync, events, check)
    for f in sync.poll(10**6 * NS):
        assert f.scan not in seen
        seen.add(f.scan)
        stamps.append(f.stamp_ns)
    st_ = sync.stats()
    scans = sum(1 for e in events if e[0] == "scan")
    assert sync.pending_stamps == []
    assert st_.scans_emitted == len(seen)
    assert st_.scans_emitted + st_.scans_dropped_late + st_.scans_duplicate == scans
    # Order is only broken by a reset (the bag looping).
    backwards = sum(1 for a, b in itertools.pairwise(stamps) if b <= a)
    assert backwards <= st_.resets


# ----------------------------------------------------------------------------- ScanOrder


def test_scan_order_drops_duplicates_and_late_scans_restarts_on_jump_back():
    order = ScanOrder(jump_back_s=1.0)
    stamps = [10 * NS, 10 * NS, 11 * NS, 10 * NS + NS // 2, 12 * NS, 3 * NS, 3 * NS + 1]
    assert [order.admit(s) for s in stamps] == [True, False, True, False, True, True, True]
    stats = order.stats()
    assert (stats.admitted, stats.duplicate, stats.dropped_late, stats.resets) == (5, 1, 1, 1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=60))
def test_scan_order_admits_an_increasing_sequence_between_resets(ticks):
    """Oracle: admitted stamps strictly increase except right after a jump back of more
    than jump_back_s; every scan is admitted or counted."""
    order = ScanOrder(jump_back_s=1.0)
    stamps = [t * NS // 4 for t in ticks]  # quarter seconds: jumps both within and beyond 1 s
    admitted = [s for s in stamps if order.admit(s)]
    stats = order.stats()
    assert stats.admitted + stats.duplicate + stats.dropped_late == len(stamps)
    expected, last = [], None
    for s in stamps:  # brute force restatement of the rule
        if last is None or s > last or s < last - NS:
            expected.append(s)
            last = s
    assert admitted == expected
