"""The benchmark end to end on a tiny setting: files and fields, resume, refusals (no gain
is checked: a tiny run's numbers mean nothing)."""

from __future__ import annotations

import json

import pytest
from training_hooks import BENCH_TINY

from xmodelkd_ros.evaluation.benchmark import main
from xmodelkd_ros.evaluation.cli import parse_seeds
from xmodelkd_ros.labels import CLASS_NAMES

TINY = ["--regimes", "1.0,0.5", *BENCH_TINY]


def test_tiny_benchmark_writes_every_field_and_resumes(tmp_path, capsys) -> None:
    out = tmp_path / "bench"
    assert main(["--out", str(out), "--parallel-baseline", *TINY]) == 0
    for name in ("benchmark.md", "benchmark.json", "benchmark.png"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "benchmark.json").read_text())
    m = doc["meta"]
    assert m["test_seeds"] == [9000] and m["seeds"] == [0] and m["label_fractions"] == [1.0, 0.5]
    assert len(m["commit"]) == 40 or m["commit"] == "unknown"
    assert m["command"].startswith("python -m xmodelkd_ros.evaluation.benchmark --out")
    assert set(doc["test_class_points"]) == set(CLASS_NAMES)
    assert sum(doc["test_class_points"].values()) > 10_000
    assert set(doc["regimes"]) == {"1", "0.5"}
    for r in doc["regimes"].values():
        assert r["test_scans"] == 2
        (s,) = r["per_seed"]
        assert set(s["miou"]) == {"teacher", "distilled", "baseline"}
        assert s["gain"] == pytest.approx(s["miou"]["distilled"] - s["miou"]["baseline"])
        assert set(s["validation_miou"]) == {"teacher", "distilled", "baseline"}
        assert s["train_s"] > 0 and s["score_s"] > 0
        g = r["gain"]
        assert g["ci95"][0] <= g["ci95"][1] and g["per_seed"] == [s["gain"]]
        assert set(g["per_class"]) == set(CLASS_NAMES)
        assert set(r["iou"]["teacher"]) == set(CLASS_NAMES)
        assert "mean" in r["teacher_gain"]
    md = (out / "benchmark.md").read_text()
    assert "50 % of the training scans labeled" in md and "95 % CI" in md
    assert "motorcyclist" in md
    # the controls trained as long as the distilled student's lineage (teacher 1 + student 1)
    assert m["epochs"] == {"teacher": 1, "distilled": 1, "distilled_lineage": 2, "controls": 2}
    assert "LiDAR-only baseline and self-training 2" in md
    # the half-labeled run really trained with half of its scans unlabeled
    recipe = json.loads((out / "labels0.5" / "seed0" / "recipe.json").read_text())
    assert recipe["data"]["label_fraction"] == 0.5
    # --parallel-baseline: the baseline trained in its own process, the pipeline read it back
    assert "baseline: already finished" in (out / "labels1" / "seed0" / "train.log").read_text()

    # resumable: a second run reuses every finished (fraction, seed), trains nothing
    logs = {p: p.read_text() for p in out.glob("labels*/seed*/train.log")}
    capsys.readouterr()
    assert main(["--out", str(out), *TINY]) == 0
    assert {p: p.read_text() for p in out.glob("labels*/seed*/train.log")} == logs
    assert "already done" in capsys.readouterr().err


def test_refuses_training_or_validation_streets_as_test_streets(tmp_path, capsys) -> None:
    assert main(["--out", str(tmp_path), "--test-seeds", "101", "--no-progress"]) == 2
    assert "reserved" in capsys.readouterr().err
    assert not (tmp_path / "labels1").exists()


def test_seed_lists() -> None:
    assert parse_seeds("9000-9002,9010") == [9000, 9001, 9002, 9010]
    with pytest.raises(Exception, match="bad seed"):
        parse_seeds("90a")


@pytest.mark.parametrize(
    "argv",
    [["--label-fraction", "1.5"], ["--regimes", "1.0,0"], ["--test-seeds", "x"],
     ["--cameras", "0"], ["--seeds", "0"]],
)  # fmt: skip
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv) -> None:
    try:
        code = main(["--out", str(tmp_path / "b"), "--no-progress", *argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "error" in err[-1] and "Traceback" not in "".join(err)
    assert not (tmp_path / "b" / "labels1").exists()


@pytest.mark.parametrize("tool", ["benchmark", "choose"])
def test_shared_options_parse_alike_and_help_states_no_false_default(tool) -> None:
    import importlib

    parser = importlib.import_module(f"xmodelkd_ros.evaluation.{tool}").build_parser()
    base = ["--candidate", "a=x", "--candidate", "b=y"] if tool == "choose" else []
    args = parser.parse_args([*base, "--test-seeds", "9000-9001,9005", "--beams", "16"])
    assert args.test_seeds == [9000, 9001, 9005] and args.beams == 16
    assert (args.test_scans, args.test_stride, args.bootstrap) == (8, 10, 2000)
    assert args.progress is True
    assert parser.parse_args([*base, "--no-progress"]).progress is False
    text = parser.format_help()
    assert "no tqdm progress bars" in text and "(default: True)" not in text
