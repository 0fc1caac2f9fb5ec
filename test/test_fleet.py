"""The fleet evaluation end to end: real bags written by the simulator, real worker
processes, a real (loopback) Ray cluster.

The key checks: the merged mIoU equals the replay's offline reference (the same Segmenter
scored with the training ConfusionMatrix, bag by bag) summed over the bags; Ray gives the
identical report, file for file; a corrupted bag fails with its reason while the others
complete; a killed run resumes with the bags it finished; criteria give exit 0 / 1 / 2.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

N_BAGS, N_SCANS = 4, 3
ROOT = Path(__file__).resolve().parents[1]
REPORT_FILES = ("report.json", "report.md", "per_bag_miou.png", "per_class_iou.png")


@pytest.fixture(scope="module")
def fleet_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Four 3-scan, 16-beam drives (two sqlite3, two MCAP) and a narrow random student
    whose predictions spread over many classes."""
    from xmodelkd_ros.nets.checkpoint import save_student
    from xmodelkd_ros.sim import SimWorld, write_bag
    from xmodelkd_ros.sim.fixtures import random_student_checkpoint

    root = tmp_path_factory.mktemp("fleet")
    for i in range(N_BAGS):
        write_bag(root / "bags" / f"drive{i}", SimWorld(seed=20 + i, beams=16, cameras=0),
                  N_SCANS, storage="mcap" if i % 2 else "sqlite3", progress=False)  # fmt: skip
    model = root / "student.pt"
    save_student(random_student_checkpoint("small", 0, enc_widths=(8, 16), dec_widths=(8,)),
                 model)  # fmt: skip
    return root / "bags", model


def _fleet(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from xmodelkd_ros.evaluation.fleet import main

    code = main([*argv, "--no-progress", "--bootstrap", "300"])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def local_run(fleet_inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory,
              ) -> tuple[int, Path, str]:  # fmt: skip
    """The bags on two local worker processes (module-wide: later tests compare with it)."""
    from xmodelkd_ros.evaluation.fleet import main

    bags, model = fleet_inputs
    out = tmp_path_factory.mktemp("local")
    code = main([str(bags), "--model", str(model), "--out", str(out), "--workers", "2",
                 "--no-progress", "--bootstrap", "300"])  # fmt: skip
    return code, out, str(model)


def _doc(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text())


def test_local_run_matches_the_offline_reference(fleet_inputs, local_run) -> None:
    from PIL import Image

    from xmodelkd_ros.replay import offline_confusion, plan_bag, read_ground_truth
    from xmodelkd_ros.runtime import Segmenter

    bags, model = fleet_inputs
    code, out, _ = local_run
    assert code == 0
    doc = _doc(out)
    assert doc["bags"] == {"total": N_BAGS, "evaluated": N_BAGS, "failed": 0,
                           "with_ground_truth": N_BAGS}  # fmt: skip
    assert doc["frames"]["frames"] == doc["frames"]["scored_frames"] == N_BAGS * N_SCANS
    seg = Segmenter.from_checkpoint(model)
    per_bag, cms = {}, []
    for d in sorted(bags.iterdir()):
        plan = plan_bag(d / "bag")
        cm, _ = offline_confusion(plan, read_ground_truth(plan), seg)
        per_bag[f"{d.name}/bag"] = cm.result(seg.class_names).miou
        cms.append(cm)
    for cm in cms[1:]:
        cms[0].merge(cm)
    ref = cms[0].result(seg.class_names)
    assert doc["overall"]["miou"] == ref.miou
    lo, hi = doc["overall"]["miou_ci95"]
    assert lo <= ref.miou <= hi and lo < hi
    assert {r["bag"]: r["miou"] for r in doc["per_bag"]} == per_bag
    assert [c["class"] for c in doc["overall"]["per_class"]] == list(seg.class_names)
    worst = doc["worst_frames"]
    assert len(worst) == N_BAGS * N_SCANS and [w["miou"] for w in worst] == sorted(
        w["miou"] for w in worst)
    assert all(w["bag"] in per_bag and w["stamp"] > 0 for w in worst)
    for name in REPORT_FILES[2:]:
        with Image.open(out / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    md = (out / "report.md").read_text()
    assert "95 % CI" in md and "## Worst 12 frames" in md and "drive3/bag" in md
    run = json.loads((out / "run.json").read_text())
    assert (run["engine"], run["workers"], run["evaluated"], run["resumed"]) == (
        "local processes", 2, N_BAGS, 0)


def test_frames_jsonl_match_the_schema(local_run) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "schema" / "frames.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    files = sorted((local_run[1] / "bags").glob("*/frames.jsonl"))
    assert len(files) == N_BAGS
    records = [json.loads(ln) for f in files for ln in f.read_text().splitlines()]
    assert len(records) == N_BAGS * N_SCANS
    for rec in records:
        validator.validate(rec)
    bad = dict(records[0], source="elsewhere")
    del bad["stamp"]
    assert len(list(validator.iter_errors(bad))) == 2


def test_ray_gives_the_identical_report(fleet_inputs, local_run, tmp_path, capsys) -> None:
    pytest.importorskip("ray")
    import ray

    bags, model = fleet_inputs
    code, _, err = _fleet([str(bags), "--model", str(model), "--out", str(tmp_path),
                           "--ray", "local", "--workers", "2"], capsys)  # fmt: skip
    assert code == 0, err
    assert not ray.is_initialized()  # the cluster this run started is gone
    run = json.loads((tmp_path / "run.json").read_text())
    assert (run["engine"], run["nodes"], run["cpus"]) == ("ray", ["127.0.0.1"], 2.0)
    for name in REPORT_FILES:
        assert (tmp_path / name).read_bytes() == (local_run[1] / name).read_bytes(), name


def test_corrupted_bag_fails_with_its_reason(fleet_inputs, local_run, tmp_path, capsys) -> None:
    bags, model = fleet_inputs
    copy = tmp_path / "bags"
    shutil.copytree(bags, copy)
    mcap = copy / "drive1" / "bag" / "bag.mcap"
    with open(mcap, "r+b") as fh:
        fh.truncate(mcap.stat().st_size // 2)
    code, out, err = _fleet([str(copy), "--model", str(model), "--out", str(tmp_path / "out"),
                             "--workers", "2"], capsys)  # fmt: skip
    assert code == 1
    assert "bag drive1/bag failed (cannot open bag" in err and "retrying once" in err
    doc = _doc(tmp_path / "out")
    assert doc["bags"]["evaluated"] == N_BAGS - 1 and doc["bags"]["failed"] == 1
    (failed,) = doc["failed_bags"]
    assert failed["bag"] == "drive1/bag" and failed["reason"].startswith(
        f"cannot open bag {copy / 'drive1' / 'bag'}")
    assert f"failed: drive1/bag: {failed['reason']}" in out
    good = {r["bag"]: r["miou"] for r in _doc(local_run[1])["per_bag"]}
    for r in doc["per_bag"]:
        if r["bag"] == "drive1/bag":
            assert r["status"] == "failed"
        else:
            assert r["status"] == "ok" and r["miou"] == good[r["bag"]]
    assert "**failed**: cannot open bag" in (tmp_path / "out" / "report.md").read_text()


def _criteria(path: Path, doc: dict[str, Any], miou_margin: float) -> Path:
    car = next(c for c in doc["overall"]["per_class"] if c["class"] == "car")["iou"]
    path.write_text(f"min_miou: {doc['overall']['miou'] + miou_margin}\n"
                    f"min_class_iou: {{car: {car - 0.001}}}\n"
                    f"max_unscored_fraction: {doc['frames']['unscored_fraction'] + 0.01}\n"
                    "min_answered_fraction: 1.0\nmax_failed_bags: 0\n")  # fmt: skip
    return path


def test_criteria_exit_codes(fleet_inputs, local_run, tmp_path, capsys) -> None:
    """Resumed from the local run's finished bags (no worker starts): pass -> 0, fail -> 1,
    a criterion offline evaluation cannot measure -> 2 before anything runs."""
    bags, model = fleet_inputs
    out = tmp_path / "out"
    shutil.copytree(local_run[1], out)
    doc = _doc(out)
    args = [str(bags), "--model", str(model), "--out", str(out), "--criteria"]
    code, stdout, _ = _fleet([*args, str(_criteria(tmp_path / "ok.yaml", doc, -0.001))], capsys)
    assert code == 0 and stdout.splitlines()[-1] == "criteria: PASS (5/5 met)"
    assert json.loads((out / "run.json").read_text())["resumed"] == N_BAGS
    assert "## Criteria: PASS" in (out / "report.md").read_text()
    code, stdout, _ = _fleet([*args, str(_criteria(tmp_path / "no.yaml", doc, 0.001))], capsys)
    assert code == 1 and stdout.splitlines()[-1] == "criteria: FAIL (4/5 met)"
    rows = _doc(out)["criteria"]
    assert [r["criterion"] for r in rows if not r["passed"]] == ["min_miou"]
    assert rows[0]["measured"] == doc["overall"]["miou"]
    (tmp_path / "lat.yaml").write_text("max_p95_latency_ms: 100\n")
    code, _, err = _fleet([*args, str(tmp_path / "lat.yaml")], capsys)
    assert code == 2 and err.startswith("error: criteria ") and "the replay measures it" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_inputs_are_one_line(fleet_inputs, tmp_path, capsys) -> None:
    bags, model = fleet_inputs
    for argv, match in (
        ([str(tmp_path / "none"), "--model", str(model)], "does not exist"),
        ([str(bags), "--model", str(tmp_path)], "has no model.json"),
        ([str(bags), "--model", str(bags / "drive0" / "calibration.yaml")], "cannot read"),
        ([str(bags), "--model", str(model), "--workers", "0"], "must be >= 1"),
    ):
        code, _, err = _fleet([*argv, "--out", str(tmp_path / "o")], capsys)
        assert code == 2 and err.startswith("error: ") and match in err, err
        assert len(err.strip().splitlines()) == 1


def test_killed_run_resumes_with_the_bags_it_finished(fleet_inputs, local_run, tmp_path,
                                                       capsys) -> None:  # fmt: skip
    """SIGKILL the command (and its worker) once the first bag is done; the same command
    then evaluates only the rest and writes the same report as an uninterrupted run."""
    bags, model = fleet_inputs
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "xmodelkd_ros.evaluation.fleet", str(bags), "--model",
           str(model), "--out", str(out), "--workers", "1", "--no-progress"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH",
                                                                                   "")]))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob("bags/*/done.json")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # this test's own process group
        proc.wait(timeout=30)
    finished = len(list(out.glob("bags/*/done.json")))
    assert 1 <= finished < N_BAGS
    assert not (out / "report.json").exists()
    code, _, _ = _fleet([str(bags), "--model", str(model), "--out", str(out), "--workers", "2"],
                        capsys)  # fmt: skip
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert (run["resumed"], run["evaluated"]) == (finished, N_BAGS - finished)
    assert (out / "report.json").read_bytes() == (local_run[1] / "report.json").read_bytes()
    assert len(list(out.glob("bags/*/frames.jsonl"))) == N_BAGS


def test_unreadable_records_are_one_line(fleet_inputs, local_run, tmp_path, capsys) -> None:
    bags, model = fleet_inputs
    out = tmp_path / "out"
    shutil.copytree(local_run[1], out)
    frames = sorted(out.glob("bags/*/frames.jsonl"))[0]
    frames.write_text(frames.read_text()[:-40] + "\n")
    code, _, err = _fleet([str(bags), "--model", str(model), "--out", str(out)], capsys)
    err = err.strip().splitlines()[-1]  # after the run's "[fleet] 4 bags ..." line
    assert code == 2 and err.startswith("error: ")
    assert "cannot read the records of bag drive0/bag: " in err and "record 3 is not JSON" in err
    assert f"delete {frames.parent} to evaluate it again" in err


def test_kitti_sequence_scores_like_the_same_drive_as_a_bag(fleet_inputs, tmp_path) -> None:
    """A SemanticKITTI sequence of a drive and the drive's bag give the same records (the
    KITTI stamps are times.txt's, relative to the first scan)."""
    from xmodelkd_ros.evaluation.fleet_bags import find_bags
    from xmodelkd_ros.evaluation.fleet_worker import BagTask, ModelSpec, evaluate_bag
    from xmodelkd_ros.sim import SimWorld, write_kitti

    bags, model = fleet_inputs
    write_kitti(tmp_path / "kitti", SimWorld(seed=20, beams=16, cameras=1, width=64, height=48),
                N_SCANS, sequence=4, progress=False)  # fmt: skip
    (kitti,) = find_bags([tmp_path / "kitti"])
    assert (kitti.name, kitti.kind) == ("04", "kitti")
    (bag,) = find_bags([bags / "drive0"])
    spec = ModelSpec(str(model), "torch")
    got = evaluate_bag(BagTask(kitti, spec))["records"]
    want = evaluate_bag(BagTask(bag, spec))["records"]
    assert [r["stamp"] for r in got] == [0, 100_000_000, 200_000_000]
    keys = ("index", "points", "labeled_points", "scored_points", "classes", "miou")
    assert [{k: r[k] for k in keys} for r in got] == [{k: r[k] for k in keys} for r in want]


def test_unreachable_ray_cluster_is_one_line(fleet_inputs, tmp_path, capsys) -> None:
    """Ray itself retries an address that does not answer for minutes; the fleet says so
    at once (a port nothing listens on: connection refused)."""
    pytest.importorskip("ray")
    import socket

    bags, model = fleet_inputs
    with socket.socket() as s:  # a free port, closed again
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    code, _, err = _fleet([str(bags), "--model", str(model), "--out", str(tmp_path),
                           "--ray", f"127.0.0.1:{port}"], capsys)  # fmt: skip
    err = err.strip().splitlines()[-1]
    assert code == 2 and err.startswith(f"error: cannot reach the Ray cluster at 127.0.0.1:{port}")
    assert time.monotonic() - t0 < 30
