"""Compacted pair lists: the sparse conv over real neighbour pairs only.

A LiDAR voxel has 5-9 occupied neighbours out of 27, so the neighbour table is
mostly sentinels. :class:`ConvPairs` keeps only the real ``(input row, output row,
offset)`` triples, grouped by offset, and a conv becomes three passes:

1. one ``index_select`` of every pair's input row (parallel, contiguous per offset),
2. one GEMM per offset into consecutive slices of one product buffer,
3. one sparse CSR x dense product that sums each output row's products.

Step 3 replaces a per-offset ``index_add_`` (a serial scatter, 26 passes over the
output) by one multithreaded pass accumulated in place. The submanifold centre tap
(every row to itself) skips the gather and starts the sum as ``bias + x @ W``.
Autograd works through all three passes, so training uses the same form. The same
lists, as tensors (:class:`PairTensors`), are the inputs of the exported CPU graph.

In CPU inference the three passes run fused in the C++ kernel of :mod:`.fused` (same
sums, ~2x faster per layer) when it could be built; these eager ops are its fallback.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import torch
from torch import Tensor

from . import fused

__all__ = ["ConvPairs", "PairTensors", "conv_pairs", "conv_pairs_graph"]


class PairTensors(NamedTuple):
    """A pair list as graph inputs (the exported CPU graph's per-table inputs)."""

    in_rows: Tensor  # (P,) int64, grouped by offset
    out_rows: Tensor  # (P,) int64
    bounds: Tensor  # (K + 1,) int64 offset boundaries into the two above
    identity: bool  # the centre offset is the identity and is not in the list (subm)
    #: export each conv over this list as one ``ai.xmodelkd::SparseConv`` node (the
    #: ``fused`` graph form, :mod:`.graph_nodes`) instead of standard ops
    node: bool = False


@dataclass(frozen=True)
class ConvPairs:
    """Real pairs of one neighbour table, grouped by kernel offset."""

    #: (P,) input row of each pair; offset ``k`` owns ``[bounds[k], bounds[k + 1])``.
    in_rows: Tensor
    #: (P,) output row of each pair (same order as ``in_rows``).
    out_rows: Tensor
    bounds: tuple[int, ...]
    num_in: int
    num_out: int
    #: Offset mapping every row to itself (subm centre), left out of the pair list.
    identity_offset: int | None
    #: True when the builder guarantees each offset's pairs in ascending output row
    #: (:meth:`from_table`, the C++ ``table_pairs``); None: unknown, checked on first use.
    output_sorted: bool | None = None

    @cached_property
    def scatter(self) -> Tensor:
        """(num_out, P) CSR matrix of ones: ``out = scatter @ products``. Built on first
        use (the ONNX Runtime backend never needs it): a stable sort by output row puts
        each row's products together, offsets ascending."""
        cols = torch.argsort(self.out_rows, stable=True)
        crow = torch.zeros(self.num_out + 1, dtype=torch.int64, device=cols.device)
        crow[1:] = torch.cumsum(torch.bincount(self.out_rows, minlength=self.num_out), 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            return torch.sparse_csr_tensor(
                crow, cols, torch.ones(cols.numel(), device=cols.device),
                size=(self.num_out, int(cols.numel())),
            )  # fmt: skip

    @cached_property
    def bounds_tensor(self) -> Tensor:
        return torch.tensor(self.bounds, dtype=torch.int64, device=self.in_rows.device)

    @cached_property
    def sorted_by_output(self) -> bool:
        """Each offset's pairs in ascending output row (what the fused kernel's binary
        search needs). The builders guarantee it (``output_sorted``): the check runs only
        for pair lists made otherwise, not on every scan's tables."""
        if self.output_sorted is not None:
            return self.output_sorted
        return self.check_sorted_by_output()

    def check_sorted_by_output(self) -> bool:
        """The check itself (tests hold the builders' guarantee against it)."""
        if self.out_rows.numel() < 2:
            return True
        step = self.out_rows[1:] > self.out_rows[:-1]
        starts = self.bounds_tensor[1:-1]
        starts = starts[(starts > 0) & (starts < self.out_rows.numel())] - 1
        step[starts] = True  # an offset's first pair may go back to a low row
        return bool(step.all())

    @property
    def num_pairs(self) -> int:
        """Real pairs, the identity offset included (the useful multiply-adds / Cin / Cout)."""
        return int(self.in_rows.numel()) + (self.num_out if self.identity_offset is not None else 0)

    def tensors(self) -> PairTensors:
        """The graph-input form (bounds as a tensor)."""
        return PairTensors(
            self.in_rows, self.out_rows, self.bounds_tensor, self.identity_offset is not None
        )

    @classmethod
    def from_table(cls, table: Tensor, num_in: int) -> ConvPairs:
        """Pairs of a ``(M_out, K)`` table whose sentinel is ``num_in`` (see :mod:`.maps`)."""
        m_out, K = table.shape
        dev = table.device
        hit = table < num_in
        ident = None
        centre = K // 2
        if K % 2 == 1 and m_out == num_in and m_out > 0:
            col = table[:, centre]
            if bool((col == torch.arange(m_out, device=dev)).all()):
                ident = centre
                hit[:, centre] = False
        # offset-major order for the gather and the GEMMs: nonzero over the transposed mask
        kk, rows = torch.nonzero(hit.T, as_tuple=True)
        flat = rows * K + kk  # row-major position in the table
        in_rows = table.reshape(-1).index_select(0, flat)
        counts = torch.bincount(kk, minlength=K)
        starts = torch.zeros(K + 1, dtype=torch.int64, device=dev)
        starts[1:] = torch.cumsum(counts, 0)
        bounds = tuple(int(v) for v in starts.tolist())
        # nonzero over the transposed mask: offset-major, rows ascending within an offset
        return cls(in_rows, rows, bounds, int(num_in), int(m_out), ident, output_sorted=True)


def conv_pairs(
    x: Tensor,
    pairs: ConvPairs,
    weight_k: Tensor,
    bias: Tensor | None = None,
    residual: Tensor | None = None,
    relu: bool = False,
) -> Tensor:
    """``out[i] = bias + sum over pairs (j, i, k) of x[j] @ weight_k[k]``; ``weight_k`` is
    (K, Cin, Cout); then ``+ residual`` and ``relu`` when given (see :func:`conv_epilogue`).

    Under autograd the per-offset products are concatenated (``out=`` slices cannot be
    differentiated); in inference they are written straight into one buffer and the sum
    is accumulated in place, so each conv makes one pass over its output.
    """
    if x.shape[0] != pairs.num_in:
        raise ValueError(f"pairs expect {pairs.num_in} input rows, got {x.shape[0]}")
    grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight_k, bias, residual)
    )
    if not grad:
        out = _conv_pairs_fused(x, pairs, weight_k, bias, residual, relu)
        if out is not None:
            return out
    out = _conv_pairs_eager(x, pairs, weight_k, bias, grad)
    return conv_epilogue(out, residual, relu, inplace=not grad)


def conv_epilogue(out: Tensor, residual: Tensor | None, relu: bool, inplace: bool) -> Tensor:
    """``relu(out + residual)`` as eager ops, the tail the fused kernel applies per output
    tile; ``inplace`` only on a fresh conv output outside autograd (one pass less)."""
    if residual is not None:
        out = out.add_(residual) if inplace else out + residual
    if relu:
        out = out.relu_() if inplace else torch.relu(out)
    return out


def _conv_pairs_eager(
    x: Tensor, pairs: ConvPairs, weight_k: Tensor, bias: Tensor | None, grad: bool
) -> Tensor:
    cout = weight_k.shape[2]
    xg = x.index_select(0, pairs.in_rows)
    if grad:
        y = _OffsetProducts.apply(xg, weight_k, pairs.bounds)
    else:
        y = _offset_products(xg, weight_k, pairs.bounds)
    scatter = pairs.scatter if pairs.scatter.dtype == y.dtype else pairs.scatter.to(y.dtype)
    if pairs.identity_offset is not None:
        w_c = weight_k[pairs.identity_offset]
        out = x @ w_c if bias is None else torch.addmm(bias, x, w_c)
        if not y.shape[0]:
            return out
        if grad:
            return _SumPairs.apply(out, scatter, y, pairs.out_rows)
        return out.addmm_(scatter, y)
    if y.shape[0] == 0:
        # keep the weight in the graph so an all-empty conv still gets a (zero) gradient
        out = x.new_zeros(pairs.num_out, cout) + 0.0 * weight_k.sum()
    elif grad:
        out = _SumPairs.apply(None, scatter, y, pairs.out_rows)
    else:
        out = scatter @ y
    if bias is None:
        return out
    return out + bias if grad else out.add_(bias)


def _live_slices(bounds: tuple[int, ...]) -> list[tuple[int, slice]]:
    """``(offset, rows)`` of every offset that has pairs."""
    return [(k, slice(bounds[k], bounds[k + 1])) for k in range(len(bounds) - 1)
            if bounds[k + 1] > bounds[k]]  # fmt: skip


def _offset_products(xg: Tensor, weight_k: Tensor, bounds: tuple[int, ...]) -> Tensor:
    """``y[rows_k] = xg[rows_k] @ weight_k[k]`` for each offset ``k``, written straight
    into slices of one buffer (the offsets' row ranges partition ``xg``)."""
    y = xg.new_empty(xg.shape[0], weight_k.shape[2])
    for k, rows in _live_slices(bounds):
        torch.mm(xg[rows], weight_k[k], out=y[rows])
    return y


class _OffsetProducts(torch.autograd.Function):
    """:func:`_offset_products` as one autograd node.

    Why not per-offset slices of ``xg`` under autograd: the backward of each slice
    allocates and zeroes a whole ``(P, Cin)`` gradient and autograd adds the K of them
    up, K passes over every pair where one suffices. Profiled on the synthetic recipe's
    baseline, those fills and adds were a third of a training step. Here the backward
    writes each offset's input gradient into its own rows and each weight gradient into
    its own ``(Cin, Cout)`` slice: the same GEMMs, the same sums, no extra pass.
    """

    @staticmethod
    def forward(ctx, xg: Tensor, weight_k: Tensor, bounds: tuple[int, ...]) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(xg, weight_k)
        ctx.bounds = bounds
        return _offset_products(xg, weight_k, bounds)

    @staticmethod
    def backward(ctx, grad_y: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        xg, weight_k = ctx.saved_tensors
        grad_x = grad_w = None
        live = _live_slices(ctx.bounds)
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty_like(xg)  # the live offsets' rows cover all of xg
            for k, rows in live:
                torch.mm(grad_y[rows], weight_k[k].t(), out=grad_x[rows])
        if ctx.needs_input_grad[1]:
            grad_w = torch.zeros_like(weight_k)  # an offset without pairs: zero gradient
            for k, rows in live:
                torch.mm(xg[rows].t(), grad_y[rows], out=grad_w[k])
        return grad_x, grad_w, None


class _SumPairs(torch.autograd.Function):
    """``base + scatter @ y`` (``scatter @ y`` without a base): each output row sums its
    pairs' products, the same sparse op as in inference.

    Why its own backward: autograd differentiates the CSR product through
    ``scatter.t() @ grad``, which converts the transpose back to CSR (a sort of every
    pair) in every conv of every step (~9 % of a training step, profiled). Each pair
    has exactly one output row, so that product is ``grad[out_rows]``: one gather, the
    same values.
    """

    @staticmethod
    def forward(ctx, base: Tensor | None, scatter: Tensor, y: Tensor, out_rows: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(out_rows)
        return scatter @ y if base is None else torch.addmm(base, scatter, y)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, Tensor | None, None]:  # type: ignore[override]
        (out_rows,) = ctx.saved_tensors
        grad_base = grad if ctx.needs_input_grad[0] else None
        grad_y = grad.index_select(0, out_rows) if ctx.needs_input_grad[2] else None
        return grad_base, None, grad_y, None


def _conv_pairs_fused(
    x: Tensor,
    pairs: ConvPairs,
    weight_k: Tensor,
    bias: Tensor | None,
    residual: Tensor | None,
    relu: bool,
) -> Tensor | None:
    """The inference conv through the fused C++ kernel; None where it does not apply
    (not CPU float32, kernel unavailable or turned off): the caller runs the eager form."""
    if not fused.enabled() or x.device.type != "cpu" or x.dtype != torch.float32:
        return None
    if weight_k.dtype != torch.float32 or not pairs.sorted_by_output:
        return None
    if any(t is not None and t.dtype != torch.float32 for t in (bias, residual)):
        return None
    try:
        return fused.sparse_conv(
            x, weight_k, bias, pairs.in_rows, pairs.out_rows, pairs.bounds_tensor,
            pairs.num_out, pairs.identity_offset, residual=residual, relu=relu,
        )  # fmt: skip
    except fused.FusedUnavailableError:
        return None


class _RowScatterAdd(torch.autograd.Function):
    """``base.index_add(0, rows, y)``, exported as one ONNX ``ScatterND(reduction="add")``.

    The TorchScript exporter turns ``index_put(accumulate=True)`` into a gather/add/
    scatter that loses repeated rows, so the graph node is spelled out here.
    """

    @staticmethod
    def forward(ctx, base: Tensor, rows: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(rows)
        return base.index_add(0, rows, y)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, Tensor]:  # type: ignore[override]
        (rows,) = ctx.saved_tensors
        return grad, None, grad.index_select(0, rows)

    @staticmethod
    def symbolic(g, base, rows, y):  # type: ignore[no-untyped-def]
        one = g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64))
        return g.op("ScatterND", base, g.op("Unsqueeze", rows, one), y, reduction_s="add")


class _ZerosForRows(torch.autograd.Function):
    """Zeros of shape ``(max(rows) + 1, weight.shape[1])``, exported as ReduceMax +
    ConstantOfShape: the pairs of a down conv reach every coarse voxel and those of an
    inverse conv every fine voxel, so the graph needs no extra size input."""

    @staticmethod
    def forward(ctx, rows: Tensor, weight: Tensor) -> Tensor:  # type: ignore[override]
        n = int(rows.max()) + 1 if rows.numel() else 0
        return weight.new_zeros(n, weight.shape[1])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, None]:  # type: ignore[override]
        return None, None

    @staticmethod
    def symbolic(g, rows, weight):  # type: ignore[no-untyped-def]
        one = g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64))
        n = g.op("Add", g.op("ReduceMax", rows, keepdims_i=1), one)
        width = g.op("Gather", g.op("Shape", weight), one)
        return g.op(
            "ConstantOfShape", g.op("Concat", n, width, axis_i=0),
            value_t=torch.tensor([0.0], dtype=torch.float32),
        )  # fmt: skip


def conv_pairs_graph(
    x: Tensor, in_rows: Tensor, out_rows: Tensor, bounds: Tensor, weight_k: Tensor, identity: bool
) -> Tensor:
    """The pair-list conv in exportable ops, for the CPU ONNX graph.

    Per offset: a Gather of the input rows in the slice given by the ``bounds`` input, a
    MatMul and a ``ScatterND(add)``. One scatter per offset because within an offset every
    output row occurs at most once: ONNX Runtime's multithreaded ScatterND races on
    repeated rows (measured: wrong sums with 2 threads), so a single scatter over all
    pairs would be wrong. ``identity`` (submanifold convs) starts the sum with the
    centre tap ``x @ W_c``, whose pairs :meth:`ConvPairs.from_table` leaves out.
    """
    K = weight_k.shape[0]
    centre = K // 2 if identity else -1
    out = x @ weight_k[centre] if identity else _ZerosForRows.apply(out_rows, weight_k[0])
    for k in range(K):
        if k == centre:
            continue
        lo, hi = bounds[k], bounds[k + 1]
        # slice the small index vectors, not gathered features: ONNX Runtime's Slice copies
        y = x.index_select(0, in_rows[lo:hi]) @ weight_k[k]
        out = _RowScatterAdd.apply(out, out_rows[lo:hi], y)
    return out

