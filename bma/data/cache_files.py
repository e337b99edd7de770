"""Feature cache entries on disk: numpy ``.npy`` arrays committed by one atomic rename, memory-mapped when large.

An entry ``<features>/{kind}-{source}-{split}-{key}`` is three files:

- ``{name}.{token}.x.npy``: the features, float32 (N, C, H, W), C-order;
- ``{name}.{token}.y.npy``: the labels, int64 (N,);
- ``{name}.json``: the **commit record**: format and feature versions, the key, each array's file, shape, dtype and
  byte size, the class names, the manifest keys and the computation's meta (normalisation statistics, seconds).

The arrays are written under hidden temporary names, flushed and fsynced, then renamed to names carrying a fresh
random token; the JSON is written last, by temporary file + ``os.replace``: that rename is the commit. A process
killed before it leaves no JSON (or the previous, still valid one), so a half-written array is never named by a
commit record and never read. A rebuilt entry gets new array files; the ones it replaces are unlinked after the
commit, which is safe for a process that still maps them (the pages live until it unmaps them).

Why ``.npy``: numpy is already a dependency, the header holds exactly the shape, dtype and order that validation
needs, ``np.load(mmap_mode=...)`` maps it with no copy, and ``torch.from_numpy`` wraps the map as a tensor that
indexes like any other. safetensors would add a dependency for the same mapping (its header is JSON too, but
``get_tensor`` copies unless used through its own loader); Arrow/Parquet store tables, not N-d arrays, and a
Parquet column cannot be mapped at all.

Validation on open (``read_entry``): the JSON must parse and carry this format, the expected key and feature
version; each array's header must parse and give the recorded shape and dtype in C order, and the file's size must
be exactly the header plus the data (a truncated or padded file fails). Any failure is a ``CacheFileError`` that
names the file and what was wrong; the feature store logs it and rebuilds the entry.

The threshold between the in-memory path and the memory-mapped one is owned here: ``in_memory_max_bytes()``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bma.data.errors import DataError

log = logging.getLogger(__name__)

ENTRY_FORMAT = 1  # bump when the files' layout (not the features' computation) changes

# -- the threshold -------------------------------------------------------------------------------------------------

IN_MEMORY_MAX_MB_ENV = "BMA_IN_MEMORY_MAX_MB"
# One split of one modality up to this size is read into memory (the driver ships it through Ray's object store,
# zero-copy, and a trial gathers its regime's rows up front); above it, the entry is memory-mapped and a trial
# gathers each batch's rows from the map. Why 1024 MiB: a data setting holds four entries and Ray's object store
# is 30 % of a node's RAM by default (~7 GiB on the 24 GB machines the study runs on), so four entries under the
# threshold fit the store; a trial's private up-front copy of one modality's regime stays under 1 GiB; and every
# dataset the project reads today stays on the in-memory path, which is faster per step (benchmarks/scale.py):
# MNIST 188 MB, CIFAR-10 629 MB, FSDD 54 MB, ESC-50 at 5 s and 40 mels 200 MB. A 100K pool of 5-s spectrograms
# (10 GB) is mapped.
DEFAULT_IN_MEMORY_MAX_MB = 1024


def in_memory_max_bytes() -> int:
    """Entries (and a trial's regime rows of one modality) up to this many bytes stay in memory; larger ones are
    memory-mapped (gathered per batch). ``$BMA_IN_MEMORY_MAX_MB`` overrides the default (0 maps everything)."""
    raw = os.environ.get(IN_MEMORY_MAX_MB_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_IN_MEMORY_MAX_MB << 20
    try:
        mb = float(raw)
    except ValueError:
        raise DataError(f"${IN_MEMORY_MAX_MB_ENV}: {raw!r}, expected a size in MiB (0 maps every feature entry)")
    if mb < 0:
        raise DataError(f"${IN_MEMORY_MAX_MB_ENV}: {raw!r}, expected a size in MiB >= 0")
    return int(mb * (1 << 20))


# -- errors, locks -------------------------------------------------------------------------------------------------


class CacheFileError(DataError):
    """A feature cache file that cannot be used: missing, truncated, foreign or of another version. The message
    names the file."""


@contextlib.contextmanager
def entry_lock(entry: Path):
    """An exclusive lock on ``{entry stem}.lock`` beside the entry, held while the entry is built: processes (and
    threads) that need the same entry build it once; the others wait, then read it. ``flock`` works across the
    processes of one machine and, on Linux NFSv4 mounts, across machines."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    lock = entry.with_name(entry.stem + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process building %s", entry)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# -- writing -------------------------------------------------------------------------------------------------------


def _hidden_temp(folder: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    return Path(tmp)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(text: str, path: Path) -> None:
    tmp = _hidden_temp(path.parent, path.name)
    try:
        tmp.write_text(text)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class EntryWriter:
    """Writes one entry: ``x`` is a float tensor over a hidden temporary ``.npy`` map of ``shape``, to be filled by
    the caller; ``commit`` writes the labels and the commit record. Leaving the ``with`` block without a commit (an
    exception) removes the temporary files, so nothing of a failed build stays behind."""

    def __init__(self, entry: Path, shape: tuple[int, ...], dtype=np.float32):
        self.entry = entry
        self.folder = entry.parent
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._temps: list[Path] = []
        self._tmp_x = self._temp("x.npy")
        if int(np.prod(self.shape)) == 0:  # an empty map cannot be created: write the empty array as it is
            np.save(self._tmp_x, np.zeros(self.shape, self.dtype))
            self._map = None
            self.x = torch.from_numpy(np.zeros(self.shape, self.dtype))
        else:
            self._map = np.lib.format.open_memmap(self._tmp_x, mode="w+", dtype=self.dtype, shape=self.shape)
            self.x = torch.from_numpy(self._map)

    def _temp(self, what: str) -> Path:
        path = _hidden_temp(self.folder, f"{self.entry.stem}.{what}")
        self._temps.append(path)
        return path

    def __enter__(self) -> "EntryWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.x = None
        self._map = None
        for path in self._temps:
            path.unlink(missing_ok=True)

    def commit(self, y: np.ndarray, classes, keys, meta: dict[str, Any], *, key: str, version: int) -> None:
        if self._map is not None:
            self._map.flush()
        self.x, self._map = None, None
        token = uuid.uuid4().hex[:12]
        x_name = f"{self.entry.stem}.{token}.x.npy"
        y_name = f"{self.entry.stem}.{token}.y.npy"
        y = np.ascontiguousarray(y, dtype=np.int64)
        tmp_y = self._temp("y.npy")
        with open(tmp_y, "wb") as fh:
            np.save(fh, y)
        for tmp in (self._tmp_x, tmp_y):
            _fsync(tmp)
        os.replace(self._tmp_x, self.folder / x_name)
        os.replace(tmp_y, self.folder / y_name)
        record = {
            "format": ENTRY_FORMAT, "version": version, "key": key,
            "x": {"file": x_name, "shape": list(self.shape), "dtype": self.dtype.str,
                  "bytes": int(np.prod(self.shape)) * self.dtype.itemsize},
            "y": {"file": y_name, "shape": list(y.shape), "dtype": y.dtype.str, "bytes": int(y.nbytes)},
            "classes": list(classes), "keys": None if keys is None else list(keys), "meta": meta,
        }
        atomic_write_text(json.dumps(record), self.entry)  # the commit
        # The arrays of the entry this one replaces, and of builds killed between their arrays and their commit.
        # Safe: entries are built under entry_lock, and a process that still maps an unlinked file keeps its pages.
        for stale in self.folder.glob(f"{self.entry.stem}.*.[xy].npy"):
            if stale.name not in (x_name, y_name):
                stale.unlink(missing_ok=True)


def remove_leftovers(entry: Path) -> list[Path]:
    """Delete the temporary files of builds of ``entry`` that were killed mid-write. Call it holding entry_lock:
    no live build of the entry writes then."""
    gone = []
    for tmp in entry.parent.glob(f".{entry.stem}.*.tmp"):
        tmp.unlink(missing_ok=True)
        gone.append(tmp)
    return gone


# -- reading and validation ----------------------------------------------------------------------------------------


def check_array(path: Path, shape, dtype) -> int:
    """Validate a ``.npy`` file against the shape and dtype its commit record gives; returns the data's offset.
    Raises CacheFileError naming the file: missing, not a .npy file, another shape/dtype/order, truncated."""
    expected_shape, expected_dtype = tuple(int(s) for s in shape), np.dtype(dtype)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)(fh)
            offset = fh.tell()
    except FileNotFoundError:
        raise CacheFileError(f"{path}: missing (its commit record names it)") from None
    except (OSError, ValueError) as exc:
        raise CacheFileError(f"{path}: not a readable .npy array ({exc})") from None
    got_shape, fortran, got_dtype = header
    if tuple(got_shape) != expected_shape or got_dtype != expected_dtype or fortran:
        raise CacheFileError(f"{path}: holds {got_dtype} {tuple(got_shape)}{' (Fortran order)' if fortran else ''}, "
                             f"expected {expected_dtype} {expected_shape} in C order as its commit record says")
    want = offset + int(np.prod(expected_shape)) * expected_dtype.itemsize
    if size != want:
        raise CacheFileError(f"{path}: {size} bytes, expected {want} (header + {expected_dtype} "
                             f"{expected_shape}): {'truncated' if size < want else 'trailing bytes'}")
    return offset


@dataclass(frozen=True)
class Entry:
    """A validated commit record: the arrays' paths, shapes and dtypes, the class names, keys and meta."""

    path: Path
    key: str | None
    version: int | None
    x_file: Path
    x_shape: tuple[int, ...]
    x_dtype: np.dtype
    y_file: Path
    y_shape: tuple[int, ...]
    classes: tuple[str, ...]
    keys: tuple[str, ...] | None
    meta: dict

    @property
    def x_bytes(self) -> int:
        return int(np.prod(self.x_shape)) * self.x_dtype.itemsize


def read_entry(path: Path, *, key: str | None = None, version: int | None = None, check: bool = True) -> Entry | None:
    """The entry committed at ``path``, validated; None when there is no commit record. ``check`` False skips the
    arrays' headers (the statistics of a train split are all a test split needs). Raises CacheFileError naming
    the file at fault."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheFileError(f"{path}: unreadable ({exc})") from None
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise CacheFileError(f"{path}: not a feature cache commit record (invalid JSON: {exc})") from None
    if not isinstance(record, dict) or record.get("format") != ENTRY_FORMAT:
        got = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise CacheFileError(f"{path}: not a feature cache commit record of format {ENTRY_FORMAT} (format {got!r})")
    if version is not None and record.get("version") != version:
        raise CacheFileError(f"{path}: features of version {record.get('version')!r}, expected {version}")
    if key is not None and record.get("key") != key:
        raise CacheFileError(f"{path}: records key {record.get('key')!r}, expected {key} (a foreign or renamed entry)")
    try:
        files = {}
        for a in ("x", "y"):
            name = record[a]["file"]
            if not isinstance(name, str) or "/" in name or name.startswith("."):
                raise ValueError(f"{a}.file {name!r}")
            files[a] = (path.parent / name, tuple(int(s) for s in record[a]["shape"]), np.dtype(record[a]["dtype"]))
        classes = tuple(str(c) for c in record["classes"])
        keys = None if record["keys"] is None else tuple(str(k) for k in record["keys"])
        meta = dict(record["meta"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CacheFileError(f"{path}: commit record incomplete or malformed ({exc})") from None
    (x_file, x_shape, x_dtype), (y_file, y_shape, y_dtype) = files["x"], files["y"]
    if x_dtype != np.float32 or y_dtype != np.int64 or y_shape != x_shape[:1]:
        raise CacheFileError(f"{path}: x {x_dtype} {x_shape}, y {y_dtype} {y_shape}; expected float32 x and int64 y "
                             "of the same length")
    if check:
        check_array(x_file, x_shape, x_dtype)
        check_array(y_file, y_shape, y_dtype)
    return Entry(path, record.get("key"), record.get("version"), x_file, x_shape, x_dtype, y_file, y_shape, classes, keys, meta)


def open_x(entry: Entry, mapped: bool) -> torch.Tensor:
    """The features as a tensor: read into memory, or memory-mapped copy-on-write (pages come from the page cache,
    shared by every process on the machine that maps the file; a stray in-place write would stay private)."""
    if mapped and entry.x_bytes > 0:
        return torch.from_numpy(np.load(entry.x_file, mmap_mode="c"))
    return torch.from_numpy(np.load(entry.x_file))


def open_y(entry: Entry) -> torch.Tensor:
    return torch.from_numpy(np.load(entry.y_file))


# -- mapped features travel as references -------------------------------------------------------------------------


@dataclass(frozen=True)
class MappedRef:
    """What a memory-mapped FeatureSet pickles as (to Ray's object store, to a trial): the entry's commit record
    and the array it expects there. A trial reopens the map from the path; the bytes never travel."""

    entry: str
    key: str | None
    version: int | None
    shape: tuple[int, ...]
    dtype: str

    def open(self) -> tuple[torch.Tensor, Entry]:
        path = Path(self.entry)
        try:
            entry = read_entry(path, key=self.key, version=self.version)
        except CacheFileError as exc:
            raise CacheFileError(f"{exc} (memory-mapped features handed to a trial on {socket.gethostname()})") from None
        if entry is None:
            raise CacheFileError(
                f"{path}: the memory-mapped features this trial was given are not on this machine "
                f"({socket.gethostname()}); on a cluster, data.cache_dir (or $BMA_CACHE_DIR) must be a path every "
                "node mounts (docs/cluster.md, 'Large feature pools')")
        if entry.x_shape != tuple(self.shape) or entry.x_dtype != np.dtype(self.dtype):
            raise CacheFileError(f"{entry.x_file}: holds {entry.x_dtype} {entry.x_shape}, but the trial was given "
                                 f"{np.dtype(self.dtype)} {tuple(self.shape)} (the entry changed under the study)")
        return open_x(entry, mapped=True), entry


__all__ = ["CacheFileError", "DEFAULT_IN_MEMORY_MAX_MB", "ENTRY_FORMAT", "Entry", "EntryWriter", "IN_MEMORY_MAX_MB_ENV",
           "MappedRef", "atomic_write_text", "check_array", "entry_lock", "in_memory_max_bytes", "open_x", "open_y",
           "read_entry", "remove_leftovers"]
