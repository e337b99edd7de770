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
    """A working folder that holds study/specs/xdomain.yaml's cross-domain sets (``out/xdomain/...``, which
    study/tools/make_xdomain.py writes where a study runs): the spec checks its roots exist when it is loaded, so a
    test that loads every shipped spec runs from here. Empty class folders: loading the spec reads no file. The
    other relative paths of the shipped specs (``study/classmaps/...``) resolve as in the checkout, through a link."""
    from study.tools.make_xdomain import IMAGE_SET, SOUND_SET

    for name in (IMAGE_SET, SOUND_SET):
        (tmp_path / "out" / "xdomain" / name / "0").mkdir(parents=True)
    (tmp_path / "study").symlink_to(Path(__file__).resolve().parents[1] / "study", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path
