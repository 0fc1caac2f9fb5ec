"""``evaluation.ledger``: the committed street ledger agrees with every committed result,
free streets against a brute-force search, the refusals, and the CLI's reserve / check
round trip on a copy of the ledger."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xmodelkd_ros.evaluation import ledger as L
from xmodelkd_ros.evaluation.ledger import Entry, Ledger, LedgerError

RESULTS = L.DEFAULT_LEDGER.parent


def _yaml(path: Path, *entries: str) -> Path:
    path.write_text("# a ledger\n" + "".join(entries))
    return path


def _e(split: str, streets: str, name: str, folders: str = "[]") -> str:
    return (f"- split: {split}\n  streets: {streets}\n  name: {name}\n  use: u\n"
            f"  folders: {folders}\n")  # fmt: skip


def test_the_committed_ledger_gives_every_committed_result_its_streets() -> None:
    ledger = Ledger.load(L.DEFAULT_LEDGER)
    assert L.audit(ledger, RESULTS) == []
    # the audit reads the results, it does not pass vacuously: measured folders are there
    files = [f for f in RESULTS.rglob("*.json") if f.name in L.RESULT_FILES]
    assert {"choose_v2", "pool_choice_10_e384", "cross_sensor_v1", "dlm_pilot", "."} <= {
        f.relative_to(RESULTS).parts[0] if len(f.relative_to(RESULTS).parts) > 1 else "."
        for f in files
    }
    # the streets the shipped recipes and the demo score are held too
    from xmodelkd_ros.demo import HELD_OUT_WORLD
    from xmodelkd_ros.training.recipe import load_recipe

    for seed in load_recipe("synthetic").data.val_seeds:
        assert ledger.owner("val", seed).name == "recipe_validation"
    assert ledger.owner("val", HELD_OUT_WORLD).name == "demo"
    # no two entries of one split overlap unless they are one measurement
    for e in ledger.entries:
        assert ledger.owner(e.split, e.first).name == e.name


def test_audit_names_a_result_scored_on_streets_its_folder_does_not_hold(tmp_path) -> None:
    ledger = Ledger.load(_yaml(tmp_path / "l.yaml", _e("test", "9000-9003", "a", "[x]"),
                               _e("val", "150-159", "p", "[pilot]")))  # fmt: skip
    res = tmp_path / "results"
    (res / "x").mkdir(parents=True)
    (res / "y" / "sub").mkdir(parents=True)
    (res / "pilot").mkdir()
    (res / "x" / "measure.json").write_text(json.dumps({"test": {"split": "test",
                                                        "seeds": [9000, 9001]}}))  # fmt: skip
    assert L.audit(ledger, res) == []
    (res / "y" / "sub" / "benchmark.json").write_text(
        json.dumps({"meta": {"test_seeds": [9002, 9003, 9004]}}))  # fmt: skip
    (res / "pilot" / "compare.json").write_text(
        json.dumps({"streets": {"split": "val", "seeds": "150-151,160"}}))  # fmt: skip
    (res / "x" / "notes.json").write_text(json.dumps({"meta": {"test_seeds": [9500]}}))
    problems = L.audit(ledger, res)
    assert problems == [
        "pilot/compare.json: val streets 160 are not pilot's in the ledger (in no entry)",
        "y/sub/benchmark.json: test streets 9002-9004 are not y's in the ledger (held by a)",
    ]


@pytest.mark.parametrize(
    "entries, needle",
    [
        ([_e("test", "9000-9003", "a"), _e("test", "9003-9005", "b")],
         "test street 9003 is both a's and b's"),
        ([_e("test", "104-110", "a")], "outside the test range"),
        ([_e("val", "9000", "a")], "outside the val range"),
        ([_e("train", "1-2", "a")], "split 'train' is not val or test"),
        ([_e("test", "9005-9001", "a")], "run backwards"),
        (["- split: test\n  streets: 9000\n"], "missing name, use"),
        (["- [1, 2]\n"], "an entry is a mapping"),
        (["a: 1\n"], "the ledger is a list of entries"),
        (["- split: test\n  streets: x\n  name: a\n  use: u\n"], "is not FIRST-LAST"),
    ],
)  # fmt: skip
def test_a_malformed_ledger_is_a_one_line_error(tmp_path, entries, needle) -> None:
    with pytest.raises(LedgerError, match=needle):
        Ledger.load(_yaml(tmp_path / "l.yaml", *entries))


def test_one_name_may_hold_several_ranges_and_splits(tmp_path) -> None:
    entries = [_e("test", "9000-9003", "a"), _e("test", "9002-9010", "a"),
               _e("val", "100-103", "a")]  # fmt: skip
    ledger = Ledger.load(_yaml(tmp_path / "l.yaml", *entries))
    assert ledger.check("test", range(9000, 9011), "a").name == "a"
    assert ledger.check("val", [101], "a").name == "a"


def test_check_refuses_streets_of_another_measurement_or_of_none(tmp_path) -> None:
    ledger = Ledger.load(_yaml(tmp_path / "l.yaml", _e("test", "9000-9003", "old"),
                               _e("test", "9004-9007", "new")))  # fmt: skip
    ledger.check("test", [9004, 9007], "new")
    held = r"not reserved for new \(9008-9009: no measurement; 9003: old\)"
    with pytest.raises(LedgerError, match=held):
        ledger.check("test", [9003, 9004, 9008, 9009], "new")
    with pytest.raises(LedgerError, match="no entry named 'newer'"):
        ledger.check("test", [9008], "newer")
    with pytest.raises(LedgerError, match="not reserved for new"):
        ledger.check("val", [9004 - 8900], "new")  # 104: another split's range


ranges = st.lists(st.tuples(st.integers(9000, 9060), st.integers(0, 12)), max_size=6)


@settings(max_examples=60, deadline=None)
@given(ranges=ranges, count=st.integers(1, 20))
def test_free_is_the_first_run_of_unheld_streets(ranges, count) -> None:
    entries = [Entry("test", a, min(a + n, 9999), f"e{i}", "u") for i, (a, n) in enumerate(ranges)]
    held = {s for e in entries for s in e.streets}
    try:
        ledger = Ledger(entries)
    except LedgerError:  # overlapping ranges of different names: refused, nothing to check
        assert len(held) < sum(len(e.streets) for e in entries)
        return
    got = ledger.free("test", count)
    # brute force: the smallest start whose `count` streets are all unheld
    start = next(s for s in range(9000, 10000 - count + 1)
                 if not held & set(range(s, s + count)))  # fmt: skip
    assert got == list(range(start, start + count))


def test_free_refuses_when_nothing_is_left() -> None:
    ledger = Ledger([Entry("val", 100, 998, "all", "u")])
    assert ledger.free("val", 1) == [999]
    with pytest.raises(LedgerError, match="no 2 consecutive free val streets"):
        ledger.free("val", 2)


def test_street_text_joins_runs() -> None:
    assert L.street_text([9005, 9000, 9001, 9002, 9007, 9006]) == "9000-9002, 9005-9007"
    assert L.street_text([104]) == "104"
    assert L.parse_streets("9000-9002, 9005") == [9000, 9001, 9002, 9005]


def test_cli_reserve_then_check_on_a_copy(tmp_path, capsys) -> None:
    copy = tmp_path / "streets.yaml"
    shutil.copy(L.DEFAULT_LEDGER, copy)
    before = copy.read_text()
    base = ["--ledger", str(copy)]
    assert L.main([*base, "next", "--count", "8"]) == 0
    first = capsys.readouterr().out.strip()
    assert L.main([*base, "reserve", "--count", "8", "--name", "trial",
                   "--use", "a test reservation: 8 streets"]) == 0  # fmt: skip
    assert f"reserved test streets {first} for trial" in capsys.readouterr().out
    assert copy.read_text().startswith(before)  # appended: the comments and entries stay
    assert L.main([*base, "check", "--streets", first, "--name", "trial"]) == 0
    assert L.main([*base, "next", "--count", "8"]) == 0
    assert capsys.readouterr().out.strip().split("\n")[-1] != first
    # the same name twice, someone else's streets, a bad list: one line each, exit 2
    for argv, needle in [
        (["reserve", "--name", "trial", "--use", "again"], "already has an entry named"),
        (["check", "--streets", "9000", "--name", "trial"], "9000: ablations"),
        (["check", "--streets", "90x", "--name", "trial"], "is not FIRST-LAST"),
    ]:
        assert L.main([*base, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err and "\n" not in err
    assert L.main(["--ledger", str(tmp_path / "none.yaml"), "list"]) == 2
    assert "no street ledger at" in capsys.readouterr().err


def test_reserve_appends_to_a_ledger_without_a_final_newline(tmp_path, capsys) -> None:
    lg = tmp_path / "l.yaml"
    lg.write_text("- {split: test, streets: 9000-9001, name: a, use: u}")  # no final newline
    assert L.main(["--ledger", str(lg), "reserve", "--count", "2", "--name", "b",
                   "--use", "next"]) == 0  # fmt: skip
    assert [e.name for e in Ledger.load(lg).entries] == ["a", "b"]
    assert Ledger.load(lg).check("test", [9002, 9003], "b").name == "b"


def test_cli_audit_exit_code(tmp_path, capsys) -> None:
    lg = _yaml(tmp_path / "l.yaml", _e("test", "9000", "a", "[x]"))
    (tmp_path / "r" / "x").mkdir(parents=True)
    (tmp_path / "r" / "x" / "measure.json").write_text(json.dumps({"test": {"seeds": [9001]}}))
    assert L.main(["--ledger", str(lg), "audit", str(tmp_path / "r")]) == 1
    assert "x/measure.json: test streets 9001" in capsys.readouterr().out
    (tmp_path / "r" / "x" / "measure.json").write_text(json.dumps({"test": {"seeds": [9000]}}))
    assert L.main(["--ledger", str(lg), "audit", str(tmp_path / "r")]) == 0
