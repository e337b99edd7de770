"""The paper's experiment: separate pools, a fixed step budget, label-free training, label budgets, cross-domain."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from bma.config import ConfigError, RegimeConfig, TrialConfig
from bma.data.errors import DataError
from bma.data.features import FeatureSet
from bma.data.regimes import RegimeError, budget_subset, build_regime
from bma.trainer import TrialData, fit, make_regime
from tests.core.test_regimes import real  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

LABEL_FREE = {"encoder_objective": "contrastive", "pair_negatives": "all"}


def regime(labels: dict, **kw):
    return build_regime(RegimeConfig(**kw), labels["img_tr"], labels["snd_tr"], labels["img_te"], labels["snd_te"],
                        labels["K"], image_source="mnist", sound_source="fsdd")


def losses_of(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k.startswith("loss/") and k != "loss/val_pair" and "val" not in k}
            for h in history]


# -- three pools on the real mirror --------------------------------------------------------------------------------


def test_three_pools_counts_on_real_mirror(real):
    r = regime(real, pairs=50, unpaired_images=20_000, unpaired_sounds=700)
    c = r.counts()
    assert (c["pairs"], c["unpaired_images"], c["unpaired_sounds"]) == (50, 20_000, 700)
    # the pairs are class-matched and class-balanced (5 per class), the pools disjoint from the pairs
    assert (real["img_tr"][r.pair_image] == real["snd_tr"][r.pair_sound]).all()
    assert np.bincount(real["img_tr"][r.pair_image], minlength=10).tolist() == [5] * 10
    assert not set(r.pair_image) & set(r.unpaired_image) and not set(r.pair_sound) & set(r.unpaired_sound)
    assert not set(r.train_image) & set(r.val_image) and not set(r.train_sound) & set(r.val_sound)


def test_null_pools_keep_the_symmetric_meaning(real):
    old = regime(real, pairing_ratio=0.2, train_size=1000)
    explicit = regime(real, pairing_ratio=0.2, train_size=1000, pairs=200, unpaired_images=800, unpaired_sounds=800)
    for name in ("pair_image", "pair_sound", "unpaired_image", "unpaired_sound", "test_pair_image"):
        assert np.array_equal(getattr(old, name), getattr(explicit, name)), name


def test_pools_nest_on_every_axis(real):
    """A smaller pool is a prefix of a larger one; the pairs are shared across pool sizes."""
    small = regime(real, pairs=50, unpaired_images=1000, unpaired_sounds=200)
    large = regime(real, pairs=50, unpaired_images=30_000, unpaired_sounds=1500)
    assert np.array_equal(small.pair_image, large.pair_image) and np.array_equal(small.pair_sound, large.pair_sound)
    assert np.array_equal(large.unpaired_image[:1000], small.unpaired_image)
    assert np.array_equal(large.unpaired_sound[:200], small.unpaired_sound)
    none = regime(real, pairs=50, unpaired_images=0, unpaired_sounds=0)
    assert len(none.unpaired_image) == 0 and np.array_equal(none.pair_image, small.pair_image)
    more_pairs = regime(real, pairs=200, unpaired_images=1000, unpaired_sounds=200)
    assert np.array_equal(more_pairs.pair_image[:50], small.pair_image)
    # the validation and test pairs do not depend on the pools
    assert np.array_equal(small.val_image, large.val_image) and np.array_equal(small.test_pair_sound, none.test_pair_sound)


def test_pool_limits_name_the_setting_and_the_number_that_exists(real):
    # MNIST: 60,000 train images, 200 carved for validation -> 59,800; FSDD: 2,700 clips - 200 -> 2,500
    regime(real, pairs=50, unpaired_images=59_750)
    with pytest.raises(RegimeError, match=r"regime\.unpaired_images: 59801 images .* has 59800"):
        regime(real, pairs=50, unpaired_images=59_751)
    with pytest.raises(RegimeError, match=r"regime\.unpaired_sounds: 2501 sounds .* has 2500.*expand_sounds"):
        regime(real, pairs=200, unpaired_sounds=2301)
    with pytest.raises(RegimeError, match=r"regime\.val_per_class: 300 per class .* smallest class .* 270"):
        regime(real, val_per_class=300)
    with pytest.raises(ConfigError, match=r"regime\.unpaired_images: expected null or an integer >= 0"):
        TrialConfig.from_flat({"unpaired_images": -1})
    with pytest.raises(ConfigError, match=r"regime\.pairs: expected null or an integer >= 1"):
        TrialConfig.from_flat({"pairs": 0})


def test_label_budget_subsets_are_nested_class_balanced_and_fixed_per_seed(real):
    r = regime(real, pairs=50, unpaired_images=100, unpaired_sounds=100)
    bigger = regime(real, pairs=200, unpaired_images=40_000, unpaired_sounds=2000)
    y = real["img_tr"]
    subsets = {k: budget_subset(r.label_order_image, y, k) for k in (1, 5, 20)}
    for k, idx in subsets.items():
        assert np.bincount(y[idx], minlength=10).tolist() == [k] * 10
        assert not set(idx) & set(r.val_image)  # never a validation sample
        # the same labelled set whatever the regime's pools
        assert np.array_equal(idx, budget_subset(bigger.label_order_image, y, k))
    assert set(subsets[1]) <= set(subsets[5]) <= set(subsets[20])
    other_seed = regime(real, pairs=50, unpaired_images=100, unpaired_sounds=100, seed=1)
    assert not np.array_equal(budget_subset(other_seed.label_order_image, y, 5), subsets[5])


# -- the trainer ---------------------------------------------------------------------------------------------------


def test_a_step_budget_gives_equal_steps_for_different_pool_sizes(tiny_cfg, small_data):
    base = tiny_cfg.with_updates(pairs=20, unpaired_sounds=100, steps=7, round_steps=3, variant="bma",
                                 **{"eval.eval_every": 10})
    seen = {}
    for pool in (0, 400):
        rounds = []
        result = fit(base.with_updates(unpaired_images=pool), lambda e, m, s: rounds.append(m["train/steps"]),
                     data=small_data)
        seen[pool] = rounds
        assert result.regime_counts["unpaired_images"] == pool
        assert "acc/sound_probe_h/k5" in result.final  # the last round is always evaluated
    assert seen[0] == seen[400] == [3, 6, 7]


def test_step_budget_resume_is_exact(tiny_cfg, small_data, tmp_path):
    cfg = tiny_cfg.with_updates(pairs=20, unpaired_images=300, unpaired_sounds=60, steps=4, round_steps=2, **LABEL_FREE)
    full = fit(cfg, data=small_data)
    fit(cfg, lambda e, m, s: (s.save(tmp_path), False)[1], data=small_data)
    resumed = fit(cfg, data=small_data, resume_from=tmp_path)
    drop = lambda h: {k: v for k, v in h.items() if not k.startswith("time/")}  # noqa: E731
    assert [drop(h) for h in resumed.history] == [drop(h) for h in full.history]


def _permuted_labels(data: TrialData, seed: int) -> TrialData:
    rng = np.random.default_rng(seed)
    permute = lambda fs: FeatureSet(fs.x, fs.y[torch.as_tensor(rng.permutation(len(fs.y)))], fs.classes, fs.keys)  # noqa: E731
    return replace(data, image_train=permute(data.image_train), sound_train=permute(data.sound_train))


@pytest.mark.parametrize("variant", ["unimodal", "bma"])
def test_label_free_training_reads_no_label(tiny_cfg, small_data, variant):
    """Permuting every training label changes nothing in a label-free trial's training trajectory (the regime, whose
    class-matched pairs are the setting's weak supervision, is fixed first); a supervised trial's does change."""
    cfg = tiny_cfg.with_updates(variant=variant, epochs=2, **LABEL_FREE)
    assert not cfg.reads_labels
    fixed = make_regime(cfg, small_data)
    shuffled = _permuted_labels(small_data, seed=3)
    a = fit(cfg, data=small_data, regime=fixed)
    b = fit(cfg, data=shuffled, regime=fixed)
    assert losses_of(a.history) == losses_of(b.history)
    assert a.final["loss/encoder"] > 0
    supervised = cfg.with_updates(encoder_objective="supervised")
    assert supervised.reads_labels
    c = fit(supervised, data=small_data, regime=fixed)
    d = fit(supervised, data=shuffled, regime=fixed)
    assert losses_of(c.history) != losses_of(d.history)


def test_pair_negative_mask_counts_as_reading_labels():
    assert TrialConfig.from_flat({"encoder_objective": "contrastive", "variant": "bma"}).reads_labels
    assert not TrialConfig.from_flat({"encoder_objective": "contrastive", "variant": "unimodal"}).reads_labels


def test_budget_probes_are_logged_per_budget(tiny_cfg, small_data):
    cfg = tiny_cfg.with_updates(**{"eval.label_budgets": [2, 7]}, **LABEL_FREE)
    final = fit(cfg, data=small_data).final
    for k in (2, 7):
        for probe in ("image_probe_f", "image_probe_h", "sound_probe_f", "sound_probe_h"):
            assert 0.0 <= final[f"acc/{probe}/k{k}"] <= 1.0
    assert "acc/sound_probe_h/k5" not in final
    with pytest.raises(ConfigError, match="eval.label_budgets"):
        TrialConfig.from_flat({"label_budgets": [5, 5]})


# -- cross-domain ----------------------------------------------------------------------------------------------------


def _with_speakers(full: TrialData, per_class: int) -> TrialData:
    """A per-class cut of the real FSDD split that keeps each clip's speaker (all six speakers in every class)."""
    def cut(fs: FeatureSet, speakers: np.ndarray, n: int):
        y = fs.y.numpy()
        idx = np.sort(np.concatenate([np.flatnonzero((y == c) & (speakers == s))[:n]
                                      for c in np.unique(y) for s in np.unique(speakers)]))
        return FeatureSet(fs.x[idx], fs.y[idx], fs.classes, fs.keys), speakers[idx]

    img = lambda fs, n: FeatureSet(*(t[np.concatenate([np.flatnonzero(fs.y.numpy() == c)[:n] for c in range(10)])]  # noqa: E731
                                     for t in (fs.x, fs.y)), fs.classes, fs.keys)
    snd_tr, spk_tr = cut(full.sound_train, full.sound_train_speakers, per_class)
    snd_te, spk_te = cut(full.sound_test, full.sound_test_speakers, 2)
    domains = {name: cut(fs, full.sound_test_speakers, 2)[0] for name, fs in full.sound_test_domains.items()}
    return TrialData(img(full.image_train, 60), img(full.image_test, 20), snd_tr, snd_te, full.classmap,
                     spk_tr, spk_te, domains)


@pytest.fixture(scope="module")
def domain_data(mirror, core_cache):
    from bma.data.features import FeatureStore
    from bma.trainer import load_trial_data

    cfg = TrialConfig.from_flat({"test_sound_snr_db": 0.0})
    return _with_speakers(load_trial_data(cfg, FeatureStore(str(core_cache))), per_class=8)


def test_cross_domain_smoke_trial(tiny_cfg, domain_data):
    cfg = tiny_cfg.with_updates(heldout_speaker="theo", test_sound_snr_db=0.0, pairs=20, unpaired_images=100,
                                unpaired_sounds=100, variant="bma", **{"regime.val_per_class": 2}, **LABEL_FREE)
    r = make_regime(cfg, domain_data)
    spk_tr = domain_data.sound_train_speakers
    used = np.concatenate([r.train_sound, r.val_sound, r.label_order_sound])
    assert "theo" in set(spk_tr) and not (spk_tr[used] == "theo").any()  # the held-out speaker never trains
    assert not (domain_data.sound_test_speakers[r.test_sound] == "theo").any()
    final = fit(cfg, data=domain_data, regime=r).final
    for domain in ("speaker_theo", "snr0db"):
        for name in ("acc/sound_probe_h", "acc/sound_probe_f/k5", "assoc/s2i_acc"):
            assert 0.0 <= final[f"xdomain/{domain}/{name}"] <= 1.0
    # noisy test clips at 0 dB are harder than the clean ones for the same probe
    assert final["xdomain/snr0db/acc/sound_probe_f"] <= final["acc/sound_probe_f"] + 0.05


def test_heldout_speaker_is_checked(domain_data, tiny_cfg):
    with pytest.raises(DataError, match=r"regime\.heldout_speaker: 'nobody' is not an FSDD speaker .*theo"):
        make_regime(tiny_cfg.with_updates(heldout_speaker="nobody", **{"regime.val_per_class": 2}), domain_data)
    with pytest.raises(ConfigError, match=r"regime\.heldout_speaker: expected an FSDD speaker name"):
        TrialConfig.from_flat({"heldout_speaker": "theo", "data.sound.source": "esc50"})


@pytest.fixture(scope="module")
def other_dataset_pair(mirror, tmp_path_factory):
    """Another dataset pair in the published folder layouts: MNIST test digits as an ImageFolder and FSDD clips of
    one speaker as a sound folder (root/{train,test}/<class>/), classes named like the training classes."""
    from PIL import Image

    from bma.config import SourceConfig
    from bma.data.sources import load_images, locate_sounds

    root = tmp_path_factory.mktemp("other-pair")
    digits = load_images(SourceConfig("mnist"), "test")
    clips = locate_sounds(SourceConfig("fsdd"), "test", None).load()
    for split, (lo, hi) in (("train", (0, 6)), ("test", (6, 12))):
        for c in range(10):
            folder = root / "images" / split / str(c)
            folder.mkdir(parents=True)
            for i in np.flatnonzero(digits.labels == c)[lo:hi]:
                Image.fromarray(digits.images[i, :, :, 0], mode="L").save(folder / f"{i}.png")
            folder = root / "sounds" / split / str(c)
            folder.mkdir(parents=True)
            for i in np.flatnonzero(clips.labels == c)[lo // 2:hi // 2]:
                (folder / clips.paths[i].name).symlink_to(clips.paths[i])
    return root


def test_cross_domain_another_dataset_pair(tiny_cfg, small_data, other_dataset_pair, core_cache):
    from bma.data.features import FeatureStore
    from bma.trainer import load_trial_data

    cfg = tiny_cfg.with_updates(**{"eval.xdomain_image_source": "imagefolder",
                                   "eval.xdomain_image_root": str(other_dataset_pair / "images"),
                                   "eval.xdomain_sound_source": "soundfolder",
                                   "eval.xdomain_sound_root": str(other_dataset_pair / "sounds")}, **LABEL_FREE)
    loaded = load_trial_data(cfg, FeatureStore(str(core_cache)))
    assert set(loaded.dataset_domains) == {"image_imagefolder", "sound_soundfolder"}
    fs, y = loaded.dataset_domains["image_imagefolder"]
    assert len(fs) == 60 and sorted(set(y.tolist())) == list(range(10))
    data = replace(small_data, dataset_domains=loaded.dataset_domains)
    final = fit(cfg.with_updates(variant="bma"), data=data).final
    for name in ("xdomain/image_imagefolder/acc/image_probe_h", "xdomain/image_imagefolder/acc/image_probe_f/k5",
                 "xdomain/image_imagefolder/assoc/i2s_acc", "xdomain/sound_soundfolder/acc/sound_probe_f/k1",
                 "xdomain/sound_soundfolder/assoc/s2i_acc"):
        assert 0.0 <= final[name] <= 1.0, name
    with pytest.raises(ConfigError, match=r"eval\.xdomain_sound_root: set, but eval\.xdomain_sound_source is null"):
        TrialConfig.from_flat({"eval.xdomain_sound_root": "/x"})
