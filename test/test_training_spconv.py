"""``optim.sparse_impl: spconv``: spconv's kernels on the network's own tables and weights.

spconv's CPU build has a forward only (and races on 2 threads, so these run on one);
the gradient check needs a CUDA build of spconv and a GPU and skips without them.
"""

from __future__ import annotations

import copy

import pytest
import torch

from xmodelkd_ros.nets import StudentNet, build_inputs, default_grid, student_config
from xmodelkd_ros.sim.fixtures import synthetic_scan
from xmodelkd_ros.sparse import SparseConv3d, use_impl
from xmodelkd_ros.sparse.spconv_backend import spconv_cuda_usable
from xmodelkd_ros.sparse.spconv_train import (
    SpconvSparseConv3d,
    SpconvTrainingError,
    convert_to_spconv,
    indice_pairs,
)
from xmodelkd_ros.training.train import main

pytest.importorskip("spconv.pytorch", reason="spconv not installed: the backend needs it")


@pytest.fixture
def nets(one_thread):
    torch.manual_seed(0)
    net = StudentNet(student_config("small", num_classes=5))
    inputs = build_inputs(
        [synthetic_scan(3000, 1), synthetic_scan(2000, 2)], default_grid(), net.config.num_levels
    )
    return net, convert_to_spconv(copy.deepcopy(net)), inputs


def _logits(net, i):
    return net(i.voxel_feats, i.point_feats, i.point2voxel, i.maps).logits


def test_same_parameters_and_checkpoint_keys(nets):
    net, sp, _ = nets
    convs = [m for m in sp.modules() if isinstance(m, SparseConv3d)]
    assert convs and all(type(m) is SpconvSparseConv3d for m in convs)
    kinds = {m.kind for m in convs}
    assert kinds == {"subm", "down", "inverse"}
    a, b = net.state_dict(), sp.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    # In place: the converted module's parameters are the objects an optimizer holds.
    before = list(sp.parameters())
    assert [id(p) for p in convert_to_spconv(sp).parameters()] == [id(p) for p in before]


def test_forward_matches_pairs(nets):
    net, sp, inputs = nets
    net.eval(), sp.eval()
    with torch.no_grad(), use_impl("pairs"):
        ref = _logits(net, inputs)
        out = _logits(sp, inputs)
    assert ref.shape == out.shape and ref.abs().max() > 0
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_indice_pairs_are_the_table_entries():
    torch.manual_seed(1)
    table = torch.randint(0, 7, (9, 27))  # 7 = sentinel for 6 inputs... and 6 real rows
    pairs, counts = indice_pairs(table, 6)
    assert pairs.dtype == counts.dtype == torch.int32 and pairs.shape[:2] == (2, 27)
    for k in range(27):
        rows = (table[:, k] < 6).nonzero().squeeze(1)
        n = int(counts[k])
        assert n == len(rows)
        assert pairs[1, k, :n].tolist() == rows.tolist()
        assert pairs[0, k, :n].tolist() == table[rows, k].tolist()
        assert (pairs[:, k, n:] == -1).all()
    assert indice_pairs(table, 6)[0] is pairs  # cached for the table's next layer


def test_cpu_training_is_a_clear_error(nets, tmp_path, capsys):
    _, sp, inputs = nets
    with pytest.raises(SpconvTrainingError, match="no CPU backward"):
        _logits(sp.train(), inputs)
    code = main(["--stage", "baseline", "--out", str(tmp_path), "--device", "cpu",
                 "--no-progress", "--set", "optim.sparse_impl=spconv"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "spconv trains on CUDA only" in err and "Traceback" not in err
    assert main(["--out", str(tmp_path), "--set", "optim.sparse_impl=bogus"]) == 2
    assert "unknown optim.sparse_impl 'bogus'" in capsys.readouterr().err


def test_tracing_uses_the_exportable_form(nets):
    _, sp, inputs = nets
    layer = sp.stem[0].conv
    x, table = inputs.voxel_feats, inputs.maps.subm[0]
    with torch.no_grad():
        traced = torch.jit.trace(layer, (x, table), check_trace=False)
        torch.testing.assert_close(traced(x, table), layer(x, table), rtol=1e-5, atol=1e-5)
    # spconv's autograd Function would show up as an opaque PythonOp
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert "prim::PythonOp" not in kinds and "aten::index_add_" not in kinds


@pytest.mark.skipif(not spconv_cuda_usable(), reason="needs a GPU and a CUDA build of spconv")
def test_cuda_gradients_match_pairs(nets):
    net, sp, inputs = nets
    dev = torch.device("cuda")
    net, sp = net.to(dev).train(), sp.to(dev).train()
    i = inputs.to(dev)
    with use_impl("pairs"):
        _logits(net, i).square().mean().backward()
    _logits(sp, i).square().mean().backward()
    for (name, a), b in zip(net.named_parameters(), sp.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5, msg=name)
