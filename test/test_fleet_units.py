"""The pieces of the fleet evaluation that need no worker: per-frame scoring against the
training metrics, the nested bootstrap, criteria files, and finding bags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xmodelkd_ros.evaluation import criteria as crit
from xmodelkd_ros.evaluation.fleet_bags import FleetError, find_bags
from xmodelkd_ros.evaluation.frames import frame_record, score_frame, summarize_frames
from xmodelkd_ros.evaluation.stats import nested_bootstrap_iou
from xmodelkd_ros.labels import CLASS_NAMES

C = len(CLASS_NAMES)


def _scan(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    gt = rng.integers(0, 6, n).astype(np.uint16)  # 0 = unlabeled, few classes
    pred = rng.integers(0, 7, n).astype(np.uint16)  # 0 = left unlabeled by the model
    return gt, pred


def test_records_summarise_to_the_training_metrics() -> None:
    """Per-frame counts summed over scans give exactly the mIoU, IoU and accuracy of one
    training ConfusionMatrix over the same scans, with the replay's scoring rule."""
    from xmodelkd_ros.replay.scoring import ScoreCounts, score_scan
    from xmodelkd_ros.training.metrics import ConfusionMatrix

    rng = np.random.default_rng(3)
    cm, counts, records = ConfusionMatrix(C), ScoreCounts(), []
    for i in range(6):
        gt, pred = _scan(rng, 500 + 37 * i)
        assert score_scan(cm, gt, pred, counts)
        score = score_frame(gt, pred, C)
        assert score is not None and score.scored == int(score.confusion.sum())
        records.append(frame_record("offline", "b", i, i, len(gt), score, CLASS_NAMES, True,
                                    answered=True))  # fmt: skip
    s = summarize_frames(records, CLASS_NAMES)
    ref = cm.result(CLASS_NAMES)
    assert s["metrics"]["miou"] == ref.miou and s["metrics"]["accuracy"] == ref.accuracy
    for c in CLASS_NAMES:
        assert s["metrics"]["iou"][c] == (None if np.isnan(ref.iou[c]) else ref.iou[c])
    assert (s["scored_points"], s["unscored_points"]) == (counts.scored, counts.unpredicted)
    assert s["unscored_fraction"] == counts.unpredicted / (counts.scored + counts.unpredicted)
    rec = records[0]
    assert set(rec["classes"]) <= set(CLASS_NAMES[:6]) and all(len(v) == 3
                                                                for v in rec["classes"].values())
    assert score_frame(np.zeros(3), np.zeros(4), C) is None  # point counts differ


def test_nested_bootstrap_is_seeded_and_collapses_without_spread() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, (30, C, 3))
    sizes = np.array([10, 5, 15])
    a = nested_bootstrap_iou(counts, sizes, reps=200, seed=1)
    b = nested_bootstrap_iou(counts, sizes, reps=200, seed=1)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], nested_bootstrap_iou(counts, sizes, reps=200, seed=2)[0])
    same = np.repeat(counts[:1], 30, axis=0)  # every scan of every bag alike: no spread
    miou, iou = nested_bootstrap_iou(same, sizes, reps=100)
    tot = same.sum(0)
    ref = tot[:, 0] / tot.sum(1)
    np.testing.assert_allclose(miou, ref.mean())
    np.testing.assert_allclose(iou, np.broadcast_to(ref, iou.shape))
    with pytest.raises(ValueError, match="items"):
        nested_bootstrap_iou(counts, np.array([3]), reps=10)


def _criteria(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "criteria.yaml"
    p.write_text(text)
    return p


def test_criteria_file_checks(tmp_path: Path) -> None:
    c = crit.load_criteria(_criteria(tmp_path, "min_miou: 0.5\nmin_class_iou: {car: 0.3}\n"
                                               "max_p95_latency_ms: 100\n"))  # fmt: skip
    rows = crit.check(c, {"miou": 0.6, "class_iou": {"car": 0.2}, "p95_latency_ms": 80.0})
    assert [(r["criterion"], r["passed"]) for r in rows] == [
        ("min_miou", True), ("max_p95_latency_ms", True), ("min_class_iou.car", False)]
    assert not crit.passed(rows)
    text = crit.terminal(rows)
    assert "min_class_iou.car" in text and text.splitlines()[-1] == "criteria: FAIL (2/3 met)"
    assert crit.markdown(rows)[0] == "## Criteria: FAIL"
    # a class absent from the data, a quantity not measured: not met
    assert not crit.check(c, {"miou": None, "class_iou": {}})[0]["passed"]
    with pytest.raises(crit.CriteriaError, match="max_p95_latency_ms cannot be checked: no"):
        c.require({"miou": None, "class_iou": None, "p95_latency_ms": "no"}, CLASS_NAMES)
    with pytest.raises(crit.CriteriaError, match="does not have: cat"):
        crit.load_criteria(_criteria(tmp_path, "min_class_iou: {cat: 0.3}\n")).require(
            {"class_iou": None}, CLASS_NAMES)


@pytest.mark.parametrize(("text", "match"), [
    ("min_mIoU: 0.5\n", "unknown key 'min_mIoU'"),
    ("min_miou: 1.5\n", "between 0 and 1"),
    ("max_p95_latency_ms: fast\n", "must be a number"),
    ("min_class_iou: 0.5\n", "must map class names"),
    ("- 1\n", "must be a mapping"),
    ("min_miou: [\n", "not valid YAML"),
])  # fmt: skip
def test_bad_criteria_are_one_line(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(crit.CriteriaError, match=match) as info:
        crit.load_criteria(_criteria(tmp_path, text))
    assert "\n" not in str(info.value)
    with pytest.raises(crit.CriteriaError, match="cannot read"):
        crit.load_criteria(tmp_path / "nope.yaml")


def test_find_bags(tmp_path: Path) -> None:
    for rel in ("a/drive/bag", "b/bag", "kitti/sequences/00/velodyne",
                "kitti/sequences/01/velodyne"):
        (tmp_path / rel).mkdir(parents=True)
    for rel in ("a/drive/bag", "b/bag"):
        (tmp_path / rel / "metadata.yaml").write_text("x")
    specs = find_bags([tmp_path])
    assert [(s.name, s.kind) for s in specs] == [
        ("a/drive/bag", "rosbag2"), ("b/bag", "rosbag2"),
        ("kitti/sequences/00", "kitti"), ("kitti/sequences/01", "kitti")]  # fmt: skip
    lst = tmp_path / "bags.txt"
    lst.write_text("# my bags\nb/bag\n\na/drive/bag  # the long one\nb/bag\n")
    assert [s.name for s in find_bags([], str(lst))] == ["a/drive/bag", "b/bag"]
    assert [s.name for s in find_bags([tmp_path / "b" / "bag"])] == ["bag"]
    assert [s.name for s in find_bags([tmp_path / "a" / "drive" / "bag" / "metadata.yaml"])] == [
        "bag"]  # a file of a rosbag2 folder names the folder
    with pytest.raises(FleetError, match="does not exist"):
        find_bags([tmp_path / "nope"])
    with pytest.raises(FleetError, match="holds no ROS 2 bag"):
        find_bags([lst])
    with pytest.raises(FleetError, match="no bags given"):
        find_bags([])
