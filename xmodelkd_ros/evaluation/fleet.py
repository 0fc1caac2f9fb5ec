"""``python -m xmodelkd_ros.evaluation.fleet``: many bags, one merged report, a CI verdict.

Why: a model is released on its accuracy over many recorded drives, not one; a fleet of
bags outgrows one replay at a time. This command evaluates a folder (or list) of labeled
bags offline through the node's ``Segmenter`` (the node's inputs and scoring, no DDS):
ROS 2 bags (sqlite3 / MCAP, ground truth on a labels topic, as the simulator writes them)
and SemanticKITTI sequences. One task per bag, in local worker processes or, with
``--ray ADDRESS``, on a Ray cluster; a failed bag is retried once, then reported with its
reason. Finished bags are kept (``<out>/bags/<id>/frames.jsonl`` + ``done.json``), so the
same command after a kill continues with the rest. Writes the merged report
(``report.md`` / ``report.json`` / plots: overall mIoU with a bootstrap 95 % interval over
bags and scans, per-bag and per-class tables, the worst 20 frames) and ``run.json`` (the
engine and timings, kept out of the report so that the report does not depend on them).

Exit codes: 0 every bag evaluated and every criterion met, 1 a criterion not met (or,
without criteria, a bag failed), 2 bad input (one line), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xmodelkd_ros.evaluation import criteria as crit
from xmodelkd_ros.evaluation.cli import progress_bar
from xmodelkd_ros.evaluation.fleet_bags import FleetError, find_bags
from xmodelkd_ros.evaluation.fleet_store import FleetStore, model_digest
from xmodelkd_ros.evaluation.fleet_worker import BagTask, ModelSpec

PROG = "python -m xmodelkd_ros.evaluation.fleet"
NOT_OFFLINE = "offline evaluation has no node in the loop: the replay measures it"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Evaluate many labeled bags (ROS 2 sqlite3/MCAP with a labels topic, "
        "SemanticKITTI sequences) offline through the node's Segmenter: one task per bag in "
        "local worker processes or on a Ray cluster; one merged report with a bootstrap "
        "95%% CI over bags and scans; --criteria gates CI (exit 0 pass, 1 fail, 2 bad input)."
    )  # fmt: skip
    p.add_argument("bags", nargs="*", help="bags (rosbag2 folders), SemanticKITTI sequences, "
                   "or folders searched for them")  # fmt: skip
    p.add_argument("--list", dest="list_file", help="a file naming bags, one path per line")
    p.add_argument("--model", required=True, type=Path,
                   help="exported model dir (model.json) or a student .pt")
    p.add_argument("--out", type=Path, default=Path("runs/fleet"), help="output folder")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="parallel bags (local processes; with --ray local, the cluster's CPUs)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per bag (default: cores / workers locally, 1 on Ray)")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run on Ray: 'auto' (the running cluster), 'local' (start one on this "
                        "machine, loopback only) or the cluster's address")  # fmt: skip
    p.add_argument("--backend", default="auto",
                   choices=("auto", "tensorrt", "onnxruntime", "torch"))  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--lidar-topic", default=None, help="LiDAR topic (default: auto)")
    p.add_argument("--labels-topic", default=None,
                   help="ground-truth PointCloud2 with a 'label' field (default: /lidar/labels "
                        "when a bag has it)")  # fmt: skip
    p.add_argument("--criteria", type=Path, default=None,
                   help="pass/fail criteria (YAML, e.g. config/criteria.yaml)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates")
    p.set_defaults(progress=True)
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   default=argparse.SUPPRESS, help="no progress bar")  # fmt: skip
    return p


def model_classes(model: Path) -> list[str]:
    """The model's class names (an export's ``model.json``, a checkpoint's own), read
    before any worker starts, so a bad model is one line (exit 2) and not a failed bag."""
    from xmodelkd_ros.nets.checkpoint import CheckpointError, load_student
    from xmodelkd_ros.runtime.metadata import ModelLoadError, ModelMetadata

    try:
        if model.is_dir():
            return list(ModelMetadata.read(model).class_names)
        return list(load_student(model).class_names)
    except (ModelLoadError, CheckpointError) as exc:
        raise FleetError(str(exc)) from None


def _criteria(path: Path | None, classes: list[str]) -> crit.Criteria | None:
    if path is None:
        return None
    c = crit.load_criteria(path)
    c.require({"miou": None, "class_iou": None, "answered_fraction": None,
               "unscored_fraction": None, "failed_bags": None,
               "p95_latency_ms": NOT_OFFLINE, "dropped_fraction": NOT_OFFLINE}, classes)
    return c


class Fleet:
    """One run: the bags, the model, the store of finished bags, and the engine."""

    def __init__(self, args: argparse.Namespace) -> None:
        from xmodelkd_ros.replay.node_process import check_model
        from xmodelkd_ros.replay.options import ReplayError

        if args.workers < 1 or (args.threads is not None and args.threads < 1):
            raise FleetError("--workers and --threads must be >= 1")
        if args.bootstrap < 100:
            raise FleetError("--bootstrap must be >= 100")
        self.args = args
        self.bags = find_bags(args.bags, args.list_file)
        try:
            model = check_model(args.model)
        except ReplayError as exc:
            raise FleetError(str(exc)) from None
        self.classes = model_classes(model)
        self.criteria = _criteria(args.criteria, self.classes)
        threads = args.threads or (1 if args.ray else max(1, (os.cpu_count() or 1)
                                                          // args.workers))  # fmt: skip
        self.model = ModelSpec(str(model), args.backend, args.device, threads)
        self.meta = {"model": str(args.model), "model_sha256": model_digest(model),
                     "device": args.device, "lidar_topic": args.lidar_topic,
                     "labels_topic": args.labels_topic}  # fmt: skip
        self.store = FleetStore(args.out, {**self.meta, "backend": args.backend})
        self.failures: dict[str, str] = {}
        self.evaluated = 0

    def log(self, msg: str) -> None:
        print(f"[fleet] {msg}", file=sys.stderr, flush=True)

    def _engine(self, tasks: list[BagTask], bar: Any) -> dict[str, Any]:
        """Run ``tasks`` on the chosen engine; returns what ``run.json`` says about it."""
        from xmodelkd_ros.evaluation import fleet_engine as engine

        def done(task: BagTask, result: dict[str, Any]) -> None:
            self.store.save_done(task.bag, result)
            self.evaluated += 1
            if bar is not None:
                bar.update(1)

        def failed(task: BagTask, reason: str) -> None:
            self.store.save_failed(task.bag, reason)
            self.failures[task.bag.name] = reason
            self.log(f"bag {task.bag.name} failed twice: {reason}")
            if bar is not None:
                bar.update(1)

        if self.args.ray is None:
            workers = min(self.args.workers, max(1, len(tasks)))
            engine.run_local(tasks, workers, done, failed, self.log)
            return {"engine": "local processes", "workers": workers}
        ray, started = engine.connect_ray(self.args.ray, self.args.workers)
        try:
            info = {"engine": "ray", "address": self.args.ray,
                    "nodes": sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]),
                    "cpus": ray.cluster_resources().get("CPU")}  # fmt: skip
            engine.run_ray(ray, tasks, done, failed)
        finally:
            if started:
                ray.shutdown()
        return info

    def run(self) -> int:
        from xmodelkd_ros.evaluation.fleet_report import write_report

        t0 = time.perf_counter()
        todo = [b for b in self.bags if self.store.done(b) is None]
        resumed = len(self.bags) - len(todo)
        self.log(f"{len(self.bags)} bags ({resumed} already done in {self.args.out}), model "
                 f"{self.args.model}, {self.model.threads} thread(s) per bag"
                 + (f", Ray at {self.args.ray}" if self.args.ray else
                    f", {min(self.args.workers, max(1, len(todo)))} local worker(s)"))
        bar = progress_bar(self.args.progress, len(self.bags), "bags")
        if bar is not None:
            bar.update(resumed)
        tasks = [BagTask(b, self.model, self.args.lidar_topic, self.args.labels_topic)
                 for b in todo]  # fmt: skip
        info = self._engine(tasks, bar) if tasks else {"engine": "none (all bags done)"}
        if bar is not None:
            bar.close()
        wall = time.perf_counter() - t0
        doc = self.merge()
        write_report(Path(self.args.out), doc)
        t_merge = time.perf_counter() - t0 - wall  # reading the records to the report's files
        return self.finish(doc, dict(info, wall_s=wall, merge_s=t_merge, resumed=resumed,
                                     evaluated=self.evaluated, failed=len(self.failures),
                                     threads_per_bag=self.model.threads,
                                     bags_per_hour=3600 * self.evaluated / wall if wall else None))

    def merge(self) -> dict[str, Any]:
        """The merged document from the store (finished bags) and this run's failures."""
        from xmodelkd_ros.evaluation.fleet_merge import merge

        entries, records, backends = [], {}, set()
        for b in self.bags:
            entry = {"bag": b.name, "path": b.path, "kind": b.kind, "status": "ok"}
            marker = self.store.done(b)
            if marker is None:
                entry.update(status="failed", reason=self.failures.get(b.name)
                             or self.store.failed(b) or "not evaluated")  # fmt: skip
            else:
                try:
                    records[b.name] = self.store.records(b)
                except (OSError, ValueError) as exc:
                    raise FleetError(f"cannot read the records of bag {b.name}: {exc}; delete "
                                     f"{self.store.folder(b)} to evaluate it again") from None
                backends.add(marker["backend"])
            entries.append(entry)
        meta = dict(self.meta, backend=sorted(backends))
        doc = merge(entries, records, self.classes, meta, self.args.bootstrap)
        if self.criteria is not None:
            from xmodelkd_ros.evaluation.fleet_merge import measured

            doc["criteria"] = crit.check(self.criteria, measured(doc))
        return doc

    def finish(self, doc: dict[str, Any], run_info: dict[str, Any]) -> int:
        """Write ``run.json``, print the summary and the verdict; the exit code."""
        import json

        from xmodelkd_ros.evaluation.fleet_report import summary_line

        out = Path(self.args.out)
        (out / "run.json").write_text(json.dumps(run_info, indent=1) + "\n")
        print(summary_line(doc), flush=True)
        for f in doc["failed_bags"]:
            print(f"failed: {f['bag']}: {f['reason']}", flush=True)
        print(f"report: {out / 'report.md'}", flush=True)
        if "criteria" in doc:
            print(crit.terminal(doc["criteria"]), flush=True)
            return 0 if crit.passed(doc["criteria"]) else 1
        return 1 if doc["failed_bags"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return Fleet(args).run()
    except (FleetError, crit.CriteriaError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue with the bags left",
              file=sys.stderr)  # fmt: skip
        return 130


if __name__ == "__main__":
    sys.exit(main())
