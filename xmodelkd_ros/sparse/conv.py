"""Sparse 3D convolution as Gather + MatMul over a precomputed neighbour table.

Two numerically identical forms:

* ``"gather"`` (default): ``out = sum_k x_pad[table[:, k]] @ W_k`` with a zero row
  appended to ``x`` for the sentinel. Only Gather/MatMul/Add/Concat in the graph,
  shape-generic in the voxel count, so it exports to ONNX and builds in TensorRT
  without plugins.
* ``"pairs"``: the real pairs only (see :mod:`.pairs`): one gather, one GEMM per
  offset, one sparse-matrix sum. A LiDAR table is ~80 % sentinels, so this is the
  fast form on CPU, for training and for the torch inference backend.

``forward`` also takes a prebuilt :class:`~.pairs.ConvPairs` in place of the table
(``KernelMaps.pairs`` caches them per scan, so the layers sharing a table share them).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .graph_nodes import conv_pairs_node
from .pairs import ConvPairs, PairTensors, conv_epilogue, conv_pairs, conv_pairs_graph

__all__ = ["IMPLS", "SparseConv3d", "get_default_impl", "set_default_impl", "use_impl"]

IMPLS = ("gather", "pairs")
KINDS = ("subm", "down", "inverse")
_default_impl = "gather"


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"unknown sparse conv impl {impl!r}, expected one of {IMPLS}")
    return impl


def set_default_impl(impl: str) -> None:
    """Process-wide default, so a training script can switch every layer at once."""
    global _default_impl
    _default_impl = _check_impl(impl)


def get_default_impl() -> str:
    return _default_impl


@contextmanager
def use_impl(impl: str) -> Iterator[None]:
    """Temporarily switch the default impl (e.g. ``"gather"`` around ONNX export)."""
    global _default_impl
    prev = _default_impl
    _default_impl = _check_impl(impl)
    try:
        yield
    finally:
        _default_impl = prev


def _is_tracing() -> bool:
    """Data-dependent shortcuts must not leak into exported graphs."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


def sparse_conv_gather(
    x: torch.Tensor, table: torch.Tensor, weight_k: torch.Tensor, skip_empty: bool = True
) -> torch.Tensor:
    """Gather form. ``weight_k`` is (K, Cin, Cout)."""
    x_pad = torch.cat([x, x.new_zeros(1, x.shape[1])], dim=0)
    m_in = x.shape[0]
    out: torch.Tensor | None = None
    present = None
    if skip_empty and not _is_tracing():
        present = (table < m_in).any(dim=0).tolist()
    for k in range(table.shape[1]):
        if present is not None and not present[k]:
            continue
        term = x_pad[table[:, k]] @ weight_k[k]
        out = term if out is None else out + term
    if out is None:
        out = x.new_zeros(table.shape[0], weight_k.shape[2]) + 0.0 * weight_k.sum()
    return out


class SparseConv3d(nn.Module):
    """Sparse conv whose ``weight`` is laid out exactly like spconv 2.x's.

    ``weight`` is ``(Cout, ks, ks, ks, Cin)`` so state_dicts load into / from
    ``spconv.pytorch.SubMConv3d`` / ``SparseConv3d`` / ``SparseInverseConv3d``
    unchanged; the voxel topology comes from the ``table`` argument (see
    :mod:`.maps`), so the same module serves subm, strided and inverse convs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        kind: str = "subm",
        bias: bool = False,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.kind = kind
        ks = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, ks, ks, ks, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform(a=sqrt(5)) with fan_in = Cin * ks**3, as nn.Conv3d and spconv do,
        so a network converges the same whichever backend initialised it."""
        fan_in = self.in_channels * self.kernel_size**3
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def _inference_weight(self) -> torch.Tensor:
        """``weight_k()`` made contiguous (every per-offset GEMM then reads dense rows),
        kept until the weight changes: the runtime would otherwise copy every layer's
        weight on every scan."""
        if self.weight.is_inference():  # made in inference mode: no version counter to key on
            return self.weight_k().contiguous()
        key = (self.weight.data_ptr(), self.weight._version, self.weight.dtype)
        cached = self.__dict__.get("_wk_cache")
        if cached is None or cached[0] != key:
            cached = (key, self.weight_k().detach().contiguous())
            self.__dict__["_wk_cache"] = cached
        return cached[1]

    @property
    def num_offsets(self) -> int:
        return self.kernel_size**3

    def weight_k(self) -> torch.Tensor:
        """(K, Cin, Cout): one matmul matrix per kernel offset, in table column order."""
        return self.weight.reshape(self.out_channels, self.num_offsets, self.in_channels).permute(
            1, 2, 0
        )

    def forward(
        self,
        x: torch.Tensor,
        table: torch.Tensor | ConvPairs | PairTensors,
        impl: str | None = None,
        residual: torch.Tensor | None = None,
        relu: bool = False,
    ) -> torch.Tensor:
        """x (M_in, Cin), table (M_out, K) or its pair list -> (M_out, Cout); then
        ``+ residual`` and ``relu`` when given (a residual block's tail: the fused CPU
        kernel applies it per output tile, every other form as the same eager ops)."""
        w = self.weight_k() if torch.is_grad_enabled() else self._inference_weight()
        if isinstance(table, ConvPairs):
            if len(table.bounds) - 1 != self.num_offsets:
                raise ValueError(
                    f"pairs have {len(table.bounds) - 1} offsets, layer needs {self.num_offsets}"
                )
            return conv_pairs(x, table, w, self.bias, residual, relu)
        if isinstance(table, PairTensors):
            if table.node:  # bias and tail inside the node
                return conv_pairs_node(
                    x, *table[:3], w, self.bias, table.identity, self.num_offsets, residual, relu
                )
            out = conv_pairs_graph(x, *table[:3], w, table.identity)
        else:
            if not _is_tracing() and table.shape[1] != self.num_offsets:
                raise ValueError(
                    f"table has {table.shape[1]} offsets, layer needs {self.num_offsets}"
                )
            impl = _check_impl(impl or _default_impl)
            if impl == "pairs" and _is_tracing():
                impl = "gather"  # pair lists have data-dependent shapes (NonZero)
            if impl == "gather":
                out = sparse_conv_gather(x, table, w)
            else:
                out = conv_pairs(x, ConvPairs.from_table(table, x.shape[0]), w)
        if self.bias is not None:
            out = out + self.bias
        return conv_epilogue(out, residual, relu, inplace=False)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"kind={self.kind!r}, bias={self.bias is not None}"
        )
