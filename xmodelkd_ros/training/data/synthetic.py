"""The synthetic world as a dataset: generated on the fly, no download needed.

Frames come from :class:`xmodelkd_ros.sim.SimWorld`; a world is fully determined by its
seed, so the training and validation splits are simply two seeds. Generated frames are
cached in memory (a few dozen scans), which makes every epoch after the first cheap.
"""

from __future__ import annotations

from typing import Any

from xmodelkd_ros.labels import CLASS_NAMES
from xmodelkd_ros.training.data.sample import Sample, label_ids_to_classes


class SyntheticWorld:
    """``scans`` frames of the world with seed ``seed`` (``sim_kwargs`` go to ``SimWorld``).

    ``cache=False`` regenerates frames on every access (for data that does not fit in memory).
    """

    class_names: tuple[str, ...] = CLASS_NAMES

    def __init__(
        self,
        seed: int,
        scans: int,
        start: int = 0,
        stride: int = 1,
        cache: bool = True,
        sim_kwargs: dict[str, Any] | None = None,
    ) -> None:
        from xmodelkd_ros.sim.world import SimWorld

        self.world = SimWorld(seed, **(sim_kwargs or {}))
        self.seed, self.scans, self.start, self.stride = seed, scans, start, max(1, stride)
        self.cache: dict[int, Sample] | None = {} if cache else None

    def __len__(self) -> int:
        return self.scans

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.scans:
            raise IndexError(i)
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        frame = self.world.scan(self.start + i * self.stride)
        names = [cam.name for cam in frame.cameras]
        sample = Sample(
            points=frame.points,
            labels=label_ids_to_classes(frame.labels),
            images=[frame.images[n] for n in names],
            cameras=list(frame.cameras),
            name=f"sim{self.seed}/{self.start + i * self.stride:06d}",
        )
        if self.cache is not None:
            self.cache[i] = sample
        return sample
