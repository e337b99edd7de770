"""Where a study's Tune results live, whatever ``--storage`` names: a folder, ``file:///PATH``, ``s3://BUCKET/PATH``
or ``gs://BUCKET/PATH``, reached through pyarrow's filesystems (the ones Ray Tune uses for ``storage_path``).

The driver keeps two things there besides Tune's own files: the spec's fingerprint (``bma_fingerprint.txt`` in the
study's folder: a resumed study whose spec changed is refused) and, with ``--fresh``, the earlier results moved
aside to ``NAME.old-YYYYmmdd-HHMMSS`` beside the study's folder.

An S3-compatible server (MinIO, Ceph, moto) is spelt in the URI itself, the same string for ``--storage`` and for
Tune's ``storage_path``: ``s3://BUCKET/PATH?endpoint_override=HOST:PORT&scheme=http`` (credentials from the usual
AWS environment variables or files). A study's folder keeps the query: ``s3://BUCKET/PATH/NAME?endpoint_override=...``
(``experiment_path``), which is also what ``Tuner.can_restore`` and ``Tuner.restore`` take.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

FINGERPRINT_FILE = "bma_fingerprint.txt"

EXPECTED = ("expected a folder, file:///PATH, s3://BUCKET/PATH or gs://BUCKET/PATH (an S3-compatible server: "
            "s3://BUCKET/PATH?endpoint_override=HOST:PORT&scheme=http)")


class StorageError(Exception):
    """The results' storage cannot be opened, read or written; the message names ``--storage`` and what to do."""


def is_uri(storage: str) -> bool:
    """Whether ``storage`` is a URI (the driver's own rule: it holds ``://``) rather than a local folder."""
    return "://" in storage


def shown(storage: str) -> str:
    """``storage`` as it may be printed: the secret key of ``s3://KEY:SECRET@BUCKET/...`` (pyarrow takes
    credentials there) masked."""
    if not is_uri(storage):
        return storage
    parts = urlsplit(storage)
    user, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in user:
        return storage
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}"))


def experiment_path(storage: str, name: str) -> str:
    """The study's folder as a path or URI: ``Path(storage) / name`` for a folder, else the URI with ``name``
    appended to its path and its query kept (what ``Tuner.can_restore``/``Tuner.restore`` take; Ray's own URI
    joining does the same). Not masked: pass it through ``shown`` before printing."""
    if not is_uri(storage):
        return str(Path(storage) / name)
    parts = urlsplit(storage)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{name}"))


@functools.lru_cache(maxsize=16)
def _open_uri(storage: str):
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(storage)
    except (ValueError, OSError, TypeError) as exc:  # ArrowInvalid is a ValueError; a missing library an OSError
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        if urlsplit(storage).scheme.lower() == "s3" and "region" in why.lower():
            hint = " (name the bucket's region: ?region=REGION, or its server: ?endpoint_override=HOST:PORT)"
        raise StorageError(f"--storage {shown(storage)}: cannot open it ({why}){hint}; {EXPECTED}") from None


def filesystem(storage: str):
    """(pyarrow FileSystem, path on it) of ``storage`` itself. Raises StorageError naming ``--storage`` when the
    URI cannot be opened (an unknown scheme, a malformed S3 query, an S3 bucket whose region cannot be found)."""
    if not is_uri(storage):
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem(), os.path.abspath(storage)
    fs, path = _open_uri(storage)  # cached: an S3 URI without region asks the bucket each time it is opened
    return fs, path


def study_location(storage: str, name: str):
    """(pyarrow FileSystem, path on it) of the study ``name``'s folder under ``storage``; StorageError as
    ``filesystem``."""
    fs, base = filesystem(storage)
    base = base.rstrip("/")
    return fs, f"{base}/{name}" if base or fs.type_name == "local" else name


def _is_local(fs) -> bool:
    return fs.type_name == "local"


def _why(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def storage_problem(storage: str) -> str | None:
    """Why the results cannot go to ``storage``, found in seconds before anything starts, or None: a URI that
    cannot be opened, an object store that does not answer, or its bucket missing. (A local folder's writability:
    run.py's ``unwritable``; this says nothing about local folders.)"""
    if not is_uri(storage):
        return None
    try:
        fs, path = filesystem(storage)
    except StorageError as exc:
        return str(exc)
    if fs.type_name not in ("s3", "gcs"):
        return None
    bucket = path.strip("/").split("/", 1)[0]
    if not bucket:
        return f"--storage {shown(storage)}: no bucket named; {EXPECTED}"
    import pyarrow.fs

    try:
        info = fs.get_file_info(bucket)
    except OSError as exc:
        return f"--storage {shown(storage)}: cannot reach the store ({_why(exc)})"
    if info.type == pyarrow.fs.FileType.NotFound:
        return f"--storage {shown(storage)}: no bucket {bucket!r} there; create it, or name another bucket"
    return None


def exists(storage: str, name: str) -> bool:
    """Whether the study ``name`` has a folder (or anything) under ``storage``; StorageError when the store
    cannot be opened or asked."""
    import pyarrow.fs

    fs, path = study_location(storage, name)
    try:
        return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound
    except OSError as exc:
        raise StorageError(f"--storage {shown(storage)}: cannot look for {shown(experiment_path(storage, name))} "
                           f"({_why(exc)})") from None


def _fingerprint_shown(storage: str, name: str) -> str:
    return shown(experiment_path(experiment_path(storage, name), FINGERPRINT_FILE))


def saved_fingerprint(storage: str, name: str) -> str | None:
    """The fingerprint saved in the study's folder (stripped; undecodable bytes replaced), or None when there is
    no such file (no folder, or a new study). StorageError when the store cannot be opened or read."""
    import pyarrow.fs

    fs, path = study_location(storage, name)
    target = f"{path}/{FINGERPRINT_FILE}"
    try:
        if fs.get_file_info(target).type != pyarrow.fs.FileType.File:
            return None
        with fs.open_input_stream(target) as f:
            data = f.read()
    except OSError as exc:
        raise StorageError(f"--storage {shown(storage)}: cannot read {_fingerprint_shown(storage, name)} "
                           f"({_why(exc)})") from None
    return data.decode("utf-8", errors="replace").strip()


def write_fingerprint(storage: str, name: str, fingerprint: str) -> None:
    """Save ``fingerprint`` in the study's folder (created if need be). On a local filesystem a temporary file is
    written beside it and renamed over it (atomic); on an object store a single upload is atomic already.
    StorageError when it cannot be written."""
    fs, path = study_location(storage, name)
    target = f"{path}/{FINGERPRINT_FILE}"
    try:
        if _is_local(fs):
            fs.create_dir(path, recursive=True)
            temp = f"{path}/.{FINGERPRINT_FILE}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                with fs.open_output_stream(temp) as f:
                    f.write(fingerprint.encode())
                fs.move(temp, target)
            except BaseException:
                try:
                    fs.delete_file(temp)
                except OSError:
                    pass
                raise
        else:
            with fs.open_output_stream(target) as f:
                f.write(fingerprint.encode())
    except OSError as exc:
        raise StorageError(f"--storage {shown(storage)}: cannot write {_fingerprint_shown(storage, name)} "
                           f"({_why(exc)})") from None


def _stamp() -> str:
    """The local time of a setting aside, to the second (the suffix of ``NAME.old-...``)."""
    return time.strftime("%Y%m%d-%H%M%S")


def _aside_name(fs, path: str, name: str) -> str:
    """``NAME.old-YYYYmmdd-HHMMSS``, with ``-2``, ``-3``... when a study was set aside in the same second."""
    import pyarrow.fs

    stem = f"{name}.old-{_stamp()}"
    parent = path[: -len(name)]
    candidate, n = stem, 1
    while fs.get_file_info(parent + candidate).type != pyarrow.fs.FileType.NotFound:
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def saved_state_exists(storage: str, name: str) -> bool:
    """Whether Tune results of experiment ``name`` exist under ``storage`` (a folder or any URI)."""
    import pyarrow.fs

    try:
        fs, path = study_location(storage, name)
        return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound
    except (StorageError, OSError):
        return False


def set_aside(storage: str, name: str, say=print) -> str | None:
    """--fresh: move the study's earlier results to ``NAME.old-YYYYmmdd-HHMMSS`` beside its folder and ``say``
    where; the problem (a line starting ``--fresh:``), or None (also when there was nothing to move). Locally a
    rename (shutil.move); on an object store a copy of every file and then the delete of the original (the original
    is deleted only once all of it was copied)."""
    import pyarrow.fs

    here = experiment_path(storage, name)
    try:
        fs, path = study_location(storage, name)
        kind = fs.get_file_info(path).type
        if kind == pyarrow.fs.FileType.NotFound:
            return None
        aside_name = _aside_name(fs, path, name)
    except StorageError as exc:
        return f"--fresh: {exc}"
    except OSError as exc:
        return f"--fresh: cannot move {shown(here)} aside ({_why(exc)})"
    aside_path = path[: -len(name)] + aside_name
    aside = str(Path(here).with_name(aside_name)) if not is_uri(storage) else experiment_path(storage, aside_name)
    if _is_local(fs):
        try:
            shutil.move(path, aside_path)
        except OSError as exc:
            return f"--fresh: cannot move {shown(here)} aside ({_why(exc)})"
    else:
        try:
            if kind == pyarrow.fs.FileType.Directory:
                pyarrow.fs.copy_files(path, aside_path, source_filesystem=fs, destination_filesystem=fs)
            else:
                fs.copy_file(path, aside_path)
        except OSError as exc:
            try:  # leave no half copy behind; the original is untouched
                if kind == pyarrow.fs.FileType.Directory:
                    fs.delete_dir(aside_path)
                else:
                    fs.delete_file(aside_path)
            except OSError:
                pass
            return f"--fresh: cannot move {shown(here)} aside ({_why(exc)})"
        try:
            if kind == pyarrow.fs.FileType.Directory:
                fs.delete_dir(path)
            else:
                fs.delete_file(path)
        except OSError as exc:
            return (f"--fresh: copied {shown(here)} to {shown(aside)} but cannot delete it ({_why(exc)}); delete "
                    "it, or rename the study")
    say(f"--fresh: earlier results moved to {shown(aside)}")
    return None
