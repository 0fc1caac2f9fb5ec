"""Bridge to spconv 2.x: the GPU training backend and the correctness reference.

spconv is optional (CPU wheels have no backward, CUDA wheels need a matching
toolkit), so nothing is imported at module level.
"""

from __future__ import annotations

from typing import Any

import torch

from .conv import SparseConv3d

__all__ = ["run_spconv_reference", "spconv_available", "spconv_cuda_usable", "to_spconv"]


def spconv_available() -> bool:
    """True when ``spconv.pytorch`` imports (it can be installed but broken, e.g. no cumm)."""
    try:
        import spconv.pytorch  # noqa: F401
    except Exception:
        return False
    return True


def spconv_cuda_usable() -> bool:
    """True when a GPU is visible and the installed spconv is a CUDA build (its kernels,
    not only its CPU fallback, can run)."""
    if not torch.cuda.is_available():
        return False
    try:
        from spconv.core_cc.csrc.sparse.all import SpconvOps

        return not SpconvOps.is_cpu_only_build()
    except Exception:  # not installed, or installed without a working cumm
        return False


def to_spconv(layer: SparseConv3d, indice_key: str | None = None) -> Any:
    """Equivalent spconv module sharing no storage with ``layer`` but holding the same weights.

    ``down`` maps to ``SparseConv3d(stride=ks, padding=0)``; ``inverse`` to
    ``SparseInverseConv3d``, which needs the ``indice_key`` of the matching down conv.

    A layer on the CPU gets spconv's ``Native`` algorithm: a CUDA build of spconv picks
    ``MaskImplicitGemm`` when the module is constructed, and that algorithm refuses CPU
    tensors (seen on an H100 with spconv-cu126: every CPU reference conv failed).
    """
    import spconv.pytorch as spconv
    from spconv.core import ConvAlgo

    ks = layer.kernel_size
    bias = layer.bias is not None
    algo = ConvAlgo.Native if layer.weight.device.type == "cpu" else None
    if layer.kind == "subm":
        mod = spconv.SubMConv3d(
            layer.in_channels, layer.out_channels, ks, bias=bias, indice_key=indice_key, algo=algo
        )
    elif layer.kind == "down":
        mod = spconv.SparseConv3d(
            layer.in_channels,
            layer.out_channels,
            ks,
            stride=ks,
            padding=0,
            bias=bias,
            indice_key=indice_key,
            algo=algo,
        )
    else:
        if indice_key is None:
            raise ValueError("an inverse conv needs the indice_key of its down conv")
        mod = spconv.SparseInverseConv3d(
            layer.in_channels, layer.out_channels, ks, indice_key=indice_key, bias=bias, algo=algo
        )
    if tuple(mod.weight.shape) != tuple(layer.weight.shape):
        raise RuntimeError(
            f"spconv weight layout {tuple(mod.weight.shape)} != {tuple(layer.weight.shape)}"
        )
    with torch.no_grad():
        mod.weight.copy_(layer.weight)
        if bias:
            mod.bias.copy_(layer.bias)
    return mod.to(layer.weight.device)


def make_sparse_tensor(
    feats: torch.Tensor, coords: torch.Tensor, spatial_shape: tuple[int, int, int], batch_size: int
) -> Any:
    """spconv tensor from our ``[b, x, y, z]`` coords (spconv wants int32 indices)."""
    import spconv.pytorch as spconv

    return spconv.SparseConvTensor(
        feats, coords.to(torch.int32).contiguous(), list(spatial_shape), int(batch_size)
    )


def _padded_shape(spatial_shape: tuple[int, int, int], stride: int) -> list[int]:
    """spconv floors the output shape; pad so it keeps the same coarse voxels we do."""
    return [-(-int(s) // stride) * stride for s in spatial_shape]


def run_spconv_reference(
    layer: SparseConv3d,
    feats: torch.Tensor,
    coords: torch.Tensor,
    spatial_shape: tuple[int, int, int],
    batch_size: int = 1,
    down_layer: SparseConv3d | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``layer``'s spconv twin on ``(feats, coords)``; returns (out_feats, out_coords).

    For ``subm`` and ``down`` the input is the layer input. For ``inverse``,
    ``(feats, coords)`` is the *fine* level: spconv's inverse conv can only reuse the
    indice pairs of a down conv, so ``down_layer`` runs first and ``layer`` is applied
    to its output (compare with our down -> inverse on the same input). Rows come
    back sorted by coords so they compare directly with ours.
    """
    key = "ref"
    if layer.kind == "subm":
        st = make_sparse_tensor(feats, coords, spatial_shape, batch_size)
        out = to_spconv(layer, key)(st)
    elif layer.kind == "down":
        shape = _padded_shape(spatial_shape, layer.kernel_size)
        st = make_sparse_tensor(feats, coords, tuple(shape), batch_size)  # type: ignore[arg-type]
        out = to_spconv(layer, key)(st)
    else:
        if down_layer is None:
            raise ValueError("inverse reference needs the down layer of the fine level")
        shape = _padded_shape(spatial_shape, down_layer.kernel_size)
        st = make_sparse_tensor(feats, coords, tuple(shape), batch_size)  # type: ignore[arg-type]
        coarse = to_spconv(down_layer, key)(st)
        out = to_spconv(layer, key)(coarse)
    idx = out.indices.to(torch.int64)
    shp = out.spatial_shape
    keys = ((idx[:, 0] * shp[0] + idx[:, 1]) * shp[1] + idx[:, 2]) * shp[2] + idx[:, 3]
    order = torch.argsort(keys)
    return out.features[order], idx[order]
