"""Exact full counting statistics and waiting times in sector-block form (MODEL.md 11).

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
  exact inverse of the no-jump part), with one factorisation or preconditioner
  shared by all orders.
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
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from . import _validate as v
from ._threads import blas_threads
from .exact import BlockLayout, _check_model, _evolve_grid, _nojump_generator, _NoJumpInverse
from .sectors import SectorSpace

__all__ = ["exact_counting_statistics", "scgf", "rate_function", "waiting_time_distribution",
           "waiting_time_bins", "NET_SPIN"]

#: The net spin transferred to the right (hot) edge.
NET_SPIN = {"loss_right": 1, "loss_left": -1}

#: Bordered systems up to this size are solved by a sparse LU (factorised once).
DIRECT_LIMIT = 1_000


# --------------------------------------------------------------------------- validation
def _channel_dm(ch) -> int:
    """Magnon-number change of a channel: -1 loss, +1 pump, 0 dephasing."""
    if ch.kind == "dephasing":
        return 0
    return int(ch.dm)


def _check_counts(model, counts) -> dict:
    """``{channel name: non-zero int weight}`` in the model's channel order."""
    names = tuple(ch.name for ch in model.channels)
    if not isinstance(counts, dict) or not counts:
        raise ValueError("counts must be a non-empty dict {channel name: integer weight}, "
                         f"channels of this model: {list(names)}; got {counts!r}")
    out = {}
    for name, w in counts.items():
        if name not in names:
            raise ValueError(f"counts names an unknown channel {name!r}; channels of this "
                             f"model: {list(names)}")
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)):
            if not (isinstance(w, (float, np.floating)) and float(w).is_integer()):
                raise ValueError(f"counts[{name!r}] must be an integer weight, got {w!r}")
        out[name] = int(w)
    out = {n: out[n] for n in names if out.get(n, 0) != 0}
    if not out:
        raise ValueError(f"counts must give at least one channel a non-zero weight, got {counts}")
    return out


def _check_channel_names(model, channels, what: str) -> tuple[str, ...]:
    names = tuple(ch.name for ch in model.channels)
    if isinstance(channels, str):
        channels = (channels,)
    elif isinstance(channels, dict):
        channels = tuple(channels)
    try:
        channels = tuple(channels)
    except TypeError as exc:
        raise ValueError(f"{what} must be a channel name or a list of names from "
                         f"{list(names)}, got {channels!r}") from exc
    if not channels:
        raise ValueError(f"{what} must name at least one channel of {list(names)}")
    for c in channels:
        if c not in names:
            raise ValueError(f"{what} names an unknown channel {c!r}; channels of this "
                             f"model: {list(names)}")
    return tuple(dict.fromkeys(channels))


# --------------------------------------------------------------------------- block system
def _kinds(model) -> tuple[bool, bool]:
    dms = {_channel_dm(ch) for ch in model.channels}
    return -1 in dms, +1 in dms


def _steady_sectors(model) -> list[int]:
    """Sectors holding the unique steady state (an invariant set of ``L``)."""
    has_loss, has_pump = _kinds(model)
    if has_loss and has_pump:
        return list(range(model.N + 1))
    if has_loss:
        return [0]
    if has_pump:
        return [model.N]
    raise ValueError("long-time statistics need a unique steady state: the model must have a "
                     "loss or a pump channel (it has none; the magnon number is conserved)")


def _reachable_sectors(model) -> list[int]:
    """Every sector the dynamics can visit from any sector of the initial state."""
    return model.reachable_sectors()


def _jump_superoperator(layout: BlockLayout, ch) -> sp.csr_matrix:
    """``X -> L_ch X L_ch^+`` on the stacked blocks (loss, pump or dephasing)."""
    space = layout.space
    dm = _channel_dm(ch)
    rows, cols, vals = [], [], []
    for m in layout.sectors:
        d, o = layout.dims[m], layout.offsets[m]
        if dm == 0:
            occ = (space.sector(m).sites == ch.site).any(axis=1)
            z = np.where(occ, -1.0, 1.0)  # sigma^z: +1 up, -1 down (magnon)
            idx = o + np.arange(d * d)
            rows.append(idx)
            cols.append(idx)
            vals.append(ch.rate * np.outer(z, z).ravel())
            continue
        t = m + dm
        if t not in layout.dims:
            continue
        src, dst = space.jump_map(ch, m)
        if not src.size:
            continue
        dt_ = layout.dims[t]
        rows.append((layout.offsets[t] + dst[:, None] * dt_ + dst[None, :]).ravel())
        cols.append((o + src[:, None] * d + src[None, :]).ravel())
        vals.append(np.full(src.size ** 2, ch.rate))
    n = layout.size
    if not rows:
        return sp.csr_matrix((n, n), dtype=complex)
    return sp.csr_matrix((np.concatenate(vals).astype(complex),
                          (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


class _System:
    """Block Liouvillian, per-channel jump superoperators and a bordered solver."""

    def __init__(self, model, sectors):
        self.model = model
        self.space = SectorSpace(model)
        self.layout = BlockLayout(self.space, sectors)
        self.J = {ch.name: _jump_superoperator(self.layout, ch) for ch in model.channels}
        self.F = sum(self.J.values()) if self.J else sp.csr_matrix(
            (self.layout.size, self.layout.size), dtype=complex)
        self.A = _nojump_generator(self.layout)
        self.L = (self.A + self.F).tocsr()
        self.trace = self.layout.trace()
        # trace functionals of the jumps: Tr(J_ch x) = tJ[ch] @ x
        self.tJ = {k: np.asarray(J.T @ self.trace).ravel() for k, J in self.J.items()}
        leak = np.abs(self.L.T @ self.trace).max() if self.layout.size else 0.0
        scale = max(1.0, abs(self.L).max()) if self.L.nnz else 1.0
        if leak > 1e-10 * scale:
            raise RuntimeError(f"block Liouvillian does not preserve the trace (defect {leak:.3g});"
                               " a channel's jump and decay terms disagree")
        self._solver = None
        self.Ainv = None
        self.info = {}

    # ------------------------------------------------------------ bordered solver
    def _border(self) -> np.ndarray:
        e = np.zeros(self.layout.size, dtype=complex)
        e[self.layout.offsets[self.layout.sectors[0]]] = 1.0
        return e

    def _make_solver(self, tol: float):
        n = self.layout.size
        e = self._border()
        t = self.trace
        method = "direct" if n <= DIRECT_LIMIT else "gmres"
        Ainv = None
        if method == "gmres":
            try:
                Ainv = self.Ainv = _NoJumpInverse(self.layout)
            except ValueError:  # a non-decaying no-jump block: no preconditioner
                method = "direct"
        self.info["method"] = method
        self.info["gmres_iterations"] = []
        if method == "direct":
            nz = np.flatnonzero(t)
            B = self.L + sp.csr_matrix((np.ones(nz.size, dtype=complex),
                                        (np.full(nz.size, int(np.flatnonzero(e)[0])), nz)),
                                       shape=(n, n))
            lu = spla.splu(B.tocsc())

            def solve(y):
                x = lu.solve(y)
                if not np.all(np.isfinite(x)):
                    raise ValueError("the Liouvillian is singular beyond its steady state "
                                     "(the steady state is not unique for this model)")
                return x
            return solve
        F = self.F

        def matvec(x):
            return x + Ainv.apply(F @ x + e * (t @ x))

        op = spla.LinearOperator((n, n), matvec=matvec, dtype=complex)

        def solve(y):
            rhs = Ainv.apply(y)
            it = [0]

            def count(_):
                it[0] += 1

            x, code = spla.gmres(op, rhs, rtol=tol, atol=0.0, restart=100, maxiter=50,
                                 callback=count, callback_type="pr_norm")
            if code != 0:
                raise RuntimeError(f"GMRES of the bordered Liouvillian did not converge "
                                   f"(code {code})")
            self.info["gmres_iterations"].append(it[0])
            return x
        return solve

    def solve(self, y: np.ndarray, tol: float = 1e-13) -> np.ndarray:
        """``x`` with ``L x + e Tr(x) = y``: the steady state for ``y = e``, the
        trace-free Drazin solution of ``L x = y`` for trace-free ``y``."""
        if self._solver is None:
            self._solver = self._make_solver(tol)
        return self._solver(y)

    def steady_state(self) -> np.ndarray:
        x = self.solve(self._border())
        return x / (self.trace @ x)

    def initial_vector(self) -> np.ndarray:
        """The model's rho0 (pure or a site-diagonal mixture) in block form."""
        return self.layout.initial(self.model)

    def derivative(self, weights: dict, k: int) -> sp.csr_matrix:
        """``L^(k) = sum_ch nu_ch^k J_ch`` (``k >= 1``)."""
        return sum(float(w) ** k * self.J[name] for name, w in weights.items()).tocsr()

    def tilted(self, weights: dict, s: float) -> sp.csr_matrix:
        out = self.L.copy()
        for name, w in weights.items():
            out = out + np.expm1(s * w) * self.J[name]
        return out.tocsr()


# --------------------------------------------------------------------------- cumulants
def _long_time_rates(sysm: _System, weights: dict, order: int, tol: float) -> np.ndarray:
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


def _augmented(sysm: _System, weights: dict, order: int, shift: float) -> sp.csr_matrix:
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


def _moments(sysm: _System, weights: dict, order: int, x0: np.ndarray, T: float,
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


def _finite_time(sysm: _System, weights: dict, order: int, x0: np.ndarray, T: float):
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
    """Exact cumulants of a weighted jump count, block by block (MODEL.md 11).

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
    model = _check_model(model)
    weights = _check_counts(model, counts)
    order = v.integer("order", order, lo=1)
    tol = v.real("tol", tol, lo=0.0, lo_open=True, hi=1e-3)
    if t is None:
        sysm = _System(model, _steady_sectors(model))
        c = _long_time_rates(sysm, weights, order, tol)
    else:
        T = v.real("t", t, lo=0.0)
        t0 = v.real("t0", t0, lo=0.0)
        sysm = _System(model, _reachable_sectors(model))
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
def _shifted_nojump_solve(Ainv: _NoJumpInverse, y: np.ndarray, sigma: float) -> np.ndarray:
    """Solve ``-i (H X - X H^+) - sigma X = Y`` per block (reuses the factorisations)."""
    lay = Ainv.layout
    out = np.empty_like(y)
    for m in lay.sectors:
        d, o = lay.dims[m], lay.offsets[m]
        Y = y[o:o + d * d].reshape(d, d)
        kind, A, B, den = Ainv.data[m]
        if kind == "eig":
            V, W = A, B
            X = V @ ((W @ Y @ W.conj().T) / (den - sigma)) @ V.conj().T
        else:  # (T + i sigma) X - X T^+ = i Y in the Schur basis
            T, Q = A, B
            C = Q.conj().T @ (1j * Y) @ Q
            Xt, scale, info = sla.lapack.ztrsyl(T + 1j * sigma * np.eye(d), T, C,
                                                trana="N", tranb="C", isgn=-1)
            if info < 0:
                raise RuntimeError(f"ztrsyl failed with info = {info}")
            X = Q @ (Xt / scale) @ Q.conj().T
        out[o:o + d * d] = X.ravel()
    return out


def _shift_invert(sysm: _System, Ls: sp.csr_matrix, Fs: sp.csr_matrix, sigma: float):
    """``b, x0 -> (L_s - sigma)^-1 b``: sparse LU, or GMRES preconditioned with the
    shifted no-jump inverse (an inexact solve is enough for inverse iteration:
    the caller checks the eigen-residual)."""
    n = Ls.shape[0]
    if n <= DIRECT_LIMIT or sysm.Ainv is None:
        lu = spla.splu((Ls - sigma * sp.identity(n, dtype=complex, format="csr")).tocsc())
        return lambda b, x0: lu.solve(b)
    Ainv = sysm.Ainv

    def matvec(x):  # preconditioned (A - sigma)^-1 (L_s - sigma) = 1 + (A - sigma)^-1 F_s
        return x + _shifted_nojump_solve(Ainv, Fs @ x, sigma)

    op = spla.LinearOperator((n, n), matvec=matvec, dtype=complex)

    def solve(b, x0):
        x, _ = spla.gmres(op, _shifted_nojump_solve(Ainv, b, sigma), x0=x0,
                          rtol=1e-11, atol=0.0, restart=60, maxiter=3)
        return x
    return solve


def _leading(sysm: _System, Ls: sp.csr_matrix, Fs: sp.csr_matrix, guess: float,
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
    """Scaled cumulant generating function ``theta(s)`` (MODEL.md 11).

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
    model = _check_model(model)
    weights = _check_counts(model, counts)
    s_arr = np.asarray(s, dtype=float)
    if not np.all(np.isfinite(s_arr)):
        raise ValueError("s must contain only finite values")
    flat = s_arr.ravel()
    sysm = _System(model, _steady_sectors(model))
    if sysm.layout.size > DIRECT_LIMIT:
        try:
            sysm.Ainv = _NoJumpInverse(sysm.layout)
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


# --------------------------------------------------------------------------- waiting times
def _wtd_setup(model, channels, start, end, rho):
    model = _check_model(model)
    counted = _check_channel_names(model, channels, "channels")
    start = counted if start is None else _check_channel_names(model, start, "start")
    end = counted if end is None else _check_channel_names(model, end, "end")
    counted = tuple(dict.fromkeys(counted + start + end))
    return model, counted, start, end


def _wtd_vectors(sysm: _System, counted, start, end, x: np.ndarray):
    Jc = sum(sysm.J[c] for c in counted)
    M = (sysm.L - Jc).tocsr()
    y = sum(sysm.J[c] for c in start) @ x
    norm = (sysm.trace @ y).real
    if not norm > 0:
        raise ValueError(f"no jumps of {list(start)} occur in the reference state: the "
                         "waiting-time density is undefined")
    tend = sum(sysm.tJ[c] for c in end)
    return M, y / norm, tend


@blas_threads
def waiting_time_distribution(model, channels, tau, *, start=None, end=None) -> np.ndarray:
    """Steady-state density of the waiting time between counted jumps (MODEL.md 11).

    ``w(tau) = Tr[J_end exp((L - J) tau) J_start rho_ss] / Tr[J_start rho_ss]``
    with ``J`` the sum over the counted channels.

    Parameters
    ----------
    model : ChainModel
        Needs a unique steady state.
    channels : str or sequence of str
        The counted channels (``J = sum`` of their jump superoperators).
    tau : float or array_like
        Delays ``>= 0``.
    start, end : str or sequence of str, optional
        Ordered-pair form: density that, after a jump of ``start``, the next
        counted jump happens at ``tau`` and is one of ``end`` (defaults: the
        counted channels). ``start`` and ``end`` channels are counted too. With
        ``start = A`` the densities for all ``end = B`` add up to the density
        for ``end = channels``.

    Returns
    -------
    numpy.ndarray
        ``w(tau)``, same shape as ``tau``; its integral over ``[0, inf)`` is the
        probability that a next counted jump (of ``end``) ever happens.
    """
    model, counted, start, end = _wtd_setup(model, channels, start, end, None)
    tau_arr = np.asarray(tau, dtype=float)
    flat = v.real_array("tau", tau_arr.ravel(), lo=0.0)
    sysm = _System(model, _steady_sectors(model))
    M, y, tend = _wtd_vectors(sysm, counted, start, end, sysm.steady_state())
    order = np.argsort(flat, kind="stable")
    vals = np.empty(flat.size)
    if flat.size:
        for i, z in zip(order, _evolve_grid(M, y, flat[order]), strict=True):
            vals[i] = (tend @ z).real
    return vals.reshape(tau_arr.shape)


def _integral_grid(M: sp.csr_matrix, y: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``int_0^e exp(M u) y du`` at each of the increasing ``edges``."""
    n = M.shape[0]
    aug = sp.bmat([[M, None], [sp.identity(n, dtype=complex, format="csr"),
                                sp.csr_matrix((n, n), dtype=complex)]], format="csr")
    y0 = np.concatenate([y, np.zeros(n, dtype=complex)])
    return np.array([z[n:] for z in _evolve_grid(aug, y0, edges)])


@blas_threads
def waiting_time_bins(model, channels, edges, *, start=None, end=None,
                      window=None) -> np.ndarray:
    """Exact probability of the waiting time in each bin ``[edges[i], edges[i+1])``.

    Parameters
    ----------
    model, channels, start, end
        As in :func:`waiting_time_distribution`.
    edges : array_like
        Increasing bin edges ``>= 0``.
    window : (float, float), optional
        ``None``: intervals starting in the steady state. ``(t_a, t_b)``: the
        interval-start jumps are the ``start`` jumps in ``[t_a, t_b)`` of the
        evolution from ``model.initial`` (each weighted by its exact rate), the
        reference of a trajectory histogram over that window.

    Returns
    -------
    numpy.ndarray
        ``len(edges) - 1`` probabilities (``int`` of ``w`` over each bin).
    """
    model, counted, start, end = _wtd_setup(model, channels, start, end, None)
    edges = v.real_array("edges", edges, lo=0.0)
    if edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("edges must be at least two strictly increasing values")
    if window is None:
        sysm = _System(model, _steady_sectors(model))
        x = sysm.steady_state()
    else:
        t_a, t_b = window
        t_a = v.real("window[0]", t_a, lo=0.0)
        t_b = v.real("window[1]", t_b, lo=0.0)
        if not t_b > t_a:
            raise ValueError(f"window must satisfy t_a < t_b, got ({t_a}, {t_b})")
        sysm = _System(model, _reachable_sectors(model))
        x0 = sysm.initial_vector()
        if t_a > 0:
            x0 = spla.expm_multiply(sysm.L * t_a, x0)
        x = _integral_grid(sysm.L, x0, np.array([t_b - t_a]))[0]
    M, y, tend = _wtd_vectors(sysm, counted, start, end, x)
    grid = np.concatenate([[0.0], edges]) if edges[0] > 0 else edges
    cum = np.array([(tend @ z).real for z in _integral_grid(M, y, grid)])
    if edges[0] > 0:
        cum = cum[1:]
    return np.diff(cum)
