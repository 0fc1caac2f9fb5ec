"""Procedural street scenes: ground bands and 3D primitives, deterministic by seed.

Why this shape: an infinite straight street along the world x axis, cut into chunks of
:data:`CHUNK` metres. Each chunk's content depends only on ``(seed, chunk index)``, so any
frame can be generated on its own (training draws random frames on the fly) and consecutive
frames see the same world. Moving actors (traffic, walkers) are closed-form functions of time.

The ground is a piecewise-constant height field of lateral bands (road, lane markings,
parking, sidewalk, terrain, other-ground). Road, markings and parking sit at height 0;
sidewalk, grass verge and the area beyond at curb height (or at road level: some sidewalks
have no curb), so road/parking/lane-marking and sidewalk/terrain/other-ground are hard to
tell apart from LiDAR geometry and intensity alone, but obvious in the camera.

No lateral shortcut: every street draws its own layout from its seed (:class:`StreetParams`:
lane count and width, the ego lane, parking on either side or none, curb height, road-level
sidewalks, verges, terrain / plaza patches, building setbacks, object densities), so "road"
cannot be told from "parking" or "sidewalk" by the distance to the ego path alone.

Objects are boxes (optionally yawed), vertical cylinders (poles, trunks) and axis-aligned
ellipsoids (tree crowns, heads), each carrying a SemanticKITTI *raw* id, an instance id,
a colour, a texture kind and a LiDAR reflectivity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

CHUNK = 20.0  #: chunk length along x (m)
CURB_MAX = 0.2  #: highest curb any street draws (m); the ray caster's upper ground plane

BOX, CYL, ELL = 0, 1, 2

# Ground band codes (index into GROUND_*); order matters for the band table.
G_ROAD, G_MARK, G_PARK, G_VERGE, G_SIDEWALK, G_BEYOND_TERRAIN, G_BEYOND_OTHER = range(7)
GROUND_RAW = np.array([40, 60, 44, 72, 48, 72, 49], dtype=np.uint16)
#: bands that may be raised by the street's curb (the others are always at road level)
GROUND_RAISED = np.array([False, False, False, True, True, True, True])
#: LiDAR reflectivity per ground band: deliberately close (appearance does the separating).
GROUND_REFLECT = np.array([0.20, 0.27, 0.22, 0.23, 0.25, 0.23, 0.24], dtype=np.float32)

# Texture kinds used by the camera renderer.
(
    TX_ASPHALT,
    TX_MARK,
    TX_PAVERS,
    TX_GRASS,
    TX_TILES,
    TX_GRAVEL,
    TX_FACADE,
    TX_FENCE,
    TX_LEAVES,
    TX_BARK,
    TX_METAL,
    TX_SIGN,
    TX_VEHICLE,
    TX_CLOTH,
    TX_SKIN,
) = range(15)

GROUND_TEXTURE = np.array(
    [TX_ASPHALT, TX_MARK, TX_PAVERS, TX_GRASS, TX_TILES, TX_GRASS, TX_GRAVEL], dtype=np.int16
)
GROUND_COLOR = np.array(
    [
        (72, 72, 76),  # asphalt
        (235, 235, 230),  # lane marking
        (150, 82, 62),  # red brick parking pavers
        (86, 140, 48),  # grass verge
        (190, 186, 176),  # light concrete tiles
        (96, 132, 52),  # grass beyond
        (150, 138, 110),  # gravel / plaza (other-ground)
    ],
    dtype=np.float32,
)


@dataclass
class Prim:
    """One scene primitive. ``size``: box half extents / (r, r, half height) / radii."""

    kind: int
    center: np.ndarray
    size: np.ndarray
    raw: int
    instance: int = 0
    color: tuple[float, float, float] = (128.0, 128.0, 128.0)
    texture: int = TX_METAL
    reflect: float = 0.3
    yaw: float = 0.0
    seed: int = 0  #: per-object texture seed

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        c, s = self.center, self.size
        if self.kind == BOX and self.yaw != 0.0:
            cy, sy = abs(np.cos(self.yaw)), abs(np.sin(self.yaw))
            ext = np.array([cy * s[0] + sy * s[1], sy * s[0] + cy * s[1], s[2]])
        else:
            ext = np.asarray(s)
        return c - ext, c + ext


@dataclass(frozen=True)
class StreetParams:
    """A street's layout and densities, drawn once from its seed (see :meth:`draw`).

    Lateral positions are in the street frame (y = 0 on the road's centre line, y < 0 right
    of the driving direction). ``park``, ``raised``, ``verge``, ``other_ground`` are
    probabilities per chunk and side (right, left); densities scale object counts.
    """

    lanes: int
    lane_width: float
    ego_lane: int  #: 0 = rightmost lane
    curb: float  #: raised sidewalk height above the road (m)
    park: tuple[float, float]
    raised: tuple[float, float]  #: probability that a chunk side's sidewalk has a curb
    verge: float
    other_ground: float  #: probability that the area beyond the sidewalk is a plaza
    sidewalk: tuple[float, float]  #: sidewalk width range (m)
    setback: tuple[float, float]  #: building distance beyond the sidewalk (m)
    buildings: float  #: probability of a building row (else fence and bushes)
    parked_fill: float  #: share of parking slots with a vehicle
    trees: float  #: mean trees per chunk side
    walkers: float  #: mean standing pedestrians per chunk side
    two_wheelers: float  #: probability of a parked bicycle / motorcycle per chunk side
    traffic: float  #: share of occupied oncoming slots
    cyclists: float  #: share of occupied cyclist slots
    reflect_jitter: float  #: per-street ground reflectivity offsets (std)

    @property
    def road_half(self) -> float:
        return self.lanes * self.lane_width / 2

    def lane_y(self, k: int) -> float:
        """Centre of lane ``k`` (0 = rightmost) in the street frame."""
        return -self.road_half + (k + 0.5) * self.lane_width

    @property
    def ego_y(self) -> float:
        return self.lane_y(self.ego_lane)

    @property
    def right_lanes(self) -> int:
        """Lanes in the ego's driving direction (the rest carry oncoming traffic)."""
        return (self.lanes + 1) // 2

    @classmethod
    def draw(cls, seed: int) -> StreetParams:
        r = _rng(seed, -7)
        lanes = int(r.choice([2, 2, 3, 4]))
        right = (lanes + 1) // 2
        park_both = r.random()
        park = (
            (0.0, 0.0) if park_both < 0.15 else
            (float(r.uniform(0.3, 0.9)), 0.0 if park_both < 0.35 else float(r.uniform(0.3, 0.9)))
        )  # fmt: skip
        if r.random() < 0.5:
            park = park[::-1]
        return cls(
            lanes=lanes,
            lane_width=float(r.uniform(2.8, 3.7)),
            ego_lane=int(r.integers(0, right)),
            curb=float(r.uniform(0.06, CURB_MAX)),
            park=park,
            raised=(float(r.uniform(0.5, 1.0)), float(r.uniform(0.5, 1.0))),
            verge=float(r.uniform(0.2, 0.8)),
            other_ground=float(r.uniform(0.15, 0.5)),
            sidewalk=(float(r.uniform(1.2, 2.2)), float(r.uniform(2.6, 4.0))),
            setback=(float(r.uniform(0.0, 1.0)), float(r.uniform(2.0, 6.0))),
            buildings=float(r.uniform(0.45, 0.9)),
            parked_fill=float(r.uniform(0.4, 0.85)),
            trees=float(r.uniform(0.5, 2.0)),
            walkers=float(r.uniform(0.6, 2.0)),
            two_wheelers=float(r.uniform(0.4, 0.8)),
            traffic=float(r.uniform(0.55, 0.85)),
            cyclists=float(r.uniform(0.45, 0.8)),
            reflect_jitter=0.012,
        )


@dataclass
class Chunk:
    """Static content of one chunk: per-side ground band edges and primitives."""

    index: int
    #: (2, 5) per side (0 = right/y<0, 1 = left/y>0), street frame: outer |y| of parking,
    #: verge, sidewalk; the beyond-band kind (1 = other-ground) in col 3; the ground
    #: level of the side's sidewalk, verge and beyond (0 = road level, else the curb) in col 4.
    edges: np.ndarray
    prims: list[Prim] = field(default_factory=list)


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


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, *[(k + (1 << 31)) & 0xFFFFFFFF for k in keys]])


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


def make_chunk(seed: int, index: int, params: StreetParams | None = None) -> Chunk:
    """Generate chunk ``index`` of the world with ``seed`` (layout ``params``, default: the
    seed's own :meth:`StreetParams.draw`)."""
    P = params if params is not None else StreetParams.draw(seed)
    rng = _rng(seed, index)
    x0 = index * CHUNK
    edges = np.zeros((2, 5), dtype=np.float32)
    prims: list[Prim] = []
    local = 0
    for side in (0, 1):
        sg = -1.0 if side == 0 else 1.0
        parking = rng.random() < P.park[side]
        park_w = rng.uniform(2.1, 2.6)
        e_park = P.road_half + (park_w if parking else 0.0)
        e_verge = e_park + (rng.uniform(0.8, 2.2) if rng.random() < P.verge else 0.0)
        e_side = e_verge + rng.uniform(*P.sidewalk)
        beyond_other = rng.random() < P.other_ground
        level = P.curb if rng.random() < P.raised[side] else 0.0
        edges[side] = (e_park, e_verge, e_side, 1.0 if beyond_other else 0.0, level)

        def ysg(d: float, sg: float = sg) -> float:
            return sg * d

        # Parked vehicles in the parking lane.
        if parking:
            x = x0 + rng.uniform(0.5, 3.0)
            y_park = P.road_half + park_w / 2
            while x < x0 + CHUNK - 2.5:
                r = rng.random()
                if r < 0.85 * P.parked_fill:
                    local += 1
                    col = CAR_COLORS[rng.integers(len(CAR_COLORS))]
                    s_obj = int(rng.integers(1 << 30))
                    prims += vehicle_prims(
                        x + 2.2, ysg(y_park), 0.0, "car", 10, _inst(index, local), col, s_obj
                    )
                    x += 4.3 + rng.uniform(0.8, 2.5)
                elif r < P.parked_fill and x < x0 + CHUNK - 8:
                    local += 1
                    col = CAR_COLORS[rng.integers(len(CAR_COLORS))]
                    kind, raw = ("truck", 18) if rng.random() < 0.6 else ("bus", 20)
                    s_obj = int(rng.integers(1 << 30))
                    prims += vehicle_prims(
                        x + 4.0, ysg(y_park + 0.05), 0.0, kind, raw, _inst(index, local), col, s_obj
                    )
                    x += (8.0 if kind == "truck" else 11.5) + rng.uniform(1.0, 3.0)
                else:
                    x += rng.uniform(3.0, 6.0)
        # Trees on the verge (or just beyond the sidewalk); bushes in the verge's grass.
        for _ in range(rng.poisson(P.trees)):
            d = (e_park + e_verge) / 2 if e_verge > e_park + 0.5 else e_side + rng.uniform(1.0, 3.0)
            x = x0 + rng.uniform(1.0, CHUNK - 1.0)
            h = rng.uniform(2.0, 3.2)
            r = rng.uniform(0.12, 0.25)
            prims.append(Prim(CYL, np.array([x, ysg(d), (level + h) / 2]),
                              np.array([r, r, (h - level) / 2]), 71, 0, (95, 65, 40), TX_BARK, 0.35,
                              seed=int(rng.integers(1 << 30))))  # fmt: skip
            cr = rng.uniform(1.3, 2.4)
            prims.append(Prim(ELL, np.array([x, ysg(d), h + cr * 0.8]),
                              np.array([cr, cr, cr * 1.1]), 70, 0, (45, 105, 35), TX_LEAVES, 0.4,
                              seed=int(rng.integers(1 << 30))))  # fmt: skip
        if e_verge > e_park + 0.9 and rng.random() < 0.4:
            r = rng.uniform(0.3, (e_verge - e_park) / 2)
            prims.append(Prim(ELL, np.array([x0 + rng.uniform(1, CHUNK - 1),
                                             ysg((e_park + e_verge) / 2), level + r * 0.5]),
                              np.array([r * 1.5, r, r * 0.6]), 70, 0, (55, 100, 40), TX_LEAVES,
                              0.4, seed=int(rng.integers(1 << 30))))  # fmt: skip
        # Street light pole at the sidewalk's road-side edge.
        if rng.random() < 0.7:
            x = x0 + rng.uniform(0.5, CHUNK - 0.5)
            h = rng.uniform(5.5, 8.0)
            prims.append(Prim(CYL, np.array([x, ysg(e_verge + 0.3), (level + h) / 2]),
                              np.array([0.1, 0.1, (h - level) / 2]), 80, 0, (120, 125, 130),
                              TX_METAL, 0.5))  # fmt: skip
        # Traffic sign: thin pole plus a plate facing the traffic.
        if rng.random() < 0.5:
            x = x0 + rng.uniform(0.5, CHUNK - 0.5)
            y = ysg(e_verge + 0.5)
            prims.append(Prim(CYL, np.array([x, y, (level + 2.2) / 2]),
                              np.array([0.04, 0.04, (2.2 - level) / 2]), 80, 0, (150, 150, 150),
                              TX_METAL, 0.5))  # fmt: skip
            col = [(200, 20, 20), (20, 60, 180), (240, 200, 0)][rng.integers(3)]
            prims.append(Prim(BOX, np.array([x, y, 2.5]), np.array([0.03, 0.35, 0.35]),
                              81, 0, col, TX_SIGN, 0.95))  # fmt: skip
        # Pedestrians standing on the sidewalk, parked two-wheelers.
        for _ in range(rng.poisson(P.walkers)):
            local += 1
            yp = ysg(rng.uniform(e_verge + 0.4, max(e_verge + 0.5, e_side - 0.3)))
            yaw = rng.uniform(-np.pi, np.pi)
            s_obj = int(rng.integers(1 << 30))
            prims += person_prims(
                x0 + rng.uniform(0, CHUNK), yp, yaw, 30, _inst(index, local), s_obj, level
            )
        if rng.random() < P.two_wheelers:
            local += 1
            raw = 11 if rng.random() < 0.55 else 15
            for p in rider_prims(x0 + rng.uniform(1, CHUNK - 1), ysg(e_side - 0.5), 0.0, raw, 0,
                                 _inst(index, local), int(rng.integers(1 << 30))):  # fmt: skip
                p.center[2] += level
                prims.append(p)
        # Buildings (or a fence and bushes) beyond the sidewalk.
        setback = e_side + rng.uniform(*P.setback)
        if rng.random() < P.buildings:
            x = x0 + rng.uniform(0.0, 2.0)
            while x < x0 + CHUNK - 3:
                L = min(rng.uniform(7, 18), x0 + CHUNK - x)
                depth = rng.uniform(8, 16)
                H = rng.uniform(5, 18)
                col = FACADES[rng.integers(len(FACADES))]
                prims.append(Prim(BOX, np.array([x + L / 2, ysg(setback + depth / 2), H / 2]),
                                  np.array([L / 2, depth / 2, H / 2]), 50, 0, col, TX_FACADE, 0.3,
                                  seed=int(rng.integers(1 << 30))))  # fmt: skip
                x += L + rng.uniform(0.0, 3.0)
        else:
            if rng.random() < 0.75:
                fh = rng.uniform(0.9, 2.0)
                prims.append(Prim(BOX, np.array([x0 + CHUNK / 2, ysg(setback), level + fh / 2]),
                                  np.array([CHUNK / 2 - 0.3, 0.04, fh / 2]), 51, 0, (140, 100, 60),
                                  TX_FENCE, 0.3, seed=int(rng.integers(1 << 30))))  # fmt: skip
            for _ in range(rng.integers(1, 4)):
                r = rng.uniform(0.6, 1.5)
                xb = x0 + rng.uniform(0, CHUNK)
                prims.append(Prim(ELL, np.array([xb, ysg(setback + r + 0.3), level + r * 0.6]),
                                  np.array([r, r, r * 0.7]), 70, 0, (50, 95, 40), TX_LEAVES, 0.4,
                                  seed=int(rng.integers(1 << 30))))  # fmt: skip
    return Chunk(index, edges, prims)

def _hash01(seed: int, k: int, salt: int) -> float:
    return float(_rng(seed, k, salt).random())


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


class Street:
    """The world's static part with a chunk cache, plus access to movers."""

    def __init__(self, seed: int, cache_size: int = 64) -> None:
        self.seed = int(seed)
        self.params = StreetParams.draw(self.seed)
        #: per-band LiDAR reflectivity of this street (weakly informative, varies by street)
        jitter = _rng(self.seed, -11).normal(0.0, self.params.reflect_jitter, len(GROUND_REFLECT))
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
