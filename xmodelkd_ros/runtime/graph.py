"""The exported graphs' interface: input/output names, dynamic axes, the export wrapper.

Export, the ONNX Runtime backend and the TensorRT backend all name tensors through
this module, so a graph and the code feeding it cannot drift apart.

Three graph forms of the same network (``FORMS``):

* ``"tables"``: the neighbour tables are inputs and every conv is Gather+MatMul over
  all kernel offsets. Static-shape friendly, TensorRT builds it without plugins.
* ``"pairs"``: each table arrives as its compacted pair list (``<table>_in``,
  ``<table>_out``, ``<table>_bounds``, see :class:`~xmodelkd_ros.sparse.ConvPairs`),
  and a conv touches only the real pairs (ScatterND-add sums them). ~4x less work on
  a LiDAR scan: the CPU graph for ONNX Runtime. TensorRT would need the ScatterND
  reduction and data-dependent slices, so it keeps the tables form.
* ``"fused"``: the pairs form's inputs, but each conv (with its bias and residual-block
  tail) is one ``ai.xmodelkd::SparseConv`` node and the point branch with the classifier
  one ``ai.xmodelkd::PointHead`` node: the torch backend's fused C++ kernels
  (:mod:`xmodelkd_ros.sparse.graph_nodes`, :mod:`xmodelkd_ros.sparse.ort_ops`). ONNX
  Runtime runs it only with that custom-op library registered (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from xmodelkd_ros.nets.inputs import NetInputs
from xmodelkd_ros.sparse import PairTensors
from xmodelkd_ros.sparse.graph_nodes import point_head_node

__all__ = [
    "FORMS",
    "OUTPUT_LOGITS",
    "OUTPUT_PROBS",
    "ExportWrapper",
    "dynamic_axes",
    "flatten_inputs",
    "input_names",
    "level_of_input",
]

OUTPUT_LOGITS = "logits"
OUTPUT_PROBS = "probs"
FORMS = ("tables", "pairs", "fused")
#: forms whose tables arrive as pair lists
PAIR_FORMS = ("pairs", "fused")
PAIR_PARTS = ("in", "out", "bounds")


def _check_form(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"unknown graph form {form!r}, expected one of {FORMS}")
    return form


def table_names(num_levels: int) -> list[str]:
    """``subm_0.., down_0.., up_0..``: the kernel maps in graph order."""
    names = [f"subm_{i}" for i in range(num_levels)]
    names += [f"down_{i}" for i in range(num_levels - 1)]
    names += [f"up_{i}" for i in range(num_levels - 1)]
    return names


def input_names(num_levels: int, form: str = "tables") -> list[str]:
    """``voxel_feats, point_feats, point2voxel`` then per table its tensor (``tables``)
    or its ``_in, _out, _bounds`` pair-list inputs (``pairs``, ``fused``), in graph order."""
    names = ["voxel_feats", "point_feats", "point2voxel"]
    if _check_form(form) == "tables":
        return names + table_names(num_levels)
    return names + [f"{t}_{p}" for t in table_names(num_levels) for p in PAIR_PARTS]


def level_of_input(name: str) -> int | None:
    """Voxel level whose count is dim 0 of input ``name``; None for point-sized inputs.

    ``down_i`` maps level i to level i+1, so its rows are level i+1 voxels; ``up_i``
    maps back, so its rows are level i voxels.
    """
    if name == "voxel_feats":
        return 0
    if name in ("point_feats", "point2voxel"):
        return None
    kind, idx = name.rsplit("_", 1)
    return int(idx) + 1 if kind == "down" else int(idx)


def dynamic_axes(
    num_levels: int, with_probs: bool = False, form: str = "tables"
) -> dict[str, dict[int, str]]:
    """Every voxel/point/pair dimension dynamic; each level's voxel count and each
    table's pair count is its own symbol (``_bounds`` is fixed: kernel offsets + 1)."""
    axes: dict[str, dict[int, str]] = {}
    for name in input_names(num_levels, form):
        if name.endswith(("_in", "_out")):
            axes[name] = {0: "pairs_" + name.rsplit("_", 1)[0]}
            continue
        if name.endswith("_bounds"):
            continue
        level = level_of_input(name)
        axes[name] = {0: "points" if level is None else f"voxels_{level}"}
    axes[OUTPUT_LOGITS] = {0: "points"}
    if with_probs:
        axes[OUTPUT_PROBS] = {0: "points"}
    return axes


def flatten_inputs(inputs: NetInputs, form: str = "tables") -> dict[str, Tensor]:
    """NetInputs -> {graph input name: tensor}; feats float32, indices int64."""
    maps = inputs.maps
    tensors: list[Tensor] = [
        inputs.voxel_feats.float(),
        inputs.point_feats.float(),
        inputs.point2voxel.long(),
    ]
    if _check_form(form) == "tables":
        tensors += [t.long() for t in (*maps.subm, *maps.down, *maps.up)]
    else:
        for name in table_names(maps.num_levels):
            kind, level = name.rsplit("_", 1)
            pairs = maps.pairs(kind, int(level))
            if (kind == "subm") != (pairs.identity_offset is not None):
                raise ValueError(f"{name}: the pairs graph needs the centre tap exactly on subm")
            tensors += pairs.tensors()[:3]
    names = input_names(maps.num_levels, form)
    return dict(zip(names, tensors, strict=True))


class ExportWrapper(nn.Module):
    """Positional-tensor facade over ``StudentNet.forward_tables`` for ``torch.onnx.export``.

    The exporter only sees flat tensors, so the kernel-map lists are split back into
    per-level tables here; the net itself is unchanged (fold BN before wrapping).
    """

    def __init__(
        self, net: nn.Module, num_levels: int, with_probs: bool = False, form: str = "tables"
    ) -> None:
        super().__init__()
        self.net = net
        self.num_levels = num_levels
        self.with_probs = with_probs
        self.form = _check_form(form)

    def forward(
        self, voxel_feats: Tensor, point_feats: Tensor, point2voxel: Tensor, *flat: Tensor
    ) -> Tensor | tuple[Tensor, Tensor]:
        L = self.num_levels
        tables: Sequence[Tensor | PairTensors] = flat
        if self.form in PAIR_FORMS:
            n = len(PAIR_PARTS)
            node = self.form == "fused"
            tables = [
                PairTensors(*flat[n * i : n * i + n], name.startswith("subm"), node)  # type: ignore[call-arg]
                for i, name in enumerate(table_names(L))
            ]
        subm = tables[:L]
        down = tables[L : 2 * L - 1]
        up = tables[2 * L - 1 :]
        head = self.net._folded_head() if self.form == "fused" else None
        if head is not None:  # the point branch as one node too
            x = self.net.voxel_features(voxel_feats, subm, down, up)
            net = self.net
            logits = point_head_node(point_feats, point2voxel, x, net.in_mean, net.in_std, head)
        else:
            logits = self.net.forward_tables(
                voxel_feats, point_feats, point2voxel, subm, down, up
            ).logits
        if self.with_probs:
            return logits, torch.softmax(logits, dim=1)
        return logits
