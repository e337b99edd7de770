"""Suite-wide fixtures: one feature cache per test session, and the mirror check the engine tests share."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

MIRROR_SKIP = "needs the MNIST/FSDD mirror at ../shared/data or $BMA_DATA_MIRROR"


def mirror_available() -> bool:
    from bma.data.errors import DataError
    from bma.data.mirror import mirror_root

    try:
        root = mirror_root()
    except DataError:
        return False
    return root is not None and (root / "MNIST" / "raw").is_dir() and (root / "fsdd" / "recordings").is_dir()


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory) -> Path:
    """A BMA_CACHE_DIR shared by the tests that run whole studies: MNIST+FSDD features are computed once."""
    if not mirror_available():
        pytest.skip(MIRROR_SKIP)
    return tmp_path_factory.mktemp("bma-cache")


@contextlib.contextmanager
def single_thread():
    """One intra-op thread for torch and BLAS while in-process trials run: on 2 shared, busy cores this is 5-20x
    faster than the default (Ray trials get the same from OMP_NUM_THREADS = their CPU count)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def silent_server():
    """A TCP server on 127.0.0.1 that accepts every connection and never answers (an MLflow server that hangs).
    Yields (url, accepted): ``accepted`` lists the connections it took, so a test can show the client really came."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    accepted: list = []
    stop = threading.Event()

    def accept_and_say_nothing():
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_say_nothing, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join(5)
        for connection in accepted:
            connection.close()
        server.close()


@pytest.fixture
def xdomain_sets_here(tmp_path, monkeypatch) -> Path:
    """A working folder that holds the cross-domain sets the shipped specs name (``eval.xdomain_*_root``, relative
    to the folder a study runs in, where study/tools/make_xdomain.py writes them): a spec checks its roots exist
    when it is loaded, so a test that loads every shipped spec runs from here. Empty class folders: loading a spec
    reads no file. The specs' other relative paths (``study/classmaps/...``) resolve as in the checkout, through a
    link."""
    import yaml

    repo = Path(__file__).resolve().parents[1]

    def roots(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key.startswith("xdomain_") and key.endswith("_root") and isinstance(value, str):
                    yield value
                else:
                    yield from roots(value)
        elif isinstance(node, list):
            for value in node:
                yield from roots(value)

    for spec in (repo / "study" / "specs").glob("*.yaml"):
        for root in roots(yaml.safe_load(spec.read_text())):
            if not Path(root).is_absolute():  # an absolute root is the user's own folder: never made here
                (tmp_path / root / "0").mkdir(parents=True, exist_ok=True)
    (tmp_path / "study").symlink_to(repo / "study", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path
