"""Exact solvers in sector-block form: closed evolution, Lindblad evolution,
steady state and exit-side probabilities.

The density matrix started in one magnon sector stays block diagonal in the
magnon number (MODEL.md section 6), so only the blocks ``rho_m`` of the sectors
the dynamics can reach are stored: ``sum_m C(N, m)^2`` numbers, never ``4^N``.
Block ``m`` obeys

    d rho_m / dt = -i (H_m rho_m - rho_m H_m^+) + sum_k r_k P_k rho_{m'} P_k^T,

with ``H_m`` the non-Hermitian ``H_eff`` of the sector, ``m' = m + 1`` for a
loss channel and ``m - 1`` for the pump, and ``P_k`` the 0/1 index map of the
channel. Blocks are stored row-major and stacked in increasing ``m``.

- ``sesolve``: closed system, pure state, exact via ``eigh`` of the sector ``h``.
- ``mesolve``: the block Liouvillian as a sparse matrix and its exact action
  ``expm(L t) v`` (scipy's ``expm_multiply``, truncation to double precision);
  a pump-free model started with at most one magnon only needs the no-jump
  path of its one-magnon sector (the rest is the lost population), which runs
  for chains of any length.
- ``steadystate``: ``L x = 0`` with unit trace, either by a sparse direct solve
  (small problems) or by GMRES left-preconditioned with the exact inverse of
  the block no-jump part (``-i(H X - X H^+) = Y`` solved in the eigenbasis of
  ``H``, Schur-based fallback when that basis is ill-conditioned).
- ``exit_probabilities``: expected number of losses on each edge, integrated to
  infinite time (for one magnon: the probability to leave left or right).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from . import _validate as v
from ._threads import blas_threads
from .model import ChainModel
from .results import OBSERVABLES, Result, expect_table
from .sectors import SectorSpace

__all__ = ["sesolve", "mesolve", "steadystate", "exit_probabilities", "BlockLayout"]

#: Above this many stored numbers the steady state switches from a sparse
#: direct solve to preconditioned GMRES (fill-in of the direct solve grows fast).
DIRECT_STEADY_LIMIT = 1_000


def _metadata(model: ChainModel, solver: str, **extra) -> dict:
    from . import __version__

    meta = {"solver": solver, "model": model.to_dict(), "ntraj": 0, "version": __version__,
            "alpha_method": model.alpha_method}
    meta.update(extra)
    return meta


def _check_observables(observables) -> tuple[str, ...]:
    if observables is None:
        return ("j", "j_bond", "flow", "m", "n", "norm")
    obs = tuple(observables)
    for o in obs:
        if o not in OBSERVABLES:
            raise ValueError(f"observable must be one of {OBSERVABLES}, got {o!r}")
    return obs


def _check_model(model) -> ChainModel:
    if not isinstance(model, ChainModel):
        raise ValueError(f"model must be a ChainModel, got {type(model).__name__}")
    return model


# ---------------------------------------------------------------------------- layout
class BlockLayout:
    """Row-major stacking of the blocks ``rho_m`` of a list of sectors."""

    def __init__(self, space: SectorSpace, sectors: list[int]):
        self.space = space
        self.sectors = list(sectors)
        self.dims = {m: space.dim(m) for m in self.sectors}
        self.offsets = {}
        off = 0
        for m in self.sectors:
            self.offsets[m] = off
            off += self.dims[m] ** 2
        self.size = off
        N = space.N
        # observable gather indices
        self._diag_idx, self._occ, self._hop_idx, self._hop_bond = {}, {}, {}, {}
        for m in self.sectors:
            sec = space.sector(m)
            d, o = self.dims[m], self.offsets[m]
            self._diag_idx[m] = o + np.arange(d) * (d + 1)
            self._occ[m] = sec.occupation()
            self._hop_idx[m] = o + sec.hop_from * d + sec.hop_to
            self._hop_bond[m] = sec.hop_bond
        self.N = N

    def block(self, x: np.ndarray, m: int) -> np.ndarray:
        d, o = self.dims[m], self.offsets[m]
        return x[o:o + d * d].reshape(d, d)

    def trace(self) -> np.ndarray:
        t = np.zeros(self.size, dtype=complex)
        for m in self.sectors:
            t[self._diag_idx[m]] = 1.0
        return t

    def observables(self, x: np.ndarray, names) -> dict:
        """Expectation values of one stacked density matrix ``x``."""
        N, a = self.N, self.space.a
        n = np.zeros(N)
        jb = np.zeros(N - 1)
        pops = {}
        for m in self.sectors:
            diag = x[self._diag_idx[m]].real
            pops[m] = diag.sum()
            if m:
                n += self._occ[m].T @ diag
                if self._hop_idx[m].size:
                    # <j_l> = -4 Im rho[from, to] summed over the hops of bond l
                    jb += np.bincount(self._hop_bond[m], -4.0 * x[self._hop_idx[m]].imag,
                                      minlength=N - 1)
        out = {}
        norm = sum(pops.values())
        for name in names:
            if name == "n":
                out[name] = n
            elif name == "j_bond":
                out[name] = jb
            elif name == "flow":
                out[name] = 0.5 * a * jb
            elif name == "j":
                out[name] = np.array([jb.sum()])
            elif name == "m":
                out[name] = np.array([N / 2 - sum(m * p for m, p in pops.items())])
            elif name == "norm":
                out[name] = np.array([norm])
        return out

    def pure(self, m: int, psi: np.ndarray) -> np.ndarray:
        x = np.zeros(self.size, dtype=complex)
        d, o = self.dims[m], self.offsets[m]
        x[o:o + d * d] = np.outer(psi, psi.conj()).ravel()
        return x


def _stack(series: list[dict], names) -> dict:
    return {name: np.array([s[name] for s in series]) for name in names}


# ---------------------------------------------------------------------------- Liouvillian
def _nojump_generator(layout: BlockLayout) -> sp.csr_matrix:
    """Block-diagonal part ``X -> -i (H X - X H^+)`` of the Liouvillian."""
    space = layout.space
    blocks = []
    for m in layout.sectors:
        H = space.sector(m).heff_sparse(space.a)
        eye = sp.identity(layout.dims[m], format="csr")
        blocks.append(-1j * sp.kron(H, eye) + 1j * sp.kron(eye, H.conj()))
    return sp.block_diag(blocks, format="csr")


def _feed_generator(layout: BlockLayout) -> sp.csr_matrix:
    """Jump (feeding) part ``X -> sum_k r_k P_k X P_k^T`` between neighbouring blocks."""
    space = layout.space
    rows, cols, vals = [], [], []
    for ch in space.channels:
        for m in layout.sectors:
            t = m + ch.dm
            if t not in layout.dims:
                continue
            src, dst = space.jump_map(ch, m)
            if not src.size:
                continue
            dm_, dt_ = layout.dims[m], layout.dims[t]
            rows.append((layout.offsets[t] + dst[:, None] * dt_ + dst[None, :]).ravel())
            cols.append((layout.offsets[m] + src[:, None] * dm_ + src[None, :]).ravel())
            vals.append(np.full(src.size ** 2, ch.rate))
    if not rows:
        return sp.csr_matrix((layout.size, layout.size), dtype=complex)
    return sp.csr_matrix((np.concatenate(vals).astype(complex),
                          (np.concatenate(rows), np.concatenate(cols))),
                         shape=(layout.size, layout.size))


def liouvillian(model: ChainModel, sectors: list[int] | None = None):
    """The sparse block Liouvillian and its :class:`BlockLayout`."""
    space = SectorSpace(model)
    layout = BlockLayout(space, model.reachable_sectors() if sectors is None else sectors)
    return (_nojump_generator(layout) + _feed_generator(layout)).tocsr(), layout


def _is_uniform(times: np.ndarray) -> bool:
    if times.size < 3:
        return True
    d = np.diff(times)
    return bool(np.all(np.abs(d - d[0]) <= 1e-12 * max(1.0, abs(times[-1]))))


def _evolve_grid(op, x0: np.ndarray, times: np.ndarray):
    """Yield ``expm(op t) x0`` at each of ``times`` (``op`` sparse, exact action)."""
    if times.size > 2 and _is_uniform(times) and times[-1] > times[0]:
        # one call on a uniform grid: expm_multiply returns exp(t_k op) x0
        # scipy gh-16363: start != 0 reuses the interval's scaling for exp(start op); go to
        x0 = spla.expm_multiply(op * times[0], x0) if times[0] > 0 else x0  # times[0] first
        yield from spla.expm_multiply(op, x0, start=0.0, stop=times[-1] - times[0],
                                      num=times.size, endpoint=True)
        return
    x, t_now = x0, 0.0
    for t in times:
        if t > t_now:
            x = spla.expm_multiply(op * (t - t_now), x)
            t_now = t
        yield x


# ---------------------------------------------------------------------------- sesolve
def sesolve(model: ChainModel, times, observables=None) -> Result:
    """Exact evolution of the closed chain (channels ignored) from the initial state.

    Parameters
    ----------
    model : ChainModel
        Its ``initial`` state is prepared at ``t = 0``; jump channels are ignored.
    times : array_like
        Non-decreasing output times ``>= 0``.
    observables : sequence of str, optional
        Subset of ``j, j_bond, flow, m, n, norm`` (default: all).

    Returns
    -------
    Result
        ``.expect`` with ``sem = 0``, ``ntraj = 0``.
    """
    model = _check_model(model)
    times = v.times(times)
    names = _check_observables(observables)
    closed = model.with_(gamma=0.0, gamma_pump=0.0) if model.channels else model
    space = SectorSpace(closed)
    m0, psi0 = space.initial_state()
    layout = _PureLayout(space, m0)
    E, V = np.linalg.eigh(space.sector(m0).h_sparse(space.a).toarray())
    c0 = V.conj().T @ psi0
    series = [layout.observables(V @ (np.exp(-1j * E * t) * c0), names) for t in times]
    means = _stack(series, names)
    return Result(expect_table(times, model.N, means), _metadata(model, "sesolve"))


class _PureLayout:
    """Observables of an (unnormalised) pure state in one sector; the missing
    weight ``1 - ||psi||^2`` is the population of the sector below (lost magnon)."""

    def __init__(self, space: SectorSpace, m: int, lost_to: int | None = None):
        self.space, self.m, self.lost_to = space, m, lost_to
        sec = space.sector(m)
        self.sec, self.occ = sec, sec.occupation()
        self.N = space.N

    def observables(self, psi: np.ndarray, names) -> dict:
        N, a, sec = self.N, self.space.a, self.sec
        p = np.abs(psi) ** 2
        norm = p.sum()
        lost = 1.0 - norm if self.lost_to is not None else 0.0
        jb = np.bincount(sec.hop_bond, -4.0 * (psi[sec.hop_to].conj() * psi[sec.hop_from]).imag,
                         minlength=N - 1) if sec.hop_bond.size else np.zeros(N - 1)
        out = {}
        for name in names:
            if name == "n":
                out[name] = self.occ.T @ p
            elif name == "j_bond":
                out[name] = jb
            elif name == "flow":
                out[name] = 0.5 * a * jb
            elif name == "j":
                out[name] = np.array([jb.sum()])
            elif name == "m":
                mm = self.m * norm + (self.lost_to or 0) * lost
                out[name] = np.array([N / 2 - mm])
            elif name == "norm":
                out[name] = np.array([norm + lost])
        return out


# ---------------------------------------------------------------------------- mesolve
@blas_threads
def mesolve(model: ChainModel, times, observables=None) -> Result:
    """Exact Lindblad evolution of the block density matrix.

    Parameters
    ----------
    model : ChainModel
        The initial pure state is prepared at ``t = 0``.
    times : array_like
        Non-decreasing output times ``>= 0`` (0 need not be among them).
    observables : sequence of str, optional
        Subset of ``j, j_bond, flow, m, n, norm`` (default: all).

    Returns
    -------
    Result
        ``.expect`` with ``sem = 0`` and ``ntraj = 0``.

    Notes
    -----
    Memory is ``sum_m C(N, m)^2`` complex numbers over the reachable sectors
    (plus the sparse generator, about 2N nonzeros per stored number); a
    pump-free model with at most one magnon costs ``O(N^2)`` and runs for
    N in the thousands.
    """
    model = _check_model(model)
    times = v.times(times)
    names = _check_observables(observables)
    if model.is_closed:
        res = sesolve(model, times, names)
        res.metadata["solver"] = "mesolve"
        return res
    space = SectorSpace(model)
    m0, psi0 = space.initial_state()
    if model.gamma_pump == 0 and m0 <= 1:
        # rho_1(t) = psi~ psi~^+ (no-jump path), the rest sits in the all-up state
        layout = _PureLayout(space, m0, lost_to=0 if m0 == 1 else None)
        op = -1j * space.sector(m0).heff_sparse(space.a)
        series = [layout.observables(psi, names) for psi in _evolve_grid(op, psi0, times)]
    else:
        L, layout = liouvillian(model)
        x0 = layout.pure(m0, psi0)
        series = [layout.observables(x, names) for x in _evolve_grid(L, x0, times)]
    means = _stack(series, names)
    return Result(expect_table(times, model.N, means), _metadata(model, "mesolve"))


# ---------------------------------------------------------------------------- no-jump inverse
class _NoJumpInverse:
    """Exact solution of ``-i (H X - X H^+) = Y`` per block (all blocks decay)."""

    def __init__(self, layout: BlockLayout, cond_limit: float = 1e8):
        self.layout = layout
        self.data = {}
        space = layout.space
        for m in layout.sectors:
            H = space.sector(m).heff_sparse(space.a).toarray()
            lam, V = np.linalg.eig(H)
            if np.linalg.cond(V) < cond_limit:
                W = np.linalg.inv(V)
                den = -1j * (lam[:, None] - lam.conj()[None, :])
                if np.min(np.abs(den)) == 0:
                    raise ValueError(f"sector m = {m} has a non-decaying (dark) state; "
                                     "the steady state is not unique for this model")
                self.data[m] = ("eig", V, W, den)
            else:
                T, Q = sla.schur(H, output="complex")
                self.data[m] = ("schur", T, Q, None)

    def apply(self, y: np.ndarray) -> np.ndarray:
        lay = self.layout
        out = np.empty_like(y)
        for m in lay.sectors:
            d, o = lay.dims[m], lay.offsets[m]
            Y = y[o:o + d * d].reshape(d, d)
            kind, A, B, den = self.data[m]
            if kind == "eig":
                V, W = A, B
                X = V @ ((W @ Y @ W.conj().T) / den) @ V.conj().T
            else:
                T, Q = A, B
                C = Q.conj().T @ (1j * Y) @ Q
                Xt, scale, info = sla.lapack.ztrsyl(T, T, C, trana="N", tranb="C", isgn=-1)
                if info < 0:
                    raise RuntimeError(f"ztrsyl failed with info = {info}")
                X = Q @ (Xt / scale) @ Q.conj().T
            out[o:o + d * d] = X.ravel()
        return out


# ---------------------------------------------------------------------------- steady state
@blas_threads
def steadystate(model: ChainModel, observables=None, method: str = "auto",
                tol: float = 1e-13) -> Result:
    """Exact steady state of the Lindblad equation (pump + loss).

    Parameters
    ----------
    model : ChainModel
        Must have jump channels. With loss only the steady state is the all-up
        state; with a pump the sectors ``0..N`` (or those reachable) are solved.
    observables : sequence of str, optional
        Subset of ``j, j_bond, flow, m, n, norm`` (default: all).
    method : {"auto", "direct", "gmres"}
        ``direct``: sparse LU of the bordered Liouvillian; ``gmres``: GMRES left-
        preconditioned with the exact inverse of the no-jump part. ``auto``
        picks direct below ``DIRECT_STEADY_LIMIT`` stored numbers.
    tol : float
        Relative residual target of the iterative solve.

    Returns
    -------
    Result
        ``.expect`` at ``t = inf`` with ``sem = 0``.
    """
    model = _check_model(model)
    names = _check_observables(observables)
    if method not in ("auto", "direct", "gmres"):
        raise ValueError(f"method must be 'auto', 'direct' or 'gmres', got {method!r}")
    tol = v.real("tol", tol, lo=0.0, lo_open=True, hi=1e-3)
    if model.is_closed:
        raise ValueError("steadystate needs jump channels (gamma > 0 or gamma_pump > 0); "
                         "a closed chain has no unique steady state")
    space = SectorSpace(model)
    if model.gamma_pump == 0:
        sectors = [0]
    elif model.gamma == 0:
        # pump only: magnons are never removed, so everything ends all down unless a
        # lower sector holds a dark state (a no-jump eigenstate that never decays)
        _refuse_dark_states(space, range(model.initial_sector, model.N))
        sectors = [model.N]
    else:
        sectors = list(range(model.N + 1))
    layout = BlockLayout(space, sectors)
    info = {}
    if len(sectors) == 1:
        x = layout.pure(sectors[0], np.ones(1, dtype=complex))
    else:
        if method == "auto":
            method = "direct" if layout.size <= DIRECT_STEADY_LIMIT else "gmres"
        trace = layout.trace()
        e = np.zeros(layout.size, dtype=complex)
        e[layout.offsets[sectors[0]]] = 1.0  # the (0, 0) element of the lowest block
        if method == "direct":
            L = (_nojump_generator(layout) + _feed_generator(layout)).tocsr()
            # bordered system L x + e (t.x) = e has the unique solution x_ss
            Lb = (L + sp.csr_matrix(np.outer(e, trace)) if layout.size < 2000
                  else L + sp.csr_matrix(e[:, None]) @ sp.csr_matrix(trace[None, :]))
            x = spla.spsolve(Lb.tocsc(), e)
            if not np.all(np.isfinite(x)):
                raise ValueError("the steady state is not unique for this model (singular "
                                 "Liouvillian: a dark state or a conserved quantity)")
        else:
            F = _feed_generator(layout)
            Ainv = _NoJumpInverse(layout)

            def matvec(x):
                return x + Ainv.apply(F @ x + e * (trace @ x))

            op = spla.LinearOperator((layout.size, layout.size), matvec=matvec, dtype=complex)
            rhs = Ainv.apply(e)
            iters = [0]

            def count(_):
                iters[0] += 1

            x, code = spla.gmres(op, rhs, rtol=tol, atol=0.0, restart=80, maxiter=50,
                                 callback=count, callback_type="pr_norm")
            if code != 0:
                raise RuntimeError(f"steady-state GMRES did not converge (code {code})")
            info["gmres_iterations"] = iters[0]
        x = x / (trace @ x)
        for m in sectors:  # enforce Hermiticity (removes round-off only)
            B = layout.block(x, m)
            B[...] = 0.5 * (B + B.conj().T)
        info["method"] = method
        L_check = (_nojump_generator(layout) + _feed_generator(layout)).tocsr()
        info["residual"] = float(np.linalg.norm(L_check @ x) / max(np.linalg.norm(x), 1e-300))
    obs = layout.observables(x, names)
    means = {k: val[None, :] for k, val in obs.items()}
    res = Result(expect_table(np.array([np.inf]), model.N, means),
                 _metadata(model, "steadystate", **info))
    res.blocks = {m: layout.block(x, m).copy() for m in sectors}
    return res


def _refuse_dark_states(space: SectorSpace, sectors, rtol: float = 1e-10) -> None:
    """Raise if a sector's ``H_eff`` has an eigenvalue with zero imaginary part."""
    for m in sectors:
        H = space.sector(m).heff_sparse(space.a).toarray()
        lam = np.linalg.eigvals(H)
        scale = max(1.0, float(np.abs(lam).max()))
        if np.min(np.abs(lam.imag)) <= rtol * scale:
            raise ValueError(f"sector m = {m} has a non-decaying (dark) state; the steady "
                             "state is not unique for this model")


# ---------------------------------------------------------------------------- exit sides
@blas_threads
def exit_probabilities(model: ChainModel) -> pd.Series:
    """Expected number of losses at each edge, integrated to infinite time.

    For a pump-free model started with one magnon every trajectory ends with
    exactly one loss, so the values are the probabilities that the magnon
    leaves left (``loss_left``) or right (``loss_right``); they sum to 1.

    Computed exactly: ``X = int_0^inf rho(t) dt`` solves ``L X = -rho(0)`` on the
    sectors ``m >= 1``, which (without a pump) is block triangular, solved from
    the initial sector down with the exact no-jump inverse.
    """
    model = _check_model(model)
    if model.gamma_pump > 0:
        raise ValueError(f"exit_probabilities needs gamma_pump = 0 (a pump never lets the "
                         f"chain empty), got gamma_pump = {model.gamma_pump}")
    if model.gamma <= 0:
        raise ValueError(f"exit_probabilities needs edge loss gamma > 0, got {model.gamma}")
    space = SectorSpace(model)
    m0, psi0 = space.initial_state()
    out = {"loss_left": 0.0, "loss_right": 0.0}
    if m0 == 0:
        return pd.Series(out, name="expected_losses")
    sectors = list(range(1, m0 + 1))
    layout = BlockLayout(space, sectors)
    Ainv = _NoJumpInverse(layout)
    F = _feed_generator(layout)
    x = np.zeros(layout.size, dtype=complex)
    src = -layout.pure(m0, psi0)
    # triangular sweep: X_m0 = A^-1(-rho0); X_{m-1} = A^-1(-F X_m)
    for m in range(m0, 0, -1):
        xm = Ainv.apply(src)
        keep = np.zeros(layout.size, dtype=bool)
        d, o = layout.dims[m], layout.offsets[m]
        keep[o:o + d * d] = True
        xm[~keep] = 0.0
        x += xm
        src = -(F @ xm)
    for ch in space.channels:
        tot = 0.0
        for m in sectors:
            occ = (space.sector(m).sites == ch.site).any(axis=1)
            tot += ch.rate * layout.block(x, m).diagonal().real[occ].sum()
        out[ch.name] = tot
    return pd.Series(out, name="expected_losses")
