"""Neighbour tables against dict-based brute force on random sparse voxel sets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xmodelkd_ros.sparse import (
    ConvPairs,
    build_kernel_maps,
    downsample,
    submanifold_table,
    table_to_pairs,
    transpose_table,
    upsample_table,
)

pytestmark = pytest.mark.usefixtures("one_thread")


OFFSETS = {ks: list(itertools.product(range(ks), repeat=3)) for ks in (2, 3, 5)}


@st.composite
def sparse_coords(draw, max_batch: int = 2, max_side: int = 7, max_n: int = 60):
    """Unique [b, x, y, z] rows (shuffled: maps must not assume sorted input) and a shape."""
    shape = tuple(draw(st.integers(1, max_side)) for _ in range(3))
    nb = draw(st.integers(1, max_batch))
    seed = draw(st.integers(0, 2**31 - 1))
    n = draw(st.integers(0, max_n))
    rng = np.random.default_rng(seed)
    cells = np.stack(
        [rng.integers(0, nb, n), *(rng.integers(0, s, n) for s in shape)], axis=1
    ).reshape(-1, 4)
    cells = np.unique(cells, axis=0)
    rng.shuffle(cells)
    return torch.from_numpy(cells.astype(np.int64)).reshape(-1, 4), shape


def rows_of(coords: torch.Tensor) -> dict[tuple[int, ...], int]:
    return {tuple(r): i for i, r in enumerate(coords.tolist())}


@settings(max_examples=60, deadline=None)
@given(sparse_coords(), st.sampled_from([3, 5]))
def test_submanifold_matches_brute_force(data, ks):
    coords, shape = data
    table = submanifold_table(coords, shape, ks)
    m = coords.shape[0]
    assert table.shape == (m, ks**3) and table.dtype == torch.int64
    lookup = rows_of(coords)
    expected = np.full((m, ks**3), m)
    h = ks // 2
    for i, (b, x, y, z) in enumerate(coords.tolist()):
        for k, (a, bb, c) in enumerate(OFFSETS[ks]):
            expected[i, k] = lookup.get((b, x + a - h, y + bb - h, z + c - h), m)
    np.testing.assert_array_equal(table.numpy(), expected)


@settings(max_examples=60, deadline=None)
@given(sparse_coords())
def test_downsample_matches_brute_force(data):
    coords, shape = data
    out, table, out_shape = downsample(coords, shape, 2, 2)
    c = coords.numpy()
    expected_coords = np.unique(
        np.concatenate([c[:, :1], np.floor_divide(c[:, 1:], 2)], 1), axis=0
    ).reshape(-1, 4)
    np.testing.assert_array_equal(out.numpy(), expected_coords)
    assert out_shape == tuple(-(-s // 2) for s in shape)
    lookup = rows_of(coords)
    m = coords.shape[0]
    expected = np.full((out.shape[0], 8), m)
    for i, (b, x, y, z) in enumerate(out.tolist()):
        for k, (a, bb, cc) in enumerate(OFFSETS[2]):
            expected[i, k] = lookup.get((b, 2 * x + a, 2 * y + bb, 2 * z + cc), m)
    np.testing.assert_array_equal(table.numpy(), expected)
    # every input voxel feeds exactly one coarse voxel through exactly one offset
    hits = table[table < m]
    assert sorted(hits.tolist()) == list(range(m))


@settings(max_examples=30, deadline=None)
@given(sparse_coords(max_side=9))
def test_downsample_kernel3_stride2_matches_brute_force(data):
    coords, shape = data
    out, table, out_shape = downsample(coords, shape, 3, 2)
    lookup = rows_of(coords)
    m = coords.shape[0]
    exp_out = set()
    for b, x, y, z in coords.tolist():
        for a, bb, cc in OFFSETS[3]:
            o = (x - a, y - bb, z - cc)
            if all(v >= 0 and v % 2 == 0 and v // 2 < s for v, s in zip(o, out_shape, strict=True)):
                exp_out.add((b, *(v // 2 for v in o)))
    assert [tuple(r) for r in out.tolist()] == sorted(exp_out)
    for i, (b, x, y, z) in enumerate(out.tolist()):
        for k, (a, bb, cc) in enumerate(OFFSETS[3]):
            assert table[i, k] == lookup.get((b, 2 * x + a, 2 * y + bb, 2 * z + cc), m)


@settings(max_examples=60, deadline=None)
@given(sparse_coords())
def test_upsample_is_transpose_of_downsample(data):
    coords, shape = data
    coarse, down, _ = downsample(coords, shape, 2, 2)
    up = upsample_table(coords, coarse, 2, 2)
    m, mc = coords.shape[0], coarse.shape[0]
    assert up.shape == (m, 8)
    # transpose relation, entry by entry
    pairs_down = {(int(down[o, k]), o, k) for o in range(mc) for k in range(8) if down[o, k] < m}
    pairs_up = {(i, int(up[i, k]), k) for i in range(m) for k in range(8) if up[i, k] < mc}
    assert pairs_down == pairs_up
    # each fine voxel: parent in exactly the column of its offset, sentinel elsewhere
    assert ((up < mc).sum(1) == 1).all()
    torch.testing.assert_close(transpose_table(down, m), up, rtol=0, atol=0)


@settings(max_examples=30, deadline=None)
@given(sparse_coords())
def test_conv_pairs_rebuild_the_table(data):
    """Pair list, offset bounds, centre shortcut and CSR sum matrix all describe the table."""
    coords, shape = data
    for table, m_in in _tables_of(coords, shape):
        pairs = ConvPairs.from_table(table, m_in)
        m_out, K = table.shape
        assert len(pairs.bounds) == K + 1 and pairs.bounds[0] == 0
        assert pairs.bounds[-1] == pairs.in_rows.numel() == pairs.out_rows.numel()
        assert pairs.in_rows.dtype == torch.int64 and (pairs.in_rows < m_in).all()
        rebuilt = torch.full_like(table, m_in)
        for k in range(K):
            lo, hi = pairs.bounds[k], pairs.bounds[k + 1]
            rebuilt[pairs.out_rows[lo:hi], k] = pairs.in_rows[lo:hi]
        if pairs.identity_offset is not None:
            assert m_in == m_out and pairs.bounds[K // 2] == pairs.bounds[K // 2 + 1]
            rebuilt[:, pairs.identity_offset] = torch.arange(m_out)
        torch.testing.assert_close(rebuilt, table, rtol=0, atol=0)
        assert pairs.num_pairs == int((table < m_in).sum())
        # the CSR matrix sums exactly the products of each output row's pairs
        dense = pairs.scatter.to_dense()
        expect = torch.zeros(m_out, pairs.in_rows.numel())
        expect[pairs.out_rows, torch.arange(pairs.in_rows.numel())] = 1.0
        torch.testing.assert_close(dense, expect, rtol=0, atol=0)


def _tables_of(coords: torch.Tensor, shape) -> list[tuple[torch.Tensor, int]]:
    """(table, num_inputs) of the subm, down and up convs of one voxel set."""
    m = coords.shape[0]
    coarse, down, _ = downsample(coords, shape, 2, 2)
    return [
        (submanifold_table(coords, shape), m),
        (down, m),
        (upsample_table(coords, coarse, 2, 2), coarse.shape[0]),
    ]


@settings(max_examples=30, deadline=None)
@given(sparse_coords())
def test_table_to_pairs_roundtrip(data):
    coords, shape = data
    table = submanifold_table(coords, shape)
    m = coords.shape[0]
    pairs = table_to_pairs(table, m)
    assert len(pairs) == 27
    rebuilt = torch.full_like(table, m)
    for k, (inp, out) in enumerate(pairs):
        assert inp.dtype == torch.int64 and out.dtype == torch.int64
        assert (inp < m).all()
        rebuilt[out, k] = inp
    torch.testing.assert_close(rebuilt, table, rtol=0, atol=0)


def test_kernel_maps_cache_pairs_per_table():
    coords = torch.tensor([[0, 1, 1, 1], [0, 1, 2, 1], [0, 4, 4, 4], [0, 5, 4, 4]])
    maps = build_kernel_maps(coords, (8, 8, 8), 3)
    subm, down, up = maps.all_pairs()
    assert maps.pairs("subm", 0) is subm[0]  # built once, shared by the layers
    assert [len(x) for x in (subm, down, up)] == [3, 2, 2]
    assert up[1].num_in == maps.sizes()[2] and up[1].num_out == maps.sizes()[1]
    assert down[0].num_in == maps.sizes()[0] and down[0].num_out == maps.sizes()[1]
    assert "pairs" not in repr(maps)
    assert maps.to("cpu")._pairs == {}  # a moved copy rebuilds on its device


def test_build_kernel_maps_levels_consistent():
    rng = np.random.default_rng(0)
    cells = np.unique(
        np.stack([rng.integers(0, 2, 3000), *(rng.integers(0, s, 3000) for s in (40, 30, 9))], 1),
        axis=0,
    )
    coords = torch.from_numpy(cells)
    maps = build_kernel_maps(coords, (40, 30, 9), num_levels=4)
    assert maps.num_levels == 4
    assert maps.spatial_shapes == [(40, 30, 9), (20, 15, 5), (10, 8, 3), (5, 4, 2)]
    sizes = maps.sizes()
    assert sizes[0] == len(cells) and all(a >= b for a, b in itertools.pairwise(sizes))
    for level in range(4):
        assert maps.subm[level].shape == (sizes[level], 27)
        torch.testing.assert_close(
            maps.subm[level],
            submanifold_table(maps.coords[level], maps.spatial_shapes[level]),
            rtol=0,
            atol=0,
        )
    for level in range(3):
        c, d, s = downsample(maps.coords[level], maps.spatial_shapes[level])
        torch.testing.assert_close(maps.coords[level + 1], c, rtol=0, atol=0)
        torch.testing.assert_close(maps.down[level], d, rtol=0, atol=0)
        assert maps.spatial_shapes[level + 1] == s
        up = upsample_table(maps.coords[level], maps.coords[level + 1])
        torch.testing.assert_close(maps.up[level], up, rtol=0, atol=0)


def test_empty_coords():
    empty = torch.zeros(0, 4, dtype=torch.int64)
    assert submanifold_table(empty, (4, 4, 4)).shape == (0, 27)
    out, table, shape = downsample(empty, (4, 4, 4))
    assert out.shape == (0, 4) and table.shape == (0, 8) and shape == (2, 2, 2)
    assert upsample_table(empty, out).shape == (0, 8)
    maps = build_kernel_maps(empty, (4, 4, 4), num_levels=3)
    assert maps.sizes() == [0, 0, 0]


@settings(max_examples=30, deadline=None)
@given(sparse_coords(max_side=9))
def test_searchsorted_fallback_matches_dense_index(data):
    """Grids too big for the dense pillar index use searchsorted; both must agree."""
    from xmodelkd_ros.sparse import maps as maps_mod

    coords, shape = data
    coarse, _, _ = downsample(coords, shape)

    def all_tables():
        return (
            submanifold_table(coords, shape, 3),
            downsample(coords, shape, 3, 2)[1],
            upsample_table(coords, coarse),
        )

    dense = all_tables()
    saved = maps_mod._DENSE_LIMIT
    maps_mod._DENSE_LIMIT = 0
    try:
        fallback = all_tables()
    finally:
        maps_mod._DENSE_LIMIT = saved
    for a, b in zip(dense, fallback, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
