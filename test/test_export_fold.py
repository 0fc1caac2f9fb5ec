"""BatchNorm folding must not change eval-mode outputs: the ONNX graph carries folded weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xmodelkd_ros.nets.fold import fold_batchnorm, fold_bn_into
from xmodelkd_ros.nets.inputs import build_inputs, default_grid
from xmodelkd_ros.sim.fixtures import random_student, synthetic_scan
from xmodelkd_ros.sparse import SparseConv3d, build_kernel_maps


@pytest.fixture(autouse=True)
def _one_thread():
    """The machine is shared; one intra-op thread avoids OpenMP spin contention."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _random_bn(c: int, seed: int) -> nn.BatchNorm1d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm1d(c)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(0.2 + torch.rand(c, generator=g) * 3)
        bn.weight.copy_(torch.randn(c, generator=g))
        bn.bias.copy_(torch.randn(c, generator=g))
    return bn.eval()


@pytest.mark.parametrize("bias", [False, True])
def test_fold_linear(bias: bool) -> None:
    torch.manual_seed(0)
    lin, bn = nn.Linear(7, 5, bias=bias), _random_bn(5, 1)
    x = torch.randn(64, 7)
    ref = bn(lin(x))
    fold_bn_into(lin, bn)
    torch.testing.assert_close(lin(x), ref, rtol=1e-5, atol=1e-5)


def test_fold_sparse_conv() -> None:
    torch.manual_seed(0)
    coords = torch.unique(torch.randint(0, 6, (80, 3)), dim=0)
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.long), coords], 1)
    table = build_kernel_maps(coords, (6, 6, 6), 1).subm[0]
    conv, bn = SparseConv3d(3, 6, 3, "subm"), _random_bn(6, 2)
    x = torch.randn(len(coords), 3)
    ref = bn(conv(x, table))
    fold_bn_into(conv, bn)
    assert conv.bias is not None
    torch.testing.assert_close(conv(x, table), ref, rtol=1e-5, atol=1e-5)


def test_fold_student_equivalent_and_copy() -> None:
    """Whole student, random BN stats: same logits, no BN left, original untouched."""
    net = random_student("small", seed=3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    scan = synthetic_scan(3000, seed=7)
    inp = build_inputs([scan], default_grid(), net.config.num_levels, 4)
    with torch.no_grad():
        a = net(inp.voxel_feats, inp.point_feats, inp.point2voxel, inp.maps).logits
        b = folded(inp.voxel_feats, inp.point_feats, inp.point2voxel, inp.maps).logits
    scale = a.abs().max().item()
    assert scale > 1.0  # non-trivial outputs, so a wrong fold would show
    assert (a - b).abs().max().item() <= 1e-4 * scale
    assert (a.argmax(1) == b.argmax(1)).float().mean().item() >= 0.999


def test_fold_strict_rejects_unfoldable() -> None:
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="not foldable"):
        fold_batchnorm(model)
    assert isinstance(fold_batchnorm(model, strict=False)[0], nn.BatchNorm1d)
