"""Mounting alignment: the geometry against an independent construction, simulated rigs
mounted elsewhere brought back to the trained ground, and the node's use of it (the
network's copy moved, the contract checking that copy, one-line configuration errors)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sensor_contract import CONTRACT32, _scan

from xmodelkd_ros.msgs import PointCloud2, PointField
from xmodelkd_ros.node.params import parse_config
from xmodelkd_ros.node.processing import ScanProcessor
from xmodelkd_ros.node.spec import ConfigError
from xmodelkd_ros.runtime.contract import observe, outside
from xmodelkd_ros.runtime.mount import alignment, apply_alignment, rig_pose, trained_mount
from xmodelkd_ros.sim.bag import POINT_DTYPE, POINT_FIELDS


def _ry(deg: float) -> np.ndarray:
    """Rotation about y by ``deg``: x (forward) turns towards -z (down) for deg > 0."""
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


@settings(max_examples=60, deadline=None)
@given(h=st.floats(0.5, 3.0), p=st.floats(-8.0, 8.0), x=st.floats(-2, 2), y=st.floats(-1, 1),
       hm=st.floats(1.0, 2.5), pm=st.floats(-3.0, 3.0))  # fmt: skip
def test_ground_of_any_mount_lands_at_the_trained_height(h, p, x, y, hm, pm) -> None:
    ground = np.random.default_rng(0).uniform(-30, 30, (50, 3)) * [1, 1, 0]  # vehicle frame
    # the LiDAR at (x, y, h) pitched p: vehicle = R p_lidar + t, so p_lidar = R^T (v - t)
    R, t = _ry(p), np.array([x, y, h])
    lidar_pts = (ground - t) @ R  # row form of R^T (v - t)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    moved = apply_alignment(lidar_pts.astype(np.float32), alignment(T, hm, pm))
    # the trained sensor: level at (x, y, hm), then pitched pm: model = Ry(pm)^T (v - (x, y, hm))
    want = (ground - [x, y, hm]) @ _ry(pm)
    np.testing.assert_allclose(moved, want, atol=2e-4)


def test_rig_pose_is_the_simulators_mount() -> None:
    T = rig_pose(2.2, 4.0)
    np.testing.assert_allclose(T[:3, 3], [0, 0, 2.2])
    np.testing.assert_allclose(T[:3, :3], _ry(4.0), atol=1e-12)
    assert trained_mount(CONTRACT32) == (1.73, 0.0) and trained_mount(None) is None


@pytest.mark.parametrize(("rig", "height", "pitch"),
                         [("32-high", 2.2, 0.0), ("32-pitch", 1.73, 4.0)])  # fmt: skip
def test_a_rig_mounted_elsewhere_meets_the_trained_ground_once_aligned(rig, height, pitch) -> None:
    pts = _scan(rig)
    before = outside(CONTRACT32, observe(pts[:, :3]))
    assert any("ground" in r or "above the ground" in r for r in before)
    moved = apply_alignment(pts, alignment(rig_pose(height, pitch), 1.73, 0.0))
    np.testing.assert_array_equal(moved[:, 3:], pts[:, 3:])  # only x, y, z move
    obs = observe(moved[:, :3])
    assert obs.ground is not None
    assert obs.ground[0] == pytest.approx(1.73, abs=0.05) and abs(obs.ground[1]) < 0.6
    assert not [r for r in outside(CONTRACT32, obs) if "ground" in r]


def _msg(p: np.ndarray) -> PointCloud2:
    arr = np.zeros(len(p), POINT_DTYPE)
    for k, name in enumerate(("x", "y", "z", "intensity")):
        arr[name] = p[:, k]
    arr["ring"] = p[:, 4]
    return PointCloud2(height=1, width=len(p), point_step=24, row_step=24 * len(p),
                       data=arr.tobytes(),
                       fields=[PointField(n, o, t) for n, o, t in POINT_FIELDS])  # fmt: skip


class _Model:
    def __init__(self, contract) -> None:
        self.metadata = SimpleNamespace(intensity_range=(0.0, 1.0), lidar_contract=contract)
        self.seen: list[np.ndarray] = []

    def segment(self, pts):
        self.seen.append(pts.copy())
        n = len(pts)
        return SimpleNamespace(labels=np.ones(n, np.uint16), confidence=np.ones(n, np.float32),
                               timings={})  # fmt: skip


def test_the_node_feeds_the_network_the_aligned_scan_and_checks_it() -> None:
    pts = _scan("32-high")
    pose = [float(v) for v in rig_pose(2.2).ravel()]
    cfg = parse_config({"model": "/m", "input.align_mount": True, "input.T_vehicle_lidar": pose})
    model = _Model(CONTRACT32)
    proc = ScanProcessor(model, cfg.input, None, np.asarray(pose).reshape(4, 4))
    out = proc.segment(_msg(pts))
    assert len(out.labels) == len(pts)
    np.testing.assert_allclose(model.seen[0][:, 2], pts[:, 2] + 2.2 - 1.73, atol=1e-5)
    assert out.sensor is not None and not out.sensor.outside  # the aligned copy is inside
    plain = ScanProcessor(_Model(CONTRACT32), parse_config({"model": "/m"}).input)
    assert plain.segment(_msg(pts)).sensor.outside  # unaligned: 0.47 m off the ground


def test_alignment_needs_a_pose_and_a_stated_mount() -> None:
    with pytest.raises(ConfigError, match="needs T_vehicle_lidar for every LiDAR"):
        parse_config({"model": "/m", "input.align_mount": True})
    pose = [float(v) for v in rig_pose(2.2).ravel()]
    cfg = parse_config({"model": "/m", "input.align_mount": True, "input.T_vehicle_lidar": pose})
    with pytest.raises(ConfigError, match="states no trained mount"):
        ScanProcessor(_Model(None), cfg.input, None, np.asarray(pose).reshape(4, 4))
