"""Tests for xmodelkd_ros.msgs against an independent, slow per-point struct decoder."""

from __future__ import annotations

import array
import io
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xmodelkd_ros import msgs as M
from xmodelkd_ros.labels import PALETTE, UNLABELED

STRUCT_CHAR = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}
SIZE = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}


# ---------------------------------------------------------------- stand-in messages


@dataclass
class Field:
    name: str
    offset: int
    datatype: int
    count: int = 1


@dataclass
class Header:
    frame_id: str = "lidar"
    stamp: Any = 123


@dataclass
class Cloud:
    header: Any = field(default_factory=Header)
    height: int = 1
    width: int = 0
    fields: list = field(default_factory=list)
    is_bigendian: bool = False
    point_step: int = 0
    row_step: int = 0
    data: Any = b""
    is_dense: bool = False


# ---------------------------------------------------------------- reference decoder


def ref_decode(msg: Any) -> list[dict[str, tuple]]:
    """Per-point struct.unpack; the first field of a name wins, like decode_cloud."""
    order = ">" if msg.is_bigendian else "<"
    data = bytes(msg.data)
    points = []
    for r in range(msg.height):
        for c in range(msg.width):
            base = r * msg.row_step + c * msg.point_step
            p: dict[str, tuple] = {}
            for f in msg.fields:
                if f.name in p:
                    continue
                n = max(f.count, 1)
                fmt = order + STRUCT_CHAR[f.datatype] * n
                p[f.name] = struct.unpack_from(fmt, data, base + f.offset)
            points.append(p)
    return points


def to_f32(v: float) -> float:
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.float32(v))


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


# ---------------------------------------------------------------- random layouts

EXTRA_NAMES = ["intensity", "ring", "t", "reflectivity", "i", "range"]


@st.composite
def layouts(draw: Any) -> tuple[Cloud, dict]:
    names = ["x", "y", "z", *draw(st.lists(st.sampled_from(EXTRA_NAMES), unique=True, max_size=4))]
    names = draw(st.permutations(names))
    fields = []
    off = 0
    for name in names:
        dtype = draw(st.integers(1, 8))
        count = 1 if name in "xyz" else draw(st.integers(0, 3))  # 0 is read as 1
        off += draw(st.integers(0, 3))  # gaps: unaligned offsets and padding
        fields.append(Field(name, off, dtype, count))
        off += SIZE[dtype] * max(count, 1)
    point_step = off + draw(st.integers(0, 9))
    height = draw(st.integers(1, 3))
    width = draw(st.integers(0, 7))
    row_step = width * point_step + draw(st.sampled_from([0, 0, 1, 5]))
    big = draw(st.booleans())
    nbytes = height * row_step + draw(st.integers(0, 3))
    raw = bytearray(draw(st.binary(min_size=nbytes, max_size=nbytes)))
    # Inject NaN/inf coordinates on some points (float fields only).
    order = ">" if big else "<"
    for r in range(height):
        for c in range(width):
            if draw(st.integers(0, 4)) == 0:
                f = draw(st.sampled_from(fields[:]))
                if f.name in "xyz" and f.datatype in (7, 8):
                    v = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
                    struct.pack_into(
                        order + STRUCT_CHAR[f.datatype],
                        raw,
                        r * row_step + c * point_step + f.offset,
                        v,
                    )
    data_kind = draw(st.sampled_from(["bytes", "array", "bytearray"]))
    data: Any = {"bytes": bytes, "bytearray": bytearray, "array": lambda b: array.array("B", b)}[
        data_kind
    ](raw)
    cloud = Cloud(
        height=height,
        width=width,
        fields=fields,
        is_bigendian=big,
        point_step=point_step,
        row_step=row_step,
        data=data,
    )
    intensity = draw(st.sampled_from([None, "intensity", "reflectivity", "i"]))
    return cloud, {"intensity": intensity}


FAST = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FAST
@given(layouts())
def test_decode_matches_reference(case: tuple[Cloud, dict]) -> None:
    cloud, opts = case
    ref = ref_decode(cloud)
    d = M.decode_cloud(cloud, intensity_field=opts["intensity"])
    assert d.num_points == len(ref) == cloud.height * cloud.width
    assert (d.height, d.width) == (cloud.height, cloud.width)
    # Every field of every point.
    for i, p in enumerate(ref):
        for f in d.fields:
            got = np.atleast_1d(d.points[f.key][i]).tolist()
            assert all(same(float(a), float(b)) for a, b in zip(got, p[f.name], strict=True))
    # Valid mask, xyz and intensity of valid points.
    exp_valid = [all(math.isfinite(to_f32(p[c][0])) for c in "xyz") for p in ref]
    assert d.valid.tolist() == exp_valid
    valid_pts = [p for p, v in zip(ref, exp_valid, strict=True) if v]
    assert d.xyz.dtype == np.float32 and d.xyz.shape == (len(valid_pts), 3)
    for row, p in zip(d.xyz.tolist(), valid_pts, strict=True):
        assert row == [to_f32(p[c][0]) for c in "xyz"]
    name = opts["intensity"]
    assert d.intensity.shape == (len(valid_pts),)
    if name and any(f.name == name for f in cloud.fields):
        assert d.intensity_found
        exp = [to_f32(p[name][0]) for p in valid_pts]
        exp = [v if math.isfinite(v) else 0.0 for v in exp]
        assert d.intensity.tolist() == exp
    else:
        assert not d.intensity_found
        assert not d.intensity.any()


@FAST
@given(layouts(), st.data())
def test_encode_labeled_roundtrip(case: tuple[Cloud, dict], data: Any) -> None:
    cloud, _ = case
    d = M.decode_cloud(cloud)
    with_rgb = data.draw(st.booleans())
    per_valid = data.draw(st.booleans())
    n = d.num_valid if per_valid else d.num_points
    labels = np.asarray(
        data.draw(st.lists(st.integers(0, 25), min_size=n, max_size=n)), dtype=np.int64
    )
    conf = np.linspace(0.0, 1.0, n, dtype=np.float32)
    out = M.encode_labeled_cloud(d, labels, conf, with_rgb=with_rgb)
    assert out.header is cloud.header
    assert (out.height, out.width) == (cloud.height, cloud.width)
    assert out.is_bigendian is False
    assert out.row_step == out.width * out.point_step
    assert len(out.data) == out.height * out.row_step
    assert isinstance(out.data, array.array) and out.data.typecode == "B"
    names = [f.name for f in out.fields]
    assert names[-3 if with_rgb else -2 :] == (
        ["label", "confidence", "rgb"] if with_rgb else ["label", "confidence"]
    )
    ref_in = ref_decode(cloud)
    ref_out = ref_decode(out)
    # Scatter expected labels over all points.
    full_lab = np.zeros(d.num_points, np.int64)
    full_conf = np.zeros(d.num_points, np.float32)
    if per_valid:
        full_lab[d.valid] = labels
        full_conf[d.valid] = conf
    else:
        full_lab[:] = np.where(d.valid, labels, UNLABELED)
        full_conf[:] = np.where(d.valid, conf, 0.0)
    packed = {i: (int(r) << 16) | (int(g) << 8) | int(b) for i, (r, g, b) in enumerate(PALETTE)}
    for i, (pi, po) in enumerate(zip(ref_in, ref_out, strict=True)):
        for name, vals in pi.items():
            if name in ("label", "confidence", "rgb"):
                continue
            assert all(same(float(a), float(b)) for a, b in zip(vals, po[name], strict=True))
        assert po["label"] == (int(full_lab[i]),)
        assert po["confidence"][0] == float(full_conf[i])
        if with_rgb:
            bits = struct.unpack("<I", struct.pack("<f", po["rgb"][0]))[0]
            assert bits == packed.get(int(full_lab[i]), 0)
    # Decoding the output again gives the same geometry.
    d2 = M.decode_cloud(out)
    assert d2.valid.tolist() == d.valid.tolist()
    assert np.array_equal(d2.xyz, d.xyz)


@FAST
@given(layouts(), st.data())
def test_encode_filtered_matches_reference(case: tuple[Cloud, dict], data: Any) -> None:
    cloud, _ = case
    d = M.decode_cloud(cloud)
    labels = np.asarray(
        data.draw(st.lists(st.integers(0, 5), min_size=d.num_points, max_size=d.num_points)),
        dtype=np.uint16,
    )
    remove = data.draw(st.sets(st.integers(0, 5), max_size=3))
    drop_invalid = data.draw(st.booleans())
    out = M.encode_filtered_cloud(d, labels, remove, drop_invalid=drop_invalid)
    eff = np.where(d.valid, labels, UNLABELED)
    keep = [
        i
        for i in range(d.num_points)
        if int(eff[i]) not in remove and (d.valid[i] or not drop_invalid)
    ]
    assert out.height == 1 and out.width == len(keep)
    assert out.point_step == cloud.point_step and out.is_bigendian is False
    assert [(f.name, f.offset, f.datatype, f.count) for f in out.fields] == [
        (f.name, f.offset, f.datatype, max(f.count, 1)) for f in cloud.fields
    ]
    ref_in = ref_decode(cloud)
    ref_out = ref_decode(out)
    assert len(ref_out) == len(keep)
    for i, po in zip(keep, ref_out, strict=True):
        for name, vals in ref_in[i].items():
            assert all(same(float(a), float(b)) for a, b in zip(vals, po[name], strict=True))


# ---------------------------------------------------------------- concrete layouts


def ouster_cloud(n: int = 64, big: bool = False) -> tuple[Cloud, np.ndarray]:
    """Ouster-style 48-byte points: x y z pad intensity t reflectivity ring ambient range."""
    order = ">" if big else "<"
    dt = np.dtype(
        {
            "names": ["x", "y", "z", "intensity", "t", "reflectivity", "ring", "ambient", "range"],
            "formats": [order + f for f in ["f4", "f4", "f4", "f4", "u4", "u2", "u2", "u2", "u4"]],
            "offsets": [0, 4, 8, 16, 20, 24, 26, 28, 32],
            "itemsize": 48,
        }
    )
    rng = np.random.default_rng(0)
    a = np.zeros(n, dt)
    for c in "xyz":
        a[c] = rng.normal(size=n) * 10
    a["intensity"] = rng.uniform(0, 100, n)
    a["reflectivity"] = np.arange(n)
    a["ring"] = np.arange(n) % 16
    a["x"][3] = np.nan
    a["z"][7] = np.inf
    types = {"f4": 7, "u4": 6, "u2": 4}
    fields = [Field(nm, dt.fields[nm][1], types[dt.fields[nm][0].str[1:]]) for nm in dt.names]
    cloud = Cloud(
        height=1,
        width=n,
        fields=fields,
        is_bigendian=big,
        point_step=48,
        row_step=48 * n,
        data=a.tobytes(),
    )
    return cloud, a


def test_ouster_layout_zero_copy_and_invalid_points() -> None:
    cloud, _a = ouster_cloud()
    d = M.decode_cloud(cloud, intensity_field="reflectivity")
    assert np.shares_memory(d.points, np.frombuffer(cloud.data, np.uint8))
    assert d.num_points == 64 and d.num_valid == 62
    assert not d.valid[3] and not d.valid[7]
    assert np.array_equal(d.intensity, np.delete(np.arange(64), [3, 7]).astype(np.float32))
    labels = np.full(d.num_valid, 9)
    out = M.encode_labeled_cloud(d, labels, np.ones(d.num_valid), with_rgb=True)
    back = M.decode_cloud(out)
    assert back.points["label"][3] == UNLABELED and back.points["label"][0] == 9
    assert back.points["confidence"][7] == 0.0
    assert out.point_step % 4 == 0 and out.point_step >= 48 + 12
    assert out.is_dense is False
    assert np.array_equal(d.column("ring"), np.delete(np.arange(64) % 16, [3, 7]))
    assert d.column("ring", valid_only=False).shape == (64,)
    with pytest.raises(KeyError, match="no field"):
        d.column("nope")
    auto = M.decode_cloud(cloud, intensity_field=("i", "reflectivity", "intensity"))
    assert auto.intensity_found and np.array_equal(auto.intensity, d.intensity)


def test_big_endian_output_is_little_endian() -> None:
    cloud, a = ouster_cloud(big=True)
    d = M.decode_cloud(cloud)
    assert d.big_endian
    out = M.encode_filtered_cloud(d, np.zeros(d.num_valid), [])
    back = M.decode_cloud(out)
    assert not back.big_endian
    assert np.array_equal(back.points["range"], a["range"])
    assert np.array_equal(back.points["y"], a["y"])


def test_organized_cloud_keeps_shape_and_row_padding_removed() -> None:
    h, w, ps = 4, 5, 16
    raw = bytearray(h * (w * ps + 8))
    for r in range(h):
        for c in range(w):
            struct.pack_into("<ffff", raw, r * (w * ps + 8) + c * ps, r, c, 1.0, 7.0)
    fields = [Field("x", 0, 7), Field("y", 4, 7), Field("z", 8, 7), Field("intensity", 12, 7)]
    cloud = Cloud(
        height=h, width=w, fields=fields, point_step=ps, row_step=w * ps + 8, data=bytes(raw)
    )
    d = M.decode_cloud(cloud)
    assert d.xyz[:, 0].reshape(h, w)[:, 0].tolist() == [0, 1, 2, 3]
    out = M.encode_labeled_cloud(d, np.arange(h * w) % 3)
    assert (out.height, out.width, out.row_step) == (h, w, w * out.point_step)
    assert M.decode_cloud(out).points["label"].reshape(h, w)[1].tolist() == [2, 0, 1, 2, 0]


def test_existing_label_field_is_replaced() -> None:
    fields = [Field("x", 0, 7), Field("y", 4, 7), Field("z", 8, 7), Field("label", 12, 4)]
    cloud = Cloud(width=2, fields=fields, point_step=16, row_step=32, data=bytes(32))
    out = M.encode_labeled_cloud(cloud, [5, 6])
    assert [f.name for f in out.fields].count("label") == 1
    assert M.decode_cloud(out).points["label"].tolist() == [5, 6]


def test_real_message_classes_via_kwargs() -> None:
    """The node passes sensor_msgs classes; they are constructed with keyword arguments."""
    made: list[str] = []

    class Msg:
        def __init__(self, **kw: Any) -> None:
            made.append(type(self).__name__)
            self.__dict__.update(kw)

    class PF(Msg):
        pass

    class PC2(Msg):
        pass

    cloud, _ = ouster_cloud(8)
    out = M.encode_labeled_cloud(cloud, np.zeros(8), cloud_cls=PC2, field_cls=PF)
    assert isinstance(out, PC2) and all(isinstance(f, PF) for f in out.fields)
    out = M.encode_filtered_cloud(cloud, np.zeros(8), [1], cloud_cls=PC2, field_cls=PF)
    assert isinstance(out, PC2) and out.width == 8


def test_list_data_and_empty_cloud() -> None:
    fields = [Field("x", 0, 7), Field("y", 4, 7), Field("z", 8, 7)]
    cloud = Cloud(
        width=1, fields=fields, point_step=12, row_step=12, data=list(struct.pack("<fff", 1, 2, 3))
    )
    assert M.decode_cloud(cloud).xyz.tolist() == [[1, 2, 3]]
    empty = Cloud(width=0, fields=fields, point_step=12, row_step=0, data=b"")
    d = M.decode_cloud(empty)
    assert d.xyz.shape == (0, 3)
    out = M.encode_labeled_cloud(d, np.zeros(0), with_rgb=True)
    assert out.width == 0 and len(out.data) == 0


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda c: c.fields.pop(2), "no z"),
        (lambda c: setattr(c, "data", c.data[:-1]), "shorter"),
        (lambda c: setattr(c, "point_step", 10), "point_step 10 is smaller"),
        (lambda c: setattr(c.fields[1], "datatype", 9), "unknown datatype 9"),
        (lambda c: setattr(c, "row_step", 5), "row_step 5"),
        (lambda c: setattr(c, "data", "not bytes"), "byte"),
    ],
)
def test_clear_errors(mutate: Any, words: str) -> None:
    fields = [Field("x", 0, 7), Field("y", 4, 7), Field("z", 8, 7)]
    cloud = Cloud(width=3, fields=fields, point_step=12, row_step=36, data=bytes(36))
    mutate(cloud)
    with pytest.raises(
        M.CloudFormatError if words != "byte" else M.MessageFormatError, match=words
    ):
        M.decode_cloud(cloud)


def test_label_count_mismatch_is_clear() -> None:
    cloud, _ = ouster_cloud(8)
    with pytest.raises(M.CloudFormatError, match="expected 8"):
        M.encode_labeled_cloud(cloud, np.zeros(5))


# ---------------------------------------------------------------- images


@dataclass
class Img:
    height: int
    width: int
    encoding: str
    step: int
    data: Any
    is_bigendian: int = 0
    header: Any = None


def _image_msg(rgb: np.ndarray, encoding: str, pad: int, big: bool = False) -> Img:
    h, w, _ = rgb.shape
    if encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
        ch = {"rgb8": rgb, "bgr8": rgb[..., ::-1]}.get(encoding)
        if ch is None:
            alpha = np.full((h, w, 1), 77, np.uint8)
            base = rgb if encoding == "rgba8" else rgb[..., ::-1]
            ch = np.concatenate([base, alpha], axis=2)
        rows = ch.reshape(h, -1)
    elif encoding == "mono8":
        rows = rgb[..., 0]
    else:  # mono16
        rows = (rgb[..., 0].astype(np.uint16) << 8).astype(">u2" if big else "<u2")
        rows = rows.view(np.uint8).reshape(h, -1)
    padded = np.zeros((h, rows.shape[1] + pad), np.uint8)
    padded[:, : rows.shape[1]] = rows
    return Img(h, w, encoding, rows.shape[1] + pad, padded.tobytes(), int(big))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("big", [False, True])
def test_decode_image_encodings(encoding: str, pad: int, big: bool) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    if encoding.startswith("mono"):
        rgb[..., 1] = rgb[..., 2] = rgb[..., 0]
    msg = _image_msg(rgb, encoding, pad, big)
    out = M.decode_image(msg)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    assert np.array_equal(out, rgb)


def test_image_errors_and_encode_roundtrip() -> None:
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    msg = M.encode_image(rgb, header="h")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (4, 6, 18, "rgb8")
    assert np.array_equal(M.decode_image(msg), rgb)
    bgr = M.encode_image(rgb, encoding="bgr8")
    assert np.array_equal(M.image_to_rgb(bgr), rgb)
    with pytest.raises(M.ImageFormatError, match="unsupported image encoding"):
        M.decode_image(Img(1, 1, "yuv422", 2, b"\0\0"))
    with pytest.raises(M.ImageFormatError, match="bytes"):
        M.decode_image(Img(2, 2, "rgb8", 6, b"\0" * 7))
    with pytest.raises(M.ImageFormatError, match="step"):
        M.decode_image(Img(2, 2, "rgb8", 5, b"\0" * 12))
    with pytest.raises(M.ImageFormatError):
        M.encode_image(rgb.astype(np.float32))


def test_compressed_images() -> None:
    from PIL import Image as PILImage

    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="PNG")
    out = M.image_to_rgb(M.CompressedImage(format="png", data=buf.getvalue()))
    assert np.array_equal(out, rgb)
    smooth = np.zeros((16, 16, 3), np.uint8)
    smooth[..., 0] = 200
    smooth[..., 2] = 50
    buf = io.BytesIO()
    PILImage.fromarray(smooth).save(buf, format="JPEG", quality=95)
    out = M.decode_compressed_image(
        M.CompressedImage(
            format="rgb8; jpeg compressed bgr8", data=array.array("B", buf.getvalue())
        )
    )
    assert out.shape == (16, 16, 3) and np.abs(out.astype(int) - smooth).max() <= 4
    with pytest.raises(M.ImageFormatError, match="cannot decode"):
        M.decode_compressed_image(M.CompressedImage(format="jpeg", data=b"garbage"))
    with pytest.raises(M.ImageFormatError, match="depth"):
        M.decode_compressed_image(M.CompressedImage(format="16UC1; compressedDepth", data=b"x"))


@dataclass
class Info:
    width: int = 640
    height: int = 480
    k: Any = (500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0)
    d: Any = (0.1, -0.01, 0.0, 0.0, 0.0)
    r: Any = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    p: Any = (0.0,) * 12
    distortion_model: str = "plumb_bob"
    header: Any = field(default_factory=lambda: Header(frame_id="cam_front"))


def test_camera_info() -> None:
    cam = M.decode_camera_info(Info())
    assert cam.K.shape == (3, 3) and cam.K[0, 0] == 500 and cam.K[1, 2] == 240
    assert cam.D.tolist() == [0.1, -0.01, 0.0, 0.0, 0.0]
    assert cam.P.shape == (3, 4) and cam.P[0, 0] == 500  # all-zero P falls back to [K|0]
    assert (cam.width, cam.height, cam.frame_id) == (640, 480, "cam_front")
    with pytest.raises(M.ImageFormatError, match="9"):
        M.decode_camera_info(Info(k=(1.0, 2.0)))
    with pytest.raises(M.ImageFormatError, match="focal"):
        M.decode_camera_info(Info(k=(0.0,) * 9))


def test_real_sensor_msgs_serialization_roundtrip() -> None:
    """Where the ROS wheels are installed, outputs serialize as real messages."""
    sm = pytest.importorskip("sensor_msgs.msg")
    ser = pytest.importorskip("rclpy.serialization")
    std = pytest.importorskip("std_msgs.msg")
    cloud, _ = ouster_cloud(32)
    real = sm.PointCloud2(
        header=std.Header(frame_id="os_lidar"),
        height=1,
        width=32,
        fields=[
            sm.PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
            for f in cloud.fields
        ],
        point_step=48,
        row_step=48 * 32,
    )
    real.data = cloud.data
    real = ser.deserialize_message(ser.serialize_message(real), sm.PointCloud2)
    d = M.decode_cloud(real)
    out = M.encode_labeled_cloud(
        d,
        np.full(d.num_valid, 3),
        with_rgb=True,
        cloud_cls=sm.PointCloud2,
        field_cls=sm.PointField,
    )
    back = ser.deserialize_message(ser.serialize_message(out), sm.PointCloud2)
    d2 = M.decode_cloud(back)
    assert back.header.frame_id == "os_lidar"
    assert np.array_equal(d2.xyz, d.xyz) and d2.points["label"][0] == 3
    filt = M.encode_filtered_cloud(
        d, np.full(d.num_valid, 3), [3], cloud_cls=sm.PointCloud2, field_cls=sm.PointField
    )
    assert ser.deserialize_message(ser.serialize_message(filt), sm.PointCloud2).width == 2
    img = M.encode_image(np.full((4, 5, 3), 9, np.uint8), image_cls=sm.Image)
    img = ser.deserialize_message(ser.serialize_message(img), sm.Image)
    assert (M.decode_image(img) == 9).all()
    info = sm.CameraInfo(width=640, height=480)
    info.k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
    assert M.decode_camera_info(info).K[0, 2] == 320.0
