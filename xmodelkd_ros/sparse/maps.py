"""Kernel maps (neighbour tables) for sparse convolution.

Maps are built once per scan outside the network, from integer coordinates
only, so the network graph itself stays Gather + MatMul (exportable to ONNX /
TensorRT without plugins). Lookups are ``searchsorted`` on packed int64 keys:
PyTorch has no hash table and a dense index grid of a 100 m x 100 m x 8 m scene
at 5 cm would need gigabytes.

Table convention: ``table[i, k]`` is the input row feeding output row ``i``
through kernel offset ``k = (a * ks + b) * ks + c`` (a, b, c along ix, iy, iz),
or the sentinel ``M_in`` for "no neighbour". This is spconv 2.x's weight order
(weight ``(Cout, ks, ks, ks, Cin)``) and, like ``F.conv3d``, cross-correlation:

* submanifold: input ``c_i + (a, b, c) - ks // 2``
* down (stride s, no padding): input ``s * o + (a, b, c)``
* inverse: fine ``f`` gets coarse ``o`` through offset ``f - s * o``
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .voxelize import pack_keys, unpack_keys

__all__ = [
    "KernelMaps",
    "build_kernel_maps",
    "downsample",
    "downsampled_shape",
    "kernel_offsets",
    "submanifold_table",
    "table_to_pairs",
    "upsample_table",
]

Shape3 = tuple[int, int, int]


def kernel_offsets(kernel_size: int, device: torch.device | None = None) -> torch.Tensor:
    """(ks**3, 3) int64 offsets (a, b, c) in weight order k = (a*ks + b)*ks + c."""
    r = torch.arange(kernel_size, dtype=torch.int64, device=device)
    return torch.cartesian_prod(r, r, r).reshape(-1, 3)


def downsampled_shape(spatial_shape: Shape3, kernel_size: int = 2, stride: int = 2) -> Shape3:
    """Coarse grid shape. Rounded up (unlike spconv's padding-0 floor) so no voxel is dropped
    on odd-sized grids; on grids with (S - ks) divisible by the stride both agree."""
    return tuple(max(1, -(-(int(s) - kernel_size) // stride) + 1) for s in spatial_shape)  # type: ignore[return-value]


class _Index:
    """Sorted packed keys of a coordinate set, for vectorised membership lookups."""

    def __init__(self, coords: torch.Tensor, spatial_shape: Shape3) -> None:
        self.shape = tuple(int(s) for s in spatial_shape)
        self.size = coords.shape[0]
        keys = pack_keys(coords, self.shape)
        if self.size > 1 and not bool((keys[1:] > keys[:-1]).all()):
            keys, order = torch.sort(keys)
            self.order: torch.Tensor | None = order
        else:
            self.order = None
        self.keys = keys

    def lookup(self, b: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
        """Row of each query ``(b, xyz[..., :])`` or ``self.size`` if absent / outside the grid.

        ``xyz`` has shape (..., 3); ``b`` broadcasts against ``xyz[..., 0]``.
        """
        shp = torch.tensor(self.shape, dtype=torch.int64, device=xyz.device)
        inside = ((xyz >= 0) & (xyz < shp)).all(dim=-1)
        X, Y, Z = self.shape
        q = ((b * X + xyz[..., 0]) * Y + xyz[..., 1]) * Z + xyz[..., 2]
        q = torch.where(inside, q, torch.full_like(q, -1))
        if self.size == 0:
            return torch.zeros_like(q)  # everything is the sentinel 0
        pos = torch.searchsorted(self.keys, q).clamp_max(self.size - 1)
        hit = inside & (self.keys[pos] == q)
        if self.order is not None:
            pos = self.order[pos]
        return torch.where(hit, pos, torch.full_like(pos, self.size))


def submanifold_table(
    coords: torch.Tensor, spatial_shape: Shape3, kernel_size: int = 3
) -> torch.Tensor:
    """(M, ks**3) table of a submanifold conv: outputs are exactly the inputs.

    For odd kernels the map is symmetric (j is i's neighbour at +d iff i is j's at -d),
    so only half the offsets are searched and the rest is filled by scatter; that
    halves the dominant cost of building maps.
    """
    if kernel_size % 2 != 1:
        raise ValueError("submanifold conv needs an odd kernel size")
    m = coords.shape[0]
    dev = coords.device
    K = kernel_size**3
    idx = _Index(coords, spatial_shape)
    offs = kernel_offsets(kernel_size, dev) - kernel_size // 2
    half = K // 2
    c = coords.to(torch.int64)
    table = torch.full((m, K), m, dtype=torch.int64, device=dev)
    if m == 0:
        return table
    q = c[:, None, 1:] + offs[None, :half]  # (M, half, 3)
    first = idx.lookup(c[:, :1], q)  # (M, half)
    table[:, :half] = first
    table[:, half] = torch.arange(m, device=dev)
    # mirror: offset K-1-k is -offset k
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
        cand = torch.cat([c[:, :1], torch.div(c[:, 1:], stride, rounding_mode="floor")], dim=1)
    else:
        rel = c[:, None, 1:] - offs[None]  # (M, K, 3)
        ok = (rel >= 0).all(-1) & (rel % stride == 0).all(-1)
        o = rel // stride
        ok &= (o < torch.tensor(out_shape, device=dev)).all(-1)
        b = c[:, None, :1].expand(-1, offs.shape[0], 1)
        cand = torch.cat([b, o], dim=-1)[ok]
    keys = torch.unique(pack_keys(cand, out_shape), sorted=True)
    out_coords = unpack_keys(keys, out_shape)
    idx = _Index(c, spatial_shape)
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
    hit = table < num_inputs
    rows = torch.arange(m_out, device=table.device)[:, None].expand(m_out, K)
    cols = torch.arange(K, device=table.device)[None, :].expand(m_out, K)
    out[table[hit], cols[hit]] = rows[hit]
    return out


def table_to_pairs(table: torch.Tensor, num_inputs: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per offset k: (in_rows, out_rows) with the sentinel entries removed.

    The pair form skips absent neighbours entirely, so training touches only real
    pairs (about 1/3 of a 27-offset table on LiDAR) and stores less for backward.
    """
    pairs = []
    for k in range(table.shape[1]):
        col = table[:, k]
        out_rows = torch.nonzero(col < num_inputs).squeeze(1)
        pairs.append((col[out_rows], out_rows))
    return pairs


@dataclass
class KernelMaps:
    """All neighbour tables of a U-Net-style encoder/decoder with 2x down/up per level."""

    coords: list[torch.Tensor] = field(default_factory=list)
    spatial_shapes: list[Shape3] = field(default_factory=list)
    subm: list[torch.Tensor] = field(default_factory=list)
    down: list[torch.Tensor] = field(default_factory=list)
    up: list[torch.Tensor] = field(default_factory=list)

    @property
    def num_levels(self) -> int:
        return len(self.coords)

    def sizes(self) -> list[int]:
        """Voxel count per level."""
        return [int(c.shape[0]) for c in self.coords]

    def to(self, device: torch.device | str) -> KernelMaps:
        """Move every table (maps are built on CPU next to the voxelizer)."""
        return KernelMaps(
            [c.to(device) for c in self.coords],
            list(self.spatial_shapes),
            [t.to(device) for t in self.subm],
            [t.to(device) for t in self.down],
            [t.to(device) for t in self.up],
        )


def build_kernel_maps(
    coords: torch.Tensor, spatial_shape: Shape3, num_levels: int = 4
) -> KernelMaps:
    """3x3x3 submanifold tables at every level plus 2x2x2/stride-2 down and inverse tables.

    The inverse tables are scatter-transposes of the down tables rather than new
    searches: cheaper, and exact by construction.
    """
    maps = KernelMaps()
    c = coords.to(torch.int64)
    shape: Shape3 = tuple(int(s) for s in spatial_shape)  # type: ignore[assignment]
    for level in range(num_levels):
        maps.coords.append(c)
        maps.spatial_shapes.append(shape)
        maps.subm.append(submanifold_table(c, shape, 3))
        if level + 1 < num_levels:
            c_next, down, shape_next = downsample(c, shape, 2, 2)
            maps.down.append(down)
            maps.up.append(transpose_table(down, c.shape[0]))
            c, shape = c_next, shape_next
    return maps
