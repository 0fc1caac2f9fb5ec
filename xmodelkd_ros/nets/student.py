"""The LiDAR-only student: a MinkUNet-style sparse U-Net with a point-wise branch.

The same module is the 3D branch of the fusion teacher and the deployed model, so it
must (a) train on CPU with autograd through the pure-PyTorch sparse convolutions,
(b) hand out per-point features for the distillation losses, and (c) export to ONNX
with the kernel maps as graph inputs. That is why ``forward_tables`` takes plain
tensors only: the maps are built outside the network (by :mod:`xmodelkd_ros.sparse`)
and the graph never sorts, hashes or searches.

The point branch (SPVCNN-style) keeps per-point detail that voxelization throws away:
points sharing a voxel still get different logits from their own coordinates and
intensity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from xmodelkd_ros.sparse import ConvPairs, KernelMaps, SparseConv3d, fused, get_default_impl
from xmodelkd_ros.sparse.pairs import conv_epilogue


@dataclass(frozen=True)
class StudentConfig:
    """Architecture hyper-parameters; stored in checkpoints and ``model.json``."""

    in_channels: int = 4
    num_classes: int = 19
    #: Encoder widths, one per level (level 0 = full voxel resolution).
    enc_widths: tuple[int, ...] = (16, 32, 64, 128)
    #: Decoder widths for levels L-2 .. 0 (coarse to fine).
    dec_widths: tuple[int, ...] = (64, 48, 48)
    #: Residual blocks per encoder level and per decoder level.
    blocks: int = 1
    #: Normalisation of the raw input features (x, y, z, intensity, ...).
    in_mean: tuple[float, ...] = (0.0, 0.0, -1.0, 0.3)
    in_std: tuple[float, ...] = (20.0, 20.0, 1.5, 0.2)

    @property
    def num_levels(self) -> int:
        return len(self.enc_widths)

    @property
    def feature_dim(self) -> int:
        return self.dec_widths[-1]

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> StudentConfig:
        fields = cls.__dataclass_fields__
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown student config keys: {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


PRESETS: dict[str, StudentConfig] = {
    # CPU real time: narrow, one block per level.
    "small": StudentConfig(),
    # GPU: MinkUNet18-like widths, two blocks per level.
    "base": StudentConfig(
        enc_widths=(32, 64, 128, 256), dec_widths=(128, 96, 96), blocks=2
    ),
}


def student_config(preset: str, **overrides) -> StudentConfig:
    """A preset with keyword overrides (e.g. ``num_classes``, ``in_channels``)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown student preset {preset!r}; choose from {sorted(PRESETS)}")
    base = PRESETS[preset].to_dict()
    base.update(overrides)
    return StudentConfig.from_dict(base)


class _ConvBnRelu(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, kind: str, relu: bool = True):
        super().__init__()
        self.conv = SparseConv3d(cin, cout, kernel_size, kind=kind)
        self.bn = nn.BatchNorm1d(cout)
        self.relu = relu

    def forward(
        self, x: Tensor, table: Tensor | ConvPairs, residual: Tensor | None = None
    ) -> Tensor:
        """conv -> BN -> (+ residual) -> (ReLU). Once BN is folded away (the runtime) the
        tail goes into the conv call, so the fused CPU kernel applies it per output tile."""
        if isinstance(self.bn, nn.Identity):
            return self.conv(x, table, residual=residual, relu=self.relu)
        return conv_epilogue(self.bn(self.conv(x, table)), residual, self.relu, inplace=False)


class ResBlock(nn.Module):
    """Two submanifold 3x3x3 convs with a residual connection (1x1 projection if widths differ)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = _ConvBnRelu(cin, cout, 3, "subm")
        self.conv2 = _ConvBnRelu(cout, cout, 3, "subm")  # its ReLU follows the residual sum
        self.proj = (
            None
            if cin == cout
            else nn.Sequential(nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout))
        )

    def forward(self, x: Tensor, table: Tensor | ConvPairs) -> Tensor:
        skip = x if self.proj is None else self.proj(x)
        return self.conv2(self.conv1(x, table), table, residual=skip)


class _Stage(nn.Module):
    def __init__(self, cin: int, cout: int, blocks: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(cin if i == 0 else cout, cout) for i in range(max(blocks, 1))
        )

    def forward(self, x: Tensor, table: Tensor | ConvPairs) -> Tensor:
        for block in self.blocks:
            x = block(x, table)
        return x


@dataclass
class StudentOutput:
    logits: Tensor  # (N, num_classes) per point
    features: Tensor  # (N, feature_dim) per point, before the classifier
    voxel_features: Tensor  # (M0, feature_dim) finest decoder level


class StudentNet(nn.Module):
    """Sparse U-Net over ``config.num_levels`` levels plus a point-wise MLP branch."""

    def __init__(self, config: StudentConfig | None = None):
        super().__init__()
        self.config = cfg = config or StudentConfig()
        if len(cfg.dec_widths) != cfg.num_levels - 1:
            raise ValueError(
                f"dec_widths needs {cfg.num_levels - 1} entries for {cfg.num_levels} levels, "
                f"got {len(cfg.dec_widths)}"
            )
        if len(cfg.in_mean) != cfg.in_channels or len(cfg.in_std) != cfg.in_channels:
            raise ValueError("in_mean and in_std need one entry per input channel")
        self.register_buffer("in_mean", torch.tensor(cfg.in_mean, dtype=torch.float32))
        self.register_buffer("in_std", torch.tensor(cfg.in_std, dtype=torch.float32))

        w = cfg.enc_widths
        self.stem = nn.ModuleList(
            [_ConvBnRelu(cfg.in_channels, w[0], 3, "subm"), _ConvBnRelu(w[0], w[0], 3, "subm")]
        )
        self.enc0 = _Stage(w[0], w[0], cfg.blocks)
        self.down = nn.ModuleList(
            _ConvBnRelu(w[i], w[i + 1], 2, "down") for i in range(cfg.num_levels - 1)
        )
        self.enc = nn.ModuleList(
            _Stage(w[i + 1], w[i + 1], cfg.blocks) for i in range(cfg.num_levels - 1)
        )
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        prev = w[-1]
        for j, width in enumerate(cfg.dec_widths):
            level = cfg.num_levels - 2 - j
            self.up.append(_ConvBnRelu(prev, width, 2, "inverse"))
            self.dec.append(_Stage(width + w[level], width, cfg.blocks))
            prev = width
        self.point_mlp = nn.Sequential(
            nn.Linear(cfg.in_channels, w[0]),
            nn.BatchNorm1d(w[0]),
            nn.ReLU(),
            nn.Linear(w[0], cfg.feature_dim),
            nn.BatchNorm1d(cfg.feature_dim),
            nn.ReLU(),
        )
        self.point_fuse = nn.Sequential(
            nn.Linear(cfg.feature_dim, cfg.feature_dim),
            nn.BatchNorm1d(cfg.feature_dim),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def normalize(self, feats: Tensor) -> Tensor:
        return (feats - self.in_mean) / self.in_std

    def forward(
        self, voxel_feats: Tensor, point_feats: Tensor, point2voxel: Tensor, maps: KernelMaps
    ) -> StudentOutput:
        """Per-point logits and features.

        ``point2voxel`` must index valid voxels only (drop out-of-range points first).
        """
        if maps.num_levels != self.config.num_levels:
            raise ValueError(
                f"kernel maps have {maps.num_levels} levels, network needs {self.config.num_levels}"
            )
        if get_default_impl() == "pairs" and not torch.jit.is_tracing() and self._plain_convs():
            # the maps cache each table's pair list: built once, shared by its layers
            return self.forward_tables(voxel_feats, point_feats, point2voxel, *maps.all_pairs())
        return self.forward_tables(
            voxel_feats, point_feats, point2voxel, maps.subm, maps.down, maps.up
        )

    def _plain_convs(self) -> bool:
        """Pair lists are an input of the pure-PyTorch conv only: a subclass with its own
        kernels (spconv training, ``sparse/spconv_train.py``) gets the tables it expects."""
        return all(type(m) is SparseConv3d for m in self.modules() if isinstance(m, SparseConv3d))

    def forward_tables(
        self,
        voxel_feats: Tensor,
        point_feats: Tensor,
        point2voxel: Tensor,
        subm: Sequence[Tensor | ConvPairs],
        down: Sequence[Tensor | ConvPairs],
        up: Sequence[Tensor | ConvPairs],
    ) -> StudentOutput:
        """The same as :meth:`forward`, with the kernel maps as plain tensors (ONNX export)
        or as their :class:`ConvPairs` (the pair-list form, no per-layer rebuild)."""
        x = self.voxel_features(voxel_feats, subm, down, up)
        point_x = x[point2voxel] + self.point_mlp(self.normalize(point_feats))
        features = self.point_fuse(point_x)
        return StudentOutput(self.classifier(features), features, x)

    def voxel_features(
        self,
        voxel_feats: Tensor,
        subm: Sequence[Tensor | ConvPairs],
        down: Sequence[Tensor | ConvPairs],
        up: Sequence[Tensor | ConvPairs],
    ) -> Tensor:
        """The sparse U-Net: (M0, feature_dim) features of the finest voxels."""
        x = self.normalize(voxel_feats)
        for layer in self.stem:
            x = layer(x, subm[0])
        skips = [self.enc0(x, subm[0])]
        x = skips[0]
        for i, (down_layer, stage) in enumerate(zip(self.down, self.enc, strict=True)):
            x = stage(down_layer(x, down[i]), subm[i + 1])
            skips.append(x)
        for j, (up_layer, stage) in enumerate(zip(self.up, self.dec, strict=True)):
            level = self.config.num_levels - 2 - j
            x = up_layer(x, up[level])
            x = stage(torch.cat([x, skips[level]], dim=1), subm[level])
        return x

    def infer_logits(
        self,
        voxel_feats: Tensor,
        point_feats: Tensor,
        point2voxel: Tensor,
        subm: Sequence[ConvPairs],
        down: Sequence[ConvPairs],
        up: Sequence[ConvPairs],
    ) -> Tensor:
        """Per-point logits only, for the runtime (no autograd): the point branch runs in
        the fused kernel when the BatchNorms are folded away and it could be built
        (``sparse/fused.py``), as eager ops otherwise; the same numbers either way."""
        x = self.voxel_features(voxel_feats, subm, down, up)
        layers = self._folded_head()
        on_cpu = point_feats.device.type == "cpu" and point_feats.dtype == torch.float32
        if layers is not None and on_cpu and not torch.is_grad_enabled() and fused.enabled():
            try:
                return fused.point_head(
                    point_feats, point2voxel, x, self.in_mean, self.in_std, layers
                )
            except fused.FusedUnavailableError:
                pass
        point_x = x[point2voxel] + self.point_mlp(self.normalize(point_feats))
        return self.classifier(self.point_fuse(point_x))

    def _folded_head(self) -> list[tuple[Tensor, Tensor]] | None:
        """(weight, bias) of the point branch's four linears when it is exactly
        Linear-ReLU-Linear-ReLU / Linear-ReLU / Linear with BatchNorm folded (Identity),
        the shape the fused kernel computes; None otherwise."""
        chain = [m for m in (*self.point_mlp, *self.point_fuse) if not isinstance(m, nn.Identity)]
        kinds = [type(m) for m in chain]
        if kinds != [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]:
            return None
        linears = [m for m in chain if isinstance(m, nn.Linear)] + [self.classifier]
        if any(m.bias is None for m in linears):
            return None
        return [(m.weight, m.bias) for m in linears]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
