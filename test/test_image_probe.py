"""The linear probe of frozen image features (``evaluation.image_probe``): the classifier
against data whose separability is known, its IoU against an independent count, the
feature extractors, and the CLI on a few rendered scans."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xmodelkd_ros.evaluation.image_probe import (
    PRETRAINED_WEIGHTS,
    ProbeScan,
    backbone_extractor,
    fit_probe,
    main,
    parse_features,
    probe_iou,
)
from xmodelkd_ros.evaluation.score import BenchmarkError
from xmodelkd_ros.nets.image_encoder import ImageEncoderConfig
from xmodelkd_ros.nets.student import StudentConfig
from xmodelkd_ros.nets.teacher import FusionTeacher, TeacherConfig
from xmodelkd_ros.training.stages.fusion import save_teacher


def blobs(n: int, classes: int, dims: int, spread: float, seed: int, draw: int = 0):
    """``n`` points per class around centres drawn with ``seed`` (well apart for a small
    spread), their scatter drawn with ``draw``."""
    centres = torch.randn(classes, dims, generator=torch.Generator().manual_seed(seed)) * 5.0
    y = torch.arange(classes).repeat_interleave(n)
    g = torch.Generator().manual_seed(1000 + draw)
    return centres[y] + spread * torch.randn(len(y), dims, generator=g), y


def test_separable_features_are_learned_and_noise_is_not():
    x, y = blobs(200, 4, 8, spread=0.5, seed=0)
    xe, ye = blobs(200, 4, 8, spread=0.5, seed=0, draw=1)  # the same classes, new points
    miou, _ = probe_iou(fit_probe(x, y, num_classes=4), xe, ye, num_classes=4)
    assert miou > 0.99
    noise = torch.randn(800, 8, generator=torch.Generator().manual_seed(1))
    miou_noise, _ = probe_iou(fit_probe(noise, y, num_classes=4), noise.flip(0), y, 4)
    assert miou_noise < 0.5


def test_the_probe_is_deterministic_and_standardises_with_its_training_statistics():
    x, y = blobs(50, 3, 5, spread=1.0, seed=2)
    a, b = fit_probe(x * 100 + 7, y, num_classes=3), fit_probe(x * 100 + 7, y, num_classes=3)
    assert torch.equal(a.linear.weight, b.linear.weight)
    # an affine change of every feature is undone by the standardisation
    c = fit_probe(x, y, num_classes=3)
    assert torch.equal(a.predict(x * 100 + 7), c.predict(x))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 5)), min_size=1, max_size=60))
def test_iou_counts_only_classes_of_the_ground_truth(pairs):
    """Independent count: per class present in the truth, |pred = c and y = c| over
    |pred = c or y = c|; a class only predicted is never averaged in."""
    y = torch.tensor([p[0] for p in pairs])
    pred = torch.tensor([p[1] for p in pairs])

    class Fixed:
        def predict(self, x):
            return pred

    miou, iou = probe_iou(Fixed(), torch.zeros(len(y), 1), y, num_classes=6)
    expect = {}
    for c in set(y.tolist()):
        inter = int(((pred == c) & (y == c)).sum())
        union = int(((pred == c) | (y == c)).sum())
        expect[c] = inter / union
        assert iou[c] == pytest.approx(expect[c])
    assert miou == pytest.approx(np.mean(list(expect.values())))
    assert all(np.isnan(iou[c]) for c in range(6) if c not in expect)


def scan() -> ProbeScan:
    g = torch.Generator().manual_seed(0)
    return ProbeScan(
        images=torch.rand(2, 3, 64, 96, generator=g),
        image_idx=torch.tensor([0, 0, 1, 1, 1]),
        uv=torch.tensor([[3.5, 2.5], [90.0, 60.0], [10.0, 10.0], [48.0, 32.0], [1.0, 63.0]]),
        labels=torch.tensor([0, 1, 2, 1, 0]),
    )


def test_rgb_features_are_the_pixel_colour_at_pixel_centres():
    s = scan()
    f = backbone_extractor("rgb")(s)
    # pixel (3, 2) of image 0: its centre is (3.5, 2.5); normalised as the backbone sees it
    assert torch.allclose(f[0], (s.images[0, :, 2, 3] - 0.5) / 0.5, atol=1e-6)


def test_backbone_features_random_by_seed_and_pretrained_differ():
    s = scan()
    r0a, r0b = backbone_extractor("random:0")(s), backbone_extractor("random:0")(s)
    r1, p = backbone_extractor("random:1")(s), backbone_extractor("pretrained")(s)
    assert r0a.shape == (5, 24 + 40 + 112 + 320)
    assert torch.equal(r0a, r0b)
    assert not torch.allclose(r0a, r1) and not torch.allclose(r0a, p)
    for bad in ("imagenet", "random:x"):
        with pytest.raises(BenchmarkError, match="unknown features"):
            backbone_extractor(bad)


def saved_teacher(path, pretrained: bool):
    """A small fusion teacher with an EfficientNet-Lite0 2D branch, saved as training saves
    one; its trunk holds the ImageNet weights when ``pretrained``."""
    image = ImageEncoderConfig(arch="efficientnet_lite0", out_channels=8, out_stride=8,
                               mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # fmt: skip
    torch.manual_seed(3)
    net = FusionTeacher(TeacherConfig(
        student=StudentConfig(num_classes=5, enc_widths=(8, 16), dec_widths=(16,)),
        image=image, contrast_dim=8,
    ))  # fmt: skip
    if pretrained:
        net.load_image_weights(PRETRAINED_WEIGHTS)
    save_teacher(net, path, {})
    return path


def test_a_teachers_trunk_is_read_as_its_checkpoint_holds_it(tmp_path):
    """Oracle: a teacher whose trunk is exactly the ImageNet one gives exactly the
    ``pretrained`` features; its head gives one map of its out_channels."""
    s = scan()
    path = saved_teacher(tmp_path / "teacher.pt", pretrained=True)
    assert torch.equal(backbone_extractor(f"trunk:{path}")(s), backbone_extractor("pretrained")(s))
    assert backbone_extractor(f"head:{path}")(s).shape == (5, 8)
    other = saved_teacher(tmp_path / "scratch.pt", pretrained=False)
    assert not torch.allclose(backbone_extractor(f"trunk:{other}")(s),
                              backbone_extractor("pretrained")(s))  # fmt: skip
    with pytest.raises(BenchmarkError, match="no teacher checkpoint"):
        backbone_extractor(f"trunk:{tmp_path / 'missing.pt'}")


def test_features_are_named_or_name_themselves():
    assert parse_features("pretrained, t0=trunk:/a/teacher.pt ,rgb") == [
        ("pretrained", "pretrained"), ("t0", "trunk:/a/teacher.pt"), ("rgb", "rgb")]
    path = "trunk:/runs/lr=0.1/teacher.pt"  # a path may hold '=': the first one ends the name
    assert parse_features(f"t={path}") == [("t", path)]
    with pytest.raises(BenchmarkError, match="distinct names"):
        parse_features("rgb,rgb")
    with pytest.raises(BenchmarkError, match="distinct names"):
        parse_features(" , ")


def test_cli_fits_and_scores_on_rendered_training_streets(tmp_path, capsys):
    out = tmp_path / "probe"
    rc = main(["--features", "rgb,random:0", "--train-streets", "20-21", "--train-scans", "2",
               "--small-streets", "20", "--small-scans", "1", "--eval-streets", "30",
               "--eval-scans", "1", "--max-pairs", "200", "--steps", "5", "--no-progress",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    doc = json.loads((out / "probe.json").read_text())
    assert set(doc["features"]) == {"rgb", "random:0"}
    assert doc["features"]["rgb"]["dims"] == 3
    assert doc["sets"]["train"] == {"split": "train", "seeds": "20-21", "scans": 2}
    assert doc["features"]["random:0"]["train"]["pairs"] <= 2 * 200
    assert 0.0 <= doc["features"]["rgb"]["train_small"]["miou"] <= 100.0
    assert "| random:0 | 496 |" in (out / "probe.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--eval-streets", "140"], "may not be used for train"),
    (["--eval-streets", "9001"], "may not be used for train"),
    (["--eval-streets", "11", "--small-streets", "11"], "overlap"),
])  # fmt: skip
def test_cli_refuses_held_out_or_overlapping_streets_in_one_line(tmp_path, capsys, args, message):
    assert main([*args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "probe.json").exists()
