"""The in-memory synthetic world: determinism, formats, label/pixel agreement, separability."""

from __future__ import annotations

import numpy as np
import pytest

from xmodelkd_ros.labels import CLASS_NAMES, NUM_CLASSES, raw_to_label
from xmodelkd_ros.sim import LidarModel, SimWorld


@pytest.fixture(scope="module")
def world() -> SimWorld:
    return SimWorld(seed=7, beams=32, cameras=3, width=320, height=180)


@pytest.fixture(scope="module")
def frame(world):
    return world.scan(3)


def test_frame_layout_and_dtypes(frame, world) -> None:
    p = frame.points
    assert p.dtype == np.float32 and p.ndim == 2 and p.shape[1] == 6 and len(p) > 10_000
    assert frame.labels.dtype == np.uint16 and frame.labels.shape == (len(p),)
    assert frame.instances.dtype == np.uint16 and frame.raw.dtype == np.uint16
    assert frame.labels.max() <= NUM_CLASSES
    np.testing.assert_array_equal(frame.labels, raw_to_label(frame.raw))
    ring = p[:, 4]
    assert ring.min() >= 0 and ring.max() <= 31 and np.all(ring == np.round(ring))
    assert p[:, 5].min() >= 0 and p[:, 5].max() < 0.1
    assert p[:, 3].min() >= 0.0 and p[:, 3].max() <= 1.0
    r = np.linalg.norm(p[:, :3], axis=1)
    assert r.max() <= world.lidar.max_range + 0.2 and r.min() >= world.lidar.min_range - 0.2
    assert [c.name for c in frame.cameras] == ["front", "front_left", "front_right"]
    for cam in frame.cameras:
        img = frame.images[cam.name]
        assert img.shape == (180, 320, 3) and img.dtype == np.uint8
        assert frame.image_labels[cam.name].shape == (180, 320)
        dt = frame.image_stamps_ns[cam.name] - frame.stamp_ns
        assert 1_000_000 <= dt <= 12_000_000  # a few ms after the sweep start
    assert frame.pose.shape == (4, 4)


def test_many_classes_present(world) -> None:
    seen = set()
    for i in (0, 40, 80):
        seen |= set(np.unique(world.scan(i, images=False).labels).tolist())
    names = {CLASS_NAMES[k - 1] for k in seen if k > 0}
    must = {"car", "road", "parking", "sidewalk", "terrain", "building", "vegetation", "pole"}
    assert must <= names, must - names
    assert len(names) >= 12


def test_deterministic_by_seed(frame) -> None:
    again = SimWorld(seed=7, beams=32, cameras=0).scan(3, images=False)
    np.testing.assert_array_equal(again.points, frame.points)
    np.testing.assert_array_equal(again.labels, frame.labels)
    other = SimWorld(seed=8, beams=32, cameras=0).scan(3, images=False)
    assert len(other.points) != len(frame.points) or not np.array_equal(other.points, frame.points)


def test_beam_presets() -> None:
    for beams in (16, 64):
        f = SimWorld(seed=1, beams=beams, cameras=0).scan(0, images=False)
        assert int(f.points[:, 4].max()) == beams - 1
    with pytest.raises(ValueError):
        LidarModel.preset(40)


def test_consecutive_scans_overlap(world) -> None:
    a, b = world.scan(10, images=False), world.scan(11, images=False)
    assert b.stamp_ns - a.stamp_ns == 100_000_000
    step = np.linalg.norm(b.pose[:3, 3] - a.pose[:3, 3])
    assert 0.3 < step < 2.0
    # Static points of scan a, moved into scan b's frame, lie close to scan b's points.
    T = np.linalg.inv(b.pose) @ a.pose
    static = (a.raw < 252) & (a.labels > 0)
    pa = a.points[static, :3] @ T[:3, :3].T + T[:3, 3]
    pa = pa[np.linalg.norm(pa, axis=1) < 20]
    pa = pa[np.random.default_rng(0).choice(len(pa), 300, replace=False)]
    pb = b.points[np.linalg.norm(b.points[:, :3], axis=1) < 22, :3]
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1)).min(1)
    assert np.median(d) < 0.3


def test_projected_labels_match_rendered_pixels(frame) -> None:
    """LiDAR points projected with the calibration land on pixels of their own class."""
    total = agree = 0
    for cam in frame.cameras:
        uv, _, ok = cam.project(frame.points[:, :3])
        r, c = cam.pixel_indices(uv)
        pix = frame.image_labels[cam.name][r[ok], c[ok]]
        total += ok.sum()
        agree += (pix == frame.labels[ok]).sum()
    assert total > 2000
    assert agree / total > 0.9


def test_ground_classes_separable_by_appearance_not_intensity(world) -> None:
    """Road / parking / sidewalk / terrain: strong colour contrast, weak intensity contrast."""
    names = ["road", "parking", "sidewalk", "terrain"]
    ids = [CLASS_NAMES.index(n) + 1 for n in names]
    col = {k: [] for k in ids}
    inten = {k: [] for k in ids}
    for i in (0, 30, 60):
        f = world.scan(i)
        for cam in f.cameras:
            uv, _, ok = cam.project(f.points[:, :3])
            r, c = cam.pixel_indices(uv)
            for k in ids:
                m = ok & (f.labels == k)
                col[k].append(f.images[cam.name][r[m], c[m]].astype(float))
                inten[k].append(f.points[m, 3])
    mc = {k: np.concatenate(v).mean(0) for k, v in col.items()}
    mi = {k: np.concatenate(v) for k, v in inten.items()}
    for a in range(4):
        for b in range(a + 1, 4):
            ka, kb = ids[a], ids[b]
            dcol = np.linalg.norm(mc[ka] - mc[kb])
            assert dcol > 30, (names[a], names[b], dcol)
            # intensity: effect size well below 1.5 pooled standard deviations
            sd = np.sqrt(0.5 * (mi[ka].var() + mi[kb].var()))
            assert abs(mi[ka].mean() - mi[kb].mean()) / sd < 1.5, (names[a], names[b])
    # similar height: sidewalk vs terrain
    f = world.scan(0, images=False)
    zs = f.points[f.labels == ids[2], 2]
    zt = f.points[f.labels == ids[3], 2]
    assert abs(np.median(zs) - np.median(zt)) < 0.1
