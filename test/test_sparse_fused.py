"""The fused C++ kernels (sparse/fused.py) against independent computations.

Oracles: dense ``F.conv3d`` / ``conv_transpose3d`` on the scattered grid for the conv,
a float64 pair-list sum for random LiDAR-like tables (fused and eager float32 each within
the rounding bound of a float32 sum), and the eager point branch for the point head. Every
vectorised width (16..128 channels) and the generic path (other widths) are covered, on 1
and 2 threads (the kernel splits output rows between threads; a race would show as a
mismatch).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from xmodelkd_ros.nets.fold import fold_batchnorm
from xmodelkd_ros.nets.inputs import build_inputs, default_grid
from xmodelkd_ros.nets.student import StudentNet, student_config
from xmodelkd_ros.sparse import (
    ConvPairs,
    SparseConv3d,
    downsample,
    fused,
    submanifold_table,
    upsample_table,
)
from xmodelkd_ros.sparse.pairs import conv_pairs

OK, WHY = fused.available()
pytestmark = pytest.mark.skipif(not OK, reason=f"fused kernels unavailable here: {WHY}")

SHAPE = (8, 6, 10)


def random_coords(seed: int, batch: int, n: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    cells = np.stack([rng.integers(0, batch, n), *(rng.integers(0, s, n) for s in SHAPE)], 1)
    return torch.from_numpy(np.unique(cells, axis=0))


def dense_oracle(kind: str, layer: SparseConv3d, x: torch.Tensor, coords, coarse) -> torch.Tensor:
    """The conv on the dense zero-filled grid (float64), read back at the output sites.
    SHAPE is even, so stride-2 convs need no padding."""
    w = layer.weight.double()
    src, shape = (coarse, tuple(s // 2 for s in SHAPE)) if kind == "inverse" else (coords, SHAPE)
    dense = torch.zeros(2, x.shape[1], *shape, dtype=torch.float64)
    b, i, j, k = src.T
    dense[b, :, i, j, k] = x.double()
    bias = None if layer.bias is None else layer.bias.double()
    if kind == "subm":
        out, at = F.conv3d(dense, w.permute(0, 4, 1, 2, 3), bias, padding=1), coords
    elif kind == "down":
        out, at = F.conv3d(dense, w.permute(0, 4, 1, 2, 3), bias, stride=2), coarse
    else:  # conv_transpose3d weight is (Cin, Cout, a, b, c)
        out, at = F.conv_transpose3d(dense, w.permute(4, 0, 1, 2, 3), bias, stride=2), coords
    b, i, j, k = at.T
    return out[b, :, i, j, k]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["subm", "down", "inverse"])
@pytest.mark.parametrize("cin,cout", [(3, 16), (16, 32), (32, 48), (48, 64), (8, 96), (5, 128),
                                      (7, 20), (4, 1)])  # fmt: skip
def test_fused_conv_equals_dense_conv(kind: str, cin: int, cout: int, threads: int) -> None:
    coords = random_coords(cin * 100 + cout, 2, 220)
    coarse, down, _ = downsample(coords, SHAPE)
    torch.manual_seed(cout)
    if kind == "subm":
        layer, table, m_in = SparseConv3d(cin, cout, 3, "subm", bias=True), \
            submanifold_table(coords, SHAPE), len(coords)  # fmt: skip
    elif kind == "down":
        layer, table, m_in = SparseConv3d(cin, cout, 2, "down", bias=True), down, len(coords)
    else:
        layer, table, m_in = (SparseConv3d(cin, cout, 2, "inverse", bias=True),
                              upsample_table(coords, coarse), len(coarse))  # fmt: skip
    x = torch.randn(m_in, cin)
    pairs = ConvPairs.from_table(table, m_in)
    assert pairs.sorted_by_output
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            got = layer(x, pairs)
            direct = fused.sparse_conv(x, layer.weight_k(), layer.bias, pairs.in_rows,
                                       pairs.out_rows, pairs.bounds_tensor, pairs.num_out,
                                       pairs.identity_offset, threads=threads)  # fmt: skip
    finally:
        torch.set_num_threads(prev)
    want = dense_oracle(kind, layer, x, coords, coarse)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(direct, got, rtol=0, atol=0)
    if kind == "subm":
        assert pairs.identity_offset == 13  # the centre tap went through the kernel's own pass


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 400), cout=st.sampled_from([16, 32, 24]),
       bias=st.booleans())  # fmt: skip
def test_fused_equals_eager_pairs_on_random_sets(seed: int, n: int, cout: int, bias: bool) -> None:
    coords = random_coords(seed, 1 + seed % 3, n)
    table = submanifold_table(coords, SHAPE)
    pairs = ConvPairs.from_table(table, len(coords))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(coords), 12, generator=gen)
    w = torch.randn(27, 12, cout, generator=gen)
    b = torch.randn(cout, generator=gen) if bias else None
    with torch.inference_mode():
        got = conv_pairs(x, pairs, w, b)
        with fused.disabled():
            want = conv_pairs(x, pairs, w, b)
            exact = conv_pairs(x.double(), pairs, w.double(), None if b is None else b.double())
            magnitude = conv_pairs(x.abs().double(), pairs, w.abs().double(),
                                   None if b is None else b.abs().double())  # fmt: skip
    # Each output sums up to 27 x 12 float32 products in an order of the summation's own
    # choosing; a fixed tolerance flakes where terms cancel (1.2e-5 was seen at n=370).
    # The rounding error of any order is bounded by ~k * eps * sum |x w| (k terms); allow
    # 8 eps of that sum, far below one missing or doubled product (|x w| ~ 1).
    bound = 8 * torch.finfo(torch.float32).eps * magnitude + 1e-6
    for name, out in (("fused", got), ("eager", want)):
        err = (out.double() - exact).abs()
        assert bool((err <= bound).all()), f"{name}: max error {err.max():.3g} over the bound"


def test_unsorted_pairs_take_the_eager_path() -> None:
    coords = random_coords(3, 1, 120)
    pairs = ConvPairs.from_table(submanifold_table(coords, SHAPE), len(coords))
    lo, hi = pairs.bounds[0], pairs.bounds[1]
    assert hi - lo >= 2
    perm = torch.arange(pairs.in_rows.numel())
    perm[lo:hi] = perm[lo:hi].flip(0)
    shuffled = ConvPairs(pairs.in_rows[perm], pairs.out_rows[perm], pairs.bounds,
                         pairs.num_in, pairs.num_out, pairs.identity_offset)  # fmt: skip
    assert shuffled.output_sorted is None and not shuffled.sorted_by_output  # checked
    assert pairs.output_sorted and pairs.check_sorted_by_output()
    x, w = torch.randn(len(coords), 4), torch.randn(27, 4, 16)
    with torch.inference_mode():
        torch.testing.assert_close(conv_pairs(x, shuffled, w), conv_pairs(x, pairs, w),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip


def test_training_keeps_the_eager_autograd_path() -> None:
    coords = random_coords(4, 1, 150)
    pairs = ConvPairs.from_table(submanifold_table(coords, SHAPE), len(coords))
    layer = SparseConv3d(4, 16, 3, "subm", bias=True)
    x = torch.randn(len(coords), 4, requires_grad=True)
    layer(x, pairs).square().sum().backward()
    assert x.grad is not None and layer.weight.grad is not None


def test_bad_inputs_are_one_line_errors() -> None:
    x, w = torch.randn(5, 4), torch.randn(27, 4, 16)
    rows, bounds = torch.zeros(0, dtype=torch.int64), torch.zeros(28, dtype=torch.int64)
    with pytest.raises(TypeError, match="float32"):
        fused.sparse_conv(x.double(), w, None, rows, rows, bounds, 5)
    with pytest.raises(ValueError, match="shapes do not match"):
        fused.sparse_conv(x, w, None, rows, rows, bounds[:5], 5)
    with pytest.raises(ValueError, match="centre tap"):
        fused.sparse_conv(x, w, None, rows, rows, bounds, 6, centre_offset=13)


def test_point_head_equals_eager_branch() -> None:
    cfg = student_config("small", enc_widths=(16, 32, 48, 64), dec_widths=(48, 32, 32))
    torch.manual_seed(0)
    net = StudentNet(cfg)
    for m in net.modules():  # non-trivial BatchNorm statistics to fold
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    net = fold_batchnorm(net)
    assert net._folded_head() is not None
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(-20, 20, (3000, 2)), rng.uniform(-2, 2, (3000, 1)),
                          rng.uniform(0, 1, (3000, 1))], 1).astype(np.float32)  # fmt: skip
    inputs = build_inputs([pts], default_grid(0.25), cfg.num_levels, cfg.in_channels)
    args = (inputs.voxel_feats, inputs.point_feats, inputs.point2voxel,
            *inputs.maps.all_pairs())  # fmt: skip
    with torch.inference_mode():
        got = net.infer_logits(*args)
        with fused.disabled():
            want = net.infer_logits(*args)
            full = net.forward_tables(*args).logits
    torch.testing.assert_close(want, full, rtol=0, atol=0)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    assert (got.argmax(1) == want.argmax(1)).float().mean() > 0.999


def test_point_head_needs_the_folded_shape() -> None:
    net = StudentNet(student_config("small"))  # BatchNorm not folded: eager branch
    assert net._folded_head() is None


def test_failed_build_is_reported_and_eager_runs(tmp_path, monkeypatch, request) -> None:
    with pytest.raises(fused.FusedUnavailableError, match=r"failed on fused_conv\.cpp"):
        fused.build_library("/bin/false", tmp_path / "x.so")
    assert not list(tmp_path.iterdir())  # no half-written library left behind
    monkeypatch.setattr(fused, "compiler", lambda: None)
    fused.reset()
    request.addfinalizer(fused.reset)  # runs before monkeypatch restores the compiler
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok, why = fused.available()
    assert not ok and "no C++ compiler" in why
    assert any("using eager torch ops" in str(w.message) for w in caught)
    coords = random_coords(5, 1, 80)
    pairs = ConvPairs.from_table(submanifold_table(coords, SHAPE), len(coords))
    x, w = torch.randn(len(coords), 4), torch.randn(27, 4, 16)
    with torch.inference_mode():
        out = conv_pairs(x, pairs, w)  # the eager form, no exception
    assert out.shape == (len(coords), 16)


def test_cache_key_names_the_cpu_not_its_clock_or_host(monkeypatch) -> None:
    """``cpu MHz`` changes while the machine runs and a container's hostname every start:
    neither may change the library's cache name (each change cost a rebuild)."""
    a = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\ncpu MHz\t\t: 2100.0\n"
    b = a.replace("2100.0", "3400.5").replace("processor\t: 0", "processor\t: 0\nbogomips : 1")
    assert fused.cpu_identity(a) == fused.cpu_identity(b) == (
        "vendor_id: GenuineIntel\nmodel name: Xeon"
    )
    assert fused.cpu_identity(a) != fused.cpu_identity(a.replace("Xeon", "EPYC"))
    arm = "processor : 0\nFeatures : fp asimd\nCPU part : 0xd0c\n\nprocessor : 1\n"
    assert fused.cpu_identity(arm) == "CPU part: 0xd0c\nFeatures: fp asimd"
    cxx = fused.compiler() or "c++"
    first = fused.library_path(cxx)
    monkeypatch.setattr(fused.platform, "node", lambda: "another-container")
    assert fused.library_path(cxx) == first


def test_switch_off() -> None:
    with fused.disabled():
        assert fused.available() == (False, "turned off (XMODELKD_FUSED_CONV=0 or "
                                     "set_enabled(False))")  # fmt: skip
    assert fused.available()[0]


def test_inference_weight_cache_follows_weight_updates() -> None:
    """The contiguous weight is cached across scans; an in-place update (optimizer step,
    BatchNorm folding, load_state_dict) must invalidate it."""
    coords = random_coords(6, 1, 100)
    pairs = ConvPairs.from_table(submanifold_table(coords, SHAPE), len(coords))
    layer = SparseConv3d(4, 16, 3, "subm")
    x = torch.randn(len(coords), 4)
    with torch.inference_mode():
        first = layer(x, pairs)
    with torch.no_grad():
        layer.weight.mul_(2.0)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x, pairs), 2.0 * first)
    layer.load_state_dict({"weight": torch.zeros_like(layer.weight)})
    with torch.inference_mode():
        assert float(layer(x, pairs).abs().max()) == 0.0


def test_layer_built_in_inference_mode_runs() -> None:
    """Weights created under inference_mode have no version counter: no cache, no error."""
    coords = random_coords(7, 1, 60)
    pairs = ConvPairs.from_table(submanifold_table(coords, SHAPE), len(coords))
    with torch.inference_mode():
        layer = SparseConv3d(4, 16, 3, "subm")
        x = torch.randn(len(coords), 4)
        out = layer(x, pairs)
        torch.testing.assert_close(layer(x, pairs), out)


@pytest.mark.parametrize("threads", [1, 2])
def test_residual_relu_epilogue_equals_eager_tail(threads: int) -> None:
    coords = random_coords(8, 2, 300)
    pairs = ConvPairs.from_table(submanifold_table(coords, SHAPE), len(coords))
    torch.manual_seed(8)
    layer = SparseConv3d(32, 32, 3, "subm", bias=True)
    x, skip = torch.randn(len(coords), 32), torch.randn(len(coords), 32)
    skip[0, :4] = float("nan")  # relu keeps NaN, as torch.relu does
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            got = layer(x, pairs, residual=skip, relu=True)
            want = torch.relu(layer(x, pairs) + skip)
            with fused.disabled():
                eager = layer(x, pairs, residual=skip, relu=True)
    finally:
        torch.set_num_threads(prev)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(eager, want, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert bool((got[1:] >= 0).all()) and bool(got[0, :4].isnan().all())
    with pytest.raises(ValueError, match="residual"):
        fused.sparse_conv(x, layer.weight_k(), None, pairs.in_rows, pairs.out_rows,
                          pairs.bounds_tensor, pairs.num_out, residual=skip[:5])  # fmt: skip
