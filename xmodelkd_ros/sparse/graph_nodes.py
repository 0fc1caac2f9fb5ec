"""The ``fused`` CPU graph's custom nodes, as the TorchScript exporter spells them.

Each function here computes the node's true values (the fused CPU kernel where it is
built, else eager torch ops: tracing needs no ONNX Runtime library) and exports as one
``ai.xmodelkd`` node, which ONNX Runtime runs with the custom-op library of
:mod:`.ort_ops` (contracts in ``ort_ops.cpp``): a sparse conv with its bias and
residual-block tail, and the student's point branch with its classifier.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .pairs import ConvPairs, conv_pairs

__all__ = ["DOMAIN", "conv_pairs_node", "point_head_node"]

DOMAIN = "ai.xmodelkd"


def _given(value: object) -> bool:
    """A symbolic input that is not the exporter's None constant."""
    node = getattr(value, "node", None)
    return value is not None and not (node is not None and node().mustBeNone())


class _SparseConvNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight_k, bias, in_rows, out_rows, bounds, residual, centre, relu):  # type: ignore[override]
        # The exporter also traces what runs here into the node's subgraph: through
        # conv_pairs that is the fused kernel, one call, where it is built (the eager
        # standard-ops form, ~130 ops a conv, made export's graph passes 30x slower).
        last = int(out_rows.max()) if len(out_rows) else -1
        num_out = x.shape[0] if centre >= 0 else last + 1
        pairs = ConvPairs(in_rows, out_rows, tuple(int(b) for b in bounds.tolist()),
                          x.shape[0], num_out, centre if centre >= 0 else None)  # fmt: skip
        return conv_pairs(x, pairs, weight_k, bias, residual, bool(relu))

    @staticmethod
    def symbolic(g, x, weight_k, bias, in_rows, out_rows, bounds, residual, centre, relu):  # type: ignore[no-untyped-def]
        inputs = [x, weight_k, bias, in_rows, out_rows, bounds]
        if _given(residual):
            inputs.append(residual)
        out = g.op(f"{DOMAIN}::SparseConv", *inputs, centre_i=int(centre), relu_i=int(relu))
        out.setType(x.type().with_sizes([None, None]))
        return out


def conv_pairs_node(
    x: Tensor,
    in_rows: Tensor,
    out_rows: Tensor,
    bounds: Tensor,
    weight_k: Tensor,
    bias: Tensor | None,
    identity: bool,
    num_offsets: int,
    residual: Tensor | None = None,
    relu: bool = False,
) -> Tensor:
    """The pair-list conv with its bias and residual-block tail as one
    ``ai.xmodelkd::SparseConv`` node; eagerly :func:`.pairs.conv_pairs` (bias and
    epilogue included). ``num_offsets`` is the layer's (a Python int: under the tracer
    ``weight_k.shape`` is a graph value, and the node's attributes must be constants)."""
    b = bias if bias is not None else weight_k.new_zeros(weight_k.shape[2])
    centre = num_offsets // 2 if identity else -1
    return _SparseConvNode.apply(x, weight_k, b, in_rows, out_rows, bounds, residual, centre,
                                 int(relu))  # fmt: skip


class _PointHeadNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pts, p2v, vox, mean, std, w1, b1, w2, b2, w3, b3, w4, b4):  # type: ignore[override]
        h = torch.relu(torch.relu(((pts - mean) / std) @ w1 + b1) @ w2 + b2)
        return torch.relu((vox[p2v] + h) @ w3 + b3) @ w4 + b4

    @staticmethod
    def symbolic(g, pts, p2v, vox, mean, std, w1, b1, w2, b2, w3, b3, w4, b4):  # type: ignore[no-untyped-def]
        out = g.op(f"{DOMAIN}::PointHead", pts, p2v, vox, mean, std, w1, b1, w2, b2, w3, b3,
                   w4, b4)  # fmt: skip
        out.setType(pts.type().with_sizes([None, None]))
        return out


def point_head_node(
    point_feats: Tensor,
    point2voxel: Tensor,
    voxel_x: Tensor,
    mean: Tensor,
    std: Tensor,
    layers: list[tuple[Tensor, Tensor]],
) -> Tensor:
    """The student's point branch and classifier (``layers``: the four folded
    ``nn.Linear`` ``(weight (out, in), bias)``) as one ``ai.xmodelkd::PointHead`` node;
    the same arithmetic as :func:`.fused.point_head`."""
    weights = [t for w, b in layers for t in (w.t().contiguous(), b)]
    return _PointHeadNode.apply(point_feats, point2voxel, voxel_x, mean, std, *weights)
