"""The student network: shapes, batch isolation, both conv forms, trainability."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmodelkd_ros.nets import (
    PRESETS,
    StudentConfig,
    StudentNet,
    build_inputs,
    count_parameters,
    default_grid,
    student_config,
)
from xmodelkd_ros.sim.fixtures import synthetic_scan
from xmodelkd_ros.sparse import use_impl


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_forward_shapes_and_unlabeled_points_left_out():
    scan = synthetic_scan(3000, 1)
    scan[:5, :3] = np.nan  # non-finite points
    scan[5:10, 0] = 500.0  # far outside the grid
    net = StudentNet(student_config("small", num_classes=7)).eval()
    inputs = build_inputs([scan], default_grid(), net.config.num_levels)
    assert inputs.valid[0][:10].sum() == 0
    assert inputs.valid[0][10:].all()
    with torch.inference_mode():
        out = net(inputs.voxel_feats, inputs.point_feats, inputs.point2voxel, inputs.maps)
    n_valid = int(inputs.valid[0].sum())
    assert out.logits.shape == (n_valid, 7)
    assert out.features.shape == (n_valid, net.config.feature_dim)
    assert out.voxel_features.shape[0] == inputs.voxel_feats.shape[0]
    assert torch.isfinite(out.logits).all()


def test_batched_scans_equal_separate_scans():
    """Kernel maps must never connect voxels of different scans in one batch."""
    net = StudentNet(StudentConfig()).eval()
    scans = [synthetic_scan(2000, 2), synthetic_scan(1500, 3)]
    grid = default_grid()
    with torch.inference_mode():
        batched = build_inputs(scans, grid, net.config.num_levels)
        joint = net(batched.voxel_feats, batched.point_feats, batched.point2voxel, batched.maps)
        for b, scan in enumerate(scans):
            single = build_inputs([scan], grid, net.config.num_levels)
            alone = net(single.voxel_feats, single.point_feats, single.point2voxel, single.maps)
            torch.testing.assert_close(
                joint.logits[batched.point_batch == b], alone.logits, rtol=1e-4, atol=1e-4
            )


def test_gather_and_pair_forms_agree_with_gradients():
    """float64: in float32, train-mode BatchNorm amplifies summation-order noise."""
    net = StudentNet(StudentConfig()).train().double()
    inputs = build_inputs([synthetic_scan(1500, 4)], default_grid(), net.config.num_levels)
    vfeats, pfeats = inputs.voxel_feats.double(), inputs.point_feats.double()
    results = []
    for impl in ("gather", "pairs"):
        net.zero_grad()
        with use_impl(impl):
            out = net(vfeats, pfeats, inputs.point2voxel, inputs.maps)
        out.logits.square().mean().backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters()}
        results.append((out.logits.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-9, atol=1e-10)
    for name in results[0][1]:
        torch.testing.assert_close(
            results[0][1][name], results[1][1][name], rtol=1e-7, atol=1e-10, msg=name
        )


def test_every_parameter_receives_a_gradient():
    net = StudentNet(StudentConfig()).train()
    inputs = build_inputs([synthetic_scan(1500, 5)], default_grid(), net.config.num_levels)
    out = net(inputs.voxel_feats, inputs.point_feats, inputs.point2voxel, inputs.maps)
    out.logits.logsumexp(1).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_overfits_a_small_labelledsynthetic_scan():
    """Geometry-defined labels (ground / low / high) must be learnable in a few steps."""
    scan = synthetic_scan(2000, 6)
    labels = np.digitize(scan[:, 2], [-1.5, -0.5])
    net = StudentNet(student_config("small", num_classes=3)).train()
    inputs = build_inputs([scan], default_grid(), net.config.num_levels)
    target = torch.as_tensor(labels)[inputs.valid[0]]
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    with use_impl("pairs"):  # the training form: several times faster backward on CPU
        for _ in range(40):
            opt.zero_grad()
            out = net(inputs.voxel_feats, inputs.point_feats, inputs.point2voxel, inputs.maps)
            loss = torch.nn.functional.cross_entropy(out.logits, target)
            loss.backward()
            opt.step()
    net.eval()
    with torch.inference_mode():
        out = net(inputs.voxel_feats, inputs.point_feats, inputs.point2voxel, inputs.maps)
    accuracy = (out.logits.argmax(1) == target).float().mean().item()
    assert accuracy > 0.9


def test_presets_and_config_round_trip():
    assert set(PRESETS) >= {"small", "base"}
    small, base = StudentNet(PRESETS["small"]), StudentNet(PRESETS["base"])
    assert count_parameters(small) < count_parameters(base)
    cfg = student_config("base", num_classes=5)
    assert StudentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown student preset"):
        student_config("huge")
    with pytest.raises(ValueError, match="dec_widths"):
        StudentNet(StudentConfig(dec_widths=(8,)))
    with pytest.raises(ValueError, match="unknown student config keys"):
        StudentConfig.from_dict({"widths": [1]})


def test_empty_scan_gives_empty_outputs():
    net = StudentNet(StudentConfig()).eval()
    inputs = build_inputs([np.zeros((0, 4), np.float32)], default_grid(), net.config.num_levels)
    with torch.inference_mode():
        out = net(inputs.voxel_feats, inputs.point_feats, inputs.point2voxel, inputs.maps)
    assert out.logits.shape == (0, net.config.num_classes)
