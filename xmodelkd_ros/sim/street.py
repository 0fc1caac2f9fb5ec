"""``Street``: one seed's world as the sensors query it -- primitives near a position, the
ground band and height under any (x, y).

Why apart from the scene description and the generators: this is the only stateful part
(a cache of generated chunks, so consecutive frames do not regenerate the same chunks),
and the only place that combines static chunks with the movers of a given time.
"""

from __future__ import annotations

import numpy as np

from .generators import make_chunk, mover_prims
from .scene import (
    CHUNK,
    G_BEYOND_OTHER,
    G_BEYOND_TERRAIN,
    G_MARK,
    G_PARK,
    G_ROAD,
    G_SIDEWALK,
    G_VERGE,
    GROUND_RAISED,
    GROUND_REFLECT,
    Chunk,
    Prim,
    StreetParams,
    seeded_rng,
)


class Street:
    """The world's static part with a chunk cache, plus access to movers."""

    def __init__(self, seed: int, cache_size: int = 64) -> None:
        self.seed = int(seed)
        self.params = StreetParams.draw(self.seed)
        #: per-band LiDAR reflectivity of this street (weakly informative, varies by street)
        jitter = seeded_rng(self.seed, -11).normal(
            0.0, self.params.reflect_jitter, len(GROUND_REFLECT)
        )
        self.ground_reflect = (GROUND_REFLECT + jitter).astype(np.float32)
        self._cache: dict[int, Chunk] = {}
        self._cache_size = cache_size

    def chunk(self, index: int) -> Chunk:
        c = self._cache.get(index)
        if c is None:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            c = self._cache[index] = make_chunk(self.seed, index, self.params)
        return c

    def chunk_range(self, x_lo: float, x_hi: float) -> range:
        return range(int(np.floor(x_lo / CHUNK)), int(np.floor(x_hi / CHUNK)) + 1)

    def prims(self, t: float, x_lo: float, x_hi: float, ego_x: float) -> list[Prim]:
        """All primitives (static and moving at time ``t``) near ``[x_lo, x_hi]``."""
        out: list[Prim] = []
        for i in self.chunk_range(x_lo, x_hi):
            out += self.chunk(i).prims
        out += mover_prims(self.seed, t, x_lo, x_hi, ego_x, self.sidewalk, self.params)
        return out

    def sidewalk(self, x: float, side: float) -> tuple[float, float]:
        """(lateral middle, ground height) of the sidewalk at ``x`` on ``side`` (-1 right)."""
        e = self.chunk(int(np.floor(x / CHUNK))).edges[0 if side < 0 else 1]
        return float(side * (e[1] + e[2]) / 2), float(e[4])

    def edge_table(self, x_lo: float, x_hi: float) -> tuple[int, np.ndarray]:
        """(first chunk index, (n_chunks, 2, 5) band edges) covering ``[x_lo, x_hi]``."""
        r = self.chunk_range(x_lo, x_hi)
        return r.start, np.stack([self.chunk(i).edges for i in r])

    def ground(
        self, x: np.ndarray, y: np.ndarray, first: int, table: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ground band code ``G_*``, ground height) at world (x, y)."""
        ci = np.clip(np.floor(x / CHUNK).astype(np.int64) - first, 0, len(table) - 1)
        side = (y > 0).astype(np.int64)
        e = table[ci, side]  # (N, 5)
        ay = np.abs(y)
        P = self.params
        band = np.full(x.shape, G_BEYOND_TERRAIN, dtype=np.int16)
        band[e[:, 3] > 0.5] = G_BEYOND_OTHER
        band[ay < e[:, 2]] = G_SIDEWALK
        band[ay < e[:, 1]] = G_VERGE
        band[ay < e[:, 0]] = G_PARK
        road = ay < P.road_half
        band[road] = G_ROAD
        # Lane markings: solid edge lines, a solid line between the directions (when the
        # road has lanes both ways), dashed lines between lanes of one direction.
        yr = y + P.road_half  # distance from the right road edge
        w = P.lane_width
        k = np.round(yr / w)
        near = np.abs(yr - k * w) < 0.075
        dashed = np.mod(x, 9.0) < 3.0
        between = (k >= 1) & (k <= P.lanes - 1)
        solid_mid = (k == P.right_lanes) & (P.lanes > P.right_lanes)
        mark = road & (
            (near & between & (dashed | solid_mid))
            | ((ay > P.road_half - 0.3) & (ay < P.road_half - 0.15))
        )
        band[mark] = G_MARK
        height = np.where(GROUND_RAISED[band], e[:, 4], 0.0).astype(np.float32)
        return band, height

    def ground_band(
        self, x: np.ndarray, y: np.ndarray, first: int, table: np.ndarray
    ) -> np.ndarray:
        """Ground band code (``G_*``) at world (x, y)."""
        return self.ground(x, y, first, table)[0]
