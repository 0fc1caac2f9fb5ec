"""Named LiDAR rigs: each renders the beams, field of view, mounting height and pitch it
states; the beam-count rigs are the old presets; a tilted sensor loses no ray to culling."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from xmodelkd_ros.sim import RIGS, LidarModel, SimWorld, lidar_model, rig
from xmodelkd_ros.sim import sensors as sensors_mod
from xmodelkd_ros.sim.rigs import DATASET_RIGS, RigError, rig_arg, rigs_of


def _elevation_deg(p: np.ndarray) -> np.ndarray:
    return np.degrees(np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1])))


@pytest.mark.parametrize("name", ["128", "os32", "32-high", "32-pitch"])
def test_a_rig_renders_its_beams_fov_and_mount(name: str) -> None:
    r = rig(name)
    w = SimWorld(seed=9068, beams=name, cameras=0)
    f = w.scan(2, images=False)
    p = f.points
    assert len(np.unique(p[:, 4])) == r.beams and int(p[:, 4].max()) == r.beams - 1
    assert f.pose[2, 3] == pytest.approx(r.height)
    # the pose's forward axis dips by the pitch (sensor head tilted down)
    assert np.degrees(np.arcsin(-f.pose[2, 0])) == pytest.approx(r.pitch_deg, abs=1e-9)
    # elevations measured in the sensor frame span the rig's field of view
    el = _elevation_deg(p)
    assert el.min() == pytest.approx(r.fov_deg[0], abs=0.05)
    assert el.max() <= r.fov_deg[1] + 0.05
    assert np.linalg.norm(p[:, :3], axis=1).max() <= r.max_range + 0.2
    if r.pitch_deg == 0:  # upright: the ground straight below sits at -height
        near = np.hypot(p[:, 0], p[:, 1]) < 12
        assert np.percentile(p[near, 2], 2) == pytest.approx(-r.height, abs=0.05)


def test_beam_count_rigs_are_the_presets() -> None:
    for beams in (16, 32, 64, 128):
        a, b = lidar_model(beams), rig(beams).model()
        np.testing.assert_array_equal(a.elevations_deg, b.elevations_deg)
        assert (a.max_range, a.height, a.pitch_deg) == (b.max_range, b.height, b.pitch_deg)
        assert lidar_model(str(beams)).beams == beams
    w32, wname = SimWorld(seed=3, beams=32, cameras=0), SimWorld(seed=3, beams="32", cameras=0)
    np.testing.assert_array_equal(w32.scan(1, images=False).points,
                                  wname.scan(1, images=False).points)  # fmt: skip


def test_unknown_rigs_are_one_line_errors() -> None:
    with pytest.raises(RigError, match="known: 16, 32"):
        rig("40")
    with pytest.raises(ValueError):
        lidar_model(40)
    assert rig_arg("16") == 16 and rig_arg("32-high") == "32-high"
    with pytest.raises(argparse.ArgumentTypeError, match="unknown LiDAR rig"):
        rig_arg("hdl99")
    assert [r.name for r in rigs_of("semantickitti")] == list(DATASET_RIGS["semantickitti"])
    assert [r.name for r in rigs_of("synthetic", ["16", "64"])] == ["16", "64"]
    assert rigs_of("bag-of-something") == []


def test_a_tilted_sensor_casts_every_ray_its_window_would_skip(monkeypatch) -> None:
    """The ray caster only intersects each primitive with the rays of its window; for a
    pitched sensor the windows widen. Casting with full windows must find nothing more."""
    r = rig("32-pitch")
    world = SimWorld(seed=9069, cameras=0, lidar=r.model(h_res_deg=1.0))
    got = world.scan(4, images=False).points

    def full(origin, yaw, elev, columns, tilt=0.0, az_slack=0.0):
        return lambda lo, hi: [(slice(0, len(elev)), slice(0, columns))]

    monkeypatch.setattr(sensors_mod, "lidar_window_fn", full)
    want = world.scan(4, images=False).points
    np.testing.assert_array_equal(got, want)


def test_rigs_table_is_consistent() -> None:
    for name, r in RIGS.items():
        assert r.name == name and r.fov_deg[0] < r.fov_deg[1] and r.beams > 1
        d = r.to_dict()
        assert d["beams"] == r.beams and d["vertical_fov_deg"] == list(r.fov_deg)
    assert isinstance(lidar_model("os32"), LidarModel)
