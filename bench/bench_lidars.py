"""Three LiDARs: one node process with three inputs against three single-input node
processes, at the same rates, in one run.

Both setups run the real node (``python -m xmodelkd_ros.node.main``) on the same model
over Fast DDS on loopback (own ROS domain, reliable QoS so DDS loses nothing and only
the node decides what is dropped). This process publishes three synthetic scans per
period, one per LiDAR, spread over the period like unsynchronized spinning sensors, and
receives the labeled clouds. Reported per setup: resident memory of the node
process(es) (sum of VmRSS at the end of the window, and of VmHWM), their CPU (user +
system time over the window / wall time, in cores), each LiDAR's scans answered and its
publish -> labeled-cloud latency p50 / p95. Setups alternate between rounds so the
machine's drifting load hits both.

    python bench/bench_lidars.py [--points 35000] [--rate 3 10] [--seconds 20] [--rounds 1]
        [--backend auto] [--model-dir DIR] [--json out.json] [--readme docs/performance.md]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from doc_block import markers, replace_block  # noqa: E402 (bench/, beside this script)

from xmodelkd_ros.ros_peer import SpinningPeer  # noqa: E402

LIDARS = ("a", "b", "c")
BEGIN, END = markers("bench_lidars")
STARTUP_S = 180.0


def ros_env(domain: int) -> dict[str, str]:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), RMW_IMPLEMENTATION="rmw_fastrtps_cpp",
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))  # fmt: skip
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


def node_params(model: Path, backend: str, lidars: tuple[str, ...]) -> dict[str, Any]:
    """One node's parameters: the single-topic form for one LiDAR, else lidars.names."""
    p: dict[str, Any] = {"model": str(model), "backend": backend,
                         "qos": {"input": "reliable", "depth": 10},
                         "output": {"publish_rgb": False, "publish_filtered": False}}  # fmt: skip
    if len(lidars) == 1:
        (n,) = lidars
        p["input"] = {"points_topic": f"/bench/lidar_{n}/points"}
        p["output"]["segmentation_topic"] = f"/bench/seg_{n}"
    else:
        p["lidars"] = {"names": list(lidars), **{n: {
            "points_topic": f"/bench/lidar_{n}/points", "segmentation_topic": f"/bench/seg_{n}"}
            for n in lidars}}  # fmt: skip
    return p


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(line.split()[1]) / 1024.0
    return out["VmRSS"], out["VmHWM"]


class Peer(SpinningPeer):
    """Publishes each LiDAR's clouds, records when each labeled cloud comes back."""

    def __init__(self, domain: int, points: int) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2

        from xmodelkd_ros.sim.fixtures import synthetic_scan

        super().__init__(domain, "bench_lidars_peer")
        rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = {n: self.node.create_publisher(PointCloud2, f"/bench/lidar_{n}/points", rel)
                    for n in LIDARS}  # fmt: skip
        self.msgs = {n: cloud(synthetic_scan(points, seed=i)) for i, n in enumerate(LIDARS)}
        self.recv: dict[str, dict[int, float]] = {n: {} for n in LIDARS}
        self.subs = [self.node.create_subscription(PointCloud2, f"/bench/seg_{n}",
                                                   self._on_seg(n), rel) for n in LIDARS]
        self.diag: dict[str, dict[str, str]] = {}  # input topic -> latest key/values
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.start()

    def _on_seg(self, name: str):
        def cb(msg: Any) -> None:
            t = time.monotonic()
            with self.lock:
                self.recv[name][msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = t
        return cb

    def _on_diag(self, msg: Any) -> None:
        with self.lock:
            for st in msg.status:
                if ": segmentation" in st.name:
                    self.diag[st.hardware_id] = {kv.key: kv.value for kv in st.values}

    def node_stats(self, name: str) -> dict[str, str]:
        """The node's latest diagnostics of LiDAR ``name``."""
        with self.lock:
            return dict(self.diag.get(f"/bench/lidar_{name}/points", {}))

    def publish(self, name: str, stamp: int) -> float:
        msg = self.msgs[name]
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        t = time.monotonic()
        self.pub[name].publish(msg)
        return t

    def answered(self, name: str, stamp: int) -> bool:
        with self.lock:
            return stamp in self.recv[name]

    def connected(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in self.pub.values()) and all(
            s.get_publisher_count() > 0 for s in self.subs)  # fmt: skip


def cloud(points: np.ndarray) -> Any:
    """PointCloud2 of x, y, z, intensity (float32)."""
    from sensor_msgs.msg import PointCloud2, PointField

    msg = PointCloud2()
    msg.header.frame_id = "lidar"
    msg.height, msg.width = 1, len(points)
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, n in enumerate(("x", "y", "z", "intensity"))]  # fmt: skip
    msg.point_step, msg.row_step = 16, 16 * len(points)
    msg.data = np.ascontiguousarray(points[:, :4], dtype=np.float32).tobytes()
    msg.is_dense = True
    return msg


def start_nodes(setup: str, args: argparse.Namespace, model: Path, env: dict[str, str],
                tmp: Path) -> list[subprocess.Popen]:  # fmt: skip
    groups = [LIDARS] if setup == "one" else [(n,) for n in LIDARS]
    procs = []
    for i, group in enumerate(groups):
        pf = tmp / f"{setup}_{i}.yaml"
        pf.write_text(yaml.safe_dump({"/**": {"ros__parameters": node_params(
            model, args.backend, group)}}))  # fmt: skip
        log = open(tmp / f"{setup}_{i}.log", "w")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "xmodelkd_ros.node.main", "--ros-args", "-r",
             f"__node:=bench_seg_{i}", "--params-file", str(pf)],
            env=env, stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
    return procs


def stop_nodes(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def wait(pred, timeout: float, what: str, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if any(p.poll() is not None for p in procs):
            raise SystemExit(f"a node exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def run_setup(setup: str, rate: float, args: argparse.Namespace, model: Path, peer: Peer,
              env: dict[str, str], tmp: Path, stamp0: int) -> dict[str, Any]:  # fmt: skip
    procs = start_nodes(setup, args, model, env, tmp)
    try:
        wait(peer.connected, STARTUP_S, "node startup and discovery", procs)
        for k in range(3):  # warm-up, one scan in flight at a time
            for n in LIDARS:
                s = stamp0 + k
                peer.publish(n, s)
                wait(lambda n=n, s=s: peer.answered(n, s), 60, "warm-up", procs)
        period = 1.0 / rate
        events = sorted((k * period + j * period / len(LIDARS), n)
                        for k in range(int(args.seconds * rate))
                        for j, n in enumerate(LIDARS))  # fmt: skip
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        start = time.monotonic()
        sent: dict[str, dict[int, float]] = {n: {} for n in LIDARS}
        for i, (t, n) in enumerate(events):
            time.sleep(max(0.0, start + t - time.monotonic()))
            stamp = stamp0 + 1_000_000_000 + int(t * 1e9) + i
            sent[n][stamp] = peer.publish(n, stamp)
        time.sleep(1.5)  # the last scans through, the next diagnostics out
        wall = time.monotonic() - start
        cpu = (sum(cpu_seconds(p.pid) for p in procs) - cpu0) / wall
        mem = [memory_mb(p.pid) for p in procs]
    finally:
        stop_nodes(procs)
    per = {}
    for n in LIDARS:
        with peer.lock:
            lat = [(peer.recv[n][s] - t) * 1e3 for s, t in sent[n].items() if s in peer.recv[n]]
        kv = peer.node_stats(n)
        per[n] = {"sent": len(sent[n]), "answered": len(lat),
                  "p50_ms": float(np.percentile(lat, 50)) if lat else float("nan"),
                  "p95_ms": float(np.percentile(lat, 95)) if lat else float("nan"),
                  **{k: float(kv.get(k, "nan")) for k in ("total_p50_ms", "total_p95_ms")}}
    return {"setup": setup, "rate_hz": rate, "processes": len(procs),
            "rss_mb": sum(m[0] for m in mem),
            "hwm_mb": sum(m[1] for m in mem), "cpu_cores": cpu, "lidars": per}  # fmt: skip


def render(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    names = {"one": "1 process, 3 LiDARs", "three": "3 processes, 1 LiDAR each"}
    head = ("| setup | rate per LiDAR | RSS (sum) | peak RSS (sum) | CPU | "
            + " | ".join(f"LiDAR {n}: answered, latency p50 / p95 (processing)" for n in LIDARS)
            + " |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        cells = [f"{v['answered']}/{v['sent']}, {v['p50_ms']:.0f} / {v['p95_ms']:.0f} ms "
                 f"({v['total_p50_ms']:.0f} / {v['total_p95_ms']:.0f})"
                 for v in r["lidars"].values()]  # fmt: skip
        lines.append(f"| {names[r['setup']]} | {r['rate_hz']:g} Hz | {r['rss_mb']:.0f} MiB "
                     f"| {r['hwm_mb']:.0f} MiB "
                     f"| {r['cpu_cores']:.2f} cores | " + " | ".join(cells) + " |")  # fmt: skip
    ratios = []
    for rate in args.rate:
        by = {s: [r for r in results if r["setup"] == s and r["rate_hz"] == rate] for s in names}
        q = {k: np.mean([o[k] for o in by["one"]]) / np.mean([t[k] for t in by["three"]])
             for k in ("rss_mb", "hwm_mb", "cpu_cores")}  # fmt: skip
        ratios.append(f"at {rate:g} Hz RSS {q['rss_mb']:.2f}x, peak RSS {q['hwm_mb']:.2f}x, "
                      f"CPU {q['cpu_cores']:.2f}x")  # fmt: skip
    return "\n".join(lines) + (
        f"\n\nOne process / three processes: {'; '.join(ratios)}. {args.points // 1000} k "
        f"points per scan, {args.seconds:g} s per setup and rate, backend "
        f"{args.backend}, {args.rounds} round(s), {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end. Latency: publish -> labeled cloud received; "
        f"processing: the node's own time per scan (its diagnostics' total).")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--backend", default="auto")
    p.add_argument("--points", type=int, default=35_000)
    p.add_argument("--rate", type=float, nargs="+", default=[3.0, 10.0],
                   help="scans per second per LiDAR, each rate in turn")  # fmt: skip
    p.add_argument("--seconds", type=float, default=20.0, help="timed window per setup")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--readme", type=Path, default=None,
                   help=f"replace the block between {BEGIN} and {END} in this file")  # fmt: skip
    args = p.parse_args(argv)
    from xmodelkd_ros.sim.fixtures import DEMO_STUDENT, DEMO_VOXEL_SIZE, exported_random_model

    model = args.model_dir or exported_random_model("small", seed=0, voxel_size=DEMO_VOXEL_SIZE,
                                                    **DEMO_STUDENT)  # fmt: skip
    domain = 1 + (os.getpid() * 7) % 230
    env = ros_env(domain)
    os.environ.update({k: env[k] for k in ("RMW_IMPLEMENTATION", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    peer = Peer(domain, args.points)
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for rnd in range(args.rounds):
                for rate in args.rate:
                    for setup in ("one", "three") if rnd % 2 == 0 else ("three", "one"):
                        stamp0 = 1_700_000_000_000_000_000 + len(results) * 10**12
                        r = run_setup(setup, rate, args, model, peer, env, Path(tmp), stamp0)
                        results.append(r)
                        print(json.dumps(r), flush=True)
    finally:
        peer.close()
    text = render(results, args)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.readme:
        cmd = " ".join(["python bench/bench_lidars.py", *(sys.argv[1:] if argv is None else argv)])
        replace_block(args.readme, "bench_lidars", f"`{cmd}`\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
