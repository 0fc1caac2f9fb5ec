"""Fleet evaluation throughput with 1 and 2 local workers, and the merge of 1,000 bags.

Why: the fleet command is worth its worker pool only if bags per hour scale with the
workers, and its report must come quickly even when the fleet is large. This measures,
through the real command (``python -m xmodelkd_ros.evaluation.fleet``, one process per
run, fresh output folder, no resume):

* bags per hour with 1 and 2 worker processes of one thread each (the scaling of the
  worker pool), and with 1 worker of 2 threads (what one worker gets from the second
  core on its own), alternating in one run ``--rounds`` times so all see the same
  machine; the 1-minute load average before each run is printed (the machine is shared).
  The time is ``run.json``'s ``wall_s``: from the command's start to its last bag, the
  workers' start (spawn, torch import, model load) included, the merge not;
* the time to merge the records of ``--merge-bags`` bags (synthetic records: ``--frames``
  scans per bag, 8-14 classes each, written into the run folder as finished bags, so the
  command only merges): the merge alone (``run.json``'s ``merge_s``: reading every
  ``frames.jsonl``, the tables, the bootstrap, the report and plots) and the whole command.

    python bench/bench_fleet.py [--bags 16] [--scans 50] [--beams 32] [--rounds 2]
                                [--merge-bags 1000] [--frames 100] [--json out.json]

The model is an untrained student with the synthetic recipe's widths (the demo's
student: same graph and cost as a trained one) on the torch backend.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: worker processes x threads per bag; 2 workers and 1 x 2 are each the command's default
#: on 2 cores (threads = cores / workers)
CONFIGS = {"1 worker x 1 thread": ["--workers", "1", "--threads", "1"],
           "2 workers x 1 thread": ["--workers", "2", "--threads", "1"],
           "1 worker x 2 threads": ["--workers", "1", "--threads", "2"]}  # fmt: skip


def make_inputs(root: Path, bags: int, scans: int, beams: int) -> tuple[Path, Path]:
    """``bags`` simulated drives (no cameras) and the demo-sized untrained student."""
    from tqdm import tqdm

    from xmodelkd_ros.nets.checkpoint import save_student
    from xmodelkd_ros.nets.inputs import default_grid
    from xmodelkd_ros.sim import SimWorld, write_bag
    from xmodelkd_ros.sim.fixtures import DEMO_STUDENT, DEMO_VOXEL_SIZE, random_student_checkpoint

    for i in tqdm(range(bags), desc="bags", unit="bag"):
        write_bag(root / "bags" / f"drive{i:02d}", SimWorld(seed=100 + i, beams=beams, cameras=0),
                  scans, storage="mcap" if i % 2 else "sqlite3", progress=False)  # fmt: skip
    model = root / "student.pt"
    ckpt = random_student_checkpoint("small", 0, default_grid(DEMO_VOXEL_SIZE), **DEMO_STUDENT)
    save_student(ckpt, model)
    return root / "bags", model


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_fleet(args: list[str], out: Path) -> dict[str, Any]:
    """One run of the command; its ``run.json`` plus the command's own wall time."""
    cmd = [sys.executable, "-m", "xmodelkd_ros.evaluation.fleet", *args, "--out", str(out),
           "--no-progress", "--bootstrap", "2000"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"fleet failed ({proc.returncode}): {proc.stderr[-2000:]}")
    info = json.loads((out / "run.json").read_text())
    info["command_s"] = wall
    return info


def throughput(bags: Path, model: Path, n_bags: int, rounds: int, tmp: Path) -> dict[str, Any]:
    """Bags per hour per configuration, configurations alternating in every round."""
    per: dict[str, list[float]] = {k: [] for k in CONFIGS}
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        for k, (name, flags) in enumerate(CONFIGS.items()):
            load = os.getloadavg()[0]
            info = run_fleet([str(bags), "--model", str(model), *flags], tmp / f"tp{r}_{k}")
            bph = 3600 * n_bags / info["wall_s"]
            per[name].append(bph)
            runs.append(dict(info, config=name, round=r, load_before=load))
            print(f"round {r + 1} {name:>18}: {bph:6.0f} bags/h ({info['wall_s']:.1f} s from "
                  f"start to the last bag; the command {info['command_s']:.1f} s; load before "
                  f"{load:.2f})", flush=True)  # fmt: skip
    med = {k: statistics.median(v) for k, v in per.items()}
    return {"bags_per_hour": per, "median": med, "runs": runs,
            "ratio_2_over_1": med["2 workers x 1 thread"] / med["1 worker x 1 thread"],
            "ratio_2_over_1x2": med["2 workers x 1 thread"] / med["1 worker x 2 threads"]}


def synthetic_records(bag: str, frames: int, names: list[str], rng: np.random.Generator
                      ) -> list[dict[str, Any]]:  # fmt: skip
    """``frames`` offline records of a bag: 8-14 classes per scan with plausible counts."""
    out = []
    for i in range(frames):
        k = int(rng.integers(8, 15))
        cls = rng.choice(len(names), k, replace=False)
        c = rng.integers(0, 4000, (k, 3))
        classes = {names[j]: [int(x) for x in row] for j, row in zip(cls, c, strict=True)}
        scored = int(c[:, 0].sum() + c[:, 2].sum())
        ious = [t / (t + f + n) for t, f, n in c if t + f + n]
        out.append({"source": "offline", "bag": bag, "index": i,
                    "stamp": 1_700_000_000_000_000_000 + i * 100_000_000, "points": scored + 900,
                    "labeled_points": scored + 500, "scored_points": scored,
                    "unscored_points": 500, "classes": classes,
                    "miou": float(np.mean(ious)) if ious else None, "has_truth": True,
                    "answered": True})  # fmt: skip
    return out


def merge_timing(model: Path, n_bags: int, frames: int, tmp: Path) -> dict[str, Any]:
    """``n_bags`` finished bags of synthetic records; the command then merges only."""
    from tqdm import tqdm

    from xmodelkd_ros.evaluation.fleet import Fleet, build_parser
    from xmodelkd_ros.evaluation.fleet_bags import find_bags
    from xmodelkd_ros.nets.checkpoint import load_student

    root, out = tmp / "merge_bags", tmp / "merge_out"
    for i in range(n_bags):
        d = root / f"drive{i:04d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "metadata.yaml").write_text("synthetic: records only\n")
    args = [str(root), "--model", str(model), "--out", str(out)]
    fleet = Fleet(build_parser().parse_args([*args, "--no-progress"]))  # the run's own key
    names = list(load_student(model).class_names)
    rng = np.random.default_rng(0)
    for spec in tqdm(find_bags([root]), desc="synthetic records", unit="bag"):
        recs = synthetic_records(spec.name, frames, names, rng)
        fleet.store.save_done(spec, {"records": recs, "classes": names, "backend": "torch"})
    sizes = sum(f.stat().st_size for f in out.glob("bags/*/frames.jsonl"))
    info = run_fleet(args, out)
    assert info["resumed"] == n_bags and info["evaluated"] == 0, info
    return {"bags": n_bags, "frames_per_bag": frames, "records_mb": sizes / 1e6,
            "merge_s": info["merge_s"], "command_s": info["command_s"]}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bags", type=int, default=16, help="bags per throughput run")
    p.add_argument("--scans", type=int, default=50, help="scans per bag (a run's work must "
                   "dwarf the workers' start, ~2 s)")
    p.add_argument("--beams", type=int, default=32, choices=(16, 32, 64))
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per configuration")
    p.add_argument("--merge-bags", type=int, default=1000)
    p.add_argument("--frames", type=int, default=100, help="synthetic scans per merged bag")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    doc: dict[str, Any] = {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench_fleet_") as tmp_name:
        tmp = Path(tmp_name)
        bags, model = make_inputs(tmp, a.bags, a.scans, a.beams)
        if not a.skip_throughput:
            doc["throughput"] = tp = throughput(bags, model, a.bags, a.rounds, tmp)
            print("median bags/h: " + ", ".join(f"{k} {v:.0f}" for k, v in tp["median"].items())
                  + f"; 2 workers / 1 worker = {tp['ratio_2_over_1']:.2f}x (target >= 1.8x); "
                  f"2 workers / 1 worker of 2 threads = {tp['ratio_2_over_1x2']:.2f}x")
        doc["merge"] = m = merge_timing(model, a.merge_bags, a.frames, tmp)
        print(f"merge of {m['bags']} bags x {m['frames_per_bag']} scans ({m['records_mb']:.0f} MB "
              f"of records): {m['merge_s']:.2f} s merge, {m['command_s']:.2f} s the whole "
              "command (target <= 10 s)")
    doc["load_at_end"] = os.getloadavg()
    if a.json:
        a.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
