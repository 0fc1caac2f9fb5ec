"""Fold BatchNorm layers into the preceding convolution / linear layer.

The deployed graph must be Gather + MatMul + Add only: an eval-mode BatchNorm is an
affine map per channel, so it is merged into the weights of the layer in front of
it. Folding works on a deep copy, so the training model (and its running stats)
is never touched, and the export can assert that no BatchNorm survives.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from xmodelkd_ros.sparse import SparseConv3d

__all__ = ["fold_batchnorm", "fold_bn_into"]


def _bn_affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) such that ``bn(y) == y * scale + shift`` in eval mode."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    scale = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


@torch.no_grad()
def fold_bn_into(layer: nn.Module, bn: nn.BatchNorm1d) -> None:
    """Merge ``bn`` (applied to ``layer``'s output) into ``layer`` in place.

    ``layer`` is an ``nn.Linear`` (weight (Cout, Cin)) or a :class:`SparseConv3d`
    (weight (Cout, k, k, k, Cin)); both keep the output channel first, so the scale
    multiplies dim 0. A bias is created where the layer had none. The arithmetic is
    done in float64 so folding adds no error beyond the final float32 rounding.
    """
    if not isinstance(layer, (nn.Linear, SparseConv3d)):
        raise TypeError(f"cannot fold BatchNorm into {type(layer).__name__}")
    scale, shift = _bn_affine(bn)
    w = layer.weight.double()
    view = (-1,) + (1,) * (w.dim() - 1)
    new_w = (w * scale.view(view)).to(layer.weight.dtype)
    old_b = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
    new_b = (old_b * scale + shift).to(layer.weight.dtype)
    layer.weight.copy_(new_w)
    if layer.bias is None:
        layer.bias = nn.Parameter(new_b)
    else:
        layer.bias.copy_(new_b)


def fold_batchnorm(model: nn.Module, strict: bool = True) -> nn.Module:
    """Deep copy of ``model`` in eval mode with every foldable BatchNorm merged away.

    Two patterns are recognised, which covers the student:

    * a module with attributes ``conv`` (Linear / SparseConv3d) and ``bn``;
    * consecutive ``(Linear | SparseConv3d, BatchNorm1d)`` children of ``nn.Sequential``.

    Folded BatchNorms become ``nn.Identity``. With ``strict`` a BatchNorm that fits
    neither pattern raises, because an exported graph would silently keep it.
    """
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        conv = getattr(module, "conv", None)
        bn = getattr(module, "bn", None)
        if isinstance(conv, (nn.Linear, SparseConv3d)) and isinstance(bn, nn.BatchNorm1d):
            fold_bn_into(conv, bn)
            module.bn = nn.Identity()
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for prev, cur in itertools.pairwise(names):
                layer, norm = module._modules[prev], module._modules[cur]
                if isinstance(layer, (nn.Linear, SparseConv3d)) and isinstance(
                    norm, nn.BatchNorm1d
                ):
                    fold_bn_into(layer, norm)
                    module._modules[cur] = nn.Identity()
    if strict:
        left = [
            n for n, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
        if left:
            raise ValueError(f"BatchNorm layers not foldable: {left}")
    return folded
