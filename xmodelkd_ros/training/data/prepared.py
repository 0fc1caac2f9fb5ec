"""A sample after augmentation and before collation: what a dataset item hands the batcher.

Its own module in the data package so that collation (:mod:`.collate`) and augmentation
(:mod:`xmodelkd_ros.training.augment`), which makes it, both depend on the type
without depending on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xmodelkd_ros.training.data.sample import Correspondences


@dataclass
class Prepared:
    """A sample ready for collation: augmented points, labels, resized images, pairs."""

    points: np.ndarray
    labels: np.ndarray | None
    images: list[np.ndarray]  # each (H, W, 3) uint8 at the common image size
    corr: Correspondences
    name: str
    #: per image, its frame offset (0 = this scan's frame; see ``Sample.image_offsets``)
    image_offsets: list[int] = field(default_factory=list)
