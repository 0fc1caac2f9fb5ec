"""Debug overlay: the segmented scan projected onto a camera image (numpy only).

Why: the fastest way for someone on a vehicle to see whether labels and the
LiDAR-camera calibration are right is to look at class colours painted on the
synchronized camera frame. Far points are drawn first so near ones stay on top.
"""

from __future__ import annotations

import numpy as np

from xmodelkd_ros.geometry import PinholeCamera
from xmodelkd_ros.labels import PALETTE, UNLABELED


def draw_overlay(
    image: np.ndarray,
    camera: PinholeCamera,
    xyz: np.ndarray,
    labels: np.ndarray,
    *,
    palette: np.ndarray | None = None,
    alpha: float = 0.7,
    radius: int = 1,
    draw_unlabeled: bool = False,
) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 RGB with ``labels`` painted at the pixels of ``xyz``.

    ``xyz`` (N, 3) are LiDAR-frame points aligned with ``labels`` (N,). Each point paints a
    square of side ``2 * radius + 1`` blended with ``alpha``. When the image size differs
    from the calibration (a resized stream), pixel coordinates are scaled to match.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got {img.shape}")
    out = img.astype(np.float32, copy=True)
    h, w = img.shape[:2]
    pal = np.asarray(PALETTE if palette is None else palette, dtype=np.float32)
    lab = np.asarray(labels).astype(np.int64, copy=False).reshape(-1)
    pts = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    if pts.shape[0] != lab.shape[0]:
        raise ValueError(f"{pts.shape[0]} points but {lab.shape[0]} labels")
    uv, depth, in_fov = camera.project(pts)
    keep = in_fov & (lab < pal.shape[0]) & (lab >= 0)
    if not draw_unlabeled:
        keep &= lab != UNLABELED
    if not keep.any():
        return img.copy()
    uv, depth, lab = uv[keep], depth[keep], lab[keep]
    sx, sy = w / camera.width, h / camera.height
    col = np.floor(uv[:, 0] * sx).astype(np.int64)
    row = np.floor(uv[:, 1] * sy).astype(np.int64)
    order = np.argsort(-depth, kind="stable")  # far first, near overwrite
    col, row, colors = col[order], row[order], pal[lab[order]]
    painted = np.zeros((h, w), dtype=bool)
    layer = np.zeros((h, w, 3), dtype=np.float32)
    r = max(int(radius), 0)
    for dr in range(-r, r + 1):
        for dc in range(-r, r + 1):
            rr, cc = row + dr, col + dc
            ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            # Later writes win in fancy assignment, so near points end on top.
            layer[rr[ok], cc[ok]] = colors[ok]
            painted[rr[ok], cc[ok]] = True
    a = float(np.clip(alpha, 0.0, 1.0))
    out[painted] = (1.0 - a) * out[painted] + a * layer[painted]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
