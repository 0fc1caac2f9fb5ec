"""Voxelization and the logits -> labels step from the C++ library of :mod:`.fused`
(``fused_voxelize.cpp``).

Once convs and kernel maps run in C++, the torch voxelizer (float64 keys in a dozen
full-size passes, ``torch.unique``, two ``index_add_``) and the segmenter's post-processing
(max, exp-sum, numpy conversions) are a large part of what is left per scan. The C++
voxelizer computes the same keys with the same float64 arithmetic, radix-sorts them and
sums each voxel's points in point order, so its output is bit-identical to
:func:`.voxelize.voxelize`'s torch code, which stays the fallback and the test oracle.

Every function raises :class:`~.fused.FusedUnavailableError` when the library cannot be
built or is turned off, and :class:`UnsupportedInputError` for inputs the C++ code leaves to
torch (non-float32 points, a grid too large for a 64-bit key plus point index).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import fused

__all__ = ["UnsupportedInputError", "point_labels", "voxelize"]


class UnsupportedInputError(ValueError):
    """Left to the torch code (which defines the result)."""


def voxelize(
    points: Tensor,
    batch_index: Tensor | None,
    batch_size: int,
    range_min: tuple[float, float, float],
    range_max: tuple[float, float, float],
    voxel_size: tuple[float, float, float],
    spatial_shape: tuple[int, int, int],
) -> tuple[Tensor, Tensor, Tensor]:
    """(coords, feats, point2voxel) exactly as :func:`.voxelize.voxelize` computes them
    (arguments already checked there): ``points`` (N, C) float32 on CPU, ``batch_index``
    (N,) int64 or None for a single scan."""
    if points.dtype != torch.float32 or points.device.type != "cpu":
        raise UnsupportedInputError(f"the C++ voxelizer takes float32 CPU points, got "
                                    f"{points.dtype} on {points.device}")  # fmt: skip
    n, c = points.shape
    num_keys = int(batch_size) * int(np.prod(spatial_shape, dtype=object))
    index_bits, key_bits = max(n - 1, 0).bit_length(), max(num_keys - 1, 0).bit_length()
    if index_bits + key_bits > 64:
        raise UnsupportedInputError(f"{num_keys} voxel keys x {n} points exceed 64 bits")
    lib = fused.library()
    pts = points.contiguous()
    batch = None if batch_index is None else batch_index.to(torch.int64).contiguous()
    lo, hi, size = (torch.tensor(v, dtype=torch.float64) for v in (range_min, range_max,
                                                                   voxel_size))  # fmt: skip
    shape = torch.tensor(spatial_shape, dtype=torch.int64)
    sorted_keys = torch.empty(n, dtype=torch.int64)  # uint64 bit patterns
    scratch = torch.empty(n, dtype=torch.int64)
    point2voxel = torch.empty(n, dtype=torch.int64)
    num_valid = torch.zeros(1, dtype=torch.int64)
    m = lib.xk_voxelize_sort(
        pts.data_ptr(), n, c, None if batch is None else batch.data_ptr(), int(batch_size),
        lo.data_ptr(), hi.data_ptr(), size.data_ptr(), shape.data_ptr(), index_bits, key_bits,
        sorted_keys.data_ptr(), scratch.data_ptr(), point2voxel.data_ptr(), num_valid.data_ptr(),
    )  # fmt: skip
    coords = torch.empty(m, 4, dtype=torch.int64)
    feats = torch.empty(m, c, dtype=torch.float32)
    lib.xk_voxelize_reduce(pts.data_ptr(), c, sorted_keys.data_ptr(), int(num_valid),
                           index_bits, shape.data_ptr(), coords.data_ptr(),
                           feats.data_ptr())  # fmt: skip
    return coords, feats, point2voxel


def point_labels(
    logits: Tensor, valid: np.ndarray, labels: np.ndarray, confidence: np.ndarray
) -> None:
    """Write ``argmax + 1`` (first maximum, as ``torch.max``) into ``labels`` (uint16) and
    ``1 / sum(exp(l - max))`` (the softmax maximum) into ``confidence`` (float32) at the
    ``True`` entries of ``valid``, in order: one row of ``logits`` (P, K) float32 per entry.
    Other entries are left as they are."""
    if logits.dtype != torch.float32 or logits.device.type != "cpu" or logits.dim() != 2:
        raise UnsupportedInputError(f"point_labels takes (P, K) float32 CPU logits, got "
                                    f"{logits.dtype} {tuple(logits.shape)} on {logits.device}")
    n = len(valid)
    ok = (valid.dtype == np.bool_ and labels.dtype == np.uint16 and confidence.dtype == np.float32
          and labels.shape == confidence.shape == valid.shape == (n,)
          and all(a.flags.c_contiguous and a.flags.writeable for a in (labels, confidence))
          and valid.flags.c_contiguous and logits.shape[1] > 0)  # fmt: skip
    if not ok:
        raise ValueError("point_labels needs (N,) bool valid, uint16 labels, float32 confidence"
                         " (contiguous, writeable) and at least one class")  # fmt: skip
    lib = fused.library()
    lg = logits.contiguous()
    rows = lib.xk_point_labels(lg.data_ptr(), lg.shape[0], lg.shape[1], valid.ctypes.data, n,
                               labels.ctypes.data, confidence.ctypes.data)  # fmt: skip
    if rows != lg.shape[0]:
        raise ValueError(f"{lg.shape[0]} logits rows for "
                         f"{int(valid.sum())} valid points")  # fmt: skip
