"""The cross-sensor table: its bookkeeping on hand-made confusions, the diagnosis on
rendered rigs, and the command end to end on tiny checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xmodelkd_ros.evaluation import cross_sensor
from xmodelkd_ros.evaluation.cross_sensor_report import drop_difference, summarize
from xmodelkd_ros.evaluation.score import BenchmarkError, held_out_scans
from xmodelkd_ros.evaluation.sensor_stats import compare, ks_distance, rig_stats
from xmodelkd_ros.evaluation.stats import miou_from_confusion
from xmodelkd_ros.nets.inputs import default_grid
from xmodelkd_ros.sim.fixtures import random_student_checkpoint

K = 20  # label ids 0..19


def _cms(rng: np.random.Generator, S: int, N: int, noise: float) -> np.ndarray:
    """(S, N, K, K) confusions: mostly diagonal, ``noise`` of each row spread at random."""
    eye = np.eye(K)[None, None] * 100
    off = rng.integers(0, 100, (S, N, K, K)) * noise
    cm = (eye + off).astype(np.int64)
    cm[..., 0, :] = 0  # unlabeled ground truth is never counted
    return cm


def test_summary_pairs_rigs_scan_by_scan() -> None:
    rng = np.random.default_rng(0)
    ref_a, ref_b = _cms(rng, 2, 5, 0.1), _cms(rng, 2, 5, 0.2)
    cms = {"distilled": {"32": ref_a, "16": ref_a.copy(), "64": _cms(rng, 2, 5, 0.5)},
           "baseline": {"32": ref_b, "16": ref_b.copy(), "64": _cms(rng, 2, 5, 0.5)}}
    doc = summarize(cms, "32", reps=200)
    assert list(doc) == ["32", "16", "64"] and "drop" not in doc["32"]["models"]["distilled"]
    same = doc["16"]["models"]["distilled"]["drop"]
    assert same["mean"] == 0 and same["ci95"] == [0, 0]  # identical scans: no drop at all
    d64 = doc["64"]["models"]["baseline"]["drop"]["mean"]
    want = (miou_from_confusion(cms["baseline"]["64"].sum(1))
            - miou_from_confusion(ref_b.sum(1))).mean()
    assert d64 == pytest.approx(want) and d64 < 0
    diff = doc["64"]["drop_difference"]
    a = doc["64"]["models"]["distilled"]["drop"]["mean"]
    assert diff["mean"] == pytest.approx(a - d64)
    assert diff["ci95"][0] <= diff["mean"] <= diff["ci95"][1]
    assert drop_difference(ref_a, ref_a, ref_b, ref_b, 50)["mean"] == 0


def test_ks_distance() -> None:
    a = np.arange(100.0)
    assert ks_distance(a, a) == 0 and ks_distance(a, a + 1000) == 1
    assert ks_distance(a, a + 50) == pytest.approx(0.5)


def test_diagnosis_names_the_differences_of_a_rig() -> None:
    grid = default_grid(0.25)
    stats = {r: rig_stats(held_out_scans([9068], 1, 10, r, 0, (1, 1)), grid)
             for r in ("32", "64", "32-high", "32-pitch")}  # fmt: skip
    notes = compare(stats, "32")
    assert notes["32"] == [] and stats["64"]["rings"] == 64 and stats["32"]["rings"] == 32
    assert any("vertical extent" in n for n in notes["64"])
    assert any("density" in n for n in notes["64"])
    assert any("mounting height" in n for n in notes["32-high"])
    assert stats["32-high"]["ground_height_m"] == pytest.approx(2.2, abs=0.05)
    assert any("pitch" in n for n in notes["32-pitch"])
    assert stats["32-pitch"]["ground_tilt_deg"] == pytest.approx(4.0, abs=0.3)


def _checkpoint(path, seed: int) -> None:
    from xmodelkd_ros.nets.checkpoint import save_student

    ckpt = random_student_checkpoint(seed=seed, grid=default_grid(0.25),
                                     enc_widths=(8, 16), dec_widths=(8,))  # fmt: skip
    ckpt.provenance["recipe"] = {"data": {"dataset": "synthetic", "rigs": []}}
    save_student(ckpt, path)


def test_the_command_end_to_end(tmp_path, one_thread) -> None:
    run = tmp_path / "bench" / "labels1" / "seed0"
    run.mkdir(parents=True)
    _checkpoint(run / "student.pt", 0)
    _checkpoint(run / "baseline.pt", 1)
    out = tmp_path / "out"
    rc = cross_sensor.main(["--runs", str(tmp_path / "bench"), "--rigs", "16,32",
                            "--test-seeds", "9068", "--test-scans", "1", "--out", str(out),
                            "--bootstrap", "50", "--no-progress"])  # fmt: skip
    assert rc == 0
    doc = json.loads((out / "cross_sensor.json").read_text())
    assert doc["meta"]["reference"] == "32" and list(doc["rigs"]) == ["32", "16"]
    assert doc["meta"]["trained_on"]["distilled"] == [["32"]]
    m16 = doc["rigs"]["16"]["models"]["distilled"]
    m32 = doc["rigs"]["32"]["models"]["distilled"]
    assert m16["drop"]["mean"] == pytest.approx(m16["mean"] - m32["mean"])
    assert doc["diagnosis"]["16"]["rings"] == 16
    md = (out / "cross_sensor.md").read_text()
    assert "One training seed" in md and "| 16 | 16 beams" in md
    assert "Where the drop comes from" in md
    scores = np.load(out / "cross_sensor_scores.npz")
    assert scores["baseline/16"].shape[:2] == (1, 1)


def test_align_adds_a_row_for_each_rig_mounted_otherwise(tmp_path, one_thread) -> None:
    _checkpoint(tmp_path / "student.pt", 0)
    out = tmp_path / "out"
    rc = cross_sensor.main(["--distilled", str(tmp_path / "student.pt"), "--rigs",
                            "16,32,32-high", "--align", "--test-seeds", "9068", "--test-scans",
                            "1", "--out", str(out), "--bootstrap", "20",
                            "--no-progress"])  # fmt: skip
    assert rc == 0
    doc = json.loads((out / "cross_sensor.json").read_text())
    assert list(doc["rigs"]) == ["32", "16", "32-high", "32-high+aligned"]
    assert doc["meta"]["aligned"] == ["32-high+aligned"]  # 16 sits at the trained mount
    d = doc["diagnosis"]
    assert d["32-high"]["ground_height_m"] == pytest.approx(2.2, abs=0.05)
    assert d["32-high+aligned"]["ground_height_m"] == pytest.approx(1.73, abs=0.05)
    assert "moved to 32's mount" in (out / "cross_sensor.md").read_text()
    scans = held_out_scans([9068], 1, 10, "32-high", 0, (1, 1))
    moved = cross_sensor.aligned_scans(scans, "32-high", "32")
    np.testing.assert_allclose(moved[0].points[:, 2], scans[0].points[:, 2] + 2.2 - 1.73,
                               atol=1e-5)  # fmt: skip
    np.testing.assert_array_equal(moved[0].labels, scans[0].labels)


def test_bad_inputs_are_one_line_errors(tmp_path, capsys) -> None:
    base = ["--test-seeds", "9068", "--out", str(tmp_path / "o"), "--no-progress"]
    assert cross_sensor.main(["--runs", str(tmp_path), *base]) == 2
    assert "no student.pt / baseline.pt" in capsys.readouterr().err
    _checkpoint(tmp_path / "student.pt", 0)
    assert cross_sensor.main(["--distilled", str(tmp_path / "student.pt"), "--rigs", "99",
                              *base]) == 2  # fmt: skip
    assert "unknown LiDAR rig" in capsys.readouterr().err
    assert cross_sensor.main(["--distilled", str(tmp_path / "student.pt"),
                              "--test-seeds", "5", "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "may not be used for test" in capsys.readouterr().err
    ckpt = str(tmp_path / "student.pt")
    assert cross_sensor.main(["--distilled", ckpt, "--split", "val", "--test-seeds", "9068",
                              "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "may not be used for val" in capsys.readouterr().err
    assert cross_sensor.main(["--distilled", ckpt, *base, "--registered", "cross_sensor_v1"]) == 2
    assert "not reserved for cross_sensor_v1 (9068: cross_sensor_pilot)" in capsys.readouterr().err
    with pytest.raises(BenchmarkError, match="one checkpoint per seed"):
        args = cross_sensor.build_parser().parse_args(
            ["--distilled", str(tmp_path / "student.pt"), "--baseline",
             str(tmp_path / "student.pt"), str(tmp_path / "student.pt"), *base])  # fmt: skip
        args.runs = []
        cross_sensor.find_checkpoints(args)
