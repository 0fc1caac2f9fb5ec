"""Sensor models: a spinning multi-beam LiDAR and pinhole cameras with textured shading.

Why: the point of the synthetic world is that the camera and the LiDAR see the *same*
scene through different physics. The LiDAR measures geometry plus a noisy,
material-dependent intensity (weakly informative on purpose); the camera sees strong
per-class colour and texture. Both are ray cast against the same primitives, so a LiDAR
point projected with the published calibration lands on a pixel of the same class.

Measurement model of the LiDAR: ranges with Gaussian noise, random dropout, a maximum
range, intensity = reflectivity * incidence term + noise. The whole sweep is cast from the
pose at the scan stamp (no motion distortion); ``time`` is the firing time of the point's
column relative to the sweep start (clockwise rotation starting behind the vehicle).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..geometry import PinholeCamera
from .raycast import GROUND, MISS, Hits, RayGrid, camera_window_fn, cast, lidar_window_fn
from .scene import (
    GROUND_COLOR,
    GROUND_RAW,
    GROUND_REFLECT,
    GROUND_TEXTURE,
    TX_ASPHALT,
    TX_BARK,
    TX_FACADE,
    TX_FENCE,
    TX_GRASS,
    TX_GRAVEL,
    TX_LEAVES,
    TX_PAVERS,
    TX_TILES,
    TX_VEHICLE,
    Prim,
)
from .street import Street

#: Beam-count presets: (lowest, highest elevation in degrees, max range in m). Named rigs
#: (these plus other fields of view, mounting heights and pitches): :mod:`.rigs`.
LIDAR_PRESETS: dict[int, tuple[float, float, float]] = {
    16: (-15.0, 15.0, 100.0),  # VLP-16 like
    32: (-30.67, 10.67, 100.0),  # HDL-32E like
    64: (-24.9, 2.0, 120.0),  # HDL-64E like
    128: (-25.0, 15.0, 120.0),  # Pandar128 / OS-128 like
}
LIDAR_HEIGHT = 1.73  #: LiDAR height above the road (KITTI's HDL-64 mount)


@dataclass
class LidarModel:
    """A rotating multi-beam LiDAR. ``elevations_deg`` ascending: ring 0 is the lowest beam.

    ``height`` (m above the road) and ``pitch_deg`` (> 0 tilts the forward axis down, a
    rotation about the LiDAR's y axis) are its mounting on the vehicle: the world places
    the sensor head (the LiDAR and the cameras calibrated to it) there.
    """

    beams: int = 32
    h_res_deg: float = 0.2
    max_range: float = 100.0
    min_range: float = 1.0
    range_noise: float = 0.02
    dropout: float = 0.03
    intensity_noise: float = 0.03
    rate_hz: float = 10.0
    elevations_deg: np.ndarray = field(default_factory=lambda: np.zeros(0))
    height: float = LIDAR_HEIGHT
    pitch_deg: float = 0.0

    @classmethod
    def preset(cls, beams: int = 32, **kw) -> LidarModel:
        if beams not in LIDAR_PRESETS:
            raise ValueError(f"beam presets: {sorted(LIDAR_PRESETS)}, got {beams}")
        lo, hi, rng = LIDAR_PRESETS[beams]
        kw.setdefault("max_range", rng)
        return cls(beams=beams, elevations_deg=np.linspace(lo, hi, beams), **kw)

    def __post_init__(self) -> None:
        if len(self.elevations_deg) == 0:
            lo, hi, _ = LIDAR_PRESETS.get(self.beams, LIDAR_PRESETS[32])
            self.elevations_deg = np.linspace(lo, hi, self.beams)
        self.elevations_deg = np.sort(np.asarray(self.elevations_deg, dtype=np.float64))
        self.columns = round(360.0 / self.h_res_deg)
        el = np.deg2rad(self.elevations_deg)[:, None]
        az = -np.pi + (np.arange(self.columns) + 0.5) * (2 * np.pi / self.columns)
        self.azimuths = az
        self.dirs = np.stack(
            np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)),
            axis=0,
        ).astype(np.float32)  # (3, beams, columns), sensor frame
        period = 1.0 / self.rate_hz
        self.column_time = ((np.pi - az) / (2 * np.pi) * period).astype(np.float32)

    def measure(
        self, pose: np.ndarray, street: Street, prims: list[Prim], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cast one sweep from ``pose`` (4x4 lidar->world).

        Returns points (N, 6) float32 [x, y, z, intensity, ring, time] in the LiDAR frame,
        raw SemanticKITTI ids (N,) uint16 and instance ids (N,) uint16.
        """
        R = pose[:3, :3].astype(np.float32)
        o = pose[:3, 3]
        yaw = float(np.arctan2(pose[1, 0], pose[0, 0]))
        B, C = self.beams, self.columns
        dirs = (R @ self.dirs.reshape(3, -1)).reshape(3, B, C)
        tilt, slack = _tilt_and_slack(R, dirs, self.azimuths, yaw)
        elev = np.deg2rad(self.elevations_deg)
        grid = RayGrid(
            origin=o,
            dirs=dirs,
            window=lidar_window_fn(o, yaw, elev, self.columns, tilt, slack),
            max_t=self.max_range,
        )
        hits = cast(grid, prims, street)
        valid = (hits.pid != MISS) & (hits.t >= self.min_range)
        valid &= rng.random(valid.shape) >= self.dropout
        idx = np.flatnonzero(valid)
        ring, col = np.divmod(idx, C)
        t = hits.t.ravel()[idx]
        rng_noisy = t + rng.normal(0.0, self.range_noise, t.shape).astype(np.float32)
        d = self.dirs.reshape(3, -1)[:, idx]
        raw, inst, refl, _, _, _ = _materials(hits, prims, idx)
        g = hits.pid.ravel()[idx] == GROUND
        if g.any():
            # Weak, overlapping ground cues: the street's own reflectivity per band plus
            # metre-scale wear patches, so no intensity threshold separates the bands.
            b = hits.band.ravel()[idx][g]
            wx = o[0] + grid.dirs[0].ravel()[idx][g] * t[g]
            wy = o[1] + grid.dirs[1].ravel()[idx][g] * t[g]
            patch = _hash(_cell(wx, 2.0), _cell(wy, 2.0), 11) - 0.5
            refl[g] = street.ground_reflect[b] + 0.1 * patch
        n = hits.normal.reshape(-1, 3)[idx]
        cos_inc = np.abs((n * grid.dirs.reshape(3, -1)[:, idx].T).sum(-1))
        inten = refl * (0.55 + 0.45 * cos_inc)
        inten = inten + rng.normal(0.0, self.intensity_noise, inten.shape)
        inten = np.clip(inten, 0.0, 1.0)
        pts = np.empty((len(t), 6), dtype=np.float32)
        pts[:, :3] = (d * rng_noisy).T
        pts[:, 3] = inten
        pts[:, 4] = ring
        pts[:, 5] = self.column_time[col]
        return pts, raw, inst


def _tilt_and_slack(
    R: np.ndarray, dirs: np.ndarray, azimuths: np.ndarray, yaw: float
) -> tuple[float, float]:
    """How far a tilted (pitched) sensor's rays leave the yaw-only geometry the ray caster's
    window assumes: the angle between the sensor's and the world's up axes (bounds each
    ray's change of elevation) and the largest change of any ray's azimuth. Both 0 for an
    upright sensor, which then casts exactly as before tilts existed."""
    tilt = float(np.arccos(np.clip(R[2, 2], -1.0, 1.0)))
    if tilt < 1e-9:
        return 0.0, 0.0
    world_az = np.arctan2(dirs[1], dirs[0]) - yaw
    slack = np.abs(np.angle(np.exp(1j * (world_az - azimuths[None, :])))).max()
    return tilt, float(slack)


def _materials(hits: Hits, prims: list[Prim], index: np.ndarray):
    """Per-ray (flat ``index``) raw id, instance, reflectivity, colour, texture and seed."""
    pid = hits.pid.ravel()[index]
    n = len(pid)
    P = len(prims)
    p_raw = np.array([p.raw for p in prims] + [0], dtype=np.uint16)
    p_inst = np.array([p.instance for p in prims] + [0], dtype=np.uint16)
    p_refl = np.array([p.reflect for p in prims] + [0.0], dtype=np.float32)
    p_col = np.array([p.color for p in prims] + [(0, 0, 0)], dtype=np.float32).reshape(-1, 3)
    p_tex = np.array([p.texture for p in prims] + [0], dtype=np.int16)
    p_seed = np.array([p.seed & 0xFFFF for p in prims] + [0], dtype=np.int64)
    g = pid == GROUND
    k = np.where(pid >= 0, pid, P)
    raw = p_raw[k]
    inst = p_inst[k]
    refl = p_refl[k]
    col = p_col[k]
    tex = p_tex[k]
    seed = p_seed[k]
    if g.any():
        b = hits.band.ravel()[index][g]
        raw[g] = GROUND_RAW[b]
        refl[g] = GROUND_REFLECT[b]
        col[g] = GROUND_COLOR[b]
        tex[g] = GROUND_TEXTURE[b]
    assert len(raw) == n
    return raw, inst, refl, col, tex, seed


def _hash(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray | int = 0) -> np.ndarray:
    """Integer hash of lattice coordinates -> float32 in [0, 1)."""
    h = (ix * 73856093) ^ (iy * 19349663) ^ (np.asarray(iz) * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float32) / np.float32(65536.0)


def _cell(v: np.ndarray, size: float) -> np.ndarray:
    return np.floor(v / size).astype(np.int64)


def _texture(tex: np.ndarray, col: np.ndarray, P: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Modulate base colours ``col`` (N, 3) by procedural textures at world points ``P``."""
    out = col.copy()
    x, y, z = P[:, 0], P[:, 1], P[:, 2]

    def apply(kind: int, fn) -> None:
        m = np.nonzero(tex == kind)[0]
        if len(m):
            out[m] = fn(m, x[m], y[m], z[m], out[m])

    def asphalt(m, x, y, z, c):
        return c * (0.8 + 0.4 * _hash(_cell(x, 0.06), _cell(y, 0.06)))[:, None]

    def pavers(m, x, y, z, c):
        row = _cell(y, 0.12)
        xs = x / 0.24 + 0.5 * (row & 1)
        gap = (np.mod(xs, 1.0) < 0.08) | (np.mod(y / 0.12, 1.0) < 0.12)
        f = np.where(gap, 0.55, 0.8 + 0.35 * _hash(np.floor(xs).astype(np.int64), row, 3))
        return c * f[:, None]

    def grass(m, x, y, z, c):
        n1 = _hash(_cell(x, 0.04), _cell(y, 0.04), 5)
        n2 = _hash(_cell(x, 0.5), _cell(y, 0.5), 6)
        c = c * (0.65 + 0.6 * n1)[:, None]
        c[:, 0] += (n2 - 0.5) * 40
        return c

    def tiles(m, x, y, z, c):
        joint = (np.mod(x / 0.5, 1.0) < 0.04) | (np.mod(y / 0.5, 1.0) < 0.04)
        f = np.where(joint, 0.62, 0.93 + 0.14 * _hash(_cell(x, 0.5), _cell(y, 0.5), 7))
        return c * f[:, None]

    def gravel(m, x, y, z, c):
        return c * (0.6 + 0.7 * _hash(_cell(x, 0.025), _cell(y, 0.025), 8))[:, None]

    def facade(m, x, y, z, c):
        u = x + y + (seed[m] % 97) * 0.13
        win = (np.mod(u / 3.0, 1.0) > 0.3) & (np.mod(u / 3.0, 1.0) < 0.75)
        win &= (np.mod(z / 3.0, 1.0) > 0.35) & (np.mod(z / 3.0, 1.0) < 0.8) & (z > 1.0)
        c = c * (0.9 + 0.1 * _hash(_cell(u, 0.3), _cell(z, 0.3), 9))[:, None]
        c[win] = (55, 65, 85)
        return c

    def fence(m, x, y, z, c):
        slat = np.mod((x + y) / 0.15, 1.0) < 0.2
        return c * np.where(slat, 0.5, 1.0)[:, None]

    def leaves(m, x, y, z, c):
        n = _hash(_cell(x, 0.1), _cell(y, 0.1), _cell(z, 0.1))
        return c * (0.45 + 1.0 * n)[:, None]

    def bark(m, x, y, z, c):
        return c * (0.7 + 0.5 * _hash(_cell(z, 0.06), _cell(x + y, 0.05), 11))[:, None]

    def vehicle(m, x, y, z, c):
        return c * (0.95 + 0.1 * _hash(_cell(x, 0.5), _cell(z, 0.5), 12))[:, None]

    for kind, fn in (
        (TX_ASPHALT, asphalt),
        (TX_PAVERS, pavers),
        (TX_GRASS, grass),
        (TX_TILES, tiles),
        (TX_GRAVEL, gravel),
        (TX_FACADE, facade),
        (TX_FENCE, fence),
        (TX_LEAVES, leaves),
        (TX_BARK, bark),
        (TX_VEHICLE, vehicle),
    ):
        apply(kind, fn)
    return out


SUN = np.array([0.35, 0.45, 0.82], dtype=np.float32) / np.linalg.norm([0.35, 0.45, 0.82])
SKY_TOP = np.array([90, 140, 215], dtype=np.float32)
SKY_HORIZON = np.array([200, 215, 235], dtype=np.float32)


def render_camera(
    cam: PinholeCamera,
    pose: np.ndarray,
    street: Street,
    prims: list[Prim],
    max_depth: float = 150.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render ``cam`` on the vehicle at LiDAR pose ``pose`` (4x4 lidar->world).

    Returns the RGB image (H, W, 3) uint8, the raw-id image (H, W) uint16 (0 = sky) and the
    instance image (H, W) uint16.
    """
    T_wc = pose @ cam.T_lidar_cam
    R_wc = T_wc[:3, :3]
    o = T_wc[:3, 3]
    H, W = cam.height, cam.width
    rays_cam, ray_len = _camera_rays(cam)
    dirs = (R_wc.astype(np.float32) @ rays_cam).reshape(3, H, W)
    grid = RayGrid(o, dirs, camera_window_fn(o, R_wc, cam.K, W, H), max_depth)
    hits = cast(grid, prims, street)
    # Sky gradient by ray elevation.
    s = np.clip(dirs[2].ravel() / ray_len * 3.0, 0.0, 1.0)[:, None]
    img = SKY_HORIZON + s * (SKY_TOP - SKY_HORIZON)  # (H*W, 3) float32
    raw_img = np.zeros(H * W, dtype=np.uint16)
    inst_img = np.zeros(H * W, dtype=np.uint16)
    idx = np.flatnonzero(hits.pid.ravel() != MISS)
    if len(idx):
        raw, inst, _, col, tex, seed = _materials(hits, prims, idx)
        t = hits.t.ravel()[idx]
        d = dirs.reshape(3, -1)[:, idx]
        P = (o[:, None] + t * d).T.astype(np.float32)
        col = _texture(tex, col, P, seed)
        n = hits.normal.reshape(-1, 3)[idx]
        shade = 0.5 + 0.55 * np.clip(n @ SUN, 0.0, 1.0)
        fog = 1.0 - np.exp(-(t * ray_len[idx]) / np.float32(220.0))
        sky = img[idx]
        img[idx] = col * (shade * (1 - fog))[:, None] + sky * fog[:, None]
        raw_img[idx] = raw
        inst_img[idx] = inst
    rgb = np.clip(img, 0, 255).astype(np.uint8).reshape(H, W, 3)
    return rgb, raw_img.reshape(H, W), inst_img.reshape(H, W)


_RAY_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _camera_rays(cam: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame pixel rays (3, H*W) float32 (z = 1) and their lengths (H*W,)."""
    key = (cam.width, cam.height, *np.round(cam.K.ravel(), 6))
    hit = _RAY_CACHE.get(key)
    if hit is None:
        rays = np.ascontiguousarray(cam.pixel_rays().reshape(-1, 3).T.astype(np.float32))
        hit = _RAY_CACHE[key] = (rays, np.linalg.norm(rays, axis=0))
    return hit
