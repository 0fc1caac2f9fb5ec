"""Data pipeline: SemanticKITTI round trip, correspondences through augmentation, collation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xmodelkd_ros.geometry import make_rig
from xmodelkd_ros.labels import label_to_raw
from xmodelkd_ros.nets.inputs import default_grid
from xmodelkd_ros.training.augment import AugmentConfig, crop_resize, prepare_sample
from xmodelkd_ros.training.data.collate import collate
from xmodelkd_ros.training.data.sample import IGNORE_INDEX, Sample, compute_correspondences
from xmodelkd_ros.training.data.semantickitti import (
    DatasetError,
    SemanticKITTI,
    camera_from_kitti,
    write_calib,
)


def _scene(rng: np.random.Generator, n: int = 3000) -> np.ndarray:
    pts = np.zeros((n, 4), np.float32)
    pts[:, 0] = rng.uniform(-30, 30, n)
    pts[:, 1] = rng.uniform(-30, 30, n)
    pts[:, 2] = rng.uniform(-2, 2, n)
    pts[:, 3] = rng.uniform(0, 1, n)
    return pts


def _blocky_image(rng: np.random.Generator, h: int, w: int, block: int = 16) -> np.ndarray:
    """Constant-colour blocks: a pixel's colour is known exactly away from block edges."""
    colours = rng.integers(0, 256, size=(h // block + 1, w // block + 1, 3), dtype=np.uint8)
    return np.repeat(np.repeat(colours, block, axis=0), block, axis=1)[:h, :w]


def test_semantickitti_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    seq = tmp_path / "sequences" / "08"
    for sub in ("velodyne", "labels", "image_2"):
        (seq / sub).mkdir(parents=True)
    pts = _scene(rng, 500)
    label_ids = rng.integers(0, 20, 500)
    raw = label_to_raw(label_ids).astype(np.uint32) | (
        rng.integers(0, 50, 500, dtype=np.uint32) << 16
    )
    pts.tofile(seq / "velodyne" / "000000.bin")
    raw.astype(np.uint32).tofile(seq / "labels" / "000000.label")
    img = _blocky_image(rng, 64, 200)
    Image.fromarray(img).save(seq / "image_2" / "000000.png")
    K = np.array([[100.0, 0, 100], [0, 100, 32], [0, 0, 1]])
    P2 = np.hstack([K, K @ np.array([[0.06], [0.0], [0.0]])])
    Tr = make_rig(1)[0].T_cam_lidar
    write_calib(seq / "calib.txt", {"P0": np.hstack([K, np.zeros((3, 1))]), "P2": P2}, Tr)

    ds = SemanticKITTI(tmp_path, ["8"])
    assert len(ds) == 1
    s = ds[0]
    np.testing.assert_array_equal(s.points, pts)
    np.testing.assert_array_equal(s.labels, np.where(label_ids == 0, IGNORE_INDEX, label_ids - 1))
    np.testing.assert_array_equal(s.images[0], img)
    cam = s.cameras[0]
    # P2 @ Tr in homogeneous coordinates equals K @ T_cam_lidar[:3]
    np.testing.assert_allclose(cam.K @ cam.T_cam_lidar[:3], P2 @ Tr, atol=1e-9)
    assert cam.width == 200 and cam.height == 64
    with pytest.raises(DatasetError):
        SemanticKITTI(tmp_path / "nope", ["00"])


def test_camera_from_kitti_projects_like_p2():
    K = np.array([[700.0, 0, 600], [0, 700, 180], [0, 0, 1]])
    P2 = np.hstack([K, [[45.0], [-0.3], [0.005]]])
    Tr = make_rig(1)[0].T_cam_lidar
    cam = camera_from_kitti("image_2", P2, Tr, 1240, 370)
    xyz = np.array([[10.0, 1.0, 0.5], [20.0, -3.0, 1.0]])
    h = (P2 @ Tr @ np.hstack([xyz, np.ones((2, 1))]).T).T
    uv, _, _ = cam.project(xyz)
    np.testing.assert_allclose(uv, h[:, :2] / h[:, 2:], atol=1e-6)


def _rig_sample(rng: np.random.Generator) -> Sample:
    cams = make_rig(2, width=320, height=180)
    imgs = [_blocky_image(rng, 180, 320) for _ in cams]
    pts = _scene(rng)
    labels = rng.integers(-1, 19, len(pts))
    return Sample(pts, labels, imgs, cams, name="x")


def test_augmentation_keeps_pixel_colour():
    """A point's pixel after crop/resize shows the colour it had before (nearest resize)."""
    rng = np.random.default_rng(1)
    s = _rig_sample(rng)
    raw = compute_correspondences(s.points, s.cameras)
    assert len(raw) > 100
    out_hw = (90, 160)
    for trial in range(5):
        box = (7 * trial, 3 * trial, 7 * trial + 256, 3 * trial + 144)
        for i, img in enumerate(s.images):
            sel = raw.image_idx == i
            new, uv, inside = crop_resize(img, raw.uv[sel], out_hw, box, resample=Image.NEAREST)
            before_r, before_c = s.cameras[i].pixel_indices(raw.uv[sel])
            before = img[before_r, before_c][inside]
            col = np.floor(uv[inside, 0]).astype(int)
            row = np.floor(uv[inside, 1]).astype(int)
            after = new[row, col]
            # Nearest resampling may pick a neighbouring source pixel: check away from edges.
            src = raw.uv[sel][inside]
            interior = ((src % 16 > 2) & (src % 16 < 14)).all(axis=1)
            assert interior.sum() > 20
            np.testing.assert_array_equal(before[interior], after[interior])


def test_prepare_sample_pairs_point_to_its_colour_under_full_augmentation():
    rng = np.random.default_rng(2)
    s = _rig_sample(rng)
    raw = compute_correspondences(s.points, s.cameras)
    cfg = AugmentConfig(color_jitter=0.0, jitter=0.05)
    prep = prepare_sample(s, cfg, np.random.default_rng(3), (90, 160), views=2)
    assert len(prep.images) == 4 and len(prep.corr) > 0
    # Points moved, pairs are indices: each pair's point was in the camera's FOV before.
    assert not np.allclose(prep.points[:, :3], s.points[:, :3])
    seen = {(int(p), int(i % 2)) for p, i in zip(raw.point_idx, raw.image_idx, strict=True)}
    assert all(
        (int(p), int(i % 2)) in seen
        for p, i in zip(prep.corr.point_idx, prep.corr.image_idx, strict=True)
    )
    # Colours agree with the original image for most pairs (bilinear blends block edges).
    lookup = {
        (int(p), int(i)): k
        for k, (p, i) in enumerate(zip(raw.point_idx, raw.image_idx, strict=True))
    }
    agree = []
    for p, i, uv in zip(prep.corr.point_idx, prep.corr.image_idx, prep.corr.uv, strict=True):
        cam = int(i) % 2
        k = lookup[(int(p), cam)]
        if not ((raw.uv[k] % 16 > 5) & (raw.uv[k] % 16 < 11)).all():
            continue  # antialiased downscaling blends colours near block edges
        r0, c0 = s.cameras[cam].pixel_indices(raw.uv[k : k + 1])
        before = s.images[cam][r0[0], c0[0]].astype(int)
        after = prep.images[int(i)][int(uv[1]), int(uv[0])].astype(int)
        agree.append(np.abs(before - after).max() <= 2)
    assert len(agree) > 20 and np.mean(agree) > 0.95, np.mean(agree)


def test_collate_reindexes_pairs_and_drops_out_of_grid_points():
    rng = np.random.default_rng(4)
    a, b = _rig_sample(rng), _rig_sample(rng)
    b.points[:50, 0] = 500.0  # outside the grid
    cfg = AugmentConfig(enabled=False)
    preps = [prepare_sample(x, cfg, rng, (90, 160)) for x in (a, b)]
    batch = collate(preps, default_grid(0.5), num_levels=3, image_hw=(90, 160))
    assert batch.images.shape == (4, 3, 90, 160)
    assert batch.labels is not None and batch.labels.shape[0] == batch.num_points
    assert batch.num_points == len(a.points) + len(b.points) - 50
    assert int(batch.point_idx.max()) < batch.num_points
    # A pair's point feature equals the original point of its scan.
    for k in range(0, len(batch.point_idx), 97):
        p = int(batch.point_idx[k])
        scan = int(batch.inputs.point_batch[p])
        src = preps[scan]
        match = np.isclose(src.points[:, :4], batch.inputs.point_feats[p].numpy()).all(axis=1)
        assert match.any()
    assert int(batch.image_idx.max()) < 4
