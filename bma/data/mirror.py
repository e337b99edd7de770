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
import http.client
import os
import shutil
import tempfile
import urllib.error
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

CHUNK = 1 << 20


def md5sum(path: Path, chunk: int = CHUNK) -> str:
    return checksums(path, chunk)["md5"]


def checksums(path: Path, chunk: int = CHUNK) -> dict[str, str]:
    """{"md5": ..., "sha256": ...} of a file, in one pass."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            md5.update(block)
            sha.update(block)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def _progress(name: str, total: int | None, initial: int):
    """A byte progress bar on stderr (tqdm; silent when stderr is not a terminal, e.g. a Ray worker's log)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                disable=None, leave=False)


def fetch(url: str, dest: Path, md5: str | None = None, timeout: float = 60.0, *, sha256: str | None = None) -> Path:
    """Download ``url`` to ``dest``: resumable, checksum-verified, atomic.

    Bytes go to ``<dest>.part`` (held under an exclusive lock, so two processes never write one file); a ``.part``
    left by an interrupted download is resumed with an HTTP ``Range`` request (a server that ignores Range sends the
    whole file, which then replaces the part). When the transfer is complete the file is checked against ``md5``
    and/or ``sha256`` (when given); a mismatch deletes the part (the next attempt starts afresh) and raises
    ``DataError`` naming the URL and both digests. Only a verified file is renamed to ``dest``. A progress bar
    (tqdm) shows on a terminal. Network failures raise ``OSError`` (``urllib.error.URLError`` when offline) and
    keep the part for the next attempt. Tests replace this function to simulate the network.
    """
    import fcntl

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with open(part, "ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process downloading the same file finishes first
        if dest.is_file() and not part.exists():
            return dest  # it finished while we waited (and renamed its part away)
        try:
            return _fetch_locked(url, dest, part, md5, sha256, timeout)
        finally:
            if part.exists() and part.stat().st_size == 0:
                part.unlink()  # nothing to resume


def _fetch_locked(url: str, dest: Path, part: Path, md5: str | None, sha256: str | None, timeout: float) -> Path:
    """``fetch`` with the part's lock held: resume or restart, verify, rename."""

    for attempt in range(2):
        offset = part.stat().st_size
        headers = {"User-Agent": "bma-study"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code != 416 or not offset:
                raise
            response = None  # Range not satisfiable: the part already holds the whole file
        if response is not None:
            with response:
                resumed = offset and response.status == 206
                if offset and not resumed:
                    offset = 0  # the server sent the whole file: start the part again
                answered = (response.headers.get("Content-Range") or "").removeprefix("bytes ").split("-")[0]
                if resumed and answered.isdigit() and int(answered) != offset:
                    os.truncate(part, 0)
                    raise OSError(f"{url}: asked for bytes from {offset:,}, the server sent them from "
                                  f"{int(answered):,}; the part was discarded, run again to download afresh")
                length = response.headers.get("Content-Length")
                total = offset + int(length) if length and length.isdigit() else None
                with open(part, "r+b" if resumed else "wb") as out, _progress(dest.name, total, offset) as bar:
                    out.seek(offset)
                    out.truncate()
                    try:
                        while block := response.read(CHUNK):
                            out.write(block)
                            bar.update(len(block))
                    except http.client.HTTPException as exc:  # IncompleteRead: the connection dropped mid-file
                        raise OSError(f"{url}: transfer interrupted ({type(exc).__name__}); the part {part} "
                                      "is kept; run again to resume") from None
                if total is not None and part.stat().st_size < total:
                    raise OSError(f"{url}: connection closed after {part.stat().st_size:,} of {total:,} bytes "
                                  f"(the part {part} is kept; run again to resume)")
        got = checksums(part) if (md5 or sha256) else {}
        bad = [(kind, got[kind], want) for kind, want in (("md5", md5), ("sha256", sha256))
               if want is not None and got[kind] != want.lower()]
        if not bad:
            os.replace(part, dest)
            return dest
        if response is None and attempt == 0:
            os.truncate(part, 0)  # a stale complete part that fails the check: download once more from the start
            continue
        part.unlink()
        kind, have, want = bad[0]
        raise DataError(f"{url}: downloaded file has {kind} {have}, expected {want} (corrupt, or changed "
                        "upstream); the partial file was deleted, so the next attempt starts afresh")
    raise AssertionError("unreachable")


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


def download_archive(url: str, target: Path, inner: str | None = None, md5: str | None = None, *,
                     sha256: str | None = None, filename: str | None = None) -> Path:
    """Fetch a zip or tar(.gz) archive whose members sit under one top folder, and install ``<top>/<inner>`` (or
    ``<top>`` itself) as ``target``.

    The archive is fetched (resumable, checksum-verified: ``fetch``) to ``<target's folder>/.downloads/<filename>``
    (default: the URL's last part), where an interrupted download resumes, and deleted once installed. Only members
    under ``<top>/<inner>/`` are extracted, into a temporary sibling folder renamed to ``target`` at the end, so an
    interrupted download or extraction never leaves a half-filled ``target``; if ``target`` appears meanwhile
    (another process finished first), that one is kept.
    """
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    archive = target.parent / ".downloads" / (filename or url.rstrip("/").rsplit("/", 1)[-1])
    archive.parent.mkdir(exist_ok=True)
    try:
        fetch(url, archive, md5, sha256=sha256)
    except OSError as exc:
        raise DataError(f"{url}: {exc}") from None
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".extract", dir=target.parent))
    try:
        extracted = (work / "extracted").resolve()
        prefix = _extract(url, archive, extracted, inner)
        try:
            os.replace(extracted / prefix.rstrip("/"), target)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    archive.unlink(missing_ok=True)
    try:
        archive.parent.rmdir()
    except OSError:
        pass  # another download is in progress there
    return target


def _extract(url: str, archive: Path, into: Path, inner: str | None) -> str:
    """Extract the members under ``<top>/<inner>/`` of a zip or tar archive into ``into``; returns that prefix."""
    import tarfile

    def choose(names: list[str]) -> tuple[str, list[str]]:
        tops = {n.split("/", 1)[0] for n in names if n.strip("/") and n != "."}
        if len(tops) != 1:
            raise DataError(f"{url}: expected one top folder in the archive, found {sorted(tops)[:5]}")
        top = tops.pop()
        prefix = f"{top}/{inner.strip('/')}/" if inner else f"{top}/"
        chosen = [n for n in names if n.startswith(prefix) or n == prefix.rstrip("/")]
        if not chosen:
            raise DataError(f"{url}: the archive has no folder {prefix!r}")
        for name in chosen:
            if not str((into / name).resolve()).startswith(str(into)):
                raise DataError(f"{url}: archive member {name!r} escapes the extraction folder")
        return prefix, chosen

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            prefix, chosen = choose(zf.namelist())
            zf.extractall(into, chosen)
        return prefix
    try:
        with tarfile.open(archive) as tf:
            members = {m.name.removeprefix("./"): m for m in tf.getmembers()}
            prefix, chosen = choose(list(members))
            tf.extractall(into, [members[n] for n in chosen], filter="data")
        return prefix
    except tarfile.TarError:
        raise DataError(f"{url}: the downloaded file is neither a zip nor a tar archive") from None


__all__ = ["cache_root", "checksums", "data_root", "download_archive", "download_files", "fetch", "mirror_root",
           "offline"]
