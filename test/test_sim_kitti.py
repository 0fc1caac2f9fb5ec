"""SemanticKITTI writer: files read back with plain numpy match the in-memory world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmodelkd_ros.geometry import invert_transform, load_calibration
from xmodelkd_ros.labels import RAW_CLASSES, raw_to_label
from xmodelkd_ros.sim import SimWorld
from xmodelkd_ros.sim.__main__ import main
from xmodelkd_ros.sim.kitti import read_calib

N = 3


@pytest.fixture(scope="module")
def seq(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kitti")
    main(["--out", str(out), "--scans", str(N), "--format", "kitti", "--seed", "5",
          "--width", "320", "--height", "180", "--sequence", "4", "--no-progress"])  # fmt: skip
    return out / "sequences" / "04"


@pytest.fixture(scope="module")
def world() -> SimWorld:
    return SimWorld(seed=5, cameras=1, width=320, height=180)


def test_layout_counts_and_dtypes(seq: Path, world: SimWorld) -> None:
    bins = sorted((seq / "velodyne").glob("*.bin"))
    labels = sorted((seq / "labels").glob("*.label"))
    imgs = sorted((seq / "image_2").glob("*.png"))
    assert [p.name for p in bins] == [f"{i:06d}.bin" for i in range(N)]
    assert len(labels) == len(imgs) == N
    for i in range(N):
        pts = np.fromfile(bins[i], dtype=np.float32).reshape(-1, 4)
        lab = np.fromfile(labels[i], dtype=np.uint32)
        assert len(pts) == len(lab) > 1000
        f = world.scan(i, images=False)
        np.testing.assert_array_equal(pts, f.points[:, :4])
        sem = lab & 0xFFFF
        assert set(np.unique(sem).tolist()) <= set(RAW_CLASSES)
        np.testing.assert_array_equal(raw_to_label(lab), f.labels)
        np.testing.assert_array_equal(lab >> 16, f.instances)
        assert 60 in sem or 40 in sem  # lane markings / road are written as raw ids
        img = np.asarray(Image.open(imgs[i]))
        assert img.shape == (180, 320, 3) and img.dtype == np.uint8


def test_calib_poses_times_round_trip(seq: Path, world: SimWorld) -> None:
    calib = read_calib(seq / "calib.txt")
    cam = world.cameras[0]
    assert set(calib) == {"P0", "P1", "P2", "P3", "Tr"}
    np.testing.assert_allclose(calib["P2"][:, :3], cam.K, rtol=1e-10)
    np.testing.assert_allclose(calib["Tr"], cam.T_cam_lidar, atol=1e-10)
    assert load_calibration(str(seq / "calibration.yaml"))[0].name == "front"
    poses = np.loadtxt(seq / "poses.txt").reshape(-1, 3, 4)
    assert len(poses) == N
    np.testing.assert_allclose(poses[0], np.eye(4)[:3], atol=1e-9)
    Tr, Tr_inv = calib["Tr"], invert_transform(calib["Tr"])
    p0 = world.scan(0, images=False).pose
    for i in range(N):
        P = np.vstack([poses[i], [0, 0, 0, 1]])
        lidar_rel = Tr_inv @ P @ Tr
        expect = invert_transform(p0) @ world.scan(i, images=False).pose
        np.testing.assert_allclose(lidar_rel, expect, atol=1e-6)
    times = np.loadtxt(seq / "times.txt")
    np.testing.assert_allclose(times, np.arange(N) * 0.1, atol=1e-9)


def test_points_project_onto_their_class_with_written_calib(seq: Path, world: SimWorld) -> None:
    """Use only calib.txt to project the .bin points; compare with the rendered classes."""
    calib = read_calib(seq / "calib.txt")
    P2, Tr = calib["P2"], calib["Tr"]
    agree = total = 0
    for i in range(N):
        pts = np.fromfile(seq / "velodyne" / f"{i:06d}.bin", dtype=np.float32).reshape(-1, 4)
        lab = raw_to_label(np.fromfile(seq / "labels" / f"{i:06d}.label", dtype=np.uint32))
        h = np.hstack([pts[:, :3], np.ones((len(pts), 1))]) @ (P2 @ Tr).T
        z = h[:, 2]
        ok = z > 0.1
        u = np.floor(h[ok, 0] / z[ok]).astype(int)
        v = np.floor(h[ok, 1] / z[ok]).astype(int)
        inside = (u >= 0) & (u < 320) & (v >= 0) & (v < 180)
        rendered = world.scan(i).image_labels["front"]
        agree += (rendered[v[inside], u[inside]] == lab[ok][inside]).sum()
        total += inside.sum()
    assert total > 1000
    assert agree / total > 0.9
