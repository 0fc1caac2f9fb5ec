"""The exported graph's interface: input/output names, dynamic axes, the export wrapper.

Export, the ONNX Runtime backend and the TensorRT backend all name tensors through
this module, so a graph and the code feeding it cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from xmodelkd_ros.nets.inputs import NetInputs

__all__ = [
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


def input_names(num_levels: int) -> list[str]:
    """``voxel_feats, point_feats, point2voxel, subm_0.., down_0.., up_0..`` in graph order."""
    names = ["voxel_feats", "point_feats", "point2voxel"]
    names += [f"subm_{i}" for i in range(num_levels)]
    names += [f"down_{i}" for i in range(num_levels - 1)]
    names += [f"up_{i}" for i in range(num_levels - 1)]
    return names


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


def dynamic_axes(num_levels: int, with_probs: bool = False) -> dict[str, dict[int, str]]:
    """Every voxel/point dimension dynamic; each level's voxel count is its own symbol."""
    axes: dict[str, dict[int, str]] = {}
    for name in input_names(num_levels):
        level = level_of_input(name)
        axes[name] = {0: "points" if level is None else f"voxels_{level}"}
    axes[OUTPUT_LOGITS] = {0: "points"}
    if with_probs:
        axes[OUTPUT_PROBS] = {0: "points"}
    return axes


def flatten_inputs(inputs: NetInputs) -> dict[str, Tensor]:
    """NetInputs -> {graph input name: tensor}; feats float32, indices int64."""
    maps = inputs.maps
    tensors: list[Tensor] = [
        inputs.voxel_feats.float(),
        inputs.point_feats.float(),
        inputs.point2voxel.long(),
        *[t.long() for t in maps.subm],
        *[t.long() for t in maps.down],
        *[t.long() for t in maps.up],
    ]
    names = input_names(maps.num_levels)
    return dict(zip(names, tensors, strict=True))


class ExportWrapper(nn.Module):
    """Positional-tensor facade over ``StudentNet.forward_tables`` for ``torch.onnx.export``.

    The exporter only sees flat tensors, so the kernel-map lists are split back into
    per-level tables here; the net itself is unchanged (fold BN before wrapping).
    """

    def __init__(self, net: nn.Module, num_levels: int, with_probs: bool = False) -> None:
        super().__init__()
        self.net = net
        self.num_levels = num_levels
        self.with_probs = with_probs

    def forward(
        self, voxel_feats: Tensor, point_feats: Tensor, point2voxel: Tensor, *tables: Tensor
    ) -> Tensor | tuple[Tensor, Tensor]:
        L = self.num_levels
        subm: Sequence[Tensor] = tables[:L]
        down: Sequence[Tensor] = tables[L : 2 * L - 1]
        up: Sequence[Tensor] = tables[2 * L - 1 :]
        logits = self.net.forward_tables(
            voxel_feats, point_feats, point2voxel, subm, down, up
        ).logits
        if self.with_probs:
            return logits, torch.softmax(logits, dim=1)
        return logits
