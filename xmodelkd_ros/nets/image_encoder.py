"""The teacher's 2D branch: a ResNet encoder with an FPN-lite head, and point-to-pixel sampling.

Why it looks like this:

* The backbone is written here in plain PyTorch (torchvision is not a dependency) but keeps
  torchvision's parameter names and shapes (``conv1``, ``bn1``, ``layer1..4`` of BasicBlocks
  with ``conv1/bn1/conv2/bn2/downsample.0/downsample.1``), so ImageNet-pretrained ResNet-18/34
  weights saved from torchvision load with :func:`load_torchvision_weights` and no renaming.
* Per-point features need spatial detail (a 32x-downsampled map smears small objects), so
  the head fuses several stages into one map at stride 4 or 8: 1x1 lateral convs, bilinear
  upsampling, sum, then a 3x3 smoothing conv.
* The head (:class:`FpnHead`) is shared with the pretrained EfficientNet-Lite branch of
  :mod:`xmodelkd_ros.nets.image_efficientnet`; a backbone only says its stage widths and
  returns its four stage outputs. ``frozen_bn`` keeps the backbone's BatchNorm layers at
  their (pretrained) statistics and affine values while the rest trains.
* :func:`sample_point_features` reads that map at projected LiDAR points with
  ``grid_sample`` using the pixel-centre convention of :mod:`xmodelkd_ros.geometry`
  (pixel centres at integer + 0.5, the image spans ``[0, W] x [0, H]``), which is exactly
  ``align_corners=False`` with ``x_norm = 2 u / W - 1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Architecture presets: (stem width, stage widths, blocks per stage).
ARCHS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    "resnet18": (64, (64, 128, 256, 512), (2, 2, 2, 2)),
    "resnet34": (64, (64, 128, 256, 512), (3, 4, 6, 3)),
    # CPU training / tests: same topology and names, a quarter of the width, one block per stage.
    "tiny": (16, (16, 32, 64, 128), (1, 1, 1, 1)),
}

#: Output stride of layer1..layer4 (stem conv /2, max-pool /2, then layer2..4 each /2).
STAGE_STRIDES: tuple[int, ...] = (4, 8, 16, 32)


@dataclass(frozen=True)
class ImageEncoderConfig:
    """Hyper-parameters of :class:`ImageEncoder`."""

    arch: str = "tiny"
    #: Channels of the fused output map (the per-point 2D feature size).
    out_channels: int = 64
    #: Stride of the output map w.r.t. the input image: 4 or 8.
    out_stride: int = 8
    #: Which stages (1..4) feed the FPN; default: every stage at or coarser than out_stride.
    fpn_stages: tuple[int, ...] | None = None
    #: Images arrive as RGB in [0, 1] (what the batch collator gives) and are normalized
    #: inside with ``mean`` / ``std`` (ImageNet: what torchvision's pretrained weights
    #: expect). Set False to pass already-normalized images.
    normalize_input: bool = True
    mean: tuple[float, float, float] = field(default=(0.485, 0.456, 0.406))
    std: tuple[float, float, float] = field(default=(0.229, 0.224, 0.225))
    #: Keep the backbone's BatchNorm layers frozen: evaluation-mode statistics and no
    #: gradient for their scale and shift (the FPN head's BatchNorm still trains).
    frozen_bn: bool = False

    def stages(self) -> tuple[int, ...]:
        if self.fpn_stages is not None:
            return tuple(self.fpn_stages)
        return tuple(i + 1 for i, s in enumerate(STAGE_STRIDES) if s >= self.out_stride)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (two 3x3 convs, identity or 1x1-conv shortcut)."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetBackbone(nn.Module):
    """ResNet trunk without the classifier; returns the outputs of layer1..layer4."""

    def __init__(self, arch: str = "resnet18"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown image encoder arch {arch!r}; choose from {sorted(ARCHS)}")
        stem, widths, blocks = ARCHS[arch]
        self.widths = widths
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = stem
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if i == 0 else 2
            layer = nn.Sequential(
                *(BasicBlock(cin if j == 0 else width, width, stride if j == 0 else 1)
                  for j in range(n))
            )
            setattr(self, f"layer{i + 1}", layer)
            cin = width

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            outs.append(x)
        return outs


class FpnHead:
    """The FPN-lite head and the frozen-BatchNorm switch, mixed into an encoder ``nn.Module``.

    The encoder builds its backbone first, then calls :meth:`build_head` with the widths of
    its four stages (so the backbone's initialisation draws come first, as they always
    have), and implements :meth:`backbone` (images -> the four stage outputs, strides 4,
    8, 16, 32). Parameters whose names start with ``lateral.`` / ``smooth.`` are the head;
    every other parameter is the backbone's.
    """

    config: ImageEncoderConfig
    HEAD_PREFIXES = ("lateral.", "smooth.")

    def build_head(self, cfg: ImageEncoderConfig, widths: Sequence[int]) -> None:
        self.config = cfg
        if cfg.out_stride not in (4, 8):
            raise ValueError(f"out_stride must be 4 or 8, got {cfg.out_stride}")
        stages = cfg.stages()
        if not stages or any(s not in (1, 2, 3, 4) for s in stages):
            raise ValueError(f"fpn_stages must be a non-empty subset of 1..4, got {stages}")
        if min(STAGE_STRIDES[s - 1] for s in stages) > cfg.out_stride:
            raise ValueError(
                f"fpn_stages {stages} are all coarser than out_stride {cfg.out_stride}"
            )
        self.stages = stages
        # Not persistent: they are config, and keep the state_dict a torchvision superset.
        self.register_buffer(  # type: ignore[attr-defined]
            "input_mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(  # type: ignore[attr-defined]
            "input_std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False
        )
        self.lateral = nn.ModuleDict(
            {f"layer{s}": nn.Conv2d(widths[s - 1], cfg.out_channels, 1) for s in stages}
        )
        self.smooth = nn.Sequential(
            nn.Conv2d(cfg.out_channels, cfg.out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(cfg.out_channels),
            nn.ReLU(inplace=True),
        )
        if cfg.frozen_bn:
            for bn in self.backbone_batchnorms():
                for p in bn.parameters():
                    p.requires_grad_(False)

    @property
    def out_channels(self) -> int:
        return self.config.out_channels

    def backbone(self, images: Tensor) -> list[Tensor]:
        """Outputs of the four backbone stages (strides 4, 8, 16, 32)."""
        raise NotImplementedError

    def backbone_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of the backbone: everything but the FPN head."""
        return [(k, p) for k, p in self.named_parameters()  # type: ignore[attr-defined]
                if not k.startswith(self.HEAD_PREFIXES)]  # fmt: skip

    def backbone_batchnorms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        return [m for k, m in self.named_modules()  # type: ignore[attr-defined]
                if isinstance(m, nn.modules.batchnorm._BatchNorm)
                and not k.startswith(self.HEAD_PREFIXES)]  # fmt: skip

    def train(self, mode: bool = True) -> FpnHead:
        """``nn.Module.train``; with ``frozen_bn`` the backbone's BatchNorm layers stay in
        evaluation mode (their running statistics are neither used per batch nor updated)."""
        super().train(mode)  # type: ignore[misc]
        if self.config.frozen_bn:
            for bn in self.backbone_batchnorms():
                bn.eval()
        return self

    def normalize(self, images: Tensor) -> Tensor:
        """RGB in [0, 1] -> the backbone's input (``config.mean`` / ``config.std``), or the
        images as given when the config says they arrive normalised."""
        if not self.config.normalize_input:
            return images
        return (images - self.input_mean) / self.input_std  # type: ignore[attr-defined]

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
        images = self.normalize(images)
        feats = self.backbone(images)
        h, w = images.shape[-2:]
        s = self.config.out_stride
        # ceil: what the strided convs produce for sizes that are not multiples of s.
        size = (-(-h // s), -(-w // s))
        out = None
        for stage in self.stages:
            lat = self.lateral[f"layer{stage}"](feats[stage - 1])
            if lat.shape[-2:] != size:
                lat = F.interpolate(lat, size=size, mode="bilinear", align_corners=False)
            out = lat if out is None else out + lat
        return self.smooth(out)


class ImageEncoder(FpnHead, ResNetBackbone):
    """ResNet backbone + FPN-lite: images (B, 3, H, W) -> features (B, C, ~H/s, ~W/s).

    Input: RGB in [0, 1] (normalized inside, see ``ImageEncoderConfig.normalize_input``).

    Parameter names of the backbone are those of torchvision's ResNet (no prefix), the
    head lives under ``lateral.*`` and ``smooth.*``; so ``model.state_dict()`` restricted
    to backbone keys is a torchvision state_dict.
    """

    def __init__(self, config: ImageEncoderConfig | None = None):
        cfg = config or ImageEncoderConfig()
        ResNetBackbone.__init__(self, cfg.arch)
        self.build_head(cfg, self.widths)

    def backbone(self, images: Tensor) -> list[Tensor]:
        """Outputs of layer1..layer4 (strides 4, 8, 16, 32)."""
        return ResNetBackbone.forward(self, images)


def sample_point_features(
    feature_map: Tensor, image_idx: Tensor, uv: Tensor, image_size: Sequence[int]
) -> Tensor:
    """Bilinear per-point features (K, C) from ``feature_map`` (B, C, h, w).

    ``uv`` (K, 2) are pixel coordinates in the *original* image of size ``image_size =
    (H, W)``, pixel centres at integer + 0.5 (the convention of :mod:`xmodelkd_ros.geometry`).
    The feature map covers the same field of view at a coarser resolution, so the
    normalized coordinate is ``2 u / W - 1`` and ``align_corners=False`` puts feature cell
    ``j``'s centre at ``u = (j + 0.5) W / w``. Coordinates outside the image clamp to the
    border (points from the data pipeline are inside the image; the clamp only guards
    rounding at the edges).
    """
    if uv.ndim != 2 or uv.shape[1] != 2 or image_idx.shape != uv.shape[:1]:
        raise ValueError(
            f"expected uv (K, 2) and image_idx (K,), got {tuple(uv.shape)}, "
            f"{tuple(image_idx.shape)}"
        )
    H, W = int(image_size[0]), int(image_size[1])
    B, C = feature_map.shape[:2]
    K = uv.shape[0]
    if K == 0:
        return feature_map.new_zeros(0, C)
    if int(image_idx.min()) < 0 or int(image_idx.max()) >= B:
        raise IndexError(f"image_idx out of range for {B} images")
    uv = uv.to(feature_map.dtype)
    scale = uv.new_tensor([2.0 / W, 2.0 / H])
    grid = uv * scale - 1.0  # (K, 2) in [-1, 1], x first as grid_sample expects
    # One grid row per image: gather the points of image b into its own grid.
    out = feature_map.new_zeros(K, C)
    for b in torch.unique(image_idx).tolist():
        sel = (image_idx == b).nonzero(as_tuple=True)[0]
        g = grid[sel].view(1, 1, -1, 2)
        sampled = F.grid_sample(
            feature_map[b : b + 1], g, mode="bilinear", padding_mode="border",
            align_corners=False,
        )  # (1, C, 1, k)
        out = out.index_copy(0, sel, sampled[0, :, 0].t())
    return out


class WeightLoadError(ValueError):
    """Image weights do not fit the encoder (shape mismatch, missing or unexpected keys) or
    cannot be found."""


@dataclass
class LoadReport:
    """What a weight loader did; ``missing`` excludes the FPN head, ``ignored`` is the
    checkpoint's ImageNet classifier."""

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    ignored: list[str]

    def __str__(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors; missing backbone keys: {self.missing or 'none'}; "
            f"unexpected keys: {self.unexpected or 'none'}; ignored: {len(self.ignored)} "
            "(the ImageNet classifier)"
        )


def read_weights(path_or_state: str | Path | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """An image backbone's state dict from a file or a mapping (``state_dict`` wrappers and
    DDP's ``module.`` prefixes removed); a missing or unreadable file is one
    :class:`WeightLoadError` line, never torch's paragraph."""
    if not isinstance(path_or_state, (str, Path)):
        return _extract_state_dict(path_or_state)
    path = Path(path_or_state)
    if not path.is_file():
        raise WeightLoadError(f"image weights {path} not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise WeightLoadError(f"cannot read image weights {path}: {type(exc).__name__}") from exc
    return _extract_state_dict(raw)


def _extract_state_dict(obj: object) -> Mapping[str, Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightLoadError(f"expected a state_dict mapping, got {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        # DataParallel / DDP checkpoints prefix every key with "module.".
        k = key[len("module."):] if key.startswith("module.") else key
        out[k] = value
    return out


def _key_list(keys: list[str], limit: int = 8) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_torchvision_weights(
    model: ImageEncoder,
    path_or_state: str | Path | Mapping[str, Tensor],
    strict: bool = True,
) -> LoadReport:
    """Load a torchvision ResNet-18/34 state_dict (file path or mapping) into the backbone.

    Accepts a raw state_dict or ``{"state_dict": ...}``; ``fc.*`` (the ImageNet classifier)
    is ignored. A shape mismatch raises :class:`WeightLoadError` naming the key (e.g. a
    ResNet-34 file into a ResNet-18 model shows up as unexpected ``layer1.2.*`` keys, a
    ResNet-18 file into the ``tiny`` preset as a shape error). Missing or unexpected keys
    raise too, naming them, and leave the model untouched: a file that does not fit must
    not end as a silently random-initialised backbone. ``strict=False`` is the explicit
    opt-in to a partial load; the returned :class:`LoadReport` then says what was skipped.
    """
    state = read_weights(path_or_state)
    own = {
        k: v for k, v in model.state_dict().items()
        if not k.startswith(("lateral.", "smooth."))
    }
    ignored = sorted(k for k in state if k.startswith("fc."))
    incoming = {k: v for k, v in state.items() if not k.startswith("fc.")}
    unexpected = sorted(set(incoming) - set(own))
    missing = sorted(set(own) - set(incoming))
    loadable = {}
    for key in sorted(set(incoming) & set(own)):
        value = incoming[key]
        if not isinstance(value, Tensor):
            raise WeightLoadError(f"{key}: expected a tensor, got {type(value).__name__}")
        if value.shape != own[key].shape:
            raise WeightLoadError(
                f"shape mismatch for {key}: checkpoint {tuple(value.shape)}, "
                f"model {tuple(own[key].shape)} (arch {model.config.arch!r})"
            )
        loadable[key] = value
    report = LoadReport(sorted(loadable), missing, unexpected, ignored)
    if strict and (missing or unexpected):
        parts = [f"{len(keys)} {what} keys: {_key_list(keys)}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise WeightLoadError(
            f"image weights do not fit the {model.config.arch!r} encoder: " + "; ".join(parts)
        )
    model.load_state_dict(loadable, strict=False)
    return report
