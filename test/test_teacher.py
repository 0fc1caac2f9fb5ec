"""Fusion teacher: shapes, unseen points fall back to 3D, multi-view averaging, training."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from xmodelkd_ros.nets import StudentConfig, StudentNet, build_inputs, default_grid
from xmodelkd_ros.nets.image_encoder import ImageEncoderConfig
from xmodelkd_ros.nets.teacher import (
    FusionTeacher,
    PointPixelCorrespondence,
    TeacherConfig,
    average_views,
)
from xmodelkd_ros.sim.fixtures import synthetic_scan
from xmodelkd_ros.training.objectives import TeacherLoss, TeacherWeights

H, W = 64, 96


def _config() -> TeacherConfig:
    # Two U-Net levels and a few hundred points: the shared 2-core CPU runs this in seconds.
    return TeacherConfig(
        student=StudentConfig(num_classes=5, enc_widths=(8, 16), dec_widths=(16,)),
        image=ImageEncoderConfig(arch="tiny", out_channels=16, out_stride=8),
        contrast_dim=12,
    )


def _corr(P: int, seed: int, n_images: int = 2) -> PointPixelCorrespondence:
    """About half the points seen once, some of those seen a second time by the other image."""
    rng = np.random.default_rng(seed)
    seen = np.flatnonzero(rng.random(P) < 0.5)
    twice = seen[rng.random(seen.size) < 0.3]
    pidx = np.concatenate([seen, twice])
    iidx = np.concatenate(
        [rng.integers(0, n_images, seen.size), rng.integers(0, n_images, twice.size)]
    )
    uv = np.stack([rng.uniform(0, W, pidx.size), rng.uniform(0, H, pidx.size)], 1)
    return PointPixelCorrespondence(
        torch.as_tensor(pidx),
        torch.as_tensor(iidx),
        torch.as_tensor(uv, dtype=torch.float32),
        (H, W),
    )


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    teacher = FusionTeacher(_config())
    inputs = build_inputs(
        [synthetic_scan(300, 1), synthetic_scan(200, 2)],
        default_grid(),
        teacher.config.student.num_levels,
    )
    P = inputs.point_feats.shape[0]
    return teacher, inputs, _corr(P, 3), torch.rand(2, 3, H, W)


def test_output_shapes_and_3d_branch_is_a_student(setup):
    teacher, inputs, corr, images = setup
    teacher.eval()
    P, K = inputs.point_feats.shape[0], len(corr)
    with torch.inference_mode():
        out = teacher(inputs, images, corr)
    d3 = teacher.feature_dim
    assert out.logits.shape == out.logits_3d.shape == (P, 5)
    assert out.features.shape == out.features_3d.shape == (P, d3)
    assert out.feats_2d_views.shape == (K, 16)
    assert out.proj_3d.shape == (P, 12) and out.proj_2d.shape == (K, 12)
    expect_seen = torch.zeros(P, dtype=torch.bool)
    expect_seen[corr.point_idx] = True
    assert torch.equal(out.seen, expect_seen)
    assert torch.all(out.gate[~out.seen] == 0)
    # The 3D branch is exactly a StudentNet: its weights load into the student.
    student = StudentNet(teacher.config.student).eval()
    student.load_state_dict(teacher.branch_3d.state_dict())
    with torch.inference_mode():
        alone = student(inputs.voxel_feats, inputs.point_feats, inputs.point2voxel, inputs.maps)
    torch.testing.assert_close(out.logits_3d, alone.logits)
    # Round-trip of the config.
    assert TeacherConfig.from_dict(teacher.config.to_dict()) == teacher.config


def test_unseen_points_ignore_images_and_no_cameras_works(setup):
    teacher, inputs, corr, images = setup
    teacher.eval()
    with torch.inference_mode():
        a = teacher(inputs, images, corr)
        b = teacher(inputs, torch.rand(2, 3, H, W), corr)
        none = teacher(
            inputs,
            torch.zeros(0, 3, H, W),
            PointPixelCorrespondence(
                torch.zeros(0, dtype=torch.long),
                torch.zeros(0, dtype=torch.long),
                torch.zeros(0, 2),
                (H, W),
            ),
        )
    unseen = ~a.seen
    torch.testing.assert_close(a.logits[unseen], b.logits[unseen])
    assert not torch.allclose(a.logits[a.seen], b.logits[a.seen])
    # Without any camera every point takes the 3D-only path of the fusion.
    torch.testing.assert_close(none.logits[unseen], a.logits[unseen])
    assert not none.seen.any() and none.feats_2d_views.shape == (0, 16)


def test_views_are_averaged(setup):
    teacher, inputs, corr, images = setup
    teacher.eval()
    # Duplicating every correspondence leaves every per-point mean, hence the output, unchanged.
    dup = PointPixelCorrespondence(
        corr.point_idx.repeat(2), corr.image_idx.repeat(2), corr.uv.repeat(2, 1), corr.image_size
    )
    with torch.inference_mode():
        a = teacher(inputs, images, corr)
        b = teacher(inputs, images, dup)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.feats_2d_views[: len(corr)], a.feats_2d_views)
    # average_views against a loop.
    feats = torch.randn(7, 3)
    pidx = torch.tensor([0, 2, 2, 4, 4, 4, 0])
    mean, counts = average_views(feats, pidx, 6)
    for p in range(6):
        rows = feats[pidx == p]
        expect = rows.mean(0) if len(rows) else torch.zeros(3)
        torch.testing.assert_close(mean[p], expect)
    assert counts.tolist() == [2, 0, 2, 0, 3, 0]


def test_trains_end_to_end_with_teacher_loss(setup):
    teacher, inputs, corr, images = setup
    teacher.train()
    teacher.zero_grad()
    P = inputs.point_feats.shape[0]
    labels = torch.randint(-1, 5, (P,))
    out = teacher(inputs, images, corr)
    loss, parts = TeacherLoss(TeacherWeights(max_points=64))(out, labels, corr.point_idx)
    loss.backward()
    assert torch.isfinite(loss) and set(parts) >= {"seg_fused", "seg_3d", "contrastive"}
    missing = [n for n, p in teacher.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing
    with pytest.raises(IndexError):
        bad = PointPixelCorrespondence(
            torch.tensor([P]), torch.tensor([0]), torch.zeros(1, 2), (H, W)
        )
        teacher(inputs, images, bad)
    with pytest.raises(ValueError, match="disagree"):
        PointPixelCorrespondence(torch.tensor([0, 1]), torch.tensor([0]), torch.zeros(2, 2), (H, W))
    batch = SimpleNamespace(
        point_idx=corr.point_idx, image_idx=corr.image_idx, uv=corr.uv, image_size=[H, W]
    )
    assert PointPixelCorrespondence.from_batch(batch).image_size == (H, W)
