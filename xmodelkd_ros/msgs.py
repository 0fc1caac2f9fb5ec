"""ROS message <-> numpy conversion without ROS: PointCloud2, Image, CompressedImage, CameraInfo.

Why this module exists: ``sensor_msgs_py`` and ``cv_bridge`` have no wheels, and the
node must accept *any* PointCloud2 layout a vehicle driver produces (Ouster's padded
48-byte points, Velodyne's x/y/z/intensity/ring/time, organized Livox/Hesai clouds,
big-endian logs, float64 coordinates). Everything here works by duck typing on
objects that carry the message's attribute names, so the tests use small stand-ins
and the node passes real ``sensor_msgs.msg`` objects.

Design points:

* Decoding is zero-copy where the layout allows: ``msg.data`` is viewed through a
  numpy structured dtype built from the message's ``fields`` (arbitrary order,
  offsets, ``point_step`` padding, ``count`` > 1, byte order). Only clouds with
  ``row_step`` padding need one compacting copy.
* Invalid points (NaN / inf coordinates) are excluded from what the network sees
  (:attr:`DecodedCloud.xyz`) but kept in the structured array, so outputs carry every
  input point; invalid ones are labelled :data:`~xmodelkd_ros.labels.UNLABELED`.
* Encoding writes straight into an ``array.array('B')`` buffer: that is what rclpy
  stores for ``uint8[]`` fields, so assigning it skips rclpy's per-element checks.
  Output is always little-endian; the input's fields keep their offsets, so
  downstream consumers that knew the input layout still read the output.
* Malformed messages raise :class:`CloudFormatError` / :class:`ImageFormatError`
  (both ``ValueError``) with a message naming the problem, never a numpy traceback.
"""

from __future__ import annotations

import array
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xmodelkd_ros.labels import PALETTE, UNLABELED

# --------------------------------------------------------------------------------------
# Errors and message stand-ins
# --------------------------------------------------------------------------------------


class MessageFormatError(ValueError):
    """A message whose content cannot be interpreted (base class)."""


class CloudFormatError(MessageFormatError):
    """A PointCloud2 whose layout is inconsistent or unsupported."""


class ImageFormatError(MessageFormatError):
    """An Image / CompressedImage / CameraInfo that cannot be decoded."""


# sensor_msgs/PointField datatype constants.
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)

#: PointField datatype id -> numpy type code (byte order added later).
DATATYPE_TO_NUMPY: dict[int, str] = {
    INT8: "i1",
    UINT8: "u1",
    INT16: "i2",
    UINT16: "u2",
    INT32: "i4",
    UINT32: "u4",
    FLOAT32: "f4",
    FLOAT64: "f8",
}
DATATYPE_SIZE: dict[int, int] = {k: int(v[1]) for k, v in DATATYPE_TO_NUMPY.items()}


@dataclass
class PointField:
    """Stand-in for ``sensor_msgs/PointField`` (same attribute names)."""

    name: str = ""
    offset: int = 0
    datatype: int = FLOAT32
    count: int = 1


@dataclass
class PointCloud2:
    """Stand-in for ``sensor_msgs/PointCloud2`` (same attribute names)."""

    header: Any = None
    height: int = 1
    width: int = 0
    fields: list[Any] = field(default_factory=list)
    is_bigendian: bool = False
    point_step: int = 0
    row_step: int = 0
    data: Any = b""
    is_dense: bool = False


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
# Buffers
# --------------------------------------------------------------------------------------


def stamp_ns(header: Any) -> int:
    """A ``std_msgs/Header`` stamp as integer nanoseconds (the key scans and images are
    matched and scored by; integers so equality is exact)."""
    st = header.stamp
    return int(st.sec) * 1_000_000_000 + int(st.nanosec)


def _as_uint8(data: Any) -> np.ndarray:
    """A flat uint8 view of a message's ``data`` (bytes, bytearray, array('B'), list...).

    Zero-copy for anything exposing the buffer protocol; rclpy hands ``array.array``.
    """
    if isinstance(data, np.ndarray):
        flat = np.ascontiguousarray(data).reshape(-1)
        return flat.view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise MessageFormatError(f"message data is not a byte sequence: {exc}") from None


def _new_byte_buffer(nbytes: int) -> tuple[array.array, np.ndarray]:
    """A zeroed ``array('B')`` for a message's ``data`` plus a writable numpy view of it."""
    buf = array.array("B", bytes(nbytes))
    return buf, np.frombuffer(buf, dtype=np.uint8) if nbytes else np.zeros(0, np.uint8)


# --------------------------------------------------------------------------------------
# PointCloud2 layout
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    """One validated PointField. ``key`` is the (unique) name in the structured dtype."""

    name: str
    offset: int
    datatype: int
    count: int
    key: str

    @property
    def nbytes(self) -> int:
        return DATATYPE_SIZE[self.datatype] * self.count

    def numpy_format(self, byteorder: str) -> Any:
        base = byteorder + DATATYPE_TO_NUMPY[self.datatype]
        return base if self.count == 1 else (base, (self.count,))


def parse_fields(fields: Iterable[Any], point_step: int) -> list[FieldSpec]:
    """Validate a message's PointFields against ``point_step``.

    ``count == 0`` (written by some drivers) is read as 1. Empty or repeated names get
    unique internal keys so numpy accepts them; their original names are preserved for
    re-encoding.
    """
    specs: list[FieldSpec] = []
    seen: set[str] = set()
    for i, f in enumerate(fields):
        try:
            name = str(f.name)
            offset = int(f.offset)
            datatype = int(f.datatype)
            count = int(getattr(f, "count", 1))
        except (AttributeError, TypeError, ValueError) as exc:
            raise CloudFormatError(f"field #{i} is not a PointField: {exc}") from None
        if datatype not in DATATYPE_TO_NUMPY:
            raise CloudFormatError(
                f"field {name!r} has unknown datatype {datatype} (expected 1..8, INT8..FLOAT64)"
            )
        count = max(count, 1)
        if offset < 0:
            raise CloudFormatError(f"field {name!r} has negative offset {offset}")
        key = name if name and name not in seen else f"__field{i}"
        seen.add(key)
        spec = FieldSpec(name, offset, datatype, count, key)
        if offset + spec.nbytes > point_step:
            raise CloudFormatError(
                f"point_step {point_step} is smaller than field {name!r} "
                f"(offset {offset} + {spec.nbytes} bytes)"
            )
        specs.append(spec)
    return specs


def structured_dtype(specs: Sequence[FieldSpec], point_step: int, big_endian: bool) -> np.dtype:
    """The numpy structured dtype that reads one point of this layout in place."""
    order = ">" if big_endian else "<"
    return np.dtype(
        {
            "names": [s.key for s in specs],
            "formats": [s.numpy_format(order) for s in specs],
            "offsets": [s.offset for s in specs],
            "itemsize": point_step,
        }
    )


@dataclass
class DecodedCloud:
    """A PointCloud2 as numpy, plus what re-encoding needs.

    ``points`` covers every point (row-major over height x width); ``valid`` marks the
    ones with finite x/y/z; ``xyz`` / ``intensity`` hold only the valid ones, which is
    what the network consumes. Labels predicted for ``xyz`` can be passed straight to
    the encoders, which scatter them back and label invalid points UNLABELED.
    """

    header: Any
    height: int
    width: int
    point_step: int
    fields: list[FieldSpec]
    points: np.ndarray  # structured, (N,), byte order of the input
    big_endian: bool
    valid: np.ndarray  # bool (N,)
    xyz: np.ndarray  # float32 (M, 3), M = valid.sum()
    intensity: np.ndarray  # float32 (M,), zeros when there is no intensity field
    intensity_found: bool

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_valid(self) -> int:
        return int(self.xyz.shape[0])

    def field(self, name: str) -> FieldSpec | None:
        """The first field with this name, or None."""
        for s in self.fields:
            if s.name == name:
                return s
        return None

    def column(self, name: str, valid_only: bool = True) -> np.ndarray:
        """Any field (first component) as float32, e.g. ``ring`` or ``time`` for features.

        ``valid_only`` aligns it with :attr:`xyz`; raises KeyError for a missing field.
        """
        spec = self.field(name)
        if spec is None:
            raise KeyError(f"cloud has no field {name!r}: {[s.name for s in self.fields]}")
        with np.errstate(over="ignore", invalid="ignore"):
            col = _first_component(self.points[spec.key]).astype(np.float32)
        return (
            np.compress(self.valid, col)
            if valid_only and self.num_valid != self.num_points
            else col
        )


def _first_component(col: np.ndarray) -> np.ndarray:
    return col[:, 0] if col.ndim == 2 else col


def decode_cloud(
    msg: Any, intensity_field: str | Sequence[str] | None = "intensity"
) -> DecodedCloud:
    """Decode any PointCloud2 layout into numpy (see :class:`DecodedCloud`).

    ``intensity_field`` names the field fed to the network as intensity (``"intensity"``,
    ``"reflectivity"``, ``"i"``...); ``None``/``""`` or a missing field gives zeros and
    ``intensity_found=False`` so the node can report it instead of failing. A sequence
    of names picks the first one present (``("intensity", "reflectivity", "i")``).
    """
    try:
        height = int(msg.height)
        width = int(msg.width)
        point_step = int(msg.point_step)
        row_step = int(msg.row_step)
        big_endian = bool(msg.is_bigendian)
        raw_fields = list(msg.fields)
    except (AttributeError, TypeError, ValueError) as exc:
        raise CloudFormatError(f"not a PointCloud2: {exc}") from None
    if height < 0 or width < 0:
        raise CloudFormatError(f"negative size {height}x{width}")
    specs = parse_fields(raw_fields, point_step)
    by_name: dict[str, FieldSpec] = {}
    for s in specs:
        by_name.setdefault(s.name, s)
    missing = [c for c in "xyz" if c not in by_name]
    if missing:
        raise CloudFormatError(
            f"cloud has no {'/'.join(missing)} field (fields: {[s.name for s in specs]})"
        )
    n = height * width
    if n and point_step <= 0:
        raise CloudFormatError(f"point_step {point_step} must be positive")
    if n and row_step < width * point_step:
        raise CloudFormatError(
            f"row_step {row_step} is smaller than width {width} x point_step {point_step}"
        )
    dt = structured_dtype(specs, max(point_step, 1), big_endian)
    buf = _as_uint8(msg.data)
    if n and buf.size < height * row_step:
        raise CloudFormatError(
            f"data has {buf.size} bytes, shorter than height {height} x row_step {row_step}"
        )

    if n == 0:
        points = np.zeros(0, dtype=dt)
    elif row_step == width * point_step:
        points = buf[: n * point_step].view(dt)  # zero-copy
    else:  # rows carry padding: one compacting copy
        rows = buf[: height * row_step].reshape(height, row_step)[:, : width * point_step]
        points = np.ascontiguousarray(rows).reshape(-1).view(dt)

    xyz_all = np.empty((n, 3), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32 -> inf
        for j, c in enumerate("xyz"):
            xyz_all[:, j] = _first_component(points[by_name[c].key])
    # Per-column isfinite + and: an axis-1 reduction over (N, 3) bools is ~20x slower.
    valid = np.isfinite(xyz_all[:, 0])
    valid &= np.isfinite(xyz_all[:, 1])
    valid &= np.isfinite(xyz_all[:, 2])
    all_valid = bool(valid.all())
    xyz = xyz_all if all_valid else np.compress(valid, xyz_all, axis=0)

    names = [intensity_field] if isinstance(intensity_field, str) else (intensity_field or [])
    ispec = next((by_name[nm] for nm in names if nm and nm in by_name), None)
    if ispec is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            inten = _first_component(points[ispec.key]).astype(np.float32)
        if not all_valid:
            inten = np.compress(valid, inten)
        if ispec.datatype in (FLOAT32, FLOAT64):
            bad = ~np.isfinite(inten)
            if bad.any():
                inten[bad] = 0.0
    else:
        inten = np.zeros(xyz.shape[0], dtype=np.float32)

    return DecodedCloud(
        header=getattr(msg, "header", None),
        height=height,
        width=width,
        point_step=point_step,
        fields=specs,
        points=points,
        big_endian=big_endian,
        valid=valid,
        xyz=xyz,
        intensity=inten,
        intensity_found=ispec is not None,
    )


def _ensure_decoded(cloud: Any) -> DecodedCloud:
    return cloud if isinstance(cloud, DecodedCloud) else decode_cloud(cloud)


def _scatter(cloud: DecodedCloud, values: Any, dtype: Any, fill: Any, what: str) -> np.ndarray:
    """Per-point values over all N points, from N values or from one per valid point."""
    v = np.asarray(values)
    if v.ndim != 1:
        v = v.reshape(-1)
    n, m = cloud.num_points, cloud.num_valid
    if v.shape[0] == n:
        out = v.astype(dtype, copy=False)
        if m != n:
            out = out.copy()
            out[~cloud.valid] = fill
        return out
    if v.shape[0] == m:
        out = np.full(n, fill, dtype=dtype)
        out[cloud.valid] = v
        return out
    raise CloudFormatError(
        f"{what} has {v.shape[0]} values; expected {n} (all points) or {m} (valid points)"
    )


def _packed_palette(palette: np.ndarray) -> np.ndarray:
    """Palette (K,3) uint8 RGB -> uint32 0x00RRGGBB, the bit pattern of PCL's packed rgb."""
    p = np.asarray(palette, dtype=np.uint32)
    return (p[:, 0] << 16) | (p[:, 1] << 8) | p[:, 2]


_PACKED_DEFAULT = _packed_palette(PALETTE)


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def _copy_points_le(
    cloud: DecodedCloud, flat: np.ndarray, step: int, src_index: np.ndarray | None
) -> None:
    """Copy the input points into the flat byte buffer ``flat`` (``step`` bytes per point,
    input fields at their input offsets) as little-endian.

    Little-endian input: one raw copy of ``point_step`` bytes per point (padding
    included), which is a memcpy per point. Big-endian input: each field converted.
    """
    ps = cloud.point_step
    if not cloud.big_endian:
        # Void view: numpy copies whole points with memcpy instead of field by field.
        src_v = cloud.points.view(f"V{ps}")
        if src_index is not None:
            src_v = np.take(src_v, src_index)
        raw_dt = np.dtype(
            {"names": ["raw"], "formats": [f"V{ps}"], "offsets": [0], "itemsize": step}
        )
        flat.view(raw_dt)["raw"] = src_v
        return
    src = cloud.points
    if src_index is not None:  # gather whole points as void, then convert field by field
        src = np.take(src.view(f"V{ps}"), src_index).view(src.dtype)
    dst = flat.view(structured_dtype(cloud.fields, step, big_endian=False))
    for s in cloud.fields:
        dst[s.key] = src[s.key]


def _fields_out(specs: Iterable[FieldSpec], field_cls: Any) -> list[Any]:
    return [
        field_cls(name=s.name, offset=s.offset, datatype=s.datatype, count=s.count) for s in specs
    ]


def encode_labeled_cloud(
    cloud: DecodedCloud | Any,
    labels: Any,
    confidence: Any = None,
    *,
    with_rgb: bool = False,
    palette: np.ndarray | None = None,
    header: Any = None,
    cloud_cls: Any = PointCloud2,
    field_cls: Any = PointField,
) -> Any:
    """The input cloud with ``label`` (uint16), ``confidence`` (float32) and optionally
    ``rgb`` (packed float32, RViz's colour convention) appended to every point.

    ``labels`` / ``confidence`` hold one value per point or one per valid point (as
    returned for :attr:`DecodedCloud.xyz`); invalid points get UNLABELED and 0.
    Input fields keep their offsets (so the input layout still reads the output);
    an input field already named ``label``/``confidence``/``rgb`` is replaced.
    Organized clouds keep height/width; the output has no row padding and is
    little-endian. ``cloud_cls`` / ``field_cls`` let the node build real messages.
    """
    c = _ensure_decoded(cloud)
    n = c.num_points
    lab = _scatter(c, labels, np.uint16, UNLABELED, "labels")
    conf = (
        np.zeros(n, np.float32)
        if confidence is None
        else _scatter(c, confidence, np.float32, 0.0, "confidence")
    )

    replaced = {"label", "confidence"} | ({"rgb"} if with_rgb else set())
    kept = [s for s in c.fields if s.name not in replaced]
    base = c.point_step
    label_off = _align(base, 2)
    conf_off = _align(label_off + 2, 4)
    end = conf_off + 4
    rgb_off = end
    if with_rgb:
        end = rgb_off + 4
    max_align = max([DATATYPE_SIZE[s.datatype] for s in c.fields] + [4])
    step = _align(end, max_align)

    names = [s.key for s in kept] + ["__label", "__confidence"]
    formats = [s.numpy_format("<") for s in kept] + ["<u2", "<f4"]
    offsets = [s.offset for s in kept] + [label_off, conf_off]
    if with_rgb:
        names.append("__rgb")
        formats.append("<u4")  # written as bits; declared FLOAT32 in the PointField
        offsets.append(rgb_off)
    out_dt = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step})

    data, flat = _new_byte_buffer(n * step)
    if n:
        _copy_points_le(c, flat, step, None)
        out = flat.view(out_dt)
        out["__label"] = lab
        out["__confidence"] = conf
        if with_rgb:
            packed = _PACKED_DEFAULT if palette is None else _packed_palette(palette)
            idx = np.where(lab < packed.shape[0], lab, UNLABELED)
            out["__rgb"] = packed[idx]
        del out
    del flat

    fields_out = _fields_out(kept, field_cls)
    fields_out.append(field_cls(name="label", offset=label_off, datatype=UINT16, count=1))
    fields_out.append(field_cls(name="confidence", offset=conf_off, datatype=FLOAT32, count=1))
    if with_rgb:
        fields_out.append(field_cls(name="rgb", offset=rgb_off, datatype=FLOAT32, count=1))
    return _build(
        cloud_cls,
        header=c.header if header is None else header,
        height=c.height,
        width=c.width,
        fields=fields_out,
        is_bigendian=False,
        point_step=step,
        row_step=c.width * step,
        data=data,
        is_dense=bool(c.valid.all()),
    )


def _build(cls: Any, header: Any, **kw: Any) -> Any:
    """Construct a message; a None header is left to the class default (rclpy's
    messages would otherwise hold None and fail to serialize)."""
    if header is not None:
        kw["header"] = header
    return cls(**kw)


def filter_mask(labels: np.ndarray, remove_labels: Iterable[int]) -> np.ndarray:
    """True for points to keep: label not in ``remove_labels`` (a 64k lookup, O(N))."""
    lut = np.ones(1 << 16, dtype=bool)
    rm = [int(x) for x in remove_labels if 0 <= int(x) < (1 << 16)]
    lut[rm] = False
    return lut[np.asarray(labels, dtype=np.uint16)]


def encode_filtered_cloud(
    cloud: DecodedCloud | Any,
    labels: Any,
    remove_labels: Iterable[int],
    *,
    drop_invalid: bool = False,
    header: Any = None,
    cloud_cls: Any = PointCloud2,
    field_cls: Any = PointField,
) -> Any:
    """The input cloud in its own format minus the points whose label is in ``remove_labels``.

    For downstream obstacle detection (e.g. drop road/vegetation). Same fields, offsets
    and ``point_step`` as the input (little-endian); the result is unorganized
    (height 1) since removing points breaks the grid. Invalid points carry UNLABELED and
    are kept unless that label is removed or ``drop_invalid`` is set.
    """
    c = _ensure_decoded(cloud)
    lab = _scatter(c, labels, np.uint16, UNLABELED, "labels")
    keep = filter_mask(lab, remove_labels)
    if drop_invalid:
        keep &= c.valid
    idx = np.flatnonzero(keep)
    m = int(idx.size)
    ps = c.point_step
    data, flat = _new_byte_buffer(m * ps)
    if m:
        _copy_points_le(c, flat, ps, idx)
    del flat
    return _build(
        cloud_cls,
        header=c.header if header is None else header,
        height=1,
        width=m,
        fields=_fields_out(c.fields, field_cls),
        is_bigendian=False,
        point_step=ps,
        row_step=m * ps,
        data=data,
        is_dense=bool(c.valid[idx].all()) if m else True,
    )


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
