"""The synthetic world as a dataset: generated on the fly, no download needed.

Frames come from :class:`xmodelkd_ros.sim.SimWorld`; a world (a street) is fully determined
by its seed, so a split is a list of seeds. Several streets per split keep a model from
learning one street's layout; the seeds are checked against the split's reserved range
(:mod:`xmodelkd_ros.sim.splits`), so no test street can enter training or validation.

``label_fraction`` < 1 models annotation scarcity: a fixed, seed-determined subset of the
scans keeps its labels, the others keep points and images but every label becomes
``IGNORE_INDEX`` (the supervised terms skip them, label-free terms still use them).
Generated frames are cached in memory (a few dozen scans), so later epochs are cheap;
with ``cache_dir`` also on disk (:mod:`.scan_cache`), so a large pool renders once.

``rigs`` (LiDAR rig names, :mod:`xmodelkd_ros.sim.rigs`) trains on a mix of sensors: the
streets of one round-robin pass take the rigs in turn, and each street's next pass the next
rig, so even a few scans mix the rigs and every street is seen through every rig.

:class:`ScanPool` puts a labeled set and an unlabeled pool from other streets behind one
index: the labeled set does not change as the pool grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xmodelkd_ros.labels import CLASS_NAMES
from xmodelkd_ros.training.data.sample import IGNORE_INDEX, Sample, label_ids_to_classes
from xmodelkd_ros.training.data.scan_cache import ScanCache
from xmodelkd_ros.training.data.temporal import camera_in_other_frame, temporal_offsets


def labeled_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """(n,) bool: which of ``n`` scans keep their labels; at least one when ``fraction`` > 0."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"label fraction must be in [0, 1], got {fraction}")
    k = min(n, max(1, round(fraction * n))) if fraction > 0 else 0
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng([int(seed), 0x1ABE1]).permutation(n)[:k]] = True
    return mask


class SyntheticWorld:
    """``scans`` frames spread round-robin over the streets ``seeds`` (scan ``j``: street
    ``j % len(seeds)``, frame ``start + (j // len(seeds)) * stride``).

    ``split`` ("train", "val", "test" or None = unchecked) checks the seeds against the
    split's reserved range. ``sim_kwargs`` go to ``SimWorld``. ``cache=False`` regenerates
    frames on every access (for data that does not fit in memory); ``cache_dir`` keeps
    rendered frames on disk (:class:`~.scan_cache.ScanCache`), across runs. ``rigs``: the
    LiDAR of scan ``j`` is ``rigs[(j % len(seeds) + j // len(seeds)) % len(rigs)]`` (empty:
    ``sim_kwargs``').
    """

    class_names: tuple[str, ...] = CLASS_NAMES

    def __init__(
        self,
        seed: int | Sequence[int],
        scans: int,
        start: int = 0,
        stride: int = 1,
        cache: bool = True,
        sim_kwargs: dict[str, Any] | None = None,
        split: str | None = None,
        label_fraction: float = 1.0,
        label_seed: int = 0,
        temporal_views: int = 0,
        temporal_step: int = 5,
        cache_dir: str | None = None,
        rigs: Sequence[str] = (),
    ) -> None:
        from xmodelkd_ros.sim.splits import check_seeds
        from xmodelkd_ros.sim.world import SimWorld

        seeds = [int(seed)] if isinstance(seed, int | np.integer) else [int(s) for s in seed]
        if split is not None:
            seeds = check_seeds(split, seeds)
        self.seeds = seeds
        self.rigs = [str(r) for r in rigs]
        kw = dict(sim_kwargs or {})
        #: per rig (one entry without rigs), the world of each street
        self.rig_worlds = [[SimWorld(s, **kw, **({"beams": r} if r else {})) for s in seeds]
                           for r in (self.rigs or [None])]  # fmt: skip
        self.worlds = self.rig_worlds[0]
        self.world = self.worlds[0]
        self.seed, self.scans, self.start, self.stride = seeds[0], scans, start, max(1, stride)
        self.labeled = labeled_mask(scans, float(label_fraction), label_seed)
        self.cache: dict[int, Sample] | None = {} if cache else None
        #: frame offsets of the temporal views (``data.temporal_views`` on each side)
        self.temporal = temporal_offsets(int(temporal_views), int(temporal_step))
        self.sim_kwargs = dict(sim_kwargs or {})
        self.disk = ScanCache(cache_dir) if cache_dir else None

    def __len__(self) -> int:
        return self.scans

    def locate(self, i: int) -> tuple[int, int]:
        """(world seed, frame index) of scan ``i``."""
        n = len(self.worlds)
        return self.seeds[i % n], self.start + (i // n) * self.stride

    def rig_index(self, i: int) -> int:
        """Which of ``rigs`` renders scan ``i`` (0 without rigs)."""
        n = len(self.worlds)
        return (i % n + i // n) % len(self.rig_worlds)

    def world_of(self, i: int) -> Any:
        """The ``SimWorld`` (street and LiDAR rig) that renders scan ``i``."""
        return self.rig_worlds[self.rig_index(i)][i % len(self.worlds)]

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.scans:
            raise IndexError(i)
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        sample = self._rendered(i)
        if not self.labeled[i]:
            sample.labels = np.full_like(sample.labels, IGNORE_INDEX)
        if self.cache is not None:
            self.cache[i] = sample
        return sample

    def _rendered(self, i: int) -> Sample:
        """Scan ``i`` with all its labels, from the disk cache when it holds it."""
        seed, index = self.locate(i)
        fields = {"seed": seed, "index": index, "sim": self.sim_kwargs,
                  "temporal": [int(t) for t in self.temporal]}  # fmt: skip
        world = self.world_of(i)
        if self.rigs:  # without rigs the key is what it always was
            fields["rig"] = self.rigs[self.rig_index(i)]
        if self.disk is not None and (hit := self.disk.get(fields)) is not None:
            return hit
        frame = world.scan(index)
        names = [cam.name for cam in frame.cameras]
        sample = Sample(
            points=frame.points,
            labels=label_ids_to_classes(frame.labels),
            images=[frame.images[n] for n in names],
            cameras=list(frame.cameras),
            name=f"sim{seed}/{index:06d}",
        )
        self._add_temporal_views(sample, world, index, frame.pose)
        if self.disk is not None:
            self.disk.put(fields, sample)
        return sample

    def _add_temporal_views(self, sample: Sample, world: Any, index: int, pose: Any) -> None:
        """Append every camera's image of frames ``index + offset`` (exact sim poses at the
        image stamps) as temporal views; offsets before the drive's start are skipped."""
        if not self.temporal:
            return
        offsets = [0] * len(sample.images)
        for off in self.temporal:
            j = index + off
            if j < 0:
                continue
            for cam in world.cameras:
                stamp = world.camera_stamp_ns(
                    cam.name, world.camera_frame_near(cam.name, world.scan_stamp_ns(j))
                )
                img, _, _ = world.render(cam, stamp)
                sample.images.append(img)
                sample.cameras.append(
                    camera_in_other_frame(cam, pose, world.pose_at(stamp) @ cam.T_lidar_cam, off)
                )
                offsets.append(off)
        sample.image_offsets = offsets


class ScanPool:
    """A labeled set followed by an unlabeled pool: scan ``i < len(labeled)`` is the
    labeled set's, the rest the pool's (label-free: every label ``IGNORE_INDEX``).

    ``labeled`` (per scan: keeps labels) is the parts' masks end to end, so the labeled
    scans are the same whatever the pool's size.
    """

    class_names: tuple[str, ...] = CLASS_NAMES

    def __init__(self, labeled: SyntheticWorld, pool: SyntheticWorld) -> None:
        if bool(pool.labeled.any()):
            raise ValueError("the unlabeled pool holds labeled scans")
        self.parts = (labeled, pool)
        self.labeled = np.concatenate([labeled.labeled, pool.labeled])

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, i: int) -> Sample:
        first = len(self.parts[0])
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.parts[0][i] if i < first else self.parts[1][i - first]
