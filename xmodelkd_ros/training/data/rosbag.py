"""Unlabeled ROS 2 bags (read with ``rosbags``, no ROS install): LiDAR + camera pairs.

The label-free contrastive stage (``pretrain``) only needs scans with synchronized
images and the rig calibration, which is what a vehicle records anyway. Each LiDAR
message is paired with the image of every camera topic whose header stamp is nearest,
within ``max_dt`` seconds; scans missing a camera are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xmodelkd_ros.geometry import PinholeCamera, load_calibration
from xmodelkd_ros.msgs import decode_cloud, image_to_rgb
from xmodelkd_ros.training.data.sample import Sample
from xmodelkd_ros.training.data.semantickitti import DatasetError


def _stamp_ns(msg: object, fallback: int) -> int:
    header = getattr(msg, "header", None)
    stamp = getattr(header, "stamp", None)
    if stamp is None:
        return fallback
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class RosbagPairs:
    """``camera_topics[i]`` is seen through the calibration entry named ``camera_names[i]``
    (by default the calibration's cameras in order)."""

    class_names: tuple[str, ...] = ()

    def __init__(
        self,
        bag: str | Path,
        lidar_topic: str,
        camera_topics: list[str],
        calibration: str | Path,
        camera_names: list[str] | None = None,
        max_dt: float = 0.05,
        limit: int | None = None,
    ) -> None:
        from rosbags.highlevel import AnyReader

        bag = Path(bag)
        if not bag.exists():
            raise DatasetError(f"bag {bag} does not exist")
        if not Path(calibration).is_file():
            raise DatasetError(f"calibration file {calibration} does not exist")
        cams = {c.name: c for c in load_calibration(str(calibration))}
        names = camera_names or list(cams)[: len(camera_topics)]
        if len(names) != len(camera_topics) or any(n not in cams for n in names):
            raise DatasetError(
                f"cannot match camera topics {camera_topics} to calibration {list(cams)}"
            )
        self.cameras: list[PinholeCamera] = [cams[n] for n in names]
        self.samples: list[Sample] = []
        with AnyReader([bag]) as reader:
            topics = {c.topic for c in reader.connections}
            missing = [t for t in [lidar_topic, *camera_topics] if t not in topics]
            if missing:
                raise DatasetError(f"bag {bag} lacks topics {missing}; has {sorted(topics)}")
            conns = [c for c in reader.connections if c.topic in {lidar_topic, *camera_topics}]
            clouds: list[tuple[int, object]] = []
            images: dict[str, list[tuple[int, object]]] = {t: [] for t in camera_topics}
            for conn, t, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                entry = (_stamp_ns(msg, t), msg)
                (clouds if conn.topic == lidar_topic else images[conn.topic]).append(entry)
        for stamp, cloud in clouds:
            pair = []
            for topic in camera_topics:
                if not images[topic]:
                    break
                dts = [abs(s - stamp) for s, _ in images[topic]]
                k = int(np.argmin(dts))
                if dts[k] > max_dt * 1e9:
                    break
                pair.append(image_to_rgb(images[topic][k][1]))
            else:
                dec = decode_cloud(cloud)
                pts = np.concatenate([dec.xyz, dec.intensity[:, None]], axis=1)
                self.samples.append(
                    Sample(pts, None, pair, list(self.cameras), name=f"{bag.name}@{stamp}")
                )
                if limit and len(self.samples) >= limit:
                    break
        if not self.samples:
            raise DatasetError(f"no LiDAR scan in {bag} has all cameras within {max_dt} s")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]
