"""nuScenes-lidarseg reader: label folding, files and the ego-motion-compensated calibration.

The geometry and label logic run against a small in-memory stand-in for the devkit's
``NuScenes`` tables (always); the devkit-backed path is skipped when nuscenes-devkit is
not installed.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xmodelkd_ros.training.data.nuscenes import (
    CLASS_NAMES,
    NuScenesLidarseg,
    learning_lut,
    quat_to_matrix,
)
from xmodelkd_ros.training.data.sample import IGNORE_INDEX
from xmodelkd_ros.training.data.semantickitti import DatasetError

IDX2NAME = {0: "noise", 9: "movable_object.barrier", 17: "vehicle.car",
            24: "flat.driveable_surface", 31: "vehicle.ego", 30: "static.vegetation"}  # fmt: skip


def _yaw_quat(deg: float) -> list[float]:
    a = np.deg2rad(deg) / 2
    return [float(np.cos(a)), 0.0, 0.0, float(np.sin(a))]


class FakeNuScenes:
    def __init__(self, root, tables):
        self.dataroot = str(root)
        self.tables = tables
        self.sample = tables["sample"]
        self.lidarseg_idx2name_mapping = IDX2NAME

    def get(self, table, token):
        return next(r for r in self.tables[table] if r["token"] == token)


def _fixture(tmp_path):
    rng = np.random.default_rng(0)
    pts = np.zeros((200, 5), np.float32)
    pts[:, 0] = rng.uniform(-5, 5, 200)  # the LiDAR is mounted yawed by -90 degrees:
    pts[:, 1] = rng.uniform(5, 30, 200)  # its +y axis looks forward
    pts[:, 2] = rng.uniform(-1, 1, 200)
    pts[:, 3] = rng.uniform(0, 255, 200)
    (tmp_path / "samples").mkdir()
    pts.tofile(tmp_path / "samples" / "lidar.pcd.bin")
    raw = rng.choice(list(IDX2NAME), 200).astype(np.uint8)
    raw.tofile(tmp_path / "samples" / "lidar_lidarseg.bin")
    Image.fromarray(np.zeros((90, 160, 3), np.uint8)).save(tmp_path / "samples" / "front.jpg")
    K = [[100.0, 0, 80], [0, 100, 45], [0, 0, 1]]
    # Camera: optical axes (x right, y down, z forward) looking along the ego x axis.
    cam_rot = [0.5, -0.5, 0.5, -0.5]
    tables = {
        "sample": [{"token": "s0", "scene_token": "sc0",
                    "data": {"LIDAR_TOP": "sd_l", "CAM_FRONT": "sd_c"}}],
        "scene": [{"token": "sc0", "name": "scene-0001"}],
        "sample_data": [
            {"token": "sd_l", "filename": "samples/lidar.pcd.bin",
             "calibrated_sensor_token": "cs_l", "ego_pose_token": "ep_l"},
            {"token": "sd_c", "filename": "samples/front.jpg",
             "calibrated_sensor_token": "cs_c", "ego_pose_token": "ep_c"},
        ],
        "calibrated_sensor": [
            {"token": "cs_l", "translation": [0.9, 0.0, 1.8], "rotation": _yaw_quat(-90)},
            {"token": "cs_c", "translation": [1.7, 0.0, 1.5], "rotation": cam_rot,
             "camera_intrinsic": K},
        ],
        "ego_pose": [
            {"token": "ep_l", "translation": [100.0, 50.0, 0.0], "rotation": _yaw_quat(10)},
            {"token": "ep_c", "translation": [100.4, 50.1, 0.0], "rotation": _yaw_quat(10.5)},
        ],
        "lidarseg": [{"token": "sd_l", "filename": "samples/lidar_lidarseg.bin"}],
    }  # fmt: skip
    return pts, raw, K, tables


def _pose(translation, rotation):
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(rotation)
    T[:3, 3] = translation
    return T


def test_reader_labels_points_and_projection(tmp_path):
    pts, raw, K, tables = _fixture(tmp_path)
    ds = NuScenesLidarseg(tmp_path, split="all", cameras=["CAM_FRONT"],
                          nusc=FakeNuScenes(tmp_path, tables))  # fmt: skip
    assert len(ds) == 1
    s = ds[0]
    np.testing.assert_allclose(s.points[:, :3], pts[:, :3])
    np.testing.assert_allclose(s.points[:, 3], pts[:, 3] / 255.0, rtol=1e-6)
    expect = {0: IGNORE_INDEX, 31: IGNORE_INDEX, 9: CLASS_NAMES.index("barrier"),
              17: CLASS_NAMES.index("car"), 24: CLASS_NAMES.index("driveable_surface"),
              30: CLASS_NAMES.index("vegetation")}  # fmt: skip
    np.testing.assert_array_equal(s.labels, [expect[int(r)] for r in raw])
    # The devkit's chain: lidar -> ego(t_lidar) -> global -> ego(t_cam) -> camera -> pixels.
    g = {
        t: r
        for t, r in ((x["token"], x) for k in ("calibrated_sensor", "ego_pose") for x in tables[k])
    }
    chain = (
        np.linalg.inv(_pose(g["cs_c"]["translation"], g["cs_c"]["rotation"]))
        @ np.linalg.inv(_pose(g["ep_c"]["translation"], g["ep_c"]["rotation"]))
        @ _pose(g["ep_l"]["translation"], g["ep_l"]["rotation"])
        @ _pose(g["cs_l"]["translation"], g["cs_l"]["rotation"])
    )
    pc = (chain @ np.hstack([pts[:, :3], np.ones((200, 1))]).T)[:3]
    front = pc[2] > 1.0
    uv_ref = (np.asarray(K) @ pc)[:2] / pc[2]
    uv, _, in_fov = s.cameras[0].project(s.points[:, :3])
    assert front.sum() > 10
    np.testing.assert_allclose(uv[front], uv_ref.T[front], atol=1e-6)
    assert in_fov.sum() > 0


def test_quaternion_matches_yaw():
    R = quat_to_matrix(_yaw_quat(90))
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_learning_lut_ignores_unevaluated_classes():
    lut = learning_lut(IDX2NAME)
    assert lut[0] == IGNORE_INDEX and lut[31] == IGNORE_INDEX
    assert lut[17] == CLASS_NAMES.index("car")


def test_devkit_reader_reports_missing_root(tmp_path):
    pytest.importorskip("nuscenes", reason="nuscenes-devkit is not installed (optional extra)")
    with pytest.raises(DatasetError):
        NuScenesLidarseg(tmp_path / "missing", version="v1.0-mini", split="mini_train")
