"""ROS 2 bag writer for the synthetic world (sqlite3 or MCAP, through ``rosbags``).

Why: the node and the replay evaluation consume exactly what a vehicle would record, so the
bag holds realistic topics and stamps, plus ground truth for scoring:

* ``/lidar/points``: ``sensor_msgs/PointCloud2``, frame ``lidar``, 10 Hz, stamp = sweep start,
  fields ``x, y, z, intensity`` (float32), ``ring`` (uint16), ``time`` (float32, s since the
  stamp), point_step 24.
* ``/lidar/labels``: ground truth, same points and order, fields ``x, y, z, intensity``
  (float32), ``label`` (uint16, label ids 0..19), ``instance`` (uint16), point_step 20.
* ``/camera/<name>/image_raw`` (``rgb8``) and ``/camera/<name>/camera_info`` per camera,
  frame ``camera_<name>``, at the camera's own rate, a few ms after the sweep with jitter.
* ``/tf_static``: ``lidar`` -> ``camera_<name>`` (transient local).
* ``calibration.yaml`` beside the bag directory (node format), also stored in the bag
  metadata's custom data under ``xmodelkd_ros.calibration``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ..geometry import PinholeCamera, calibration_to_dict
from ..labels import raw_to_label
from .world import SimWorld

LIDAR_TOPIC = "/lidar/points"
LABEL_TOPIC = "/lidar/labels"
TF_STATIC_TOPIC = "/tf_static"
LIDAR_FRAME = "lidar"


def image_topic(name: str) -> str:
    return f"/camera/{name}/image_raw"


def info_topic(name: str) -> str:
    return f"/camera/{name}/camera_info"


_F32, _U16 = 7, 4
#: (name, offset, datatype) of the LiDAR cloud and the ground-truth cloud.
POINT_FIELDS = [("x", 0, _F32), ("y", 4, _F32), ("z", 8, _F32), ("intensity", 12, _F32),
                ("ring", 16, _U16), ("time", 20, _F32)]  # fmt: skip
LABEL_FIELDS = [("x", 0, _F32), ("y", 4, _F32), ("z", 8, _F32), ("intensity", 12, _F32),
                ("label", 16, _U16), ("instance", 18, _U16)]  # fmt: skip
POINT_DTYPE = np.dtype({"names": ["x", "y", "z", "intensity", "ring", "time"],
                        "formats": ["<f4", "<f4", "<f4", "<f4", "<u2", "<f4"],
                        "offsets": [0, 4, 8, 12, 16, 20], "itemsize": 24})  # fmt: skip
LABEL_DTYPE = np.dtype({"names": ["x", "y", "z", "intensity", "label", "instance"],
                        "formats": ["<f4", "<f4", "<f4", "<f4", "<u2", "<u2"],
                        "offsets": [0, 4, 8, 12, 16, 18], "itemsize": 20})  # fmt: skip


class _Msgs:
    """Message construction with the rosbags typestore (no ROS install needed)."""

    def __init__(self) -> None:
        self.ts = get_typestore(Stores.ROS2_HUMBLE)
        T = self.ts.types
        self.Header = T["std_msgs/msg/Header"]
        self.Time = T["builtin_interfaces/msg/Time"]
        self.PointCloud2 = T["sensor_msgs/msg/PointCloud2"]
        self.PointField = T["sensor_msgs/msg/PointField"]
        self.Image = T["sensor_msgs/msg/Image"]
        self.CameraInfo = T["sensor_msgs/msg/CameraInfo"]
        self.ROI = T["sensor_msgs/msg/RegionOfInterest"]
        self.TFMessage = T["tf2_msgs/msg/TFMessage"]
        self.TransformStamped = T["geometry_msgs/msg/TransformStamped"]
        self.Transform = T["geometry_msgs/msg/Transform"]
        self.Vector3 = T["geometry_msgs/msg/Vector3"]
        self.Quaternion = T["geometry_msgs/msg/Quaternion"]

    def header(self, stamp_ns: int, frame: str) -> Any:
        sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
        return self.Header(stamp=self.Time(sec=sec, nanosec=nsec), frame_id=frame)

    def cloud(self, stamp_ns: int, frame: str, arr: np.ndarray, fields) -> Any:
        return self.PointCloud2(
            header=self.header(stamp_ns, frame),
            height=1,
            width=len(arr),
            fields=[self.PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in fields],
            is_bigendian=False,
            point_step=arr.dtype.itemsize,
            row_step=arr.dtype.itemsize * len(arr),
            data=np.frombuffer(arr.tobytes(), dtype=np.uint8),
            is_dense=True,
        )

    def image(self, stamp_ns: int, frame: str, img: np.ndarray) -> Any:
        h, w = img.shape[:2]
        return self.Image(
            header=self.header(stamp_ns, frame),
            height=h,
            width=w,
            encoding="rgb8",
            is_bigendian=0,
            step=w * 3,
            data=np.ascontiguousarray(img).reshape(-1),
        )

    def camera_info(self, stamp_ns: int, cam) -> Any:
        D = cam.D if cam.D is not None else np.zeros(5)
        P = np.hstack([cam.K, np.zeros((3, 1))])
        return self.CameraInfo(
            header=self.header(stamp_ns, cam.frame_id),
            height=cam.height,
            width=cam.width,
            distortion_model="plumb_bob",
            d=np.asarray(D, dtype=np.float64),
            k=cam.K.ravel().astype(np.float64),
            r=np.eye(3).ravel(),
            p=P.ravel().astype(np.float64),
            binning_x=0,
            binning_y=0,
            roi=self.ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
        )

    def tf_static(self, stamp_ns: int, cameras) -> Any:
        tfs = []
        for cam in cameras:
            T = cam.T_lidar_cam
            q = rot_to_quat(T[:3, :3])
            tfs.append(
                self.TransformStamped(
                    header=self.header(stamp_ns, LIDAR_FRAME),
                    child_frame_id=cam.frame_id,
                    transform=self.Transform(
                        translation=self.Vector3(x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                        rotation=self.Quaternion(x=q[0], y=q[1], z=q[2], w=q[3]),
                    ),
                )
            )
        return self.TFMessage(transforms=tfs)


def rot_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> quaternion (x, y, z, w)."""
    m = np.asarray(R, dtype=np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, (m[k, j] - m[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
    q = np.asarray(q)
    return q / np.linalg.norm(q)


def quat_to_rot(q: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w) -> rotation matrix."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _qos(transient: bool) -> list[Qos]:
    zero = QosTime(sec=0, nsec=0)
    return [
        Qos(
            history=QosHistory.KEEP_LAST,
            depth=1 if transient else 10,
            reliability=QosReliability.RELIABLE,
            durability=QosDurability.TRANSIENT_LOCAL if transient else QosDurability.VOLATILE,
            deadline=zero,
            lifespan=zero,
            liveliness=QosLiveliness.AUTOMATIC,
            liveliness_lease_duration=zero,
            avoid_ros_namespace_conventions=False,
        )
    ]


def _schedule(world: SimWorld, scans: int, start: int) -> list[tuple[int, int, str, Any]]:
    """The bag's events in stamp order: ``(stamp, order, kind, arg)`` with kind ``lidar``
    (arg: scan index) or ``camera`` (arg: (camera, frame index)); ``order`` puts the sweep
    before the cameras (in rig order) at equal stamps. Cameras cover the sweeps' time span."""
    t_first = world.scan_stamp_ns(start)
    t_end = world.scan_stamp_ns(start + scans)
    events: list[tuple[int, int, str, Any]] = [
        (world.scan_stamp_ns(i), 0, "lidar", i) for i in range(start, start + scans)
    ]
    for k, cam in enumerate(world.cameras):
        j = world.camera_frame_near(cam.name, t_first)
        while True:
            s = world.camera_stamp_ns(cam.name, j)
            if s >= t_end:
                break
            if s >= t_first:
                events.append((s, 1 + k, "camera", (cam, j)))
            j += 1
    events.sort(key=lambda e: (e[0], e[1]))
    return events


def _sweep_arrays(
    pts: np.ndarray, raw: np.ndarray, inst: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One sweep as the ``/lidar/points`` (:data:`POINT_DTYPE`) and ``/lidar/labels``
    (:data:`LABEL_DTYPE`) point arrays."""
    a = np.zeros(len(pts), dtype=POINT_DTYPE)
    for k, name in enumerate(("x", "y", "z", "intensity")):
        a[name] = pts[:, k]
    a["ring"] = pts[:, 4].astype(np.uint16)
    a["time"] = pts[:, 5]
    g = np.zeros(len(pts), dtype=LABEL_DTYPE)
    for k, name in enumerate(("x", "y", "z", "intensity")):
        g[name] = pts[:, k]
    g["label"] = raw_to_label(raw)
    g["instance"] = inst
    return a, g


class _BagTopics:
    """The bag's connections and what each event writes to them.

    Connections are added in a fixed order (LiDAR, labels, ``/tf_static``, then image and
    camera info per camera): their ids are part of the file.
    """

    def __init__(self, w: Writer, m: _Msgs, cameras: Sequence[PinholeCamera]) -> None:
        self.w, self.m = w, m
        ts = m.ts
        self.points = w.add_connection(LIDAR_TOPIC, m.PointCloud2.__msgtype__, typestore=ts,
                                       offered_qos_profiles=_qos(False))  # fmt: skip
        self.labels = w.add_connection(LABEL_TOPIC, m.PointCloud2.__msgtype__, typestore=ts,
                                       offered_qos_profiles=_qos(False))  # fmt: skip
        self.tf = w.add_connection(TF_STATIC_TOPIC, m.TFMessage.__msgtype__, typestore=ts,
                                   offered_qos_profiles=_qos(True))  # fmt: skip
        self.images: dict[str, Any] = {}
        self.infos: dict[str, Any] = {}
        for cam in cameras:
            qos = _qos(False)
            self.images[cam.name] = w.add_connection(
                image_topic(cam.name), m.Image.__msgtype__, typestore=ts, offered_qos_profiles=qos
            )
            self.infos[cam.name] = w.add_connection(
                info_topic(cam.name), m.CameraInfo.__msgtype__, typestore=ts,
                offered_qos_profiles=qos,
            )  # fmt: skip

    def _write(self, connection: Any, log_ns: int, msg: Any) -> None:
        self.w.write(connection, log_ns, self.m.ts.serialize_cdr(msg, msg.__msgtype__))

    def tf_static(self, stamp_ns: int, cameras: Sequence[PinholeCamera]) -> None:
        self._write(self.tf, stamp_ns, self.m.tf_static(stamp_ns, cameras))

    def sweep(self, world: SimWorld, i: int, stamp_ns: int, log_ns: int) -> None:
        """Sweep ``i`` on ``/lidar/points`` and its ground truth on ``/lidar/labels``."""
        pts, raw, inst, _ = world.lidar_scan(i)
        a, g = _sweep_arrays(pts, raw, inst)
        self._write(self.points, log_ns, self.m.cloud(stamp_ns, LIDAR_FRAME, a, POINT_FIELDS))
        self._write(self.labels, log_ns, self.m.cloud(stamp_ns, LIDAR_FRAME, g, LABEL_FIELDS))

    def camera_frame(
        self, world: SimWorld, cam: PinholeCamera, stamp_ns: int, log_ns: int
    ) -> None:
        """The image of ``cam`` at ``stamp_ns`` and its camera info."""
        img, _, _ = world.render(cam, stamp_ns)
        self._write(self.images[cam.name], log_ns, self.m.image(stamp_ns, cam.frame_id, img))
        self._write(self.infos[cam.name], log_ns, self.m.camera_info(stamp_ns, cam))


def write_bag(
    out: str | Path,
    world: SimWorld,
    scans: int,
    storage: str = "sqlite3",
    start: int = 0,
    progress: bool = True,
    bag_name: str = "bag",
    transport_delay_ns: int = 2_000_000,
) -> Path:
    """Write ``scans`` sweeps (and all camera frames in their time span) of ``world``.

    Creates ``out/<bag_name>/`` (the rosbag2 directory) and ``out/calibration.yaml``.
    Returns the bag directory. Message log times are the header stamps plus
    ``transport_delay_ns``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bag_dir = out / bag_name
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    calib = calibration_to_dict(world.cameras, LIDAR_FRAME)
    (out / "calibration.yaml").write_text(yaml.safe_dump(calib, sort_keys=False))
    events = _schedule(world, scans, start)

    with Writer(bag_dir, version=8, storage_plugin=plugin) as w:
        w.set_custom_data("xmodelkd_ros.calibration", yaml.safe_dump(calib, sort_keys=False))
        topics = _BagTopics(w, _Msgs(), world.cameras)
        if world.cameras:
            topics.tf_static(world.scan_stamp_ns(start), world.cameras)
        it: Any = events
        if progress:
            from tqdm import tqdm

            it = tqdm(events, desc=f"bag ({storage})", unit="msg")
        for stamp, _, kind, arg in it:
            log = stamp + transport_delay_ns
            if kind == "lidar":
                topics.sweep(world, arg, stamp, log)
            else:
                topics.camera_frame(world, arg[0], stamp, log)
    return bag_dir
