"""PointCloud2 encoders: the input cloud with labels appended, or with classes removed.

Why apart from decoding: the node publishes several outputs from one decoded cloud
(labeled for downstream consumers, coloured for RViz, filtered for obstacle detection),
and these functions only ever write; the layout types come from :mod:`.clouds`.

* Output is always little-endian; the input's fields keep their offsets, so
  downstream consumers that knew the input layout still read the output.
* Encoding writes straight into an ``array.array('B')`` buffer (what rclpy stores for
  ``uint8[]`` fields).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from xmodelkd_ros.labels import PALETTE, UNLABELED
from xmodelkd_ros.msgs.clouds import (
    DATATYPE_SIZE,
    FLOAT32,
    UINT16,
    DecodedCloud,
    FieldSpec,
    PointCloud2,
    PointField,
    decode_cloud,
    structured_dtype,
)
from xmodelkd_ros.msgs.common import CloudFormatError, _build, _new_byte_buffer


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


def _labeled_layout(
    c: DecodedCloud, with_rgb: bool
) -> tuple[list[FieldSpec], int, int, int, int]:
    """``(kept input fields, label offset, confidence offset, rgb offset, point_step)`` of
    the labeled output: the appended fields go after the input point, aligned, and the
    step is padded to the widest field's alignment."""
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
    return kept, label_off, conf_off, rgb_off, _align(end, max_align)


def _labeled_dtype(
    kept: list[FieldSpec], label_off: int, conf_off: int, rgb_off: int | None, step: int
) -> np.dtype:
    """Little-endian structured dtype of one labeled output point (``rgb_off`` None: no rgb)."""
    names = [s.key for s in kept] + ["__label", "__confidence"]
    formats = [s.numpy_format("<") for s in kept] + ["<u2", "<f4"]
    offsets = [s.offset for s in kept] + [label_off, conf_off]
    if rgb_off is not None:
        names.append("__rgb")
        formats.append("<u4")  # written as bits; declared FLOAT32 in the PointField
        offsets.append(rgb_off)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step})


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

    kept, label_off, conf_off, rgb_off, step = _labeled_layout(c, with_rgb)
    out_dt = _labeled_dtype(kept, label_off, conf_off, rgb_off if with_rgb else None, step)

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
