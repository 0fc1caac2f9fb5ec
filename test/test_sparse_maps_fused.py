"""The C++ kernel-map builder (sparse/fused_maps.cpp) against the torch builder, element
for element: same tensors, same order, same dtypes, same pair lists.

The torch code of sparse/maps.py is the oracle (itself tested against brute force in
test_sparse_maps.py); these tests switch between the two with ``set_fused_maps``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xmodelkd_ros.sparse import ConvPairs, build_kernel_maps, fused, fused_maps
from xmodelkd_ros.sparse import maps as maps_mod

pytestmark = pytest.mark.usefixtures("one_thread")

_OK, _WHY = fused.available()
needs_fused = pytest.mark.skipif(not _OK, reason=f"fused C++ library unavailable: {_WHY}")


@pytest.fixture
def split_work(one_thread, monkeypatch):
    """Every call split over 2 threads / chunks, however small (the multi-chunk paths);
    after ``one_thread``, whose teardown restores the thread count."""
    monkeypatch.setattr(fused_maps, "GRAIN", 1)
    torch.set_num_threads(2)


@st.composite
def voxel_sets(draw, max_batch: int = 3, max_side: int = 9, max_n: int = 120):
    """Unique [b, x, y, z] rows, sorted (the voxelizer's order) or shuffled, and a shape.

    Small sides and dense fills put many voxels on the grid border and give odd shapes;
    ``max_n`` reaches 0 (empty) and 1 (single voxel)."""
    shape = tuple(draw(st.integers(1, max_side)) for _ in range(3))
    nb = draw(st.integers(1, max_batch))
    seed = draw(st.integers(0, 2**31 - 1))
    n = draw(st.integers(0, max_n))
    rng = np.random.default_rng(seed)
    cells = np.stack([rng.integers(0, nb, n), *(rng.integers(0, s, n) for s in shape)], axis=1)
    cells = np.unique(cells.reshape(-1, 4), axis=0)
    if draw(st.booleans()):
        rng.shuffle(cells)
    return torch.from_numpy(cells.astype(np.int64)).reshape(-1, 4), shape


def _equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a, b)


def _assert_same_pairs(a: ConvPairs, b: ConvPairs) -> None:
    _equal(a.in_rows, b.in_rows)
    _equal(a.out_rows, b.out_rows)
    assert (a.bounds, a.num_in, a.num_out, a.identity_offset) == (
        b.bounds, b.num_in, b.num_out, b.identity_offset
    )  # fmt: skip
    # both builders promise output-sorted offsets (the fused conv relies on it unchecked)
    assert a.output_sorted and b.output_sorted
    assert a.check_sorted_by_output() and b.check_sorted_by_output()


def _build(coords: torch.Tensor, shape, levels: int, fused_on: bool):
    maps_mod.set_fused_maps(fused_on)
    try:
        maps = build_kernel_maps(coords, shape, levels)
        return maps, maps.all_pairs()
    finally:
        maps_mod.set_fused_maps(True)


def _assert_same_maps(coords: torch.Tensor, shape, levels: int = 4) -> None:
    ref, ref_pairs = _build(coords, shape, levels, fused_on=False)
    got, got_pairs = _build(coords, shape, levels, fused_on=True)
    assert got.spatial_shapes == ref.spatial_shapes
    for name in ("coords", "subm", "down", "up"):
        for a, b in zip(getattr(ref, name), getattr(got, name), strict=True):
            _equal(a, b)
    for ref_kind, got_kind in zip(ref_pairs, got_pairs, strict=True):
        for a, b in zip(ref_kind, got_kind, strict=True):
            _assert_same_pairs(a, b)


@needs_fused
@settings(max_examples=80, deadline=None)
@given(voxel_sets(), st.integers(1, 4))
def test_kernel_maps_identical_to_torch(data, levels):
    coords, shape = data
    _assert_same_maps(coords, shape, levels)


@needs_fused
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(voxel_sets(max_n=400))
def test_kernel_maps_identical_split_over_threads(split_work, data):
    coords, shape = data
    _assert_same_maps(coords, shape)


@needs_fused
@settings(max_examples=40, deadline=None)
@given(voxel_sets(max_side=7), st.sampled_from([1, 3, 5]))
def test_submanifold_table_any_odd_kernel(data, ks):
    coords, shape = data
    _equal(fused_maps.submanifold_table(coords, shape, ks),
           maps_mod.submanifold_table(coords, shape, ks))  # fmt: skip


@needs_fused
@settings(max_examples=40, deadline=None)
@given(voxel_sets(), st.booleans())
def test_table_pairs_of_any_table(data, corrupt_centre):
    """Pair lists of arbitrary tables, also a subm table whose centre is not the identity
    (``from_table`` must then keep the centre column as ordinary pairs)."""
    coords, shape = data
    m = coords.shape[0]
    table = maps_mod.submanifold_table(coords, shape)
    if corrupt_centre and m > 1:
        table[0, 13] = 1
    _assert_same_pairs(fused_maps.table_pairs(table, m), ConvPairs.from_table(table, m))
    if m:  # a table read with fewer inputs than rows: entries >= num_in are sentinels
        _assert_same_pairs(fused_maps.table_pairs(table, m - 1),
                           ConvPairs.from_table(table, m - 1))  # fmt: skip


@needs_fused
def test_scan_sized_input_and_grid_edges():
    """A LiDAR-sized set spanning the whole grid, voxels on every face and corner."""
    rng = np.random.default_rng(3)
    shape = (200, 150, 17)
    cells = np.stack([rng.integers(0, 2, 20000), *(rng.integers(0, s, 20000) for s in shape)], 1)
    corners = np.array(
        [[b, x, y, z] for b in (0, 1) for x in (0, 199) for y in (0, 149) for z in (0, 16)]
    )
    cells = np.unique(np.concatenate([cells, corners]), axis=0)
    _assert_same_maps(torch.from_numpy(cells), shape)


@needs_fused
def test_refused_coords_fall_back_to_torch():
    """Duplicates and voxels outside the grid are refused by the C++ builder, and
    build_kernel_maps then gives exactly what the torch code gives."""
    dup = torch.tensor([[0, 1, 1, 1], [0, 2, 2, 2], [0, 1, 1, 1]])
    outside = torch.tensor([[0, 1, 1, 1], [0, 4, 1, 1]])  # x == X
    negative_batch = torch.tensor([[-1, 1, 1, 1], [0, 1, 1, 1]])
    for coords in (dup, outside, negative_batch):
        with pytest.raises(fused_maps.UnsupportedCoordsError):
            fused_maps.submanifold_table(coords, (4, 4, 4))
        with pytest.raises(fused_maps.UnsupportedCoordsError):
            fused_maps.downsample2(coords, (4, 4, 4))
    ref, _ = _build(outside, (4, 4, 4), 2, fused_on=False)
    got, _ = _build(outside, (4, 4, 4), 2, fused_on=True)
    for name in ("coords", "subm", "down", "up"):
        for a, b in zip(getattr(ref, name), getattr(got, name), strict=True):
            _equal(a, b)


@needs_fused
def test_fused_builder_is_used(monkeypatch):
    """On CPU with the library on, build_kernel_maps and the pair lists go through C++."""
    calls = []
    for name in ("submanifold_table", "downsample2", "table_pairs"):
        real = getattr(fused_maps, name)
        monkeypatch.setattr(
            fused_maps, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k)
        )
    coords = torch.tensor([[0, 1, 1, 1], [0, 1, 2, 1], [0, 4, 4, 4]])
    build_kernel_maps(coords, (8, 8, 8), 2).all_pairs()
    assert sorted(set(calls)) == ["downsample2", "submanifold_table", "table_pairs"]


def test_library_off_uses_torch_path(monkeypatch):
    """With the fused library turned off (or unbuildable) the torch code runs, unchanged."""

    def refuse(*args, **kwargs):
        raise AssertionError("the C++ builder must not be called")

    for name in ("submanifold_table", "downsample2", "table_pairs"):
        monkeypatch.setattr(fused_maps, name, refuse)
    coords = torch.tensor([[0, 1, 1, 1], [0, 1, 2, 1], [0, 4, 4, 4]])
    with fused.disabled():
        maps = build_kernel_maps(coords, (8, 8, 8), 2)
        subm, _, _ = maps.all_pairs()
    _equal(maps.subm[0], maps_mod.submanifold_table(coords, (8, 8, 8)))
    _assert_same_pairs(subm[0], ConvPairs.from_table(maps.subm[0], 3))


def test_unavailable_library_falls_back(monkeypatch):
    """A library that cannot be built raises FusedUnavailableError inside; the maps come
    from the torch code."""

    def unavailable():
        raise fused.FusedUnavailableError("no compiler (test)")

    monkeypatch.setattr(fused, "library", unavailable)
    coords = torch.tensor([[0, 1, 1, 1], [0, 2, 1, 1], [1, 0, 0, 0]])
    with pytest.raises(fused.FusedUnavailableError):
        fused_maps.submanifold_table(coords, (4, 4, 4))
    maps = build_kernel_maps(coords, (4, 4, 4), 3)
    _, down, _ = maps.all_pairs()
    _equal(maps.subm[1], maps_mod.submanifold_table(maps.coords[1], maps.spatial_shapes[1]))
    _assert_same_pairs(down[0], ConvPairs.from_table(maps.down[0], 3))
