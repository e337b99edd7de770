"""What cropping ESC-50 clips to their first second loses (FSDD's 1-s default against the `esc50` preset's 5 s).

    python study/tools/crop_loss.py                          # ESC-50 from the mirror / download folder
    python study/tools/crop_loss.py --root /data/ESC-50-master --classmap study/classmaps/cifar10_esc50.csv

Two measurements over the clips of the chosen classes (all 50 without --classmap):

1. energy: the fraction of each clip's energy (sum of squared samples, at its own rate) after the first ``--crop``
   seconds: mean, median, and the share of clips where more than half of it, or more than 99 %, lies there;
2. probe: a linear classifier (logistic regression on each mel band's mean and std over time of the standardised
   log-mel features) trained on the train folds and scored on the test fold, with the features cut to ``--crop``
   seconds and with the whole clip, everything else as the `esc50` preset (bma.config.FEATURE_PRESETS).

Prints one table; docs/data.md ("ESC-50 features") quotes it on the fixtures of study/tools/make_fixtures.py.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np


def energy_after(paths, crop_seconds: float) -> np.ndarray:
    """(N,) fraction of each clip's energy after its first ``crop_seconds`` (a silent clip counts as 0)."""
    from bma.data.sources import read_audio

    out = np.zeros(len(paths))
    for i, path in enumerate(paths):
        audio, rate = read_audio(path)
        energy = np.square(audio.astype(np.float64))
        total = energy.sum()
        out[i] = energy[round(crop_seconds * rate):].sum() / total if total > 0 else 0.0
    return out


def pooled(x) -> np.ndarray:
    """(N, 1, n_mels, T) features -> (N, 2 n_mels): each band's mean and std over time."""
    x = x.numpy()[:, 0]
    return np.concatenate([x.mean(axis=2), x.std(axis=2)], axis=1)


def probe_accuracy(store, src, feats, keep) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = store.sounds(src, feats, "train"), store.sounds(src, feats, "test")
    tr, te = keep(train), keep(test)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(pooled(train.x)[tr], train.y.numpy()[tr])
    return float(clf.score(pooled(test.x)[te], test.y.numpy()[te]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="ESC-50 folder (default: the mirror, then the download folder)")
    parser.add_argument("--classmap", default=None, help="only the sound classes of this class map")
    parser.add_argument("--crop", type=float, default=1.0, help="seconds kept by the crop (FSDD's default: 1)")
    parser.add_argument("--test-fold", type=int, default=5)
    parser.add_argument("--cache-dir", default=None, help="feature cache root (default: $BMA_CACHE_DIR)")
    args = parser.parse_args(argv)

    from bma.config import FEATURE_PRESETS, FeatureConfig, SourceConfig
    from bma.data.errors import DataError
    from bma.data.features import FeatureStore
    from bma.data.sources import load_sounds

    src = SourceConfig("esc50", root=args.root, test_fold=args.test_fold)
    try:
        splits = {s: load_sounds(src, s, args.cache_dir) for s in ("train", "test")}
        classes = splits["train"].classes
        if args.classmap:
            import csv

            with open(args.classmap, newline="") as fh:
                wanted = {row["sound_class"].strip() for row in csv.DictReader(fh)}
        else:
            wanted = set(classes)
        chosen = np.array([c in wanted for c in classes])

        def keep(split) -> np.ndarray:  # (N,) bool: the samples of the chosen classes (a SoundSplit or FeatureSet)
            labels = split.labels if hasattr(split, "labels") else split.y.numpy()
            return chosen[np.asarray(labels)]

        paths = [p for s in splits.values() for p, k in zip(s.paths, keep(s)) if k]
        after = energy_after(paths, args.crop)
        full = FeatureConfig(**FEATURE_PRESETS["esc50"])
        cropped = replace(full, clip_seconds=args.crop)
        store = FeatureStore(args.cache_dir)
        acc_full = probe_accuracy(store, src, full, keep)
        acc_crop = probe_accuracy(store, src, cropped, keep)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_test = int(keep(splits["test"]).sum())
    print(f"ESC-50 clips: {len(paths)} ({int(chosen.sum())} classes), test fold {args.test_fold}: {n_test} clips")
    print(f"energy after the first {args.crop:g} s: mean {after.mean():.3f}, median {np.median(after):.3f}; "
          f"clips with > 50 % of it there: {np.mean(after > 0.5):.3f}, with > 99 %: {np.mean(after > 0.99):.3f}")
    print(f"linear probe, test-fold accuracy: whole clip ({full.clip_seconds:g} s) {acc_full:.3f}, "
          f"first {args.crop:g} s {acc_crop:.3f} (chance {1 / int(chosen.sum()):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
