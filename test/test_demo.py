"""The README's demo: smoke run end to end, and a failing stage ends it with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def test_failing_stage_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad training override stops the demo at the train stage (no ROS needed)."""
    from xmodelkd_ros import demo

    monkeypatch.setattr(demo.Demo, "check_env", lambda self: None)
    monkeypatch.setitem(demo.SCHEDULES, "smoke", [*demo.SCHEDULES["smoke"], "optim.lrr=1"])
    code = demo.main(["--smoke", "--out", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    expected = "demo: FAILED at stage train: training: unknown recipe key 'optim.lrr'"
    assert err[-1].startswith(expected)
    assert not (tmp_path / "summary.json").exists()


def test_paired_gain_against_the_training_metric() -> None:
    """The held-out gain and its per-scan spread, checked against ``seg_metrics`` (the
    training mIoU) computed scan by scan; scans that all agree give a zero-width interval."""
    from xmodelkd_ros.demo import paired_gain
    from xmodelkd_ros.training.metrics import seg_metrics

    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(5)]
    a = [rng.integers(0, 50, (5, 5)) * np.eye(5, dtype=np.int64) * 3 + rng.integers(0, 9, (5, 5))
         for _ in range(12)]  # fmt: skip
    b = [rng.integers(0, 30, (5, 5)) for _ in range(12)]
    g = paired_gain(a, b, n_boot=500)
    pooled = seg_metrics(sum(a), names).miou - seg_metrics(sum(b), names).miou
    assert g["gain"] == pytest.approx(pooled, abs=1e-12)
    per_scan = [seg_metrics(x, names).miou - seg_metrics(y, names).miou
                for x, y in zip(a, b, strict=True)]  # fmt: skip
    assert g["per_scan_mean"] == pytest.approx(np.mean(per_scan), abs=1e-12)
    assert g["per_scan_wins"] == sum(d > 0 for d in per_scan) and g["scans"] == 12
    lo, hi = g["ci95"]
    assert lo < pooled < hi  # a spread over distinct scans brackets the pooled gain
    # every scan identical: every resample has the same pooled confusion -> no spread
    same = paired_gain([a[0]] * 6, [b[0]] * 6, n_boot=200)
    assert same["ci95"] == pytest.approx([same["gain"], same["gain"]], abs=1e-12)
    assert paired_gain(a, a)["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="same scans"):
        paired_gain(a, b[:5])


def test_summary_names_the_benchmark_and_the_spread() -> None:
    from xmodelkd_ros.demo import BENCHMARK, format_summary

    s = {"size": "full", "seed": 0, "miou_validation": {"baseline": 0.4, "distilled": 0.42},
         "epochs": {"teacher": 16, "distilled": 40, "baseline": 40},
         "miou_heldout_offline": {"baseline": 0.40, "distilled": 0.43},
         "heldout_gain": {"gain": 0.03, "ci95": [-0.01, 0.06], "per_scan_mean": 0.025,
                          "per_scan_wins": 20, "scans": 30},
         "miou_heldout_node": 0.43, "replay_mode": "rate 1",
         "latency_ms": {"p50": 100.0, "p95": 120.0}, "node_total_ms": {"p50": 90.0},
         "scans": {"published": 30, "received": 30, "dropped": 0, "late": 0},
         "paths": {}, "timings_s": {"total": 1.0}}  # fmt: skip
    text = format_summary(s)
    assert "**+3.00 mIoU** (95% interval over its 30 scans: -1.00 to +6.00" in text
    assert "distilled better on 20/30" in text and BENCHMARK in text
    assert BENCHMARK == "python -m xmodelkd_ros.evaluation.benchmark"
    # both students are named with the epochs behind them (the baseline as long as the lineage)
    assert "| baseline (LiDAR only, 40 epochs) | 40.00 | 40.00 |" in text
    assert "| distilled (from camera+LiDAR teacher, 40 epochs) | 42.00 | 43.00 |" in text


def test_heldout_bag_is_regenerated_when_made_with_other_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same size and seed: reused. Other seed or size, or no record (an older demo): made
    again, and the record follows."""
    import xmodelkd_ros.sim.__main__ as sim_cli
    from xmodelkd_ros import demo

    made: list[list[str]] = []

    def fake_sim(argv: list[str]) -> int:  # writes what a bag dir needs to be "there"
        made.append(argv)
        out = Path(argv[argv.index("--out") + 1]) / "bag"
        out.mkdir(parents=True)
        (out / "metadata.yaml").write_text("x")
        return 0

    monkeypatch.setattr(sim_cli, "main", fake_sim)

    def bag(smoke: bool, seed: int) -> Path:
        return demo.Demo(tmp_path, smoke, seed, []).held_out_bag()

    def seed_of(argv: list[str]) -> int:
        return int(argv[argv.index("--seed") + 1])

    bag(True, 0)
    assert len(made) == 1 and seed_of(made[0]) == demo.HELD_OUT_WORLD
    bag(True, 0)
    assert len(made) == 1  # reused
    bag(True, 3)
    assert len(made) == 2 and seed_of(made[1]) == demo.HELD_OUT_WORLD + 3
    bag(False, 3)
    assert len(made) == 3 and made[2][made[2].index("--scans") + 1] == "30"
    record = json.loads((tmp_path / "heldout" / demo.BAG_SETTINGS).read_text())
    assert record == {**demo.BAGS["full"], "world_seed": demo.HELD_OUT_WORLD + 3}
    (tmp_path / "heldout" / demo.BAG_SETTINGS).unlink()
    bag(False, 3)
    assert len(made) == 4


@pytest.mark.ros
@pytest.mark.slow
def test_smoke_demo(tmp_path: Path, ros_env: dict[str, str]) -> None:
    """``python -m xmodelkd_ros.demo --smoke``: every stage, then the summary (~1 min)."""
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "xmodelkd_ros.demo", "--smoke", "--out", str(out),
         "--domain-id", ros_env["ROS_DOMAIN_ID"]],
        env=ros_env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "demo summary" in proc.stdout and "held-out bag mIoU" in proc.stdout
    s = json.loads((out / "summary.json").read_text())
    assert set(s["miou_validation"]) >= {"baseline", "distilled"}
    # smoke: teacher 2 + student 2 epochs, so the baseline trains the lineage's 4
    assert s["epochs"] == {"teacher": 2, "distilled": 4, "baseline": 4}
    assert set(s["miou_heldout_offline"]) == {"baseline", "distilled"}
    g = s["heldout_gain"]
    assert g["scans"] == 4 and g["ci95"][0] <= g["ci95"][1]
    off = s["miou_heldout_offline"]
    assert g["gain"] == pytest.approx(off["distilled"] - off["baseline"], abs=1e-9)
    assert "python -m xmodelkd_ros.evaluation.benchmark" in proc.stdout
    assert (out / "heldout" / "bag_settings.json").is_file()
    sc = s["scans"]
    assert sc["published"] == 4 and sc["received"] + sc["dropped"] == 4 and sc["received"] >= 1
    assert s["latency_ms"]["p50"] > 0 and "p50" in s["node_total_ms"]
    for key in ("model", "baseline_model", "training_report", "replay_report", "bag"):
        assert Path(s["paths"][key]).exists(), key
    assert (Path(s["paths"]["model"]) / "model.json").is_file()
    assert set(s["timings_s"]) >= {"setup", "bag", "train", "export", "offline", "replay"}
