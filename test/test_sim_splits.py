"""Streets without lateral shortcuts, split seed ranges that keep the test streets out of
training and validation, and label-scarce training data."""

from __future__ import annotations

import numpy as np
import pytest

from xmodelkd_ros.labels import CLASS_NAMES, NUM_CLASSES
from xmodelkd_ros.sim import SimWorld
from xmodelkd_ros.sim.scene import G_PARK, G_ROAD, G_SIDEWALK, StreetParams
from xmodelkd_ros.sim.splits import TEST_SEEDS, TRAIN_SEEDS, VAL_SEEDS, SplitError, check_seeds
from xmodelkd_ros.training.data.sample import IGNORE_INDEX
from xmodelkd_ros.training.data.semantickitti import DatasetError
from xmodelkd_ros.training.data.synthetic import SyntheticWorld, labeled_mask
from xmodelkd_ros.training.datasets import build_source
from xmodelkd_ros.training.recipe import load_recipe


def _world_xy(frame) -> np.ndarray:
    p = frame.points[:, :3].astype(np.float64)
    return p @ frame.pose[:3, :3].T + frame.pose[:3, 3]


def test_road_width_and_ego_lane_vary_over_seeds_and_match_the_points() -> None:
    params = [StreetParams.draw(s) for s in range(40)]
    assert len({p.lanes for p in params}) >= 3
    widths = np.array([2 * p.road_half for p in params])
    egos = np.array([p.ego_y for p in params])
    assert widths.max() - widths.min() > 5.0
    assert egos.max() - egos.min() > 2.0
    assert len({p.park for p in params if 0.0 in p.park}) >= 2  # one-sided or no parking
    # the observed geometry follows: the road's lateral extent is the drawn width
    for s in (0, 3):
        w = SimWorld(s, cameras=0)
        f = w.scan(5, images=False)
        y = np.abs(_world_xy(f)[f.labels == 9, 1])  # 9 = road
        assert np.quantile(y, 0.99) == pytest.approx(w.street.params.road_half, abs=0.3)
        assert f.pose[1, 3] == pytest.approx(w.street.params.ego_y, abs=0.4)


def test_no_lateral_threshold_separates_road_from_parking_and_sidewalk() -> None:
    """Across streets the lateral bands overlap: a |y| that is parking on one street is
    road on another, and sidewalks exist at road level (no height step)."""
    road_hi, park_lo, side_low = [], [], 0
    for s in range(12):
        st = SimWorld(s, cameras=0).street
        first, table = st.edge_table(0.0, 200.0)
        x = np.repeat(np.arange(0.0, 200.0, 0.5), 41)
        y = np.tile(np.linspace(-12, 12, 41), 400)
        band, height = st.ground(x, y, first, table)
        road_hi.append(np.abs(y[band == G_ROAD]).max())
        if (band == G_PARK).any():
            park_lo.append(np.abs(y[band == G_PARK]).min())
        side_low += int(((band == G_SIDEWALK) & (height == 0.0)).sum())
    assert max(road_hi) > min(park_lo) + 1.0
    assert side_low > 0


def _counts(seeds, per_street: int, stride: int) -> np.ndarray:
    n = np.zeros(NUM_CLASSES + 1, dtype=np.int64)
    for s in seeds:
        w = SimWorld(s, cameras=0)
        for j in range(per_street):
            n += np.bincount(w.scan(j * stride, images=False).labels, minlength=NUM_CLASSES + 1)
    return n


def test_every_class_in_the_evaluation_splits_with_the_stated_minimum() -> None:
    from xmodelkd_ros.evaluation.benchmark import MIN_CLASS_POINTS, build_parser

    args = build_parser().parse_args([])
    test = _counts(args.test_seeds, args.test_scans, args.test_stride)
    missing = [c for c, k in zip(CLASS_NAMES, test[1:], strict=True) if k < MIN_CLASS_POINTS]
    assert not missing, f"test split below {MIN_CLASS_POINTS} points: {missing}"
    data = load_recipe("synthetic").data
    per = data.val_scans // len(data.val_seeds)
    val = _counts(data.val_seeds, per, data.stride)
    low = [c for c, k in zip(CLASS_NAMES, val[1:], strict=True) if k < MIN_CLASS_POINTS]
    assert not low, f"validation split below {MIN_CLASS_POINTS} points: {low}"


def test_split_ranges_are_disjoint_and_test_seeds_are_refused_for_training() -> None:
    assert not set(TEST_SEEDS) & (set(TRAIN_SEEDS) | set(VAL_SEEDS))
    assert not set(TRAIN_SEEDS) & set(VAL_SEEDS)
    for split in ("train", "val", "pretrain"):
        with pytest.raises(SplitError, match="reserved"):
            check_seeds(split, [TEST_SEEDS.start])
    with pytest.raises(SplitError):
        check_seeds("test", [TRAIN_SEEDS.start])
    with pytest.raises(SplitError):
        check_seeds("train", [VAL_SEEDS.start])
    assert check_seeds("test", [9000, 9001]) == [9000, 9001]


@pytest.mark.parametrize("key", ["data.train_seeds", "data.val_seeds"])
def test_recipe_with_a_test_street_fails_cleanly(key: str) -> None:
    recipe = load_recipe("synthetic", [f"{key}=[3, 9005]"])
    split = key.split(".")[1].split("_")[0]
    with pytest.raises(DatasetError, match="9005"):
        build_source(recipe, split)


def test_default_recipe_splits_are_in_their_ranges() -> None:
    recipe = load_recipe("synthetic")
    for split in ("train", "val"):
        src = build_source(recipe, split)
        assert set(src.seeds) <= set(TRAIN_SEEDS if split == "train" else VAL_SEEDS)
        assert len(src.seeds) >= 3
        seen = {src.locate(i)[0] for i in range(len(src))}
        assert seen == set(src.seeds)  # round-robin reaches every street


def test_label_fraction_masks_whole_scans_deterministically() -> None:
    m = labeled_mask(40, 0.1, seed=3)
    assert m.sum() == 4
    np.testing.assert_array_equal(m, labeled_mask(40, 0.1, seed=3))
    assert not np.array_equal(m, labeled_mask(40, 0.1, seed=4))
    assert labeled_mask(5, 0.01, 0).sum() == 1 and labeled_mask(5, 1.0, 0).all()
    with pytest.raises(ValueError):
        labeled_mask(5, 1.5, 0)
    sim = {"cameras": 1, "width": 64, "height": 48}
    src = SyntheticWorld(
        [1, 2], scans=4, stride=10, label_fraction=0.5, sim_kwargs=sim, split="train"
    )
    full = SyntheticWorld([1, 2], scans=4, stride=10, sim_kwargs=sim)
    for i in range(4):
        s, f = src[i], full[i]
        np.testing.assert_array_equal(s.points, f.points)
        assert len(s.images) == 1  # unlabeled scans keep their images
        if src.labeled[i]:
            np.testing.assert_array_equal(s.labels, f.labels)
        else:
            assert (s.labels == IGNORE_INDEX).all()
    assert src.labeled.sum() == 2
