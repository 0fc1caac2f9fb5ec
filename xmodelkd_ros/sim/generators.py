"""What fills the street: object templates, each chunk's static content, the moving actors.

Why apart from the scene description: this is the part that spends random numbers, and
the order of those draws *is* the world. Every chunk draws from its own stream
``seeded_rng(seed, chunk index)`` in a fixed order (both sides, right first; on each side
the band edges, parked vehicles, trees and bushes, street furniture, people and
two-wheelers, then buildings or a fence), so reordering or adding a draw changes every
seed's world, and with it the training data and the demo's numbers. Moving actors use one
short stream per slot (:func:`_hash01`), so they are closed-form functions of time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .scene import (
    BOX,
    CHUNK,
    CYL,
    ELL,
    TX_BARK,
    TX_CLOTH,
    TX_FACADE,
    TX_FENCE,
    TX_LEAVES,
    TX_METAL,
    TX_SIGN,
    TX_SKIN,
    TX_VEHICLE,
    Chunk,
    Prim,
    StreetParams,
    seeded_rng,
)

#: Colour palettes the generators pick from (building facades, vehicles, clothes).
FACADES = [
    (200, 180, 150), (170, 90, 70), (220, 210, 190), (120, 120, 130), (230, 200, 120),
    (150, 160, 170), (190, 140, 110), (240, 235, 225),
]  # fmt: skip
CAR_COLORS = [
    (200, 30, 30), (30, 60, 160), (230, 230, 230), (20, 20, 25), (150, 150, 155),
    (40, 110, 60), (210, 180, 40), (100, 40, 120),
]  # fmt: skip
CLOTHES = [
    (40, 40, 120),
    (150, 30, 30),
    (30, 30, 30),
    (200, 200, 60),
    (60, 120, 60),
    (220, 120, 40),
]


def _inst(chunk: int, local: int) -> int:
    """Instance id stable across frames; fits in 16 bits (chunk ids wrap)."""
    return 1 + (chunk % 900) * 64 + local


def vehicle_prims(
    x: float, y: float, yaw: float, kind: str, raw_body: int, instance: int, color, seed: int
) -> list[Prim]:
    """Car / truck / bus as a body box plus a cabin (or cargo) box."""
    c, s = np.cos(yaw), np.sin(yaw)
    refl = 0.45

    def box(dx, L, W, z0, z1, raw, col, tex=TX_VEHICLE):
        cx, cy = x + c * dx, y + s * dx
        return Prim(
            BOX, np.array([cx, cy, (z0 + z1) / 2]), np.array([L / 2, W / 2, (z1 - z0) / 2]),
            raw, instance, col, tex, refl, yaw, seed,
        )  # fmt: skip

    if kind == "car":
        return [
            box(0.0, 4.3, 1.8, 0.25, 0.95, raw_body, color),
            box(-0.3, 2.3, 1.6, 0.95, 1.5, raw_body, (40, 45, 55)),
        ]
    if kind == "truck":
        return [
            box(2.8, 2.0, 2.4, 0.4, 2.8, raw_body, color),
            box(-1.2, 6.0, 2.5, 0.6, 3.5, raw_body, (215, 215, 210)),
        ]
    # bus (other-vehicle)
    return [
        box(0.0, 11.0, 2.5, 0.35, 1.4, raw_body, color),
        box(0.0, 11.0, 2.5, 1.4, 3.1, raw_body, (50, 60, 70)),
    ]


def rider_prims(
    x: float, y: float, yaw: float, bike_raw: int, rider_raw: int, instance: int, seed: int
) -> list[Prim]:
    """Bicycle / motorcycle with an optional rider (rider_raw 0 = parked, no rider)."""
    motor = bike_raw == 15
    L, H = (2.0, 1.1) if motor else (1.7, 1.0)
    out = [
        Prim(BOX, np.array([x, y, H / 2]), np.array([L / 2, 0.22 if motor else 0.1, H / 2]),
             bike_raw, instance, (30, 30, 35) if motor else (60, 60, 160), TX_METAL, 0.4, yaw, seed)
    ]  # fmt: skip
    if rider_raw:
        out.append(
            Prim(BOX, np.array([x, y, H + 0.35]), np.array([0.25, 0.2, 0.4]), rider_raw,
                 instance, CLOTHES[seed % len(CLOTHES)], TX_CLOTH, 0.3, yaw, seed)
        )  # fmt: skip
        out.append(
            Prim(ELL, np.array([x, y, H + 0.9]), np.array([0.13, 0.13, 0.15]), rider_raw,
                 instance, (200, 160, 130), TX_SKIN, 0.3, 0.0, seed)
        )  # fmt: skip
    return out


def person_prims(
    x: float, y: float, yaw: float, raw: int, instance: int, seed: int, z0: float = 0.0
) -> list[Prim]:
    """Pedestrian: legs+torso box and a head ellipsoid, standing at height ``z0``."""
    return [
        Prim(BOX, np.array([x, y, z0 + 0.72]), np.array([0.18, 0.25, 0.72]), raw, instance,
             CLOTHES[seed % len(CLOTHES)], TX_CLOTH, 0.28, yaw, seed),
        Prim(ELL, np.array([x, y, z0 + 1.6]), np.array([0.12, 0.12, 0.14]), raw, instance,
             (205, 165, 135), TX_SKIN, 0.28, 0.0, seed),
    ]  # fmt: skip


@dataclass
class _InstanceIds:
    """Instance ids handed out within one chunk, in order (shared by both of its sides)."""

    chunk: int
    last: int = 0

    def next(self) -> int:
        self.last += 1
        return _inst(self.chunk, self.last)


@dataclass
class _ChunkSide:
    """One side of a chunk being populated: its bands (street frame, |y|) and where it lies.

    ``rng`` is the chunk's single stream: the side generators below must be called in
    :func:`make_chunk`'s order.
    """

    rng: np.random.Generator
    P: StreetParams
    x0: float  #: chunk start along x (m)
    sg: float  #: -1.0 right of the road (y < 0), +1.0 left
    parking: bool
    park_w: float
    e_park: float  #: outer |y| of the parking lane (the road edge without one)
    e_verge: float  #: outer |y| of the grass verge
    e_side: float  #: outer |y| of the sidewalk
    beyond_other: bool  #: the area beyond the sidewalk is a plaza (other-ground)
    level: float  #: ground height of the sidewalk, verge and beyond

    def y(self, d: float) -> float:
        """World y of lateral distance ``d`` from the centre line on this side."""
        return self.sg * d

    def edge_row(self) -> tuple[float, float, float, float, float]:
        """This side's row of :attr:`Chunk.edges`."""
        return (self.e_park, self.e_verge, self.e_side, 1.0 if self.beyond_other else 0.0,
                self.level)  # fmt: skip


def _draw_side(rng: np.random.Generator, P: StreetParams, side: int, x0: float) -> _ChunkSide:
    """Band layout of one chunk side (0 = right): parking, verge, sidewalk, beyond, curb."""
    parking = rng.random() < P.park[side]
    park_w = rng.uniform(2.1, 2.6)
    e_park = P.road_half + (park_w if parking else 0.0)
    e_verge = e_park + (rng.uniform(0.8, 2.2) if rng.random() < P.verge else 0.0)
    e_side = e_verge + rng.uniform(*P.sidewalk)
    beyond_other = rng.random() < P.other_ground
    level = P.curb if rng.random() < P.raised[side] else 0.0
    return _ChunkSide(rng, P, x0, -1.0 if side == 0 else 1.0, parking, park_w, e_park, e_verge,
                      e_side, beyond_other, level)  # fmt: skip


def _parked_vehicles(s: _ChunkSide, ids: _InstanceIds) -> list[Prim]:
    """Cars, trucks and buses along the side's parking lane (none without one)."""
    if not s.parking:
        return []
    rng, P, x0 = s.rng, s.P, s.x0
    prims: list[Prim] = []
    x = x0 + rng.uniform(0.5, 3.0)
    y_park = P.road_half + s.park_w / 2
    while x < x0 + CHUNK - 2.5:
        r = rng.random()
        if r < 0.85 * P.parked_fill:
            inst = ids.next()
            col = CAR_COLORS[rng.integers(len(CAR_COLORS))]
            s_obj = int(rng.integers(1 << 30))
            prims += vehicle_prims(x + 2.2, s.y(y_park), 0.0, "car", 10, inst, col, s_obj)
            x += 4.3 + rng.uniform(0.8, 2.5)
        elif r < P.parked_fill and x < x0 + CHUNK - 8:
            inst = ids.next()
            col = CAR_COLORS[rng.integers(len(CAR_COLORS))]
            kind, raw = ("truck", 18) if rng.random() < 0.6 else ("bus", 20)
            s_obj = int(rng.integers(1 << 30))
            prims += vehicle_prims(x + 4.0, s.y(y_park + 0.05), 0.0, kind, raw, inst, col, s_obj)
            x += (8.0 if kind == "truck" else 11.5) + rng.uniform(1.0, 3.0)
        else:
            x += rng.uniform(3.0, 6.0)
    return prims


def _greenery(s: _ChunkSide) -> list[Prim]:
    """Trees on the verge (or just beyond the sidewalk); a bush in a wide verge's grass."""
    rng, x0, level = s.rng, s.x0, s.level
    e_park, e_verge, e_side = s.e_park, s.e_verge, s.e_side
    prims: list[Prim] = []
    for _ in range(rng.poisson(s.P.trees)):
        d = (e_park + e_verge) / 2 if e_verge > e_park + 0.5 else e_side + rng.uniform(1.0, 3.0)
        x = x0 + rng.uniform(1.0, CHUNK - 1.0)
        h = rng.uniform(2.0, 3.2)
        r = rng.uniform(0.12, 0.25)
        prims.append(Prim(CYL, np.array([x, s.y(d), (level + h) / 2]),
                          np.array([r, r, (h - level) / 2]), 71, 0, (95, 65, 40), TX_BARK, 0.35,
                          seed=int(rng.integers(1 << 30))))  # fmt: skip
        cr = rng.uniform(1.3, 2.4)
        prims.append(Prim(ELL, np.array([x, s.y(d), h + cr * 0.8]),
                          np.array([cr, cr, cr * 1.1]), 70, 0, (45, 105, 35), TX_LEAVES, 0.4,
                          seed=int(rng.integers(1 << 30))))  # fmt: skip
    if e_verge > e_park + 0.9 and rng.random() < 0.4:
        r = rng.uniform(0.3, (e_verge - e_park) / 2)
        prims.append(Prim(ELL, np.array([x0 + rng.uniform(1, CHUNK - 1),
                                         s.y((e_park + e_verge) / 2), level + r * 0.5]),
                          np.array([r * 1.5, r, r * 0.6]), 70, 0, (55, 100, 40), TX_LEAVES,
                          0.4, seed=int(rng.integers(1 << 30))))  # fmt: skip
    return prims


def _street_furniture(s: _ChunkSide) -> list[Prim]:
    """A street light pole at the sidewalk's road-side edge; a traffic sign (thin pole plus
    a plate facing the traffic)."""
    rng, x0, level = s.rng, s.x0, s.level
    prims: list[Prim] = []
    if rng.random() < 0.7:
        x = x0 + rng.uniform(0.5, CHUNK - 0.5)
        h = rng.uniform(5.5, 8.0)
        prims.append(Prim(CYL, np.array([x, s.y(s.e_verge + 0.3), (level + h) / 2]),
                          np.array([0.1, 0.1, (h - level) / 2]), 80, 0, (120, 125, 130),
                          TX_METAL, 0.5))  # fmt: skip
    if rng.random() < 0.5:
        x = x0 + rng.uniform(0.5, CHUNK - 0.5)
        y = s.y(s.e_verge + 0.5)
        prims.append(Prim(CYL, np.array([x, y, (level + 2.2) / 2]),
                          np.array([0.04, 0.04, (2.2 - level) / 2]), 80, 0, (150, 150, 150),
                          TX_METAL, 0.5))  # fmt: skip
        col = [(200, 20, 20), (20, 60, 180), (240, 200, 0)][rng.integers(3)]
        prims.append(Prim(BOX, np.array([x, y, 2.5]), np.array([0.03, 0.35, 0.35]),
                          81, 0, col, TX_SIGN, 0.95))  # fmt: skip
    return prims


def _sidewalk_users(s: _ChunkSide, ids: _InstanceIds) -> list[Prim]:
    """Pedestrians standing on the sidewalk; a parked bicycle or motorcycle."""
    rng, x0, level = s.rng, s.x0, s.level
    prims: list[Prim] = []
    for _ in range(rng.poisson(s.P.walkers)):
        inst = ids.next()
        yp = s.y(rng.uniform(s.e_verge + 0.4, max(s.e_verge + 0.5, s.e_side - 0.3)))
        yaw = rng.uniform(-np.pi, np.pi)
        s_obj = int(rng.integers(1 << 30))
        prims += person_prims(x0 + rng.uniform(0, CHUNK), yp, yaw, 30, inst, s_obj, level)
    if rng.random() < s.P.two_wheelers:
        inst = ids.next()
        raw = 11 if rng.random() < 0.55 else 15
        for p in rider_prims(x0 + rng.uniform(1, CHUNK - 1), s.y(s.e_side - 0.5), 0.0, raw, 0,
                             inst, int(rng.integers(1 << 30))):  # fmt: skip
            p.center[2] += level
            prims.append(p)
    return prims


def _beyond_sidewalk(s: _ChunkSide) -> list[Prim]:
    """A row of buildings set back from the sidewalk, or else a fence and bushes."""
    rng, P, x0, level = s.rng, s.P, s.x0, s.level
    prims: list[Prim] = []
    setback = s.e_side + rng.uniform(*P.setback)
    if rng.random() < P.buildings:
        x = x0 + rng.uniform(0.0, 2.0)
        while x < x0 + CHUNK - 3:
            L = min(rng.uniform(7, 18), x0 + CHUNK - x)
            depth = rng.uniform(8, 16)
            H = rng.uniform(5, 18)
            col = FACADES[rng.integers(len(FACADES))]
            prims.append(Prim(BOX, np.array([x + L / 2, s.y(setback + depth / 2), H / 2]),
                              np.array([L / 2, depth / 2, H / 2]), 50, 0, col, TX_FACADE, 0.3,
                              seed=int(rng.integers(1 << 30))))  # fmt: skip
            x += L + rng.uniform(0.0, 3.0)
        return prims
    if rng.random() < 0.75:
        fh = rng.uniform(0.9, 2.0)
        prims.append(Prim(BOX, np.array([x0 + CHUNK / 2, s.y(setback), level + fh / 2]),
                          np.array([CHUNK / 2 - 0.3, 0.04, fh / 2]), 51, 0, (140, 100, 60),
                          TX_FENCE, 0.3, seed=int(rng.integers(1 << 30))))  # fmt: skip
    for _ in range(rng.integers(1, 4)):
        r = rng.uniform(0.6, 1.5)
        xb = x0 + rng.uniform(0, CHUNK)
        prims.append(Prim(ELL, np.array([xb, s.y(setback + r + 0.3), level + r * 0.6]),
                          np.array([r, r, r * 0.7]), 70, 0, (50, 95, 40), TX_LEAVES, 0.4,
                          seed=int(rng.integers(1 << 30))))  # fmt: skip
    return prims


def make_chunk(seed: int, index: int, params: StreetParams | None = None) -> Chunk:
    """Generate chunk ``index`` of the world with ``seed`` (layout ``params``, default: the
    seed's own :meth:`StreetParams.draw`)."""
    P = params if params is not None else StreetParams.draw(seed)
    rng = seeded_rng(seed, index)
    x0 = index * CHUNK
    edges = np.zeros((2, 5), dtype=np.float32)
    prims: list[Prim] = []
    ids = _InstanceIds(index)
    for side in (0, 1):
        s = _draw_side(rng, P, side, x0)
        edges[side] = s.edge_row()
        prims += _parked_vehicles(s, ids)
        prims += _greenery(s)
        prims += _street_furniture(s)
        prims += _sidewalk_users(s, ids)
        prims += _beyond_sidewalk(s)
    return Chunk(index, edges, prims)


def _hash01(seed: int, k: int, salt: int) -> float:
    """One uniform [0, 1) number for property ``salt`` of actor slot ``k``."""
    return float(seeded_rng(seed, k, salt).random())


def mover_prims(
    seed: int,
    t: float,
    x_lo: float,
    x_hi: float,
    ego_x: float,
    sidewalk: Callable[[float, float], tuple[float, float]] | None = None,
    params: StreetParams | None = None,
) -> list[Prim]:
    """Moving actors at time ``t`` (s) whose position falls in ``[x_lo, x_hi]``.

    Oncoming traffic (cars, buses, motorcyclists) in the oncoming lanes, a lead and a
    following car in the ego lane keeping the ego's speed, two-wheelers on the right road edge
    and pedestrians walking back and forth on the sidewalks. ``sidewalk(x, side)`` gives the
    (y, ground height) a walker uses; ``params`` the street layout (default: drawn from seed).
    """
    P = params if params is not None else StreetParams.draw(seed)
    out: list[Prim] = []
    oncoming = list(range(P.right_lanes, P.lanes))
    # Oncoming lanes: slot k sits at X_k - v t.
    v_on, S = 11.0, 28.0
    k_lo = int(np.floor((x_lo + v_on * t) / S)) - 1
    k_hi = int(np.ceil((x_hi + v_on * t) / S)) + 1
    for k in range(k_lo, k_hi + 1):
        h = _hash01(seed, k, 1)
        if h > P.traffic:
            continue  # empty slot
        h /= P.traffic
        x = k * S + 8.0 * _hash01(seed, k, 2) - v_on * t
        if not x_lo <= x <= x_hi:
            continue
        y = P.lane_y(oncoming[int(_hash01(seed, k, 12) * len(oncoming))])
        inst = 60001 + (k % 2000)
        col = CAR_COLORS[int(_hash01(seed, k, 3) * len(CAR_COLORS))]
        if h < 0.62:
            out += vehicle_prims(x, y, np.pi, "car", 252, inst, col, k)
        elif h < 0.72:
            out += vehicle_prims(x, y, np.pi, "truck", 258, inst, col, k)
        elif h < 0.80:
            out += vehicle_prims(x, y, np.pi, "bus", 257, inst, (230, 180, 30), k)
        else:
            out += rider_prims(x, y, np.pi, 15, 255, inst, k)
    # Lead / following car in the ego lane, moving with the ego.
    for j, dx in enumerate((16.0 + 10 * _hash01(seed, 0, 4), -(14.0 + 10 * _hash01(seed, 0, 5)))):
        x = ego_x + dx + 2.0 * np.sin(0.2 * t + j)
        if x_lo <= x <= x_hi:
            col = CAR_COLORS[int(_hash01(seed, j, 6) * len(CAR_COLORS))]
            out += vehicle_prims(x, P.ego_y, 0.0, "car", 252, 63001 + j, col, 77 + j)
    # Cyclists and slow motorcyclists on the right road edge, slower than the ego.
    v_cy, Sc = 4.5, 45.0
    k_lo = int(np.floor((x_lo - v_cy * t) / Sc)) - 1
    k_hi = int(np.ceil((x_hi - v_cy * t) / Sc)) + 1
    for k in range(k_lo, k_hi + 1):
        if _hash01(seed, k, 7) > P.cyclists:
            continue
        x = k * Sc + v_cy * t
        if x_lo <= x <= x_hi:
            bike, rider = (11, 253) if _hash01(seed, k, 13) < 0.5 else (15, 255)
            out += rider_prims(x, -(P.road_half - 0.6), 0.0, bike, rider, 63101 + (k % 400), k)
    # Walkers: pacing along a sidewalk between two points (bounded, so chunk-local).
    Sw = 25.0
    k_lo, k_hi = int(np.floor(x_lo / Sw)) - 1, int(np.ceil(x_hi / Sw)) + 1
    for k in range(k_lo, k_hi + 1):
        if _hash01(seed, k, 8) < 0.4:
            continue
        side = -1.0 if _hash01(seed, k, 9) < 0.5 else 1.0
        phase = _hash01(seed, k, 10) * 2 * np.pi
        span = 8.0
        s = np.sin(1.3 / span * t + phase)
        x = k * Sw + span * s
        yaw = 0.0 if np.cos(1.3 / span * t + phase) > 0 else np.pi
        if x_lo <= x <= x_hi:
            if sidewalk is None:
                y, z0 = side * (P.road_half + 3.0 + 0.3 * _hash01(seed, k, 11)), P.curb
            else:
                y, z0 = sidewalk(k * Sw, side)
            out += person_prims(x, y, yaw, 254, 63601 + (k % 400), k, z0)
    return out
