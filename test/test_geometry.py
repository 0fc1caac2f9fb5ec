"""Camera geometry: projection conventions every module relies on."""

from __future__ import annotations

import numpy as np
import pytest

from xmodelkd_ros.geometry import (
    CAMERA_NAMES,
    PinholeCamera,
    any_fov_mask,
    calibration_from_dict,
    calibration_to_dict,
    camera_extrinsic,
    intrinsics_from_fov,
    invert_transform,
    load_calibration,
    make_rig,
    save_calibration,
)


def test_front_camera_sees_forward_points_at_centre() -> None:
    cam = PinholeCamera("front", intrinsics_from_fov(640, 360, 90), 640, 360, camera_extrinsic(0))
    uv, depth, ok = cam.project(np.array([[10.0, 0, 0], [10.0, 10.0, 0], [-5.0, 0, 0]]))
    np.testing.assert_allclose(uv[0], [320, 180], atol=1e-9)
    assert depth[0] == pytest.approx(10.0)
    # y left in LiDAR -> u decreases (left of the image); 45 deg at 90 deg FOV -> u = 0
    assert uv[1, 0] == pytest.approx(0.0, abs=1e-9)
    assert ok[0] and not ok[2]
    assert np.isnan(uv[2]).all() and not ok[2]


def test_point_above_projects_to_upper_half() -> None:
    cam = make_rig(1)[0]
    uv, _, ok = cam.project(np.array([[20.0, 0.0, 3.0], [20.0, -3.0, 0.0]]))
    assert ok.all()
    assert uv[0, 1] < cam.height / 2  # z up -> v up
    assert uv[1, 0] > cam.width / 2  # y right (negative) -> u right


def test_pixel_rays_project_to_pixel_centres() -> None:
    cam = make_rig(3, 64, 36)[2]
    rays = cam.pixel_rays().reshape(-1, 3) * 7.0
    pts_lidar = rays @ cam.T_lidar_cam[:3, :3].T + cam.T_lidar_cam[:3, 3]
    uv, depth, ok = cam.project(pts_lidar)
    assert ok.all()
    np.testing.assert_allclose(depth, 7.0, atol=1e-9)
    r, c = cam.pixel_indices(uv)
    np.testing.assert_array_equal(r, np.repeat(np.arange(36), 64))
    np.testing.assert_array_equal(c, np.tile(np.arange(64), 36))


def test_rig_names_and_rigid_extrinsics() -> None:
    rig = make_rig(6)
    assert [c.name for c in rig] == list(CAMERA_NAMES)
    assert [c.frame_id for c in rig][:2] == ["camera_front", "camera_front_left"]
    for c in rig:
        R = c.T_cam_lidar[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        np.testing.assert_allclose(invert_transform(c.T_cam_lidar) @ c.T_cam_lidar, np.eye(4),
                                   atol=1e-12)  # fmt: skip
    with pytest.raises(ValueError):
        make_rig(7)


def test_fov_masks_cover_the_sides_with_three_cameras() -> None:
    rig = make_rig(3)
    pts = np.array([[10.0, 0, 0], [5.0, 8.0, 0], [5.0, -8.0, 0], [-10.0, 0, 0]])
    np.testing.assert_array_equal(any_fov_mask(pts, rig), [True, True, True, False])


def test_distortion_zero_is_identity_and_nonzero_moves_points() -> None:
    base = make_rig(1)[0]
    pts = np.array([[10.0, 2.0, 1.0]])
    d0 = PinholeCamera(**{**base.__dict__, "D": np.zeros(5)})
    d1 = PinholeCamera(**{**base.__dict__, "D": np.array([-0.3, 0.1, 0, 0, 0])})
    np.testing.assert_allclose(d0.project(pts)[0], base.project(pts)[0])
    assert not np.allclose(d1.project(pts)[0], base.project(pts)[0])


def test_calibration_round_trip(tmp_path) -> None:
    rig = make_rig(3)
    back = calibration_from_dict(calibration_to_dict(rig))
    save_calibration(str(tmp_path / "calibration.yaml"), rig)
    loaded = load_calibration(str(tmp_path / "calibration.yaml"))
    for a, b, c in zip(rig, back, loaded, strict=True):
        for o in (b, c):
            assert o.name == a.name and (o.width, o.height) == (a.width, a.height)
            np.testing.assert_allclose(o.K, a.K)
            np.testing.assert_allclose(o.T_cam_lidar, a.T_cam_lidar)
