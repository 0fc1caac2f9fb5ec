"""Two CPU processes (gloo) under torchrun: DDP replicas keep identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_gloo_replicas_stay_identical(tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "test" / "training_hooks.py"),  # the CLI + DumpRankWeights
        "--stage",
        "baseline",
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
        "--set",
        "data.train_scans=4",
        "data.val_scans=1",
        "data.max_points=1500",
        "data.eval_max_points=1500",
        "data.render_size=[60,100]",
        "data.image_size=[32,48]",
        "schedule.student_epochs=1",
        "schedule.control_epochs=student",  # the baseline alone: 1 epoch, not the lineage's
        "log.tensorboard=false",
        "threads=1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # 4 scans, 2 ranks, batch 2: each rank takes one step on different scans.
    assert "1 epochs x 1 steps" in proc.stderr
    p0 = torch.load(out / "baseline" / "rank0_params.pt", weights_only=True)
    p1 = torch.load(out / "baseline" / "rank1_params.pt", weights_only=True)
    assert p0.keys() == p1.keys() and len(p0) > 10
    for k in p0:
        torch.testing.assert_close(p0[k], p1[k], rtol=0, atol=0, msg=k)
    assert (out / "baseline.pt").is_file()
