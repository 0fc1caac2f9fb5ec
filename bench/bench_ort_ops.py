"""Where ONNX Runtime spends its time on the CPU pairs graph (``model_cpu.onnx``), by op type.

Why: ``auto`` picks torch (fused C++ kernels) over ONNX Runtime on CPU; the question is
whether ONNX Runtime can catch up with standard ops. This runs ONNX Runtime's own
profiler over the demo student on a synthetic scan and prints each op type's share of
the kernel time and its node count per scan, beside the torch backend's network (fused
kernels) on the same inputs and threads, then times a chain of ``ScatterND(add)``
nodes into an (N, C) buffer with few and with many updates: what the few-update chain
costs is each node copying its whole input (it is not run in place), so the per-offset
scatter pays O(N) per offset whatever the number of pairs.

    python bench/bench_ort_ops.py [--threads 1] [--points 35000] [--repeats 10]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import onnxruntime as ort
from bench_sparse import timeit
from onnx import TensorProto, helper

from xmodelkd_ros.nets.inputs import NetInputs, build_inputs
from xmodelkd_ros.runtime.backends import TorchBackend
from xmodelkd_ros.runtime.graph import flatten_inputs
from xmodelkd_ros.runtime.metadata import CHECKPOINT_FILE, ModelMetadata
from xmodelkd_ros.sim.fixtures import (
    DEMO_STUDENT,
    DEMO_VOXEL_SIZE,
    exported_random_model,
    synthetic_scan,
)


def scan_inputs(model_dir: Path, points: int) -> NetInputs:
    meta = ModelMetadata.read(model_dir)
    scan = torch.from_numpy(synthetic_scan(points))
    return build_inputs([scan], meta.grid, meta.config.num_levels, meta.config.in_channels)


def torch_network_ms(model_dir: Path, inputs: NetInputs, repeats: int) -> float:
    """Median ms of the torch backend's network (fused kernels) on the same inputs."""
    backend = TorchBackend.from_checkpoint(model_dir / CHECKPOINT_FILE)
    return timeit(lambda: backend.infer(inputs), repeats)[0]


def op_split(
    model_dir: Path, inputs: NetInputs, threads: int, repeats: int
) -> dict[str, list[float]]:
    """{op type: [ms per scan, nodes per scan]} from ONNX Runtime's profiler."""
    graph = model_dir / "model_cpu.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
        feeds = flatten_inputs(inputs, "pairs")
        names = [i.name for i in sess.get_inputs()]
        arrays = {n: np.ascontiguousarray(feeds[n].numpy()) for n in names}
        for _ in range(repeats):
            sess.run(None, arrays)
        events = json.loads(Path(sess.end_profiling()).read_text())
    total: dict[str, float] = collections.Counter()
    count: dict[str, int] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"].get("op_name", "?")
            total[op] += e["dur"] / 1e3
            count[op] += 1
    return {op: [ms / repeats, count[op] / repeats] for op, ms in total.items()}


def scatter_chain_ms(rows: int, width: int, updates: int, threads: int, offsets: int = 26) -> float:
    """Median ms of ``offsets`` chained ScatterND(add) nodes, ``updates`` rows each."""
    rng = np.random.default_rng(0)
    nodes, inputs = [], [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [rows, width])]
    feeds: dict[str, np.ndarray] = {"x0": np.zeros((rows, width), np.float32)}
    for k in range(offsets):
        idx = np.sort(rng.choice(rows, updates, replace=False)).astype(np.int64)[:, None]
        feeds[f"i{k}"], feeds[f"u{k}"] = idx, rng.standard_normal((updates, width), np.float32)
        inputs += [
            helper.make_tensor_value_info(f"i{k}", TensorProto.INT64, [updates, 1]),
            helper.make_tensor_value_info(f"u{k}", TensorProto.FLOAT, [updates, width]),
        ]
        nodes.append(helper.make_node("ScatterND", [f"x{k}", f"i{k}", f"u{k}"], [f"x{k + 1}"],
                                      reduction="add"))  # fmt: skip
    out = helper.make_tensor_value_info(f"x{offsets}", TensorProto.FLOAT, [rows, width])
    model = helper.make_model(helper.make_graph(nodes, "chain", inputs, [out]),
                              opset_imports=[helper.make_opsetid("", 18)])  # fmt: skip
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return timeit(lambda: sess.run(None, feeds), 20, warmup=3)[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--points", type=int, default=35_000)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model_dir = exported_random_model(voxel_size=DEMO_VOXEL_SIZE, **DEMO_STUDENT)
    inputs = scan_inputs(model_dir, a.points)
    split = op_split(model_dir, inputs, a.threads, a.repeats)
    fused_ms = torch_network_ms(model_dir, inputs, a.repeats)
    total = sum(ms for ms, _ in split.values())
    print(f"ONNX Runtime {ort.__version__}, model_cpu.onnx of the demo student, "
          f"{a.points} points, {a.threads} thread(s), {a.repeats} scans")  # fmt: skip
    print("| op | ms per scan | share | nodes per scan |\n|---|---|---|---|")
    for op, (ms, n) in sorted(split.items(), key=lambda kv: -kv[1][0])[:10]:
        print(f"| {op} | {ms:.1f} | {100 * ms / total:.0f} % | {n:.0f} |")
    print(f"| all kernels | {total:.1f} | 100 % | |")
    mg = sum(split.get(op, [0.0])[0] for op in ("MatMul", "Gather"))
    print(f"\nMatMul + Gather alone: {mg:.1f} ms; the torch backend's whole network (fused "
          f"kernels) on the same inputs and threads: {fused_ms:.1f} ms")  # fmt: skip
    few = scatter_chain_ms(35_000, 32, 10, a.threads)
    many = scatter_chain_ms(35_000, 32, 6_000, a.threads)
    print(
        f"\n26 chained ScatterND(add) into 35000x32: {few:.1f} ms with 10 updates each, "
        f"{many:.1f} ms with 6000 each (the first: each node copying its input, "
        "paid whatever its pairs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
