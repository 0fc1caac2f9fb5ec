"""Per-stage latency of the Segmenter on this machine, for torch and ONNX Runtime.

Decode (PointCloud2 -> numpy) is excluded: the scan is already an (N, 4) float32
array. Stages are the Segmenter's own timings (voxelize, maps, inference,
postprocess, total), medians over the repeats, plus the ratio of pre/post-processing
(voxelize + maps + postprocess) to model (inference) time, which says whether
optimising the network or the data preparation pays off next.

    python bench/bench_runtime.py [--model-dir DIR] [--sizes 35000 120000] [--threads 1]

Without ``--model-dir`` an untrained small student is exported first (same graph
size and cost as a trained one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xmodelkd_ros.nets.inputs import build_inputs
from xmodelkd_ros.runtime import Segmenter
from xmodelkd_ros.sim.fixtures import exported_random_model, synthetic_scan

STAGES = ("voxelize", "maps", "inference", "postprocess", "total")


def bench(seg: Segmenter, n: int, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per stage over ``repeats`` runs on one synthetic ``n``-point scan."""
    scan = synthetic_scan(n, seed=n)
    for _ in range(warmup):
        seg.segment(scan)
    runs = [seg.segment(scan).timings for _ in range(repeats)]
    med = {k: statistics.median(r[k] for r in runs) for k in STAGES}
    med["prepost_over_model"] = (med["voxelize"] + med["maps"] + med["postprocess"]) / max(
        med["inference"], 1e-9
    )
    return med


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--sizes", type=int, nargs="+", default=[35_000, 120_000])
    p.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = library default)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = args.model_dir or exported_random_model("small", seed=0)
    results = []
    print(f"torch threads {torch.get_num_threads()}, ORT threads {args.threads or 'default'}")
    header = "| backend | points | voxels L0 | " + " | ".join(STAGES) + " | pre+post / model |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for backend in args.backends:
        seg = Segmenter.from_model_dir(model_dir, backend=backend, intra_op_threads=args.threads)
        for n in args.sizes:
            med = bench(seg, n, args.repeats, args.warmup)
            m0 = build_inputs([synthetic_scan(n, seed=n)], seg.grid, 4, 4).maps.sizes()[0]
            results.append({"backend": backend, "points": n, "voxels": m0, **med})
            cells = " | ".join(f"{med[k] * 1e3:.1f} ms" for k in STAGES)
            print(f"| {backend} | {n} | {m0} | {cells} | {med['prepost_over_model']:.2f} |")
            sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
