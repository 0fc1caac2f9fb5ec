"""Image / CompressedImage / CameraInfo <-> numpy without ROS (no cv_bridge).

Why: ``cv_bridge`` has no wheel; the node only needs RGB pixels for overlays and
K/D/size for projection, so a small decoder for the common encodings (and OpenCV
or Pillow for compressed frames) is enough and keeps the node installable by pip.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xmodelkd_ros.msgs.common import ImageFormatError, _as_uint8, _build, _new_byte_buffer


@dataclass
class Image:
    """Stand-in for ``sensor_msgs/Image`` (same attribute names)."""

    header: Any = None
    height: int = 0
    width: int = 0
    encoding: str = "rgb8"
    is_bigendian: int = 0
    step: int = 0
    data: Any = b""


@dataclass
class CompressedImage:
    """Stand-in for ``sensor_msgs/CompressedImage`` (same attribute names)."""

    header: Any = None
    format: str = "jpeg"
    data: Any = b""


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------

# encoding -> (bytes per pixel, channel order to RGB or None for mono)
_IMAGE_ENCODINGS: dict[str, tuple[int, tuple[int, ...] | None]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "8uc3": (3, (2, 1, 0)),  # OpenCV convention: BGR
    "8uc4": (4, (2, 1, 0)),
    "mono8": (1, None),
    "8uc1": (1, None),
    "mono16": (2, None),
    "16uc1": (2, None),
}


def decode_image(msg: Any, *, mono16_shift: int = 8) -> np.ndarray:
    """``sensor_msgs/Image`` -> RGB uint8 (H, W, 3).

    Handles ``step`` padding and big-endian mono16. mono16 is mapped to 8 bits by a
    right shift (``mono16_shift``; 8 = full 16-bit range, 4 = 12-bit sensors) rather
    than per-frame normalisation, so overlays don't flicker. An unpadded rgb8 image
    comes back as a zero-copy (possibly read-only) view of the message buffer.
    """
    try:
        enc = str(msg.encoding).lower()
        h, w, step = int(msg.height), int(msg.width), int(msg.step)
        big = bool(getattr(msg, "is_bigendian", 0))
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageFormatError(f"not an Image: {exc}") from None
    if enc not in _IMAGE_ENCODINGS:
        raise ImageFormatError(
            f"unsupported image encoding {msg.encoding!r} "
            f"(supported: rgb8, bgr8, rgba8, bgra8, mono8, mono16)"
        )
    bpp, order = _IMAGE_ENCODINGS[enc]
    if h < 0 or w < 0:
        raise ImageFormatError(f"negative image size {h}x{w}")
    row = w * bpp
    if h == 0 or w == 0:
        return np.zeros((h, w, 3), np.uint8)
    if step < row:
        raise ImageFormatError(f"step {step} is smaller than width {w} x {bpp} bytes")
    buf = _as_uint8(msg.data)
    need = (h - 1) * step + row
    if buf.size < need:
        raise ImageFormatError(f"image data has {buf.size} bytes, {need} needed for {h}x{w}")
    rows = np.lib.stride_tricks.as_strided(buf, shape=(h, row), strides=(step, 1))
    if bpp == 2:
        mono16 = np.ascontiguousarray(rows).view(">u2" if big else "<u2")
        mono = np.clip(mono16 >> mono16_shift, 0, 255).astype(np.uint8)
        return np.repeat(mono[:, :, None], 3, axis=2)
    if order is None:
        return np.repeat(rows[:, :, None], 3, axis=2)
    px = rows.reshape(h, w, bpp)
    if order == (0, 1, 2) and bpp == 3:
        return px if step == row else np.ascontiguousarray(px)
    return np.ascontiguousarray(px[:, :, list(order)])


def _cv2() -> Any:
    try:
        import cv2  # type: ignore[import-not-found]
    except ImportError:
        return None
    return cv2


def decode_compressed_image(msg: Any) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg, png) -> RGB uint8 (H, W, 3).

    Uses OpenCV when importable (faster jpeg), else Pillow. The format string is only
    checked for depth formats we cannot show; the codec itself is sniffed from the data.
    """
    fmt = str(getattr(msg, "format", "")).lower()
    if "compresseddepth" in fmt:
        raise ImageFormatError(f"compressed depth images are not supported ({msg.format!r})")
    buf = _as_uint8(msg.data)
    if buf.size == 0:
        raise ImageFormatError("compressed image has no data")
    cv2 = _cv2()
    if cv2 is not None:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if img is None:
            raise ImageFormatError(f"cannot decode compressed image (format {fmt!r})")
        return np.ascontiguousarray(img[:, :, ::-1])
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(buf.tobytes())) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise ImageFormatError(f"cannot decode compressed image (format {fmt!r}): {exc}") from None


def image_to_rgb(msg: Any) -> np.ndarray:
    """Decode either an Image or a CompressedImage (told apart by ``encoding``)."""
    if hasattr(msg, "encoding"):
        return decode_image(msg)
    return decode_compressed_image(msg)


def encode_image(
    rgb: np.ndarray,
    header: Any = None,
    *,
    encoding: str = "rgb8",
    image_cls: Any = Image,
) -> Any:
    """RGB uint8 (H, W, 3) -> Image message fields (``rgb8`` or ``bgr8``, no padding).

    Used for the overlay image the node publishes; ``image_cls`` is
    ``sensor_msgs.msg.Image`` in the node.
    """
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ImageFormatError(f"expected an (H, W, 3) image, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise ImageFormatError(f"expected uint8 pixels, got {a.dtype}")
    enc = encoding.lower()
    if enc == "bgr8":
        a = a[:, :, ::-1]
    elif enc != "rgb8":
        raise ImageFormatError(f"can only encode rgb8 or bgr8, not {encoding!r}")
    h, w = a.shape[:2]
    data, flat = _new_byte_buffer(h * w * 3)
    flat.reshape(h, w, 3)[...] = a
    del flat
    return _build(
        image_cls,
        header=header,
        height=h,
        width=w,
        encoding=enc,
        is_bigendian=0,
        step=w * 3,
        data=data,
    )


# --------------------------------------------------------------------------------------
# CameraInfo
# --------------------------------------------------------------------------------------


@dataclass
class CameraModel:
    """What projection needs from a CameraInfo: intrinsics, distortion, image size."""

    width: int
    height: int
    K: np.ndarray  # (3, 3) float64
    D: np.ndarray  # (n,) float64
    R: np.ndarray  # (3, 3) float64 rectification
    P: np.ndarray  # (3, 4) float64 projection
    distortion_model: str
    frame_id: str


def _matrix(
    msg: Any,
    names: Sequence[str],
    size: int,
    shape: tuple[int, ...] | None,
    default: np.ndarray | None,
) -> np.ndarray:
    for n in names:
        v = getattr(msg, n, None)
        if v is not None:
            a = np.asarray(v, dtype=np.float64).reshape(-1)
            if size and a.size != size:
                raise ImageFormatError(f"CameraInfo.{n} has {a.size} values, expected {size}")
            return a.reshape(shape) if shape else a.copy()
    if default is None:
        raise ImageFormatError(f"CameraInfo has no {names[0]}")
    return default


def decode_camera_info(msg: Any) -> CameraModel:
    """``sensor_msgs/CameraInfo`` (ROS 2 lowercase ``k``/``d``/``p`` or ROS 1 ``K``...)."""
    try:
        width, height = int(msg.width), int(msg.height)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageFormatError(f"not a CameraInfo: {exc}") from None
    K = _matrix(msg, ("k", "K"), 9, (3, 3), None)
    if K[2, 2] == 0 or K[0, 0] == 0 or K[1, 1] == 0:
        raise ImageFormatError("CameraInfo K is not calibrated (zero focal length)")
    D = _matrix(msg, ("d", "D"), 0, None, np.zeros(0))
    R = _matrix(msg, ("r", "R"), 9, (3, 3), np.eye(3))
    P = _matrix(msg, ("p", "P"), 12, (3, 4), np.hstack([K, np.zeros((3, 1))]))
    if not P.any():
        P = np.hstack([K, np.zeros((3, 1))])
    header = getattr(msg, "header", None)
    return CameraModel(
        width=width,
        height=height,
        K=K,
        D=D,
        R=R,
        P=P,
        distortion_model=str(getattr(msg, "distortion_model", "") or ""),
        frame_id=str(getattr(header, "frame_id", "") or ""),
    )
