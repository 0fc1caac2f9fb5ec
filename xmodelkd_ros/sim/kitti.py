"""SemanticKITTI writer for the synthetic world.

Why: the training code and any tool built for SemanticKITTI read this layout, so synthetic
sequences drop in wherever the real dataset would. Layout (``sequences/NN/``):

* ``velodyne/XXXXXX.bin``: float32 ``x, y, z, intensity``
* ``labels/XXXXXX.label``: uint32, raw SemanticKITTI id (low 16 bits) | instance << 16
* ``image_2/XXXXXX.png``: the ``front`` camera (KITTI's left colour camera slot);
  further cameras go to ``image_<name>/``
* ``calib.txt``: ``P0..P3`` (3x4, all ``[K_front | 0]``) and ``Tr`` (3x4 LiDAR->camera)
* ``poses.txt``: KITTI convention, camera-0 poses relative to the first camera-0 frame
  (``pose_i = Tr @ inv(T_w_l0) @ T_w_li @ inv(Tr)``; recover LiDAR poses with
  ``inv(Tr) @ pose_i @ Tr``)
* ``times.txt``: seconds since the first scan
* ``calibration.yaml``: every camera in the node's format (see ``xmodelkd_ros.geometry``)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..geometry import invert_transform, save_calibration
from .world import SimWorld


def _row(m: np.ndarray) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(m, dtype=np.float64).ravel())


def write_calib(path: Path, world: SimWorld) -> None:
    cam = world.cameras[0]
    P = np.hstack([cam.K, np.zeros((3, 1))])
    lines = [f"P{k}: {_row(P)}" for k in range(4)]
    lines.append(f"Tr: {_row(cam.T_cam_lidar[:3])}")
    path.write_text("\n".join(lines) + "\n")


def read_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Parse a KITTI ``calib.txt``: ``P0..P3`` as (3,4), ``Tr`` as a 4x4 homogeneous matrix."""
    out: dict[str, np.ndarray] = {}
    for line in Path(path).read_text().splitlines():
        if ":" not in line:
            continue
        key, vals = line.split(":", 1)
        m = np.array([float(v) for v in vals.split()]).reshape(3, 4)
        if key.strip() == "Tr":
            m = np.vstack([m, [0, 0, 0, 1]])
        out[key.strip()] = m
    return out


def write_kitti(
    out: str | Path,
    world: SimWorld,
    scans: int,
    sequence: int = 0,
    start: int = 0,
    progress: bool = True,
) -> Path:
    """Write ``scans`` frames of ``world`` as SemanticKITTI sequence ``sequence`` under ``out``.

    Returns the sequence directory.
    """
    if not world.cameras:
        raise ValueError("the KITTI writer needs at least the front camera")
    seq = Path(out) / "sequences" / f"{sequence:02d}"
    dirs = {"velodyne": seq / "velodyne", "labels": seq / "labels"}
    for k, cam in enumerate(world.cameras):
        dirs[cam.name] = seq / ("image_2" if k == 0 else f"image_{cam.name}")
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    write_calib(seq / "calib.txt", world)
    save_calibration(str(seq / "calibration.yaml"), world.cameras)
    Tr = world.cameras[0].T_cam_lidar
    Tr_inv = invert_transform(Tr)
    poses, times = [], []
    first_inv = None
    it = range(start, start + scans)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"kitti seq {sequence:02d}", unit="scan")
    t0 = world.scan_stamp_ns(start)
    for n, i in enumerate(it):
        f = world.scan(i)
        name = f"{n:06d}"
        f.points[:, :4].astype(np.float32).tofile(dirs["velodyne"] / f"{name}.bin")
        lab = f.raw.astype(np.uint32) | (f.instances.astype(np.uint32) << 16)
        lab.tofile(dirs["labels"] / f"{name}.label")
        for cam in world.cameras:
            Image.fromarray(f.images[cam.name]).save(
                dirs[cam.name] / f"{name}.png", compress_level=1
            )
        if first_inv is None:
            first_inv = invert_transform(f.pose)
        poses.append(Tr @ first_inv @ f.pose @ Tr_inv)
        times.append((f.stamp_ns - t0) * 1e-9)
    (seq / "poses.txt").write_text("".join(_row(p[:3]) + "\n" for p in poses))
    (seq / "times.txt").write_text("".join(f"{t:.6e}\n" for t in times))
    return seq
