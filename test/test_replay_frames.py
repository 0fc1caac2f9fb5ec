"""The replay's per-frame records and criteria: ``frames.jsonl`` through the live node
matches the schema and the offline evaluation's records scan for scan, and the criteria
table decides the exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xmodelkd_ros.sim import SimWorld, write_bag

    root = tmp_path_factory.mktemp("replay_frames")
    return write_bag(root, SimWorld(seed=11, beams=16, cameras=0), 3, progress=False)


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from xmodelkd_ros.replay import main

    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err.strip()


def test_criteria_the_replay_cannot_measure_are_bad_input(
    small_bag: Path, exported_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # fmt: skip
    """Checked before the node starts (no ROS needed): mIoU without ground truth, a
    fleet-only criterion, a class the model lacks."""
    for text, flags, match in (
        ("min_miou: 0.1\n", ["--no-labels"], "min_miou cannot be checked: the replay has no "
                                             "ground truth"),
        ("max_failed_bags: 0\n", [], "max_failed_bags cannot be checked"),
        ("min_class_iou: {cat: 0.1}\n", [], "does not have: cat"),
    ):  # fmt: skip
        (tmp_path / "c.yaml").write_text(text)
        code, _, err = _main(["--bag", str(small_bag), "--model", str(exported_model), *flags,
                              "--criteria", str(tmp_path / "c.yaml")], capsys)  # fmt: skip
        assert code == 2 and match in err and len(err.splitlines()) == 1, err


@pytest.mark.ros
@pytest.mark.slow
def test_replay_frames_equal_offline_records_and_criteria_gate(
    small_bag: Path, exported_model: Path, ros_domain: int, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    jsonschema = pytest.importorskip("jsonschema")
    from xmodelkd_ros.evaluation.fleet_bags import BagSpec
    from xmodelkd_ros.evaluation.fleet_worker import BagTask, ModelSpec, evaluate_bag

    crit = tmp_path / "criteria.yaml"
    crit.write_text("min_miou: 1.0\nmax_p95_latency_ms: 600000\nmax_dropped_fraction: 0\n"
                    "min_answered_fraction: 1.0\n")  # fmt: skip
    report = tmp_path / "report"
    code, out, err = _main(["--bag", str(small_bag), "--model", str(exported_model),
                            "--max-throughput", "--report", str(report), "--quiet",
                            "--domain-id", str(ros_domain), "--backend", "onnxruntime",
                            "--criteria", str(crit)], capsys)  # fmt: skip
    assert code == 1, err  # an untrained model misses mIoU 1.0; the rest is met
    lines = out.splitlines()
    assert lines[-1] == "criteria: FAIL (3/4 met)"
    assert any(ln.startswith("min_miou") and ln.endswith("FAIL") for ln in lines)
    assert "## Criteria: FAIL" in (report / "report.md").read_text()

    records = [json.loads(ln) for ln in (report / "frames.jsonl").read_text().splitlines()]
    validator = jsonschema.Draft202012Validator(
        json.loads((ROOT / "schema" / "frames.schema.json").read_text()))
    for rec in records:
        validator.validate(rec)
    assert [r["index"] for r in records] == [0, 1, 2]
    assert all(r["answered"] and not r["dropped"] and r["latency_ms"]["publish_to_output"] > 0
               for r in records)  # fmt: skip
    offline = evaluate_bag(BagTask(BagSpec("b", str(small_bag), "rosbag2"),
                                   ModelSpec(str(exported_model), "onnxruntime")))["records"]
    keys = ("index", "stamp", "points", "labeled_points", "scored_points", "unscored_points",
            "classes", "miou")  # fmt: skip
    assert [{k: r[k] for k in keys} for r in records] == [{k: r[k] for k in keys}
                                                         for r in offline]  # fmt: skip
    doc = json.loads((report / "report.json").read_text())
    assert "frames" not in doc and doc["criteria"][0]["criterion"] == "min_miou"
