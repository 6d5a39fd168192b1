"""Shared test fixtures."""

from __future__ import annotations

import pytest

try:  # one BLAS thread: dense LAPACK on a shared, loaded machine is otherwise erratic
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - optional
    threadpool_limits = None


@pytest.fixture
def one_blas_thread():
    """Dense linear algebra (ours and QuTiP's) on one BLAS thread for the test."""
    if threadpool_limits is None:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
