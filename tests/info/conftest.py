"""Session settings for the information tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _single_threaded_blas():
    # the estimators' matrices are small: on two shared cores multi-threaded BLAS is ~10x slower, not faster
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
