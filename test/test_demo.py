"""The README's demo: smoke run end to end, and a failing stage ends it with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    assert err[-1].startswith("demo: FAILED at stage train: xmodelkd_ros.training.train exited")
    assert not (tmp_path / "summary.json").exists()


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
    assert set(s["miou_heldout_offline"]) == {"baseline", "distilled"}
    sc = s["scans"]
    assert sc["published"] == 4 and sc["received"] + sc["dropped"] == 4 and sc["received"] >= 1
    assert s["latency_ms"]["p50"] > 0 and "p50" in s["node_total_ms"]
    for key in ("model", "baseline_model", "training_report", "replay_report", "bag"):
        assert Path(s["paths"][key]).exists(), key
    assert (Path(s["paths"]["model"]) / "model.json").is_file()
    assert set(s["timings_s"]) >= {"setup", "bag", "train", "export", "offline", "replay"}
