"""LiDAR-anchored multi-camera synchronizer and scan ordering (pure Python, no ROS).

Why not ``message_filters``: it has no wheel, and its ApproximateTime policy treats
all topics symmetrically, so one dead camera stalls the LiDAR output. Here the scan
is the anchor: every scan is emitted (with whichever camera frames match it) and a
dead camera only shows up in :attr:`SyncedFrame.missing` and in :meth:`stats`.

The node segments and publishes a scan *before* it enters the synchronizer (the
student needs no camera): :class:`ScanOrder` admits scans in stamp order on arrival,
and :class:`LidarAnchoredSync` pairs the already segmented scans with camera frames for
overlays and camera status, so waiting for a camera never delays a labeled cloud.

Rules (all times in integer nanoseconds; ``now_ns`` comes from the caller's steady
clock so tests drive time explicitly):

* For each scan and camera, the candidate is the buffered image nearest to the scan
  stamp with ``|image - scan| <= slop`` (ties: the earlier image).
* A camera's choice is *final* once its stream has passed the scan: it delivered an
  image later than ``scan + slop``, or an image at/after the scan that is no farther
  than the current candidate (streams are assumed roughly in order, so nothing nearer
  can come). A scan is emitted as soon as every camera is final, or when
  ``max_wait`` has passed since it arrived (missing cameras flagged).
* Frames are emitted in scan-stamp order. A waiting scan blocks later ones until it
  is final or expires; when a later scan expires, the earlier ones go out with it.
* A scan stamped at or before the last emitted one (duplicate or out of order), or
  equal to a waiting scan, is **dropped and counted** (``scans_dropped_late`` /
  ``scans_duplicate``): re-emitting the past would publish out-of-order labels.
* A scan more than ``jump_back_s`` older than the newest scan seen means the time
  source jumped back (a looping bag, sim reset): waiting scans are flushed (emitted
  with what they have), the emitted-order state restarts, and camera buffers far
  ahead of the new scan are cleared; counted in ``resets``. An image that far
  behind its camera's newest resets that camera's buffer (``cameras[c].resets``).
* Bounds: at most ``max_pending_scans`` waiting scans (overflow forces the oldest
  out, counted in ``scans_forced_overflow``) and ``camera_buffer`` images per camera
  (oldest stamps evicted). Images too old to match any future scan are discarded.
* With zero cameras every scan is emitted immediately.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

NS = 1_000_000_000


@dataclass(frozen=True)
class SyncedFrame:
    """One scan with the camera frames matched to it.

    ``images`` maps camera name -> (image stamp_ns, image) for matched cameras;
    ``missing`` lists cameras without a frame within slop. ``expired`` is True when
    the frame went out because of max_wait / overflow / reset rather than because
    every camera's choice was final.
    """

    stamp_ns: int
    scan: Any
    images: dict[str, tuple[int, Any]]
    missing: tuple[str, ...]
    expired: bool = False

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass
class CameraStats:
    """Per-camera diagnostics counters."""

    received: int = 0
    duplicates: int = 0
    discarded_old: int = 0
    evicted: int = 0
    resets: int = 0
    matched: int = 0
    missed: int = 0
    last_stamp_ns: int | None = None
    last_receive_ns: int | None = None
    alive: bool = False


@dataclass
class SyncStats:
    """Synchronizer-wide diagnostics counters (a snapshot)."""

    scans_received: int = 0
    scans_emitted: int = 0
    scans_complete: int = 0
    scans_expired: int = 0
    scans_forced_overflow: int = 0
    scans_dropped_late: int = 0
    scans_duplicate: int = 0
    resets: int = 0
    pending: int = 0
    cameras: dict[str, CameraStats] = field(default_factory=dict)


@dataclass
class _Pending:
    stamp: int
    scan: Any
    arrival: int


class _CameraBuffer:
    """Images of one camera sorted by stamp (bounded), plus its stream position."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.stamps: list[int] = []
        self.images: list[Any] = []
        self.newest: int | None = None  # highest stamp received since the last reset

    def clear(self) -> None:
        self.stamps.clear()
        self.images.clear()
        self.newest = None

    def insert(self, stamp: int, image: Any) -> tuple[bool, int]:
        """Insert (replacing an equal stamp); returns (was_duplicate, evicted_count)."""
        i = bisect.bisect_left(self.stamps, stamp)
        if self.newest is None or stamp > self.newest:
            self.newest = stamp
        if i < len(self.stamps) and self.stamps[i] == stamp:
            self.images[i] = image
            return True, 0
        self.stamps.insert(i, stamp)
        self.images.insert(i, image)
        evicted = 0
        while len(self.stamps) > self.capacity:
            del self.stamps[0]
            del self.images[0]
            evicted += 1
        return False, evicted

    def prune_before(self, stamp: int) -> None:
        i = bisect.bisect_left(self.stamps, stamp)
        if i:
            del self.stamps[:i]
            del self.images[:i]

    def nearest(self, stamp: int, slop: int) -> int | None:
        """Index of the image nearest to ``stamp`` within ``slop`` (ties: earlier)."""
        i = bisect.bisect_left(self.stamps, stamp)
        best: int | None = None
        best_d = slop + 1
        for j in (i - 1, i):  # the earlier one first, so it wins ties
            if 0 <= j < len(self.stamps):
                d = abs(self.stamps[j] - stamp)
                if d < best_d:
                    best, best_d = j, d
        return best

    def is_final(self, stamp: int, slop: int) -> bool:
        """No image arriving in stamp order can beat the current choice any more."""
        if self.newest is None:
            return False
        if self.newest > stamp + slop:
            return True
        if self.newest < stamp:
            return False
        j = self.nearest(stamp, slop)
        return j is not None and abs(self.stamps[j] - stamp) <= self.newest - stamp


@dataclass
class OrderStats:
    """:class:`ScanOrder` counters (a snapshot)."""

    admitted: int = 0
    dropped_late: int = 0
    duplicate: int = 0
    resets: int = 0


class ScanOrder:
    """Admits scans in stamp order, before any processing (rules as in the module doc).

    A scan stamped at the last admitted one is a duplicate, one stamped before it is
    late: both are dropped and counted, since segmenting them would publish labels out
    of order. A scan more than ``jump_back_s`` older than the last admitted one means
    the time source jumped back (a looping bag, a sim reset): it is admitted and the
    order starts over (counted in ``resets``).
    """

    def __init__(self, jump_back_s: float = 1.0) -> None:
        if jump_back_s <= 0:
            raise ValueError("jump_back_s must be > 0")
        self.jump_back = round(jump_back_s * NS)
        self._last: int | None = None
        self._stats = OrderStats()

    def admit(self, stamp_ns: int) -> bool:
        """True when the scan stamped ``stamp_ns`` should be processed."""
        stamp, st = int(stamp_ns), self._stats
        if self._last is not None and stamp <= self._last:
            if stamp < self._last - self.jump_back:
                st.resets += 1
            elif stamp == self._last:
                st.duplicate += 1
                return False
            else:
                st.dropped_late += 1
                return False
        self._last = stamp
        st.admitted += 1
        return True

    def stats(self) -> OrderStats:
        return OrderStats(**self._stats.__dict__)


class LidarAnchoredSync:
    """Pairs each LiDAR scan with the nearest frame of every camera (see module doc).

    Call :meth:`add_scan` / :meth:`add_image` from the subscription callbacks and
    :meth:`poll` from a timer (period well below ``max_wait_s``); each returns the
    frames ready to process, oldest first.
    """

    def __init__(
        self,
        camera_names: Iterable[str],
        slop_s: float = 0.05,
        max_wait_s: float = 0.1,
        max_pending_scans: int = 4,
        camera_buffer: int = 16,
        *,
        jump_back_s: float = 1.0,
        camera_timeout_s: float = 1.0,
    ) -> None:
        self.cameras: tuple[str, ...] = tuple(camera_names)
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"duplicate camera names in {self.cameras}")
        if slop_s < 0 or max_wait_s < 0 or jump_back_s <= 0:
            raise ValueError("slop_s and max_wait_s must be >= 0, jump_back_s > 0")
        if max_pending_scans < 1 or camera_buffer < 1:
            raise ValueError("max_pending_scans and camera_buffer must be >= 1")
        self.slop = round(slop_s * NS)
        self.max_wait = round(max_wait_s * NS)
        self.jump_back = round(jump_back_s * NS)
        self.camera_timeout = round(camera_timeout_s * NS)
        self.max_pending = int(max_pending_scans)
        self._buffers = {c: _CameraBuffer(int(camera_buffer)) for c in self.cameras}
        self._cam_stats = {c: CameraStats() for c in self.cameras}
        self._pending: list[_Pending] = []  # sorted by stamp
        self._last_emitted: int | None = None
        self._newest_scan: int | None = None
        self._stats = SyncStats()

    # ------------------------------------------------------------------ inputs

    def add_scan(self, stamp_ns: int, scan: Any, now_ns: int) -> list[SyncedFrame]:
        """A new LiDAR scan; returns the frames that became ready (possibly this one)."""
        stamp = int(stamp_ns)
        st = self._stats
        st.scans_received += 1
        out: list[SyncedFrame] = []
        if self._newest_scan is not None and stamp < self._newest_scan - self.jump_back:
            out.extend(self._reset(stamp))
        elif self._last_emitted is not None and stamp <= self._last_emitted:
            st.scans_dropped_late += 1
            return self._drain(int(now_ns))
        stamps = [p.stamp for p in self._pending]
        i = bisect.bisect_left(stamps, stamp)
        if i < len(stamps) and stamps[i] == stamp:
            st.scans_duplicate += 1
            out.extend(self._drain(int(now_ns)))
            return out
        self._pending.insert(i, _Pending(stamp, scan, int(now_ns)))
        if self._newest_scan is None or stamp > self._newest_scan:
            self._newest_scan = stamp
        while len(self._pending) > self.max_pending:
            st.scans_forced_overflow += 1
            out.append(self._emit(self._pending.pop(0), expired=True))
        out.extend(self._drain(int(now_ns)))
        return out

    def add_image(self, camera: str, stamp_ns: int, image: Any, now_ns: int) -> list[SyncedFrame]:
        """A camera frame; returns the frames that became ready."""
        if camera not in self._buffers:
            raise KeyError(f"unknown camera {camera!r}; configured: {self.cameras}")
        name = str(camera)
        stamp = int(stamp_ns)
        buf = self._buffers[name]
        cs = self._cam_stats[name]
        cs.received += 1
        cs.last_stamp_ns = stamp
        cs.last_receive_ns = int(now_ns)
        if buf.newest is not None and stamp < buf.newest - self.jump_back:
            buf.clear()  # this camera's time went backwards (bag loop): start over
            cs.resets += 1
        elif (
            self._last_emitted is not None
            and self._last_emitted - self.jump_back <= stamp < self._last_emitted - self.slop
        ):
            cs.discarded_old += 1  # can never match: older scans are dropped
            if buf.newest is None or stamp > buf.newest:
                buf.newest = stamp
            return self._drain(int(now_ns))
        dup, evicted = buf.insert(stamp, image)
        cs.duplicates += int(dup)
        cs.evicted += evicted
        return self._drain(int(now_ns))

    def poll(self, now_ns: int) -> list[SyncedFrame]:
        """Emit scans whose max_wait has passed (call from a timer)."""
        return self._drain(int(now_ns))

    def flush(self) -> list[SyncedFrame]:
        """Emit every waiting scan now with what it has (e.g. at shutdown)."""
        out = []
        for p in self._pending:
            ready = self._ready(p)
            self._stats.scans_expired += int(not ready)
            out.append(self._emit(p, expired=not ready))
        self._pending.clear()
        return out

    # ------------------------------------------------------------------ state

    def stats(self, now_ns: int | None = None) -> SyncStats:
        """A snapshot of the counters; ``alive`` per camera needs ``now_ns``."""
        st = self._stats
        cams = {}
        for c, cs in self._cam_stats.items():
            alive = (
                now_ns is not None
                and cs.last_receive_ns is not None
                and 0 <= int(now_ns) - cs.last_receive_ns <= self.camera_timeout
            )
            cams[c] = CameraStats(**{**cs.__dict__, "alive": bool(alive)})
        return SyncStats(**{**st.__dict__, "pending": len(self._pending), "cameras": cams})

    @property
    def pending_stamps(self) -> list[int]:
        """Stamps of the scans still waiting (oldest first)."""
        return [p.stamp for p in self._pending]

    def buffered(self, camera: str) -> list[int]:
        """Stamps of the images buffered for ``camera`` (oldest first)."""
        return list(self._buffers[camera].stamps)

    # ------------------------------------------------------------------ internals

    def _reset(self, stamp: int) -> list[SyncedFrame]:
        out = self.flush()
        # Buffers far ahead of the new scan hold the old loop; ones already behind it
        # have reset themselves on their own jump and hold the new loop: keep those.
        for b in self._buffers.values():
            if b.newest is not None and b.newest > stamp + self.jump_back:
                b.clear()
        self._last_emitted = None
        self._newest_scan = None
        self._stats.resets += 1
        return out

    def _ready(self, p: _Pending) -> bool:
        return all(b.is_final(p.stamp, self.slop) for b in self._buffers.values())

    def _expired(self, p: _Pending, now: int) -> bool:
        # now < arrival means the caller's clock went back: do not wait forever.
        return now - p.arrival >= self.max_wait or now < p.arrival

    def _drain(self, now: int) -> list[SyncedFrame]:
        out: list[SyncedFrame] = []
        last_expired = -1
        for i, p in enumerate(self._pending):
            if self._expired(p, now):
                last_expired = i
        for _ in range(last_expired + 1):  # earlier scans go out with an expired later one
            p = self._pending.pop(0)
            ready = self._ready(p)
            self._stats.scans_expired += int(not ready)
            out.append(self._emit(p, expired=not ready))
        while self._pending and self._ready(self._pending[0]):
            out.append(self._emit(self._pending.pop(0), expired=False))
        return out

    def _emit(self, p: _Pending, expired: bool) -> SyncedFrame:
        images: dict[str, tuple[int, Any]] = {}
        missing: list[str] = []
        for c, b in self._buffers.items():
            j = b.nearest(p.stamp, self.slop)
            if j is None:
                missing.append(c)
                self._cam_stats[c].missed += 1
            else:
                images[c] = (b.stamps[j], b.images[j])
                self._cam_stats[c].matched += 1
        st = self._stats
        st.scans_emitted += 1
        st.scans_complete += int(not missing)
        if self._last_emitted is None or p.stamp > self._last_emitted:
            self._last_emitted = p.stamp
        # Images older than last_emitted - slop can never match a future scan, unless
        # the camera already looped (its stream is far behind the scans): keep those.
        for b in self._buffers.values():
            if b.newest is not None and b.newest >= self._last_emitted - self.jump_back:
                b.prune_before(self._last_emitted - self.slop)
        return SyncedFrame(p.stamp, p.scan, images, tuple(missing), expired)
