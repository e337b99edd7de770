"""Common random numbers (bma.rng): every source of randomness of a trial has its own generator of (seed, purpose),
so two trials share every draw their difference does not require.

- a unimodal trial's sound side is bit-identical across image pool sizes, and its image side across sound pools;
- unimodal trials whose single-sample pools hold the same samples (pairing ratios at one training size) are
  identical, which is what lets the engine train them once (bma.config.effective_config);
- the encoders start from the same weights in every variant of a seed;
- the label-budget probes' labelled draws are class-balanced, nested in K within a draw, fixed per seed, outside the
  pairs by default, and a budget larger than a class holds is refused.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bma import rng
from bma.data.regimes import RegimeError, label_draws
from bma.trainer import fit, make_regime
from bma.trial_data import label_pools
from tests.core.conftest import core_cache, full_data, mirror, small_data, tiny_cfg  # noqa: F401 (fixtures)

# One round of a fixed step budget: the same number of steps whatever the pools (epoch mode would not be).
STEPS = {"optim.steps": 4, "optim.round_steps": 4, "encoder_objective": "contrastive", "pair_negatives": "all",
         "regime.pairs": 20}


def side(metrics: dict, modality: str) -> dict:
    """The metrics of one modality's representation: its probes (any budget, any draw spread)."""
    return {k: v for k, v in metrics.items() if f"{modality}_probe" in k}


def weights(result_state: dict, prefix: str) -> dict:
    return {k: v for k, v in result_state.items() if k.startswith(prefix)}


def fit_keeping_weights(cfg, data):
    kept: dict = {}

    def keep(epoch, metrics, state):
        kept.update({k: v.detach().clone() for k, v in state.model.state_dict().items()})

    return fit(cfg, keep, data=data), kept


def test_purposes_get_independent_reproducible_streams():
    a = rng.numpy_rng(0, "order/image", 1).permutation(1000)
    assert np.array_equal(a, rng.numpy_rng(0, "order/image", 1).permutation(1000))
    assert not np.array_equal(a, rng.numpy_rng(0, "order/sound", 1).permutation(1000))
    assert not np.array_equal(a, rng.numpy_rng(0, "order/image", 2).permutation(1000))
    assert not np.array_equal(a, rng.numpy_rng(1, "order/image", 1).permutation(1000))
    g1, g2 = rng.torch_generator(0, "augment/sound", 3), rng.torch_generator(0, "augment/sound", 3)
    assert torch.equal(torch.rand(5, generator=g1), torch.rand(5, generator=g2))
    assert rng.torch_seed(0, "init/sound_encoder") != rng.torch_seed(0, "init/image_encoder")
    with pytest.raises(KeyError, match="unknown random purpose"):
        rng.numpy_rng(0, "order/imgae")


@pytest.mark.parametrize(("swept", "fixed"), [("unpaired_images", "sound"), ("unpaired_sounds", "image")])
def test_a_unimodal_trial_is_bit_identical_on_the_side_the_swept_pool_cannot_reach(tiny_cfg, small_data, swept,
                                                                                   fixed):
    base = tiny_cfg.with_updates(variant="unimodal", unpaired_images=80, unpaired_sounds=80, **STEPS)
    small, small_w = fit_keeping_weights(base.with_updates(**{swept: 30}), small_data)
    large, large_w = fit_keeping_weights(base.with_updates(**{swept: 200}), small_data)
    encoder = f"{fixed}_encoder."
    assert weights(small_w, encoder) and all(torch.equal(small_w[k], large_w[k]) for k in weights(small_w, encoder))
    assert side(small.final, fixed) and side(small.final, fixed) == side(large.final, fixed)
    other = "image" if fixed == "sound" else "sound"
    assert any(not torch.equal(small_w[k], large_w[k]) for k in weights(small_w, f"{other}_encoder.")), \
        "the swept pool's own side must change (else the test shows nothing)"


def test_bma_sound_batches_do_not_depend_on_the_image_pool(tiny_cfg, small_data):
    """Before common random numbers one generator drew the image permutation first, so a larger image pool re-drew
    every sound batch: here bma's sound batches are the same; the cells differ by what the images teach only."""
    from bma.trial_data import TrialTensors

    seen = []
    for images in (30, 200):
        cfg = tiny_cfg.with_updates(variant="bma", unpaired_images=images, unpaired_sounds=80, **STEPS)
        regime = make_regime(cfg, small_data)
        t = TrialTensors(cfg, small_data, regime, torch.device("cpu"))
        order = rng.numpy_rng(cfg.regime.seed, "order/sound", 1).permutation(len(t.x_snd))
        seen.append(regime.train_sound[t.snd_canonical[order]])
    assert np.array_equal(*seen)


def test_unimodal_trials_with_the_same_single_pools_are_identical(tiny_cfg, small_data):
    """Pairing ratios at one training size: the same single-sample pools, so the same trial bit for bit (run here
    without effective_config, from the raw configurations)."""
    a = tiny_cfg.with_updates(variant="unimodal", **{k: v for k, v in STEPS.items() if k != "regime.pairs"},
                              pairing_ratio=0.1)
    b = a.with_updates(pairing_ratio=0.5)
    ra, rb = fit(a, data=small_data), fit(b, data=small_data)
    assert ra.regime_counts["pairs"] != rb.regime_counts["pairs"]
    strip = lambda m: {k: v for k, v in m.items() if not k.startswith("time/")}  # noqa: E731
    assert strip(ra.final) == strip(rb.final)


def test_encoders_start_from_the_same_weights_in_every_variant(tiny_cfg, small_data):
    from bma.model import BMAMemory

    models = [BMAMemory(tiny_cfg.with_updates(variant=v, memory_slots=m).model, 1, 10, seed=3)
              for v, m in (("unimodal", 16), ("bma", 16), ("bma", 64))]
    for name, value in models[0].state_dict().items():
        if name.startswith(("image_encoder.", "sound_encoder.", "ssl_", "project_")):
            assert all(torch.equal(value, m.state_dict()[name]) for m in models[1:]), name
    assert not torch.equal(models[0].memory_image, BMAMemory(tiny_cfg.model, 1, 10, seed=4).memory_image)


def test_label_draws_are_balanced_nested_and_fixed_per_seed():
    labels = np.repeat(np.arange(4), 50)
    eligible = np.arange(200)[::-1]
    draws = label_draws(eligible, labels, per_class=10, draws=3, seed=0, side="sound")
    assert len(draws) == 3
    for d in draws:
        for k in (1, 5, 10):
            chosen = d.indices[d.rank < k]
            assert np.array_equal(np.bincount(labels[chosen], minlength=4), [k] * 4)  # balanced
            if k > 1:
                assert set(d.indices[d.rank < 1]) <= set(chosen)  # nested in K
    assert len({tuple(d.indices) for d in draws}) == 3  # independent draws
    again = label_draws(eligible, labels, 10, 3, seed=0, side="sound")
    assert all(np.array_equal(d.indices, e.indices) for d, e in zip(draws, again))  # fixed per seed
    assert not np.array_equal(draws[0].indices, label_draws(eligible, labels, 10, 1, seed=1, side="sound")[0].indices)
    # keys belong to samples: removing a few eligible samples changes a draw only where they were picked
    fewer = label_draws(eligible[eligible % 7 != 0], labels, 10, 1, seed=0, side="sound")[0]
    kept = set(draws[0].indices[draws[0].indices % 7 != 0])
    assert kept <= set(fewer.indices)


def test_probes_draw_outside_the_pairs_of_a_memory_variant_and_anywhere_for_unimodal(tiny_cfg, small_data):
    cfg = tiny_cfg.with_updates(variant="bma", **STEPS)
    regime = make_regime(cfg, small_data)
    pools = label_pools(cfg, regime)
    assert not set(pools["img"]) & set(regime.pair_image) and not set(pools["snd"]) & set(regime.pair_sound)
    anywhere = label_pools(cfg.with_updates(**{"eval.label_pool": "anywhere"}), regime)
    assert set(regime.pair_sound) <= set(anywhere["snd"])
    unimodal = label_pools(cfg.with_updates(variant="unimodal"), regime)
    assert np.array_equal(unimodal["snd"], anywhere["snd"])


def test_a_budget_larger_than_a_class_holds_is_refused(tiny_cfg, small_data):
    with pytest.raises(RegimeError, match=r"eval.label_budgets: 1000 labelled samples per class requested, but class"):
        make_regime(tiny_cfg.with_updates(label_budgets=[1, 5, 1000]), small_data)


def test_the_probe_metric_is_the_mean_over_draws_and_its_spread_is_logged(tiny_cfg, small_data):
    one = fit(tiny_cfg.with_updates(**{"eval.label_draws": 1}), data=small_data).final
    four = fit(tiny_cfg.with_updates(**{"eval.label_draws": 4}), data=small_data).final
    assert one["acc_sd/sound_probe_h/k5"] == 0.0
    assert four["acc_sd/sound_probe_h/k5"] >= 0.0 and four["acc_sd/sound_probe_h/k1"] > 0.0
    # the first draw is shared, so the full-label probes (no draws) are identical and the budget ones are not
    assert one["acc/sound_probe_h"] == four["acc/sound_probe_h"]
