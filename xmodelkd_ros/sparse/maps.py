"""Kernel maps (neighbour tables) for sparse convolution.

Maps are built once per scan outside the network, from integer coordinates
only, so the network graph itself stays Gather + MatMul (exportable to ONNX /
TensorRT without plugins). Lookups are vectorised gathers, never per-voxel Python:
PyTorch has no hash table and a dense index grid of a 100 m x 100 m x 8 m scene
at 5 cm would need gigabytes, so lookups go through a dense 2D pillar grid plus a
per-pillar z table (see ``_Index``), or ``searchsorted`` when even that is too big.

On CPU, :func:`build_kernel_maps` and the pair lists of :class:`KernelMaps` come from
the C++ builder of :mod:`.fused_maps` when the fused library is available (same
tensors, same order; 2.5-3x faster single-threaded, see bench/bench_sparse.py); the
torch code here is its fallback and its test oracle. ``set_fused_maps(False)`` forces
the torch path.

Table convention: ``table[i, k]`` is the input row feeding output row ``i``
through kernel offset ``k = (a * ks + b) * ks + c`` (a, b, c along ix, iy, iz),
or the sentinel ``M_in`` for "no neighbour". This is spconv 2.x's weight order
(weight ``(Cout, ks, ks, ks, Cin)``) and, like ``F.conv3d``, cross-correlation:

* submanifold: input ``c_i + (a, b, c) - ks // 2``
* down (stride s, no padding): input ``s * o + (a, b, c)``
* inverse: fine ``f`` gets coarse ``o`` through offset ``f - s * o``
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import fused, fused_maps
from .pairs import ConvPairs
from .voxelize import pack_keys, unpack_keys

__all__ = [
    "KernelMaps",
    "build_kernel_maps",
    "downsample",
    "downsampled_shape",
    "kernel_offsets",
    "set_fused_maps",
    "submanifold_table",
    "table_to_pairs",
    "upsample_table",
]

Shape3 = tuple[int, int, int]

_use_fused = True  # the C++ builder where it applies (set_fused_maps)


def set_fused_maps(flag: bool) -> None:
    """Process-wide switch between the C++ builder and the torch code (tests, benchmarks).
    The C++ builder also needs the fused library itself on (:func:`.fused.set_enabled`)."""
    global _use_fused
    _use_fused = bool(flag)


def _fused_applies(t: torch.Tensor) -> bool:
    return _use_fused and fused.enabled() and t.device.type == "cpu"


def kernel_offsets(kernel_size: int, device: torch.device | None = None) -> torch.Tensor:
    """(ks**3, 3) int64 offsets (a, b, c) in weight order k = (a*ks + b)*ks + c."""
    r = torch.arange(kernel_size, dtype=torch.int64, device=device)
    return torch.cartesian_prod(r, r, r).reshape(-1, 3)


def downsampled_shape(spatial_shape: Shape3, kernel_size: int = 2, stride: int = 2) -> Shape3:
    """Coarse grid shape. Rounded up (unlike spconv's padding-0 floor) so no voxel is dropped
    on odd-sized grids; on grids with (S - ks) divisible by the stride both agree."""
    return tuple(max(1, -(-(int(s) - kernel_size) // stride) + 1) for s in spatial_shape)  # type: ignore[return-value]


# Dense lookup structures above this many int32 cells fall back to searchsorted.
_DENSE_LIMIT = 1 << 26  # 256 MiB worst case, ~4 MiB for a 1000 x 1000 x 80 scan grid


class _Index:
    """Membership lookup ``(b, x, y, z) -> row`` over a voxel set, fully vectorised.

    Default: a dense (B, X, Y) grid of pillar ids plus a dense (pillars, Z) table of
    rows, both cropped to the occupied bounding box and padded by ``pad`` cells on
    every side so that neighbour queries need no bounds masks. A LiDAR scan fills
    few z cells per (x, y) column, so both stay small (a few MiB at 0.1 m) and a
    lookup is two gathers. Grids too large for that fall back to ``searchsorted``
    on packed int64 keys.
    """

    def __init__(self, coords: torch.Tensor, spatial_shape: Shape3, pad: int = 1) -> None:
        self.shape = tuple(int(s) for s in spatial_shape)
        self.size = m = coords.shape[0]
        self.pad = pad
        c = coords.to(torch.int64)
        self.coords = c
        dev = c.device
        X, Y, Z = self.shape
        nb = int(c[:, 0].max().item()) + 1 if m else 1
        self.batch = nb
        # dense tables cover only the occupied bounding box (a scan rarely fills the grid)
        if m:
            lo = c[:, 1:].min(0).values
            ext = c[:, 1:].max(0).values - lo + 1
        else:
            lo = torch.zeros(3, dtype=torch.int64, device=dev)
            ext = torch.ones(3, dtype=torch.int64, device=dev)
        self.lo = lo
        self.ext = ext
        Xe, Ye, Ze = (int(v) for v in ext)
        Xp, Yp, Zp = Xe + 2 * pad, Ye + 2 * pad, Ze + 2 * pad
        self.padded = (Xp, Yp, Zp)
        self.dense = nb * Xp * Yp <= _DENSE_LIMIT and (m + 1) * Zp <= _DENSE_LIMIT
        if self.dense:
            cs = c[:, 1:] - lo + pad
            pk = (c[:, 0] * Xp + cs[:, 0]) * Yp + cs[:, 1]
            if m > 1 and bool((pk[1:] >= pk[:-1]).all()):
                uniq, pid = torch.unique_consecutive(pk, return_inverse=True)
            else:
                uniq, pid = torch.unique(pk, return_inverse=True)
            p = uniq.numel()
            self.num_pillars = p
            self.pillar_keys = uniq
            self.pid = pid
            self.pillar_grid = torch.full((nb * Xp * Yp,), p, dtype=torch.int32, device=dev)
            self.pillar_grid[uniq] = torch.arange(p, dtype=torch.int32, device=dev)
            self.rows = torch.full(((p + 1) * Zp,), m, dtype=torch.int64, device=dev)
            self.rows[pid * Zp + cs[:, 2]] = torch.arange(m, device=dev)
            return
        keys = ((c[:, 0] * X + c[:, 1]) * Y + c[:, 2]) * Z + c[:, 3]
        if m > 1 and not bool((keys[1:] > keys[:-1]).all()):
            keys, order = torch.sort(keys)
            self.order: torch.Tensor | None = order
        else:
            self.order = None
        self.keys = keys

    def lookup(self, b: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
        """Row of each query ``(b, xyz[..., :])`` or ``self.size`` if absent / outside the grid.

        ``xyz`` has shape (..., 3); ``b`` broadcasts against ``xyz[..., 0]``.
        """
        X, Y, Z = self.shape
        x, y, z = xyz.unbind(-1)
        if self.size == 0:
            return torch.zeros_like(x)  # everything is the sentinel 0
        inside = (x >= 0) & (x < X) & (y >= 0) & (y < Y) & (z >= 0) & (z < Z)
        inside &= (b >= 0) & (b < self.batch)
        if self.dense:
            P = self.pad
            Xp, Yp, Zp = self.padded
            xs, ys, zs = x - self.lo[0], y - self.lo[1], z - self.lo[2]
            inside &= (xs >= 0) & (ys >= 0) & (zs >= 0)
            inside &= (xs < Xp - 2 * P) & (ys < Yp - 2 * P) & (zs < Zp - 2 * P)
            pk = torch.where(inside, (b * Xp + xs + P) * Yp + ys + P, 0)
            pid = self.pillar_grid[pk].to(torch.int64)
            pid = torch.where(inside, pid, self.num_pillars)
            return self.rows[pid * Zp + torch.where(inside, zs + P, 0)]
        q = ((b * X + x) * Y + y) * Z + z
        q = torch.where(inside, q, -1)
        pos = torch.searchsorted(self.keys, q).clamp_max(self.size - 1)
        hit = inside & (self.keys[pos] == q)
        if self.order is not None:
            pos = self.order[pos]
        return torch.where(hit, pos, self.size)

    def self_neighbours(self, kernel_size: int) -> torch.Tensor:
        """Submanifold table of the indexed set itself (dense mode, ``pad >= ks // 2``).

        Neighbour pillars are looked up once per pillar (P x ks^2), then each voxel
        only adds its z to them: ~4 element-wise passes over (M, ks^3) instead of
        ~15 for a generic lookup -- this is the hot part of building maps.
        """
        h = kernel_size // 2
        _, Yp, Zp = self.padded
        r = torch.arange(-h, h + 1, device=self.coords.device)
        dxy = (r[:, None] * Yp + r[None, :]).reshape(-1)  # (ks^2,) in (a, b) order
        nbr_pillars = self.pillar_grid[self.pillar_keys[:, None] + dxy[None, :]].to(torch.int64)
        zs = self.coords[:, 3:4] - self.lo[2] + self.pad
        base = nbr_pillars[self.pid] * Zp + zs  # (M, ks^2)
        idx = base[:, :, None] + r[None, None, :]  # (M, ks^2, ks): c fastest
        return self.rows[idx.reshape(self.size, -1)]


def submanifold_table(
    coords: torch.Tensor, spatial_shape: Shape3, kernel_size: int = 3
) -> torch.Tensor:
    """(M, ks**3) table of a submanifold conv: outputs are exactly the inputs.

    Dense-index path: see ``_Index.self_neighbours``. The searchsorted fallback uses
    the map's symmetry (j is i's neighbour at +d iff i is j's at -d) to search only
    half the offsets.
    """
    if kernel_size % 2 != 1:
        raise ValueError("submanifold conv needs an odd kernel size")
    m = coords.shape[0]
    dev = coords.device
    K = kernel_size**3
    if m == 0:
        return torch.full((0, K), 0, dtype=torch.int64, device=dev)
    idx = _Index(coords, spatial_shape, pad=kernel_size // 2)
    if idx.dense:
        return idx.self_neighbours(kernel_size)
    offs = kernel_offsets(kernel_size, dev) - kernel_size // 2
    half = K // 2
    c = coords.to(torch.int64)
    table = torch.full((m, K), m, dtype=torch.int64, device=dev)
    first = idx.lookup(c[:, :1], c[:, None, 1:] + offs[None, :half])  # (M, half)
    table[:, :half] = first
    table[:, half] = torch.arange(m, device=dev)
    # mirror: offset K-1-k is -offset k, so the other half is a scatter, not a search
    rows = torch.arange(m, device=dev)[:, None].expand(m, half)
    hit = first < m
    mirror_cols = (K - 1 - torch.arange(half, device=dev))[None, :].expand(m, half)
    table[first[hit], mirror_cols[hit]] = rows[hit]
    return table


def downsample(
    coords: torch.Tensor, spatial_shape: Shape3, kernel_size: int = 2, stride: int = 2
) -> tuple[torch.Tensor, torch.Tensor, Shape3]:
    """Strided (non-submanifold) conv map: coarse coords, (M', ks**3) table, coarse shape.

    A coarse voxel ``o`` exists iff some input lies at ``stride * o + offset``.
    """
    dev = coords.device
    out_shape = downsampled_shape(spatial_shape, kernel_size, stride)
    c = coords.to(torch.int64)
    offs = kernel_offsets(kernel_size, dev)
    if kernel_size == stride:
        # every input has exactly one parent and one offset: the table is a scatter
        parent = torch.div(c[:, 1:], stride, rounding_mode="floor")
        keys = pack_keys(torch.cat([c[:, :1], parent], dim=1), out_shape)
        uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        out_coords = unpack_keys(uniq, out_shape)
        rem = c[:, 1:] - parent * stride
        k = (rem[:, 0] * stride + rem[:, 1]) * stride + rem[:, 2]
        m = c.shape[0]
        table = torch.full((uniq.numel(), stride**3), m, dtype=torch.int64, device=dev)
        table[inverse, k] = torch.arange(m, device=dev)
        return out_coords, table, out_shape
    rel = c[:, None, 1:] - offs[None]  # (M, K, 3)
    ok = (rel >= 0).all(-1) & (rel % stride == 0).all(-1)
    o = rel // stride
    ok &= (o < torch.tensor(out_shape, device=dev)).all(-1)
    b = c[:, None, :1].expand(-1, offs.shape[0], 1)
    cand = torch.cat([b, o], dim=-1)[ok]
    keys = torch.unique(pack_keys(cand, out_shape), sorted=True)
    out_coords = unpack_keys(keys, out_shape)
    idx = _Index(c, spatial_shape, pad=0)
    q = out_coords[:, None, 1:] * stride + offs[None]
    table = idx.lookup(out_coords[:, :1], q)
    return out_coords, table, out_shape


def upsample_table(
    fine_coords: torch.Tensor,
    coarse_coords: torch.Tensor,
    kernel_size: int = 2,
    stride: int = 2,
) -> torch.Tensor:
    """(M_fine, ks**3) table of the inverse conv of :func:`downsample`, into coarse rows.

    The fine voxel ``f`` receives coarse ``o`` through offset ``f - stride * o``, i.e.
    the exact transpose of the down table, so a down/inverse pair restores the
    original voxel set (spconv's ``indice_key`` semantics).
    """
    dev = fine_coords.device
    f = fine_coords.to(torch.int64)
    m_c = coarse_coords.shape[0]
    if m_c == 0 or f.shape[0] == 0:
        return torch.full((f.shape[0], kernel_size**3), m_c, dtype=torch.int64, device=dev)
    c = coarse_coords.to(torch.int64)
    # the coarse grid only needs to contain every coarse / queried coordinate
    hi = torch.maximum(
        c[:, 1:].max(0).values, torch.div(f[:, 1:], stride, rounding_mode="floor").max(0).values
    )
    shape = tuple(int(v) + 1 for v in hi)
    idx = _Index(c, shape)  # type: ignore[arg-type]
    offs = kernel_offsets(kernel_size, dev)
    rel = f[:, None, 1:] - offs[None]  # (M_f, K, 3)
    ok = (rel >= 0).all(-1) & (rel % stride == 0).all(-1)
    o = torch.where(ok[..., None], torch.div(rel, stride, rounding_mode="floor"), -1)
    table = idx.lookup(f[:, None, 0], o)
    return torch.where(ok, table, torch.full_like(table, m_c))


def transpose_table(table: torch.Tensor, num_inputs: int) -> torch.Tensor:
    """(M_in, K) table of the transposed conv, from a (M_out, K) table (scatter, no search)."""
    m_out, K = table.shape
    out = torch.full((num_inputs, K), m_out, dtype=torch.int64, device=table.device)
    rows, cols = torch.nonzero(table < num_inputs, as_tuple=True)  # one pass, not three masks
    out[table[rows, cols], cols] = rows
    return out


def table_to_pairs(table: torch.Tensor, num_inputs: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per offset k: (in_rows, out_rows) with the sentinel entries removed, every offset
    included (spconv's indice pairs are built from this; the pure-PyTorch conv uses the
    compacted :class:`~.pairs.ConvPairs` instead)."""
    pairs = []
    for k in range(table.shape[1]):
        col = table[:, k]
        out_rows = torch.nonzero(col < num_inputs).squeeze(1)
        pairs.append((col[out_rows], out_rows))
    return pairs


@dataclass
class KernelMaps:
    """All neighbour tables of a U-Net-style encoder/decoder with 2x down/up per level.

    ``pairs(kind, level)`` gives the compacted pair list of a table (see :mod:`.pairs`),
    built on first use and kept here: several layers share each table, and the cache
    dies with the maps of its scan. Tables are not modified after construction.
    """

    coords: list[torch.Tensor] = field(default_factory=list)
    spatial_shapes: list[Shape3] = field(default_factory=list)
    subm: list[torch.Tensor] = field(default_factory=list)
    down: list[torch.Tensor] = field(default_factory=list)
    up: list[torch.Tensor] = field(default_factory=list)
    _pairs: dict[tuple[str, int], ConvPairs] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def num_levels(self) -> int:
        return len(self.coords)

    def sizes(self) -> list[int]:
        """Voxel count per level."""
        return [int(c.shape[0]) for c in self.coords]

    def pairs(self, kind: str, level: int) -> ConvPairs:
        """Pair list of ``self.<kind>[level]`` (kind: subm, down or up), cached."""
        key = (kind, level)
        if key not in self._pairs:
            table = getattr(self, kind)[level]
            # down_l reads level l, up_l reads level l + 1, subm_l reads level l
            num_in = int(self.coords[level + 1 if kind == "up" else level].shape[0])
            self._pairs[key] = _table_pairs(table, num_in)
        return self._pairs[key]

    def all_pairs(self) -> tuple[list[ConvPairs], list[ConvPairs], list[ConvPairs]]:
        """(subm, down, up) pair lists of every level, in the order of the tables."""
        return (
            [self.pairs("subm", i) for i in range(len(self.subm))],
            [self.pairs("down", i) for i in range(len(self.down))],
            [self.pairs("up", i) for i in range(len(self.up))],
        )

    def to(self, device: torch.device | str) -> KernelMaps:
        """Move every table (maps are built on CPU next to the voxelizer)."""
        return KernelMaps(
            [c.to(device) for c in self.coords],
            list(self.spatial_shapes),
            [t.to(device) for t in self.subm],
            [t.to(device) for t in self.down],
            [t.to(device) for t in self.up],
        )


def _table_pairs(table: torch.Tensor, num_in: int) -> ConvPairs:
    """:meth:`ConvPairs.from_table`, through the C++ builder where it applies."""
    if _fused_applies(table):
        try:
            return fused_maps.table_pairs(table, num_in)
        except fused.FusedUnavailableError:
            pass
    return ConvPairs.from_table(table, num_in)


def build_kernel_maps(
    coords: torch.Tensor, spatial_shape: Shape3, num_levels: int = 4
) -> KernelMaps:
    """3x3x3 submanifold tables at every level plus 2x2x2/stride-2 down and inverse tables.

    The inverse tables are scatter-transposes of the down tables rather than new
    searches: cheaper, and exact by construction. On CPU the C++ builder makes the
    same tables (see the module docstring); duplicate voxels or voxels outside the
    grid go to the torch code, which defines what they give.
    """
    c = coords.to(torch.int64)
    shape: Shape3 = tuple(int(s) for s in spatial_shape)  # type: ignore[assignment]
    if _fused_applies(c):
        try:
            return _build_levels(c, shape, num_levels, fused_maps.submanifold_table,
                                 fused_maps.downsample2)  # fmt: skip
        except (fused.FusedUnavailableError, fused_maps.UnsupportedCoordsError):
            pass
    return _build_levels(c, shape, num_levels, submanifold_table, _downsample_and_up)


def _downsample_and_up(
    coords: torch.Tensor, shape: Shape3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    coarse, down, _ = downsample(coords, shape, 2, 2)
    return coarse, down, transpose_table(down, coords.shape[0])


def _build_levels(
    c: torch.Tensor,
    shape: Shape3,
    num_levels: int,
    subm_fn: Callable[[torch.Tensor, Shape3], torch.Tensor],
    down_fn: Callable[[torch.Tensor, Shape3], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> KernelMaps:
    """The level loop shared by both builders: ``down_fn`` gives (coarse, down, up)."""
    maps = KernelMaps()
    for level in range(num_levels):
        maps.coords.append(c)
        maps.spatial_shapes.append(shape)
        maps.subm.append(subm_fn(c, shape))
        if level + 1 < num_levels:
            c, down, up = down_fn(c, shape)
            maps.down.append(down)
            maps.up.append(up)
            shape = downsampled_shape(shape, 2, 2)
    return maps
