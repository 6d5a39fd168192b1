"""Steady-state spectra of two-time correlations by the resolvent (docs/model.md 13).

QuTiP's ``spectrum()`` convention: ``S(omega) = 2 Re int_0^inf
exp(-i omega tau) [<A(tau) B(0)>_ss - <A>_ss <B>_ss] dtau = 2 Re Tr[A (i omega
- L)^-1 r]``, ``r = B rho_ss - <B>_ss rho_ss``, exactly: on trace-free
operators every mode decays and the integral is the resolvent (subtracting
``<B> rho_ss`` removes the steady mode; offsets +-1 have none and ``<A> <B> =
0``). Up to ``DIRECT_LIMIT`` stored numbers one sparse LU per ``omega``.
Above it every frequency's solution ``y`` has the true residual ``||r - (i
omega - L) y|| <= SPECTRUM_TOL ||r||`` (1e-9), reached in two stages that
share the work between frequencies (:func:`_spectrum_reduced`):

1. Chebyshev head (when there are many frequencies: ``HEAD_MATVECS`` products
   per frequency, at least ``HEAD_MIN_MATVECS``; :func:`chebyshev_head`):
   ``x(t) = exp(L t) r`` on ``[0, T]`` by the Chebyshev series; its moments
   give ``a.x(t)`` at Gauss-Legendre nodes, so ``int_0^T exp(-i omega t)
   a.x(t) dt`` for every ``omega`` at no extra product. The truncated
   integral ``y_T`` obeys ``(i omega - L) y_T = r - exp(-i omega T) x(T)``
   exactly: the head leaves one residual vector ``x(T)`` for all
   frequencies, and takes out the fast-decaying bulk of the modes, which is
   what makes a reduced model of the whole resolvent large (measured at
   N = 9, ``z6, z6``: over 100 basis vectors for a residual of 1e-8 without
   head, 10 after ``T = 40``).
2. Reduced model of the tail ``(i omega - L)^-1 x(T)``
   (:class:`ReducedResolvent`): in a subspace ``V`` (``x(T)``, then exact
   solutions) the minimal-residual solution of every frequency and its true
   residual, from coordinates in an orthonormal basis of ``span{V, L V}``;
   each round the ``PICKS`` = 2 frequencies of largest residual are solved
   exactly, warm-started from the reduced solution (flexible GMRES,
   right-preconditioned by the block-triangular sweep of
   :class:`ShiftedSolver` in single precision; Arnoldi vectors, products with
   ``L`` and residuals in double, so the stated residual is the true one) and
   added, until every frequency meets the tolerance. Every round settles a
   frequency, so the loop ends; a full basis (``GMRES_BASIS_BYTES``) leaves
   the rest to one solve each. On square blocks every vector is kept trace
   free (the steady mode is out: no border is needed, at ``omega = 0`` too).
   A solve that does not converge raises ``RuntimeError`` (one line).

The rounds have a fixed size and the head's row ranges are fixed: threads
only share them out, results do not depend on ``n_jobs``. Measured on the
paper's pump + loss chain, 121 frequencies in ``[-6, 6]``, ``n_jobs = 1``, on
a shared 2-core machine (load 3-5; ``scripts/bench_spectrum.py``): the
per-frequency GMRES before took 16-18 iterations of a 0.2 s sweep at N = 11,
3.8-4.6 s per frequency (460-560 s for the grid; 0.1 s and 12-15 s at
N = 9); now N = 11 takes 44 s (``+6, -6``) and 51 s (``z6, z6``): steady
state and set-up 8 s, a head of ``T = 53-60`` (1300-1500 products of
20 ms), 10-12 exact solves of 5 iterations (fp32 sweep 0.1 s); N = 9 takes
3-5 s (the head alone meets the tolerance). The results are within 1.1e-10
(N = 11) and 8e-10 (N = 9) of the per-frequency GMRES, relative to
``max |S|``. ``n_jobs = 2`` cuts the head's product from 19 to 11.5 ms on
two free cores and solves a round's two frequencies at once; on the loaded
machine it was not faster.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from threadpoolctl import threadpool_limits

from .. import _threads
from .. import _validate as v
from .._threads import blas_threads
from ..physics.model import ChainModel
from .blocks import check_model
from .chebyshev_steps import BlockGenerator
from .reduced_resolvent import ReducedResolvent, thread_map
from .regression import RegressionSystem, pair_operators, state_blocks
from .shifted_solver import ShiftedSolver
from .spectrum_head import chebyshev_head

__all__ = ["spectrum", "DIRECT_LIMIT", "SPECTRUM_TOL", "HEAD_MATVECS", "HEAD_MIN_MATVECS"]

#: Up to this many stored numbers the spectrum's shifted systems are solved by a
#: sparse LU per frequency, above it by preconditioned GMRES (a measured crossover).
DIRECT_LIMIT = 1_000

#: Relative residual every frequency of :func:`spectrum` meets above ``DIRECT_LIMIT``:
#: ``||r - (i omega - L) y|| <= SPECTRUM_TOL ||r||`` (``r = B rho_ss - <B> rho_ss``).
SPECTRUM_TOL = 1e-9

#: Matrix-vector products per frequency the Chebyshev head may spend (it runs only
#: when that allows ``HEAD_MIN_MATVECS``).
HEAD_MATVECS = 12
HEAD_MIN_MATVECS = 400


@blas_threads
def spectrum(model: ChainModel, omegas, A, B, *, _stats: dict | None = None) -> np.ndarray:
    """Steady-state spectrum of ``<A(tau) B(0)>`` in QuTiP's ``spectrum()`` convention.

    ``S(omega) = 2 Re int_0^inf exp(-i omega tau) [<A(tau) B(0)>_ss - <A>_ss <B>_ss]
    dtau`` (docs/model.md 13), exactly: ``2 Re Tr[A (i omega - L)^-1 r]``, ``r = B rho_ss -
    <B>_ss rho_ss``, on the blocks of ``B rho_ss``. As ``qutip.spectrum(H, omegas,
    c_ops, A, B)`` (``A`` at time ``tau``). Up to ``DIRECT_LIMIT`` stored numbers one
    sparse LU per frequency; above it every frequency's solution has a true
    residual ``||r - (i omega - L) y|| <= SPECTRUM_TOL ||r||`` (module docstring:
    a Chebyshev head in time, then a reduced model of the rest checked per
    frequency, with exact solves at the frequencies it does not yet meet).

    Parameters
    ----------
    model : ChainModel
        Needs a unique steady state.
    omegas : array_like
        Real angular frequencies (1-d, any order, repeats allowed).
    A, B : Operator or str
        As in :func:`correlation`.
    _stats : dict, optional
        Private (benchmarks): receives what the iterative path did (``T``,
        ``matvecs``, ``tail``, ``solves``, ``basis``; :func:`_spectrum_reduced`).

    Returns
    -------
    numpy.ndarray
        Real, one value per frequency.

    Raises
    ------
    ValueError
        One line naming ``A``/``B``, ``omegas`` or the model (no unique steady state).
    RuntimeError
        One line, if an iterative solve does not converge.
    """
    model = check_model(model)
    omegas = v.real_array("omegas", np.atleast_1d(omegas))
    A, B = pair_operators(model, A, B)
    rho = state_blocks(model, None)
    sysm = RegressionSystem(model, A, B, rho)
    lay = sysm.layout
    if lay.size == 0 or omegas.size == 0:
        return np.zeros(omegas.size)
    rhs = sysm.x0.copy()
    border = lay.shift == 0
    trace = rho_x = None
    if border:
        # subtract <B> rho_ss: the trace-free part has no steady mode
        rho_x = np.zeros(lay.size, dtype=complex)
        for m in lay.sectors:
            lay.block(rho_x, m)[...] = rho[m]
        trace = sysm.trace()
        rhs -= (trace @ sysm.x0) * rho_x
    n = _threads.current()
    solver = None
    if lay.size > DIRECT_LIMIT:
        try:
            solver = ShiftedSolver(sysm.layout, sysm.F, model.channels, border, L=sysm.L)
        except ValueError:  # a non-decaying no-jump block: no preconditioner
            solver = None
    with threadpool_limits(limits=1):
        if solver is not None:
            return _spectrum_reduced(sysm, rhs, rho_x, solver, omegas, n,
                                     {} if _stats is None else _stats)
        # frequencies are independent: n_jobs threads take one each (one BLAS thread
        # per solve, so the numbers do not depend on n_jobs)
        return 2.0 * np.array(thread_map(
            lambda w: (sysm.a @ _direct(sysm, trace, 1j * w, rhs)).real, omegas, n))


def _direct(sysm: RegressionSystem, trace, sigma: complex, rhs: np.ndarray) -> np.ndarray:
    """``y`` with ``(sigma - L + e Tr) y = rhs`` by sparse LU (``trace=None``: no border;
    else ``e`` is the first element, and ``Tr y = 0`` for a trace-free ``rhs``)."""
    n = sysm.layout.size
    M = sigma * sp.identity(n, dtype=complex, format="csr") - sysm.L
    if trace is not None:
        nz = np.flatnonzero(trace)
        M = M + sp.csr_matrix((np.ones(nz.size, dtype=complex), (np.zeros(nz.size, int), nz)),
                              shape=(n, n))
    try:
        y = spla.splu(M.tocsc()).solve(rhs)
    except RuntimeError:  # exactly singular
        y = np.full(n, np.nan)
    if not np.all(np.isfinite(y)):
        raise ValueError(f"model: the shifted generator is singular at omega = {sigma.imag}; "
                         "the steady state is not unique or a mode never decays")
    return y


def _spectrum_reduced(sysm: RegressionSystem, rhs: np.ndarray, rho_x, solver: ShiftedSolver,
                      omegas: np.ndarray, n_jobs: int, stats: dict) -> np.ndarray:
    """``2 Re a.(i omega - L)^-1 rhs`` for every omega, each to the true residual
    ``SPECTRUM_TOL ||rhs||``: Chebyshev head on ``[0, T]``, reduced model of the tail
    ``(i omega - L)^-1 x(T)`` (module docstring). ``stats`` receives ``T``, the
    head's ``matvecs``, the tail's norm ``tail`` (relative), the exact ``solves``
    ``[(omega, iterations)]``, the basis size ``basis`` and the wall ``seconds``
    of head and tail."""
    w, inv = np.unique(omegas, return_inverse=True)
    nb = float(np.linalg.norm(rhs))
    if nb == 0.0:
        return np.zeros(omegas.size)
    atol = SPECTRUM_TOL * nb
    head, x, t_end, mv = np.zeros(w.size, dtype=complex), rhs, 0.0, 0
    t0 = time.perf_counter()
    budget = HEAD_MATVECS * w.size
    if budget >= HEAD_MIN_MATVECS:
        cheb = BlockGenerator(sysm.layout, sysm.F, n_jobs=n_jobs)
        # (frequencies far outside the generator's spectrum would only make the
        # quadrature long: the tail handles them cheaply)
        if np.max(np.abs(w)) <= 4.0 * (cheb.width + cheb.gamma):
            head, x, t_end, mv = chebyshev_head(cheb, rhs, sysm.a, w, budget, 0.5 * atol)
    if rho_x is not None:  # trace free to round-off: exactly
        x = x - (solver.trace @ x) * rho_x
    t1 = time.perf_counter()
    tail = ReducedResolvent(sysm.L, x, sysm.a, rho_x, solver.trace, n_jobs)
    vals = tail.solve(w, solver, atol)
    stats.update(T=t_end, matvecs=mv, tail=tail.nr / nb, solves=list(tail.solves),
                 basis=tail.k, seconds=(t1 - t0, time.perf_counter() - t1))
    S = 2.0 * (head + np.exp(-1j * w * t_end) * vals).real
    return S[inv]

