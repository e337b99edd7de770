"""Fixtures of the core-library tests (regimes, losses, model, trainer).

Every test runs with ``$BMA_CACHE_DIR`` in one session-wide tmp folder (so MNIST/FSDD features are computed once)
and ``$BMA_OFFLINE=1``. Trainer tests share one TrialData of the real mirror, cut down per class (``small_data``)
so a 1-epoch trial takes well under a second; without the mirror, ``small_data`` is a synthetic TrialData of the
same sizes (tests/synthetic_data.py), so the trainer is tested on any checkout. Torch and BLAS run one thread
(see ``_one_thread``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import MIRROR_SKIP, mirror_available, single_thread  # noqa: F401 (re-exported to the tests)


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="session")
def core_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("core-cache")


@pytest.fixture(autouse=True)
def _isolated(core_cache, monkeypatch):
    monkeypatch.setenv("BMA_CACHE_DIR", str(core_cache))
    monkeypatch.setenv("BMA_OFFLINE", "1")


@pytest.fixture(scope="session")
def mirror():
    if not mirror_available():
        pytest.skip(MIRROR_SKIP)


@pytest.fixture(scope="session")
def full_data(mirror, core_cache):
    """MNIST + FSDD features (default FeatureConfig), official splits, identity class map."""
    from bma.config import TrialConfig
    from bma.data.features import FeatureStore
    from bma.trainer import load_trial_data

    return load_trial_data(TrialConfig(), FeatureStore(str(core_cache)))


def per_class_subset(fs, per_class: int):
    """The first ``per_class`` samples of each class of a FeatureSet (in file order)."""
    from bma.data.features import FeatureSet

    y = fs.y.numpy()
    idx = np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)]))
    keys = None if fs.keys is None else tuple(fs.keys[i] for i in idx)
    return FeatureSet(fs.x[idx], fs.y[idx], fs.classes, keys)


@pytest.fixture(scope="session")
def synthetic_data():
    """Class-conditional random features shaped like MNIST + FSDD ones, sized per class as ``small_data``."""
    from tests.synthetic_data import synthetic_trial_data

    return synthetic_trial_data()


@pytest.fixture(scope="session")
def small_data(request):
    """A per-class cut of the real data: 60 train / 30 test images and 40 train / 10 test sounds per class; the
    synthetic stand-in of the same sizes when the mirror is absent."""
    from bma.trainer import TrialData

    if not mirror_available():
        return request.getfixturevalue("synthetic_data")
    full_data = request.getfixturevalue("full_data")
    return TrialData(
        image_train=per_class_subset(full_data.image_train, 60),
        image_test=per_class_subset(full_data.image_test, 30),
        sound_train=per_class_subset(full_data.sound_train, 40),
        sound_test=per_class_subset(full_data.sound_test, 10),
        classmap=full_data.classmap,
    )


@pytest.fixture(scope="session")
def tiny_cfg():
    """A trial that runs in seconds on CPU: 100 samples per modality, 1 epoch, no information probes."""
    from bma.config import TrialConfig

    return TrialConfig().with_updates(**{
        "regime.train_size": 100,
        "regime.pairing_ratio": 0.2,
        "regime.val_per_class": 5,
        "optim.epochs": 1,
        "optim.batch_size": 50,
        "model.memory_slots": 16,
        "model.encoder_width": 4,
        "model.feature_dim": 32,
        "model.projection_dim": 16,
        "model.top_k": 4,
        "eval.eval_every": 1,
        "eval.info_every": 0,
        "eval.probe_max_iter": 30,
        "eval.label_draws": 2,  # averaging exercised, at a quarter of the default's probe fits
        "device": "cpu",
    })
