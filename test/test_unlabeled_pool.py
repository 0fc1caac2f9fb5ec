"""The unlabeled pool: a fixed labeled set plus label-free scans of other streets, rendered
scans cached on disk, and batches that hold a fixed number of labeled scans."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from training_hooks import TINY

from xmodelkd_ros.training.context import labeled_batches
from xmodelkd_ros.training.data.sample import IGNORE_INDEX
from xmodelkd_ros.training.data.semantickitti import DatasetError
from xmodelkd_ros.training.data.synthetic import SyntheticWorld
from xmodelkd_ros.training.datasets import build_source
from xmodelkd_ros.training.hooks import HookBase
from xmodelkd_ros.training.recipe import RecipeError, load_recipe
from xmodelkd_ros.training.train import main

SMALL = ["data.render_size=[30,50]", "data.cameras=1", "data.train_scans=4",
         "data.label_fraction=0.5", "data.unlabeled_seeds=[20,21,22]"]  # fmt: skip


def _pool(scans: int, *extra: str):
    return build_source(load_recipe("synthetic", [*SMALL, f"data.unlabeled_scans={scans}",
                                                  *extra]), "train")  # fmt: skip


def test_labeled_set_is_fixed_as_the_pool_grows():
    sources = [_pool(n) for n in (0, 3, 6)]
    assert [len(s) for s in sources] == [4, 7, 10]
    first = sources[0]
    for src in sources[1:]:
        assert np.array_equal(src.labeled[:4], first.labeled) and not src.labeled[4:].any()
        for i in range(4):  # the same scans, the same labels (or the same absence of them)
            a, b = first[i], src[i]
            assert a.name == b.name and np.array_equal(a.labels, b.labels)
            assert np.array_equal(a.points, b.points)
        for i in range(4, len(src)):  # pool scans: other streets, images, no labels
            s = src[i]
            assert int(s.name[3:5]) in (20, 21, 22) and len(s.images) == 1
            assert (s.labels == IGNORE_INDEX).all()
    assert first.labeled.sum() == 2
    # pools nest: the smaller pool is the start of the larger one
    assert [sources[1][i].name for i in range(4, 7)] == [sources[2][i].name for i in range(4, 7)]
    assert [sources[2][i].name for i in range(4, 10)] == [
        "sim20/000000", "sim21/000000", "sim22/000000",
        "sim20/000010", "sim21/000010", "sim22/000010"]  # fmt: skip


def test_pool_settings_that_cannot_work_are_refused():
    with pytest.raises(DatasetError, match=r"unlabeled_seeds \[2\] are also data.train_seeds"):
        _pool(2, "data.unlabeled_seeds=[2,30]")
    with pytest.raises(DatasetError, match=r"needs data\.unlabeled_seeds"):
        _pool(2, "data.unlabeled_seeds=[]")
    with pytest.raises(DatasetError, match="may not be used for train"):
        _pool(2, "data.unlabeled_seeds=[150]")  # a validation street
    with pytest.raises(RecipeError, match="labeled_per_batch must be between 1 and"):
        load_recipe("synthetic", ["data.labeled_per_batch=2", "data.batch_size=2"])


def test_disk_cache_hit_gives_the_identical_scan(tmp_path, monkeypatch):
    kwargs = {"seed": [3, 4], "scans": 3, "stride": 10, "split": "train",
              "sim_kwargs": {"cameras": 2, "width": 50, "height": 30},
              "label_fraction": 0.5, "temporal_views": 1, "cache_dir": str(tmp_path)}  # fmt: skip
    made = SyntheticWorld(**kwargs)
    rendered = [made[i] for i in range(3)]
    assert len(list(tmp_path.glob("*.npz"))) == 3
    again = SyntheticWorld(**kwargs)
    for w in again.worlds:  # a hit must not render
        monkeypatch.setattr(w, "scan", lambda i: pytest.fail("rendered despite a cache hit"))
    for i, a in enumerate(rendered):
        b = again[i]
        assert (a.name, a.image_offsets) == (b.name, b.image_offsets)
        assert np.array_equal(a.points, b.points) and a.points.dtype == b.points.dtype
        assert np.array_equal(a.labels, b.labels)  # the label mask applies after the cache
        assert len(a.images) == len(b.images) > 2  # 2 cameras + temporal views
        for x, y in zip(a.images, b.images, strict=True):
            assert np.array_equal(x, y) and x.dtype == y.dtype
        for c, d in zip(a.cameras, b.cameras, strict=True):
            assert (c.name, c.width, c.height, c.near) == (d.name, d.width, d.height, d.near)
            assert np.array_equal(c.K, d.K) and np.array_equal(c.T_cam_lidar, d.T_cam_lidar)
    # another label draw shares the renders; another camera size does not
    relabeled = SyntheticWorld(**{**kwargs, "label_seed": 5})
    assert np.array_equal(relabeled[0].points, rendered[0].points)
    assert len(list(tmp_path.glob("*.npz"))) == 3
    SyntheticWorld(**{**kwargs, "sim_kwargs": {"cameras": 2, "width": 52, "height": 30}})[0]
    assert len(list(tmp_path.glob("*.npz"))) == 4


def _ctx(seed: int = 0, world: int = 1, rank: int = 0) -> SimpleNamespace:
    return SimpleNamespace(seed=seed, dist=SimpleNamespace(world_size=world, rank=rank))


@pytest.mark.parametrize(("n_lab", "n_unl", "bs", "k"),
                         [(4, 40, 2, 1), (3, 20, 4, 2), (5, 7, 3, 1)])  # fmt: skip
def test_every_batch_holds_k_labeled_scans(n_lab, n_unl, bs, k):
    labeled = np.zeros(n_lab + n_unl, bool)
    labeled[np.random.default_rng(0).permutation(len(labeled))[:n_lab]] = True
    batches = labeled_batches(_ctx(), labeled, 0, bs, k, None)
    m = bs - k
    assert len(batches) == n_unl // m
    for b in batches:
        assert len(b) == bs and labeled[b[:k]].all() and not labeled[b[k:]].any()
    unl = [i for b in batches for i in b[k:]]
    assert len(set(unl)) == len(unl) == len(batches) * m  # each unlabeled scan once
    counts = np.bincount([i for b in batches for i in b[:k]], minlength=len(labeled))[labeled]
    assert counts.max() - counts.min() <= 1  # labeled scans drawn in reshuffled passes
    assert batches == labeled_batches(_ctx(), labeled, 0, bs, k, None)
    assert batches != labeled_batches(_ctx(), labeled, 1, bs, k, None)
    assert labeled_batches(_ctx(), labeled, 0, bs, k, 2) == batches[:2]
    ranks = [labeled_batches(_ctx(world=2, rank=r), labeled, 0, bs, k, None) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) and ranks[0] + ranks[1] != []


class LabeledPerBatch(HookBase):
    """Records, per training step, how many scans of the batch carry labels."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.names: set[str] = set()

    def before_step(self, trainer) -> None:
        b = trainer.batch
        per_scan = [int((b.labels[b.inputs.point_batch == s] >= 0).any())
                    for s in range(len(b.names))]  # fmt: skip
        self.counts.append(sum(per_scan))
        self.names.update(b.names)


def test_teacher_trains_on_the_pool_with_one_labeled_scan_per_batch(tmp_path):
    hook = LabeledPerBatch()
    out = tmp_path / "run"
    args = [*TINY, "data.label_fraction=0.5", "data.unlabeled_seeds=[30,31]",
            "data.unlabeled_scans=6", "data.labeled_per_batch=1", "schedule.teacher_epochs=2",
            "schedule.steps_per_epoch=3", f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    assert main(["--stage", "teacher", "--out", str(out), *args], hooks=[hook]) == 0
    assert hook.counts == [1] * 6  # 2 epochs x 3 capped steps, one labeled scan each
    log = (out / "train.log").read_text()
    assert "teacher: 2 epochs x 3 steps, 10 scans" in log
    assert any(n.startswith(("sim30/", "sim31/")) for n in hook.names)  # the pool is used
    # every scan rendered once, to the disk cache: those trained on and the 2 validation ones
    assert len(list((tmp_path / "cache").glob("*.npz"))) == len(hook.names) + 2
