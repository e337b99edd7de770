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
