"""The student's forward on spconv 2.x (CPU build), with the same (BN-folded) weights.

The benchmark's reference point: the same network, layer for layer, where every sparse
conv is spconv's (it builds its own indice pairs from the coordinates, per
``indice_key``: once per level for the subm convs, once per down/inverse pair). The
point branch and classifier are the student's own modules.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from xmodelkd_ros.nets.fold import fold_batchnorm
from xmodelkd_ros.nets.student import StudentNet
from xmodelkd_ros.sparse import SparseConv3d, to_spconv


class SpconvStudent(nn.Module):
    """``StudentNet.forward`` with spconv convs; rows of level 0 keep the input order."""

    def __init__(self, net: StudentNet) -> None:
        super().__init__()
        self.net = fold_batchnorm(net)
        self.levels = net.config.num_levels
        self.sp = nn.ModuleDict()
        self.bias: dict[str, Tensor | None] = {}
        for name, mod in self.net.named_modules():
            if isinstance(mod, SparseConv3d):
                # spconv's CPU conv takes no bias ("cpu don't support act and bias"): add it after
                plain = SparseConv3d(mod.in_channels, mod.out_channels, mod.kernel_size, mod.kind)
                plain.weight.data.copy_(mod.weight.data)
                key = name.replace(".", "_")
                self.sp[key] = to_spconv(plain, self._key(name, mod))
                self.bias[key] = None if mod.bias is None else mod.bias.detach()

    def _key(self, name: str, mod: SparseConv3d) -> str:
        """subm convs share their level's pairs; a down conv and its inverse share theirs."""
        parts = name.split(".")
        if mod.kind == "down":
            return f"down{parts[1]}"
        if mod.kind == "inverse":
            return f"down{self.levels - 2 - int(parts[1])}"
        if parts[0] in ("stem", "enc0"):
            return "subm0"
        if parts[0] == "enc":
            return f"subm{int(parts[1]) + 1}"
        return f"subm{self.levels - 2 - int(parts[1])}"  # dec.j

    def _conv(self, name: str, x: Any, relu: bool) -> Any:
        key = name.replace(".", "_")
        out = self.sp[key](x)
        feats = out.features if self.bias[key] is None else out.features + self.bias[key]
        return out.replace_feature(torch.relu(feats) if relu else feats)

    def _block(self, prefix: str, block: nn.Module, x: Any) -> Any:
        skip = x.features if block.proj is None else block.proj(x.features)
        y = self._conv(f"{prefix}.conv1.conv", x, True)
        y = self._conv(f"{prefix}.conv2.conv", y, False)
        return y.replace_feature(torch.relu(y.features + skip))

    def _stage(self, prefix: str, stage: nn.Module, x: Any) -> Any:
        for i, block in enumerate(stage.blocks):
            x = self._block(f"{prefix}.blocks.{i}", block, x)
        return x

    def forward(
        self, voxel_feats: Tensor, point_feats: Tensor, point2voxel: Tensor, coords: Tensor,
        spatial_shape: tuple[int, int, int],
    ) -> Tensor:  # fmt: skip
        import spconv.pytorch as spconv

        net = self.net
        # spconv floors coarse shapes: pad so every level keeps the voxels ours keeps
        s = 2 ** (self.levels - 1)
        shape = [-(-int(v) // s) * s for v in spatial_shape]
        x = spconv.SparseConvTensor(
            net.normalize(voxel_feats), coords.to(torch.int32).contiguous(), shape, 1
        )
        x = self._conv("stem.0.conv", x, True)
        x = self._conv("stem.1.conv", x, True)
        x = self._stage("enc0", net.enc0, x)
        skips = [x]
        for i in range(self.levels - 1):
            x = self._conv(f"down.{i}.conv", x, True)
            x = self._stage(f"enc.{i}", net.enc[i], x)
            skips.append(x)
        for j in range(self.levels - 1):
            level = self.levels - 2 - j
            x = self._conv(f"up.{j}.conv", x, True)
            x = x.replace_feature(torch.cat([x.features, skips[level].features], dim=1))
            x = self._stage(f"dec.{j}", net.dec[j], x)
        point_x = x.features[point2voxel] + net.point_mlp(net.normalize(point_feats))
        return net.classifier(net.point_fuse(point_x))
