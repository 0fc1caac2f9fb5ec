"""Sparse conv against dense F.conv3d / conv_transpose3d, across impls, and against spconv."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xmodelkd_ros.sparse import (
    ConvPairs,
    PairTensors,
    SparseConv3d,
    downsample,
    get_default_impl,
    run_spconv_reference,
    set_default_impl,
    submanifold_table,
    upsample_table,
    use_impl,
)
from xmodelkd_ros.sparse.spconv_backend import spconv_cuda_usable

pytestmark = pytest.mark.usefixtures("one_thread")


#: "graph" is the pair-list form in exportable ops (the CPU ONNX graph), fed ConvPairs tensors.
IMPLS = ["gather", "pairs", "graph"]


def run_conv(layer: SparseConv3d, x: torch.Tensor, table: torch.Tensor, impl: str) -> torch.Tensor:
    if impl == "graph":
        return layer(x, ConvPairs.from_table(table, x.shape[0]).tensors())
    return layer(x, table, impl=impl)


def full_grid(batch: int, shape: tuple[int, int, int]) -> torch.Tensor:
    axes = [torch.arange(batch), *(torch.arange(s) for s in shape)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 4)


def random_coords(seed: int, batch: int, shape: tuple[int, int, int], n: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    cells = np.stack([rng.integers(0, batch, n), *(rng.integers(0, s, n) for s in shape)], 1)
    return torch.from_numpy(np.unique(cells, axis=0))


def to_dense(feats: torch.Tensor, coords: torch.Tensor, batch: int, shape) -> torch.Tensor:
    """(B, C, X, Y, Z) with zeros at inactive sites."""
    dense = feats.new_zeros(batch, feats.shape[1], *shape)
    b, x, y, z = coords.T
    dense[b, :, x, y, z] = feats
    return dense


def at(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    b, x, y, z = coords.T
    return dense[b, :, x, y, z]


def dense_weight(layer: SparseConv3d) -> torch.Tensor:
    """spconv/our (Cout, a, b, c, Cin) -> torch conv3d (Cout, Cin, a, b, c)."""
    return layer.weight.permute(0, 4, 1, 2, 3)


@pytest.mark.parametrize("impl", IMPLS)
def test_subm_full_grid_equals_conv3d(impl: str):
    torch.manual_seed(0)
    shape = (5, 6, 7)
    coords = full_grid(2, shape)
    layer = SparseConv3d(3, 4, 3, "subm", bias=True).double()
    x = torch.randn(coords.shape[0], 3, dtype=torch.float64)
    out = run_conv(layer, x, submanifold_table(coords, shape), impl)
    ref = F.conv3d(to_dense(x, coords, 2, shape), dense_weight(layer), layer.bias, padding=1)
    torch.testing.assert_close(out, at(ref, coords))


@pytest.mark.parametrize("impl", IMPLS)
def test_subm_random_sparse_equals_masked_conv3d(impl: str):
    """On a sparse set, subm == dense conv of the zero-filled grid, read at active sites."""
    torch.manual_seed(1)
    shape = (9, 8, 7)
    coords = random_coords(1, 2, shape, 150)
    layer = SparseConv3d(2, 5, 3, "subm").double()
    x = torch.randn(coords.shape[0], 2, dtype=torch.float64)
    out = run_conv(layer, x, submanifold_table(coords, shape), impl)
    ref = F.conv3d(to_dense(x, coords, 2, shape), dense_weight(layer), padding=1)
    torch.testing.assert_close(out, at(ref, coords))


@pytest.mark.parametrize("impl", IMPLS)
def test_down_equals_strided_conv3d(impl: str):
    torch.manual_seed(2)
    shape = (6, 4, 8)
    coords = full_grid(2, shape)
    out_coords, table, out_shape = downsample(coords, shape, 2, 2)
    assert out_shape == (3, 2, 4)
    torch.testing.assert_close(out_coords, full_grid(2, out_shape), rtol=0, atol=0)
    layer = SparseConv3d(3, 4, 2, "down", bias=True).double()
    x = torch.randn(coords.shape[0], 3, dtype=torch.float64)
    out = run_conv(layer, x, table, impl)
    ref = F.conv3d(to_dense(x, coords, 2, shape), dense_weight(layer), layer.bias, stride=2)
    torch.testing.assert_close(out, at(ref, out_coords))


@pytest.mark.parametrize("impl", IMPLS)
def test_down_sparse_equals_strided_conv3d(impl: str):
    torch.manual_seed(3)
    shape = (8, 6, 10)
    coords = random_coords(3, 2, shape, 120)
    out_coords, table, _ = downsample(coords, shape, 2, 2)
    layer = SparseConv3d(3, 4, 2, "down").double()
    x = torch.randn(coords.shape[0], 3, dtype=torch.float64)
    ref = F.conv3d(to_dense(x, coords, 2, shape), dense_weight(layer), stride=2)
    torch.testing.assert_close(run_conv(layer, x, table, impl), at(ref, out_coords))


@pytest.mark.parametrize("impl", IMPLS)
def test_inverse_equals_conv_transpose3d(impl: str):
    torch.manual_seed(4)
    fine_shape = (6, 4, 8)
    fine = full_grid(2, fine_shape)
    coarse, _, coarse_shape = downsample(fine, fine_shape)
    layer = SparseConv3d(4, 3, 2, "inverse", bias=True).double()
    x = torch.randn(coarse.shape[0], 4, dtype=torch.float64)
    out = run_conv(layer, x, upsample_table(fine, coarse), impl)
    # conv_transpose3d weight is (Cin, Cout, a, b, c)
    w_t = layer.weight.permute(4, 0, 1, 2, 3)
    ref = F.conv_transpose3d(to_dense(x, coarse, 2, coarse_shape), w_t, layer.bias, stride=2)
    torch.testing.assert_close(out, at(ref, fine))


def _case(kind: str, seed: int, dtype=torch.float32, cin: int = 3, cout: int = 4, n: int = 200):
    torch.manual_seed(seed)
    shape = (10, 8, 6)
    coords = random_coords(seed, 2, shape, n)
    if kind == "subm":
        layer, table, m_in = (
            SparseConv3d(cin, cout, 3, "subm"),
            submanifold_table(coords, shape),
            None,
        )
    else:
        coarse, down, _ = downsample(coords, shape)
        if kind == "down":
            layer, table = SparseConv3d(cin, cout, 2, "down"), down
            m_in = coords.shape[0]
        else:
            layer, table = SparseConv3d(cin, cout, 2, "inverse"), upsample_table(coords, coarse)
            m_in = coarse.shape[0]
    m_in = coords.shape[0] if m_in is None else m_in
    layer = layer.to(dtype)
    x = torch.randn(m_in, cin, dtype=dtype, requires_grad=True)
    return layer, x, table


@pytest.mark.parametrize("kind", ["subm", "down", "inverse"])
def test_gather_and_pairs_agree_in_output_and_grads(kind: str):
    layer, x, table = _case(kind, 5)
    grads = {}
    outs = {}
    g = torch.randn(table.shape[0], layer.out_channels)
    for impl in IMPLS:
        x.grad = None
        layer.zero_grad()
        out = run_conv(layer, x, table, impl)
        (out * g).sum().backward()
        outs[impl] = out.detach()
        grads[impl] = (x.grad.clone(), layer.weight.grad.clone())
    for impl in IMPLS[1:]:
        torch.testing.assert_close(outs["gather"], outs[impl])
        torch.testing.assert_close(grads["gather"][0], grads[impl][0])
        torch.testing.assert_close(grads["gather"][1], grads[impl][1])


@pytest.mark.parametrize("kind", ["subm", "down", "inverse"])
@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck(kind: str, impl: str):
    layer, x, table = _case(kind, 6, torch.float64, cin=2, cout=2, n=25)
    w = layer.weight.detach().clone().requires_grad_()
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)

    def fn(inp, weight, bias):
        if impl == "graph":
            pairs = ConvPairs.from_table(table, inp.shape[0]).tensors()
            return torch.func.functional_call(layer, {"weight": weight}, (inp, pairs)) + bias
        out = torch.func.functional_call(layer, {"weight": weight}, (inp, table), {"impl": impl})
        return out + bias

    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_weight_layout_and_init():
    layer = SparseConv3d(16, 32, 3, "subm")
    assert tuple(layer.weight.shape) == (32, 3, 3, 3, 16)
    bound = 1 / np.sqrt(16 * 27)
    assert layer.weight.abs().max() <= bound
    assert layer.weight.std() > 0.4 * bound  # uniform(-b, b) has std b/sqrt(3)
    assert SparseConv3d(4, 8, 2, "down").weight.shape == (8, 2, 2, 2, 4)
    assert SparseConv3d(8, 4, 2, "inverse").weight.shape == (4, 2, 2, 2, 8)
    with pytest.raises(ValueError):
        SparseConv3d(4, 8, 3, "dense")


def test_default_impl_switching():
    layer, x, table = _case("subm", 7)
    assert get_default_impl() == "gather"
    ref = layer(x, table)
    with use_impl("pairs"):
        assert get_default_impl() == "pairs"
        torch.testing.assert_close(layer(x, table), ref)
    assert get_default_impl() == "gather"
    set_default_impl("pairs")
    try:
        assert get_default_impl() == "pairs"
    finally:
        set_default_impl("gather")
    with pytest.raises(ValueError):
        set_default_impl("cuda-magic")


def test_empty_input():
    layer = SparseConv3d(3, 4, 3, "subm", bias=True)
    table = submanifold_table(torch.zeros(0, 4, dtype=torch.int64), (4, 4, 4))
    for impl in IMPLS:
        assert run_conv(layer, torch.zeros(0, 3), table, impl).shape == (0, 4)


ALLOWED_ONNX_OPS = {
    "Add", "Concat", "Constant", "ConstantOfShape", "Gather", "MatMul", "Shape", "Unsqueeze",
    "Reshape", "Transpose", "Relu", "Cast", "Slice", "Squeeze", "Expand", "Identity",
}  # fmt: skip


class _TwoLayer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = SparseConv3d(4, 8, 3, "subm", bias=True)
        self.b = SparseConv3d(8, 6, 2, "down")

    def forward(self, x, subm, down):
        return self.b(torch.relu(self.a(x, subm)), down)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # legacy exporter, no onnxscript
def test_onnx_export_uses_only_standard_ops():
    onnx = pytest.importorskip("onnx", reason="onnx not installed: export check needs it")
    net = _TwoLayer().eval()
    shape = (10, 8, 6)
    coords = random_coords(8, 1, shape, 80)
    _, down, _ = downsample(coords, shape)
    subm = submanifold_table(coords, shape)
    x = torch.randn(coords.shape[0], 4)
    buf = io.BytesIO()
    with use_impl("pairs"):  # must still fall back to the gather graph while tracing
        torch.onnx.export(
            net, (x, subm, down), buf, opset_version=17, dynamo=False,
            input_names=["x", "subm", "down"], output_names=["y"],
            dynamic_axes={"x": {0: "m0"}, "subm": {0: "m0"}, "down": {0: "m1"}, "y": {0: "m1"}},
        )  # fmt: skip
    model = onnx.load_from_string(buf.getvalue())
    ops = {n.op_type for n in model.graph.node}
    assert ops <= ALLOWED_ONNX_OPS, ops - ALLOWED_ONNX_OPS
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    # a different voxel count than at export time: the graph must be shape-generic
    coords2 = random_coords(9, 1, shape, 140)
    _, down2, _ = downsample(coords2, shape)
    subm2 = submanifold_table(coords2, shape)
    x2 = torch.randn(coords2.shape[0], 4)
    (y,) = sess.run(None, {"x": x2.numpy(), "subm": subm2.numpy(), "down": down2.numpy()})
    with torch.no_grad():
        ref = net(x2, subm2, down2)
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-4, atol=1e-5)


class _ThreeKinds(torch.nn.Module):
    """subm -> down -> inverse, as the student chains them, on pair-list inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = SparseConv3d(4, 8, 3, "subm", bias=True)
        self.b = SparseConv3d(8, 6, 2, "down")
        self.c = SparseConv3d(6, 5, 2, "inverse")

    def forward(self, x, *flat):
        subm, down, up = (PairTensors(*flat[3 * i : 3 * i + 3], i == 0) for i in range(3))
        return self.c(torch.relu(self.b(torch.relu(self.a(x, subm)), down)), up)


def _pair_feeds(seed: int, shape: tuple[int, int, int], n: int) -> list[torch.Tensor]:
    coords = random_coords(seed, 1, shape, n)
    coarse, down, _ = downsample(coords, shape)
    m, mc = coords.shape[0], coarse.shape[0]
    up = upsample_table(coords, coarse)
    tables = [(submanifold_table(coords, shape), m), (down, m), (up, mc)]
    feeds = [torch.randn(m, 4)]
    for table, m_in in tables:
        feeds += ConvPairs.from_table(table, m_in).tensors()[:3]
    return feeds


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_pairs_graph_matches_torch_in_onnxruntime():
    """The CPU graph: real pairs only (Gather / MatMul / Slice / ScatterND-add), shape-generic."""
    onnx = pytest.importorskip("onnx", reason="onnx not installed: export check needs it")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    net = _ThreeKinds().eval()
    shape = (10, 8, 6)
    feeds = _pair_feeds(8, shape, 80)
    names = ["x"] + [f"{t}_{p}" for t in ("subm", "down", "up") for p in ("in", "out", "bounds")]
    axes = {n: {0: f"p_{n[:-3]}"} for n in names if n.endswith(("_in", "out"))}
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            net, tuple(feeds), buf, opset_version=17, dynamo=False, input_names=names,
            output_names=["y"], dynamic_axes={"x": {0: "m"}, "y": {0: "m"}, **axes},
        )  # fmt: skip
    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    assert "ScatterND" in ops and ops <= ALLOWED_ONNX_OPS | {"ScatterND", "ReduceMax"}, ops
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for seed, n in ((9, 140), (10, 30)):  # other voxel and pair counts than at export
        other = _pair_feeds(seed, shape, n)
        (y,) = sess.run(None, {k: v.numpy() for k, v in zip(names, other, strict=True)})
        with torch.no_grad():
            ref = net(*other)
        np.testing.assert_allclose(y, ref.numpy(), rtol=1e-4, atol=1e-5)


# --- spconv equivalence (weights move between backends unchanged) ---------------------------


@pytest.fixture
def spconv():
    """spconv 2.3.8's CPU conv races when multi-threaded (rows differ run to run with 2
    threads on ~30k voxels, exact with 1), so the reference runs single-threaded."""
    mod = pytest.importorskip(
        "spconv.pytorch", reason="spconv not installed: weight/convention equivalence needs it"
    )
    return mod  # the autouse _one_thread fixture already pins one thread


@pytest.fixture(params=["cpu", "cuda"])
def sp_device(request, spconv) -> torch.device:
    """The reference runs on the CPU everywhere, and on the GPU (spconv's implicit-GEMM
    kernels, its CUDA default) where a GPU and a CUDA build of spconv are present."""
    if request.param == "cuda" and not spconv_cuda_usable():
        pytest.skip("spconv's CUDA kernels need a GPU and a CUDA build of spconv")
    return torch.device(request.param)


def _reference(layer, x, coords, shape, device, down_layer=None):
    """``run_spconv_reference`` with everything on ``device``; results back on the CPU."""
    moved = copy.deepcopy(down_layer).to(device) if down_layer is not None else None
    feats, out_coords = run_spconv_reference(
        copy.deepcopy(layer).to(device), x.to(device), coords.to(device), shape,
        batch_size=2, down_layer=moved,
    )  # fmt: skip
    return feats.cpu(), out_coords.cpu()


SP_SHAPE = (12, 10, 8)  # even: spconv's floor output shape then equals ours


def test_spconv_subm_matches(sp_device):
    torch.manual_seed(10)
    coords = random_coords(10, 2, SP_SHAPE, 500)
    layer = SparseConv3d(8, 16, 3, "subm", bias=True)
    x = torch.randn(coords.shape[0], 8)
    with torch.no_grad():
        ours = layer(x, submanifold_table(coords, SP_SHAPE))
        ref, ref_coords = _reference(layer, x, coords, SP_SHAPE, sp_device)
    torch.testing.assert_close(ref_coords, coords, rtol=0, atol=0)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [SP_SHAPE, (11, 9, 7)])
def test_spconv_down_matches(sp_device, shape):
    torch.manual_seed(11)
    coords = random_coords(11, 2, shape, 500)
    layer = SparseConv3d(8, 16, 2, "down", bias=True)
    x = torch.randn(coords.shape[0], 8)
    out_coords, table, _ = downsample(coords, shape)
    with torch.no_grad():
        ours = layer(x, table)
        ref, ref_coords = _reference(layer, x, coords, shape, sp_device)
    torch.testing.assert_close(ref_coords, out_coords, rtol=0, atol=0)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_spconv_inverse_matches(sp_device):
    torch.manual_seed(12)
    coords = random_coords(12, 2, SP_SHAPE, 500)
    down = SparseConv3d(8, 16, 2, "down")
    inv = SparseConv3d(16, 8, 2, "inverse", bias=True)
    x = torch.randn(coords.shape[0], 8)
    coarse, down_table, _ = downsample(coords, SP_SHAPE)
    with torch.no_grad():
        ours = inv(down(x, down_table), upsample_table(coords, coarse))
        ref, ref_coords = _reference(inv, x, coords, SP_SHAPE, sp_device, down_layer=down)
    torch.testing.assert_close(ref_coords, coords, rtol=0, atol=0)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_state_dict_roundtrip_with_spconv(spconv):
    from xmodelkd_ros.sparse import to_spconv

    layer = SparseConv3d(4, 6, 3, "subm", bias=True)
    sp_layer = to_spconv(layer, "k")
    fresh = SparseConv3d(4, 6, 3, "subm", bias=True)
    fresh.load_state_dict(sp_layer.state_dict())
    torch.testing.assert_close(fresh.weight, layer.weight)
    torch.testing.assert_close(fresh.bias, layer.bias)


def test_pairs_cache_follows_in_place_table_changes():
    layer, x, table = _case("subm", 13)
    with torch.no_grad():
        before = layer(x, table, impl="pairs")
        table[:, 0] = x.shape[0]  # drop one offset in place: cached pairs must be rebuilt
        after = layer(x, table, impl="pairs")
        torch.testing.assert_close(after, layer(x, table, impl="gather"))
    assert not torch.allclose(before, after)


def test_spconv_backend_degrades_without_spconv(monkeypatch):
    """The package must import and report cleanly on machines without spconv."""
    import sys

    from xmodelkd_ros.sparse import spconv_available, to_spconv

    monkeypatch.setitem(sys.modules, "spconv", None)
    monkeypatch.setitem(sys.modules, "spconv.pytorch", None)
    assert spconv_available() is False
    with pytest.raises(ImportError):
        to_spconv(SparseConv3d(2, 2, 3, "subm"))


def test_pairs_trains_on_tables_built_in_inference_mode():
    """Data loaders may build maps under inference_mode; training on them must work."""
    layer, x, _ = _case("subm", 7)
    with torch.inference_mode():
        coords = torch.stack(
            [torch.zeros(6, dtype=torch.long), *torch.randint(0, 4, (3, 6))], dim=1
        ).unique(dim=0)
        table = submanifold_table(coords, (4, 4, 4))
    x = torch.randn(coords.shape[0], layer.in_channels, requires_grad=True)
    ref = layer(x, table.clone(), impl="gather")
    out = layer(x, table, impl="pairs")
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    assert layer.weight.grad is not None and x.grad is not None
