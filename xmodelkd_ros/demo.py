"""The end-to-end demo: ``python -m xmodelkd_ros.demo [--out runs/demo] [--smoke] [--seed S]``.

Why one command: a newcomer on a fresh machine (after ``bash scripts/setup_env.sh``)
should see the whole claim of the project -- a LiDAR-only student distilled from a
camera+LiDAR teacher beats the same student trained on labels only, and it runs live
as a ROS 2 node -- without reading any other document. The demo only orchestrates the
project's own CLIs, in-process through their ``main(argv)`` (no second implementation):

1. check the environment (rclpy, ONNX Runtime),
2. write a held-out synthetic drive as a ROS 2 bag (a street the training never sees),
3. train teacher, distilled student and baseline (``training.train --stage all
   --parallel-baseline``: the baseline on the second core; the synthetic recipe as it is,
   or the ``--smoke`` schedule through ``--set`` overrides),
4. export both students to ONNX,
5. score both students offline on every scan of the held-out bag (same Segmenter the
   node uses; the gain with a bootstrap interval over the scans), then replay the bag
   through the live node at ``--rate`` (or ``--max-throughput``) for latency, drops and
   the node's own mIoU,
6. print a summary table and write ``summary.md`` / ``summary.json``. Accuracy claims
   are not made here (one street, one seed) but by
   ``python -m xmodelkd_ros.evaluation.benchmark``: the summary prints the committed
   claim for the run's label regime (the newest measurement under ``docs/results/``,
   :mod:`xmodelkd_ros.evaluation.claim`) beside its own one-seed line, and says which
   one is the claim. The seed is ``--seed`` (default 0), never chosen by its result.

Any failing stage ends the demo with exit code 1 and one line naming the stage and
the reason (details in ``<out>/demo_error.log``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Training overrides (``--set``) of the synthetic recipe per demo size. ``full`` runs
#: the recipe as it is (its schedule is the one whose distillation gain was measured;
#: 10.5 min of training measured on an idle 2-core CPU, 15.9 min in a slow phase of the
#: same VM before the faster losses: 40-epoch teacher and 24-epoch student on one core,
#: the 64-epoch baseline beside them, ``--parallel-baseline``);
#: ``smoke`` only proves every stage runs (well under 2 min), its mIoUs mean nothing.
SCHEDULES: dict[str, list[str]] = {
    "full": [
        "data.eval_max_points=20000",
        "log.tensorboard=false",
    ],
    "smoke": [
        "data.train_scans=6",
        "data.val_scans=2",
        "data.max_points=3000",
        "data.eval_max_points=2000",
        "data.render_size=[60,100]",
        "data.image_size=[32,48]",
        "schedule.teacher_epochs=2",
        "schedule.student_epochs=2",
        "log.tensorboard=false",
    ],
}
#: Held-out bag per demo size: scans, beams, cameras, camera size (W, H).
BAGS: dict[str, dict[str, int]] = {
    "full": {"scans": 30, "beams": 32, "cameras": 3, "width": 320, "height": 180},
    "smoke": {"scans": 4, "beams": 16, "cameras": 1, "width": 100, "height": 60},
}
HELD_OUT_WORLD = 202  # world seed of the held-out street (training uses 1 and 101)
#: Where the project's accuracy claims are made (held-out streets, seeds, CI).
BENCHMARK = "python -m xmodelkd_ros.evaluation.benchmark"
#: Written next to the held-out bag: the settings it was made with (a rerun with other
#: ``--smoke`` / ``--seed`` regenerates the bag instead of scoring a different street).
BAG_SETTINGS = "bag_settings.json"


class StageError(RuntimeError):
    """A stage failed; the message is the one line the user sees."""


class Demo:
    """Runs the stages in order, timing each and stopping at the first failure."""

    def __init__(self, out: Path, smoke: bool, seed: int, replay_args: list[str]) -> None:
        self.out = out
        self.size = "smoke" if smoke else "full"
        self.seed = seed
        self.replay_args = replay_args
        self.timings: dict[str, float] = {}
        self.results: dict[str, Any] = {}
        self._n = 0

    # ------------------------------------------------------------------ plumbing
    def stage(self, name: str, title: str, fn: Callable[[], Any]) -> Any:
        """Banner, run, time; any exception or non-zero exit becomes :class:`StageError`."""
        self._n += 1
        print(f"\n=== [{self._n}/6] {title} ===", flush=True)
        t0 = time.perf_counter()
        try:
            result = fn()
        except StageError as exc:
            raise StageError(f"{name}: {exc}") from exc
        except SystemExit as exc:  # argparse inside a CLI
            raise StageError(f"{name}: exited with {exc.code}") from exc
        except BaseException as exc:
            log = self.out / "demo_error.log"
            with contextlib.suppress(OSError):
                log.write_text(traceback.format_exc())
            raise StageError(f"{name}: {type(exc).__name__}: {' '.join(str(exc).split())} "
                             f"(traceback in {log})") from exc  # fmt: skip
        self.timings[name] = time.perf_counter() - t0
        print(f"--- {name} done in {self.timings[name]:.1f} s", flush=True)
        return result

    @staticmethod
    def cli(name: str, main: Callable[[list[str]], int], argv: list[str]) -> None:
        print("$ python -m " + name + " " + " ".join(argv), flush=True)
        code = main(argv)
        if code != 0:
            raise StageError(f"{name} exited with code {code} (its error is printed above)")

    # ------------------------------------------------------------------ stages
    def check_env(self) -> None:
        try:
            import rclpy  # noqa: F401
            import rosgraph_msgs.msg  # noqa: F401
            import sensor_msgs.msg  # noqa: F401
        except ImportError as exc:
            raise StageError(f"rclpy is not importable ({exc}): run `bash scripts/setup_env.sh` "
                             "(ROS 2 wheels) or source a ROS 2 distribution") from None
        from xmodelkd_ros.runtime.backends import onnxruntime_available

        if not onnxruntime_available():
            raise StageError("onnxruntime is not installed: run `bash scripts/setup_env.sh`")
        import torch

        print(f"torch {torch.__version__}, rclpy ok, onnxruntime ok; output in {self.out}")

    def held_out_bag(self) -> Path:
        from xmodelkd_ros.sim.__main__ import main as sim_main

        b = BAGS[self.size]
        data = self.out / "heldout"
        bag = data / "bag"
        settings = {**b, "world_seed": HELD_OUT_WORLD + self.seed}
        recorded = data / BAG_SETTINGS
        if (bag / "metadata.yaml").is_file():
            try:
                previous = json.loads(recorded.read_text())
            except (OSError, ValueError):
                previous = None
            if previous == settings:
                print(f"reusing {bag} (made with the same settings)")
                return bag
            print(f"regenerating {bag}: it was made with other settings "
                  f"({previous or 'unknown'}, now {settings})")  # fmt: skip
            shutil.rmtree(data)
        self.cli("xmodelkd_ros.sim", sim_main, [
            "--out", str(data), "--format", "bag", "--scans", str(b["scans"]),
            "--beams", str(b["beams"]), "--cameras", str(b["cameras"]),
            "--width", str(b["width"]), "--height", str(b["height"]),
            "--seed", str(settings["world_seed"]), "--no-progress",
        ])  # fmt: skip
        recorded.write_text(json.dumps(settings, indent=1))
        return bag

    def train(self) -> dict[str, Any]:
        """The synthetic recipe with the demo's schedule, through the training API (the
        line it prints is the same run as a command)."""
        from xmodelkd_ros.nets.checkpoint import CheckpointError
        from xmodelkd_ros.training.api import train
        from xmodelkd_ros.training.context import TrainingStoppedError
        from xmodelkd_ros.training.data.semantickitti import DatasetError
        from xmodelkd_ros.training.recipe import RecipeError, load_recipe

        out = self.out / "train"
        sets = [f"out={out}", f"seed={self.seed}", *SCHEDULES[self.size]]
        print("$ python -m xmodelkd_ros.training.train --recipe synthetic --stage all "
              f"--no-progress --parallel-baseline --set {' '.join(sets)}", flush=True)  # fmt: skip
        try:
            train(load_recipe("synthetic", sets), "all", progress=False, parallel_baseline=True)
        except (RecipeError, DatasetError, CheckpointError, TrainingStoppedError) as exc:
            raise StageError(f"training: {exc}") from None
        for f in ("student.pt", "baseline.pt", "report.json"):
            if not (out / f).is_file():
                raise StageError(f"training finished without {out / f}")
        return json.loads((out / "report.json").read_text())

    def export(self) -> dict[str, Path]:
        from xmodelkd_ros.export import main as export_main

        dirs = {}
        for name, ckpt in (("distilled", "student.pt"), ("baseline", "baseline.pt")):
            d = self.out / ("model" if name == "distilled" else "model_baseline")
            self.cli("xmodelkd_ros.export", export_main,
                     ["--checkpoint", str(self.out / "train" / ckpt), "--out", str(d)])
            dirs[name] = d
        return dirs

    def offline(self, bag: Path, models: dict[str, Path]) -> dict[str, Any]:
        """Both students on every held-out scan, with the node's Segmenter (no ROS); the
        paired gain and its spread over the scans go to ``results["heldout_gain"]``."""
        from xmodelkd_ros.replay import offline_confusion, plan_bag, read_ground_truth
        from xmodelkd_ros.runtime import Segmenter

        plan = plan_bag(bag)
        gt = read_ground_truth(plan)
        res = {}
        per_scan: dict[str, dict[int, np.ndarray]] = {}
        for name, d in models.items():
            seg = Segmenter.from_model_dir(d, backend="onnxruntime")
            per_scan[name] = {}
            cm, counts = offline_confusion(plan, gt, seg, per_scan=per_scan[name])
            m = cm.result(seg.class_names)
            res[name] = {"miou": m.miou, "accuracy": m.accuracy, "scans": len(gt),
                         "points": counts.scored}  # fmt: skip
            print(f"{name}: held-out mIoU {100 * m.miou:.2f} over {len(gt)} scans")
        if {"distilled", "baseline"} <= set(per_scan):
            stamps = sorted(set(per_scan["distilled"]) & set(per_scan["baseline"]))
            self.results["heldout_gain"] = paired_gain(
                [per_scan["distilled"][t] for t in stamps],
                [per_scan["baseline"][t] for t in stamps])  # fmt: skip
        return res

    def replay(self, bag: Path, model: Path) -> dict[str, Any]:
        from xmodelkd_ros.replay import main as replay_main

        report = self.out / "replay"
        self.cli("xmodelkd_ros.replay", replay_main, [
            "--bag", str(bag), "--model", str(model), "--report", str(report),
            *self.replay_args,
        ])  # fmt: skip
        return json.loads((report / "report.json").read_text())

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        self.stage("setup", "check the environment", self.check_env)
        bag = self.stage("bag", "held-out synthetic drive -> ROS 2 bag", self.held_out_bag)
        train = self.stage("train", f"train teacher, distilled student, baseline "
                                    f"({self.size} schedule)", self.train)  # fmt: skip
        models = self.stage("export", "export both students to ONNX", self.export)
        offline = self.stage("offline", "score both students on the held-out bag",
                             lambda: self.offline(bag, models))  # fmt: skip
        replay = self.stage("replay", "replay the held-out bag through the live node",
                            lambda: self.replay(bag, models["distilled"]))  # fmt: skip
        self.timings["total"] = time.perf_counter() - t0
        summary = make_summary(self, train, offline, replay, bag, models)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        text = format_summary(summary)
        (self.out / "summary.md").write_text(text)
        print("\n" + text, flush=True)
        return summary


def _miou(confusion: np.ndarray) -> np.ndarray:
    """mIoU over classes with a non-empty union, of each ``(..., C, C)`` matrix (the
    training metric's definition, vectorised over the leading axes)."""
    cm = confusion.astype(np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    union = cm.sum(-2) + cm.sum(-1) - tp
    present = union > 0
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=present)
    n = present.sum(-1)
    return np.divide(iou.sum(-1), n, out=np.zeros_like(n, dtype=np.float64), where=n > 0)


def paired_gain(
    distilled: Sequence[np.ndarray], baseline: Sequence[np.ndarray], n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Distilled - baseline mIoU on the same scans, with its spread over scans.

    ``gain``: of the pooled confusions (the headline). ``ci95``: 2.5/97.5 percentiles of
    that gain over bootstrap resamples of the scans (both models resampled together, so
    the pairing is kept). ``per_scan_mean`` / ``per_scan_wins``: the per-scan paired
    mIoU difference, its mean and the scans where distilled is better. One street and
    one seed: this shows how much the scans disagree, not the method's gain.
    """
    a = np.stack([np.asarray(m) for m in distilled])
    b = np.stack([np.asarray(m) for m in baseline])
    if a.shape != b.shape or len(a) == 0:
        raise ValueError(f"need the same scans for both models, got {a.shape} and {b.shape}")
    gain = float(_miou(a.sum(0)) - _miou(b.sum(0)))
    rng = np.random.default_rng(seed)
    weights = np.stack([np.bincount(rng.integers(0, len(a), len(a)), minlength=len(a))
                        for _ in range(n_boot)]).astype(np.float64)  # fmt: skip
    boot = (_miou(np.einsum("rs,sij->rij", weights, a))
            - _miou(np.einsum("rs,sij->rij", weights, b)))  # fmt: skip
    diff = _miou(a) - _miou(b)
    return {"gain": gain, "ci95": [float(np.percentile(boot, 2.5)),
                                   float(np.percentile(boot, 97.5))],
            "per_scan_mean": float(diff.mean()), "per_scan_wins": int((diff > 0).sum()),
            "scans": len(a)}  # fmt: skip


def _pct(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def training_epochs(recipe_json: Path) -> dict[str, int]:
    """Epochs behind each compared model (the baseline trains as long as the distilled
    student's lineage by default, docs/results.md); empty without the run's recipe."""
    from xmodelkd_ros.training.recipe import load_recipe
    from xmodelkd_ros.training.stages import recipe_epochs

    if not recipe_json.is_file():
        return {}
    e = recipe_epochs(load_recipe(str(recipe_json)))
    return {"teacher": e["teacher"], "distilled": e["distilled_lineage"],
            "baseline": e["controls"]}  # fmt: skip


def run_claim(recipe_json: Path) -> dict[str, Any] | None:
    """The committed claim for the run's regime: its label fraction, unlabeled pool and
    image branch (None without the run's recipe or a committed measurement)."""
    from xmodelkd_ros.evaluation.claim import committed_claim, image_branch
    from xmodelkd_ros.training.recipe import load_recipe

    if not recipe_json.is_file():
        return None
    recipe = load_recipe(str(recipe_json))
    claim = committed_claim(recipe.data.label_fraction, pool_scans=recipe.data.unlabeled_scans,
                            image_branch=image_branch(recipe.to_dict()))  # fmt: skip
    return None if claim is None else claim.to_dict()


def make_summary(
    demo: Demo, train: dict[str, Any], offline: dict[str, Any], replay: dict[str, Any],
    bag: Path, models: dict[str, Path],
) -> dict[str, Any]:  # fmt: skip
    """The numbers the demo promises, in one JSON-able dict."""
    val = {k: v.get("miou") for k, v in train.get("models", {}).items()}
    node_stages = replay["node_diagnostics"]["stages_ms"]
    return {
        "size": demo.size,
        "seed": demo.seed,
        "epochs": training_epochs(demo.out / "train" / "recipe.json"),
        "miou_validation": val,
        "miou_heldout_offline": {k: v["miou"] for k, v in offline.items()},
        "heldout_gain": demo.results.get("heldout_gain"),
        "claim": run_claim(demo.out / "train" / "recipe.json"),
        "miou_heldout_node": (replay.get("metrics") or {}).get("miou"),
        "replay_mode": replay["mode"],
        "latency_ms": replay["latency_ms"]["stamp_to_output"],
        "node_total_ms": node_stages.get("total", {}),
        "scans": {k: replay["scans"][k] for k in ("published", "received", "dropped", "late")},
        "sustainable_rate_hz": replay["throughput"].get("sustainable_rate_hz"),
        "output_rate_hz": replay["throughput"].get("output_rate_hz"),
        "paths": {
            "model": str(models["distilled"]),
            "baseline_model": str(models["baseline"]),
            "training_report": str(demo.out / "train" / "report.md"),
            "replay_report": str(demo.out / "replay" / "report.md"),
            "bag": str(bag),
        },
        "timings_s": {k: round(v, 1) for k, v in demo.timings.items()},
    }


def _gain_lines(s: dict[str, Any]) -> list[str]:
    """The committed claim (when the summary carries one) and this run's one-seed gain,
    each saying what it is."""
    lines: list[str] = []
    if "claim" in s:
        from xmodelkd_ros.evaluation.claim import claim_line

        lines += ["", claim_line(s["claim"]), ""]
    g = s.get("heldout_gain")
    if g is None:
        return lines
    lo, hi = g["ci95"]
    head = ("This run (one seed, one held-out street; not the claim): distilled - baseline"
            if "claim" in s else "\nDistilled - baseline")  # fmt: skip
    return [
        *lines,
        f"{head} on the held-out bag: **{100 * g['gain']:+.2f} mIoU** "
        f"(95% interval over its {g['scans']} scans: {100 * lo:+.2f} to {100 * hi:+.2f}; "
        f"per scan: mean {100 * g['per_scan_mean']:+.2f}, distilled better on "
        f"{g['per_scan_wins']}/{g['scans']})",
        f"One street and one seed show the spread, not the method's gain: accuracy "
        f"claims are made by `{BENCHMARK}` (held-out streets, several seeds, CI).",
    ]


def format_summary(s: dict[str, Any]) -> str:
    """The final table (Markdown, readable in a terminal)."""
    val, off = s["miou_validation"], s["miou_heldout_offline"]
    lat, sc = s["latency_ms"], s["scans"]
    ep = {k: f", {v} epochs" for k, v in (s.get("epochs") or {}).items()}
    lines = [
        f"## xmodelkd_ros demo summary ({s['size']}, seed {s['seed']})", "",
        "| model | val mIoU | held-out bag mIoU |", "|---|---|---|",
        f"| baseline (LiDAR only{ep.get('baseline', '')}) | {_pct(val.get('baseline'))} | "
        f"{_pct(off.get('baseline'))} |",
        f"| distilled (from camera+LiDAR teacher{ep.get('distilled', '')}) | "
        f"{_pct(val.get('distilled'))} | {_pct(off.get('distilled'))} |",
    ]  # fmt: skip
    if val.get("teacher") is not None:
        lines.append(f"| teacher (camera+LiDAR, not deployed{ep.get('teacher', '')}) | "
                     f"{_pct(val['teacher'])} | - |")  # fmt: skip
    lines += _gain_lines(s)
    rate = s.get("sustainable_rate_hz")
    lines += [
        "", f"Live node ({s['replay_mode']}): mIoU {_pct(s['miou_heldout_node'])}, "
        f"latency p50 {_ms(lat['p50'])} ms / p95 {_ms(lat['p95'])} ms (bag stamp -> output), "
        f"node processing p50 {_ms(s['node_total_ms'].get('p50'))} ms / p95 "
        f"{_ms(s['node_total_ms'].get('p95'))} ms",
        f"Scans: {sc['received']}/{sc['published']} answered, {sc['dropped']} dropped, "
        f"{sc['late']} late" + (f"; sustainable {rate:.2f} scans/s" if rate else ""),
        "", "| what | where |", "|---|---|",
    ]  # fmt: skip
    for k, v in s["paths"].items():
        lines.append(f"| {k.replace('_', ' ')} | {v} |")
    t = s["timings_s"]
    lines += ["", "Stage times (s): " + ", ".join(f"{k} {v}" for k, v in t.items())]
    if s["size"] == "smoke":
        lines.append("\n(smoke schedule: proves every stage runs; its mIoUs are not meaningful)")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """CLI of the demo (README's first command)."""
    p = argparse.ArgumentParser(
        prog="python -m xmodelkd_ros.demo",
        description="Synthetic world -> train baseline and distilled student -> export -> "
        "replay a held-out bag through the live ROS 2 node -> summary.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    p.add_argument("--smoke", action="store_true",
                   help="tiny schedule and bag (~2 min): proves the pipeline, not the method")
    p.add_argument("--seed", type=int, default=0, help="training seed and held-out world")
    p.add_argument("--rate", type=float, default=1.0, help="replay rate (default real time)")
    p.add_argument("--max-throughput", action="store_true",
                   help="replay with back-pressure instead of at --rate")
    p.add_argument("--domain-id", type=int, default=None,
                   help="ROS domain of the replay (default: a private one)")
    return p  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0, or 1 after one ``demo: FAILED ...`` line."""
    a = build_parser().parse_args(argv)
    replay_args = ["--max-throughput"] if a.max_throughput else ["--rate", f"{a.rate:g}"]
    if a.domain_id is not None:
        replay_args += ["--domain-id", str(a.domain_id)]
    demo = Demo(a.out, a.smoke, a.seed, replay_args)
    try:
        demo.run()
    except StageError as exc:
        print(f"\ndemo: FAILED at stage {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr, flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
