"""CIFAR-10 x ESC-50, the research plan's datasets: the shipped class map against the loaders' class lists, the
`esc50` feature preset (whole 5-s clips), what a 1-s crop loses, the model on 32x32 colour images and 64-band
spectrograms, and the four shipped specs (their trials fit the real datasets' sizes; --smoke fits the fixtures)."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bma.config import FEATURE_PRESETS, ConfigError, FeatureConfig, ModelConfig, SourceConfig, TrialConfig
from bma.data.features import FeatureStore
from bma.data.regimes import build_regime, load_classmap
from bma.data.sources import load_images, load_sounds
from study.tools.make_fixtures import CIFAR10_CLASSES, ESC50_CATEGORIES, classmap_targets, write_cifar10, write_esc50

REPO = Path(__file__).resolve().parents[2]
CLASSMAP = REPO / "study" / "classmaps" / "cifar10_esc50.csv"
SPECS = ("cifar_esc50", "cifar_esc50_full", "cifar_esc50_boost", "cifar_esc50_boost_full")
ESC50 = FeatureConfig(**FEATURE_PRESETS["esc50"])


def _rows() -> list[tuple[str, str]]:
    with open(CLASSMAP, newline="") as fh:
        return [(r["image_class"], r["sound_class"]) for r in csv.DictReader(fh)]


# -- the class map -----------------------------------------------------------------------------------------------


def test_classmap_names_classes_the_loaders_have(tmp_path):
    """Every class of the map exists in the class list the loaders read from each official layout (CIFAR-10's
    batches.meta label_names; ESC-50's esc50.csv categories ordered by target), and the map is one-to-one."""
    cifar = write_cifar10(tmp_path / "cifar-10-batches-py", list(range(10)), list(range(10)))
    esc = write_esc50(tmp_path / "ESC-50-master", list(range(50)), per_fold=1, seconds=0.05, rate=8000)
    images = load_images(SourceConfig("cifar10", root=str(cifar.parent)), "train")
    sounds = load_sounds(SourceConfig("esc50", root=str(esc)), "train")
    assert images.classes == CIFAR10_CLASSES and sounds.classes == ESC50_CATEGORIES
    cm = load_classmap(str(CLASSMAP), images.classes, sounds.classes)  # DataError on an unknown class or a repeat
    assert cm.names == CIFAR10_CLASSES  # all ten CIFAR-10 classes, in CIFAR's order
    assert sorted(cm.image_to_common.tolist()) == list(range(10))
    assert (cm.sound_to_common >= 0).sum() == 10  # the other 40 ESC-50 categories are unmapped (never used)
    # the semantic matches where ESC-50 has the class itself
    assert {("airplane", "airplane"), ("cat", "cat"), ("dog", "dog"), ("frog", "frog")} <= set(_rows())


def test_fixture_categories_are_esc50s_targets():
    """The fixtures name clips as ESC-50 does; spot-check target numbers against published file names
    (1-100032-A-0 dog, 1-100038-A-14 chirping_birds, 1-34094-A-5 cat, 1-15689-A-4 frog, 1-103298-A-9 crow)."""
    assert len(ESC50_CATEGORIES) == len(set(ESC50_CATEGORIES)) == 50
    for target, name in ((0, "dog"), (14, "chirping_birds"), (5, "cat"), (4, "frog"), (9, "crow"),
                         (36, "vacuum_cleaner"), (13, "crickets"), (40, "helicopter")):
        assert ESC50_CATEGORIES[target] == name
    assert classmap_targets(CLASSMAP) == [ESC50_CATEGORIES.index(s) for _, s in _rows()]


# -- the esc50 feature preset --------------------------------------------------------------------------------------


@pytest.fixture
def late_events(tmp_path) -> Path:
    """Three classes of 5-s 44.1 kHz 16-bit clips whose only class-identifying event starts at 2.0 s."""
    return write_esc50(tmp_path / "ESC-50-master", [0, 5, 14], per_fold=2, onset=2.0)


def _nearest_centroid_accuracy(store: FeatureStore, src: SourceConfig, feats: FeatureConfig) -> float:
    train, test = store.sounds(src, feats, "train"), store.sounds(src, feats, "test")

    def flat(fs):  # (N, 1, n_mels, T) -> (N, n_mels * T)
        return fs.x.flatten(1).numpy()

    centroids = np.stack([flat(train)[train.y.numpy() == c].mean(0) for c in range(len(train.classes))])
    guess = np.argmin(((flat(test)[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((guess == test.y.numpy()).mean())


def test_esc50_preset_keeps_the_whole_clip_and_a_1s_crop_loses_a_late_event(late_events, tmp_path):
    src = SourceConfig("esc50", root=str(late_events))
    store = FeatureStore(str(tmp_path / "cache"))
    x = store.sounds(src, ESC50, "train").x
    assert x.shape == (24, 1, 64, 22050 * 5 // 512 + 1) == (24, 1, 64, 216)
    assert _nearest_centroid_accuracy(store, src, ESC50) == 1.0
    # FSDD's 1-s window (and the esc50 preset cut to 1 s) sees only the noise floor: chance, give or take
    assert _nearest_centroid_accuracy(store, src, replace(ESC50, clip_seconds=1.0)) < 0.75
    assert _nearest_centroid_accuracy(store, src, FeatureConfig()) < 0.75


def test_crop_loss_tool_measures_the_energy_after_the_first_second(late_events, capsys, monkeypatch, tmp_path):
    from study.tools import crop_loss

    monkeypatch.setenv("BMA_CACHE_DIR", str(tmp_path / "cache"))
    assert crop_loss.main(["--root", str(late_events)]) == 0
    out = capsys.readouterr().out
    assert "clips with > 50 % of it there: 1.000, with > 99 %: 1.000" in out
    assert "whole clip (5 s) 1.000" in out
    paths = load_sounds(SourceConfig("esc50", root=str(late_events)), "test").paths
    assert crop_loss.energy_after(paths, 1.0).min() > 0.99 and crop_loss.energy_after(paths, 5.0).max() == 0.0


def test_preset_is_selected_by_name_and_overridden_field_by_field(tmp_path):
    from bma.cli import config_from_args
    from study.spec import SpecError, load_spec

    assert FEATURE_PRESETS["fsdd"] == {k: getattr(FeatureConfig(), k) for k in FEATURE_PRESETS["fsdd"]}
    cfg = config_from_args(None, ["features=esc50", "features.n_mels=128"])
    assert (cfg.features.sample_rate, cfg.features.clip_seconds, cfg.features.n_mels) == (22050, 5.0, 128)
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\ngrid: {seed: [0]}\ntrial: {features: esc50, features.hop_length: 256}\n")
    flat = load_spec(spec).trial_flats()[0]
    assert (flat["features.sample_rate"], flat["features.hop_length"]) == (22050, 256)
    spec.write_text("name: s\ngrid: {seed: [0]}\ntrial: {features: esc5}\n")
    with pytest.raises(SpecError, match=r"trial\.features: unknown preset 'esc5'"):
        load_spec(spec)
    with pytest.raises(ConfigError, match="unknown preset"):
        config_from_args(None, ["features=nope"])


# -- the model on CIFAR-10 and ESC-50 shapes -------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["cnn", "resnet18"])
def test_model_takes_32px_colour_images_and_esc50_spectrograms(encoder):
    from bma.model import BMAMemory

    torch.manual_seed(0)
    model = BMAMemory(ModelConfig(image_encoder=encoder, memory_slots=8), image_channels=3, num_classes=10)
    x_v, x_s = torch.randn(4, 3, 32, 32), torch.randn(4, 1, 64, 216)
    out = model(x_v, x_s)
    assert out["h_v"].shape == (4, 256) and out["h_s"].shape == (4, 256) and out["w_v"].shape == (4, 8)
    step = model.forward_step(x_v, x_s, n_pairs=2, reads=frozenset({"cycles"}))
    assert step["s_prime"].shape == (2, 128) and torch.isfinite(step["pairs"]["h_v"]).all()


# -- the shipped specs -------------------------------------------------------------------------------------------


def _load(name: str, smoke: bool = False):
    import os

    from study.spec import load_spec

    cwd = os.getcwd()
    os.chdir(REPO)  # the specs name the class map relative to the repository root, where they are run from
    try:
        return load_spec(REPO / "study" / "specs" / f"{name}.yaml", smoke=smoke)
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize(("name", "n_trials"), [("cifar_esc50", 60), ("cifar_esc50_full", 180),
                                                ("cifar_esc50_boost", 72), ("cifar_esc50_boost_full", 270)])
def test_specs_parse_select_the_esc50_preset_and_start_with_their_command(name, n_trials):
    spec = _load(name)
    assert spec.name == name and spec.n_trials == n_trials
    first = (REPO / "study" / "specs" / f"{name}.yaml").read_text().splitlines()[0]
    assert first.startswith("# ") and f"study/specs/{name}.yaml" in first
    for flat in spec.trial_flats():
        assert {k: flat[f"features.{k}"] for k in FEATURE_PRESETS["esc50"]} == FEATURE_PRESETS["esc50"]
        assert flat["data.classmap"] == "study/classmaps/cifar10_esc50.csv"
        assert (flat["data.image.source"], flat["data.sound.source"]) == ("cifar10", "esc50")


# The real datasets' sizes: CIFAR-10 5,000 train / 1,000 test images per class; ESC-50 40 clips per class, 8 per fold.
def _labels(per_class: int, classes: int = 10) -> np.ndarray:
    return np.repeat(np.arange(classes), per_class)


@pytest.mark.parametrize("name", SPECS)
def test_every_trial_fits_the_real_datasets(name):
    """Every regime of the spec can be cut from CIFAR-10 and ESC-50 at their published sizes (labels only)."""
    from bma.trial_data import check_label_budgets

    for flat in _load(name).trial_flats():
        cfg = TrialConfig.from_flat(flat)
        regime = build_regime(cfg.regime, _labels(5000), _labels(32), _labels(1000), _labels(8), 10)
        # and the label-budget probes find their labelled samples (outside the pairs, unless eval.label_pool says)
        check_label_budgets(cfg, regime, {"img": _labels(5000), "snd": _labels(32)},
                            {"img": "cifar10", "snd": "esc50"})
        counts = regime.counts()
        assert counts["test_pairs"] == 80 and counts["val_pairs"] == 40
        if cfg.regime.pairs is not None:
            assert counts["pairs"] == cfg.regime.pairs and counts["unpaired_sounds"] == cfg.regime.unpaired_sounds


@pytest.mark.parametrize("name", SPECS)
def test_smoke_fits_the_generated_fixtures(name):
    """--smoke's regimes fit the stand-ins study/tools/make_fixtures.py writes by default (300 images per class,
    8 clips per class and fold), and its trials are short."""
    for flat in _load(name, smoke=True).trial_flats():
        cfg = TrialConfig.from_flat(flat)
        assert cfg.optim.steps == 6
        build_regime(cfg.regime, _labels(300), _labels(32), _labels(40), _labels(8), 10)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_cifar_esc50_smoke_study_runs_on_generated_fixtures(tmp_path):
    """`python study/run.py study/specs/cifar_esc50.yaml --smoke` end to end on the stand-ins make_fixtures.py
    writes (tmp_path/mirror): the study finishes (exit 0), every trial FINISHED in MLflow."""
    import os
    import subprocess
    import sys

    mirror = tmp_path / "mirror"
    made = subprocess.run([sys.executable, str(REPO / "study" / "tools" / "make_fixtures.py"), str(mirror)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    env = {**os.environ, "BMA_DATA_MIRROR": str(mirror), "BMA_CACHE_DIR": str(tmp_path / "cache"),
           "BMA_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    # from the checkout, as the spec's launch line says (its class map path is relative to it); results in tmp_path
    proc = subprocess.run([sys.executable, "study/run.py", "study/specs/cifar_esc50.yaml", "--smoke",
                           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                           "--storage", str(tmp_path / "ray_results")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=840)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cifar_esc50-smoke")
    runs = client.search_runs([exp.experiment_id], "tags.`bma.role` = 'trial'")
    assert runs and all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    print(f"\n{len(runs)} trials of cifar_esc50 --smoke finished on the generated fixtures")
