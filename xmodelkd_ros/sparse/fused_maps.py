"""Kernel maps and pair lists from the C++ library of :mod:`.fused` (``fused_maps.cpp``).

With the fused sparse conv the network takes about as long as building its inputs in
torch ops: the vectorised neighbour lookups of :mod:`.maps` make a dozen passes over
(M, 27) index tensors per level. The C++ builder walks the sorted voxels once per
neighbour row instead (see the source's header) and writes the same tables in the same
order, so :mod:`.maps` can use it behind its public functions and keep its torch code
as the fallback and the test oracle.

Every function raises :class:`~.fused.FusedUnavailableError` when the library cannot be
built or is turned off, and :class:`UnsupportedCoordsError` for voxel sets the C++
builder refuses (duplicates, voxels outside the grid): the torch path handles both.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import fused
from .pairs import ConvPairs

__all__ = ["UnsupportedCoordsError", "downsample2", "submanifold_table", "table_pairs"]

_BAD_COORDS = -2  # kBadCoords in fused_maps.cpp


class UnsupportedCoordsError(ValueError):
    """Duplicate voxels or voxels outside the grid: left to the torch builder."""


def _coords(coords: Tensor) -> Tensor:
    if coords.device.type != "cpu" or coords.dim() != 2 or coords.shape[1] != 4:
        raise TypeError(f"coords must be a (M, 4) CPU tensor, got {tuple(coords.shape)} "
                        f"on {coords.device}")  # fmt: skip
    return coords.to(torch.int64).contiguous()


#: table entries per thread below which a call runs on one thread. A fork/join costs a few
#: microseconds on an idle machine but milliseconds where other processes hold the cores
#: (measured: 6 ms per parallel region beside two training runs on 2 cores), and a level's
#: maps are ~1 ms of work. On the idle 2-core machine 2**16 took the pair lists of a 35 k
#: scan from 3.2 to 2.4 ms (2**19: only the finest level of large scans split); the node
#: runs where it has the cores, so the idle machine decides.
GRAIN = 1 << 16


def _threads(threads: int | None, work: int) -> int:
    return max(1, min(int(threads or torch.get_num_threads()), work // GRAIN))


def submanifold_table(
    coords: Tensor, spatial_shape: tuple[int, int, int], kernel_size: int = 3,
    threads: int | None = None,
) -> Tensor:  # fmt: skip
    """Same as :func:`.maps.submanifold_table` (odd ``kernel_size``), in C++."""
    if kernel_size % 2 != 1:
        raise ValueError("submanifold conv needs an odd kernel size")
    lib = fused.library()
    c = _coords(coords)
    m = c.shape[0]
    table = torch.empty(m, kernel_size**3, dtype=torch.int64)
    X, Y, Z = (int(s) for s in spatial_shape)
    rc = lib.xk_subm_table(c.data_ptr(), m, X, Y, Z, kernel_size, table.data_ptr(),
                           _threads(threads, table.numel()))  # fmt: skip
    if rc == _BAD_COORDS:
        raise UnsupportedCoordsError("duplicate voxels or voxels outside the grid")
    return table


def downsample2(
    coords: Tensor, spatial_shape: tuple[int, int, int], threads: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Kernel 2, stride 2: (coarse coords, down table, inverse table), i.e.
    :func:`.maps.downsample`'s coords and table plus their :func:`.maps.transpose_table`,
    in C++ and in one pass."""
    lib = fused.library()
    c = _coords(coords)
    m = c.shape[0]
    coarse = torch.empty(m, 4, dtype=torch.int64)  # at most one coarse voxel per fine one
    down = torch.empty(m, 8, dtype=torch.int64)
    up = torch.empty(m, 8, dtype=torch.int64)
    X, Y, Z = (int(s) for s in spatial_shape)
    mc = lib.xk_downsample2(c.data_ptr(), m, X, Y, Z, coarse.data_ptr(), down.data_ptr(),
                            up.data_ptr(), _threads(threads, up.numel()))  # fmt: skip
    if mc == _BAD_COORDS:
        raise UnsupportedCoordsError("duplicate voxels or voxels outside the grid")
    return coarse[:mc].clone(), down[:mc].clone(), up


def table_pairs(table: Tensor, num_in: int, threads: int | None = None) -> ConvPairs:
    """Same as :meth:`.pairs.ConvPairs.from_table` (same tensors, order, identity), in C++:
    two passes over the table instead of a transpose, nonzero and gather."""
    if table.device.type != "cpu" or table.dim() != 2:
        raise TypeError(f"table must be a 2-D CPU tensor, got {tuple(table.shape)} "
                        f"on {table.device}")  # fmt: skip
    lib = fused.library()
    t = table.to(torch.int64).contiguous()
    m_out, K = t.shape
    nt = chunks = _threads(threads, t.numel())
    counts = torch.empty(chunks, K, dtype=torch.int64)
    identity = lib.xk_pair_counts(t.data_ptr(), m_out, K, int(num_in), chunks,
                                  counts.data_ptr(), nt)  # fmt: skip
    starts = [0]
    for n in counts.sum(0).tolist():
        starts.append(starts[-1] + n)
    in_rows = torch.empty(starts[-1], dtype=torch.int64)
    out_rows = torch.empty(starts[-1], dtype=torch.int64)
    skip = K // 2 if identity else -1
    lib.xk_pair_fill(t.data_ptr(), m_out, K, int(num_in), skip, chunks, counts.data_ptr(),
                     in_rows.data_ptr(), out_rows.data_ptr(), nt)  # fmt: skip
    return ConvPairs(in_rows, out_rows, tuple(starts), int(num_in), int(m_out),
                     skip if identity else None, output_sorted=True)  # fmt: skip
