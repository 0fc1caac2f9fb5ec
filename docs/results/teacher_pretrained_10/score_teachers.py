"""Score an arm's teachers against the scratch ones (seeds 0-2) on validation streets
104-113 x 4 scans and write the paired comparison (the pre-registered measurement).

Run from the repository root:
python docs/results/teacher_pretrained_10/score_teachers.py RUNS OUT [ARM]
(RUNS holds scratch/seed<s>/ and ARM/seed<s>/ with teacher.pt and recipe.json; ARM
defaults to pretrained; OUT/teachers.json for pretrained, else OUT/<ARM>.json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from xmodelkd_ros.evaluation.score import held_out_scans, score_teacher
from xmodelkd_ros.evaluation.stats import miou_from_confusion, paired_gain
from xmodelkd_ros.labels import CLASS_NAMES
from xmodelkd_ros.training.recipe import load_recipe

runs, out = Path(sys.argv[1]), Path(sys.argv[2])
ARM = sys.argv[3] if len(sys.argv) > 3 else "pretrained"
out.mkdir(parents=True, exist_ok=True)
seeds = [
    s
    for s in range(3)
    if all((runs / a / f"seed{s}" / "teacher.pt").is_file() for a in ("scratch", ARM))
]
recipe = load_recipe(str(runs / "scratch" / f"seed{seeds[0]}" / "recipe.json"))
scans = held_out_scans(range(104, 114), 4, 10, 32, 3, tuple(recipe.data.render_size), split="val")
cms = {}
for arm in ("scratch", ARM):
    per_seed = []
    for s in seeds:
        run = runs / arm / f"seed{s}"
        per_seed.append(
            score_teacher(run / "teacher.pt", scans, load_recipe(str(run / "recipe.json")))
        )
        print(f"{arm} seed {s}: {100 * miou_from_confusion(per_seed[-1].sum(0)):.1f}", flush=True)
    cms[arm] = np.stack(per_seed)
g = paired_gain(cms[ARM], cms["scratch"], reps=2000)
doc = {
    "seeds": seeds,
    "val_streets": "104-113",
    "scans_per_street": 4,
    "miou": {a: [float(v) for v in 100 * miou_from_confusion(cm.sum(1))] for a, cm in cms.items()},
    f"{ARM}_minus_scratch": {
        "mean": 100 * g.mean,
        "ci95": [100 * g.ci[0], 100 * g.ci[1]],
        "per_seed": [float(v) for v in 100 * g.per_seed],
        "per_class": {
            c: None if np.isnan(m) else round(100 * float(m), 1)
            for c, m in zip(CLASS_NAMES, g.class_mean, strict=True)
        },
    },
}
name = "teachers" if ARM == "pretrained" else ARM
(out / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
np.savez_compressed(out / f"{name}_scores.npz", **cms)
print(json.dumps(doc, indent=1))
