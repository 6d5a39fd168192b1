"""BLAS/LAPACK thread limits for the exact solvers.

Dense eigen-decompositions and products inside the exact solvers call BLAS,
whose default is one thread per core. On a machine that is busy with other work
that oversubscribes the cores and can make a solve many times slower, so the
solvers use exactly the threads they are given: ``n_jobs`` (default 1).
"""

from __future__ import annotations

import contextvars
import functools

from threadpoolctl import threadpool_limits

from . import _validate as v

_DOC = """
    n_jobs : int, keyword-only
        Threads for this call (``-1``: every core): BLAS/LAPACK threads, and
        the threads of the matrix-free block generator (blocks are shared
        out between them, which leaves results bit for bit unchanged; more
        BLAS threads can change the last bits). Default 1:
        on a busy machine more threads than free cores slow the solve down.
"""

_THREADS = contextvars.ContextVar("thermospin_mc_threads", default=1)


def current() -> int:
    """Threads granted to the exact solver running in this context (1 outside one)."""
    return _THREADS.get()


def blas_threads(fn):
    """Run ``fn`` with at most ``n_jobs`` BLAS threads (a keyword argument it gains)."""

    @functools.wraps(fn)
    def wrapper(*args, n_jobs: int = 1, **kwargs):
        n = v.n_jobs(n_jobs)
        token = _THREADS.set(n)
        try:
            with threadpool_limits(limits=n):
                return fn(*args, **kwargs)
        finally:
            _THREADS.reset(token)

    if wrapper.__doc__ and "    Returns" in wrapper.__doc__:
        wrapper.__doc__ = wrapper.__doc__.replace("\n    Returns", _DOC + "\n    Returns", 1)
    return wrapper
