"""Replay at max throughput with and without the large-data DDS profile, side by side.

Why: with Fast DDS's defaults a 64-beam cloud (2.5-3 MB) does not fit the 512 KB
shared-memory segment and goes over UDP in ~50 fragments; with the replay's reliable
QoS a lost fragment is re-sent only at the next heartbeat, so the sustainable rate is
set by DDS, not by the node. This runs the same 64-beam bag through
``python -m xmodelkd_ros.replay --max-throughput`` twice in one run (alternating,
``--repeats`` times), once with ``--dds-profile default`` (config/fastdds_large_data.xml
on the bag player and the node) and once with ``--dds-profile none``, and prints:

* the sustainable rate (scans/s under back-pressure) and what the node's own processing
  allows (1000 / node ``total`` p50 ms), and their ratio (the target: >= 60 %),
* publish -> output latency p50 / p95 / max (target: nothing later than 1.5 s),
* the rates with / without the profile as a ratio (absolute times depend on the machine),
* best-effort delivery between two processes (how LiDAR drivers publish): ``--clouds``
  clouds of 3 MB at 10 Hz from ``test/test_dds_large.py``'s driver to a best-effort
  subscriber, profile on the publisher vs. none (the control the test leaves out, since
  it depends on the machine's socket buffers).

    python bench/bench_replay.py [--model DIR | --net narrow|recipe] [--scans 20]
                                 [--repeats 1] [--json out.json]

Without ``--model`` an untrained student is exported (``--net narrow``, the default:
the tests' narrow network, so the node is fast and what DDS adds shows; ``--net recipe``:
the synthetic recipe's widths). The user's own DDS variables are removed from the
children's environment so both arms differ only in the profile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARMS = ("default", "none")  # --dds-profile values: the shipped profile, Fast DDS defaults
USER_DDS_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE",
                 "CYCLONEDDS_URI", "RMW_IMPLEMENTATION")  # fmt: skip


#: Untrained students (same graph and cost as trained ones): the synthetic recipe's
#: widths, and the narrow one of the tests (the node's own time small, so what DDS adds
#: to each scan is not hidden behind inference on a small CPU).
NETS = {"recipe": {"enc_widths": (16, 32, 48, 64), "dec_widths": (48, 32, 32)},
        "narrow": {"enc_widths": (8, 16), "dec_widths": (8,)}}  # fmt: skip


def make_model(out: Path, net: str) -> Path:
    """An untrained student with the widths ``NETS[net]`` exported to ONNX."""
    from xmodelkd_ros.export import export_checkpoint
    from xmodelkd_ros.nets import StudentCheckpoint, StudentNet, save_student, student_config
    from xmodelkd_ros.nets.inputs import default_grid

    cfg = student_config("small", **NETS[net])
    ckpt = out / "student.pt"
    save_student(StudentCheckpoint(cfg, default_grid(), StudentNet(cfg).state_dict()), ckpt)
    export_checkpoint(ckpt, out / "model")
    return out / "model"


def make_bag(out: Path, scans: int) -> Path:
    """A 64-beam drive without cameras (2.5-2.7 MB clouds, 24-byte points)."""
    from xmodelkd_ros.sim import SimWorld, write_bag

    return write_bag(out / "bag64", SimWorld(seed=7, beams=64, cameras=0), scans,
                     progress=False)  # fmt: skip


def replay(bag: Path, model: Path, arm: str, report: Path, domain: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in USER_DDS_VARS}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "xmodelkd_ros.replay", "--bag", str(bag), "--model",
           str(model), "--max-throughput", "--no-labels", "--backend", "onnxruntime",
           "--dds-profile", arm, "--report", str(report), "--domain-id", str(domain),
           "--quiet"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"replay ({arm}) failed: {proc.stderr.strip()[-2000:]}")
    rep = json.loads((report / "report.json").read_text())
    tp, lat = rep["throughput"], rep["latency_ms"]["publish_to_output"]
    return {"arm": arm, "profile": rep["dds"]["fastdds_profile"],
            "received": rep["scans"]["received"], "published": rep["scans"]["published"],
            "sustainable_hz": tp["sustainable_rate_hz"], "node_allows_hz": tp["node_allows_hz"],
            "rate_over_node": tp["sustainable_over_node"],
            "p50_ms": lat["p50"], "p95_ms": lat["p95"], "max_ms": lat["max"]}  # fmt: skip


def subscribe(domain: int, seconds: float) -> int:
    """Best-effort subscriber (the node's default input QoS): clouds received until
    ``seconds`` passed or SIGTERM came."""
    import signal

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("bench_subscriber", context=ctx)
    got: list[int] = []
    node.create_subscription(PointCloud2, "/lidar/points", lambda m: got.append(1),
                             qos_profile_sensor_data)  # fmt: skip
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    end = time.monotonic() + seconds
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while time.monotonic() < end and not stop:
        ex.spin_once(timeout_sec=0.1)
    rclpy.try_shutdown(context=ctx)
    return len(got)


def best_effort_delivery(arm: str, clouds: int, domain: int) -> int:
    """Clouds of 3 MB a best-effort driver process delivers to a best-effort subscriber
    process, the driver with the shipped profile (``default``) or without (``none``)."""
    from xmodelkd_ros.dds import large_data_env

    env = {k: v for k, v in os.environ.items() if k not in USER_DDS_VARS}
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))  # fmt: skip
    env.pop("ROS_LOCALHOST_ONLY", None)
    sub = subprocess.Popen([sys.executable, __file__, "--subscribe", str(domain),
                            str(30 + clouds / 10)], env=env, stdout=subprocess.PIPE,
                           text=True)  # fmt: skip
    driver_env = dict(env, **large_data_env(env, arm))
    subprocess.run([sys.executable, str(ROOT / "test" / "test_dds_large.py"), str(domain),
                    str(clouds), "3.0", "10", "30"], env=driver_env, check=True,
                   capture_output=True)  # fmt: skip
    time.sleep(1.0)  # the last clouds in flight
    sub.terminate()  # SIGTERM: it prints what arrived until now
    out, _ = sub.communicate(timeout=30)
    return int(out.strip().splitlines()[-1]) if out.strip() else 0


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "n/a" if v is None else format(v, fmt)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=None, help="exported model dir")
    p.add_argument("--net", choices=sorted(NETS), default="narrow",
                   help="untrained student to export when no --model (default: narrow)")
    p.add_argument("--scans", type=int, default=20, help="scans in the 64-beam bag")
    p.add_argument("--repeats", type=int, default=1, help="runs per arm, alternating")
    p.add_argument("--clouds", type=int, default=30,
                   help="best-effort 3 MB clouds per arm of the delivery test (0 = skip)")
    p.add_argument("--domain-id", type=int, default=117)
    p.add_argument("--subscribe", nargs=2, metavar=("DOMAIN", "SECONDS"),
                   help=argparse.SUPPRESS)  # the delivery test's subscriber process
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args(argv)
    if a.subscribe:
        print(subscribe(int(a.subscribe[0]), float(a.subscribe[1])), flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_replay_") as tmp:
        work = Path(tmp)
        model = a.model or make_model(work, a.net)
        bag = make_bag(work, a.scans)
        runs = []
        for r in range(a.repeats):
            for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
                res = replay(bag, model, arm, work / f"report_{arm}_{r}", a.domain_id)
                runs.append(res)
                print(f"[{arm}] {res['received']}/{res['published']} scans, "
                      f"{_f(res['sustainable_hz'])} scans/s, p95 {_f(res['p95_ms'], '.0f')} ms",
                      file=sys.stderr, flush=True)  # fmt: skip
    what = str(a.model) if a.model else f"untrained {a.net} student"
    print(f"64-beam bag, {a.scans} scans, --max-throughput, {what}, {a.repeats} run(s) "
          "per arm\n")
    print("| DDS | scans/s | node allows | rate / node | p50 ms | p95 ms | max ms |")
    print("|---|---|---|---|---|---|---|")
    for res in runs:
        print(f"| {'large-data profile' if res['arm'] == 'default' else 'Fast DDS defaults'} | "
              f"{_f(res['sustainable_hz'])} | {_f(res['node_allows_hz'])} | "
              f"{_f(res['rate_over_node'])} | {_f(res['p50_ms'], '.0f')} | "
              f"{_f(res['p95_ms'], '.0f')} | {_f(res['max_ms'], '.0f')} |")  # fmt: skip
    by = {arm: [r for r in runs if r["arm"] == arm] for arm in ARMS}
    mean = {arm: sum(r["sustainable_hz"] or 0 for r in v) / len(v) for arm, v in by.items()}
    p95 = {arm: max(r["p95_ms"] or 0 for r in v) for arm, v in by.items()}
    if mean["none"] > 0 and p95["default"] > 0:
        print(f"\nprofile / defaults: rate x{mean['default'] / mean['none']:.2f}, "
              f"p95 x{p95['default'] / p95['none']:.2f}")  # fmt: skip
    delivered = {arm: best_effort_delivery(arm, a.clouds, a.domain_id + 1)
                 for arm in ARMS} if a.clouds else {}  # fmt: skip
    if delivered:
        print(f"\nbest-effort 3 MB clouds, driver process -> subscriber process: "
              f"{delivered['default']}/{a.clouds} with the profile on the driver, "
              f"{delivered['none']}/{a.clouds} with Fast DDS defaults")  # fmt: skip
    if a.json is not None:
        a.json.write_text(json.dumps({"replay": runs, "best_effort_delivered": delivered,
                                      "clouds": a.clouds}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
