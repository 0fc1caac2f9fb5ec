"""The model's sensor contract: built from the training recipe, recorded in model.json,
and live scans of each rig found inside or outside it (by rings, elevations, mounting)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from test_node_health import CFG, _snapshot

from xmodelkd_ros.msgs import PointCloud2, PointField
from xmodelkd_ros.node.diagnostics import OK, WARN, diagnostics
from xmodelkd_ros.node.params import parse_config
from xmodelkd_ros.node.processing import ScanProcessor
from xmodelkd_ros.runtime.contract import (
    ContractGuard,
    contract_from_provenance,
    ground_plane,
    observe,
    outside,
)
from xmodelkd_ros.runtime.metadata import ModelMetadata
from xmodelkd_ros.sim import SimWorld
from xmodelkd_ros.sim.bag import POINT_DTYPE, POINT_FIELDS


def _prov(dataset: str = "synthetic", rigs=(), **augment) -> dict:
    return {"recipe": {"data": {"dataset": dataset, "rigs": list(rigs)}, "augment": augment}}


CONTRACT32 = contract_from_provenance(_prov())


def _scan(rig: str, seed: int = 9068) -> np.ndarray:
    return SimWorld(seed=seed, beams=rig, cameras=0).scan(7, images=False).points


def test_contract_comes_from_the_recipe_and_its_augmentation() -> None:
    c = CONTRACT32
    assert c["rings"] == [32, 32] and c["height_m"] == [1.73, 1.73]
    assert c["vertical_fov_deg"] == [-30.67, 10.67] and c["rigs"][0]["name"] == "32"
    wide = contract_from_provenance(_prov(rigs=["32", "64"], beam_subsample=[1, 2],
                                          mount_height=0.3, mount_pitch_deg=2.0))  # fmt: skip
    assert wide["rings"] == [16, 64] and wide["height_m"] == pytest.approx([1.43, 2.03])
    assert wide["vertical_fov_deg"] == pytest.approx([-32.67, 12.67])
    assert wide["pitch_deg"] == [-2.0, 2.0] and wide["source"] == "data.rigs"
    assert contract_from_provenance(_prov("semantickitti"))["rigs"][0]["beams"] == 64
    assert contract_from_provenance(_prov("some-bag")) is None
    assert contract_from_provenance({"recipe": "untrained-test"}) is None


@pytest.mark.parametrize(
    ("rig", "why"),
    [("32", None), ("nuscenes", None), ("16", "16 rings"), ("64", "64 rings"),
     ("128", "128 rings"), ("os32", "elevations"), ("32-high", "m above the ground"),
     ("32-pitch", "ground tilted")],
)  # fmt: skip
def test_each_rig_inside_or_outside_the_32_beam_contract(rig: str, why: str | None) -> None:
    reasons = outside(CONTRACT32, observe(_scan(rig)[:, :3]))
    if why is None:
        assert reasons == []
    else:
        assert any(why in r for r in reasons), reasons


def test_ground_plane_without_labels() -> None:
    h, tilt = ground_plane(_scan("32-high", 9071)[:, :3])
    assert h == pytest.approx(2.2, abs=0.15) and tilt < 1.5
    h, tilt = ground_plane(_scan("32-pitch", 9071)[:, :3])
    assert h == pytest.approx(1.73, abs=0.15) and tilt == pytest.approx(4.0, abs=0.5)
    assert ground_plane(np.zeros((10, 3))) is None


def test_guard_checks_every_nth_scan_and_flags_the_first_once() -> None:
    pts64 = _scan("64")[:, :3]
    guard = ContractGuard(CONTRACT32, every=2)
    first = guard.apply(pts64)
    assert first.outside and first.first and "64 rings" in first.message
    assert guard.apply(pts64) is None  # not its turn
    again = guard.apply(pts64)
    assert again.outside and not again.first
    warn, msg, values = guard.report()
    assert warn and "2 of 2 checked scans" in msg and values["sensor_scans_outside"] == "2"
    assert ContractGuard(None).apply(pts64) is None  # no contract: nothing checked
    assert ContractGuard(None).report()[2]["sensor_contract"] == "none in model.json"
    # a ring field wins over the elevation estimate
    p = _scan("32")
    assert ContractGuard(CONTRACT32, 1).apply(p[:, :3], p[:, 4] // 2).reasons == [
        "16 rings (trained on 32..32)"]  # fmt: skip


def test_node_processor_reports_a_rig_outside_the_contract() -> None:
    class Model:
        metadata = SimpleNamespace(intensity_range=(0.0, 1.0), lidar_contract=CONTRACT32)

        def segment(self, pts):
            n = len(pts)
            return SimpleNamespace(labels=np.ones(n, np.uint16),
                                   confidence=np.ones(n, np.float32), timings={})  # fmt: skip

    p = _scan("16")
    arr = np.zeros(len(p), POINT_DTYPE)
    for k, name in enumerate(("x", "y", "z", "intensity")):
        arr[name] = p[:, k]
    arr["ring"] = p[:, 4]
    msg = PointCloud2(height=1, width=len(p), point_step=24, row_step=24 * len(p),
                      data=arr.tobytes(),
                      fields=[PointField(n, o, t) for n, o, t in POINT_FIELDS])  # fmt: skip
    cfg = parse_config({"model": "/m"})
    proc = ScanProcessor(Model(), cfg.input)
    out = proc.segment(msg)
    assert out.sensor.outside and out.sensor.first and "16 rings" in out.sensor.message
    seg, sensor, _cam = diagnostics(_snapshot(sensor_contract=proc.contract), CFG)
    assert seg.message == "ok" and sensor.name == "seg: sensor contract"
    assert sensor.level == WARN and "sensor contract in 1 of 1 checked scans" in sensor.message
    assert sensor.values["sensor_scans_outside"] == "1"
    healthy = diagnostics(_snapshot(sensor_contract=ContractGuard(CONTRACT32)), CFG)[1]
    assert (healthy.level, healthy.message) == (OK, "ok")
    assert healthy.values["sensor_scans_checked"] == "0"
    assert len(diagnostics(_snapshot(), CFG)) == 2  # no guard: no sensor status


def test_model_json_records_the_contract(tmp_path) -> None:
    pytest.importorskip("onnx", reason="ONNX export needs the 'export' extra")
    from xmodelkd_ros.export import export_checkpoint
    from xmodelkd_ros.sim.fixtures import random_student_checkpoint

    ckpt = random_student_checkpoint("small", seed=3, enc_widths=(8, 16), dec_widths=(8,))
    ckpt.provenance["recipe"] = _prov(rigs=["16", "32"])["recipe"]
    meta = export_checkpoint(ckpt, tmp_path / "m")
    read = ModelMetadata.read(tmp_path / "m")
    assert read.lidar_contract == meta.lidar_contract
    assert [r["beams"] for r in read.lidar_contract["rigs"]] == [16, 32]
    assert read.lidar_contract["rings"] == [16, 32]
    doc = read.to_dict()
    doc.pop("lidar_contract")  # an export from before the key still loads
    assert ModelMetadata.from_dict(doc).lidar_contract is None
