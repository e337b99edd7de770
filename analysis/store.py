"""The MLflow store as every layer reaches it: opening an existing store for reading only, retrying a locked store,
probing a tracking server. It sits at the analysis layer so that the analysis, the trainables and the driver all
import it downwards (tests/test_layers.py).

Reading only: the one owner of that rule for every read-only command (the analysis CLIs through
analysis/collect.py, study/reproduce.py).

MLflow opens a SQLite path read-write and creates what is missing: a missing file becomes a new store, a 0-byte
file is migrated into MLflow's full schema. A command that only reads must never do either, so a local SQLite store
is checked first (it exists, is a file, is not empty, is SQLite) and then opened through SQLite's read-only mode
(``sqlite:///file:PATH?mode=ro&uri=true``): any write MLflow might attempt fails instead of changing the file.
A tracking server (http, https, databricks) is its own guard and is passed through unchanged.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, TypeVar
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


# -- every MLflow reader's and writer's helpers: retrying a locked store, probing a server ---------------------------

T = TypeVar("T")


def retry(call: Callable[[], T], attempts: int = 8, what: str = "MLflow call") -> T:
    """SQLite stores refuse concurrent writers with 'database is locked': back off and retry; servers blip too.

    A request to a tracking server is not retried here: MLflow's REST client has already retried it with its own
    backoff (MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7, each attempt up to MLFLOW_HTTP_REQUEST_TIMEOUT s), and
    retrying on top multiplied that into more than 10 silent minutes for a server that is not there."""
    delay = 0.2
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:  # MlflowException, sqlalchemy OperationalError, requests errors
            text = str(exc).lower()
            transient = any(s in text for s in ("locked", "busy", "timed out", "connection", "temporarily", "503", "502"))
            if "api request to" in text:  # MLflow's REST layer: its retries are spent
                transient = False
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


# A reachability probe of a tracking server: at most one retry and 10 s per attempt (smaller values the user set in
# these variables win). MLflow's defaults (7 retries of up to 120 s, exponential backoff) keep a command silent for
# many minutes before it says the server is not there; trials keep them, so a server that blips mid-study is waited
# for.
PROBE_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": 1, "MLFLOW_HTTP_REQUEST_TIMEOUT": 10}


def server_problem(uri: str) -> str | None:
    """Why the tracking server at ``uri`` (http/https) cannot be used, in one line, or None: one cheap request
    (search one experiment) under PROBE_LIMITS."""
    saved = {k: os.environ.get(k) for k in (*PROBE_LIMITS, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                                            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER")}
    limits = {}
    for key, cap in PROBE_LIMITS.items():
        try:
            limits[key] = max(0, min(cap, int(saved[key]))) if saved[key] else cap
        except ValueError:
            limits[key] = cap
    limits["MLFLOW_HTTP_REQUEST_TIMEOUT"] = max(1, limits["MLFLOW_HTTP_REQUEST_TIMEOUT"])
    os.environ.update({k: str(v) for k, v in limits.items()})
    os.environ.update({"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"})
    retries_log = logging.getLogger("urllib3.connectionpool")
    level = retries_log.level
    retries_log.setLevel(logging.ERROR)  # "Retrying (Retry(total=0 ...": the one-line answer below says it
    try:
        _client(uri).search_experiments(max_results=1)
    except Exception as exc:  # MlflowException wrapping requests' errors, an HTTP error status
        text = str(exc)
        attempts = limits["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] + 1
        if "refused" in text.lower():
            why = "connection refused: no server listens there"
        elif "timed out" in text.lower() or "timeout" in text.lower():
            why = f"no answer within {limits['MLFLOW_HTTP_REQUEST_TIMEOUT']} s" + \
                (f" ({attempts} attempts)" if attempts > 1 else "")
        else:
            lines = text.strip().splitlines()
            why = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
        return (f"--tracking-uri {uri}: the MLflow tracking server cannot be used ({why}); start it "
                "(e.g. cluster/start_mlflow.sh) or pass another --tracking-uri")
    finally:
        retries_log.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return None




def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)
