"""Named LiDAR rigs: beams, vertical field of view, range and the mounting on the vehicle.

Why: a student meets the LiDAR its vehicle carries, rarely the one it was trained on. To
measure (and train for) that change, the simulator must render the *same* streets through
different sensors, and a model must be able to say which sensors it was trained on. A rig
is the whole description: beam count, lowest and highest beam elevation, maximum range,
mounting height and pitch. The beam-count rigs ``16``, ``32``, ``64`` are exactly the
presets :class:`~xmodelkd_ros.sim.sensors.LidarModel` always had (the default ``32`` feeds
training and the demo), so naming them changes no scan.

:data:`DATASET_RIGS` says which rig recorded each dataset the recipes read (the model
contract in ``model.json`` is built from it when a recipe names no rig).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .sensors import LIDAR_HEIGHT, LIDAR_PRESETS, LidarModel


@dataclass(frozen=True)
class LidarRig:
    """One LiDAR as mounted: ``fov_deg`` = (lowest, highest) beam elevation, evenly spaced;
    ``height`` in m above the road; ``pitch_deg`` > 0 tilts the forward axis down."""

    name: str
    beams: int
    fov_deg: tuple[float, float]
    max_range: float
    height: float = LIDAR_HEIGHT
    pitch_deg: float = 0.0
    note: str = ""

    def model(self, **kw: Any) -> LidarModel:
        """The simulator's sensor for this rig (``kw``: further :class:`LidarModel` fields)."""
        lo, hi = self.fov_deg
        kw.setdefault("max_range", self.max_range)
        return LidarModel(beams=self.beams, elevations_deg=np.linspace(lo, hi, self.beams),
                          height=self.height, pitch_deg=self.pitch_deg, **kw)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """What ``model.json`` records of a rig the model was trained on."""
        return {
            "name": self.name,
            "beams": self.beams,
            "vertical_fov_deg": [float(self.fov_deg[0]), float(self.fov_deg[1])],
            "max_range_m": float(self.max_range),
            "height_m": float(self.height),
            "pitch_deg": float(self.pitch_deg),
        }


def _preset(beams: int, note: str) -> LidarRig:
    lo, hi, rng = LIDAR_PRESETS[beams]
    return LidarRig(str(beams), beams, (lo, hi), rng, note=note)


#: Every named rig. The beam-count names are the presets; the others change one property of
#: the training rig ``32`` (field of view, mounting height, pitch) or describe a dataset's.
RIGS: dict[str, LidarRig] = {
    r.name: r
    for r in (
        _preset(16, "VLP-16 like"),
        _preset(32, "HDL-32E like: the default training rig"),
        _preset(64, "HDL-64E like (SemanticKITTI's sensor and mount)"),
        _preset(128, "Pandar128 / OS-128 like"),
        LidarRig("os32", 32, (-22.5, 22.5), 100.0,
                 note="32 beams over another vertical field of view (OS1-32 like)"),
        LidarRig("32-high", 32, LIDAR_PRESETS[32][:2], 100.0, height=2.2,
                 note="the training rig on a van's roof (2.2 m)"),
        LidarRig("32-pitch", 32, LIDAR_PRESETS[32][:2], 100.0, pitch_deg=4.0,
                 note="the training rig tilted 4 degrees down"),
        LidarRig("nuscenes", 32, LIDAR_PRESETS[32][:2], 100.0, height=1.84,
                 note="nuScenes' HDL-32E at its 1.84 m mount"),
    )
}  # fmt: skip

#: The rig that recorded each dataset of the recipes (``data.rigs`` empty): the synthetic
#: world's default, SemanticKITTI's HDL-64E, nuScenes' HDL-32E.
DATASET_RIGS: dict[str, tuple[str, ...]] = {
    "synthetic": ("32",),
    "semantickitti": ("64",),
    "nuscenes": ("nuscenes",),
}

#: What the cross-sensor table scores by default: every rig but the dataset ones.
CROSS_SENSOR_RIGS: tuple[str, ...] = ("16", "32", "64", "128", "os32", "32-high", "32-pitch")


class RigError(ValueError):
    """A rig name that :data:`RIGS` does not hold."""


def rig(spec: int | str) -> LidarRig:
    """The rig named ``spec`` (a beam count such as ``64`` or ``"64"``, or a name)."""
    key = str(spec).strip()
    if key not in RIGS:
        raise RigError(f"unknown LiDAR rig {spec!r} (known: {', '.join(RIGS)})")
    return RIGS[key]


def lidar_model(spec: int | str, **kw: Any) -> LidarModel:
    """The simulator's sensor for ``spec``: a beam-count preset (exactly
    :meth:`LidarModel.preset`, also for beam counts as text) or a named rig."""
    if isinstance(spec, int) or str(spec).strip().isdigit():
        return LidarModel.preset(int(spec), **kw)
    return rig(spec).model(**kw)


def rig_arg(text: str) -> int | str:
    """A command line's ``--beams``: a beam count stays an int (``16``, as it always parsed),
    any other rig is its name; an unknown one is an argparse error naming the known rigs."""
    import argparse

    try:
        found = rig(text)
    except RigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return found.beams if found.name.isdigit() else found.name


def rigs_of(dataset: str, names: list[str] | tuple[str, ...] = ()) -> list[LidarRig]:
    """The rigs a recipe trained on: ``names`` (``data.rigs``), else the dataset's own
    (:data:`DATASET_RIGS`); an empty list when neither is known (a bag, a new dataset)."""
    return [rig(n) for n in (names or DATASET_RIGS.get(dataset, ()))]
