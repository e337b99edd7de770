"""Cross-domain evaluation data: test domains other than the one a trial trains on.

- ``speaker_<name>``: FSDD speakers are held out by ``regime.heldout_speaker``: that speaker's clips (train and test
  splits) leave training and form a test domain of their own (train on five speakers, test on the sixth).
- ``image_<source>`` / ``sound_<source>``: another dataset's test split (``eval.xdomain_*_source`` and ``_root``),
  its classes matched by name to the training data's classes (e.g. an ImageFolder of digits ``0``..``9``),
  standardised with its own train split's statistics (the feature cache's rule for every source).
- ``snr<X>db``: the official test clips with white noise at ``eval.test_sound_snr_db``, standardised with the
  *clean* train split's statistics (what a model trained on clean audio meets at test time).

Speakers are read from FSDD's published file names ``{digit}_{speaker}_{index}.wav``; the feature cache keeps no
per-clip metadata, and the names are cheap to list again.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bma.config import FeatureConfig, SourceConfig
from bma.data.errors import DataError
from bma.data.features import FeatureSet, FeatureStore
from bma.data.sources import locate_sounds


def fsdd_speakers(src: SourceConfig, split: str, cache_dir: str | None) -> np.ndarray:
    """(N,) speaker name of each clip, in the order of the split's FeatureSet (both sort by digit, speaker, index)."""
    split_data = locate_sounds(src, split, cache_dir).load()  # lists paths; reads no audio
    return np.asarray([p.name.split("_")[1] for p in split_data.paths])


def check_speaker(name: str, speakers: np.ndarray) -> None:
    known = sorted(set(speakers.tolist()))
    if name not in known:
        raise DataError(f"regime.heldout_speaker: {name!r} is not an FSDD speaker of this data (has {known})")


def noisy_test_sounds(store: FeatureStore, src: SourceConfig, feats: FeatureConfig, snr_db: float) -> FeatureSet:
    """The test split with white noise at ``snr_db``, re-standardised with the clean train split's statistics."""
    noisy_feats = replace(feats, sound_snr_db=float(snr_db))
    noisy = store.sounds(src, noisy_feats, "test")
    (mean_n,), (std_n,) = store.train_stats("sounds", src, noisy_feats)
    (mean_c,), (std_c,) = store.train_stats("sounds", src, feats)
    x = (noisy.x * std_n + mean_n - mean_c) / std_c
    return FeatureSet(x, noisy.y, noisy.classes, noisy.keys)


def snr_domain(snr_db: float) -> str:
    return f"snr{snr_db:g}db"


def speaker_domain(name: str) -> str:
    return f"speaker_{name}"


def dataset_domain(store: FeatureStore, kind: str, source: str, root: str | None, feats: FeatureConfig,
                   train_classes: tuple[str, ...], to_common: np.ndarray) -> tuple[FeatureSet, np.ndarray]:
    """Another dataset's test split as a domain: (features, labels in the common space); samples of classes the
    training data does not have are dropped. DataError naming the setting when no class matches."""
    side = "image" if kind == "images" else "sound"
    src = SourceConfig(source, root=root)
    try:
        fs = store.images(src, feats, "test") if kind == "images" else store.sounds(src, feats, "test")
    except DataError as exc:  # the loaders name the training data's settings; these are eval.xdomain_<side>_*
        text = str(exc).replace(f"data.{side}.root", f"eval.xdomain_{side}_root")
        raise DataError(text.replace(f"data.{side}.source", f"eval.xdomain_{side}_source")) from None
    index = {name: i for i, name in enumerate(train_classes)}
    mapping = np.asarray([to_common[index[c]] if c in index else -1 for c in fs.classes], dtype=np.int64)
    y = mapping[fs.y.numpy()]
    if not (y >= 0).any():
        raise DataError(f"eval.xdomain_{side}_source: none of {source}'s classes {list(fs.classes)[:10]} is a class of "
                        f"the training {side}s {list(train_classes)[:10]} (classes are matched by name)")
    return fs, y


def dataset_domain_name(kind: str, source: str) -> str:
    return f"{'image' if kind == 'images' else 'sound'}_{source}"
