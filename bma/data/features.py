"""Model-ready input features, computed once per (data identity, feature parameters) and cached on disk.

- Images: float32 (N, C, H, W), pixels scaled to [0, 1], resized to ``features.image_size`` when set
  (torchvision ``resize`` with antialiasing), then normalised per channel with the TRAIN split's mean and std.
- Sounds: float32 (N, 1, n_mels, T) log-mel spectrograms. Each clip is read as mono, resampled to
  ``features.sample_rate`` (torchaudio ``resample``), cropped to its first ``clip_seconds`` or zero-padded to it,
  optionally mixed with white Gaussian noise at ``features.sound_snr_db`` (noise power relative to the clip's own
  signal power; the generator is seeded from the file's name, so the noise is the same on every run and machine),
  transformed with ``torchaudio.transforms.MelSpectrogram`` in batches, ``log(mel + 1e-6)``, and standardised
  with the TRAIN split's global mean and std. T = floor(sample_rate * clip_seconds / hop_length) + 1.

Cache entries live in ``<cache root>/features/`` as ``.npy`` arrays and a JSON commit record (bma.data.cache_files),
named by a sha256 of the data identity (source, folder, fingerprint of file names/sizes/mtimes, split), the
parameters that affect that modality only, the train entry's key (whose statistics normalise a test split) and
``FEATURE_VERSION``. Writes are atomic (the arrays under temporary names, then the commit record by temporary file
+ ``os.replace``): a killed process leaves no half entry. An entry is built under a file lock, so processes that
need the same entry build it once. An entry up to ``in_memory_max_bytes()`` is read into memory; a larger one is
memory-mapped, and its FeatureSet pickles as a reference to the file (a trial maps it; the bytes never travel).
Sound extraction runs in parallel over fixed chunks (bma.data.extract): the output does not depend on the workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bma.config import FeatureConfig, SourceConfig
from bma.data import mirror
from bma.data.cache_files import CacheFileError, Entry, EntryWriter, MappedRef, entry_lock, in_memory_max_bytes, \
    open_x, open_y, read_entry, remove_leftovers
from bma.data.errors import DataError
from bma.data.extract import auto_workers, map_chunks
from bma.data.sources import ImageSplit, Located, SoundSplit, locate_images, locate_sounds, read_audio

log = logging.getLogger(__name__)

FEATURE_VERSION = 1  # bump whenever the computation below changes what an entry holds
LOG_EPS = 1e-6
IMAGE_BATCH = 8192
SOUND_BATCH = 256


@dataclass(frozen=True)
class FeatureSet:
    x: torch.Tensor  # float32 (N, C, H, W)
    y: torch.Tensor  # int64 (N,)
    classes: tuple[str, ...]
    keys: tuple[str, ...] | None
    # set when x is memory-mapped from a cache entry: the set then pickles as this reference, not as the bytes, so a
    # set derived from a mapped one (other rows, another layout) must be built without it
    mapped: MappedRef | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.mapped is not None and (tuple(self.x.shape) != tuple(self.mapped.shape) or not self.x.is_contiguous()):
            raise ValueError(f"FeatureSet: x {tuple(self.x.shape)} is not the mapped array of {self.mapped.entry} "
                             f"{tuple(self.mapped.shape)}; build a derived set without `mapped`")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __reduce__(self):
        if self.mapped is None:
            return (FeatureSet, (self.x, self.y, self.classes, self.keys))
        return (_reopen, (self.mapped, self.y, self.classes, self.keys))


def _reopen(ref: MappedRef, y: torch.Tensor, classes, keys) -> FeatureSet:
    """A mapped FeatureSet unpickled (in a trial): the same file mapped again, checked against the reference."""
    x, _ = ref.open()
    return FeatureSet(x, y, classes, keys, ref)


def image_params(feats: FeatureConfig) -> dict[str, Any]:
    """The feature parameters that change image features (and nothing else goes in an image key)."""
    return {"image_size": feats.image_size}


def sound_params(feats: FeatureConfig) -> dict[str, Any]:
    """The feature parameters that change sound features."""
    return {
        "sample_rate": feats.sample_rate,
        "clip_seconds": float(feats.clip_seconds),
        "n_mels": feats.n_mels,
        "n_fft": feats.n_fft,
        "hop_length": feats.hop_length,
        "sound_snr_db": None if feats.sound_snr_db is None else float(feats.sound_snr_db),
    }


def entry_key(kind: str, identity: str, params: dict[str, Any], train_key: str | None) -> str:
    blob = json.dumps({"version": FEATURE_VERSION, "kind": kind, "identity": identity, "params": params,
                       "train": train_key}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class FeatureStore:
    """Computes features on a cache miss and reads them back afterwards; ``computed`` counts the misses.
    ``workers``: processes for sound extraction (None: bma.data.extract.auto_workers)."""

    def __init__(self, cache_dir: str | None = None, workers: int | None = None):
        self.cache_dir = cache_dir
        self.root = mirror.cache_root(cache_dir) / "features"
        self.root.mkdir(parents=True, exist_ok=True)
        self.computed = 0
        self.workers = workers

    # -- public --------------------------------------------------------------------------------------------------
    def images(self, src: SourceConfig, feats: FeatureConfig, split: str) -> FeatureSet:
        return open_set(self._entry("images", src, feats, split))

    def sounds(self, src: SourceConfig, feats: FeatureConfig, split: str) -> FeatureSet:
        return open_set(self._entry("sounds", src, feats, split))

    def train_stats(self, kind: str, src: SourceConfig, feats: FeatureConfig) -> tuple[list[float], list[float]]:
        """(mean, std) that standardise every split of ``kind`` under these feature settings (the train split's)."""
        return self._train_stats(kind, src, feats)

    def path(self, kind: str, src: SourceConfig, feats: FeatureConfig, split: str) -> Path:
        """Where the entry of ``kind`` ("images" or "sounds") for this split lives (it may not exist yet): its commit
        record, which names the array files beside it."""
        return self._locate(kind, src, feats, split)[1]

    # -- internals -----------------------------------------------------------------------------------------------
    def _locate(self, kind: str, src: SourceConfig, feats: FeatureConfig, split: str) -> tuple[Located, Path, str]:
        if kind == "images":
            located = locate_images(src, split, self.cache_dir, image_size=feats.image_size)
            params = image_params(feats)
        elif kind == "sounds":
            located = locate_sounds(src, split, self.cache_dir)
            params = sound_params(feats)
        else:
            raise ValueError(f"kind: expected 'images' or 'sounds', got {kind!r}")
        train_key = None if split == "train" else self._locate(kind, src, feats, "train")[2]
        key = entry_key(kind, located.identity, params, train_key)
        return located, self.root / f"{kind}-{src.source}-{split}-{key}.json", key

    def _entry(self, kind: str, src: SourceConfig, feats: FeatureConfig, split: str, check: bool = True) -> Entry:
        """The validated entry, built under the entry's lock when it is missing or fails validation."""
        located, path, key = self._locate(kind, src, feats, split)
        entry = _valid_entry(path, key, check)
        if entry is not None:
            return entry
        with entry_lock(path):
            entry = _valid_entry(path, key, check, quiet=True)  # built by another process while this one waited
            if entry is None:
                remove_leftovers(path)
                self._build(kind, src, feats, split, located, path, key)
                entry = read_entry(path, key=key, version=FEATURE_VERSION)
        return entry

    def _build(self, kind: str, src: SourceConfig, feats: FeatureConfig, split: str, located: Located, path: Path,
               key: str) -> None:
        started = time.perf_counter()
        stats = None if split == "train" else self._train_stats(kind, src, feats)
        data = located.load()
        if kind == "images":
            assert isinstance(data, ImageSplit)
            x, stats = image_features(data, feats, stats)
            params = image_params(feats)
            writer = EntryWriter(path, tuple(x.shape))
            with writer:
                writer.x.copy_(x)
                del x
                self._commit(writer, data, located, split, params, stats, started, key)
        else:
            assert isinstance(data, SoundSplit)
            params = sound_params(feats)
            writer = EntryWriter(path, sound_shape(len(data.paths), feats))
            with writer:  # the spectrograms go straight into the file: a 10 GB pool never sits in memory
                _, stats = sound_features(data, feats, stats, out=writer.x, workers=self.workers)
                self._commit(writer, data, located, split, params, stats, started, key)
        self.computed += 1

    @staticmethod
    def _commit(writer: EntryWriter, data, located: Located, split: str, params: dict, stats, started: float,
                key: str) -> None:
        seconds = time.perf_counter() - started
        meta = {"identity": located.identity, "split": split, "version": FEATURE_VERSION,
                "params": json.dumps(params, sort_keys=True), "mean": [float(v) for v in stats[0]],
                "std": [float(v) for v in stats[1]], "seconds": seconds}
        writer.commit(np.asarray(data.labels, dtype=np.int64), data.classes, data.keys, meta, key=key,
                      version=FEATURE_VERSION)
        log.info("computed %s/%s %s in %.1f s -> %s", located.identity, split, writer.shape, seconds, writer.entry)

    def _train_stats(self, kind: str, src: SourceConfig, feats: FeatureConfig) -> tuple[list[float], list[float]]:
        """The train split's normalisation statistics, from its commit record (built first when missing)."""
        meta = self._entry(kind, src, feats, "train", check=False).meta
        return list(meta["mean"]), list(meta["std"])


def _valid_entry(path: Path, key: str, check: bool, quiet: bool = False) -> Entry | None:
    """The entry at ``path`` when it is there and valid; None otherwise (a bad one is named in a warning, then
    rebuilt by the caller: never used)."""
    try:
        return read_entry(path, key=key, version=FEATURE_VERSION, check=check)
    except CacheFileError as exc:
        if not quiet:
            log.warning("feature cache: %s; rebuilding the entry", exc)
        return None


def open_set(entry: Entry, mapped: bool | None = None) -> FeatureSet:
    """The FeatureSet of a validated entry: in memory up to ``in_memory_max_bytes()``, memory-mapped above (or as
    ``mapped`` says)."""
    if mapped is None:
        mapped = entry.x_bytes > in_memory_max_bytes()
    ref = MappedRef(str(entry.path), entry.key, entry.version, entry.x_shape, entry.x_dtype.str) if mapped else None
    return FeatureSet(open_x(entry, mapped), open_y(entry), entry.classes, entry.keys, ref)


def sound_shape(n: int, feats: FeatureConfig) -> tuple[int, int, int, int]:
    """(N, 1, n_mels, T) of N clips under ``feats``."""
    length = int(round(feats.sample_rate * feats.clip_seconds))
    return (n, 1, feats.n_mels, length // feats.hop_length + 1)


# -- computations --------------------------------------------------------------------------------------------------


def image_features(data: ImageSplit, feats: FeatureConfig, stats=None) -> tuple[torch.Tensor, tuple[list, list]]:
    """(x, (mean, std)): float32 (N, C, H, W) normalised with ``stats`` (the train split's), or its own when None."""
    images = torch.from_numpy(np.ascontiguousarray(data.images)).permute(0, 3, 1, 2)  # uint8 (N, C, H, W)
    n, c, h, w = images.shape
    size = (feats.image_size, feats.image_size) if feats.image_size else (h, w)
    if size == (h, w):
        x = images.float().div_(255.0).contiguous()
    else:
        from torchvision.transforms.functional import resize  # imported only when needed (slow first import)

        x = torch.empty((n, c, *size), dtype=torch.float32)
        for start in range(0, n, IMAGE_BATCH):
            batch = images[start:start + IMAGE_BATCH].float().div_(255.0)
            x[start:start + len(batch)] = resize(batch, list(size), antialias=True)
    if stats is None:
        if n == 0:
            raise DataError(f"{data.identity}: the train split is empty; its statistics normalise every split")
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
        stats = (mean.tolist(), [s if s > 1e-8 else 1.0 for s in var.sqrt().tolist()])
    if len(stats[0]) != c:
        raise DataError(f"{data.identity}: images have {c} channel(s) but the train split has {len(stats[0])}; "
                        "expected every split of a source to be all greyscale or all colour")
    x.sub_(torch.tensor(stats[0], dtype=torch.float32).view(1, -1, 1, 1))
    x.div_(torch.tensor(stats[1], dtype=torch.float32).view(1, -1, 1, 1))
    return x, stats


def noise_seed(path: Path) -> int:
    """A seed from the file's folder and name (not its absolute path), so noise is the same on every machine."""
    name = f"{Path(path).parent.name}/{Path(path).name}"
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


def load_clip(path: Path, feats: FeatureConfig) -> torch.Tensor:
    """One clip as float32 (L,), L = round(sample_rate * clip_seconds): resampled, cropped/padded, noise added."""
    return load_clips([path], feats)[0]


def load_clips(paths, feats: FeatureConfig) -> torch.Tensor:
    """float32 (B, L) waveforms: each clip read as mono, resampled to ``feats.sample_rate`` (clips of one rate
    resampled together, only the part that survives the crop), cropped to its first L samples or zero-padded, and
    mixed with seeded white noise at ``feats.sound_snr_db`` when set (the noise spans the whole padded window)."""
    import torchaudio.functional as AF

    rate_out = feats.sample_rate
    length = int(round(rate_out * feats.clip_seconds))
    out = torch.zeros((len(paths), length), dtype=torch.float32)
    used = [0] * len(paths)  # samples of real signal in each row
    by_rate: dict[int, list[tuple[int, np.ndarray]]] = {}
    for i, path in enumerate(paths):
        audio, rate = read_audio(path)
        if rate == rate_out:
            n = min(length, len(audio))
            out[i, :n] = torch.from_numpy(audio[:n])
            used[i] = n
        else:  # keep what survives the crop, plus a margin for the resampling filter's edge
            by_rate.setdefault(rate, []).append((i, audio[: int(math.ceil((length + 64) * rate / rate_out))]))
    for rate, items in by_rate.items():
        batch = torch.zeros((len(items), max(len(a) for _, a in items)), dtype=torch.float32)
        for j, (_, audio) in enumerate(items):
            batch[j, : len(audio)] = torch.from_numpy(audio)
        resampled = AF.resample(batch, rate, rate_out)  # zero tails resample to zeros: same as one by one
        for j, (i, audio) in enumerate(items):
            n = min(length, int(math.ceil(len(audio) * rate_out / rate)), resampled.shape[1])
            out[i, :n] = resampled[j, :n]
            used[i] = n
    if feats.sound_snr_db is not None:
        for i, path in enumerate(paths):
            power = float(out[i, : used[i]].double().square().mean()) if used[i] else 0.0
            if power > 0:  # a silent clip stays silent: noise is relative to the clip's own power
                sigma = math.sqrt(power / 10.0 ** (feats.sound_snr_db / 10.0))
                noise = np.random.default_rng(noise_seed(path)).standard_normal(length)
                out[i] += torch.from_numpy((sigma * noise).astype(np.float32))
    return out


@lru_cache(maxsize=4)
def _mel(feats: FeatureConfig):
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(sample_rate=feats.sample_rate, n_fft=feats.n_fft,
                                                hop_length=feats.hop_length, n_mels=feats.n_mels)


def log_mels(paths, feats: FeatureConfig) -> torch.Tensor:
    """float32 (B, n_mels, T) log-mel spectrograms of a chunk of clips (one task of the parallel extraction)."""
    with torch.inference_mode():
        waves = load_clips(paths, feats)
        return _mel(feats)(waves).add_(LOG_EPS).log_()


def sound_features(data: SoundSplit, feats: FeatureConfig, stats=None, out: torch.Tensor | None = None,
                   workers: int | None = 1) -> tuple[torch.Tensor, tuple[list, list]]:
    """(x, (mean, std)): float32 (N, 1, n_mels, T) standardised log-mels; ``stats`` from the train split or None.
    ``out``: a tensor of that shape to fill (a cache file's map); ``workers``: processes over chunks of SOUND_BATCH
    clips (None: auto_workers); the result does not depend on it."""
    from functools import partial

    n = len(data.paths)
    x = out if out is not None else torch.empty(sound_shape(n, feats), dtype=torch.float32)
    chunks = [data.paths[start:start + SOUND_BATCH] for start in range(0, n, SOUND_BATCH)]
    workers = auto_workers(len(chunks)) if workers is None else workers
    for i, spec in map_chunks(partial(log_mels, feats=feats), chunks, workers, "log-mels " + " ".join(data.identity.split("|")[0:4:3])):
        x[i * SOUND_BATCH:i * SOUND_BATCH + len(spec), 0] = spec
    if stats is None:
        if n == 0:
            raise DataError(f"{data.identity}: the train split is empty; its statistics normalise every split")
        var, mean = torch.var_mean(x, correction=0)
        std = math.sqrt(float(var))
        stats = ([float(mean)], [std if std > 1e-8 else 1.0])
    x.sub_(stats[0][0]).div_(stats[1][0])
    return x, stats


__all__ = ["FEATURE_VERSION", "FeatureSet", "FeatureStore", "entry_key", "image_features", "image_params",
           "load_clip", "load_clips", "log_mels", "noise_seed", "open_set", "sound_features", "sound_params",
           "sound_shape"]
