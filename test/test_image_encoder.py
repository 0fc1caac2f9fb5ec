"""Image encoder: torchvision-compatible names, weight loading, FPN output, pixel sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmodelkd_ros.nets.image_encoder import (
    ImageEncoder,
    ImageEncoderConfig,
    ResNetBackbone,
    WeightLoadError,
    load_torchvision_weights,
    sample_point_features,
)

# From the published ResNet-18 architecture (He et al. 2016; torchvision.models.resnet18).
RESNET18_SHAPES = {
    "conv1.weight": (64, 3, 7, 7),
    "bn1.weight": (64,),
    "bn1.running_var": (64,),
    "bn1.num_batches_tracked": (),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer1.1.bn2.bias": (64,),
    "layer2.0.conv1.weight": (128, 64, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer2.0.downsample.1.running_mean": (128,),
    "layer2.1.conv2.weight": (128, 128, 3, 3),
    "layer3.0.downsample.0.weight": (256, 128, 1, 1),
    "layer3.1.conv2.weight": (256, 256, 3, 3),
    "layer4.0.conv1.weight": (512, 256, 3, 3),
    "layer4.0.downsample.0.weight": (512, 256, 1, 1),
    "layer4.1.bn2.weight": (512,),
}
# torchvision's resnet18 / resnet34 have 11,689,512 / 21,797,672 parameters including the
# 512 -> 1000 classifier (513,000 parameters).
RESNET18_BACKBONE_PARAMS = 11_689_512 - 513_000
RESNET34_BACKBONE_PARAMS = 21_797_672 - 513_000


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_resnet18_names_and_shapes_match_torchvision():
    state = ResNetBackbone("resnet18").state_dict()
    for key, shape in RESNET18_SHAPES.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    # torchvision's state_dict has 122 entries, two of them fc.*.
    assert len(state) == 120
    assert "layer1.0.downsample.0.weight" not in state
    n = sum(p.numel() for p in ResNetBackbone("resnet18").parameters())
    assert n == RESNET18_BACKBONE_PARAMS
    n34 = sum(p.numel() for p in ResNetBackbone("resnet34").parameters())
    assert n34 == RESNET34_BACKBONE_PARAMS
    # The encoder adds its head under its own prefixes, the backbone names stay flat.
    enc = ImageEncoder(ImageEncoderConfig(arch="resnet18")).state_dict()
    assert set(state) == {k for k in enc if not k.startswith(("lateral.", "smooth."))}


def _fake_torchvision_state(arch: str) -> dict[str, torch.Tensor]:
    state = {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v
             for k, v in ResNetBackbone(arch).state_dict().items()}
    state["fc.weight"] = torch.randn(1000, ResNetBackbone(arch).widths[-1])
    state["fc.bias"] = torch.randn(1000)
    return state


def test_load_round_trip_from_file_and_mapping(tmp_path):
    state = _fake_torchvision_state("tiny")
    path = tmp_path / "resnet.pth"
    torch.save({"state_dict": state}, path)
    model = ImageEncoder(ImageEncoderConfig(arch="tiny"))
    report = load_torchvision_weights(model, path)
    assert report.missing == [] and report.unexpected == []
    assert report.ignored == ["fc.bias", "fc.weight"]
    loaded = model.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)
    # A raw mapping works too, and a model's own backbone weights round-trip.
    other = ImageEncoder(ImageEncoderConfig(arch="tiny"))
    load_torchvision_weights(other, {k: v for k, v in loaded.items()
                                     if not k.startswith(("lateral.", "smooth."))})
    for key in state:
        if not key.startswith("fc."):
            torch.testing.assert_close(other.state_dict()[key], loaded[key], rtol=0, atol=0)


def test_load_reports_missing_unexpected_and_names_shape_mismatch():
    state = _fake_torchvision_state("tiny")
    state.pop("layer4.0.bn2.weight")
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    model = ImageEncoder(ImageEncoderConfig(arch="tiny"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # Strict by default: the error names both kinds of keys and the model is untouched.
    with pytest.raises(WeightLoadError) as exc:
        load_torchvision_weights(model, state)
    msg = str(exc.value)
    assert "1 missing keys: layer4.0.bn2.weight" in msg
    assert "1 unexpected keys: layer5.0.conv1.weight" in msg
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)
    # A partial load is an explicit opt-in, and its report says what was skipped.
    report = load_torchvision_weights(model, state, strict=False)
    assert report.missing == ["layer4.0.bn2.weight"]
    assert report.unexpected == ["layer5.0.conv1.weight"]
    assert "layer4.0.bn2.weight" in str(report)
    # Long key lists are cut, with the count.
    many = {f"layer9.{i}.weight": torch.zeros(1) for i in range(20)}
    with pytest.raises(WeightLoadError, match=r"20 unexpected keys: .*\(\+12 more\)"):
        load_torchvision_weights(model, {**_fake_torchvision_state("tiny"), **many})
    bad = _fake_torchvision_state("tiny")
    bad["layer2.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(WeightLoadError, match=r"layer2\.0\.conv1\.weight"):
        load_torchvision_weights(model, bad)
    with pytest.raises(WeightLoadError, match="mapping"):
        load_torchvision_weights(model, {"state_dict": [1, 2]})
    with pytest.raises(WeightLoadError, match="not found"):
        load_torchvision_weights(model, "/nonexistent/resnet.pth")


def test_unreadable_weights_file_is_one_line(tmp_path):
    model = ImageEncoder(ImageEncoderConfig(arch="tiny"))
    corrupt = tmp_path / "resnet.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightLoadError, match=r"^cannot read image weights .*resnet\.pth: ") as e:
        load_torchvision_weights(model, corrupt)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("stride", [4, 8])
@pytest.mark.parametrize("size", [(64, 96), (65, 97)])
def test_encoder_output_shape(stride, size):
    model = ImageEncoder(ImageEncoderConfig(arch="tiny", out_channels=24, out_stride=stride))
    out = model(torch.randn(2, 3, *size))
    h, w = size
    assert out.shape == (2, 24, -(-h // stride), -(-w // stride))
    assert model.stages == ((1, 2, 3, 4) if stride == 4 else (2, 3, 4))
    with pytest.raises(ValueError, match="out_stride"):
        ImageEncoder(ImageEncoderConfig(out_stride=16))


def test_encoder_normalizes_unit_range_images_inside():
    cfg = ImageEncoderConfig(arch="tiny", out_channels=8)
    raw = ImageEncoder(cfg).eval()
    pre = ImageEncoder(ImageEncoderConfig(arch="tiny", out_channels=8, normalize_input=False))
    pre.load_state_dict(raw.state_dict())
    pre.eval()
    images = torch.rand(1, 3, 32, 48)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        torch.testing.assert_close(raw(images), pre((images - mean) / std))
    assert not any(k.startswith("input_") for k in raw.state_dict())


def _bilinear_oracle(fmap: np.ndarray, u: float, v: float, H: int, W: int) -> np.ndarray:
    """Hand-written bilinear interpolation: feature cell j's centre sits at (j + 0.5) W / w."""
    _, h, w = fmap.shape
    x = min(max(u * w / W - 0.5, 0.0), w - 1.0)
    y = min(max(v * h / H - 0.5, 0.0), h - 1.0)
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    ax, ay = x - x0, y - y0
    return ((1 - ay) * ((1 - ax) * fmap[:, y0, x0] + ax * fmap[:, y0, x1])
            + ay * ((1 - ax) * fmap[:, y1, x0] + ax * fmap[:, y1, x1]))


def test_sampling_matches_bilinear_oracle():
    rng = np.random.default_rng(0)
    H, W = 64, 96
    fmap = torch.randn(3, 5, 8, 12, dtype=torch.float64)
    K = 200
    uv = np.stack([rng.uniform(0, W, K), rng.uniform(0, H, K)], 1)
    uv[:4] = [[0.0, 0.0], [W, H], [0.3, H - 0.2], [W / 2, H / 2]]  # corners and centre
    img = rng.integers(0, 3, K)
    out = sample_point_features(fmap, torch.as_tensor(img), torch.as_tensor(uv), (H, W))
    expect = np.stack([_bilinear_oracle(fmap[b].numpy(), u, v, H, W)
                       for b, (u, v) in zip(img, uv, strict=True)])
    np.testing.assert_allclose(out.numpy(), expect, rtol=1e-10, atol=1e-10)
    # A point at the centre of a feature cell reads that cell exactly.
    u = (np.array([3, 7]) + 0.5) * W / 12
    v = (np.array([2, 5]) + 0.5) * H / 8
    exact = sample_point_features(
        fmap, torch.tensor([1, 2]), torch.as_tensor(np.stack([u, v], 1)), (H, W)
    )
    torch.testing.assert_close(exact, torch.stack([fmap[1, :, 2, 3], fmap[2, :, 5, 7]]))


def test_sampling_empty_and_gradient():
    fmap = torch.randn(2, 4, 8, 12, requires_grad=True)
    empty = sample_point_features(fmap, torch.zeros(0, dtype=torch.long), torch.zeros(0, 2),
                                  (64, 96))
    assert empty.shape == (0, 4)
    out = sample_point_features(fmap, torch.tensor([0, 1]), torch.tensor([[10.0, 5.0],
                                                                          [50.0, 40.0]]), (64, 96))
    out.sum().backward()
    assert fmap.grad is not None and fmap.grad[0].abs().sum() > 0 and fmap.grad[1].abs().sum() > 0
    with pytest.raises(IndexError):
        sample_point_features(fmap, torch.tensor([2]), torch.tensor([[1.0, 1.0]]), (64, 96))
