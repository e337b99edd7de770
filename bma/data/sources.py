"""Image and sound sources in their official published layouts.

Each source is found in ``src.root`` when given, else in the mirror (``bma.data.mirror.mirror_root``), else in the
download folder ``<cache root>/datasets`` (where it is downloaded from the official source when ``src.download``
is on and the machine is online). When nothing is found, ``DataError`` names every place looked and the expected
layout. See docs/data.md for the layouts.

Images come back as uint8 arrays (N, H, W, C) in their native size; sounds as a list of file paths (the feature
layer streams them). Every split carries an ``identity`` string (source, resolved folder, a fingerprint of the
files' names, sizes and mtimes, split) that the feature cache keys on.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import os
import pickle
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bma.config import SourceConfig
from bma.data import mirror
from bma.data.errors import DataError

SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SOUND_EXTENSIONS = (".wav", ".flac", ".ogg")
TRAIN_FRACTION = 0.8  # hash split of folders/manifests without an explicit train/test division

MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MNIST_FILES = {  # split -> ((images file, md5), (labels file, md5)), as torchvision's MNIST.resources
    "train": (("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
              ("train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432")),
    "test": (("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3"),
             ("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c")),
}
CIFAR10_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
# The FSDD commit the mirror holds (so a download gives the same recordings).
FSDD_URL = ("https://github.com/Jakobovski/free-spoken-digit-dataset/archive/"
            "26eb9aaf76e81b692f806f9140c2d2777410d7a1.zip")
# CIFAR-10: the official python-pickle tarball and the md5 its page publishes.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
# ESC-50 publishes no checksum, and the archive of its master branch changes with every commit (even a README
# edit: soundata/soundata#208). So a download takes the archive of one pinned commit (master's head since
# 2025-11) and checks the sha256 that two independent projects recorded for it (645,832,161 bytes).
ESC50_COMMIT = "33c8ce9eb2cf0b1c2f8bcf322eb349b6be34dbb6"
ESC50_URL = f"https://github.com/karolpiczak/ESC-50/archive/{ESC50_COMMIT}.zip"
ESC50_SHA256 = "661183a6f53ef04f12c9bd618fed0ddc1713280d6c94a5a5431e844ba6f6a21f"
FSDD_NAME = re.compile(r"^(\d)_(.+)_(\d+)\.wav$")
ESC50_COLUMNS = ("filename", "fold", "target", "category")  # required; esc10, src_file, take are optional
MANIFEST_COLUMNS = ("image_path", "sound_path", "label")


@dataclass(frozen=True)
class ImageSplit:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,), index into classes
    classes: tuple[str, ...]
    keys: tuple[str, ...] | None  # manifest only: the pair key (row id) of each sample
    identity: str  # source, resolved root, file fingerprint, split: what the feature cache keys on

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class SoundSplit:
    paths: tuple[Path, ...]  # one audio file per sample
    labels: np.ndarray  # int64 (N,)
    classes: tuple[str, ...]
    keys: tuple[str, ...] | None
    identity: str

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Located:
    """A split found on disk but not yet read: its identity is known, ``load()`` reads it."""

    identity: str
    load: Callable[[], ImageSplit | SoundSplit]


# -- public API --------------------------------------------------------------------------------------------------


def load_images(src: SourceConfig, split: str, cache_dir: str | None = None, *,
                image_size: int | None = None) -> ImageSplit:
    """The ``split`` ("train" or "test") of an image source, native size.

    ``image_size`` matters only for folder/manifest sources whose images differ in size: they are then resized to
    image_size x image_size on read (without it, differing sizes raise DataError naming the first odd file).
    """
    return locate_images(src, split, cache_dir, image_size=image_size).load()  # type: ignore[return-value]


def load_sounds(src: SourceConfig, split: str, cache_dir: str | None = None) -> SoundSplit:
    """The ``split`` ("train" or "test") of a sound source: one audio file path per sample."""
    return locate_sounds(src, split, cache_dir).load()  # type: ignore[return-value]


def locate_images(src: SourceConfig, split: str, cache_dir: str | None = None, *,
                  image_size: int | None = None) -> Located:
    _check_split(split, "image")
    finders = {"mnist": _mnist, "cifar10": _cifar10, "imagefolder": _imagefolder, "manifest": _manifest_images}
    if src.source not in finders:
        raise DataError(f"data.image.source: expected one of {sorted(finders)}, got {src.source!r}")
    return finders[src.source](src, split, cache_dir, image_size)


def locate_sounds(src: SourceConfig, split: str, cache_dir: str | None = None) -> Located:
    _check_split(split, "sound")
    finders = {"fsdd": _fsdd, "esc50": _esc50, "soundfolder": _soundfolder, "manifest": _manifest_sounds}
    if src.source not in finders:
        raise DataError(f"data.sound.source: expected one of {sorted(finders)}, got {src.source!r}")
    return finders[src.source](src, split, cache_dir)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """(float32 mono samples in [-1, 1], sample rate). DataError naming the file if missing, empty or unreadable."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: audio file does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: audio file is empty (0 bytes); expected a WAV/FLAC/OGG file")
    short = wav_cut_short(path)
    if short is not None:
        declared, held = short
        raise DataError(f"{path}: WAV file is cut short: its header declares {declared:,} bytes of audio, the file "
                        f"holds {held:,} ({100 * held / declared:.0f} %); expected a complete file (re-copy or "
                        "re-download it, or remove it)")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError on corrupt files
        raise DataError(f"{path}: not a readable audio file ({type(exc).__name__}: {exc}); "
                        "expected WAV/FLAC/OGG") from None
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise DataError(f"{path}: audio file has no samples (zero length)")
    if rate <= 0:
        raise DataError(f"{path}: audio file has sample rate {rate}; expected a positive rate")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(mono)):
        raise DataError(f"{path}: audio file holds NaN or infinite samples")
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False), int(rate)


def wav_cut_short(path: Path) -> tuple[int, int] | None:
    """(bytes the data chunk declares, bytes the file holds after it) when a RIFF/WAVE file ends before its audio
    does, else None. libsndfile reads such a file silently up to where it ends (a copy or download cut off).
    Sizes a streaming writer leaves unset (0 or 0xFFFFFFFF) and RF64 files are not judged."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                return None
            order = "<" if head[:4] == b"RIFF" else ">"
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                (length,) = struct.unpack(order + "I", chunk[4:])
                if chunk[:4] == b"data":
                    held = size - pos - 8
                    if length in (0, 0xFFFFFFFF) or length <= held:
                        return None
                    return length, held
                pos += 8 + length + (length & 1)
    except OSError:
        return None  # sf.read reports the file
    return None


# -- helpers -----------------------------------------------------------------------------------------------------


def _check_split(split: str, modality: str) -> None:
    if split not in SPLITS:
        raise DataError(f"split: expected 'train' or 'test' for the {modality} source, got {split!r}")


def fingerprint(files: list[Path] | tuple[Path, ...], base: Path | None = None) -> str:
    """sha256 (16 hex) of the files' names (relative to ``base``), sizes and modification times."""
    h = hashlib.sha256()
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            raise DataError(f"{f}: file does not exist") from None
        name = os.path.relpath(f, base) if base is not None else str(f)
        h.update(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _identity(source: str, root: Path, fp: str, split: str, *extra: str) -> str:
    return "|".join([source, str(root), fp, split, *extra])


def _classes_tag(classes: tuple[str, ...]) -> str:
    return "classes=" + hashlib.sha256("\x1f".join(classes).encode()).hexdigest()[:12]


def natural_key(name: str) -> tuple[int, int | str]:
    """Sort key: integer names numerically first ("2" < "10"), then the rest alphabetically."""
    return (0, int(name)) if name.isdigit() else (1, name)


def hash_fraction(text: str) -> float:
    """A stable number in [0, 1) from a string (sha256), used for the 80/20 hash split."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


def hash_split(text: str) -> str:
    return "train" if hash_fraction(text) < TRAIN_FRACTION else "test"


def _bases(src: SourceConfig, cache_dir: str | None) -> tuple[list[Path], list[str]]:
    """Folders to search (src.root, else mirror then download folder) and notes for the error message."""
    if src.root:
        return [Path(src.root).expanduser()], []
    bases, notes = [], []
    root = mirror.mirror_root()
    if root is not None:
        bases.append(root)
    else:
        notes.append(f"no mirror: $BMA_DATA_MIRROR is unset and {mirror.DEFAULT_MIRROR} does not exist")
    bases.append(mirror.data_root(cache_dir, create=False))  # searched, created only when downloading
    return bases, notes


def _resolve(src: SourceConfig, modality: str, cache_dir: str | None, subdirs: tuple[str, ...],
             found: Callable[[Path], bool], expected: str, download: Callable[[Path], None] | None) -> Path:
    """The first ``base/sub`` where ``found`` holds; else download; else DataError naming every place looked."""
    bases, notes = _bases(src, cache_dir)
    looked: list[Path] = []
    for base in bases:
        for sub in subdirs:
            folder = base / sub if sub else base
            looked.append(folder)
            if found(folder):
                return folder.resolve()
    field = f"data.{modality}"
    if src.root:
        notes.append(f"{field}.root is set, so only that folder is searched and nothing is downloaded")
    elif download is None:
        notes.append(f"{src.source} has no official download")
    elif not src.download:
        notes.append(f"download is off ({field}.download: false)")
    elif mirror.offline():
        notes.append("download skipped: $BMA_OFFLINE is set")
    else:
        target = mirror.data_root(cache_dir)
        try:
            download(target)
        except DataError as exc:
            notes.append(f"download failed: {exc}")
        except OSError as exc:
            notes.append(f"download failed: {exc}")
        else:
            for sub in subdirs:
                folder = target / sub if sub else target
                if found(folder):
                    return folder.resolve()
            notes.append(f"download into {target} finished, but the expected layout is not there")
    lines = [f"{field}.source={src.source}: data not found.", "Looked in:"]
    lines += [f"  {p}" for p in looked]
    lines.append(f"Expected: {expected}")
    lines += notes
    if not src.root:  # where a copy made by hand goes (the download folder: the mirror is read-only)
        fill = mirror.data_root(cache_dir, create=False) / subdirs[0]
        lines.append(f"To fill by hand: put that layout in {fill}/ (or set {field}.root to a folder holding it)")
    raise DataError("\n".join(lines))


# -- MNIST -------------------------------------------------------------------------------------------------------


def _idx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz", folder / name.replace("-idx", ".idx")):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path, expect_ndim: int) -> np.ndarray:
    """An IDX file (optionally gzipped) of unsigned bytes as a numpy array; DataError naming the file if malformed."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc})") from None
    magic = 0x800 + expect_ndim
    if len(raw) < 4 + 4 * expect_ndim:
        raise DataError(f"{path}: IDX file too short ({len(raw)} bytes) for a header of {expect_ndim} dimensions")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise DataError(f"{path}: IDX magic number {got:#010x}, expected {magic:#010x} "
                        f"(unsigned bytes, {expect_ndim} dimension{'s' if expect_ndim > 1 else ''})")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(expect_ndim)]
    offset = 4 + 4 * expect_ndim
    size = int(np.prod(dims))
    if len(raw) - offset != size:
        raise DataError(f"{path}: IDX header says {dims} = {size} bytes of data, file holds {len(raw) - offset}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _mnist(src: SourceConfig, split: str, cache_dir: str | None, image_size: int | None) -> Located:
    (img_name, img_md5), (lab_name, lab_md5) = MNIST_FILES[split]

    def found(folder: Path) -> bool:
        return _idx_file(folder, img_name) is not None and _idx_file(folder, lab_name) is not None

    def download(target: Path) -> None:
        files = [("|".join(m + f"{n}.gz" for m in MNIST_MIRRORS), f"{n}.gz", md5)
                 for n, md5 in ((img_name, img_md5), (lab_name, lab_md5))]
        mirror.download_files(files, target / "MNIST" / "raw")

    folder = _resolve(src, "image", cache_dir, ("MNIST/raw", "raw", ""), found,
                      f"the MNIST IDX files {img_name}[.gz] and {lab_name}[.gz] (torchvision's MNIST/raw/ layout)",
                      download)
    img_file, lab_file = _idx_file(folder, img_name), _idx_file(folder, lab_name)
    assert img_file is not None and lab_file is not None
    identity = _identity("mnist", folder, fingerprint([img_file, lab_file], folder), split)

    def load() -> ImageSplit:
        images = read_idx(img_file, 3)
        labels = read_idx(lab_file, 1).astype(np.int64)
        if len(images) != len(labels):
            raise DataError(f"{img_file}: {len(images)} images but {lab_file} has {len(labels)} labels; expected equal")
        if labels.size and labels.max() > 9:
            raise DataError(f"{lab_file}: label {labels.max()} out of range; expected digits 0..9")
        return ImageSplit(images[..., None].copy(), labels, tuple(str(d) for d in range(10)), None, identity)

    return Located(identity, load)


# -- CIFAR-10 ----------------------------------------------------------------------------------------------------


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="latin1")
    except Exception as exc:
        raise DataError(f"{path}: not a readable CIFAR-10 pickle ({type(exc).__name__}: {exc})") from None


def _cifar10(src: SourceConfig, split: str, cache_dir: str | None, image_size: int | None) -> Located:
    names = CIFAR10_FILES[split]

    def found(folder: Path) -> bool:
        return (folder / "batches.meta").is_file() and all((folder / n).is_file() for n in names)

    def download(target: Path) -> None:
        mirror.download_archive(CIFAR10_URL, target / "cifar-10-batches-py", md5=CIFAR10_MD5)

    folder = _resolve(src, "image", cache_dir, ("cifar-10-batches-py", ""), found,
                      f"torchvision's CIFAR-10 layout cifar-10-batches-py/ with batches.meta and {', '.join(names)}",
                      download)
    files = [folder / "batches.meta", *(folder / n for n in names)]
    identity = _identity("cifar10", folder, fingerprint(files, folder), split)

    def load() -> ImageSplit:
        meta = _unpickle(folder / "batches.meta")
        if not isinstance(meta, dict) or "label_names" not in meta:
            raise DataError(f"{folder / 'batches.meta'}: expected a dict with 'label_names'")
        classes = tuple(str(c) for c in meta["label_names"])
        images, labels = [], []
        for n in names:
            entry = _unpickle(folder / n)
            if not isinstance(entry, dict) or "data" not in entry or not ("labels" in entry or "fine_labels" in entry):
                raise DataError(f"{folder / n}: expected a dict with 'data' and 'labels'")
            data = np.asarray(entry["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise DataError(f"{folder / n}: 'data' has shape {data.shape}, expected (N, 3072)")
            lab = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
            if len(lab) != len(data):
                raise DataError(f"{folder / n}: {len(data)} images but {len(lab)} labels")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(lab)
        y = np.concatenate(labels)
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            raise DataError(f"{folder}: labels out of range 0..{len(classes) - 1} of batches.meta's label_names")
        return ImageSplit(np.ascontiguousarray(np.concatenate(images)), y, classes, None, identity)

    return Located(identity, load)


# -- folders -----------------------------------------------------------------------------------------------------


def _folder_listing(root: Path, split: str, extensions: tuple[str, ...], field: str, what: str
                    ) -> tuple[list[Path], np.ndarray, tuple[str, ...], Path, str]:
    """Files, labels, classes, the folder whose subfolders are the classes, and how the split was made.

    ``root/train/<class>`` + ``root/test/<class>`` when both exist, else ``root/<class>`` with the hash split.
    """
    if not root.is_dir():
        what_is = "is a file, not a folder" if root.exists() else "folder does not exist"
        raise DataError(f"{field}.root={root}: {what_is}; expected root/<class>/*{'|*'.join(extensions)}")
    explicit = (root / "train").is_dir(), (root / "test").is_dir()
    if any(explicit) and not all(explicit):
        have, missing = ("train", "test") if explicit[0] else ("test", "train")
        raise DataError(f"{root / missing}: folder missing; {root / have} exists, so expected both "
                        f"root/train/<class>/ and root/test/<class>/")

    def scan(folder: Path) -> dict[str, list[Path]]:
        out = {}
        for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(f for f in d.iterdir() if f.suffix.lower() in extensions and not f.name.startswith("."))
            if files:
                out[d.name] = files
        return out

    if all(explicit):
        per_split = {s: scan(root / s) for s in SPLITS}
        classes = tuple(sorted(set(per_split["train"]) | set(per_split["test"]), key=natural_key))
        chosen, how = per_split[split], "folders"
    else:
        everything = scan(root)
        classes = tuple(sorted(everything, key=natural_key))
        chosen = {c: [f for f in fs if hash_split(f.relative_to(root).as_posix()) == split]
                  for c, fs in everything.items()}
        how = "hash80/20"
    if not classes:
        raise DataError(f"{field}.root={root}: no {what} found; expected root/<class>/*{'|*'.join(extensions)} "
                        "(optionally under root/train/ and root/test/)")
    files, labels = [], []
    for c in classes:
        for f in chosen.get(c, []):
            files.append(f)
            labels.append(classes.index(c))
    if not files:
        raise DataError(f"{field}.root={root}: the {split} split is empty ({how} split); expected {what} in "
                        f"root/{split}/<class>/ or enough files for the 80/20 hash split")
    return files, np.asarray(labels, dtype=np.int64), classes, root, how


def read_images(files: list[Path], image_size: int | None = None) -> np.ndarray:
    """uint8 (N, H, W, C) from image files (C = 1 when all are greyscale, else 3).

    All images must share one size; with ``image_size`` set, differing sizes are resized to image_size square.
    """
    return _read_images(files, image_size)[0]


def _read_images(files: list[Path], image_size: int | None) -> tuple[np.ndarray, bool]:
    from PIL import Image, UnidentifiedImageError

    sizes, grey = [], True
    for f in files:
        try:
            with Image.open(f) as im:
                sizes.append(im.size)
                grey &= im.mode in ("1", "L", "LA", "I", "I;16", "F")
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{f}: not a readable image ({exc}); expected PNG or JPEG") from None
    target = None
    odd = next((i for i, s in enumerate(sizes) if s != sizes[0]), None)
    if odd is not None:
        if image_size is None:
            w, h = sizes[odd]
            raise DataError(f"{files[odd]}: image is {w}x{h}, expected {sizes[0][0]}x{sizes[0][1]} like {files[0]} "
                            "(all images of a source must share one size; set features.image_size to resize them)")
        target = (image_size, image_size)
    mode = "L" if grey else "RGB"
    out = None
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert(mode)
                if target is not None and im.size != target:
                    im = im.resize(target, Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{f}: not a readable image ({exc}); expected PNG or JPEG") from None
        if out is None:
            out = np.empty((len(files), *arr.shape[:2], 1 if grey else 3), dtype=np.uint8)
        out[i] = arr.reshape(out.shape[1:])
    assert out is not None
    return out, target is not None


def _imagefolder(src: SourceConfig, split: str, cache_dir: str | None, image_size: int | None) -> Located:
    if not src.root:
        raise DataError("data.image.root: imagefolder needs a root folder (root/<class>/*.png|jpg|jpeg)")
    root = Path(src.root).expanduser().resolve()
    files, labels, classes, base, how = _folder_listing(root, split, IMAGE_EXTENSIONS, "data.image", "images")
    identity = _identity("imagefolder", root, fingerprint(files, root), split, how, _classes_tag(classes))

    def load() -> ImageSplit:
        images, resized = _read_images(files, image_size)
        return ImageSplit(images, labels, classes, None, f"{identity}|resized={image_size}" if resized else identity)

    return Located(identity, load)


def _soundfolder(src: SourceConfig, split: str, cache_dir: str | None) -> Located:
    if not src.root:
        raise DataError("data.sound.root: soundfolder needs a root folder (root/<class>/*.wav|flac|ogg)")
    root = Path(src.root).expanduser().resolve()
    files, labels, classes, base, how = _folder_listing(root, split, SOUND_EXTENSIONS, "data.sound", "sounds")
    identity = _identity("soundfolder", root, fingerprint(files, root), split, how, _classes_tag(classes))
    return Located(identity, lambda: SoundSplit(tuple(files), labels, classes, None, identity))


# -- FSDD --------------------------------------------------------------------------------------------------------


def _fsdd(src: SourceConfig, split: str, cache_dir: str | None) -> Located:
    def found(folder: Path) -> bool:
        return folder.is_dir() and next(folder.glob("[0-9]_*_*.wav"), None) is not None

    def download(target: Path) -> None:
        mirror.download_archive(FSDD_URL, target / "fsdd" / "recordings", inner="recordings")

    folder = _resolve(src, "sound", cache_dir, ("fsdd/recordings", "recordings", ""), found,
                      "FSDD recordings {digit}_{speaker}_{index}.wav in fsdd/recordings/ (the published layout)",
                      download)
    entries = []
    for f in folder.iterdir():
        if f.suffix.lower() != ".wav":
            continue
        m = FSDD_NAME.match(f.name)
        if m is None:
            raise DataError(f"{f}: file name does not match FSDD's {{digit}}_{{speaker}}_{{index}}.wav")
        digit, speaker, index = int(m.group(1)), m.group(2), int(m.group(3))
        if (index < 5) == (split == "test"):  # upstream split: index 0-4 test, 5-49 train
            entries.append((digit, speaker, index, f))
    if not entries:
        raise DataError(f"{folder}: no FSDD recordings of the {split} split (index 0-4 test, 5-49 train)")
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    paths = tuple(e[3] for e in entries)
    labels = np.asarray([e[0] for e in entries], dtype=np.int64)
    identity = _identity("fsdd", folder, fingerprint(paths, folder), split)
    classes = tuple(str(d) for d in range(10))
    return Located(identity, lambda: SoundSplit(paths, labels, classes, None, identity))


# -- ESC-50 ------------------------------------------------------------------------------------------------------


def _esc50(src: SourceConfig, split: str, cache_dir: str | None) -> Located:
    def found(folder: Path) -> bool:
        return (folder / "meta" / "esc50.csv").is_file() and (folder / "audio").is_dir()

    def download(target: Path) -> None:
        mirror.download_archive(ESC50_URL, target / "ESC-50-master", sha256=ESC50_SHA256,
                                filename=f"ESC-50-{ESC50_COMMIT[:12]}.zip")

    folder = _resolve(src, "sound", cache_dir, ("ESC-50-master", "ESC-50", "esc50", ""), found,
                      "ESC-50's published layout: audio/*.wav and meta/esc50.csv "
                      "(columns filename,fold,target,category,esc10,src_file,take)", download)
    csv_path = folder / "meta" / "esc50.csv"
    rows = _read_csv(csv_path, ESC50_COLUMNS)
    by_target: dict[int, str] = {}
    entries = []
    for line, row in rows:
        try:
            fold, target = int(row["fold"]), int(row["target"])
        except ValueError:
            raise DataError(f"{csv_path}:{line}: fold and target must be integers, got "
                            f"fold={row['fold']!r} target={row['target']!r}") from None
        category = row["category"].strip()
        if by_target.setdefault(target, category) != category:
            raise DataError(f"{csv_path}:{line}: target {target} is category {category!r} here but "
                            f"{by_target[target]!r} earlier; expected one category per target")
        entries.append((fold, target, folder / "audio" / row["filename"].strip()))
    if not entries:
        raise DataError(f"{csv_path}: no rows; expected one row per clip")
    folds = sorted({e[0] for e in entries})
    if src.test_fold not in folds:
        raise DataError(f"data.sound.test_fold={src.test_fold}: no rows of that fold in {csv_path} (folds: {folds})")
    targets = sorted(by_target)
    classes = tuple(by_target[t] for t in targets)
    rank = {t: i for i, t in enumerate(targets)}
    chosen = [e for e in entries if (e[0] == src.test_fold) == (split == "test")]
    if not chosen:
        raise DataError(f"{csv_path}: the {split} split is empty (test = fold {src.test_fold}, train = other folds)")
    paths = tuple(e[2] for e in chosen)
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: listed in {csv_path} but the audio file does not exist")
    labels = np.asarray([rank[e[1]] for e in chosen], dtype=np.int64)
    identity = _identity("esc50", folder, fingerprint([csv_path, *paths], folder), split, f"fold={src.test_fold}")
    return Located(identity, lambda: SoundSplit(paths, labels, classes, None, identity))


# -- manifest ----------------------------------------------------------------------------------------------------


def _read_csv(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) pairs; DataError naming the file and the missing columns."""
    if not path.is_file():
        raise DataError(f"{path}: CSV file does not exist (expected columns {','.join(required)})")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(f"{path}: missing columns {missing}; expected columns {','.join(required)} "
                                f"(got {header})")
            rows = []
            for row in reader:
                row = {(k or "").strip(): (v or "") for k, v in row.items()}
                if not any(v.strip() for v in row.values()):
                    continue
                rows.append((reader.line_num, row))
            return rows
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 CSV file ({exc})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None


@dataclass(frozen=True)
class _ManifestRows:
    csv_path: Path
    rows: tuple[tuple[int, str, Path, Path, str, str], ...]  # (row id, label, image, sound, split, key)
    classes: tuple[str, ...]


def _manifest(src: SourceConfig, modality: str) -> _ManifestRows:
    if not src.root:
        raise DataError(f"data.{modality}.root: the manifest source needs the path of a CSV with columns "
                        f"{','.join(MANIFEST_COLUMNS)}[,split]")
    csv_path = Path(src.root).expanduser().resolve()
    if csv_path.is_dir():
        raise DataError(f"data.{modality}.root={csv_path}: is a folder; the manifest source expects the CSV file path")
    rows = _read_csv(csv_path, MANIFEST_COLUMNS)
    if not rows:
        raise DataError(f"{csv_path}: the manifest has no rows")
    out = []
    for rid, (line, row) in enumerate(rows):
        image, sound, label = row["image_path"].strip(), row["sound_path"].strip(), row["label"].strip()
        for column, value in (("image_path", image), ("sound_path", sound), ("label", label)):
            if not value:
                raise DataError(f"{csv_path}:{line}: column {column} is empty; expected a value")
        split = row.get("split", "").strip().lower()
        if "split" in row:
            if split not in SPLITS:
                raise DataError(f"{csv_path}:{line}: split {row['split']!r}, expected 'train' or 'test'")
        else:
            split = hash_split(f"{image}|{sound}")
        out.append((rid, label, csv_path.parent / image, csv_path.parent / sound, split, str(rid)))
    classes = tuple(sorted({r[1] for r in out}, key=natural_key))
    return _ManifestRows(csv_path, tuple(out), classes)


def _manifest_split(src: SourceConfig, split: str, modality: str, column: int):
    m = _manifest(src, modality)
    rows = [r for r in m.rows if r[4] == split]
    if not rows:
        raise DataError(f"{m.csv_path}: no rows in the {split} split (column split, or the 80/20 hash split)")
    files = [r[column] for r in rows]
    name = "image_path" if column == 2 else "sound_path"
    for r, f in zip(rows, files):
        if not f.is_file():
            raise DataError(f"{m.csv_path}: row {r[0]} ({name}={f}): file does not exist")
    labels = np.asarray([m.classes.index(r[1]) for r in rows], dtype=np.int64)
    keys = tuple(r[5] for r in rows)
    fp = fingerprint([m.csv_path, *files], m.csv_path.parent)
    identity = _identity(f"manifest-{modality}", m.csv_path, fp, split, _classes_tag(m.classes))
    return files, labels, m.classes, keys, identity


def _manifest_images(src: SourceConfig, split: str, cache_dir: str | None, image_size: int | None) -> Located:
    files, labels, classes, keys, identity = _manifest_split(src, split, "image", 2)

    def load() -> ImageSplit:
        images, resized = _read_images(files, image_size)
        return ImageSplit(images, labels, classes, keys, f"{identity}|resized={image_size}" if resized else identity)

    return Located(identity, load)


def _manifest_sounds(src: SourceConfig, split: str, cache_dir: str | None) -> Located:
    files, labels, classes, keys, identity = _manifest_split(src, split, "sound", 3)
    return Located(identity, lambda: SoundSplit(tuple(files), labels, classes, keys, identity))


__all__ = [
    "ImageSplit",
    "Located",
    "SoundSplit",
    "fingerprint",
    "hash_split",
    "load_images",
    "load_sounds",
    "locate_images",
    "locate_sounds",
    "read_audio",
    "read_idx",
    "read_images",
    "wav_cut_short",
]
