"""PointCloud2 layout and decoding without ROS: any layout a driver produces, read in place.

Why: a vehicle driver may produce any PointCloud2 layout (Ouster's padded 48-byte
points, Velodyne's x/y/z/intensity/ring/time, organized Livox/Hesai clouds, big-endian
logs, float64 coordinates); ``sensor_msgs_py`` has no wheel and copies field by field.
The encoders (:mod:`.cloud_encoders`) build on the layout types defined here.

* Decoding is zero-copy where the layout allows: ``msg.data`` is viewed through a
  numpy structured dtype built from the message's ``fields`` (arbitrary order,
  offsets, ``point_step`` padding, ``count`` > 1, byte order). Only clouds with
  ``row_step`` padding need one compacting copy.
* Invalid points (NaN / inf coordinates) are excluded from what the network sees
  (:attr:`DecodedCloud.xyz`) but kept in the structured array, so outputs carry every
  input point; invalid ones are labelled :data:`~xmodelkd_ros.labels.UNLABELED`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xmodelkd_ros.msgs.common import CloudFormatError, _as_uint8

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


def _read_header(msg: Any) -> tuple[int, int, int, int, bool, list[Any]]:
    """``(height, width, point_step, row_step, is_bigendian, fields)`` of a PointCloud2."""
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
    return height, width, point_step, row_step, big_endian, raw_fields


def _check_geometry(
    specs: list[FieldSpec], by_name: dict[str, FieldSpec], n: int, width: int,
    point_step: int, row_step: int,
) -> None:  # fmt: skip
    """x/y/z present; ``point_step`` and ``row_step`` large enough for ``n`` points."""
    missing = [c for c in "xyz" if c not in by_name]
    if missing:
        raise CloudFormatError(
            f"cloud has no {'/'.join(missing)} field (fields: {[s.name for s in specs]})"
        )
    if n and point_step <= 0:
        raise CloudFormatError(f"point_step {point_step} must be positive")
    if n and row_step < width * point_step:
        raise CloudFormatError(
            f"row_step {row_step} is smaller than width {width} x point_step {point_step}"
        )


def _view_points(
    data: Any, dt: np.dtype, height: int, width: int, point_step: int, row_step: int
) -> np.ndarray:
    """``data`` as (height * width,) points of ``dt``: a view, or one compacting copy
    when rows carry padding."""
    n = height * width
    buf = _as_uint8(data)
    if n and buf.size < height * row_step:
        raise CloudFormatError(
            f"data has {buf.size} bytes, shorter than height {height} x row_step {row_step}"
        )
    if n == 0:
        return np.zeros(0, dtype=dt)
    if row_step == width * point_step:
        return buf[: n * point_step].view(dt)  # zero-copy
    rows = buf[: height * row_step].reshape(height, row_step)[:, : width * point_step]
    return np.ascontiguousarray(rows).reshape(-1).view(dt)


def _finite_xyz(
    points: np.ndarray, by_name: dict[str, FieldSpec]
) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(valid, xyz of the valid points as float32, all points valid)``."""
    xyz_all = np.empty((points.shape[0], 3), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32 -> inf
        for j, c in enumerate("xyz"):
            xyz_all[:, j] = _first_component(points[by_name[c].key])
    # Per-column isfinite + and: an axis-1 reduction over (N, 3) bools is ~20x slower.
    valid = np.isfinite(xyz_all[:, 0])
    valid &= np.isfinite(xyz_all[:, 1])
    valid &= np.isfinite(xyz_all[:, 2])
    all_valid = bool(valid.all())
    xyz = xyz_all if all_valid else np.compress(valid, xyz_all, axis=0)
    return valid, xyz, all_valid


def _intensity_of_valid(
    points: np.ndarray, ispec: FieldSpec | None, valid: np.ndarray, all_valid: bool,
    num_valid: int,
) -> np.ndarray:  # fmt: skip
    """float32 intensity of the valid points (non-finite floats read as 0; zeros when the
    cloud has no intensity field)."""
    if ispec is None:
        return np.zeros(num_valid, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        inten = _first_component(points[ispec.key]).astype(np.float32)
    if not all_valid:
        inten = np.compress(valid, inten)
    if ispec.datatype in (FLOAT32, FLOAT64):
        bad = ~np.isfinite(inten)
        if bad.any():
            inten[bad] = 0.0
    return inten


def decode_cloud(
    msg: Any, intensity_field: str | Sequence[str] | None = "intensity"
) -> DecodedCloud:
    """Decode any PointCloud2 layout into numpy (see :class:`DecodedCloud`).

    ``intensity_field`` names the field fed to the network as intensity (``"intensity"``,
    ``"reflectivity"``, ``"i"``...); ``None``/``""`` or a missing field gives zeros and
    ``intensity_found=False`` so the node can report it instead of failing. A sequence
    of names picks the first one present (``("intensity", "reflectivity", "i")``).
    """
    height, width, point_step, row_step, big_endian, raw_fields = _read_header(msg)
    specs = parse_fields(raw_fields, point_step)
    by_name: dict[str, FieldSpec] = {}
    for s in specs:
        by_name.setdefault(s.name, s)
    _check_geometry(specs, by_name, height * width, width, point_step, row_step)
    dt = structured_dtype(specs, max(point_step, 1), big_endian)
    points = _view_points(msg.data, dt, height, width, point_step, row_step)
    valid, xyz, all_valid = _finite_xyz(points, by_name)
    names = [intensity_field] if isinstance(intensity_field, str) else (intensity_field or [])
    ispec = next((by_name[nm] for nm in names if nm and nm in by_name), None)
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
        intensity=_intensity_of_valid(points, ispec, valid, all_valid, xyz.shape[0]),
        intensity_found=ispec is not None,
    )
