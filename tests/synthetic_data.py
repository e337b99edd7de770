"""A synthetic TrialData: the trainer and the study engine run on a checkout without the data mirror.

Built through the real types (``FeatureSet``, ``load_classmap``, ``TrialData``), with features shaped as the
default FeatureConfig shapes MNIST and FSDD ones: images (N, 1, 28, 28), log-mel spectrograms (N, 1, n_mels, T).
Each class has its own random image pattern and its own spectrogram pattern; a sample is its class's pattern plus
Gaussian noise, so the classes are learnable but not trivially separated (probes land between chance and 1).
"""

from __future__ import annotations

import numpy as np
import torch

from bma.config import FeatureConfig
from bma.data.features import FeatureSet
from bma.data.regimes import load_classmap
from bma.trainer import TrialData

# Per class, as tests/core/conftest.py cuts the real data: 60 train / 30 test images, 40 train / 10 test sounds.
IMAGE_TRAIN, IMAGE_TEST, SOUND_TRAIN, SOUND_TEST = 60, 30, 40, 10


def sound_frames(feats: FeatureConfig) -> int:
    """T of a clip under ``feats`` (bma.data.features: frames of a clip cropped or padded to clip_seconds)."""
    return int(round(feats.sample_rate * feats.clip_seconds)) // feats.hop_length + 1


def _class_features(rng: np.random.Generator, patterns: np.ndarray, per_class: int, noise: float) -> FeatureSet:
    """``per_class`` samples of every class, classes interleaved (as a real split holds them, not sorted)."""
    num_classes = len(patterns)
    y = np.tile(np.arange(num_classes), per_class)
    x = patterns[y] + noise * rng.standard_normal((len(y), *patterns.shape[1:]))
    classes = tuple(str(c) for c in range(num_classes))
    return FeatureSet(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64)), classes, None)


def synthetic_trial_data(num_classes: int = 10, seed: int = 0, feats: FeatureConfig = FeatureConfig(),
                         image_size: int = 28, noise: float = 1.0) -> TrialData:
    """TrialData of ``num_classes`` classes named "0", "1", ... in both modalities (the identity class map, as
    MNIST + FSDD have), sized per class like the core tests' cut of the real data. Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    image_patterns = rng.standard_normal((num_classes, 1, image_size, image_size))
    sound_patterns = rng.standard_normal((num_classes, 1, feats.n_mels, sound_frames(feats)))
    image_train = _class_features(rng, image_patterns, IMAGE_TRAIN, noise)
    image_test = _class_features(rng, image_patterns, IMAGE_TEST, noise)
    sound_train = _class_features(rng, sound_patterns, SOUND_TRAIN, noise)
    sound_test = _class_features(rng, sound_patterns, SOUND_TEST, noise)
    classmap = load_classmap(None, image_train.classes, sound_train.classes)
    return TrialData(image_train, image_test, sound_train, sound_test, classmap)


def mapped_trial_data(data: TrialData, folder) -> TrialData:
    """``data`` with each of its four FeatureSets written to a feature cache entry in ``folder`` and memory-mapped
    (bma.data.cache_files): what a pool above the in-memory threshold gives a trial."""
    from dataclasses import replace
    from pathlib import Path

    from bma.data.cache_files import EntryWriter, read_entry
    from bma.data.features import FEATURE_VERSION, open_set

    sets = {}
    for name in ("image_train", "image_test", "sound_train", "sound_test"):
        fs = getattr(data, name)
        entry = Path(folder) / f"{name}.json"
        with EntryWriter(entry, tuple(fs.x.shape)) as writer:
            writer.x.copy_(fs.x)
            writer.commit(fs.y.numpy(), fs.classes, fs.keys, {}, key=name, version=FEATURE_VERSION)
        sets[name] = open_set(read_entry(entry), mapped=True)
    return replace(data, **sets)
