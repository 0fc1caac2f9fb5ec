"""Per-stage latency of the Segmenter with 0, 1 and 2 busy processes beside it.

A vehicle's CPU is shared: the node must slow down in proportion to the cores it loses,
not stall. One child process per configuration segments the same scan back to back
(OpenMP reads its wait policy once, when it loads, hence a child each) while this
process switches ``B`` busy processes (Python busy loops, stopped and resumed with
SIGSTOP / SIGCONT, each ending on its own after ``--busy-max-s``) on and off in short
windows: 0, 1, 2 busy, 0, 1, 2, ... Each scan is attributed to the window it ran in
entirely (scans across a switch are left out), so every busy level is sampled all
through the run and a shared machine's drifting load hits all levels alike; ratios are
each level's p95 over the same child's idle (0 busy) p95. The configurations:

* ``node``: what the node's process runs with (:func:`xmodelkd_ros.procenv.quiet_cpu_threads`
  called before torch loads: OpenMP's passive wait policy unless the user set one);
* ``unset``: no wait policy in the environment (the OpenMP runtime's default: spin a
  while, then sleep; as the node ran before);
* ``active``: ``OMP_WAIT_POLICY=ACTIVE`` (spin);
* ``spin1k``, ``spin20k``, ``spin200k``: no policy, GNU OpenMP's spin before sleeping
  set to that many iterations (``GOMP_SPINCOUNT``; its default is 300k).

``CONFIG:THREADS`` picks the inference threads (default ``--threads``). With
``--rounds R`` every backend and configuration runs R children of ``--seconds / R``
each, in turn, so that configurations too meet the same drifting load.

    python bench/bench_shared_cpu.py [--points 35000] [--seconds 60] [--rounds 3] [--window 2]
        [--configs node unset] [--busy 0 1 2] [--backend onnxruntime torch] [--json out.json]
        [--readme docs/performance.md]
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and "--child" in sys.argv:
    # Before anything below loads OpenMP: the child must start as the node's process does.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.environ.get("XMODELKD_BENCH_QUIET") == "1":
        from xmodelkd_ros.procenv import quiet_cpu_threads

        quiet_cpu_threads()

import argparse
import json
import signal
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from doc_block import markers, replace_block  # noqa: E402 (bench/, beside this script)

STAGES = ("voxelize", "maps", "inference", "postprocess", "total")
#: configuration name -> the OpenMP environment of the child ("node": none, and the child
#: calls quiet_cpu_threads() before loading torch, as the node's entry point does)
CONFIGS: dict[str, dict[str, str]] = {
    "node": {}, "unset": {}, "active": {"OMP_WAIT_POLICY": "ACTIVE"},
    **{f"spin{k}k": {"GOMP_SPINCOUNT": str(k * 1000)} for k in (1, 20, 200)},
}  # fmt: skip
BEGIN, END = markers("bench_shared_cpu")
BUSY_LOOP = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end:\n    pass\n"


def child(model_dir: str, backend: str, threads: int, points: int, seconds: float) -> int:
    """After 3 warm-ups print ``ready``, then segment for ``seconds`` and print every scan's
    (start, end) monotonic times and stage timings as JSON."""
    from xmodelkd_ros.runtime import Segmenter
    from xmodelkd_ros.sim.fixtures import synthetic_scan

    seg = Segmenter.from_model_dir(model_dir, backend, intra_op_threads=threads)
    scan = synthetic_scan(points, seed=points)
    for _ in range(3):
        seg.segment(scan)
    print("ready", flush=True)
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        timings = seg.segment(scan).timings
        out.append({"t0": t0, "t1": time.monotonic(), **timings})
    policy = os.environ.get("OMP_WAIT_POLICY", "unset") + (
        f", GOMP_SPINCOUNT {os.environ['GOMP_SPINCOUNT']}" if "GOMP_SPINCOUNT" in os.environ
        else "")  # fmt: skip
    print(json.dumps({"backend": seg.backend_name, "policy": policy, "runs": out}), flush=True)
    return 0


def busy_processes(n: int, max_s: float) -> list[subprocess.Popen]:
    """``n`` Python busy loops, stopped, each ending by itself after ``max_s`` seconds."""
    code = BUSY_LOOP.format(s=max_s)
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    for p in procs:
        p.send_signal(signal.SIGSTOP)
    return procs


def cycle_windows(hogs: list[subprocess.Popen], levels: list[int], seconds: float,
                  window: float) -> list[tuple[int, float, float]]:  # fmt: skip
    """Run ``levels`` busy processes in turn, ``window`` seconds each, for ``seconds``;
    returns the windows as (level, start, end) monotonic times."""
    windows = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        level = levels[i % len(levels)]
        for j, h in enumerate(hogs):
            h.send_signal(signal.SIGCONT if j < level else signal.SIGSTOP)
        t0 = time.monotonic()
        time.sleep(window)
        windows.append((level, t0, time.monotonic()))
        i += 1
    for h in hogs:
        h.send_signal(signal.SIGSTOP)
    return windows


def measure(args: argparse.Namespace, backend: str, config: str, threads: int,
            model_dir: Path) -> dict:  # fmt: skip
    """One child for ``config``: its scans, grouped by the busy level they ran under."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS"):
        env.pop(key, None)
    env["XMODELKD_BENCH_QUIET"] = "1" if config == "node" else "0"
    env.update(CONFIGS[config])
    seconds = args.seconds / args.rounds
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--model-dir",
           str(model_dir), "--backend", backend, "--threads", str(threads),
           "--points", str(args.points), "--seconds", str(seconds)]  # fmt: skip
    hogs = busy_processes(max(args.busy), args.busy_max_s)
    child_proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    try:
        if child_proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"child failed to start ({config})")
        windows = cycle_windows(hogs, args.busy, seconds, args.window)
        out, _ = child_proc.communicate(timeout=args.busy_max_s)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        if child_proc.poll() is None:
            child_proc.kill()
            child_proc.wait()
    if child_proc.returncode != 0:
        raise SystemExit(f"child failed ({config}): exit {child_proc.returncode}")
    res = json.loads(out.strip().splitlines()[-1])
    by_level: dict[int, list[dict]] = {b: [] for b in args.busy}
    for r in res["runs"]:
        for level, w0, w1 in windows:
            if w0 <= r["t0"] and r["t1"] <= w1:
                by_level[level].append(r)
                break
    return {"backend": res["backend"], "policy": res["policy"], "levels": by_level}


def summarize(runs: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """stage -> (p50, p95) in ms."""
    return {s: (statistics.median(r[s] for r in runs) * 1e3,
                float(np.percentile([r[s] for r in runs], 95)) * 1e3) for s in STAGES}  # fmt: skip


def table(results: dict[tuple[str, str, int, int], dict], busy_levels: list[int]) -> str:
    head = ("| backend | config | busy | scans | " + " | ".join(f"{s} p50 / p95" for s in STAGES)
            + " | total p95 / idle | worst stage p95 / idle |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for (backend, config, threads, busy), res in results.items():
        idle = results.get((backend, config, threads, min(busy_levels)))
        st = res["stages"]
        cells = [f"{st[s][0]:.1f} / {st[s][1]:.1f}" for s in STAGES]
        ratio = worst = "-"
        if idle is not None and busy != min(busy_levels):
            ist = idle["stages"]
            ratio = f"{st['total'][1] / ist['total'][1]:.2f}x"
            w = max((st[s][1] / ist[s][1], s) for s in STAGES if s != "total")
            worst = f"{w[0]:.2f}x ({w[1]})"
        lines.append(f"| {backend} | {config}:{threads} ({res['policy']}) | {busy} | {res['n']} | "
                     + " | ".join(cells)
                     + f" | {ratio} | {worst} |")  # fmt: skip
    return "\n".join(lines)


def parse_configs(specs: list[str], threads: int) -> list[tuple[str, int]]:
    out = []
    for spec in specs:
        name, _, t = spec.partition(":")
        if name not in CONFIGS:
            raise SystemExit(f"error: unknown config {name!r} (known: {', '.join(CONFIGS)})")
        out.append((name, int(t) if t else threads))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--backend", nargs="+", default=["onnxruntime", "torch"],
                   help="Segmenter backends, each measured in turn")  # fmt: skip
    p.add_argument("--points", type=int, default=35_000)
    p.add_argument("--seconds", type=float, default=60.0, help="timed run per configuration")
    p.add_argument("--window", type=float, default=2.0, help="seconds per busy level in turn")
    p.add_argument("--rounds", type=int, default=3, help="children per backend and config")
    p.add_argument("--threads", type=int, default=2, help="inference threads")
    p.add_argument("--configs", nargs="+", default=["node", "unset"],
                   help="CONFIG[:THREADS], CONFIG one of " + ", ".join(CONFIGS))  # fmt: skip
    p.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--busy-max-s", type=float, default=300.0,
                   help="each busy process (and child) ends after this many seconds")  # fmt: skip
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--readme", type=Path, default=None,
                   help=f"replace the block between {BEGIN} and {END} in this file")  # fmt: skip
    args = p.parse_args(argv)
    if args.child:
        return child(str(args.model_dir), args.backend[0], args.threads, args.points,
                     args.seconds)  # fmt: skip
    from xmodelkd_ros.sim.fixtures import DEMO_STUDENT, DEMO_VOXEL_SIZE, exported_random_model

    model_dir = args.model_dir or exported_random_model(
        "small", seed=0, voxel_size=DEMO_VOXEL_SIZE, **DEMO_STUDENT
    )
    configs = parse_configs(args.configs, args.threads)
    runs: dict[tuple[str, str, int, int], list[dict]] = {}
    policy: dict[tuple[str, str, int, int], str] = {}
    t0 = time.monotonic()
    for rnd in range(args.rounds):
        for backend in args.backend:
            for config, threads in configs:
                res = measure(args, backend, config, threads, model_dir)
                for busy, got in res["levels"].items():
                    key = (res["backend"], config, threads, busy)
                    runs.setdefault(key, []).extend(got)
                    policy[key] = res["policy"]
                print(f"round {rnd + 1}: {backend} {config}:{threads}: "
                      + ", ".join(f"{b} busy {len(g)} scans" for b, g in res["levels"].items()),
                      flush=True)  # fmt: skip
    empty = [k for k, v in runs.items() if not v]
    if empty:
        raise SystemExit(f"no scan fit in a window for {empty}: use a longer --window")
    results = {k: {"stages": summarize(v), "policy": policy[k], "n": len(v)}
               for k, v in runs.items()}  # fmt: skip
    text = table(results, args.busy)
    footer = (f"{args.points // 1000} k points, {args.seconds:g} s per backend and "
              f"configuration ({args.rounds} children in turn) in {args.window:g} s windows "
              f"cycling through {args.busy} busy "
              f"processes; scans per row {min(r['n'] for r in results.values())}.."
              f"{max(r['n'] for r in results.values())}; {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f} at the end, {time.monotonic() - t0:.0f} s.")  # fmt: skip
    print(text + "\n\n" + footer)
    if args.json:
        args.json.write_text(json.dumps([{"backend": k, "config": c, "threads": t, "busy": b, **r}
                                         for (k, c, t, b), r in results.items()], indent=2))
    if args.readme:
        cmd = " ".join(["python bench/bench_shared_cpu.py", *(sys.argv[1:] if argv is None
                                                               else argv)])  # fmt: skip
        replace_block(args.readme, "bench_shared_cpu", f"`{cmd}`\n\n{text}\n\n{footer}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
