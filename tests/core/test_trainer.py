"""The trainer on a per-class cut of the real data: determinism, exact resume, every variant and switch runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bma.data.regimes import RegimeError, load_classmap
from bma.trainer import CHECKPOINT_FILE, TrialData, fit, make_regime, tau_m_at
from bma.trial_data import TrialTensors

pytestmark = pytest.mark.slow

PROBE_METRICS = {"acc/image_probe_f", "acc/image_probe_h", "acc/sound_probe_f", "acc/sound_probe_h"}
RETRIEVAL = {f"retrieval/{d}_r{k}" for d in ("i2s", "s2i") for k in (1, 5)}
MEM_RETRIEVAL = {f"retrieval/{d}_mem_r{k}" for d in ("i2s", "s2i") for k in (1, 5)}
ASSOC = {"assoc/i2s_acc", "assoc/s2i_acc"}
PAIR = {"loss/pair", "loss/pair_contrastive", "loss/pair_address", "loss/pair_recall"}
BUDGET_METRICS = {f"{name}/k{k}" for name in PROBE_METRICS for k in (1, 5, 20)}  # eval.label_budgets default
COMMON = {"loss/encoder", "loss/total", "loss/val_pair", "loss/val_pair_contrastive", "time/epoch_s", "time/eval_s",
          "train/tau_m", "train/steps", "train/lr", "epoch"} | PROBE_METRICS | BUDGET_METRICS | RETRIEVAL


def without_time(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("time/")}


def assert_sane(metrics: dict) -> None:
    for k, v in metrics.items():
        assert math.isfinite(v), (k, v)
        if k.startswith(("acc/", "retrieval/", "assoc/")):
            assert 0.0 <= v <= 1.0, (k, v)
        if k.startswith("loss/"):
            assert v >= 0.0, (k, v)


def test_same_config_and_seed_give_identical_metrics(tiny_cfg, small_data):
    a = fit(tiny_cfg, data=small_data)
    b = fit(tiny_cfg, data=small_data)
    assert len(a.history) == 1 and not a.stopped_early
    assert without_time(a.final) == without_time(b.final)
    c = fit(tiny_cfg.with_updates(seed=1), data=small_data)
    assert without_time(c.final)["loss/total"] != without_time(a.final)["loss/total"]


@pytest.mark.parametrize("updates", [{}, {"encoder_objective": "contrastive", "regime.expand_sounds": True,
                                          "regime.val_per_class": 32}], ids=["default", "augmented"])
def test_resumed_trial_equals_uninterrupted(tiny_cfg, small_data, tmp_path, updates):
    # "augmented": the augmentation generators (contrastive views, expanded sounds: 8 of 40 clips per class left
    # after validation, 100 needed) must replay exactly too
    cfg = tiny_cfg.with_updates(epochs=2, **updates)
    if updates:
        with pytest.raises(RegimeError):  # the sound pool is really too small: expansion is in use
            make_regime(cfg.with_updates(**{"regime.expand_sounds": False}), small_data)
    full = fit(cfg, data=small_data)
    assert [h["epoch"] for h in full.history] == [1, 2]

    def stop_after_first(epoch, metrics, state):
        state.save(tmp_path)
        return False

    part = fit(cfg, stop_after_first, data=small_data)
    assert part.stopped_early and len(part.history) == 1
    assert (tmp_path / CHECKPOINT_FILE).is_file() and not list(tmp_path.glob("*.tmp"))
    # determinism across two fits, up to the interruption
    assert without_time(part.history[0]) == without_time(full.history[0])

    seen = []
    resumed = fit(cfg, lambda e, m, s: seen.append(e), data=small_data, resume_from=tmp_path)
    assert seen == [2] and not resumed.stopped_early
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert without_time(resumed.history[0]) == without_time(full.history[0])
    # exact equality, not just allclose
    assert without_time(resumed.final) == without_time(full.final)


def test_checkpoint_of_another_config_is_refused(tiny_cfg, small_data, tmp_path):
    fit(tiny_cfg, lambda e, m, s: s.save(tmp_path), data=small_data)
    with pytest.raises(ValueError, match="another trial configuration"):
        fit(tiny_cfg.with_updates(lr=1e-2), data=small_data, resume_from=tmp_path)
    with pytest.raises(FileNotFoundError, match=CHECKPOINT_FILE):
        fit(tiny_cfg, data=small_data, resume_from=tmp_path / "empty")
    # resuming a finished trial trains nothing more and returns its history
    done = fit(tiny_cfg, lambda e, m, s: pytest.fail("no epoch left to run"), data=small_data, resume_from=tmp_path)
    assert [h["epoch"] for h in done.history] == [1]


@pytest.mark.parametrize("variant", ["unimodal", "paired_only", "bma"])
def test_every_variant_reports_its_metrics(tiny_cfg, small_data, variant):
    result = fit(tiny_cfg.with_updates(variant=variant), data=small_data)
    names = set(result.final)
    expected = set(COMMON)
    if variant != "unimodal":
        expected |= PAIR | ASSOC | MEM_RETRIEVAL
    if variant == "bma":
        expected.add("loss/unpair")
    assert names == expected
    assert_sane(result.final)
    assert result.regime_counts["pairs"] == 20 and result.regime_counts["unpaired_images"] == 80
    assert result.regime_counts["val_pairs"] == 50 and result.regime_counts["test_images"] == 300
    if variant == "unimodal":  # h = f without a memory
        assert result.final["acc/image_probe_h"] == result.final["acc/image_probe_f"]


@pytest.mark.parametrize("updates,extra", [
    ({"addressing": "sparsemax"}, None),
    ({"addressing": "entmax15", "loss.w_slot_decorrelation": 0.5}, "loss/slot_decorrelation"),
    ({"addressing": "topk"}, None),
    ({"encoder_objective": "contrastive"}, None),
    ({"encoder_objective": "none", "model.tau_m": 0.5}, None),
])
def test_switches_run_one_epoch(tiny_cfg, small_data, updates, extra):
    result = fit(tiny_cfg.with_updates(**updates), data=small_data)
    assert_sane(result.final)
    assert {"loss/unpair", "assoc/i2s_acc"} <= set(result.final)
    assert ("loss/slot_decorrelation" in result.final) == (extra == "loss/slot_decorrelation")
    if updates.get("encoder_objective") == "none":
        assert result.final["loss/encoder"] == 0.0
    if updates.get("encoder_objective") == "contrastive":  # NT-Xent of 50 samples: near log(2B - 1) at the start
        assert 1.0 < result.final["loss/encoder"] < math.log(99) + 0.5


def test_tau_m_schedule(tiny_cfg, small_data):
    cfg = tiny_cfg.with_updates(**{"model.tau_m_final": 0.01, "epochs": 3, "eval.eval_every": 3})
    assert tau_m_at(cfg, 1) == pytest.approx(0.1)
    assert tau_m_at(cfg, 2) == pytest.approx(math.sqrt(0.1 * 0.01))
    assert tau_m_at(cfg, 3) == pytest.approx(0.01)
    assert tau_m_at(tiny_cfg, 1) == 0.1  # no schedule
    result = fit(cfg, data=small_data)
    assert [h["train/tau_m"] for h in result.history] == pytest.approx([0.1, math.sqrt(0.001), 0.01])
    assert "acc/image_probe_f" not in result.history[0] and "acc/image_probe_f" in result.history[2]
    assert_sane(result.final)


def test_image_noise_applies_to_train_and_test(tiny_cfg, small_data):
    noisy_cfg = tiny_cfg.with_updates(image_noise_std=0.5)
    regime = make_regime(noisy_cfg, small_data)
    clean = TrialTensors(tiny_cfg, small_data, regime, torch.device("cpu"))
    noisy = TrialTensors(noisy_cfg, small_data, regime, torch.device("cpu"))
    again = TrialTensors(noisy_cfg, small_data, regime, torch.device("cpu"))
    for got, ref in ((noisy.x_img, clean.x_img), (noisy.eval_split["x_img_test"], clean.eval_split["x_img_test"]),
                     (noisy.val[0], clean.val[0])):
        assert (got - ref).std().item() == pytest.approx(0.5, rel=0.05)
    assert torch.equal(noisy.x_img, again.x_img)  # the same noise on every run of a seed
    assert torch.equal(noisy.x_snd, clean.x_snd)  # sounds untouched
    result = fit(noisy_cfg, data=small_data)
    assert_sane(result.final)
    assert result.final["loss/total"] != fit(tiny_cfg, data=small_data).final["loss/total"]


def test_image_noise_of_the_test_split_is_the_same_in_every_regime(tiny_cfg, small_data):
    cfg = tiny_cfg.with_updates(image_noise_std=0.5)
    tensors = {}
    for n in (100, 200):
        c = cfg.with_updates(train_size=n)
        tensors[n] = TrialTensors(c, small_data, make_regime(c, small_data), torch.device("cpu"))
    assert torch.equal(tensors[100].eval_split["x_img_test"], tensors[200].eval_split["x_img_test"])


def test_expand_sounds_runs_past_the_sound_pool(tiny_cfg, small_data):
    # small_data holds 40 train clips per class; 5 per class go to validation -> 350 usable
    cfg = tiny_cfg.with_updates(train_size=400, pairing_ratio=0.1, batch_size=64)
    with pytest.raises(RegimeError, match=r"regime.train_size: 400 sounds.*350"):
        fit(cfg, data=small_data)
    result = fit(cfg.with_updates(**{"regime.expand_sounds": True}), data=small_data)
    assert result.regime_counts["unpaired_sounds"] == 360 and result.regime_counts["pairs"] == 40
    assert_sane(result.final)


def test_class_map_subset_trains(tiny_cfg, small_data, tmp_path):
    """Five mapped classes, image digit d <-> spoken digit d + 5: the trial sees 5 classes only."""
    path = tmp_path / "map.csv"
    path.write_text("image_class,sound_class\n" + "".join(f"{d},{d + 5}\n" for d in range(5)))
    cm = load_classmap(str(path), small_data.image_train.classes, small_data.sound_train.classes)
    data = TrialData(small_data.image_train, small_data.image_test, small_data.sound_train, small_data.sound_test, cm)
    cfg = tiny_cfg.with_updates(**{"data.classmap": str(path)})
    regime = make_regime(cfg, data)
    assert regime.num_classes == 5
    img_y, snd_y = small_data.image_train.y.numpy(), small_data.sound_train.y.numpy()
    assert np.array_equal(img_y[regime.pair_image] + 5, snd_y[regime.pair_sound])
    result = fit(cfg, data=data)
    assert result.regime_counts["test_images"] == 150 and result.regime_counts["test_sounds"] == 50
    assert result.regime_counts["val_pairs"] == 25
    assert_sane(result.final)


def _probes_importable() -> bool:
    try:
        import bma.info.probes  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _probes_importable(), reason="needs bma.info.probes")
def test_information_probes_reported(tiny_cfg, small_data):
    cfg = tiny_cfg.with_updates(**{"eval.info_every": 1, "eval.info_samples": 60, "eval.info_estimators": ["gaussian"]})
    result = fit(cfg, data=small_data)
    info = {k: v for k, v in result.final.items() if k.startswith("info/")}
    assert info and "time/info_s" in result.final
    assert any(v == v for v in info.values())  # not all NaN
    # the unimodal variant has no memory quantities, and no probe fails for it
    uni = fit(cfg.with_updates(variant="unimodal"), data=small_data)
    assert any(k.startswith("info/") for k in uni.final)
