"""The live node end to end over real middleware (Fast DDS on loopback).

The node runs in its own process (``python -m xmodelkd_ros.node.main``) with an untrained
student checkpoint -- the real network, never a stand-in. This test process publishes
scans and images built from the synthetic world and receives the node's outputs and
``/diagnostics``. Every test has its own ROS domain (see conftest) and kills its child
in ``finally``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from ros_peer import RosPeer

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NODE = "lidar_segmentation"
N_POINTS = 1500
STARTUP_S = 90.0  # import torch + rclpy + model on a loaded 2-core machine


# ----------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def sim_frame() -> Any:
    """One synthetic frame (two small cameras), subsampled to N_POINTS for CPU speed."""
    from xmodelkd_ros.sim import SimWorld

    world = SimWorld(seed=3, beams=16, cameras=2, width=160, height=96)
    f = world.scan(0)
    idx = np.linspace(0, len(f.points) - 1, N_POINTS).astype(np.int64)
    return f, f.points[idx].astype(np.float32)


def make_cloud(points: np.ndarray, stamp_ns: int, frame_id: str = "lidar") -> Any:
    """PointCloud2 with x y z intensity (f32), ring (u16) + 2 pad bytes, time (f32)."""
    from sensor_msgs.msg import PointCloud2, PointField

    n = len(points)
    dt = np.dtype({"names": ["x", "y", "z", "intensity", "ring", "time"],
                   "formats": ["<f4", "<f4", "<f4", "<f4", "<u2", "<f4"],
                   "offsets": [0, 4, 8, 12, 16, 20], "itemsize": 24})  # fmt: skip
    arr = np.zeros(n, dt)
    for j, name in enumerate(dt.names):
        arr[name] = points[:, j]
    msg = PointCloud2()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.height, msg.width = 1, n
    msg.fields = [
        PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
        PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
        PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
        PointField(name="intensity", offset=12, datatype=PointField.FLOAT32, count=1),
        PointField(name="ring", offset=16, datatype=PointField.UINT16, count=1),
        PointField(name="time", offset=20, datatype=PointField.FLOAT32, count=1),
    ]
    msg.is_bigendian = False
    msg.point_step, msg.row_step = 24, 24 * n
    msg.data = arr.tobytes()
    msg.is_dense = True
    return msg


def make_image(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding, msg.step = "rgb8", rgb.shape[1] * 3
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


def stamp_of(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def structured(msg: Any) -> np.ndarray:
    """A received PointCloud2 as a structured numpy array (little-endian)."""
    fmt = {2: "u1", 4: "u2", 7: "f4", 8: "f8"}
    dt = np.dtype({"names": [f.name for f in msg.fields],
                   "formats": ["<" + fmt[f.datatype] for f in msg.fields],
                   "offsets": [f.offset for f in msg.fields],
                   "itemsize": msg.point_step})  # fmt: skip
    return np.frombuffer(bytes(msg.data), dtype=dt)


# ----------------------------------------------------------------------------- harness


def wait_for(pred: Callable[[], Any], timeout: float, what: str, proc: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        if proc is not None and proc.proc.poll() is not None:
            pytest.fail(f"node exited ({proc.proc.returncode}) while waiting for {what}:\n"
                        f"{proc.log()}")  # fmt: skip
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" +
                (f"\nnode log:\n{proc.log()}" if proc is not None else ""))  # fmt: skip


def wait_output(peer: Any, stamp: int, node: Any, timeout: float = 30.0) -> None:
    """Wait for the labeled cloud of the scan stamped ``stamp``: one scan in flight at a
    time, so a slow (loaded) machine drops nothing and the counts stay exact."""
    wait_for(lambda: any(stamp_of(m) == stamp for m in peer.msgs("seg")), timeout,
             f"the labeled cloud of scan {stamp}", node)  # fmt: skip


class NodeProcess:
    """``python -m xmodelkd_ros.node.main`` with a params file, output to a log file."""

    def __init__(self, params: dict[str, Any], tmp: Path, env: dict[str, str]) -> None:
        self.params_file = tmp / "params.yaml"
        self.params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        self.log_file = tmp / "node.log"
        cmd = [sys.executable, "-m", "xmodelkd_ros.node.main", "--ros-args",
               "--params-file", str(self.params_file)]  # fmt: skip
        self._log = open(self.log_file, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)  # fmt: skip

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")[-4000:]

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return float("nan")

    def stop(self, sig: int = signal.SIGINT) -> int | None:
        """``sig`` (clean shutdown), then SIGKILL if it hangs; returns the exit code."""
        rc = None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                rc = self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        else:
            rc = self.proc.returncode
        self._log.close()
        return rc


class Peer(RosPeer):
    """The test's ROS side: publishers for the node's inputs, subscribers for its outputs."""

    def __init__(self, domain: int, cameras: list[str], overlay: bool = False,
                 reliable: bool = False, debug: bool = False) -> None:  # fmt: skip
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_msgs.msg import Float64

        super().__init__(domain, "test_peer")
        rel = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_points = self.node.create_publisher(
            PointCloud2, f"/{NODE}/input/points", rel if reliable else 10)
        self.pub_images = {c: self.node.create_publisher(Image, f"/camera/{c}/image_raw", 10)
                           for c in cameras}  # fmt: skip
        self.pub_info = {c: self.node.create_publisher(CameraInfo, f"/camera/{c}/camera_info",
                                                       10) for c in cameras}  # fmt: skip
        topics = {"seg": f"/{NODE}/output/segmentation", "viz": f"/{NODE}/output/visualization",
                  "filtered": f"/{NODE}/output/filtered"}  # fmt: skip
        self.subs = [self.node.create_subscription(PointCloud2, t, self._store(k), rel)
                     for k, t in topics.items()]  # fmt: skip
        if overlay:
            self.subs += [self.node.create_subscription(
                Image, f"/{NODE}/output/overlay/{c}", self._store(f"overlay/{c}"), rel)
                for c in cameras]  # fmt: skip
        self.subs.append(self.node.create_subscription(
            DiagnosticArray, "/diagnostics", self._store("diag"), 10))
        if debug:
            self.subs.append(self.node.create_subscription(
                Float64, f"/{NODE}/debug/processing_time_ms", self._store("debug"), rel))
        self.start()

    def status(self, suffix: str) -> tuple[int, str, dict[str, str]] | None:
        """Latest diagnostics status whose name ends with ``suffix``: (level, message, kv)."""
        for arr in reversed(self.msgs("diag")):
            for s in arr.status:
                if s.name.startswith(NODE) and s.name.endswith(suffix):
                    return ord(s.level) if isinstance(s.level, bytes) else int(s.level), \
                        s.message, {kv.key: kv.value for kv in s.values}
        return None

    def counter(self, key: str) -> int:
        st = self.status(": segmentation")
        return int(st[2][key]) if st else -1

    def connected(self, cameras: list[str]) -> bool:
        """The node subscribes to our inputs and we to its outputs (discovery done)."""
        pubs = [self.pub_points, *(self.pub_images[c] for c in cameras)]
        return all(p.get_subscription_count() > 0 for p in pubs) and all(
            s.get_publisher_count() > 0 for s in self.subs)  # fmt: skip


def base_params(model: Path, **extra: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"model": str(model), "backend": "torch", "sync": {"max_wait_s": 0.3},
                         "diagnostics": {"period_s": 0.5}}  # fmt: skip
    for k, v in extra.items():
        p[k] = {**p.get(k, {}), **v} if isinstance(v, dict) else v
    return p


def camera_params(names: list[str], calib: Path | None) -> dict[str, Any]:
    c: dict[str, Any] = {"names": names}
    for n in names:
        c[n] = {"image_topic": f"/camera/{n}/image_raw", "info_topic": ""}
    if calib is not None:
        c["calibration_file"] = str(calib)
    return c


def start(params: dict[str, Any], tmp: Path, env: dict[str, str], domain: int,
          cameras: list[str], **peer_kw: Any) -> tuple[NodeProcess, Peer]:  # fmt: skip
    node = NodeProcess(params, tmp, env)
    peer = Peer(domain, cameras, **peer_kw)
    wait_for(lambda: peer.status(": segmentation") is not None and peer.connected(cameras),
             STARTUP_S, "node startup and discovery", node)  # fmt: skip
    return node, peer


def check_segmentation(out: Any, sent: Any, points: np.ndarray) -> np.ndarray:
    """Point count, preserved fields, stamp/frame, label range; returns the labels."""
    assert stamp_of(out) == stamp_of(sent)
    assert out.header.frame_id == sent.header.frame_id
    assert out.height * out.width == len(points)
    fields = {f.name: (f.offset, f.datatype) for f in out.fields}
    for f in sent.fields:  # input fields keep name, offset and type
        assert fields[f.name] == (f.offset, f.datatype)
    assert "label" in fields and "confidence" in fields
    arr = structured(out)
    np.testing.assert_array_equal(arr["x"], points[:, 0])
    np.testing.assert_array_equal(arr["ring"], points[:, 4].astype(np.uint16))
    np.testing.assert_array_equal(arr["time"], points[:, 5])
    labels = arr["label"]
    assert labels.max() <= 19
    # Points inside the model's grid get a class, the rest stay unlabeled (0). The sim's
    # buildings reach above the grid's 4 m ceiling, so the split is computed, not assumed.
    from xmodelkd_ros.nets.inputs import default_grid

    grid = default_grid()  # the grid of the conftest student checkpoint
    xyz = points[:, :3]
    in_grid = np.all((xyz >= grid.range_min) & (xyz < grid.range_max), axis=1)
    assert in_grid.mean() > 0.5  # the check below must cover most of the scan
    assert (labels[in_grid] > 0).all()
    assert (labels[~in_grid] == 0).all()
    conf = arr["confidence"]
    assert np.all((conf >= 0) & (conf <= 1.0 + 1e-6))
    return labels


# ----------------------------------------------------------------------------- tests


def test_all_cameras_present(sim_frame, student_checkpoint, ros_env, ros_domain, tmp_path):
    """Two cameras publishing: labeled, RViz and filtered clouds, overlays, camera OK."""
    from xmodelkd_ros.geometry import save_calibration
    from xmodelkd_ros.labels import CLASS_NAMES

    frame, pts = sim_frame
    cams = [c.name for c in frame.cameras]
    calib = tmp_path / "calibration.yaml"
    save_calibration(str(calib), frame.cameras)
    params = base_params(student_checkpoint, cameras=camera_params(cams, calib),
                         output={"overlay": True, "filter_classes": ["road", "sidewalk"]},
                         debug={"publish_timings": True})
    node, peer = None, None
    try:
        node, peer = start(params, tmp_path, ros_env, ros_domain, cams, overlay=True,
                           debug=True)
        sent = {}
        t0 = 1_700_000_000_000_000_000
        for i in range(5):
            stamp = t0 + i * 100_000_000
            for c in cams:
                peer.pub_images[c].publish(make_image(frame.images[c], stamp + 3_000_000,
                                                      f"camera_{c}"))  # fmt: skip
            time.sleep(0.02)
            msg = make_cloud(pts, stamp)
            sent[stamp] = msg
            peer.pub_points.publish(msg)
            wait_output(peer, stamp, node)
        wait_for(lambda: len(peer.msgs("filtered")) >= 3
                 and all(peer.msgs(f"overlay/{c}") for c in cams)
                 and peer.counter("scans_processed") == 5, 30, "outputs", node)  # fmt: skip
        assert len(peer.msgs("seg")) == 5
        wait_for(lambda: len(peer.msgs("debug")) >= 3, 10, "debug timings", node)
        assert all(m.data > 0 for m in peer.msgs("debug"))

        segs = {stamp_of(m): m for m in peer.msgs("seg")}
        for st, out in segs.items():
            labels = check_segmentation(out, sent[st], pts)
        viz = peer.msgs("viz")[0]
        assert "rgb" in {f.name for f in viz.fields}
        assert viz.width * viz.height == N_POINTS
        removed = {CLASS_NAMES.index("road") + 1, CLASS_NAMES.index("sidewalk") + 1}
        for filt in peer.msgs("filtered"):
            labels = structured(segs[stamp_of(filt)])["label"]
            assert filt.width == int(np.sum(~np.isin(labels, list(removed))))
            assert [f.name for f in filt.fields] == [f.name for f in sent[stamp_of(filt)].fields]
            assert filt.point_step == 24
        for c in cams:
            ov = peer.msgs(f"overlay/{c}")[0]
            assert (ov.width, ov.height) == (160, 96)
            assert (stamp_of(ov) - t0) % 100_000_000 == 3_000_000  # the synced image's stamp
            img = np.frombuffer(bytes(ov.data), np.uint8).reshape(96, 160, 3)
            assert np.any(img != frame.images[c])  # labels were painted

        wait_for(lambda: all(peer.status(f"camera {c}") and peer.status(f"camera {c}")[0] == 0
                             for c in cams), 10, "camera OK status", node)  # fmt: skip
        _level, _msg, kv = peer.status(": segmentation")
        assert kv["backend"] == "torch"
        assert int(kv["malformed_clouds"]) == 0
        for stage in ("decode", "voxelize", "maps", "inference", "encode", "total"):
            assert float(kv[f"{stage}_p50_ms"]) >= 0.0
            assert float(kv[f"{stage}_p95_ms"]) >= float(kv[f"{stage}_p50_ms"])
        assert float(kv["input_rate_hz"]) >= 0.0
        for c in cams:
            assert int(peer.status(f"camera {c}")[2]["matched"]) >= 3
    finally:
        if peer is not None:
            peer.close()
        if node is not None:
            assert node.stop() == 0, node.log()


def test_one_camera_never_publishes(sim_frame, student_checkpoint, ros_env, ros_domain,
                                    tmp_path):  # fmt: skip
    """'back' is configured but silent: every scan is still segmented; back is WARN.

    Also the calibration path without a file: front's extrinsic comes from the
    ``T_cam_lidar`` parameter and its intrinsics from CameraInfo.
    """
    from sensor_msgs.msg import CameraInfo

    frame, pts = sim_frame
    cam = frame.cameras[0]
    cameras = camera_params(["front", "back"], None)
    cameras["front"].update(info_topic="/camera/front/camera_info",
                            T_cam_lidar=[float(x) for x in cam.T_cam_lidar.ravel()])
    params = base_params(student_checkpoint, cameras=cameras, output={"overlay": True})
    info = CameraInfo(width=cam.width, height=cam.height, k=[float(x) for x in cam.K.ravel()])
    node, peer = None, None
    try:
        node, peer = start(params, tmp_path, ros_env, ros_domain, ["front"], overlay=True)
        t0 = 1_700_000_100_000_000_000
        for i in range(4):
            stamp = t0 + i * 100_000_000
            peer.pub_info["front"].publish(info)
            peer.pub_images["front"].publish(make_image(frame.images["front"], stamp, "cam"))
            peer.pub_points.publish(make_cloud(pts, stamp))
            wait_output(peer, stamp, node)
        for out in peer.msgs("seg"):
            assert out.width == N_POINTS
        wait_for(lambda: peer.status("camera back") is not None
                 and int(peer.status("camera front")[2]["matched"]) >= 3, 10,
                 "camera diagnostics", node)  # fmt: skip
        level, msg, kv = peer.status("camera back")
        assert level == 1 and "no images" in msg
        assert kv["received"] == "0" and int(kv["missed"]) >= 3
        assert int(kv["overlays_skipped"]) >= 3  # overlays on, nothing to draw on: counted
        assert peer.status("camera front")[0] == 0
        assert int(peer.status(": segmentation")[2]["scans_sync_expired"]) >= 3
        wait_for(lambda: peer.msgs("overlay/front"), 10, "front overlay", node)
        img = np.frombuffer(bytes(peer.msgs("overlay/front")[-1].data), np.uint8)
        assert np.any(img != frame.images["front"].ravel())
    finally:
        if peer is not None:
            peer.close()
        if node is not None:
            assert node.stop() == 0, node.log()


def test_malformed_cloud_is_counted_and_node_keeps_running(
    sim_frame, exported_model, ros_env, ros_domain, tmp_path
):
    """Also runs the exported model dir on ONNX Runtime (the CPU deployment path)."""
    _frame, pts = sim_frame
    params = base_params(exported_model, backend="onnxruntime")
    node, peer = None, None
    try:
        node, peer = start(params, tmp_path, ros_env, ros_domain, [])
        t0 = 1_700_000_200_000_000_000
        good1 = make_cloud(pts, t0)
        bad = make_cloud(pts, t0 + 100_000_000)
        bad.data = bytes(bad.data)[: 24 * 10]  # claims 1500 points, carries 10
        good2 = make_cloud(pts, t0 + 200_000_000)
        peer.pub_points.publish(good1)
        wait_output(peer, stamp_of(good1), node)
        peer.pub_points.publish(bad)
        wait_for(lambda: peer.counter("malformed_clouds") >= 1, 30, "malformed count", node)
        peer.pub_points.publish(good2)
        wait_output(peer, stamp_of(good2), node)
        wait_for(lambda: peer.counter("scans_processed") == 2, 10, "diagnostics", node)
        assert sorted(stamp_of(m) for m in peer.msgs("seg")) == [stamp_of(good1),
                                                                  stamp_of(good2)]
        level, msg, kv = peer.status(": segmentation")
        assert kv["malformed_clouds"] == "1" and kv["processing_errors"] == "0"
        assert kv["backend"] == "onnxruntime"
        assert level == 1 and "malformed" in msg
        assert node.proc.poll() is None
        assert "malformed cloud" in node.log()
    finally:
        if peer is not None:
            peer.close()
        if node is not None:
            assert node.stop() == 0, node.log()


def test_burst_drops_stale_scans_memory_flat(sim_frame, student_checkpoint, ros_env,
                                            ros_domain, tmp_path):  # fmt: skip
    """50 scans far faster than inference: stale ones are dropped and counted, the hand-off
    never holds more than one scan, and the node's memory does not grow with the burst."""
    _frame, pts = sim_frame
    big = np.tile(pts, (8, 1))  # 12k points per scan: a queued burst would be visible in RSS
    big[:, 0] += np.repeat(np.arange(8, dtype=np.float32) * 0.01, len(pts))
    params = base_params(student_checkpoint, qos={"input": "reliable", "depth": 100})
    node, peer = None, None
    try:
        node, peer = start(params, tmp_path, ros_env, ros_domain, [], reliable=True)
        t0 = 1_700_000_300_000_000_000
        peer.pub_points.publish(make_cloud(big, t0))
        wait_for(lambda: peer.counter("scans_processed") == 1, 60, "warm-up scan", node)
        rss_before = node.rss_mb()
        for i in range(1, 51):
            peer.pub_points.publish(make_cloud(big, t0 + i * 100_000_000))
        wait_for(lambda: peer.counter("scans_received") == 51 and
                 peer.counter("scans_processed") + peer.counter("scans_dropped_stale") == 51,
                 60, "burst accounted for", node)  # fmt: skip
        rss_after = node.rss_mb()
        kv = peer.status(": segmentation")[2]
        processed, dropped = int(kv["scans_processed"]), int(kv["scans_dropped_stale"])
        print(f"burst: processed {processed}, dropped {dropped}, rss {rss_before:.0f} -> "
              f"{rss_after:.0f} MiB, inference p50 {kv['inference_p50_ms']} ms")
        assert dropped >= 10, kv
        assert processed < 45
        assert kv["queue_high_water"] == "1"
        wait_for(lambda: len(peer.msgs("seg")) == processed, 10, "all processed outputs", node)
        stamps = [stamp_of(m) for m in peer.msgs("seg")]
        assert stamps == sorted(stamps)  # never out of order
        assert stamps[-1] == t0 + 50 * 100_000_000  # the newest scan is never the one dropped
        assert rss_after - rss_before < 150.0, (rss_before, rss_after)
    finally:
        if peer is not None:
            peer.close()
        if node is not None:  # SIGTERM (systemd, docker stop) must shut down cleanly too
            assert node.stop(signal.SIGTERM) == 0, node.log()


def _tensorrt_ok() -> bool:
    from xmodelkd_ros.runtime import tensorrt_available

    return bool(tensorrt_available()[0])


@pytest.mark.parametrize(
    ("params", "expect"),
    [
        ({"model": "/nonexistent/model"}, "does not exist"),
        ({"model": "CORRUPT"}, "cannot load model"),
        ({"model": "CORRUPT_DIR", "backend": "onnxruntime"}, "does not match model.json"),
        ({"model": "CKPT", "backend": "fast"}, "backend='fast' is not one of"),
        ({"model": "CKPT", "qos": {"depth": "deep"}}, "qos.depth"),
        ({"model": "CKPT", "backend": "onnxruntime"}, "needs an exported model dir"),
        ({"model": "CKPT", "build_only": True}, "build_only needs an exported model dir"),
        ({"model": "EXPORT", "build_only": True}, "TensorRT engine build failed"),
    ],
    ids=["missing", "corrupt-ckpt", "corrupt-onnx", "bad-backend", "bad-type",
         "ckpt-with-onnx", "build-only-ckpt", "build-only-no-tensorrt"],
)
def test_startup_errors_are_one_line(params, expect, student_checkpoint, ros_env, tmp_path,
                                     request):  # fmt: skip
    """Model missing/corrupt or a bad parameter: one FATAL line, exit 1, no traceback."""
    subst = {"CKPT": str(student_checkpoint)}
    if params["model"] == "CORRUPT":
        subst["CORRUPT"] = str(tmp_path / "corrupt.pt")
        (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint" * 10)
    if params["model"] in ("CORRUPT_DIR", "EXPORT"):
        export = request.getfixturevalue("exported_model")
        subst["EXPORT"] = str(export)
        bad = tmp_path / "bad_model"
        bad.mkdir()
        (bad / "model.json").write_bytes((export / "model.json").read_bytes())
        for graph in export.glob("model*.onnx"):  # TensorRT's graph and the CPU ones
            (bad / graph.name).write_bytes(graph.read_bytes()[:-100])
        subst["CORRUPT_DIR"] = str(bad)
    if "build_only" in params and params["model"] == "EXPORT" and _tensorrt_ok():
        pytest.skip("TensorRT is available here: build_only would succeed")
    p = {k: (subst.get(v, v) if isinstance(v, str) else v) for k, v in params.items()}
    pf = tmp_path / "p.yaml"
    pf.write_text(yaml.safe_dump({"/**": {"ros__parameters": p}}))
    r = subprocess.run([sys.executable, "-m", "xmodelkd_ros.node.main", "--ros-args",
                        "--params-file", str(pf)], env=ros_env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out
    fatal = [line for line in out.splitlines() if "FATAL" in line]
    assert len(fatal) == 1 and expect in fatal[0], out
