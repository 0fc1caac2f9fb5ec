"""The benchmark's extra arms end to end on a tiny setting: the self-training control and
the joint student are trained after the pipeline, scored, paired with the baseline, and the
multi-view share is reported (files and fields only: a tiny run's numbers mean nothing)."""

from __future__ import annotations

import argparse
import json
import re

import pytest
from training_hooks import BENCH_TINY

from xmodelkd_ros.evaluation.arms import parse_arms
from xmodelkd_ros.evaluation.benchmark import main

TINY = ["--label-fraction", "0.5", *BENCH_TINY,
        "data.temporal_views=1", "loss.selftrain.confidence=0.0"]  # fmt: skip


def test_arms_are_trained_scored_and_paired(tmp_path) -> None:
    out = tmp_path / "bench"
    assert main(["--out", str(out), "--arms", "selftrain,joint", *TINY]) == 0
    run = out / "labels0.5" / "seed0"
    assert (run / "selftrain.pt").is_file() and (run / "joint.pt").is_file()
    doc = json.loads((out / "benchmark.json").read_text())
    assert doc["meta"]["arms"] == ["selftrain", "joint"]
    regime = doc["method"]["0.5"]
    (share,) = regime["multiview_share"]
    assert 0.0 < share <= 1.0  # temporal views on: logged by the teacher stage
    for arm in ("selftrain", "joint"):
        r = regime["arms"][arm]
        base = doc["regimes"]["0.5"]["miou"]["baseline"]
        dist = doc["regimes"]["0.5"]["miou"]["distilled"]
        assert r["gain_vs_baseline"]["mean"] == pytest.approx(r["miou"] - base)
        assert r["distilled_minus_arm"]["mean"] == pytest.approx(dist - r["miou"])
        assert r["gain_vs_baseline"]["ci95"][0] <= r["gain_vs_baseline"]["ci95"][1]
        # the arm's own validation mIoU (what its settings are chosen by), from train.log
        (val,) = r["validation_miou"]
        logged = re.findall(rf"^{arm}: val mIoU ([0-9.]+)", (run / "train.log").read_text(),
                            flags=re.M)  # fmt: skip
        assert logged and val == pytest.approx(float(logged[-1]) / 100)
    md = (out / "benchmark.md").read_text()
    assert "## Method arms" in md and "| selftrain |" in md and "| joint |" in md


def test_arm_names_are_checked() -> None:
    assert parse_arms("selftrain, joint") == ["selftrain", "joint"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown arm"):
        parse_arms("selftrain,teacher")
