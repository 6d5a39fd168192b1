"""BLAS/LAPACK thread limits for the exact solvers.

Dense eigen-decompositions and products inside the exact solvers call BLAS,
whose default is one thread per core. On a machine that is busy with other work
that oversubscribes the cores and can make a solve many times slower, so the
solvers use exactly the threads they are given: ``n_jobs`` (default 1).
"""

from __future__ import annotations

import functools

from threadpoolctl import threadpool_limits

from . import _validate as v

_DOC = """
    n_jobs : int, keyword-only
        BLAS/LAPACK threads for this call (``-1``: every core). Default 1:
        on a busy machine more threads than free cores slow the solve down.
"""


def blas_threads(fn):
    """Run ``fn`` with at most ``n_jobs`` BLAS threads (a keyword argument it gains)."""

    @functools.wraps(fn)
    def wrapper(*args, n_jobs: int = 1, **kwargs):
        with threadpool_limits(limits=v.n_jobs(n_jobs)):
            return fn(*args, **kwargs)

    if wrapper.__doc__ and "    Returns" in wrapper.__doc__:
        wrapper.__doc__ = wrapper.__doc__.replace("\n    Returns", _DOC + "\n    Returns", 1)
    return wrapper
