"""``evaluation.compare``: named networks scored on real simulated streets against an
independent mIoU, pairs on the seeds both networks have, a teacher scored with its
cameras, and the one-line refusals."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scoring_oracle import brute_miou, tiny_student
from training_hooks import TINY

from xmodelkd_ros.evaluation.compare import main, parse_net, parse_pair
from xmodelkd_ros.evaluation.score import held_out_scans, score_teacher
from xmodelkd_ros.evaluation.stats import miou_from_confusion
from xmodelkd_ros.training.recipe import load_recipe

STREETS = [
    "--split",
    "val",
    "--streets",
    "104",
    "--scans",
    "1",
    "--bootstrap",
    "50",
    "--no-progress",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """plain/seed{0,1}/student.pt, road/seed0/student.pt only (seed 1 unfinished)."""
    root = tmp_path_factory.mktemp("runs")
    for s in (0, 1):
        tiny_student(root / "plain" / f"seed{s}" / "student.pt", 20 + s)
    tiny_student(root / "road" / "seed0" / "student.pt", 30, road_bias=50.0)
    return root


def test_networks_and_pairs_against_an_independent_miou(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    code = main(
        [
            "--net",
            f"plain={runs}/plain/seed{{seed}}/student.pt",
            "--net",
            f"road={runs}/road/seed{{seed}}/student.pt",
            "--pair",
            "road:plain",
            "--seeds",
            "0-1",
            "--out",
            str(out),
            *STREETS,
        ]
    )
    assert code == 0
    doc = json.loads((out / "compare.json").read_text())
    for name, seeds in (("plain", (0, 1)), ("road", (0,))):
        got = doc["nets"][name]["miou"]
        assert list(got) == [str(s) for s in seeds]
        for s in seeds:
            want = brute_miou(runs / name / f"seed{s}" / "student.pt", [104], "val")
            assert got[str(s)] == pytest.approx(want, abs=1e-8)
    assert doc["nets"]["road"]["missing_seeds"] == [1]
    pair = doc["pairs"]["road - plain"]
    assert pair["seeds"] == [0]  # only the seed both have
    want = doc["nets"]["road"]["miou"]["0"] - doc["nets"]["plain"]["miou"]["0"]
    assert pair["per_seed"] == pytest.approx([want]) and pair["mean"] == pytest.approx(want)
    assert pair["ci95"][0] <= pair["mean"] <= pair["ci95"][1]
    md = (out / "compare.md").read_text()
    assert "| road - plain | 0 |" in md and "val streets 104" in md
    scores = np.load(out / "scores.npz")
    assert sorted(scores.files) == ["plain_seed0", "plain_seed1", "road_seed0"]
    assert doc["command"].startswith("python -m xmodelkd_ros.evaluation.compare --net plain=")


def test_a_network_against_its_copy_gains_nothing(runs: Path, tmp_path: Path) -> None:
    pattern = f"{runs}/plain/seed{{seed}}/student.pt"
    assert (
        main(
            [
                "--net",
                f"a={pattern}",
                "--net",
                f"b={pattern}",
                "--pair",
                "a:b",
                "--seeds",
                "0-1",
                "--out",
                str(tmp_path),
                *STREETS,
            ]
        )
        == 0
    )
    pair = json.loads((tmp_path / "compare.json").read_text())["pairs"]["a - b"]
    assert pair["mean"] == 0.0 and pair["ci95"] == [0.0, 0.0] and pair["seeds"] == [0, 1]


def test_a_rerun_scores_only_what_is_new(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Confusions kept in <out>/scores: a rerun renders and scores nothing it has, one more
    network is the only one scored, and a checkpoint written anew is scored anew."""
    import os

    import xmodelkd_ros.evaluation.compare as compare

    plain = ["--net", f"plain={runs}/plain/seed{{seed}}/student.pt", "--seeds", "0-1"]
    out = ["--out", str(tmp_path), *STREETS]
    assert main([*plain, *out]) == 0
    first = json.loads((tmp_path / "compare.json").read_text())["nets"]["plain"]["miou"]

    scored: list[str] = []
    real_score, real_render = compare.score_student, compare.held_out_scans

    def counted(path, scans):
        scored.append(str(path))
        return real_score(path, scans)

    monkeypatch.setattr(compare, "score_student", counted)

    def no_render(*a, **k):
        raise AssertionError("rendered although every network was kept")

    monkeypatch.setattr(compare, "held_out_scans", no_render)
    assert main([*plain, *out]) == 0
    assert json.loads((tmp_path / "compare.json").read_text())["nets"]["plain"]["miou"] == first
    assert scored == []

    monkeypatch.setattr(compare, "held_out_scans", real_render)
    road = ["--net", f"road={runs}/road/seed{{seed}}/student.pt"]
    assert main([*plain, *road, *out]) == 0
    assert scored == [str(runs / "road" / "seed0" / "student.pt")]

    ck = runs / "plain" / "seed1" / "student.pt"
    st = ck.stat()
    os.utime(ck, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # as if trained again
    scored.clear()
    assert main([*plain, *out]) == 0
    assert scored == [str(ck)]


def test_a_teacher_is_scored_with_its_cameras(tmp_path: Path, capsys) -> None:
    from xmodelkd_ros.training.train import main as train

    run = tmp_path / "t" / "seed0"
    assert train(["--stage", "teacher", "--out", str(run), *TINY]) == 0
    out = tmp_path / "cmp"
    argv = ["--teacher", f"t={tmp_path}/t/seed{{seed}}/teacher.pt", "--seeds", "0"]
    assert main([*argv, "--out", str(out), *STREETS]) == 0
    doc = json.loads((out / "compare.json").read_text())
    assert doc["nets"]["t"]["kind"] == "teacher"
    recipe = load_recipe(str(run / "recipe.json"))
    scans = held_out_scans(
        [104], 1, 10, 32, recipe.data.cameras, tuple(recipe.data.render_size), split="val"
    )
    assert scans[0].images and scans[0].images[0].shape[:2] == (60, 100)  # the run's render size
    want = float(miou_from_confusion(score_teacher(run / "teacher.pt", scans, recipe).sum(0)))
    assert doc["nets"]["t"]["miou"]["0"] == pytest.approx(want)
    other = tmp_path / "u" / "seed0"  # the same teacher, said to have rendered 64 x 100
    shutil.copytree(run, other)
    rj = json.loads((other / "recipe.json").read_text())
    rj["data"]["render_size"] = [64, 100]
    (other / "recipe.json").write_text(json.dumps(rj))
    both = [*argv, "--teacher", f"u={tmp_path}/u/seed{{seed}}/teacher.pt"]
    assert main([*both, "--out", str(out), *STREETS]) == 2
    assert "different cameras / render sizes" in capsys.readouterr().err
    (run / "recipe.json").unlink()
    assert main([*argv, "--out", str(out), *STREETS]) == 2  # a teacher needs its recipe


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--net", "a=/nowhere/seed{seed}/student.pt"], "a: no checkpoint for seeds [0, 1, 2]"),
        (["--pair", "a:b"], "nothing to score"),
        (["--net", "a=/x/{seed}.pt", "--net", "a=/y/{seed}.pt"], "names given twice: a"),
        (["--net", "a=/x/{seed}.pt", "--pair", "a:zz"], "no network named 'zz'"),
        (["--net", "a=/x/{seed}.pt", "--registered", "pool_e192_10"],
         "val streets not reserved for pool_e192_10 (104: choose_validation)"),
    ],
)
def test_refusals_are_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--streets", "104", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_test_streets_outside_the_reserved_range_are_refused(
    runs: Path, tmp_path: Path, capsys
) -> None:
    argv = [
        "--net",
        f"p={runs}/plain/seed{{seed}}/student.pt",
        "--seeds",
        "0",
        "--split",
        "test",
        "--streets",
        "104",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err


def test_argument_syntax() -> None:
    assert parse_net("a=runs/s{seed}/student.pt") == ("a", "runs/s{seed}/student.pt")
    assert parse_pair("a:b") == ("a", "b")
    for bad in ("a", "=x{seed}", "a=runs/student.pt", "a:b=x{seed}", "a=x{seed}{other}"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_net(bad)
    for bad in ("a", "a:", ":b", "a:a"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_pair(bad)
