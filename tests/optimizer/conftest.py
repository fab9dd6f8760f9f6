"""Optimizer tests run BLAS single-threaded: the matrices are small, and on a shared
two-core machine threads only fight each other."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _single_threaded_blas() -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn (the bench extra)
        yield
        return
    with threadpool_limits(limits=1):
        yield
