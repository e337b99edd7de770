"""Open an existing MLflow store for reading only: the one owner of that rule for every read-only command (the
analysis CLIs through analysis/collect.py, study/reproduce.py).

MLflow opens a SQLite path read-write and creates what is missing: a missing file becomes a new store, a 0-byte
file is migrated into MLflow's full schema. A command that only reads must never do either, so a local SQLite store
is checked first (it exists, is a file, is not empty, is SQLite) and then opened through SQLite's read-only mode
(``sqlite:///file:PATH?mode=ro&uri=true``): any write MLflow might attempt fails instead of changing the file.
A tracking server (http, https, databricks) is its own guard and is passed through unchanged.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


class StoreError(Exception):
    """The store cannot be read as given; the message names the option (--tracking-uri) and what was expected."""

    exit_code = 2


def _sqlite_path(uri: str) -> str | None:
    """The file of a ``sqlite:///PATH`` URI (query dropped), None for any other URI."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if path.startswith("file:"):  # already in SQLite's URI form
        path = path[len("file:"):]
    return path


def read_only_uri(uri: str, option: str = "--tracking-uri") -> str:
    """``uri`` as a read-only store, after checking that it holds one; StoreError otherwise. Creates nothing."""
    path = _sqlite_path(uri)
    if path is None:
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file") and not os.path.isdir(parsed.path or uri):
            raise StoreError(f"{option} {uri}: no MLflow file store at {os.path.abspath(parsed.path or uri)} "
                             "(expected the folder of an existing store)")
        return uri
    shown = os.path.abspath(path) if path else "(empty path)"
    expected = "expected the study's existing mlflow.db: pass --tracking-uri, set MLFLOW_TRACKING_URI, or run " \
               "from the folder that holds it"
    if not path:
        raise StoreError(f"{option} {uri}: no file named; {expected}")
    if os.path.isdir(path):
        raise StoreError(f"{option} {uri}: {shown} is a folder; {expected}")
    if not os.path.isfile(path):
        raise StoreError(f"{option} {uri}: no MLflow store at {shown}; {expected}")
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"{option} {uri}: {shown} cannot be read ({exc.strerror or exc})") from None
    if not head:
        raise StoreError(f"{option} {uri}: {shown} is an empty file, not an MLflow store; {expected}")
    if head != SQLITE_HEADER:
        raise StoreError(f"{option} {uri}: {shown} is not an SQLite database (an MLflow store); {expected}")
    return f"sqlite:///file:{os.path.abspath(path)}?mode=ro&uri=true"


def open_read_only(uri: str, option: str = "--tracking-uri"):
    """An MlflowClient that reads the existing store ``uri`` and cannot write to it; StoreError when there is no
    such store or it cannot be read (one cheap query is made now, so a wrong store fails here, not mid-command)."""
    ro = read_only_uri(uri, option)
    import logging

    from mlflow import MlflowClient

    quiet = logging.getLogger("mlflow.store.db.utils")  # logs the refused write's traceback before raising it
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        client = MlflowClient(tracking_uri=ro)
        client.search_experiments(max_results=1)
    except Exception as exc:  # MlflowException, SQLAlchemy errors (a SQLite file without MLflow's tables), requests
        lines = str(exc).strip().splitlines()
        raise StoreError(f"{option} {uri}: cannot read it as an MLflow store ({type(exc).__name__}: "
                         f"{lines[0][:300] if lines else ''})") from None
    finally:
        quiet.setLevel(level)
    return client
