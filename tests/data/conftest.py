"""Fixtures of the data tests: the real mirror (skipped when absent) and tiny generated layouts in tmp_path.

Every test runs with ``$BMA_CACHE_DIR`` in a tmp folder and ``$BMA_OFFLINE=1`` (no download attempts), so nothing
is written into the repo, the mirror or ``~``.
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest

from bma.config import FeatureConfig, SourceConfig

MIRROR_SKIP = "needs the MNIST/FSDD mirror at ../shared/data or $BMA_DATA_MIRROR"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("BMA_CACHE_DIR", str(tmp_path / "bma-cache"))
    monkeypatch.setenv("BMA_OFFLINE", "1")


def _mirror() -> Path | None:
    from bma.data.errors import DataError
    from bma.data.mirror import mirror_root

    try:
        root = mirror_root()
    except DataError:
        return None
    if root is None or not (root / "MNIST" / "raw").is_dir() or not (root / "fsdd" / "recordings").is_dir():
        return None
    return root


@pytest.fixture(scope="session")
def mirror() -> Path:
    root = _mirror()
    if root is None:
        pytest.skip(MIRROR_SKIP)
    return root


@pytest.fixture(scope="session")
def mnist_cache(mirror, tmp_path_factory):
    """A feature cache holding MNIST's default features (train + test), computed once per session."""
    from bma.data.features import FeatureStore

    cache = tmp_path_factory.mktemp("mnist-cache")
    store = FeatureStore(str(cache))
    train = store.images(SourceConfig("mnist"), FeatureConfig(), "train")
    test = store.images(SourceConfig("mnist"), FeatureConfig(), "test")
    return {"cache": str(cache), "computed": store.computed, "train": train, "test": test}


@pytest.fixture(scope="session")
def fsdd_cache(mirror, tmp_path_factory):
    """A feature cache holding FSDD's default features (train + test), computed once per session."""
    from bma.data.features import FeatureStore

    cache = tmp_path_factory.mktemp("fsdd-cache")
    store = FeatureStore(str(cache))
    train = store.sounds(SourceConfig("fsdd"), FeatureConfig(), "train")
    test = store.sounds(SourceConfig("fsdd"), FeatureConfig(), "test")
    return {"cache": str(cache), "computed": store.computed, "train": train, "test": test}


# -- generators --------------------------------------------------------------------------------------------------


def write_wav(path: Path, freq: float = 440.0, seconds: float = 0.3, rate: int = 8000, amp: float = 0.5) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    sf.write(str(path), (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


def write_png(path: Path, value: int, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    arr = np.clip(rng.normal(value, 20, shape), 0, 255).astype(np.uint8)
    Image.fromarray(arr, mode=mode).save(path)
    return path


ESC50_HEADER = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
ESC50_CATEGORIES = {0: "dog", 1: "rooster", 2: "rain"}  # target -> category, as in ESC-50


@pytest.fixture
def esc50_dir(tmp_path) -> Path:
    """A fake ESC-50 layout: 3 categories x 5 folds x 2 takes, 16 kHz, 0.6 s clips (resampled to 8 kHz)."""
    root = tmp_path / "ESC-50-master"
    rows = []
    # rows listed in an order where target order differs from first appearance (rain first)
    for target in (2, 0, 1):
        for fold in range(1, 6):
            for take in "AB":
                name = f"{fold}-{100 + target}-{take}-{target}.wav"
                write_wav(root / "audio" / name, freq=300 + 200 * target + 10 * fold, seconds=0.6, rate=16000)
                rows.append([name, fold, target, ESC50_CATEGORIES[target], "False", str(100 + target), take])
    (root / "meta").mkdir(parents=True)
    with open(root / "meta" / "esc50.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(ESC50_HEADER)
        w.writerows(rows)
    return root


@pytest.fixture
def imagefolder_dir(tmp_path) -> Path:
    """root/<class>/*.png, 3 classes ("2", "10", "cat") x 12 RGB 8x8 images; hash split."""
    root = tmp_path / "imgs"
    for c, cls in enumerate(("2", "10", "cat")):
        for i in range(12):
            write_png(root / cls / f"{i:03d}.png", 40 + 80 * c + i)
    (root / "README.txt").write_text("not an image")
    return root


@pytest.fixture
def imagefolder_split_dir(tmp_path) -> Path:
    """root/train/<class>/ and root/test/<class>/ of grey 6x6 PNGs."""
    root = tmp_path / "imgsplit"
    for split, n in (("train", 5), ("test", 2)):
        for cls in ("a", "b"):
            for i in range(n):
                write_png(root / split / cls / f"{i}.png", 30 * i + (0 if cls == "a" else 100), (6, 6), "L")
    return root


@pytest.fixture
def soundfolder_dir(tmp_path) -> Path:
    """root/<class>/*.wav|flac, 2 classes x 10 clips (8 kHz), one FLAC among them."""
    import soundfile as sf

    root = tmp_path / "snds"
    for c, cls in enumerate(("low", "high")):
        for i in range(10):
            write_wav(root / cls / f"{i:02d}.wav", freq=200 + 1500 * c + 20 * i, seconds=0.2 + 0.05 * i)
    data, rate = sf.read(str(root / "low" / "00.wav"))
    sf.write(str(root / "low" / "extra.flac"), data, rate)
    return root


@pytest.fixture
def manifest_csv(tmp_path) -> Path:
    """A natively paired manifest: 8 rows (6 train, 2 test) of image + sound + label, paths relative to the CSV."""
    root = tmp_path / "paired"
    rows = []
    for i in range(8):
        label = "dog" if i % 2 else "cat"
        write_png(root / "img" / f"{i}.png", 20 * i, (5, 5))
        write_wav(root / "snd" / f"{i}.wav", freq=300 + 100 * i)
        rows.append([f"img/{i}.png", f"snd/{i}.wav", label, "test" if i >= 6 else "train"])
    path = root / "pairs.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_path", "sound_path", "label", "split"])
        w.writerows(rows)
    return path


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cifar_batches(folder: Path, per_batch: int = 3, test: int = 4, seed: int = 0,
                  labels: list[int] | None = None) -> Path:
    """The official CIFAR-10 python layout in ``folder``: batches.meta, data_batch_1..5 (``per_batch`` images each)
    and test_batch (``test`` images), random pixels; labels random, or ``labels`` repeated (train and test)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": per_batch, "num_vis": 3072}, fh)
    rng = np.random.default_rng(seed)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        lab = ([int(v) for v in rng.integers(0, 10, n)] if labels is None
               else [labels[i % len(labels)] for i in range(n)])
        entry = {"batch_label": name, "labels": lab,
                 "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{i}.png" for i in range(n)]}
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh)
    return folder


@pytest.fixture
def cifar_dir(tmp_path) -> Path:
    """A tiny CIFAR-10 pickle layout: cifar-10-batches-py/ with 3 images per train batch and 4 test images."""
    return cifar_batches(tmp_path / "cifar" / "cifar-10-batches-py").parent
