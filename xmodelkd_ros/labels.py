"""SemanticKITTI label definitions shared by the simulator, training, the node and replay.

The synthetic world, real SemanticKITTI data and the deployed model all speak the
same ids, so a model trained on one can be scored on the other and the node's
output colours match the ones people know from the dataset.

Three id spaces exist and are kept apart on purpose:

* *raw* ids: what ``.label`` files hold in their low 16 bits (10 = car, 40 = road, ...).
* *label* ids: 0 = unlabeled/ignored, 1..19 = the 19 evaluated classes. The node
  publishes these in its ``label`` field.
* *class indices*: 0..18, the network's output channels (``label - 1``).
"""

from __future__ import annotations

import numpy as np

#: The 19 evaluated SemanticKITTI classes, in label-id order (label id = index + 1).
CLASS_NAMES: tuple[str, ...] = (
    "car",
    "bicycle",
    "motorcycle",
    "truck",
    "other-vehicle",
    "person",
    "bicyclist",
    "motorcyclist",
    "road",
    "parking",
    "sidewalk",
    "other-ground",
    "building",
    "fence",
    "vegetation",
    "trunk",
    "terrain",
    "pole",
    "traffic-sign",
)
NUM_CLASSES = len(CLASS_NAMES)
UNLABELED = 0

#: Raw SemanticKITTI id -> (name, label id). Moving classes fold onto their static twins,
#: lane-marking folds onto road, exactly as the official ``learning_map`` does.
RAW_CLASSES: dict[int, tuple[str, int]] = {
    0: ("unlabeled", 0),
    1: ("outlier", 0),
    10: ("car", 1),
    11: ("bicycle", 2),
    13: ("bus", 5),
    15: ("motorcycle", 3),
    16: ("on-rails", 5),
    18: ("truck", 4),
    20: ("other-vehicle", 5),
    30: ("person", 6),
    31: ("bicyclist", 7),
    32: ("motorcyclist", 8),
    40: ("road", 9),
    44: ("parking", 10),
    48: ("sidewalk", 11),
    49: ("other-ground", 12),
    50: ("building", 13),
    51: ("fence", 14),
    52: ("other-structure", 0),
    60: ("lane-marking", 9),
    70: ("vegetation", 15),
    71: ("trunk", 16),
    72: ("terrain", 17),
    80: ("pole", 18),
    81: ("traffic-sign", 19),
    99: ("other-object", 0),
    252: ("moving-car", 1),
    253: ("moving-bicyclist", 7),
    254: ("moving-person", 6),
    255: ("moving-motorcyclist", 8),
    256: ("moving-on-rails", 5),
    257: ("moving-bus", 5),
    258: ("moving-truck", 4),
    259: ("moving-other-vehicle", 5),
}

#: Raw id of each label id's canonical class (inverse of the learning map, static classes).
LABEL_TO_RAW: dict[int, int] = {
    0: 0, 1: 10, 2: 11, 3: 15, 4: 18, 5: 20, 6: 30, 7: 31, 8: 32, 9: 40, 10: 44,
    11: 48, 12: 49, 13: 50, 14: 51, 15: 70, 16: 71, 17: 72, 18: 80, 19: 81,
}  # fmt: skip

#: RGB palette per label id (SemanticKITTI's colour map, converted from its BGR order).
PALETTE = np.array(
    [
        (0, 0, 0),
        (100, 150, 245),
        (100, 230, 245),
        (30, 60, 150),
        (80, 30, 180),
        (0, 0, 255),
        (255, 30, 30),
        (255, 40, 200),
        (150, 30, 90),
        (255, 0, 255),
        (255, 150, 255),
        (75, 0, 75),
        (175, 0, 75),
        (255, 200, 0),
        (255, 120, 50),
        (0, 175, 0),
        (135, 60, 0),
        (150, 240, 80),
        (255, 240, 150),
        (255, 0, 0),
    ],
    dtype=np.uint8,
)


def learning_map_lut() -> np.ndarray:
    """A 65536-entry lookup table raw id -> label id (unknown raw ids map to unlabeled)."""
    lut = np.zeros(1 << 16, dtype=np.uint16)
    for raw, (_, label) in RAW_CLASSES.items():
        lut[raw] = label
    return lut


def raw_to_label(raw: np.ndarray) -> np.ndarray:
    """Map raw ``.label`` values (instance id in the high 16 bits allowed) to label ids."""
    raw = np.asarray(raw)
    return learning_map_lut()[(raw.astype(np.uint32) & 0xFFFF)]


def label_to_raw(label: np.ndarray) -> np.ndarray:
    """Map label ids 0..19 to the canonical raw SemanticKITTI ids (for writing ``.label``)."""
    lut = np.zeros(NUM_CLASSES + 1, dtype=np.uint32)
    for lab, raw in LABEL_TO_RAW.items():
        lut[lab] = raw
    return lut[np.asarray(label, dtype=np.int64)]
