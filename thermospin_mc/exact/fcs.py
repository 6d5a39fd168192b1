"""Exact full counting statistics and waiting times in sector-block form (docs/model.md 11).

Count the jumps of chosen channels ``k`` with integer weights ``nu_k``. With
``J_k rho = L_k rho L_k^+`` the tilted generator is

    L_s = L + sum_k (exp(s nu_k) - 1) J_k = L + sum_{n >= 1} s^n / n! L^(n),
    L^(n) = sum_k nu_k^n J_k,

which keeps the magnon-block structure, so every operation below works on the
stacked blocks of :class:`thermospin_mc.exact.BlockLayout`, never on the
``4^N`` matrix.

- Long-time cumulant rates (:func:`exact_counting_statistics` with ``t=None``):
  Rayleigh-Schroedinger expansion of the leading eigenvalue ``theta(s)`` of
  ``L_s`` around ``s = 0``. With ``L rho_ss = 0``, the trace as left
  eigenvector and right eigenvector ``r(s) = sum_n s^n r_n`` normalised by
  ``Tr r_n = delta_n0``, order ``n`` gives exactly

      theta_n = sum_{k=1}^{n} Tr(A_k r_{n-k}),                 A_k = L^(k) / k!
      L r_n   = -(sum_{k=1}^{n} A_k r_{n-k} - theta_k r_{n-k}),  Tr r_n = 0,

  and ``c_n = n! theta_n``. Each ``r_n`` is one application of the Drazin
  inverse: the bordered solve ``(L + e Tr) x = y`` of the steady-state solver
  (sparse LU for small problems, otherwise GMRES left-preconditioned with the
  exact inverse of the no-jump part plus the jumps of the weaker direction,
  :class:`thermospin_mc.exact.blocksolve.BorderedSolver`), with one factorisation or
  preconditioner shared by all orders.
- Finite time (``t=T``): the derivatives ``v_k = d^k/ds^k exp(L_s t) rho0`` at
  ``s = 0`` obey the block lower-triangular system
  ``dv_k/dt = sum_j C(k, j) L^(j) v_{k-j}``; one ``expm_multiply`` of the
  augmented generator gives the moments ``Tr v_k(T)`` exactly (centred on the
  mean to avoid cancellation), then the cumulants.
- ``scgf``: ``theta(s)`` by shift-invert Arnoldi on ``L_s`` (sparse LU).
- ``waiting_time_distribution``: ``w(tau) = Tr[J_B exp((L - J) tau) J_A rho] /
  Tr[J_A rho]`` with the exact action of the exponential.

Channels are generic: losses (``dm = -1``), pumps (``+1``) and dephasing
(``dm = 0``, ``J rho = r Z rho Z``) at any site.
"""

from __future__ import annotations

from math import comb, factorial

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .. import _validate as v
from .._threads import blas_threads
from .blocks import check_model
from .blocksolve import NoJumpInverse
from .counting import (
    DIRECT_LIMIT,
    CountingSystem,
    check_counts,
    reachable_sectors,
    steady_sectors,
)
from .waiting import waiting_time_bins, waiting_time_distribution

__all__ = ["exact_counting_statistics", "scgf", "rate_function", "waiting_time_distribution",
           "waiting_time_bins", "NET_SPIN"]

#: The net spin transferred to the right (hot) edge.
NET_SPIN = {"loss_right": 1, "loss_left": -1}

# --------------------------------------------------------------------------- cumulants
def _long_time_rates(sysm: CountingSystem, weights: dict, order: int, tol: float) -> np.ndarray:
    """``c_1 .. c_order`` by the recursive Rayleigh-Schroedinger scheme."""
    r = [sysm.steady_state()]
    theta = [0.0]
    # trace functionals of A_k = L^(k) / k!
    tA = [None] + [sum(float(w) ** k * sysm.tJ[n] for n, w in weights.items()) / factorial(k)
                   for k in range(1, order + 1)]
    A = {}

    def apply_A(k, x):
        if k not in A:
            A[k] = sysm.derivative(weights, k) / factorial(k)
        return A[k] @ x

    for n in range(1, order + 1):
        th = sum(tA[k] @ r[n - k] for k in range(1, n + 1))
        theta.append(th)
        if n == order:
            break
        y = sum(apply_A(k, r[n - k]) - theta[k] * r[n - k] for k in range(1, n + 1))
        x = sysm.solve(-y, tol)
        x -= (sysm.trace @ x) * r[0]  # project out the round-off in Tr x
        r.append(x)
    return np.array([factorial(n) * theta[n] for n in range(1, order + 1)]).real


def _augmented(sysm: CountingSystem, weights: dict, order: int, shift: float) -> sp.csr_matrix:
    """Generator of ``(v_0, .., v_order)``, ``v_k = d^k/ds^k exp((L_s - s shift) t) v``."""
    n = sysm.layout.size
    D = [sysm.L] + [sysm.derivative(weights, j) for j in range(1, order + 1)]
    if shift:
        D[1] = (D[1] - shift * sp.identity(n, dtype=complex, format="csr")).tocsr()
    blocks = [[None] * (order + 1) for _ in range(order + 1)]
    for k in range(order + 1):
        for j in range(k + 1):
            blocks[k][k - j] = comb(k, j) * D[j] if j else D[0]
    return sp.bmat(blocks, format="csr")


def _moments(sysm: CountingSystem, weights: dict, order: int, x0: np.ndarray, T: float,
             shift: float) -> np.ndarray:
    n = sysm.layout.size
    M = _augmented(sysm, weights, order, shift)
    y0 = np.zeros((order + 1) * n, dtype=complex)
    y0[:n] = x0
    y = spla.expm_multiply(M * T, y0)
    return np.array([(sysm.trace @ y[k * n:(k + 1) * n]).real for k in range(order + 1)])


def _cumulants_from_central(mean: float, mu: np.ndarray, order: int) -> np.ndarray:
    """Cumulants from the central moments ``mu[k] = E[(K - mean)^k]`` (``mu[0] = 1``)."""
    kap = np.zeros(order + 1)
    for n in range(1, order + 1):
        kap[n] = mu[n] - sum(comb(n - 1, j - 1) * kap[j] * mu[n - j] for j in range(1, n))
    kap[1] = mean
    return kap[1:]


def _finite_time(sysm: CountingSystem, weights: dict, order: int, x0: np.ndarray, T: float):
    if T == 0:
        return np.zeros(order)
    mom1 = _moments(sysm, weights, 1, x0, T, 0.0)
    mean = mom1[1] / mom1[0]
    mu = _moments(sysm, weights, order, x0, T, mean / T)
    mu = mu / mu[0]
    return _cumulants_from_central(mean, mu, order)


@blas_threads
def exact_counting_statistics(model, counts, order: int = 4, t=None, *, t0: float = 0.0,
                              tol: float = 1e-13) -> pd.DataFrame:
    """Exact cumulants of a weighted jump count, block by block (docs/model.md 11).

    Parameters
    ----------
    model : ChainModel
        The open chain (any channel set).
    counts : dict
        ``{channel name: integer weight nu}``, e.g. ``{"loss_right": 1,
        "loss_left": -1}`` for the net spin to the right (:data:`NET_SPIN`).
        Names as in ``model.channels`` / the jump tables.
    order : int
        Highest cumulant (``>= 1``); any order is exact.
    t : float or None
        ``None``: long-time cumulant rates ``c_n = d^n theta / ds^n`` at
        ``s = 0`` (needs a unique steady state). ``T >= 0``: the cumulants of
        the count ``K`` in ``[t0, t0 + T)`` of the evolution from
        ``model.initial`` prepared at time 0.
    t0 : float
        Start of the counting window (finite ``t`` only; ``>= 0``). The state at
        ``t0`` is the exact Lindblad state ``exp(L t0) rho0``.
    tol : float
        Relative residual of the iterative (GMRES) solves on large problems.

    Returns
    -------
    pandas.DataFrame
        Columns ``order`` (1..order) and ``cumulant``; ``attrs`` record the
        counts, ``t`` and the solver. For ``t=None`` the cumulant of order 1 is
        the mean current, order 2 the noise; their ratio is the Fano factor.
    """
    model = check_model(model, "exact_counting_statistics")
    weights = check_counts(model, counts)
    order = v.integer("order", order, lo=1)
    tol = v.real("tol", tol, lo=0.0, lo_open=True, hi=1e-3)
    if t is None:
        sysm = CountingSystem(model, steady_sectors(model))
        c = _long_time_rates(sysm, weights, order, tol)
    else:
        T = v.real("t", t, lo=0.0)
        t0 = v.real("t0", t0, lo=0.0)
        sysm = CountingSystem(model, reachable_sectors(model))
        x0 = sysm.initial_vector()
        if t0 > 0:
            x0 = spla.expm_multiply(sysm.L * t0, x0)
        c = _finite_time(sysm, weights, order, x0, T)
    df = pd.DataFrame({"order": np.arange(1, order + 1), "cumulant": c})
    df.attrs.update(counts=dict(weights), t=t, t0=t0 if t is not None else None,
                    layout_size=sysm.layout.size,
                    **{k: val for k, val in sysm.info.items()})
    return df


# --------------------------------------------------------------------------- SCGF
def _shift_invert(sysm: CountingSystem, Ls: sp.csr_matrix, Fs: sp.csr_matrix, sigma: float):
    """``b, x0 -> (L_s - sigma)^-1 b``: sparse LU, or GMRES preconditioned with the
    shifted no-jump inverse (an inexact solve is enough for inverse iteration:
    the caller checks the eigen-residual)."""
    n = Ls.shape[0]
    if n <= DIRECT_LIMIT or sysm.Ainv is None:
        lu = spla.splu((Ls - sigma * sp.identity(n, dtype=complex, format="csr")).tocsc())
        return lambda b, x0: lu.solve(b)
    Ainv = sysm.Ainv

    def matvec(x):  # preconditioned (A - sigma)^-1 (L_s - sigma) = 1 + (A - sigma)^-1 F_s
        return x + Ainv.apply(Fs @ x, sigma)

    op = spla.LinearOperator((n, n), matvec=matvec, dtype=complex)

    def solve(b, x0):
        x, _ = spla.gmres(op, Ainv.apply(b, sigma), x0=x0,
                          rtol=1e-11, atol=0.0, restart=60, maxiter=3)
        return x
    return solve


def _leading(sysm: CountingSystem, Ls: sp.csr_matrix, Fs: sp.csr_matrix, guess: float,
             r0: np.ndarray, scale: float) -> tuple[float, np.ndarray]:
    """Leading eigenpair of ``L_s`` by shifted inverse iteration from ``(guess, r0)``.

    The shift follows the trace Rayleigh quotient ``theta = Tr(L_s r) / Tr(r)``
    (the trace is the left eigenvector at ``s = 0``), offset by ``1e-4 scale``
    so the solves stay well conditioned; converged when ``||L_s r - theta r|| <= 1e-12
    scale ||r||``.
    """
    n = Ls.shape[0]
    trace = sysm.trace
    if n <= 8:
        lam, vec = np.linalg.eig(Ls.toarray())
        i = int(np.argmax(lam.real))
        return float(lam[i].real), vec[:, i] / (trace @ vec[:, i])
    r = r0 / (trace @ r0)
    theta = guess
    delta = 1e-4 * scale
    for _ in range(40):
        sigma = theta + delta
        x = _shift_invert(sysm, Ls, Fs, sigma)(r, -r / delta)
        r = x / (trace @ x)
        Lr = Ls @ r
        theta = float((trace @ Lr).real)
        if np.linalg.norm(Lr - theta * r) <= 1e-12 * scale * np.linalg.norm(r):
            return theta, r
    raise RuntimeError(f"inverse iteration for theta(s) did not converge (last theta {theta})")


@blas_threads
def scgf(model, counts, s) -> np.ndarray:
    """Scaled cumulant generating function ``theta(s)`` (docs/model.md 11).

    Parameters
    ----------
    model : ChainModel
        Needs a unique steady state (a loss or a pump channel).
    counts : dict
        ``{channel name: integer weight}`` as in :func:`exact_counting_statistics`.
    s : float or array_like
        Counting fields (real, finite).

    Returns
    -------
    numpy.ndarray
        ``theta(s)``, the eigenvalue of the tilted generator with the largest
        real part (real for real ``s``), same shape as ``s``; ``theta(0) = 0``
        to round-off.

    Notes
    -----
    Continuation from ``s = 0`` (eigenvector ``rho_ss``) outward in both
    directions, each ``s`` refined by shifted inverse iteration with Rayleigh
    shifts. ``(L_s - sigma)^-1`` is a sparse LU for small problems, else GMRES
    preconditioned with the exact inverse of the shifted no-jump part.
    """
    model = check_model(model, "scgf")
    weights = check_counts(model, counts)
    s_arr = np.asarray(s, dtype=float)
    if not np.all(np.isfinite(s_arr)):
        raise ValueError("s must contain only finite values")
    flat = s_arr.ravel()
    sysm = CountingSystem(model, steady_sectors(model))
    if sysm.layout.size > DIRECT_LIMIT:
        try:
            sysm.Ainv = NoJumpInverse(sysm.layout)
        except ValueError:
            sysm.Ainv = None
    scale = float(max(1.0, abs(sysm.L).max())) if sysm.L.nnz else 1.0
    rho = sysm.steady_state()
    out = np.empty(flat.size)
    # continuation path: 0 -> positive values, 0 -> negative values, steps <= 0.25
    uniq = np.unique(flat)
    vals = {}
    for side in (uniq[uniq >= 0], uniq[uniq < 0][::-1]):
        if not side.size:
            continue
        theta, r, s_prev, slope = 0.0, rho, 0.0, 0.0
        for target in side:
            nstep = max(1, int(np.ceil(abs(target - s_prev) / 0.25)))
            for si in np.linspace(s_prev, target, nstep + 1)[1:]:
                if si == 0.0:
                    theta_new, r_new = 0.0, rho
                    Fs = sysm.F
                    theta_new = float((sysm.trace @ (sysm.L @ rho)).real)
                else:
                    Fs = sysm.F.copy()
                    for name, w in weights.items():
                        Fs = Fs + np.expm1(si * w) * sysm.J[name]
                    Fs = Fs.tocsr()
                    theta_new, r_new = _leading(sysm, (sysm.A + Fs).tocsr(), Fs,
                                                theta + slope * (si - s_prev), r, scale)
                if si != s_prev:
                    slope = (theta_new - theta) / (si - s_prev)
                theta, r, s_prev = theta_new, r_new, si
            vals[float(target)] = theta
    for i, si in enumerate(flat):
        out[i] = vals[float(si)]
    return out.reshape(s_arr.shape)


def rate_function(s, theta, x=None) -> pd.DataFrame:
    """Large-deviation rate function of ``K_t / t`` by the Legendre transform of
    ``theta`` on a grid: ``I(x) = max_s [s x - theta(s)]``.

    Parameters
    ----------
    s, theta : array_like
        A grid of counting fields (increasing) and ``theta(s)`` on it.
    x : array_like, optional
        Currents at which to evaluate ``I``; default: ``theta'(s)`` on the grid
        (finite differences), the range where the maximum lies inside the grid.

    Returns
    -------
    pandas.DataFrame
        Columns ``x``, ``I`` and ``s_star`` (the maximising grid point).
    """
    s = v.real_array("s", s)
    th = v.real_array("theta", theta)
    if s.size != th.size or s.size < 3:
        raise ValueError(f"s and theta must have the same length >= 3, got {s.size}, {th.size}")
    if np.any(np.diff(s) <= 0):
        raise ValueError("s must be strictly increasing")
    if x is None:
        x = np.gradient(th, s)
    x = v.real_array("x", np.atleast_1d(x))
    val = s[None, :] * x[:, None] - th[None, :]
    j = np.argmax(val, axis=1)
    return pd.DataFrame({"x": x, "I": val[np.arange(x.size), j], "s_star": s[j]})
