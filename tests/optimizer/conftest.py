"""Optimizer tests run BLAS single-threaded: the matrices are small, and on a shared
two-core machine threads only fight each other."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

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


@pytest.fixture
def calls_to(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any, str], list[int]]:
    """``calls_to(module, name)`` wraps ``module.name`` for the test and returns a list that
    grows by one entry per call (clear it to count afresh)."""

    def install(module: Any, name: str) -> list[int]:
        calls: list[int] = []
        real = getattr(module, name)

        def counting(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counting)
        return calls

    return install
