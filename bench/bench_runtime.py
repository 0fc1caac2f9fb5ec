"""End-to-end Segmenter latency per backend, spconv-CPU on the same weights, in one run.

For each backend (``torch`` with its fused C++ kernels, ``torch-eager`` = the same with
them off, ``onnxruntime`` = what that backend runs on CPU: the fused graph
``model_cpu_fused.onnx`` with the custom-op library where it builds,
``onnxruntime-pairs`` = the standard-ops pairs graph ``model_cpu.onnx``,
``onnxruntime-tables`` = the TensorRT-safe Gather graph run by ONNX Runtime) and for the
same student with spconv's CPU convs, at each scan size: p50 / p95 of the end-to-end
time (voxelize + maps + network + postprocess; decode excluded, the scan is already
an (N, 4) float32 array), the median stage split, the useful GFLOP/s (multiply-adds of
real neighbour pairs and the point-wise layers, x2, over the median network time) and
its ratio to this machine's own GEMM rate, measured in the same run with the same
thread count. Everything runs interleaved in one process so a shared machine's load
hits all rows alike; compare ratios, not absolute numbers, across runs.

    python bench/bench_runtime.py [--threads 2] [--sizes 35000 120000] [--repeats 30]
        [--model-dir DIR] [--json out.json] [--markdown out.md]

Without ``--model-dir`` an untrained student with the demo's architecture and voxel
size is exported (same graph, same cost as the trained demo model).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from doc_block import markers, replace_block

from xmodelkd_ros.nets.checkpoint import load_student
from xmodelkd_ros.nets.inputs import build_inputs
from xmodelkd_ros.runtime import Segmenter, SegmentResult, choose_backend
from xmodelkd_ros.runtime.backends import OnnxRuntimeBackend
from xmodelkd_ros.runtime.metadata import CPU_ONNX_FILE, ONNX_FILE
from xmodelkd_ros.sim.fixtures import (
    DEMO_STUDENT,
    DEMO_VOXEL_SIZE,
    exported_random_model,
    synthetic_scan,
)
from xmodelkd_ros.sparse import ConvPairs, SparseConv3d, fused, spconv_available

STAGES = ("voxelize", "maps", "inference", "postprocess", "total")
RUNNERS = ("torch", "torch-eager", "onnxruntime", "onnxruntime-pairs", "onnxruntime-tables",
           "spconv-cpu")  # fmt: skip
#: ONNX Runtime on a fixed graph: (file, form)
ORT_GRAPHS = {
    "onnxruntime-pairs": (CPU_ONNX_FILE, "pairs"),
    "onnxruntime-tables": (ONNX_FILE, "tables"),
}
BEGIN, END = markers("bench_runtime")


class GemmProbe:
    """GFLOP/s of (rows x width) @ (width x width) float32 GEMMs: the conv's shape, the
    machine's practical compute ceiling for this network. Sampled between the scans of
    the timed loop, so it sees the same load as they do; the median is reported."""

    def __init__(self, rows: int = 32_768, width: int = 64) -> None:
        self.a, self.b = torch.randn(rows, width), torch.randn(width, width)
        self.out = torch.empty(rows, width)
        self.flop = 2.0 * rows * width * width
        self.rates: list[float] = []
        for _ in range(3):
            self.sample()
        self.rates.clear()

    def sample(self) -> None:
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(self.a, self.b, out=self.out)
        self.rates.append(4 * self.flop / (time.perf_counter() - t0) / 1e9)

    def rate(self) -> float:
        return statistics.median(self.rates)


def useful_flops(net: nn.Module, inputs) -> float:
    """2 x multiply-adds over real pairs (sparse convs) and rows (linear layers)."""
    total = 0.0

    def conv_hook(mod: SparseConv3d, args: tuple, _out: object) -> None:
        nonlocal total
        pairs = args[1]
        assert isinstance(pairs, ConvPairs)
        total += 2.0 * pairs.num_pairs * mod.in_channels * mod.out_channels

    def linear_hook(mod: nn.Linear, args: tuple, _out: object) -> None:
        nonlocal total
        total += 2.0 * args[0].shape[0] * mod.in_features * mod.out_features

    hooks = [
        m.register_forward_hook(conv_hook if isinstance(m, SparseConv3d) else linear_hook)
        for m in net.modules()
        if isinstance(m, (SparseConv3d, nn.Linear))
    ]
    try:
        with torch.inference_mode():
            net.forward_tables(
                inputs.voxel_feats, inputs.point_feats, inputs.point2voxel,
                *inputs.maps.all_pairs(),
            )  # fmt: skip
    finally:
        for h in hooks:
            h.remove()
    return total


class SpconvSegmenter:
    """The Segmenter's stages around the spconv twin of the student (same weights)."""

    backend_name = "spconv-cpu"

    def __init__(self, model_dir: Path) -> None:
        from spconv_student import SpconvStudent

        ckpt = load_student(model_dir / "student.pt")
        self.grid, self.config = ckpt.grid, ckpt.config
        self.net = SpconvStudent(ckpt.build()).eval()

    def segment(self, scan: np.ndarray) -> dict[str, float]:
        t0 = time.perf_counter()
        inputs = build_inputs([scan], self.grid, 1, self.config.in_channels)  # voxelize only
        t1 = time.perf_counter()
        with torch.inference_mode():
            logits = self.net(
                inputs.voxel_feats, inputs.point_feats, inputs.point2voxel,
                inputs.maps.coords[0], inputs.maps.spatial_shapes[0],
            )  # fmt: skip
        t2 = time.perf_counter()
        top, idx = logits.max(dim=1)
        _ = (idx + 1).numpy(), torch.exp(logits - top[:, None]).sum(1).reciprocal().numpy()
        t3 = time.perf_counter()
        return {"voxelize": t1 - t0, "maps": 0.0, "inference": t2 - t1,
                "postprocess": t3 - t2, "total": t3 - t0}  # fmt: skip

    def logits(self, scan: np.ndarray) -> torch.Tensor:
        inputs = build_inputs([scan], self.grid, 1, self.config.in_channels)
        with torch.inference_mode():
            return self.net(
                inputs.voxel_feats, inputs.point_feats, inputs.point2voxel,
                inputs.maps.coords[0], inputs.maps.spatial_shapes[0],
            )  # fmt: skip


class EagerTorchSegmenter:
    """The torch backend with the fused C++ kernels switched off (eager torch ops, the
    fallback where no compiler is found), for the side-by-side ratio."""

    backend_name = "torch-eager"

    def __init__(self, model_dir: Path) -> None:
        self.seg = Segmenter.from_model_dir(model_dir, "torch")
        self.grid, self.config = self.seg.grid, self.seg.config

    def segment(self, scan: np.ndarray) -> SegmentResult:
        with fused.disabled():
            return self.seg.segment(scan)


def make_runners(model_dir: Path, threads: int, names: list[str]) -> dict[str, object]:
    runners: dict[str, object] = {}
    for name in names:
        if name == "spconv-cpu":
            if spconv_available():
                runners[name] = SpconvSegmenter(model_dir)
            else:
                print("spconv not available: its rows are skipped")
        elif name == "torch-eager":
            runners[name] = EagerTorchSegmenter(model_dir)
        elif name in ORT_GRAPHS:
            file, form = ORT_GRAPHS[name]
            seg = Segmenter.from_model_dir(model_dir, "torch")  # grid/config/metadata
            seg.backend = OnnxRuntimeBackend(model_dir / file, "cpu", threads, form)
            seg.backend_name = name
            runners[name] = seg
        else:
            runners[name] = Segmenter.from_model_dir(model_dir, name, intra_op_threads=threads)
            graph = getattr(runners[name].backend, "form", None)  # type: ignore[attr-defined]
            if graph:
                print(f"{name} runs the {graph} graph")
    return runners


def run_once(runner: object, scan: np.ndarray) -> dict[str, float]:
    if isinstance(runner, SpconvSegmenter):
        return runner.segment(scan)
    return runner.segment(scan).timings  # type: ignore[attr-defined]


def check_agreement(runners: dict[str, object], scan: np.ndarray) -> dict[str, float]:
    """Label agreement of every runner with the torch backend on one scan (1 thread:
    spconv's CPU conv races when multi-threaded)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = runners["torch"].segment(scan).labels  # type: ignore[attr-defined]
        out = {}
        for name, r in runners.items():
            if isinstance(r, SpconvSegmenter):
                labels = r.logits(scan).argmax(1).numpy() + 1
                valid = ref > 0
                out[name] = float((labels == ref[valid]).mean())
            else:
                out[name] = float((r.segment(scan).labels == ref).mean())  # type: ignore[attr-defined]
        return out
    finally:
        torch.set_num_threads(threads)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--sizes", type=int, nargs="+", default=[35_000, 120_000])
    p.add_argument("--backends", nargs="+", default=list(RUNNERS))
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch and ORT intra-op threads")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    p.add_argument("--readme", type=Path, default=None,
                   help=f"replace the block between {BEGIN} and {END} in this file")  # fmt: skip
    return p.parse_args(argv)


def measure_size(
    runners: dict[str, object], n: int, args: argparse.Namespace, probe: GemmProbe,
    net: nn.Module | None,
) -> tuple[list[dict], float]:  # fmt: skip
    """One row per runner for a scan of ``n`` points, and the GEMM rate sampled meanwhile."""
    scan = synthetic_scan(n, seed=n)
    seg0 = next(iter(runners.values()))
    inputs = build_inputs([scan], seg0.grid, seg0.config.num_levels)  # type: ignore[attr-defined]
    flops = useful_flops(net, inputs) if net is not None else float("nan")
    agree = check_agreement(runners, scan) if "torch" in runners else {}
    for r in runners.values():
        for _ in range(args.warmup):
            run_once(r, scan)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
    probe.rates.clear()
    for _ in range(args.repeats):  # interleaved: load bursts hit every backend alike
        for name, r in runners.items():
            runs[name].append(run_once(r, scan))
            probe.sample()
    gemm = probe.rate()
    rows = []
    for name, rs in runs.items():
        tot = sorted(r["total"] for r in rs)
        med = {k: statistics.median(r[k] for r in rs) for k in STAGES}
        p95 = float(np.percentile(tot, 95))
        rate = flops / med["inference"] / 1e9
        rows.append({
            "backend": name, "points": n, "voxels": inputs.maps.sizes()[0],
            "p50_ms": med["total"] * 1e3, "p95_ms": p95 * 1e3,
            **{f"{k}_ms": med[k] * 1e3 for k in STAGES},
            "useful_gflop": flops / 1e9, "gflops": rate, "gemm_gflops": gemm,
            "of_gemm": rate / gemm,
            "label_agreement": agree.get(name, float("nan")),
        })  # fmt: skip
    return rows, gemm


def markdown_table(results: list[dict]) -> str:
    header = ("| backend | points | voxels | p50 | p95 | voxelize | maps | network | post "
              "| useful GFLOP | GFLOP/s | of GEMM | vs spconv | labels = torch |")  # fmt: skip
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        lines.append(
            f"| {r['backend']} | {r['points'] // 1000} k | {r['voxels'] / 1000:.1f} k "
            f"| {r['p50_ms']:.1f} ms | {r['p95_ms']:.1f} ms | {r['voxelize_ms']:.1f} "
            f"| {r['maps_ms']:.1f} | {r['inference_ms']:.1f} | {r['postprocess_ms']:.1f} "
            f"| {r['useful_gflop']:.2f} | {r['gflops']:.0f} | {r['of_gemm'] * 100:.0f} % "
            f"| {r['speedup_vs_spconv']:.2f}x | {r['label_agreement'] * 100:.2f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model_dir = args.model_dir or exported_random_model(
        "small", seed=0, voxel_size=DEMO_VOXEL_SIZE, **DEMO_STUDENT
    )
    runners = make_runners(model_dir, args.threads, args.backends)
    probe = GemmProbe()
    net = runners["torch"].backend.net if "torch" in runners else None  # type: ignore[attr-defined]
    auto = choose_backend("cpu", model_dir)
    ok, why = fused.available()
    kernels = "fused C++ kernels built" if ok else f"fused kernels unavailable ({why})"
    print(f"torch {torch.__version__}, {args.threads} threads, load {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs; auto on CPU -> {auto}")  # fmt: skip
    results = []
    gemms: dict[int, float] = {}
    for n in args.sizes:
        rows, gemms[n] = measure_size(runners, n, args, probe, net)
        results += rows
    by = {(r["backend"], r["points"]): r for r in results}
    for r in results:
        ref = by.get(("spconv-cpu", r["points"]))
        r["speedup_vs_spconv"] = ref["p50_ms"] / r["p50_ms"] if ref else float("nan")
    table = markdown_table(results)
    print(table)
    footer = (f"\n{args.threads} threads, median of {args.repeats} interleaved runs; GEMM "
              f"(32768x64 @ 64x64) sampled between the runs: "
              + ", ".join(f"{g:.0f} GFLOP/s at {n // 1000} k" for n, g in gemms.items())
              + "; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end; "
              f"auto on CPU -> {auto}; {kernels}.")  # fmt: skip
    print(footer)
    if args.json:
        args.json.write_text(json.dumps({"gemm_gflops": gemms, "threads": args.threads,
                                         "auto_cpu": auto, "rows": results}, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(table + "\n" + footer + "\n")
    if args.readme:
        cmd = " ".join(["python bench/bench_runtime.py", *(sys.argv[1:] if argv is None else argv)])
        replace_block(args.readme, "bench_runtime", f"`{cmd}`\n\n{table}\n\n{footer.strip()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
