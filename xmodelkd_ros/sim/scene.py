"""What a procedural street scene is made of: ground bands, primitives, layout, chunks.

Why this module holds only the description: the ray caster and the sensor models need the
vocabulary of a scene (band codes, texture kinds, :class:`Prim`, :class:`StreetParams`) but
not how content is generated, and the generators (:mod:`.generators`) and the street
(:mod:`.street`) build on it without importing each other's details.

The world is an infinite straight street along the world x axis, cut into chunks of
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
        r = seeded_rng(seed, -7)
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


def seeded_rng(seed: int, *keys: int) -> np.random.Generator:
    """The random stream of ``(seed, *keys)``: every random draw of the world comes from one,
    so each chunk, actor slot and street layout is reproducible on its own."""
    return np.random.default_rng([seed & 0xFFFFFFFF, *[(k + (1 << 31)) & 0xFFFFFFFF for k in keys]])
