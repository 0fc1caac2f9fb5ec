"""Choosing among cross-sensor candidates: the rule on hand-made confusions whose mIoUs are
known, the paired cost, and the command's refusals of outputs that do not pair."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xmodelkd_ros.evaluation import cross_sensor_choice as csc
from xmodelkd_ros.evaluation.stats import miou_from_confusion

K = 20
RIGS = ("32", "16", "64")


def _cm(acc: float, S: int = 2, N: int = 4) -> np.ndarray:
    """(S, N, K, K) confusions in which every class is right a share ``acc`` of the time
    (the rest goes to the next class): IoU = acc / (2 - acc) for every class."""
    cm = np.zeros((S, N, K, K), np.int64)
    for c in range(1, K):
        cm[:, :, c, c] = round(1000 * acc)
        cm[:, :, c, c % (K - 1) + 1] += 1000 - round(1000 * acc)
    return cm


def _write(folder, accs: dict[str, float], **meta) -> None:
    folder.mkdir()
    m = {"reference": "32", "split": "val", "test_seeds": [104, 105], "test_scans": 2,
         "test_stride": 10, "test_seeds_text": "104-105", **meta}  # fmt: skip
    (folder / "cross_sensor.json").write_text(json.dumps({"meta": m}))
    np.savez_compressed(folder / "cross_sensor_scores.npz",
                        **{f"distilled/{r}": _cm(a) for r, a in accs.items()})  # fmt: skip


def _miou(acc: float) -> float:
    return 100 * float(miou_from_confusion(_cm(acc).sum(1)).mean())


def test_the_rule_skips_a_costly_candidate_and_takes_the_smallest_worst_drop(tmp_path) -> None:
    _write(tmp_path / "plain", {"32": 0.9, "16": 0.7, "64": 0.5})
    _write(tmp_path / "costly", {"32": 0.8, "16": 0.8, "64": 0.8})  # robust, but -15 on 32
    _write(tmp_path / "robust", {"32": 0.895, "16": 0.85, "64": 0.8})
    out = tmp_path / "out"
    names = ("plain", "costly", "robust")
    cands = [a for n in names for a in ("--candidate", f"{n}={tmp_path / n}")]
    code = csc.main([*cands, "--choose", "--bootstrap", "50", "--out", str(out)])
    assert code == 0
    doc = json.loads((out / "choice.json").read_text())
    assert doc["chosen"] == "robust"
    robust = doc["candidates"]["robust"]
    assert robust["worst"] == pytest.approx(_miou(0.8) - _miou(0.895))
    assert robust["cost"]["mean"] * 100 == pytest.approx(_miou(0.895) - _miou(0.9))
    change = robust["drop_change"]["64"]["mean"] * 100  # the plain drop it removes
    assert change == pytest.approx((_miou(0.8) - _miou(0.895)) - (_miou(0.5) - _miou(0.9)))
    text = (out / "choice.md").read_text()
    assert "**Chosen: `robust`**" in text and "`costly`: costs" in text


def test_ties_go_to_the_first_listed_and_without_choose_nothing_is_chosen(tmp_path) -> None:
    _write(tmp_path / "a", {"32": 0.9, "16": 0.7, "64": 0.7})
    _write(tmp_path / "b", {"32": 0.9, "16": 0.7, "64": 0.7})
    doc = csc.compare({n: {r: _cm(0.9 if r == "32" else 0.7) for r in RIGS} for n in "ab"},
                      "32", ["16", "64"], 20)  # fmt: skip
    assert csc.choose(doc, "32", 1.0)[0] == "a"
    out = tmp_path / "out"
    assert csc.main(["--candidate", f"a={tmp_path / 'a'}", "--candidate", f"b={tmp_path / 'b'}",
                     "--bootstrap", "20", "--out", str(out)]) == 0  # fmt: skip
    assert json.loads((out / "choice.json").read_text())["chosen"] is None
    assert "nothing was chosen" in (out / "choice.md").read_text()


def test_outputs_that_do_not_pair_are_refused(tmp_path, capsys) -> None:
    _write(tmp_path / "a", {"32": 0.9, "16": 0.7})
    _write(tmp_path / "b", {"32": 0.9, "16": 0.7}, test_seeds=[110, 111])
    _write(tmp_path / "c", {"32": 0.9})
    for other in ("b", "c", "missing"):
        code = csc.main(["--candidate", f"a={tmp_path / 'a'}", "--candidate",
                         f"{other}={tmp_path / other}", "--rigs", "16",
                         "--out", str(tmp_path / "o")])  # fmt: skip
        assert code == 2
    err = capsys.readouterr().err
    assert "other streets" in err and "no scores on rig(s) 16" in err
    assert "not a cross_sensor output" in err
