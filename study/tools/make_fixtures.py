"""Write small stand-ins for CIFAR-10 and ESC-50 in their official layouts, so the specs that use them run offline.

    python study/tools/make_fixtures.py /tmp/bma-fixtures
    BMA_DATA_MIRROR=/tmp/bma-fixtures python study/run.py study/specs/cifar_esc50.yaml --smoke

The folder it writes is a data mirror (docs/data.md): ``cifar-10-batches-py/`` (the python-pickle batches:
``batches.meta``, ``data_batch_1..5``, ``test_batch``) and ``ESC-50-master/`` (``audio/*.wav`` + ``meta/esc50.csv``).
The data are synthetic and learnable, not real:

- images: 32x32 RGB, each class a colour and an oriented stripe pattern of its own, plus pixel noise;
- sounds: 5-s, 44.1 kHz, 16-bit mono WAVs named and listed as ESC-50's (``{fold}-{src}-{take}-{target}.wav``,
  the real category names and target numbers), each a faint noise floor with one class-identifying event (a
  harmonic tone of the class's own pitch, 0.6 s) whose onset is drawn uniformly over the clip (``onset``
  fixes it instead). Real ESC-50 has 8 clips per class and fold; so has this by default.

The test suite builds its fixtures with the same functions (tests/data/conftest.py).
"""

from __future__ import annotations

import argparse
import csv
import pickle
import sys
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# ESC-50's 50 categories by target number, as meta/esc50.csv has them (5 groups of 10).
ESC50_CATEGORIES = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind", "pouring_water",
    "toilet_flush", "thunderstorm",
    "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing", "brushing_teeth",
    "snoring", "drinking_sipping",
    "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening", "washing_machine",
    "vacuum_cleaner", "clock_alarm", "clock_tick", "glass_breaking",
    "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells", "airplane", "fireworks",
    "hand_saw",
)
ESC50_HEADER = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
ESC50_RATE = 44100
ESC50_SECONDS = 5.0
EVENT_SECONDS = 0.6


def write_cifar10(folder: Path, train_labels: list[int], test_labels: list[int], seed: int = 0,
                  structured: bool = True) -> Path:
    """The CIFAR-10 python layout in ``folder`` (``.../cifar-10-batches-py``): ``train_labels`` dealt over the five
    data batches in order, ``test_labels`` in ``test_batch``. Pixels: class patterns plus noise (``structured``),
    else uniform random."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": -(-len(train_labels) // 5),
                     "num_vis": 3072}, fh)

    def images(labels: list[int]) -> np.ndarray:  # (N, 3072) uint8, channel-major rows as CIFAR stores them
        if not structured:
            return rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        yy, xx = np.mgrid[0:32, 0:32]
        out = np.empty((len(labels), 3, 32, 32), dtype=np.float32)
        for i, c in enumerate(labels):
            colour = 60 + 140 * np.array([(c * 37 % 10) / 9, (c * 53 % 10) / 9, (c * 71 % 10) / 9])
            angle = np.pi * c / 10
            stripes = 40 * np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * (0.4 + 0.05 * c))
            out[i] = colour[:, None, None] + stripes[None] + rng.normal(0, 25, (3, 32, 32))
        return np.clip(out, 0, 255).astype(np.uint8).reshape(len(labels), 3072)

    chunks = np.array_split(np.arange(len(train_labels)), 5)
    for b, idx in enumerate(chunks, start=1):
        lab = [int(train_labels[i]) for i in idx]
        _pickle(folder / f"data_batch_{b}", f"training batch {b} of 5", lab, images(lab))
    lab = [int(v) for v in test_labels]
    _pickle(folder / "test_batch", "testing batch 1 of 1", lab, images(lab))
    return folder


def _pickle(path: Path, name: str, labels: list[int], data: np.ndarray) -> None:
    with open(path, "wb") as fh:
        pickle.dump({"batch_label": name, "labels": labels, "data": data,
                     "filenames": [f"{i:05d}.png" for i in range(len(labels))]}, fh)


def event_pitch(target: int) -> float:
    """The fundamental (Hz) of class ``target``'s event: 50 pitches a semitone apart from 110 Hz."""
    return 110.0 * 2 ** (target / 12)


def esc50_clip(target: int, rng: np.random.Generator, onset: float | None = None, seconds: float = ESC50_SECONDS,
               rate: int = ESC50_RATE) -> tuple[np.ndarray, float]:
    """(float32 samples in [-1, 1], onset in s): a noise floor at -60 dBFS and one 0.6-s harmonic event of the
    class's pitch (3 harmonics, Hann envelope, peak ~0.5) starting at ``onset`` (uniform over the clip if None)."""
    n = round(seconds * rate)
    clip = 0.001 * rng.standard_normal(n)
    if onset is None:
        onset = float(rng.uniform(0.0, max(seconds - EVENT_SECONDS, 0.0)))
    start, length = round(onset * rate), round(EVENT_SECONDS * rate)
    length = min(length, n - start)
    t = np.arange(length) / rate
    f0 = event_pitch(target)
    tone = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in (1, 2, 3))
    clip[start:start + length] += 0.3 * np.hanning(length) * tone
    return np.clip(clip, -1, 1).astype(np.float32), onset


def write_esc50(root: Path, targets: tuple[int, ...] | list[int], per_fold: int = 8, seed: int = 0,
                onset: float | None = None, seconds: float = ESC50_SECONDS, rate: int = ESC50_RATE) -> Path:
    """ESC-50's layout in ``root`` (``.../ESC-50-master``): for each target in ``targets``, ``per_fold`` clips in each
    of folds 1..5, as 16-bit PCM WAVs; ``meta/esc50.csv`` lists them in ESC-50's column order. Returns root."""
    import soundfile as sf

    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for fold in range(1, 6):
        for target in targets:
            for k in range(per_fold):
                src = 100000 + 1000 * target + 10 * fold + k
                name = f"{fold}-{src}-A-{target}.wav"
                clip, _ = esc50_clip(target, rng, onset, seconds, rate)
                sf.write(str(root / "audio" / name), clip, rate, subtype="PCM_16")
                rows.append((name, fold, target, ESC50_CATEGORIES[target], str(target in ESC10), src, "A"))
    with open(root / "meta" / "esc50.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(ESC50_HEADER)
        writer.writerows(sorted(rows))
    return root


# ESC-10, the subset flagged in esc50.csv's esc10 column
ESC10 = {0, 1, 10, 11, 12, 20, 21, 38, 40, 41}


def classmap_targets(classmap: Path) -> list[int]:
    """The ESC-50 targets of a class map's sound classes (columns image_class,sound_class)."""
    with open(classmap, newline="") as fh:
        return [ESC50_CATEGORIES.index(row["sound_class"].strip()) for row in csv.DictReader(fh)]


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder to write (a data mirror: point $BMA_DATA_MIRROR at it)")
    parser.add_argument("--classmap", default=str(repo / "study" / "classmaps" / "cifar10_esc50.csv"),
                        help="the ESC-50 classes written are this map's sound classes (default: the shipped map)")
    parser.add_argument("--extra-sound-classes", type=int, default=2,
                        help="also write this many unmapped ESC-50 classes (the loaders must drop them)")
    parser.add_argument("--per-fold", type=int, default=8, help="ESC-50 clips per class and fold (real: 8)")
    parser.add_argument("--images-per-class", type=int, default=300, help="CIFAR-10 train images per class")
    parser.add_argument("--test-images-per-class", type=int, default=40)
    parser.add_argument("--onset", type=float, default=None,
                        help="event onset in seconds for every clip (default: uniform over the clip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    targets = classmap_targets(Path(args.classmap))
    extra = [t for t in range(50) if t not in targets][: args.extra_sound_classes]
    train = [c for _ in range(args.images_per_class) for c in range(10)]
    test = [c for _ in range(args.test_images_per_class) for c in range(10)]
    write_cifar10(out / "cifar-10-batches-py", train, test, seed=args.seed)
    write_esc50(out / "ESC-50-master", targets + extra, per_fold=args.per_fold, seed=args.seed, onset=args.onset)
    n_clips = 5 * args.per_fold * (len(targets) + len(extra))
    print(f"wrote {out}/cifar-10-batches-py ({len(train)} train + {len(test)} test images) and "
          f"{out}/ESC-50-master ({n_clips} clips of {ESC50_SECONDS:g} s at {ESC50_RATE} Hz, "
          f"{len(targets) + len(extra)} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
