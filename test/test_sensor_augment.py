"""Sensor augmentation: beam subsampling and ring dropout keep whole rings, range dropout
keeps points at its stated rate, the elevation cap drops exactly what lies above its drawn
elevation, mounting jitter is a rigid transform; rings found from
elevation; the recipe keys and the simulator's mix of rigs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xmodelkd_ros.rings import point_rings, ring_count, rings_from_elevation
from xmodelkd_ros.sim import SimWorld
from xmodelkd_ros.training.augment import AugmentConfig, prepare_sample
from xmodelkd_ros.training.data.sample import Sample
from xmodelkd_ros.training.data.synthetic import SyntheticWorld
from xmodelkd_ros.training.datasets import augment_config
from xmodelkd_ros.training.recipe import RecipeError, load_recipe
from xmodelkd_ros.training.sensor_augment import (
    elevation_keep,
    mount_jitter,
    range_keep,
    ring_keep,
    sensor_active,
    sensor_keep,
)

_rings = st.lists(st.integers(0, 63), min_size=1, max_size=400).map(np.array)


@settings(max_examples=60, deadline=None)
@given(ring=_rings, k=st.integers(1, 4), p=st.floats(0.0, 0.95), seed=st.integers(0, 1000))
def test_ring_dropout_and_subsampling_keep_whole_rings(ring, k, p, seed) -> None:
    keep = ring_keep(ring, k, p, np.random.default_rng(seed))
    for r in np.unique(ring):
        assert keep[ring == r].all() or not keep[ring == r].any()  # a ring stays whole
    kept = np.unique(ring[keep])
    assert len(np.unique(kept % k)) <= 1  # every k-th ring from one phase
    if p > 0 and k == 1:
        assert len(kept) >= 1  # never every ring


@settings(max_examples=20, deadline=None)
@given(p=st.floats(0.0, 0.95), r=st.floats(0.5, 120.0), at=st.floats(5.0, 100.0),
       seed=st.integers(0, 1000))  # fmt: skip
def test_range_dropout_keeps_points_at_its_expected_rate(p, r, at, seed) -> None:
    n = 20000
    d = np.random.default_rng(seed).normal(size=(n, 3))
    xyz = d / np.linalg.norm(d, axis=1, keepdims=True) * r  # every point at range r
    rate = range_keep(xyz, p, at, np.random.default_rng(seed + 1)).mean()
    want = 1 - p * min(r / at, 1.0)
    assert abs(rate - want) <= 5 * np.sqrt(want * (1 - want) / n) + 1e-9


@settings(max_examples=40, deadline=None)
@given(h=st.floats(0.0, 1.0), pitch=st.floats(0.0, 10.0), seed=st.integers(0, 1000))
def test_mounting_jitter_is_a_rigid_transform(h, pitch, seed) -> None:
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-30, 30, (50, 6)).astype(np.float32)
    cfg = AugmentConfig(mount_height=h, mount_pitch_deg=pitch)
    out = mount_jitter(pts, cfg, np.random.default_rng(seed))
    d0 = np.linalg.norm(pts[:, None, :3] - pts[None, :, :3], axis=-1)
    d1 = np.linalg.norm(out[:, None, :3] - out[None, :, :3], axis=-1)
    np.testing.assert_allclose(d1, d0, atol=2e-4)  # distances kept: rigid
    np.testing.assert_array_equal(out[:, 3:], pts[:, 3:])


def test_mount_jitter_directions() -> None:
    """A higher sensor sees the ground lower; one pitched down sees what is ahead higher
    (the drawn height / pitch recomputed from the same generator)."""
    ground = np.array([[3.0, 1.0, -1.73, 0.5]], np.float32)
    out = mount_jitter(ground, AugmentConfig(mount_height=0.5), np.random.default_rng(7))
    h = np.random.default_rng(7).uniform(-0.5, 0.5)
    assert out[0, 2] == pytest.approx(-1.73 - h, abs=1e-5)
    np.testing.assert_allclose(out[0, :2], ground[0, :2], atol=1e-6)
    ahead = np.array([[10.0, 0.0, 0.0, 0.5]], np.float32)
    out = mount_jitter(ahead, AugmentConfig(mount_pitch_deg=5.0), np.random.default_rng(8))
    p = np.random.default_rng(8).uniform(-5.0, 5.0)
    assert np.degrees(np.arctan2(out[0, 2], out[0, 0])) == pytest.approx(p, abs=1e-4)


def _sim_sample(beams: int | str = 32) -> Sample:
    f = SimWorld(seed=3, beams=beams, cameras=1, width=96, height=64).scan(2)
    return Sample(f.points, f.points[:, 4].astype(np.int64), [f.images["front"]],
                  list(f.cameras), "s")  # fmt: skip


def test_prepare_sample_drops_points_with_their_labels_and_pairs() -> None:
    s = _sim_sample()
    cfg = AugmentConfig(beam_subsample=(2,), rotate_deg=0.0, flip=False, scale=(1.0, 1.0),
                        jitter=0.0, color_jitter=0.0)  # fmt: skip
    prep = prepare_sample(s, cfg, np.random.default_rng(1), (32, 48))
    ring = prep.points[:, 4].astype(np.int64)
    np.testing.assert_array_equal(prep.labels, ring)  # labels follow their points
    assert len(np.unique(ring)) == 16 and len(np.unique(ring % 2)) == 1
    assert len(prep.corr) > 0 and prep.corr.point_idx.max() < len(prep.points)
    again = prepare_sample(s, cfg, np.random.default_rng(1), (32, 48))
    np.testing.assert_array_equal(again.points, prep.points)  # pure in the generator


@settings(max_examples=40, deadline=None)
@given(lo=st.floats(-10.0, 10.0), width=st.floats(0.0, 10.0), seed=st.integers(0, 1000))
def test_elevation_cap_keeps_what_lies_below_one_drawn_elevation(lo, width, seed) -> None:
    xyz = np.random.default_rng(seed).normal(size=(500, 3)) * [20.0, 20.0, 3.0]
    keep = elevation_keep(xyz, (lo, lo + width), 1.0, np.random.default_rng(seed))
    # independent oracle: the same draw, elevation from asin(z / |p|)
    rng = np.random.default_rng(seed)
    rng.random()
    top = rng.uniform(lo, lo + width)
    elev = np.degrees(np.arcsin(xyz[:, 2] / np.linalg.norm(xyz, axis=1)))
    decided = np.abs(elev - top) > 1e-6
    np.testing.assert_array_equal(keep[decided], (elev <= top)[decided])
    assert elevation_keep(xyz, (lo, lo + width), 0.0, np.random.default_rng(seed)).all()


def test_elevation_cap_narrows_a_scan_to_a_64_beam_like_top() -> None:
    s = _sim_sample(32)
    cfg = AugmentConfig(elevation_cap=(2.0, 2.0), elevation_cap_p=1.0)
    assert sensor_active(cfg)
    kept = s.points[sensor_keep(s.points, cfg, np.random.default_rng(0))]
    elev = np.degrees(np.arctan2(kept[:, 2], np.hypot(kept[:, 0], kept[:, 1])))
    assert elev.max() <= 2.0 + 1e-6 and 0 < len(kept) < len(s.points)
    assert not sensor_active(AugmentConfig(elevation_cap=(2.0, 2.0), elevation_cap_p=0.0))


def test_sensor_options_draw_nothing_when_off() -> None:
    off = AugmentConfig()
    assert not sensor_active(off)
    on = AugmentConfig(ring_dropout=0.2, range_dropout=0.3)
    assert sensor_active(on)
    s = _sim_sample(16)
    keep = sensor_keep(s.points, on, np.random.default_rng(0))
    assert 0 < keep.mean() < 0.9


def test_rings_from_elevation_match_the_simulators() -> None:
    for beams in (16, 128, "os32"):
        p = SimWorld(seed=9070, beams=beams, cameras=0).scan(1, images=False).points
        found = rings_from_elevation(p[:, :3])
        _, dense = np.unique(p[:, 4], return_inverse=True)
        np.testing.assert_array_equal(found, dense)
        np.testing.assert_array_equal(point_rings(p[:, :4]), dense)  # no ring column
        assert ring_count(p[:, :4]) == ring_count(p, p[:, 4]) == len(np.unique(p[:, 4]))
    cloud = np.random.default_rng(0).normal(size=(20000, 4))
    assert rings_from_elevation(cloud[:, :3]) is None and ring_count(cloud) is None
    bands = point_rings(cloud)  # no ring structure: elevation bands
    assert bands.min() == 0 and len(np.unique(bands)) > 100


def test_recipe_keys_are_checked() -> None:
    r = load_recipe("synthetic", ["augment.beam_subsample=[1,2]", "augment.ring_dropout=0.1",
                                  "data.rigs=[16,32-high]"])  # fmt: skip
    assert r.augment.beam_subsample == [1, 2] and r.data.rigs == ["16", "32-high"]
    cfg = augment_config(r.augment, True)  # what the training data pipeline gets
    assert cfg.beam_subsample == (1, 2) and cfg.ring_dropout == 0.1 and sensor_active(cfg)
    capped = augment_config(load_recipe("synthetic", ["augment.elevation_cap=[0,10]"]).augment,
                            True)  # fmt: skip
    assert capped.elevation_cap == (0.0, 10.0) and sensor_active(capped)
    d = load_recipe("synthetic")
    assert d.data.rigs == [] and d.augment.beam_subsample == [1] and d.augment.mount_height == 0
    for bad, what in (("augment.ring_dropout=1.0", "ring_dropout"),
                      ("augment.beam_subsample=[0]", "beam_subsample"),
                      ("augment.mount_height=-1", "mount_height"),
                      ("augment.elevation_cap=[5,1]", "elevation_cap"),
                      ("augment.elevation_cap=[1,2,3]", "elevation_cap"),
                      ("augment.elevation_cap_p=1.5", "elevation_cap_p"),
                      ("data.rigs=[hdl99]", "data.rigs")):  # fmt: skip
        with pytest.raises(RecipeError, match=what):
            load_recipe("synthetic", [bad])


def test_synthetic_data_mixes_rigs_street_by_street() -> None:
    ds = SyntheticWorld([1, 2], scans=4, sim_kwargs={"cameras": 0}, rigs=["16", "64"])
    rings = [len(np.unique(ds[i].points[:, 4])) for i in range(4)]
    assert [ds.locate(i)[0] for i in range(4)] == [1, 2, 1, 2]
    assert rings == [16, 64, 64, 16]  # one pass mixes the rigs; each street sees both
    few = SyntheticWorld(list(range(1, 9)), scans=4, sim_kwargs={"cameras": 0}, rigs=["16", "32"])
    assert [few.rig_index(i) for i in range(4)] == [0, 1, 0, 1]  # fewer scans than streets
    plain = SyntheticWorld([1, 2], scans=2, sim_kwargs={"cameras": 0})
    np.testing.assert_array_equal(plain[0].points,
                                  SimWorld(1, cameras=0).scan(0, images=False).points)  # fmt: skip
