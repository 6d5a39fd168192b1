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
- ``mesolve``: small problems assemble the block Liouvillian as a sparse matrix
  and take its exact action ``expm(L t) v`` (scipy's ``expm_multiply``,
  truncation to double precision); above ``CHEBYSHEV_MIN_SIZE`` stored numbers
  the generator is applied matrix-free and ``exp(L t)`` expanded in Chebyshev
  polynomials with a-posteriori truncation (:mod:`._blockops`, memory a few
  copies of the blocks, all output times from one expansion); a pump-free
  model started with at most one magnon only needs the no-jump path of its
  one-magnon sector (the rest is the lost population), which runs for chains
  of any length.
- ``steadystate``: ``L x = 0`` with unit trace, either by a sparse direct solve
  (small problems) or by GMRES on the matrix-free generator, left-preconditioned
  with the exact inverse of the block no-jump part plus the jumps of the
  dominant direction (block triangular in ``m``: one sweep of exact block solves
  ``-i(H X - X H^+) = Y`` in the eigenbasis of ``H``, Schur-based fallback when
  that basis is ill-conditioned).
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
from . import observables as OBS
from ._threads import blas_threads
from .model import ChainModel
from .observables import OBSERVABLES
from .results import Result, expect_table
from .results import metadata as result_metadata
from .sectors import SectorSpace

__all__ = ["sesolve", "mesolve", "steadystate", "exit_probabilities", "BlockLayout"]

#: Above this many stored numbers the steady state switches from a sparse
#: direct solve to preconditioned GMRES (fill-in of the direct solve grows fast).
DIRECT_STEADY_LIMIT = 1_000

#: Memory budget of the steady-state GMRES basis (sets its restart length).
GMRES_BASIS_BYTES = 2_000_000_000

#: Above this many stored numbers mesolve switches from ``expm_multiply`` of the
#: assembled generator to the matrix-free Chebyshev propagator (both exact to
#: round-off; the crossover is a measured timing).
CHEBYSHEV_MIN_SIZE = 20_000


def _metadata(model: ChainModel, solver: str, **extra) -> dict:
    return result_metadata(solver, model, ntraj=0, **extra)


def _check_observables(observables, pairs=None, N: int = 2, count: bool = True):
    """``(names, pairs)``; without pairs the names keep the caller's order."""
    allowed = OBSERVABLES if count else tuple(o for o in OBSERVABLES if o != "count")
    default = ("j", "j_bond", "flow", "m", "n", "norm")
    if pairs is None:
        if observables is None:
            return default, None
        obs = []
        for o in ((observables,) if isinstance(observables, str) else tuple(observables)):
            obs.extend(("pm_re", "pm_im") if o == "pm" else (o,))
        for o in obs:
            if o not in allowed:
                raise ValueError(f"observable must be one of {allowed}, got {o!r}")
        OBS.resolve(obs, None, N, allowed=allowed)
        return tuple(obs), None
    return OBS.resolve(observables, pairs, N, allowed=allowed, default=default)


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

    def observables(self, x: np.ndarray, names, pairs=None) -> dict:
        """Expectation values of one stacked density matrix ``x``
        (:func:`thermospin_mc.observables.evaluate_blocks`)."""
        return OBS.evaluate_blocks(self, x, names, pairs)

    def pure(self, m: int, psi: np.ndarray) -> np.ndarray:
        x = np.zeros(self.size, dtype=complex)
        d, o = self.dims[m], self.offsets[m]
        x[o:o + d * d] = np.outer(psi, psi.conj()).ravel()
        return x

    def diagonal(self, weights, drop: tuple[int, ...] = ()) -> np.ndarray:
        """Block-diagonal, site-diagonal ``rho`` from ``[(m, weights over sector m)]``.

        Weight in the sectors ``drop`` is left out (a caller whose layout omits
        sectors that cannot contribute, e.g. the all-up sector for losses);
        weight in any other sector outside the layout is an error.
        """
        x = np.zeros(self.size, dtype=complex)
        for m, w in weights:
            if m not in self.dims:
                if m in drop:
                    continue
                raise ValueError(f"the initial state has weight in sector m = {m}, which "
                                 f"this solver's layout {self.sectors} does not hold")
            x[self._diag_idx[m]] = w
        return x

    def initial(self, model: ChainModel, drop: tuple[int, ...] = ()) -> np.ndarray:
        """The model's initial density matrix (pure or a site-diagonal mixture);
        see :meth:`diagonal` for ``drop``."""
        if model.is_mixed:
            return self.diagonal(self.space.initial_mixture(), drop)
        return self.pure(*self.space.initial_state())


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
    """Jump (feeding) part ``X -> sum_k r_k P_k X P_k^T`` between neighbouring blocks
    (dephasing: inside a block, with the signs of ``sigma^z``)."""
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
            if ch.kind == "dephasing":
                # sigma^z X sigma^z: element (a, b) times s_a s_b (s = +1 up, -1 down)
                amp = space.jump_amplitudes(ch, m)
                vals.append(ch.rate * np.outer(amp, amp).ravel())
            else:
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
    names, _ = _check_observables(observables, None, model.N, count=False)
    if model.is_mixed:
        raise ValueError("sesolve needs a pure initial state, got a mixture; use mesolve")
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
        return OBS.assemble(names, N, a, n=self.occ.T @ p, jb=jb,
                            magnons=self.m * norm + (self.lost_to or 0) * lost,
                            norm=norm + lost)


# ---------------------------------------------------------------------------- mesolve
@blas_threads
def mesolve(model: ChainModel, times, observables=None, pairs=None,
            method: str = "auto") -> Result:
    """Exact Lindblad evolution of the block density matrix.

    Parameters
    ----------
    model : ChainModel
        The initial state (pure, or a site-diagonal mixture spanning several
        sectors) is prepared at ``t = 0``.
    times : array_like
        Non-decreasing output times ``>= 0`` (0 need not be among them).
    observables : sequence of str, optional
        Subset of ``j, j_bond, flow, m, n, norm, nn, pm_re, pm_im, count``
        (``pm`` for both parts; default ``j, j_bond, flow, m, n, norm``, plus the
        two-point ones when ``pairs`` are given). ``count``: expected number of
        jumps of each channel in ``[0, t]``, ``int_0^t rate_k Tr(L_k^+ L_k rho)``,
        integrated exactly with the state (table rows ``count:<channel name>``).
    pairs : sequence of (i, k), optional
        1-based site pairs of ``nn`` and ``pm``.
    method : {"auto", "expm", "chebyshev"}
        ``expm``: the assembled sparse block Liouvillian and scipy's
        ``expm_multiply``; ``chebyshev``: the matrix-free generator and a
        Chebyshev expansion of ``exp(L t)`` with a-posteriori truncation
        (:mod:`thermospin_mc._blockops`). ``auto``: ``expm`` up to
        ``CHEBYSHEV_MIN_SIZE`` stored numbers, ``chebyshev`` above.

    Returns
    -------
    Result
        ``.expect`` with ``sem = 0`` and ``ntraj = 0``.

    Notes
    -----
    Memory is ``sum_m C(N, m)^2`` complex numbers over the reachable sectors
    (``chebyshev``: about six copies of them; ``expm``: plus the sparse
    generator, about 2N nonzeros per stored number); a
    model with loss channels only, started with at most one magnon, costs
    ``O(N^2)`` and runs for N in the thousands.
    """
    model = _check_model(model)
    times = v.times(times)
    names, pairs = _check_observables(observables, pairs, model.N)
    if method not in ("auto", "expm", "chebyshev"):
        raise ValueError(f"method must be 'auto', 'expm' or 'chebyshev', got {method!r}")
    extra = {} if pairs is None else {"pairs": np.asarray(pairs).tolist()}
    simple = pairs is None and "count" not in names and not model.is_mixed
    if model.is_closed and simple:
        res = sesolve(model, times, names)
        return res.replace(metadata={**res.metadata, "solver": "mesolve"})
    space = SectorSpace(model)
    only_loss = all(ch.kind == "loss" for ch in model.channels)
    if simple and only_loss and model.initial_sector <= 1:
        # rho_1(t) = psi~ psi~^+ (no-jump path), the rest sits in the all-up state
        m0, psi0 = space.initial_state()
        layout = _PureLayout(space, m0, lost_to=0 if m0 == 1 else None)
        op = -1j * space.sector(m0).heff_sparse(space.a)
        series = [layout.observables(psi, names) for psi in _evolve_grid(op, psi0, times)]
    else:
        layout = BlockLayout(space, model.reachable_sectors())
        if method == "auto":
            method = "expm" if layout.size <= CHEBYSHEV_MIN_SIZE else "chebyshev"
        extra["method"] = method
        if method == "chebyshev":
            series = _mesolve_chebyshev(model, layout, times, names, pairs, extra)
        else:
            series = _mesolve_expm(model, layout, times, names, pairs)
    means = _stack(series, names)
    return Result(expect_table(times, model.N, means, pairs=pairs, channels=model.channels),
                  _metadata(model, "mesolve", **extra))


def _mesolve_expm(model, layout, times, names, pairs) -> list[dict]:
    """Observables at ``times`` by ``expm_multiply`` of the assembled generator."""
    L = (_nojump_generator(layout) + _feed_generator(layout)).tocsr()
    x0 = layout.initial(model)
    nch = len(model.channels) if "count" in names else 0
    if nch:
        # augmented generator: d c_k / dt = rate_k Tr(L_k^+ L_k rho), c_k(0) = 0
        R = sp.csr_matrix(OBS.count_rates(layout, model.channels).astype(complex))
        L = sp.bmat([[L, None], [R, sp.csr_matrix((nch, nch), dtype=complex)]],
                    format="csr")
        x0 = np.concatenate([x0, np.zeros(nch, dtype=complex)])
    series = []
    for x in _evolve_grid(L, x0, times):
        obs = layout.observables(x[:layout.size], names, pairs)
        if nch:
            obs["count"] = x[layout.size:].real.copy()
        series.append(obs)
    return series


def _mesolve_chebyshev(model, layout, times, names, pairs, info: dict) -> list[dict]:
    """Observables at ``times`` by the matrix-free Chebyshev propagator."""
    from ._blockops import BlockGenerator, chebyshev_evolve

    gen = BlockGenerator(layout)
    lin = [n for n in names if n != "count"]
    if pairs is not None:  # observe runs once per term: build the pair maps once
        import functools

        layout.space.pair_maps = functools.lru_cache(maxsize=None)(layout.space.pair_maps)
    shapes = {}
    N = model.N

    def observe(x):
        obs = layout.observables(x, lin, pairs)
        if "m" in obs:  # N/2 - sum_m m p_m is affine: keep its linear part
            obs["m"] = obs["m"] - N / 2
        for n in lin:
            shapes[n] = obs[n].size
        return np.concatenate([obs[n] for n in lin]) if lin else np.zeros(0)

    R = None
    if "count" in names:
        R = sp.csr_matrix(OBS.count_rates(layout, model.channels))
    vals, counts, run = chebyshev_evolve(gen, layout.initial(model), times, observe, R)
    info.update(run)
    series = []
    for i in range(times.size):
        obs, pos = {}, 0
        for n in lin:
            obs[n] = vals[i, pos:pos + shapes[n]].copy()
            pos += shapes[n]
        if "m" in obs:
            obs["m"] = obs["m"] + N / 2
        if R is not None:
            obs["count"] = counts[i].copy()
        series.append(obs)
    return series


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
            # ||V||_F ||V^-1||_F >= cond_2(V): a conservative, SVD-free conditioning test
            try:
                W = np.linalg.inv(V)
                kappa = np.linalg.norm(V) * np.linalg.norm(W)
            except np.linalg.LinAlgError:
                kappa = np.inf
            if np.isfinite(kappa) and kappa < cond_limit:
                den = -1j * (lam[:, None] - lam.conj()[None, :])
                # a (numerically) non-decaying eigenmode: a dark state of H_eff
                if np.min(np.abs(den)) <= 1e-13 * max(1.0, float(np.abs(den).max())):
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
            out[o:o + d * d] = self.solve_block(m, y[o:o + d * d].reshape(d, d)).ravel()
        return out

    def solve_block(self, m: int, Y: np.ndarray) -> np.ndarray:
        """``X`` with ``-i (H_m X - X H_m^+) = Y`` (``Y`` a ``d x d`` block)."""
        kind, A, B, den = self.data[m]
        if kind == "eig":
            V, W = A, B
            return V @ ((W @ Y @ W.conj().T) / den) @ V.conj().T
        T, Q = A, B
        C = Q.conj().T @ (1j * Y) @ Q
        Xt, scale, info = sla.lapack.ztrsyl(T, T, C, trana="N", tranb="C", isgn=-1)
        if info < 0:
            raise RuntimeError(f"ztrsyl failed with info = {info}")
        return Q @ (Xt / scale) @ Q.conj().T


# ---------------------------------------------------------------------------- steady state
@blas_threads
def steadystate(model: ChainModel, observables=None, method: str = "auto",
                tol: float = 1e-13, pairs=None) -> Result:
    """Exact steady state of the Lindblad equation.

    Parameters
    ----------
    model : ChainModel
        Must have a loss or a pump channel (dephasing alone conserves the
        magnon number, so the steady state is not unique). With losses only
        the steady state is the all-up state, with pumps only the all-down
        state (after checking that no magnons stay trapped); with both, the
        sectors ``0..N`` are solved.
    observables : sequence of str, optional
        Subset of ``j, j_bond, flow, m, n, norm, nn, pm_re, pm_im`` (``pm`` for
        both parts; default ``j, j_bond, flow, m, n, norm``, plus the two-point
        ones when ``pairs`` are given).
    method : {"auto", "direct", "gmres"}
        ``direct``: sparse LU of the bordered Liouvillian; ``gmres``: GMRES left-
        preconditioned with the exact inverse of the no-jump part. ``auto``
        picks direct below ``DIRECT_STEADY_LIMIT`` stored numbers.
    tol : float
        Relative residual target of the iterative solve.

    pairs : sequence of (i, k), optional
        1-based site pairs of ``nn`` and ``pm``.

    Returns
    -------
    Result
        ``.expect`` at ``t = inf`` with ``sem = 0``.
    """
    model = _check_model(model)
    names, pairs = _check_observables(observables, pairs, model.N, count=False)
    if method not in ("auto", "direct", "gmres"):
        raise ValueError(f"method must be 'auto', 'direct' or 'gmres', got {method!r}")
    tol = v.real("tol", tol, lo=0.0, lo_open=True, hi=1e-3)
    if model.is_closed:
        raise ValueError("steadystate needs jump channels (gamma > 0 or gamma_pump > 0); "
                         "a closed chain has no unique steady state")
    has_loss, has_pump = model.has_kind("loss"), model.has_kind("pump")
    if not (has_loss or has_pump):
        raise ValueError("steadystate needs a loss or a pump channel: with dephasing only the "
                         "magnon number is conserved and the steady state is not unique")
    space = SectorSpace(model)
    secs0 = model.initial_sectors
    if not has_pump:
        # loss only: magnons only leave, so everything ends all up unless a sector
        # holds a state that never loses its magnons
        _refuse_trapped(space, range(max(secs0[-1], 1), 0, -1), model, max_dim=2000)
        sectors = [0]
    elif not has_loss:
        # pump only: magnons are never removed, so everything ends all down unless a
        # lower sector holds a state that the pumps never leave
        _refuse_trapped(space, range(secs0[0], model.N), model)
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
            from ._blockops import BlockGenerator, triangular_solve

            gen = BlockGenerator(layout)
            Ainv = _NoJumpInverse(layout)
            # preconditioner: the no-jump part plus the jumps of the dominant direction
            # (block triangular in m, one sweep of exact block solves)
            rate = {k: sum(ch.rate for ch in model.channels if ch.kind == k)
                    for k in ("loss", "pump")}
            dm = -1 if rate["loss"] >= rate["pump"] else 1

            def Minv(y):
                return triangular_solve(gen, Ainv.solve_block, y, dm)

            def matvec(x):
                return x + Minv(gen.feed_except(x, dm) + e * (trace @ x))

            op = spla.LinearOperator((layout.size, layout.size), matvec=matvec, dtype=complex)
            rhs = Minv(e)
            iters = [0]

            def count(_):
                iters[0] += 1

            # the Krylov basis holds `restart` vectors: at most ~2 GB of them
            restart = int(min(80, max(8, GMRES_BASIS_BYTES // (16 * layout.size))))
            x, code = spla.gmres(op, rhs, rtol=tol, atol=0.0, restart=restart,
                                 maxiter=max(50, 4000 // restart), callback=count,
                                 callback_type="pr_norm")
            if code != 0:
                raise RuntimeError(f"steady-state GMRES did not converge (code {code})")
            info["gmres_iterations"] = iters[0]
        x = x / (trace @ x)
        for m in sectors:  # enforce Hermiticity (removes round-off only)
            B = layout.block(x, m)
            B[...] = 0.5 * (B + B.conj().T)
        info["method"] = method
        from ._blockops import BlockGenerator

        r = BlockGenerator(layout).apply(x)
        info["residual"] = float(np.linalg.norm(r) / max(np.linalg.norm(x), 1e-300))
    obs = layout.observables(x, names, pairs)
    means = {k: val[None, :] for k, val in obs.items()}
    if pairs is not None:
        info["pairs"] = np.asarray(pairs).tolist()
    return Result(expect_table(np.array([np.inf]), model.N, means, pairs=pairs),
                  _metadata(model, "steadystate", **info),
                  blocks={m: layout.block(x, m).copy() for m in sectors})


def _refuse_trapped(space: SectorSpace, sectors, model: ChainModel,
                    max_dim: int | None = None) -> None:
    """Raise if population can stay forever in one of ``sectors`` (no magnon
    change). Without dephasing that is a dark state of ``H_eff``; with dephasing
    the in-sector generator (no-jump part plus the dephasing jumps) must have
    no stationary state. Sectors above ``max_dim`` states are not checked."""
    if max_dim is not None:
        sectors = [m for m in sectors if space.dim(m) <= max_dim]
    if not model.has_kind("dephasing"):
        _refuse_dark_states(space, sectors)
        return
    for m in sectors:
        layout = BlockLayout(space, [m])
        Lm = (_nojump_generator(layout) + _feed_generator(layout)).tocsc()
        if layout.size <= 400:
            sv = np.linalg.svd(Lm.toarray(), compute_uv=False)
            singular = sv[-1] <= 1e-10 * max(sv[0], 1e-300)
        else:
            try:
                lu = spla.splu(Lm)
                u = np.abs(lu.U.diagonal())
                singular = u.min() <= 1e-12 * max(u.max(), 1e-300)
            except RuntimeError:
                singular = True
        if singular:
            raise ValueError(f"sector m = {m} has a state that never changes its magnon "
                             "number; the steady state is not unique for this model")


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
    """Expected number of jumps of each loss channel, integrated to infinite time.

    For a pump-free model started with one magnon every trajectory ends with
    exactly one loss, so the values are the probabilities that the magnon
    leaves through each loss channel (``loss_left`` / ``loss_right`` for the
    paper's edge loss); they sum to 1. With ``m`` initial magnons they sum to
    ``m`` (for a mixture: to the mean initial magnon number).

    Computed exactly: ``X = int_0^inf rho(t) dt`` solves ``L X = -rho(0)`` on the
    sectors ``m >= 1``, which (without a pump) is block triangular, solved from
    the top sector down: with the exact no-jump inverse, or, with dephasing
    (whose jumps stay inside a block), with the in-block generator.

    Returns
    -------
    pandas.Series
        Indexed by the loss channel names, in channel order.
    """
    model = _check_model(model)
    if model.has_kind("pump"):
        raise ValueError(f"exit_probabilities needs gamma_pump = 0 (a pump never lets the "
                         f"chain empty), got gamma_pump = {model.gamma_pump}"
                         if not model._explicit else
                         "exit_probabilities needs a model without pump channels (a pump "
                         "never lets the chain empty)")
    losses = [ch for ch in model.channels if ch.kind == "loss"]
    if not losses:
        raise ValueError(f"exit_probabilities needs edge loss gamma > 0, got {model.gamma}"
                         if not model._explicit else
                         "exit_probabilities needs at least one loss channel")
    space = SectorSpace(model)
    out = {ch.name: 0.0 for ch in losses}
    top = model.initial_sectors[-1]
    if top == 0:
        return pd.Series(out, name="expected_losses")
    sectors = list(range(1, top + 1))
    layout = BlockLayout(space, sectors)
    F = _feed_generator(layout)
    rho0 = layout.initial(model, drop=(0,))  # all up: nothing left to lose
    dephasing = model.has_kind("dephasing")
    Ainv = None if dephasing else _NoJumpInverse(layout)
    x = np.zeros(layout.size, dtype=complex)
    carry = np.zeros(layout.size, dtype=complex)
    # triangular sweep: L_m X_m = -(rho0_m + feed from X_{m+1}), from the top down
    for m in range(top, 0, -1):
        d, o = layout.dims[m], layout.offsets[m]
        keep = np.zeros(layout.size, dtype=bool)
        keep[o:o + d * d] = True
        src = np.where(keep, -(rho0 + carry), 0.0)
        if Ainv is not None:
            xm = Ainv.apply(src)
        else:
            xm = np.zeros(layout.size, dtype=complex)
            xm[o:o + d * d] = _solve_block(layout, m, src[o:o + d * d])
        xm[~keep] = 0.0
        x += xm
        carry = F @ xm
        carry[keep] = 0.0  # the in-block (dephasing) part is already in the block solve
    for ch in losses:
        tot = 0.0
        for m in sectors:
            occ = (space.sector(m).sites == ch.site).any(axis=1)
            tot += ch.rate * layout.block(x, m).diagonal().real[occ].sum()
        out[ch.name] = tot
    return pd.Series(out, name="expected_losses")


def _solve_block(layout: BlockLayout, m: int, y: np.ndarray) -> np.ndarray:
    """Solve ``L_m X = y`` with ``L_m`` the in-block generator of sector ``m`` (no-jump
    part plus the jumps that stay in the sector); raises if ``L_m`` is singular."""
    sub = BlockLayout(layout.space, [m])
    Lm = (_nojump_generator(sub) + _feed_generator(sub)).tocsc()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", spla.MatrixRankWarning)
        try:
            X = spla.spsolve(Lm, y)
        except (RuntimeError, spla.MatrixRankWarning) as exc:
            raise ValueError(f"sector m = {m} has a (dark) state that never loses its "
                             "magnons; exit_probabilities needs every magnon to leave, use "
                             "mesolve's count observables at long times instead") from exc
    if not np.all(np.isfinite(X)):
        raise ValueError(f"sector m = {m} has a (dark) state that never loses its magnons; "
                         "exit_probabilities needs every magnon to leave, use mesolve's "
                         "count observables at long times instead")
    return X
