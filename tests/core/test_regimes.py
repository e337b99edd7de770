"""Data regimes: counts, class balance, class-matched pairs, nesting, validation split, size limits, class maps."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest

from bma.config import ConfigError, RegimeConfig, TrialConfig
from bma.data.errors import DataError
from bma.data.regimes import RegimeError, build_regime, interleaved_order, load_classmap

DIGITS = tuple(str(d) for d in range(10))


# -- helpers ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(full_data):
    """Common-space labels of the real MNIST/FSDD train and test splits (identity class map)."""
    cm = full_data.classmap
    return {
        "img_tr": cm.image_to_common[full_data.image_train.y.numpy()],
        "snd_tr": cm.sound_to_common[full_data.sound_train.y.numpy()],
        "img_te": cm.image_to_common[full_data.image_test.y.numpy()],
        "snd_te": cm.sound_to_common[full_data.sound_test.y.numpy()],
        "K": cm.num_classes,
    }


def regime(labels: dict, **kw):
    cfg = RegimeConfig(**kw)
    return build_regime(cfg, labels["img_tr"], labels["snd_tr"], labels["img_te"], labels["snd_te"], labels["K"],
                        image_source="mnist", sound_source="fsdd")


def synthetic_labels(seed: int = 0) -> dict:
    """5 classes; images 150..350 per class, sounds 80 per class, shuffled; a sixth, unmapped class (-1)."""
    rng = np.random.default_rng(seed)
    img = np.concatenate([np.full(150 + 50 * c, c) for c in range(5)] + [np.full(40, -1)])
    snd = np.concatenate([np.full(80, c) for c in range(5)] + [np.full(30, -1)])
    img_te = np.concatenate([np.full(20 + c, c) for c in range(5)] + [np.full(7, -1)])
    snd_te = np.concatenate([np.full(12, c) for c in range(5)] + [np.full(5, -1)])
    return {"img_tr": rng.permutation(img), "snd_tr": rng.permutation(snd), "img_te": rng.permutation(img_te),
            "snd_te": rng.permutation(snd_te), "K": 5}


def assert_balanced(labels: np.ndarray, num_classes: int) -> None:
    counts = np.bincount(labels, minlength=num_classes)
    n = len(labels)
    assert counts.min() >= n // num_classes and counts.max() <= -(-n // num_classes), counts


# -- the real mirror ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio,n", [(0.1, 500), (0.2, 1000), (0.5, 250), (1.0, 300), (0.13, 777)])
def test_counts_on_real_labels(real, ratio, n):
    r = regime(real, pairing_ratio=ratio, train_size=n, val_per_class=20, seed=3)
    p = round(ratio * n)
    assert r.counts() == {
        "pairs": p, "unpaired_images": n - p, "unpaired_sounds": n - p, "val_pairs": 20 * 10,
        "test_images": 10000, "test_sounds": 300, "test_pairs": 300,
    }
    assert r.num_classes == 10
    assert len(r.train_image) == len(r.train_sound) == n


@pytest.mark.parametrize("n", [100, 537, 1000, 2500])
def test_class_balance_on_real_labels(real, n):
    r = regime(real, pairing_ratio=0.1, train_size=n, seed=1)
    assert_balanced(real["img_tr"][r.train_image], 10)
    assert_balanced(real["snd_tr"][r.train_sound], 10)
    assert_balanced(real["img_tr"][r.pair_image], 10)
    # validation: exactly val_per_class per class on both sides
    assert np.array_equal(np.bincount(real["img_tr"][r.val_image]), [20] * 10)
    assert np.array_equal(np.bincount(real["snd_tr"][r.val_sound]), [20] * 10)


def test_pairs_are_class_matched_and_splits_disjoint(real):
    r = regime(real, pairing_ratio=0.2, train_size=2000, seed=0)
    assert np.array_equal(real["img_tr"][r.pair_image], real["snd_tr"][r.pair_sound])
    assert np.array_equal(real["img_tr"][r.val_image], real["snd_tr"][r.val_sound])
    assert np.array_equal(real["img_te"][r.test_pair_image], real["snd_te"][r.test_pair_sound])
    # no sample twice within a training set (no expansion), none shared between pairs and unpaired
    for arr in (r.train_image, r.train_sound, r.val_image, r.val_sound, r.test_pair_image, r.test_pair_sound):
        assert len(np.unique(arr)) == len(arr)
    assert not set(r.pair_image) & set(r.unpaired_image)
    assert not set(r.pair_sound) & set(r.unpaired_sound)
    # validation never overlaps training
    assert not set(r.val_image) & set(r.train_image)
    assert not set(r.val_sound) & set(r.train_sound)
    # test indices are the whole (mapped) test split
    assert np.array_equal(r.test_image, np.arange(10000)) and np.array_equal(r.test_sound, np.arange(300))


def test_nesting_on_real_labels(real):
    seed = 7
    r10 = regime(real, pairing_ratio=0.1, train_size=1000, seed=seed)
    r20 = regime(real, pairing_ratio=0.2, train_size=1000, seed=seed)
    # pairs at 10 % are the first pairs at 20 %, in order, on both sides
    assert np.array_equal(r20.pair_image[:100], r10.pair_image)
    assert np.array_equal(r20.pair_sound[:100], r10.pair_sound)
    # one train_size: the same training samples whatever the ratio
    assert set(r10.train_image) == set(r20.train_image)
    assert set(r10.train_sound) == set(r20.train_sound)
    # a smaller training set is a subset of a larger one
    small = regime(real, pairing_ratio=0.1, train_size=500, seed=seed)
    assert set(small.train_image) < set(r10.train_image)
    assert set(small.train_sound) < set(r10.train_sound)
    assert set(small.pair_image) < set(r10.pair_image)
    # validation is the same for every regime of a seed
    for other in (r20, small, regime(real, pairing_ratio=1.0, train_size=2500, seed=seed)):
        assert np.array_equal(other.val_image, r10.val_image)
        assert np.array_equal(other.val_sound, r10.val_sound)
        assert np.array_equal(other.test_pair_image, r10.test_pair_image)


def test_seeds_give_different_draws_and_one_seed_the_same(real):
    a = regime(real, pairing_ratio=0.1, train_size=1000, seed=0)
    again = regime(real, pairing_ratio=0.1, train_size=1000, seed=0)
    b = regime(real, pairing_ratio=0.1, train_size=1000, seed=1)
    for name in ("pair_image", "pair_sound", "unpaired_image", "unpaired_sound", "val_image", "val_sound"):
        assert np.array_equal(getattr(a, name), getattr(again, name)), name
        assert not np.array_equal(getattr(a, name), getattr(b, name)), name
    assert len(set(a.pair_image) & set(b.pair_image)) < 0.1 * len(a.pair_image)
    assert set(a.val_image) != set(b.val_image)


def test_train_size_above_fsdd_pool_names_the_limit(real):
    # FSDD: 2,700 train clips, 20 per class carved for validation -> 2,500 usable
    assert len(regime(real, train_size=2500).train_sound) == 2500
    with pytest.raises(RegimeError) as err:
        regime(real, train_size=2501)
    msg = str(err.value)
    assert "regime.train_size" in msg and "2501" in msg and "2500" in msg and "fsdd" in msg
    assert "expand_sounds" in msg
    # a larger validation carve lowers the limit accordingly
    with pytest.raises(RegimeError, match="2400"):
        regime(real, train_size=2450, val_per_class=30)


def test_expand_sounds_reuses_clips(real):
    n = 3000
    r = regime(real, pairing_ratio=0.1, train_size=n, seed=2, expand_sounds=True)
    assert r.counts()["pairs"] == 300 and r.counts()["unpaired_sounds"] == n - 300
    assert len(r.train_image) == len(r.train_sound) == n
    assert len(np.unique(r.train_sound)) == 2500  # every usable clip, some twice
    assert np.bincount(np.bincount(r.train_sound)).tolist()[1:] == [2000, 500]
    assert not set(r.val_sound) & set(r.train_sound)  # reuse never reaches validation clips
    assert np.array_equal(real["img_tr"][r.pair_image], real["snd_tr"][r.pair_sound])
    assert_balanced(real["snd_tr"][r.train_sound], 10)
    # below the pool, expansion changes nothing
    assert np.array_equal(regime(real, train_size=1000, expand_sounds=True).train_sound,
                          regime(real, train_size=1000).train_sound)


def test_trial_config_refuses_bad_regimes():
    for ratio in (0.0, -0.1, 1.5, 2):
        with pytest.raises(ConfigError) as err:
            TrialConfig().with_updates(pairing_ratio=ratio)
        assert any(p.startswith("regime.pairing_ratio") for p in err.value.problems), err.value.problems
    for size in (0, -5):
        with pytest.raises(ConfigError) as err:
            TrialConfig().with_updates(train_size=size)
        assert any(p.startswith("regime.train_size") for p in err.value.problems)
    with pytest.raises(ConfigError, match="regime.val_per_class"):
        TrialConfig().with_updates(**{"regime.val_per_class": 0})
    with pytest.raises(ConfigError, match="regime.image_noise_std"):
        TrialConfig().with_updates(image_noise_std=-1.0)
    # both problems reported at once
    with pytest.raises(ConfigError) as err:
        TrialConfig().with_updates(pairing_ratio=1.5, train_size=0)
    assert len(err.value.problems) == 2
    assert TrialConfig().with_updates(pairing_ratio=1.0).regime.pairing_ratio == 1.0


# -- synthetic labels ---------------------------------------------------------------------------------------------


def test_interleaved_order_prefixes_balanced():
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate((7, 12, 30))] + [np.full(5, -1)])
    labels = rng.permutation(labels)
    order = interleaved_order(labels, 3, np.random.default_rng(1))
    assert sorted(order) == sorted(np.flatnonzero(labels >= 0))  # every mapped sample once, no unmapped one
    for k in range(1, 22):  # while every class has samples left (smallest class: 7)
        assert_balanced(labels[order[:k]], 3)
    # afterwards the remaining classes keep alternating
    assert labels[order[21:]].tolist()[:4] == [1, 2, 1, 2]


def test_synthetic_regime_counts_balance_and_unmapped(tmp_path):
    lab = synthetic_labels()
    r = build_regime(RegimeConfig(pairing_ratio=0.3, train_size=300, val_per_class=4, seed=5),
                     lab["img_tr"], lab["snd_tr"], lab["img_te"], lab["snd_te"], lab["K"])
    assert r.counts() == {"pairs": 90, "unpaired_images": 210, "unpaired_sounds": 210, "val_pairs": 20,
                          "test_images": 110, "test_sounds": 60, "test_pairs": 60}
    for idx, labels in ((r.train_image, lab["img_tr"]), (r.train_sound, lab["snd_tr"]),
                        (r.val_image, lab["img_tr"]), (r.test_image, lab["img_te"]),
                        (r.test_sound, lab["snd_te"]), (r.test_pair_image, lab["img_te"])):
        assert (labels[idx] >= 0).all()  # unmapped samples are never used
    assert_balanced(lab["img_tr"][r.train_image], 5)
    assert_balanced(lab["snd_tr"][r.train_sound], 5)
    assert np.array_equal(lab["img_tr"][r.pair_image], lab["snd_tr"][r.pair_sound])
    assert np.array_equal(lab["img_te"][r.test_pair_image], lab["snd_te"][r.test_pair_sound])


def test_synthetic_nesting_across_ratios_and_sizes():
    lab = synthetic_labels(1)
    def build(**kw):
        return build_regime(RegimeConfig(**{"val_per_class": 4, "seed": 9, **kw}), lab["img_tr"], lab["snd_tr"],
                            lab["img_te"], lab["snd_te"], lab["K"])

    rs = {ratio: build(pairing_ratio=ratio, train_size=350) for ratio in (0.1, 0.2, 0.5, 1.0)}
    for lo, hi in ((0.1, 0.2), (0.2, 0.5), (0.5, 1.0)):
        p = len(rs[lo].pair_image)
        assert np.array_equal(rs[hi].pair_image[:p], rs[lo].pair_image)
        assert np.array_equal(rs[hi].pair_sound[:p], rs[lo].pair_sound)
        assert np.array_equal(rs[hi].val_image, rs[lo].val_image)
    assert len(rs[1.0].unpaired_image) == 0 and len(rs[1.0].pair_image) == 350
    assert set(build(pairing_ratio=0.2, train_size=150).train_image) < set(rs[0.2].train_image)
    assert set(build(pairing_ratio=0.2, train_size=150).train_sound) < set(rs[0.2].train_sound)


def test_synthetic_size_limits():
    lab = synthetic_labels(2)
    build = lambda **kw: build_regime(RegimeConfig(**{"val_per_class": 4, **kw}), lab["img_tr"],  # noqa: E731
                                      lab["snd_tr"], lab["img_te"], lab["snd_te"], lab["K"],
                                      image_source="imgsrc", sound_source="sndsrc")
    # sounds: 5 x 80 - 5 x 4 = 380 usable
    build(train_size=380)
    with pytest.raises(RegimeError, match=r"381 sounds.*sndsrc.*380.*expand_sounds"):
        build(train_size=381)
    assert len(build(train_size=381, expand_sounds=True).train_sound) == 381
    # images: 1250 - 20 = 1230 usable; never expandable
    with pytest.raises(RegimeError, match=r"1231 images.*imgsrc.*1230") as err:
        build(train_size=1231, expand_sounds=True)
    assert "expand_sounds" not in str(err.value)


def test_pairs_impossible_when_a_sound_class_runs_out():
    lab = synthetic_labels(3)
    snd = lab["snd_tr"].copy()
    zeros = np.flatnonzero(snd == 0)
    snd[zeros[6:]] = -1  # class 0: only 6 sounds, 4 of them for validation
    with pytest.raises(RegimeError, match="regime.pairing_ratio"):
        build_regime(RegimeConfig(pairing_ratio=1.0, train_size=200, val_per_class=4), lab["img_tr"], snd,
                     lab["img_te"], lab["snd_te"], 5)


def test_native_pairs_by_key():
    rng = np.random.default_rng(0)
    n_rows = 400
    img_y = rng.integers(0, 4, n_rows)
    image_keys = tuple(f"row{i:04d}" for i in range(n_rows))
    perm = rng.permutation(n_rows)  # sounds listed in another order than images
    sound_keys = tuple(image_keys[i] for i in perm)
    snd_y = img_y[perm]
    te_y = rng.integers(0, 4, 40)
    cfg = RegimeConfig(pairing_ratio=0.25, train_size=200, val_per_class=5, seed=4)
    r = build_regime(cfg, img_y, snd_y, te_y, te_y, 4, image_keys=image_keys, sound_keys=sound_keys)
    assert r.counts()["pairs"] == 50 and r.counts()["unpaired_images"] == r.counts()["unpaired_sounds"] == 150
    assert r.counts()["val_pairs"] == 20
    # pairs and validation pairs share the key row-wise
    assert [image_keys[i] for i in r.pair_image] == [sound_keys[j] for j in r.pair_sound]
    assert [image_keys[i] for i in r.val_image] == [sound_keys[j] for j in r.val_sound]
    # unpaired: the same rows' sounds, with the link withheld (shuffled apart)
    assert sorted(sound_keys[j] for j in r.unpaired_sound) == sorted(image_keys[i] for i in r.unpaired_image)
    aligned = np.mean([image_keys[i] == sound_keys[j] for i, j in zip(r.unpaired_image, r.unpaired_sound)])
    assert aligned < 0.1
    assert not set(r.val_image) & set(r.train_image)
    assert_balanced(img_y[r.train_image], 4)
    # nesting by prefix holds on native data too
    r2 = build_regime(replace(cfg, pairing_ratio=0.5), img_y, snd_y, te_y, te_y, 4,
                      image_keys=image_keys, sound_keys=sound_keys)
    assert np.array_equal(r2.pair_image[:50], r.pair_image)
    # an image row without a sound row of the same key
    with pytest.raises(DataError, match="row0003"):
        build_regime(cfg, img_y, snd_y[1:], te_y, te_y, 4, image_keys=image_keys,
                     sound_keys=tuple(k for k in sound_keys if k != "row0003") + ("extra",))
    with pytest.raises(RegimeError, match="regime.train_size"):
        build_regime(replace(cfg, train_size=381), img_y, snd_y, te_y, te_y, 4,
                     image_keys=image_keys, sound_keys=sound_keys)


# -- class maps ---------------------------------------------------------------------------------------------------


def write_map(path, rows, header=("image_class", "sound_class")):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return str(path)


def test_classmap_identity_default():
    cm = load_classmap(None, DIGITS, DIGITS)
    assert cm.names == DIGITS and cm.num_classes == 10
    assert np.array_equal(cm.image_to_common, np.arange(10)) and np.array_equal(cm.sound_to_common, np.arange(10))
    part = load_classmap(None, ("a", "b", "c"), ("d", "c", "b"))
    assert part.names == ("b", "c")
    assert part.image_to_common.tolist() == [-1, 0, 1] and part.sound_to_common.tolist() == [-1, 1, 0]
    with pytest.raises(DataError, match="data.classmap"):
        load_classmap(None, ("a",), ("b",))


def test_classmap_csv(tmp_path):
    path = write_map(tmp_path / "map.csv", [("3", " dog "), ("5", "cat")])
    cm = load_classmap(path, DIGITS, ("cat", "dog", "bird"))
    assert cm.names == ("3", "5")
    expected = [-1] * 10
    expected[3], expected[5] = 0, 1
    assert cm.image_to_common.tolist() == expected
    assert cm.sound_to_common.tolist() == [1, 0, -1]


def test_classmap_bad_files(tmp_path):
    sounds = ("cat", "dog")
    with pytest.raises(DataError, match="'eleven'") as err:
        load_classmap(write_map(tmp_path / "a.csv", [("3", "dog"), ("eleven", "cat")]), DIGITS, sounds)
    assert "a.csv:3" in str(err.value) and "image class" in str(err.value)
    with pytest.raises(DataError, match="sound class 'cow'"):
        load_classmap(write_map(tmp_path / "b.csv", [("3", "cow")]), DIGITS, sounds)
    with pytest.raises(DataError, match=r"image classes \['3'\] appear more than once"):
        load_classmap(write_map(tmp_path / "c.csv", [("3", "dog"), ("3", "cat")]), DIGITS, sounds)
    with pytest.raises(DataError, match=r"sound classes \['dog'\] appear more than once"):
        load_classmap(write_map(tmp_path / "d.csv", [("3", "dog"), ("4", "dog")]), DIGITS, sounds)
    with pytest.raises(DataError, match="image_class,sound_class"):
        load_classmap(write_map(tmp_path / "e.csv", [("3", "dog")], header=("image", "sound")), DIGITS, sounds)
    with pytest.raises(DataError, match="no rows"):
        load_classmap(write_map(tmp_path / "f.csv", []), DIGITS, sounds)
    with pytest.raises(DataError, match="image_class,sound_class"):
        load_classmap(write_map(tmp_path / "g.csv", [], header=None), DIGITS, sounds)
    with pytest.raises(DataError, match="nope.csv.*does not exist"):
        load_classmap(str(tmp_path / "nope.csv"), DIGITS, sounds)


def test_classmap_permutation_on_real_labels(tmp_path, full_data):
    """image digit d <-> spoken digit (d + 1) % 10 for d < 5: pairs match in the common space, not by name."""
    path = write_map(tmp_path / "shift.csv", [(str(d), str((d + 1) % 10)) for d in range(5)])
    cm = load_classmap(path, full_data.image_train.classes, full_data.sound_train.classes)
    img_y, snd_y = full_data.image_train.y.numpy(), full_data.sound_train.y.numpy()
    r = build_regime(RegimeConfig(pairing_ratio=0.5, train_size=600, val_per_class=10), cm.image_to_common[img_y],
                     cm.sound_to_common[snd_y], cm.image_to_common[full_data.image_test.y.numpy()],
                     cm.sound_to_common[full_data.sound_test.y.numpy()], cm.num_classes)
    assert r.num_classes == 5 and r.counts()["val_pairs"] == 50
    assert np.array_equal((img_y[r.pair_image] + 1) % 10, snd_y[r.pair_sound])
    assert set(img_y[r.train_image]) == {0, 1, 2, 3, 4}
    assert set(snd_y[r.train_sound]) == {1, 2, 3, 4, 5}
    assert r.counts()["test_sounds"] == 150  # 30 test clips per spoken digit
