"""Pure-PyTorch sparse 3D convolution (exportable), with spconv as optional twin backend."""

from .conv import SparseConv3d, get_default_impl, set_default_impl, use_impl
from .maps import (
    KernelMaps,
    build_kernel_maps,
    downsample,
    downsampled_shape,
    kernel_offsets,
    submanifold_table,
    table_to_pairs,
    transpose_table,
    upsample_table,
)
from .pairs import ConvPairs, PairTensors, conv_pairs, conv_pairs_graph
from .spconv_backend import run_spconv_reference, spconv_available, to_spconv
from .voxelize import VoxelGridSpec, Voxels, set_fused_voxelize, voxelize

__all__ = [
    "ConvPairs",
    "KernelMaps",
    "PairTensors",
    "SparseConv3d",
    "VoxelGridSpec",
    "Voxels",
    "build_kernel_maps",
    "conv_pairs",
    "conv_pairs_graph",
    "downsample",
    "downsampled_shape",
    "get_default_impl",
    "kernel_offsets",
    "run_spconv_reference",
    "set_default_impl",
    "set_fused_voxelize",
    "spconv_available",
    "submanifold_table",
    "table_to_pairs",
    "to_spconv",
    "transpose_table",
    "upsample_table",
    "use_impl",
    "voxelize",
]
