"""Where data is looked for (the local mirror), where downloads and caches go, and how files are fetched.

- The *mirror* is a read-only folder holding the official published layouts (``MNIST/raw/*.gz``,
  ``fsdd/recordings/*.wav``, ...): ``$BMA_DATA_MIRROR`` when set, else ``<repo>/../shared/data`` when it exists.
  Nothing is ever written into it.
- The *cache root* (``cache_dir``, else ``$BMA_CACHE_DIR``, else ``~/.cache/bma-study``) holds downloads and
  extractions under ``datasets/`` and computed features under ``features/``.
- Downloads go to ``<cache root>/datasets`` from the official sources, are md5-checked where the source publishes
  a checksum, and land atomically (a temporary file or folder in the same directory, then ``os.replace``).
  ``$BMA_OFFLINE=1`` forbids every download attempt.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from bma.data.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[2]  # the folder holding pyproject.toml
DEFAULT_MIRROR = REPO_ROOT.parent / "shared" / "data"
DEFAULT_CACHE = Path("~/.cache/bma-study")


def mirror_root() -> Path | None:
    """The local read-only data mirror: ``$BMA_DATA_MIRROR`` (must exist), else ``<repo>/../shared/data``, else None."""
    env = os.environ.get("BMA_DATA_MIRROR")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(f"$BMA_DATA_MIRROR={env}: folder does not exist (expected a data mirror folder "
                            f"holding e.g. MNIST/raw/ and fsdd/recordings/); unset it to use {DEFAULT_MIRROR}")
        return path.resolve()
    if DEFAULT_MIRROR.is_dir():
        return DEFAULT_MIRROR.resolve()
    return None


def cache_root(cache_dir: str | os.PathLike | None, *, create: bool = True) -> Path:
    """``cache_dir``, else ``$BMA_CACHE_DIR``, else ``~/.cache/bma-study``; created if missing (unless create=False)."""
    if cache_dir is not None and str(cache_dir) != "":
        path = Path(cache_dir)
    elif os.environ.get("BMA_CACHE_DIR"):
        path = Path(os.environ["BMA_CACHE_DIR"])
    else:
        path = DEFAULT_CACHE
    path = path.expanduser()
    if not create:
        return path.resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cache folder {path}: cannot be created ({exc}); set data.cache_dir or $BMA_CACHE_DIR "
                        "to a writable folder") from None
    return path.resolve()


def data_root(cache_dir: str | os.PathLike | None, *, create: bool = True) -> Path:
    """``<cache root>/datasets``: where downloads and extractions go (never the mirror). Created unless create=False."""
    path = cache_root(cache_dir, create=create) / "datasets"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def offline() -> bool:
    """True when ``$BMA_OFFLINE`` is set to a true value: no download is attempted."""
    return os.environ.get("BMA_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# -- fetching ----------------------------------------------------------------------------------------------------


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically, checking ``md5`` when given.

    Raises ``OSError`` (``urllib.error.URLError`` when offline) on network failure and ``DataError`` on a
    checksum mismatch. Tests replace this function to simulate the network.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "bma-study"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        if md5 is not None:
            got = md5sum(tmp)
            if got != md5:
                raise DataError(f"{url}: downloaded file has md5 {got}, expected {md5} (corrupt or changed upstream)")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def download_files(files: list[tuple[str, str, str | None]], target: Path) -> Path:
    """Fetch ``(urls..., filename, md5)`` entries into ``target``; each entry tries its URLs in order.

    ``files`` items are ``(url_or_urls, filename, md5)``; url may be a ``|``-separated list of mirrors.
    Returns ``target``. Raises DataError naming every URL that failed.
    """
    target.mkdir(parents=True, exist_ok=True)
    for urls, filename, md5 in files:
        dest = target / filename
        if dest.is_file() and (md5 is None or md5sum(dest) == md5):
            continue
        errors = []
        for url in urls.split("|"):
            try:
                fetch(url, dest, md5)
                break
            except (OSError, DataError) as exc:
                errors.append(f"{url}: {exc}")
        else:
            raise DataError("download failed:\n    " + "\n    ".join(errors))
    return target


def download_archive(url: str, target: Path, inner: str | None = None, md5: str | None = None) -> Path:
    """Fetch a zip archive whose members sit under one top folder, and install ``<top>/<inner>`` as ``target``.

    Only members under ``<top>/<inner>/`` are extracted. Extraction happens in a temporary sibling folder that is
    renamed to ``target`` at the end, so an interrupted download never leaves a half-filled ``target``; if
    ``target`` appears meanwhile (another process finished first), that one is kept.
    """
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        archive = work / "archive.zip"
        try:
            fetch(url, archive, md5)
        except OSError as exc:
            raise DataError(f"{url}: {exc}") from None
        extracted = (work / "extracted").resolve()
        try:
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
                tops = {n.split("/", 1)[0] for n in names if n.strip("/")}
                if len(tops) != 1:
                    raise DataError(f"{url}: expected one top folder in the archive, found {sorted(tops)[:5]}")
                top = tops.pop()
                prefix = f"{top}/{inner.strip('/')}/" if inner else f"{top}/"
                chosen = [n for n in names if n.startswith(prefix)]
                if not chosen:
                    raise DataError(f"{url}: the archive has no folder {prefix!r}")
                for name in chosen:
                    if not str((extracted / name).resolve()).startswith(str(extracted)):
                        raise DataError(f"{url}: archive member {name!r} escapes the extraction folder")
                zf.extractall(extracted, chosen)
        except zipfile.BadZipFile:
            raise DataError(f"{url}: the downloaded file is not a zip archive") from None
        archive.unlink()
        try:
            os.replace(extracted / prefix.rstrip("/"), target)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


__all__ = ["cache_root", "data_root", "download_archive", "download_files", "fetch", "mirror_root", "offline"]
