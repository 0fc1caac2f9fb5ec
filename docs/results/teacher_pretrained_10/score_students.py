"""Score the distilled students of the scratch and the pretrained teachers (seeds 0-2) on
validation streets 104-113 x 4 scans through the node's Segmenter, paired by seed.

Run from the repository root:
python docs/results/teacher_pretrained_10/score_students.py RUNS OUT
(RUNS holds scratch/seed<s>/student.pt and pretrained/seed<s>/student.pt)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from xmodelkd_ros.evaluation.score import held_out_scans, score_student
from xmodelkd_ros.evaluation.stats import miou_from_confusion, paired_gain
from xmodelkd_ros.labels import CLASS_NAMES

runs, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
arms = ("scratch", "pretrained")
seeds = [s for s in range(3) if all((runs / a / f"seed{s}" / "student.pt").is_file() for a in arms)]
scans = held_out_scans(range(104, 114), 4, 10, 32, 0, (1, 1), split="val")
cms = {a: np.stack([score_student(runs / a / f"seed{s}" / "student.pt", scans) for s in seeds])
       for a in arms}  # fmt: skip
g = paired_gain(cms["pretrained"], cms["scratch"], reps=2000)
doc = {
    "seeds": seeds,
    "val_streets": "104-113",
    "scans_per_street": 4,
    "miou": {a: [float(v) for v in 100 * miou_from_confusion(cm.sum(1))] for a, cm in cms.items()},
    "student_of_pretrained_minus_student_of_scratch": {
        "mean": 100 * g.mean,
        "ci95": [100 * g.ci[0], 100 * g.ci[1]],
        "per_seed": [float(v) for v in 100 * g.per_seed],
        "per_class": {
            c: None if np.isnan(m) else round(100 * float(m), 1)
            for c, m in zip(CLASS_NAMES, g.class_mean, strict=True)
        },
    },
}
(out / "students.json").write_text(json.dumps(doc, indent=1) + "\n")
np.savez_compressed(out / "students_scores.npz", **cms)
print(json.dumps(doc, indent=1))
