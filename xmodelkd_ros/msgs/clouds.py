"""PointCloud2 <-> numpy without ROS: any layout in, the input's layout kept on the way out.

Why: a vehicle driver may produce any PointCloud2 layout (Ouster's padded 48-byte
points, Velodyne's x/y/z/intensity/ring/time, organized Livox/Hesai clouds, big-endian
logs, float64 coordinates); ``sensor_msgs_py`` has no wheel and copies field by field.

* Decoding is zero-copy where the layout allows: ``msg.data`` is viewed through a
  numpy structured dtype built from the message's ``fields`` (arbitrary order,
  offsets, ``point_step`` padding, ``count`` > 1, byte order). Only clouds with
  ``row_step`` padding need one compacting copy.
* Invalid points (NaN / inf coordinates) are excluded from what the network sees
  (:attr:`DecodedCloud.xyz`) but kept in the structured array, so outputs carry every
  input point; invalid ones are labelled :data:`~xmodelkd_ros.labels.UNLABELED`.
* Output is always little-endian; the input's fields keep their offsets, so
  downstream consumers that knew the input layout still read the output.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xmodelkd_ros.labels import PALETTE, UNLABELED
from xmodelkd_ros.msgs.common import (
    CloudFormatError,
    _as_uint8,
    _build,
    _new_byte_buffer,
)

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
