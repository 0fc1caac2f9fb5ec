"""Point and image augmentation that keeps point-pixel correspondences valid.

Order matters and is fixed here: the sensor augmentations that drop points (beam
subsampling, ring and range dropout; :mod:`.sensor_augment`) run first, then
correspondences are computed on the remaining raw points with the real calibration, then
images are cropped/resized (pixel coordinates follow) and colour-jittered, and only then
are the points moved (mounting jitter, then rotated/flipped/scaled/jittered). The
correspondences are indices, so moving the points never breaks them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from xmodelkd_ros.training.data.prepared import Prepared
from xmodelkd_ros.training.data.sample import Correspondences, Sample, compute_correspondences
from xmodelkd_ros.training.sensor_augment import (
    mount_jitter,
    moves_sensor,
    sensor_active,
    sensor_keep,
)


@dataclass
class AugmentConfig:
    """Augmentation strengths; ``enabled=False`` (evaluation) keeps only the resize."""

    enabled: bool = True
    rotate_deg: float = 180.0  # uniform yaw in [-rotate_deg, rotate_deg]
    flip: bool = True  # random mirror across the x and/or y axis
    scale: tuple[float, float] = (0.95, 1.05)
    jitter: float = 0.01  # std (m) of per-point xyz noise
    color_jitter: float = 0.2  # brightness / contrast / saturation strength
    crop_scale: tuple[float, float] = (0.8, 1.0)  # side fraction of the random crop
    hflip_image: bool = False  # off by default: would mirror the camera geometry
    # sensor robustness (sensor_augment.py), all off by default:
    beam_subsample: tuple[int, ...] = (1,)  # keep every k-th ring, k drawn from these
    ring_dropout: float = 0.0  # probability of dropping each whole ring
    range_dropout: float = 0.0  # drop probability at range_dropout_at m and beyond
    range_dropout_at: float = 50.0
    elevation_cap: tuple[float, ...] = ()  # (lo, hi) degrees: drop points above U(lo, hi)
    elevation_cap_p: float = 0.5  # share of scans the cap applies to
    mount_height: float = 0.0  # sensor height jitter, +- m
    mount_pitch_deg: float = 0.0  # sensor pitch jitter, +- degrees


def augment_points(points: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Rotate about z, mirror, scale and jitter xyz; other columns are untouched."""
    out = points.copy()
    xyz = out[:, :3].astype(np.float64)
    if cfg.rotate_deg > 0:
        a = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
        c, s = np.cos(a), np.sin(a)
        xyz[:, :2] = xyz[:, :2] @ np.array([[c, s], [-s, c]])
    if cfg.flip:
        if rng.random() < 0.5:
            xyz[:, 0] = -xyz[:, 0]
        if rng.random() < 0.5:
            xyz[:, 1] = -xyz[:, 1]
    lo, hi = cfg.scale
    if hi > lo or lo != 1.0:
        xyz *= rng.uniform(lo, hi)
    if cfg.jitter > 0:
        xyz += rng.normal(0.0, cfg.jitter, size=xyz.shape)
    out[:, :3] = xyz.astype(np.float32)
    return out


def crop_resize(
    image: np.ndarray,
    uv: np.ndarray,
    out_hw: tuple[int, int],
    box: tuple[int, int, int, int] | None = None,
    resample: int = Image.BILINEAR,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop ``box = (x0, y0, x1, y1)`` (whole image if None) and resize to ``out_hw``.

    Returns the new image, the moved ``uv`` and a mask of pairs still inside the image.
    Pixel ``col`` covers ``u in [col, col+1)`` before and after, so a point keeps the
    colour under it.
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box if box is not None else (0, 0, w, h)
    oh, ow = out_hw
    sx, sy = ow / (x1 - x0), oh / (y1 - y0)
    pil = Image.fromarray(image)
    if (x0, y0, x1, y1) != (0, 0, w, h):
        pil = pil.crop((x0, y0, x1, y1))
    if pil.size != (ow, oh):
        pil = pil.resize((ow, oh), resample=resample)
    new_uv = np.empty_like(uv, dtype=np.float32)
    new_uv[:, 0] = (uv[:, 0] - x0) * sx
    new_uv[:, 1] = (uv[:, 1] - y0) * sy
    inside = (new_uv[:, 0] >= 0) & (new_uv[:, 0] < ow) & (new_uv[:, 1] >= 0) & (new_uv[:, 1] < oh)
    return np.asarray(pil), new_uv, inside


def random_crop_box(
    h: int, w: int, out_hw: tuple[int, int], scale: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """A crop with the output's aspect ratio covering ``scale`` of the largest such box."""
    oh, ow = out_hw
    base_w = min(w, h * ow / oh)
    s = rng.uniform(*scale)
    cw = max(1, min(w, round(base_w * s)))
    ch = max(1, min(h, round(cw * oh / ow)))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    return x0, y0, x0 + cw, y0 + ch


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation jitter; geometry untouched."""
    if strength <= 0:
        return image
    img = image.astype(np.float32)
    img *= rng.uniform(1 - strength, 1 + strength)
    mean = img.mean()
    img = (img - mean) * rng.uniform(1 - strength, 1 + strength) + mean
    gray = img.mean(axis=2, keepdims=True)
    img = (img - gray) * rng.uniform(1 - strength, 1 + strength) + gray
    return np.clip(img, 0, 255).astype(np.uint8)


def prepare_sample(
    sample: Sample,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    image_hw: tuple[int, int],
    max_points: int | None = None,
    views: int = 1,
    use_images: bool = True,
    temporal: bool = False,
) -> Prepared:
    """Subsample, compute correspondences, augment images (``views`` times) then points.

    ``temporal``: keep the sample's temporal views (images of other frames, offset != 0);
    without it only the scan's own images are used (as before temporal views existed).
    """
    points, labels = sample.points, sample.labels
    # Separate streams: with or without cameras (distill vs baseline), the points get the
    # same subsample and the same augmentation, so the comparison is controlled.
    img_rng = np.random.default_rng(rng.integers(1 << 62))
    pts_rng = np.random.default_rng(rng.integers(1 << 62))
    if max_points and points.shape[0] > max_points:
        keep = np.sort(rng.choice(points.shape[0], size=max_points, replace=False))
        points = points[keep]
        labels = None if labels is None else labels[keep]
    # drawn only when a sensor option is on: without them every other draw is as before
    sensor_rng = (
        np.random.default_rng(rng.integers(1 << 62)) if cfg.enabled and sensor_active(cfg)
        else None
    )  # fmt: skip
    if sensor_rng is not None:
        keep = sensor_keep(points, cfg, sensor_rng)
        if not keep.all():
            points = points[keep]
            labels = None if labels is None else labels[keep]
    images: list[np.ndarray] = []
    offsets: list[int] = []
    corr = Correspondences.empty()
    all_offsets = sample.offsets()
    used = [i for i, o in enumerate(all_offsets) if temporal or o == 0]
    if use_images and used:
        cams = [sample.cameras[i] for i in used]
        raw = compute_correspondences(points, cams, [all_offsets[i] != 0 for i in used])
        parts = []
        for _ in range(max(1, views if cfg.enabled else 1)):
            for i, img in enumerate(sample.images[j] for j in used):
                sel = raw.image_idx == i
                h, w = img.shape[:2]
                box = (
                    random_crop_box(h, w, image_hw, cfg.crop_scale, img_rng)
                    if cfg.enabled
                    else None
                )
                new_img, uv, inside = crop_resize(img, raw.uv[sel], image_hw, box)
                if cfg.enabled:
                    new_img = color_jitter(new_img, cfg.color_jitter, img_rng)
                    if cfg.hflip_image and img_rng.random() < 0.5:
                        new_img = np.ascontiguousarray(new_img[:, ::-1])
                        uv = uv.copy()
                        uv[:, 0] = image_hw[1] - uv[:, 0]
                        inside &= uv[:, 0] < image_hw[1]
                k = len(images)
                images.append(new_img)
                offsets.append(all_offsets[used[i]])
                parts.append(
                    Correspondences(
                        raw.point_idx[sel][inside],
                        np.full(int(inside.sum()), k, np.int64),
                        uv[inside],
                    )
                )
        corr = Correspondences(
            np.concatenate([p.point_idx for p in parts]),
            np.concatenate([p.image_idx for p in parts]),
            np.concatenate([p.uv for p in parts]).reshape(-1, 2),
        )
    if sensor_rng is not None and moves_sensor(cfg):
        points = mount_jitter(points, cfg, sensor_rng)
    if cfg.enabled:
        points = augment_points(points, cfg, pts_rng)
    return Prepared(points, labels, images, corr, sample.name, offsets)
