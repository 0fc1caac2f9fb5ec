"""Temporal 2D views: poses, projection, occlusion check, plumbing.

Oracles: the sim's own ray-cast renderer (a current-scan point projected into another
frame's image must land on a pixel rendered with its class), an independent world-frame
projection, a brute-force z-buffer, and the SemanticKITTI ``poses.txt`` round trip.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmodelkd_ros.labels import raw_to_label
from xmodelkd_ros.nets.inputs import default_grid
from xmodelkd_ros.sim.world import SimWorld
from xmodelkd_ros.training.augment import AugmentConfig, prepare_sample
from xmodelkd_ros.training.data.collate import collate
from xmodelkd_ros.training.data.semantickitti import DatasetError, SemanticKITTI
from xmodelkd_ros.training.data.synthetic import SyntheticWorld
from xmodelkd_ros.training.data.temporal import (
    camera_in_other_frame,
    depth_consistent,
    other_frame_cameras,
    temporal_offsets,
)


def test_offsets():
    assert temporal_offsets(0, 5) == []
    assert temporal_offsets(2, 3) == [-3, 3, -6, 6]
    with pytest.raises(ValueError):
        temporal_offsets(1, 0)


def test_world_point_projects_where_the_other_frame_sees_it():
    """A point fixed in the world, expressed in scan i's LiDAR frame and projected through
    the composed camera, lands on the pixel the other frame's camera sees it at."""
    w = SimWorld(4, cameras=3, width=320, height=180)
    rng = np.random.default_rng(0)
    i, j = 30, 35
    L_i = w.pose_at(w.scan_stamp_ns(i))
    for cam in w.cameras:
        stamp = w.camera_stamp_ns(cam.name, w.camera_frame_near(cam.name, w.scan_stamp_ns(j)))
        C_j = w.pose_at(stamp) @ cam.T_lidar_cam  # camera -> world
        # points in front of the other camera, in world coordinates
        local = np.c_[rng.uniform(-5, 5, 50), rng.uniform(-3, 3, 50), rng.uniform(4, 40, 50)]
        X_w = local @ C_j[:3, :3].T + C_j[:3, 3]
        # independent: the camera sees X_w at K @ local / z
        expected = local[:, :2] / local[:, 2:] * [cam.K[0, 0], cam.K[1, 1]] + cam.K[:2, 2]
        p_i = (X_w - L_i[:3, 3]) @ L_i[:3, :3]  # inv(L_i) applied to X_w
        view = camera_in_other_frame(cam, L_i, C_j, j - i)
        uv, depth, _ = view.project(p_i)
        np.testing.assert_allclose(uv, expected, atol=1e-6)
        np.testing.assert_allclose(depth, local[:, 2], atol=1e-9)
        assert view.name == f"{cam.name}@+5"


def test_temporal_views_land_on_their_class_in_the_rendered_image():
    """The renderer is the oracle: projected into another frame's image, a scan point hits
    a pixel rendered with its own class (moving objects and occlusion aside); the depth
    check removes mostly wrong pairs."""
    ds = SyntheticWorld([3], scans=3, stride=10,
                        sim_kwargs={"cameras": 3, "width": 320, "height": 180},
                        temporal_views=1, temporal_step=5)  # fmt: skip
    s = ds[2]  # frame 20: views from frames 15 and 25
    world = ds.worlds[0]
    assert s.image_offsets == [0, 0, 0, -5, -5, -5, 5, 5, 5]
    label_ids = raw_to_label(world.scan(20, images=False).raw)
    kept_agree, dropped_agree = [], []
    for img, cam, off in zip(s.images, s.cameras, s.image_offsets, strict=True):
        if off == 0:
            continue
        base = world.cameras[[c.name for c in world.cameras].index(cam.name.split("@")[0])]
        stamp = world.camera_stamp_ns(
            base.name, world.camera_frame_near(base.name, world.scan_stamp_ns(20 + off))
        )
        rgb, raw_img, _ = world.render(base, stamp)
        np.testing.assert_array_equal(rgb, img)  # the view holds that frame's image
        uv, depth, ok = cam.project(s.points[:, :3])
        idx = np.flatnonzero(ok)
        keep = depth_consistent(uv[idx], depth[idx], (cam.height, cam.width))
        px = np.floor(uv[idx]).astype(int)
        agree = raw_to_label(raw_img)[px[:, 1], px[:, 0]] == label_ids[idx]
        kept_agree.append(agree[keep])
        dropped_agree.append(agree[~keep])
    kept, dropped = np.concatenate(kept_agree), np.concatenate(dropped_agree)
    assert kept.size > 10_000
    assert kept.mean() > 0.97
    assert dropped.mean() < kept.mean() - 0.1


def test_depth_check_against_brute_force():
    rng = np.random.default_rng(1)
    n, size, cell = 400, (40, 64), 8
    uv = rng.uniform([0, 0], [size[1], size[0]], (n, 2))
    depth = rng.uniform(1, 30, n)
    got = depth_consistent(uv, depth, size, cell, rel_tol=0.1, abs_tol=0.5)
    for k in range(n):
        same = [m for m in range(n) if int(uv[m, 0] // cell) == int(uv[k, 0] // cell)
                and int(uv[m, 1] // cell) == int(uv[k, 1] // cell)]  # fmt: skip
        nearest = min(depth[m] for m in same)
        assert got[k] == (depth[k] <= nearest * 1.1 + 0.5)
    assert depth_consistent(np.zeros((0, 2)), np.zeros(0), size).shape == (0,)


def test_semantickitti_poses_give_the_sim_relative_pose(tmp_path):
    from xmodelkd_ros.sim.kitti import write_kitti

    world = SimWorld(5, cameras=1, width=100, height=60)
    write_kitti(tmp_path, world, scans=6, progress=False)
    ds = SemanticKITTI(tmp_path, ["00"], temporal_views=1, temporal_step=2)
    s = ds[3]
    assert s.image_offsets == [0, -2, 2]
    f3, f1, f5 = world.scan(3, images=False), world.scan(1, images=False), world.scan(5, False)
    want = other_frame_cameras(world.cameras, f3.pose, f1.pose, -2) + other_frame_cameras(
        world.cameras, f3.pose, f5.pose, 2
    )
    for got, ref in zip(s.cameras[1:], want, strict=True):
        np.testing.assert_allclose(got.T_cam_lidar, ref.T_cam_lidar, atol=1e-4)
    # offsets outside the sequence are skipped; without poses.txt it is a clear error
    assert ds[0].image_offsets == [0, 2]
    (tmp_path / "sequences" / "00" / "poses.txt").unlink()
    with pytest.raises(DatasetError, match=r"poses\.txt"):
        SemanticKITTI(tmp_path, ["00"], temporal_views=1)[0]


def _sample():
    ds = SyntheticWorld([2], scans=2, stride=10,
                        sim_kwargs={"cameras": 3, "width": 160, "height": 90},
                        temporal_views=1, temporal_step=5)  # fmt: skip
    return ds[1]


def test_without_temporal_the_sample_prepares_as_before():
    s = _sample()
    plain = type(s)(s.points, s.labels, s.images[:3], s.cameras[:3], s.name)
    a = prepare_sample(s, AugmentConfig(), np.random.default_rng(3), (48, 80), 4000)
    b = prepare_sample(plain, AugmentConfig(), np.random.default_rng(3), (48, 80), 4000)
    assert len(a.images) == 3 and a.image_offsets == [0, 0, 0]
    np.testing.assert_array_equal(a.points, b.points)
    for x, y in zip(a.images, b.images, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.corr.point_idx, b.corr.point_idx)
    np.testing.assert_array_equal(a.corr.uv, b.corr.uv)


def test_temporal_views_reach_the_batch_and_are_not_fused():
    from xmodelkd_ros.nets.image_encoder import ImageEncoderConfig
    from xmodelkd_ros.nets.student import StudentConfig
    from xmodelkd_ros.nets.teacher import FusionTeacher, PointPixelCorrespondence, TeacherConfig

    s = _sample()
    p = prepare_sample(s, AugmentConfig(), np.random.default_rng(3), (48, 80), 4000, temporal=True)
    assert p.image_offsets == s.image_offsets
    counts = np.bincount(p.corr.point_idx)
    assert (counts >= 2).sum() / (counts > 0).sum() > 0.2  # genuinely multi-view
    cfg = StudentConfig(enc_widths=(8, 16), dec_widths=(8,))
    b = collate([p], default_grid(0.25), cfg.num_levels, image_hw=(48, 80))
    assert b.image_offset.tolist() == s.image_offsets
    fuse = b.fuse
    assert fuse is not None and fuse.tolist() == (b.image_offset[b.image_idx] == 0).tolist()
    torch.manual_seed(0)
    net = FusionTeacher(TeacherConfig(cfg, ImageEncoderConfig(arch="tiny", out_channels=8),
                                      contrast_dim=8)).eval()  # fmt: skip
    full = PointPixelCorrespondence.from_batch(b)
    only_now = PointPixelCorrespondence(b.point_idx[fuse], b.image_idx[fuse], b.uv[fuse],
                                        b.image_size)  # fmt: skip
    with torch.no_grad():
        o1 = net(b.inputs, b.images, full)
        o2 = net(b.inputs, b.images, only_now)
    torch.testing.assert_close(o1.logits, o2.logits)
    assert torch.equal(o1.seen, o2.seen)
    assert o1.proj_2d.shape[0] == len(full) > o2.proj_2d.shape[0]  # all views to InfoNCE



def test_nuscenes_neighbouring_keyframes_through_the_ego_poses(tmp_path):
    """The other keyframe's camera sees the scan's points through the devkit's chain:
    lidar -> ego(t_lidar, frame i) -> global -> ego(t_cam, frame j) -> camera."""
    from test_data_nuscenes import FakeNuScenes, _fixture, _pose, _yaw_quat

    from xmodelkd_ros.training.data.nuscenes import NuScenesLidarseg

    _, _, _, tables = _fixture(tmp_path)
    tables["sample"][0]["next"] = "s1"
    tables["sample"].append({"token": "s1", "scene_token": "sc0", "prev": "s0", "next": "",
                             "data": {"LIDAR_TOP": "sd_l", "CAM_FRONT": "sd_c1"}})  # fmt: skip
    tables["sample_data"].append({"token": "sd_c1", "filename": "samples/front.jpg",
                                  "calibrated_sensor_token": "cs_c",
                                  "ego_pose_token": "ep_c1"})  # fmt: skip
    tables["ego_pose"].append({"token": "ep_c1", "translation": [104.0, 50.6, 0.0],
                               "rotation": _yaw_quat(12.0)})  # fmt: skip
    ds = NuScenesLidarseg(tmp_path, split="all", cameras=["CAM_FRONT"],
                          nusc=FakeNuScenes(tmp_path, tables), temporal_views=1)  # fmt: skip
    s0, s1 = ds[0], ds[1]
    assert s0.image_offsets == [0, 1] and s1.image_offsets == [0, -1]
    g = {x["token"]: x for k in ("calibrated_sensor", "ego_pose") for x in tables[k]}
    T = lambda t: _pose(g[t]["translation"], g[t]["rotation"])  # noqa: E731
    want = np.linalg.inv(T("ep_c1") @ T("cs_c")) @ T("ep_l") @ T("cs_l")
    np.testing.assert_allclose(s0.cameras[1].T_cam_lidar, want, atol=1e-9)
    assert s0.cameras[1].name == "CAM_FRONT@+1"
