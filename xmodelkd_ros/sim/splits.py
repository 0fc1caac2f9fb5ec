"""Which world seeds may be used for what: training, validation and the reserved test streets.

Why it exists: an accuracy claim is only honest if the streets it is measured on never
influenced training or model selection. Streets are world seeds, so the guarantee is a
partition of the seed space, checked wherever a split is built (:func:`check_seeds`): the
training data loader refuses a test seed, and the benchmark refuses to score on anything
but a test seed. The ranges are disjoint by construction and asserted below.
"""

from __future__ import annotations

from collections.abc import Iterable

#: world seeds the training streets are drawn from
TRAIN_SEEDS = range(0, 100)
#: world seeds of the validation streets (model and schedule selection). 100-199 first;
#: widened to 999 when the pre-registered validation measurements had used nearly all of
#: them (the ledger: docs/results/streets.yaml, read by xmodelkd_ros.evaluation.ledger):
#: a fresh measurement needs streets no earlier choice has seen
VAL_SEEDS = range(100, 1000)
#: reserved: held-out test streets, scored only by ``xmodelkd_ros.evaluation.benchmark``
TEST_SEEDS = range(9000, 10000)

SPLITS = {"train": TRAIN_SEEDS, "val": VAL_SEEDS, "test": TEST_SEEDS}
assert not set(TRAIN_SEEDS) & set(VAL_SEEDS) and not set(TEST_SEEDS) & set(TRAIN_SEEDS)
assert not set(TEST_SEEDS) & set(VAL_SEEDS)


class SplitError(ValueError):
    """A world seed was asked for in a split whose seed range does not contain it."""


def check_seeds(split: str, seeds: Iterable[int]) -> list[int]:
    """``seeds`` as a list, or :class:`SplitError` if one lies outside ``split``'s range.

    ``split`` is ``train`` (and ``pretrain``, which uses the training streets), ``val`` or
    ``test``. A test seed is never accepted for training or validation.
    """
    key = "train" if split == "pretrain" else split
    if key not in SPLITS:
        raise SplitError(f"unknown split {split!r} (train | val | test)")
    allowed = SPLITS[key]
    out = [int(s) for s in seeds]
    if not out:
        raise SplitError(f"no world seeds for the {split} split")
    bad = [s for s in out if s not in allowed]
    if bad:
        which = ", ".join(
            f"{s} ({next((k for k, r in SPLITS.items() if s in r), 'no split')})" for s in bad
        )
        raise SplitError(
            f"world seeds {which} may not be used for {split}: {split} streets come from "
            f"[{allowed.start}, {allowed.stop}); test streets [{TEST_SEEDS.start}, "
            f"{TEST_SEEDS.stop}) are reserved for the benchmark"
        )
    return out
