"""spconv as the training backend (``optim.sparse_impl: spconv``), same weights.

The network keeps building its kernel maps the way it always does (``maps.py``); only
the convolution arithmetic moves to spconv's kernels. Each layer's neighbour table is
turned into spconv's *indice pairs* (``(2, K, P)`` int32: input row, output row per
offset; ``-1`` padding) and fed, with the layer's own ``weight`` (already spconv's
``(Cout, k, k, k, Cin)`` layout), to ``spconv.pytorch.functional.indice_conv``. So the
parameters, the state_dict and the checkpoint are exactly those of the pure-PyTorch
layer, the output is the same sum over the same pairs (checked against ``pairs`` in the
tests where spconv runs), and gradients come from spconv's CUDA backward.

spconv's CPU build has a forward but no backward: training on CPU with it is refused
with :class:`SpconvTrainingError` (use ``pairs`` there); no-grad forwards (evaluation,
the frozen teacher, the tests) run on CPU too. Tracing falls back to the exportable
gather form, so an exported graph never contains spconv.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

import torch
from torch import nn

from .conv import SparseConv3d, _is_tracing
from .maps import table_to_pairs
from .pairs import conv_epilogue
from .spconv_backend import spconv_available

__all__ = [
    "SpconvSparseConv3d",
    "SpconvTrainingError",
    "check_spconv_training",
    "convert_to_spconv",
    "indice_pairs",
]


class SpconvTrainingError(RuntimeError):
    """spconv cannot train here (not installed, or a CPU device: no CPU backward)."""


def check_spconv_training(device: torch.device) -> None:
    """Raise :class:`SpconvTrainingError` unless spconv can train on ``device``."""
    if not spconv_available():
        raise SpconvTrainingError(
            "optim.sparse_impl=spconv needs spconv (pip install spconv-cu120, matching your "
            "CUDA); use optim.sparse_impl=pairs without it"
        )
    if device.type != "cuda":
        raise SpconvTrainingError(
            f"optim.sparse_impl=spconv trains on CUDA only (spconv's CPU build has no "
            f"backward), this run uses {device}: use optim.sparse_impl=pairs on CPU"
        )


# A forward applies each level's table in several layers: build its pairs once. Keyed by
# the table's identity and version, holding a weak reference that proves it is the same
# live tensor (ids are reused after a tensor is freed).
_CACHE: OrderedDict[tuple, tuple[weakref.ref, torch.Tensor, torch.Tensor]] = OrderedDict()
_CACHE_SIZE = 32


def indice_pairs(table: torch.Tensor, num_inputs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pairs (2, K, P) int32, counts (K,) int32)`` of ``table`` for spconv's native
    algorithm: ``pairs[0, k, :counts[k]]`` input rows, ``pairs[1, k, :counts[k]]`` output
    rows of offset ``k`` (table column ``k``), the rest ``-1``."""
    version = None if table.is_inference() else table._version
    key = (id(table), table.data_ptr(), tuple(table.shape), version, int(num_inputs))
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is table:
        _CACHE.move_to_end(key)
        return hit[1], hit[2]
    per_offset = table_to_pairs(table, num_inputs)
    counts = torch.tensor([len(o) for _, o in per_offset], dtype=torch.int32)
    width = max(1, int(counts.max())) if len(per_offset) else 1
    pairs = torch.full((2, len(per_offset), width), -1, dtype=torch.int32, device=table.device)
    for k, (in_rows, out_rows) in enumerate(per_offset):
        pairs[0, k, : len(in_rows)] = in_rows.to(torch.int32)
        pairs[1, k, : len(out_rows)] = out_rows.to(torch.int32)
    counts = counts.to(table.device)
    _CACHE[key] = (weakref.ref(table), pairs, counts)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return pairs, counts


class SpconvSparseConv3d(SparseConv3d):
    """A :class:`SparseConv3d` whose forward runs spconv's kernels on its own table."""

    def forward(
        self,
        x: torch.Tensor,
        table: torch.Tensor,
        impl: str | None = None,
        residual: torch.Tensor | None = None,
        relu: bool = False,
    ) -> torch.Tensor:
        if _is_tracing():  # exported graphs stay plugin-free
            return super().forward(x, table, "gather", residual, relu)
        if table.shape[1] != self.num_offsets:
            raise ValueError(f"table has {table.shape[1]} offsets, layer needs {self.num_offsets}")
        if x.device.type != "cuda" and torch.is_grad_enabled() and (
            x.requires_grad or self.weight.requires_grad
        ):
            raise SpconvTrainingError(
                "spconv has no CPU backward: train with optim.sparse_impl=pairs on CPU "
                "(spconv layers run on CPU only without gradients)"
            )
        from spconv.core import ConvAlgo
        from spconv.pytorch import functional as Fsp

        pairs, counts = indice_pairs(table, x.shape[0])
        out = Fsp.indice_conv(
            x.contiguous(), self.weight, pairs, counts, table.shape[0], ConvAlgo.Native
        )
        if self.bias is not None:
            out = out + self.bias
        return conv_epilogue(out, residual, relu, inplace=False)


def convert_to_spconv(module: nn.Module) -> nn.Module:
    """Switch every :class:`SparseConv3d` in ``module`` to spconv, in place.

    The layers keep their parameter objects (so optimizers, state_dict keys and
    checkpoints are unchanged); only the class that decides how ``forward`` computes
    changes. Returns ``module``.
    """
    for layer in module.modules():
        if type(layer) is SparseConv3d:
            layer.__class__ = SpconvSparseConv3d
    return module
