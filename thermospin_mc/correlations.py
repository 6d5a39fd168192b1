"""Two-time correlations and their spectra by the quantum regression theorem (MODEL.md 12).

For ``tau >= 0``, ``<A(t0 + tau) B(t0)> = Tr[A exp(L tau) X]`` with ``X = B rho(t0)``
(``t0 = None``: the steady state). ``rho`` is block diagonal in the magnon
number, so ``X`` has one block per sector ``m`` of ``rho``: square for a
conserving ``B`` (offset 0), the coherence block ``(m + 1, m)`` for ``B`` of
offset +1 (``s-_i``), ``(m - 1, m)`` for offset -1 (``s+_i``). The generator
maps the blocks of one offset among themselves,

    d X_m / dt = -i (H_{m + d} X_m - X_m H_m^+) + sum_k r_k P_k X_{m'} P_k^T,

so ``X`` evolves on them alone (:class:`~thermospin_mc.blocks.CoherenceLayout`
and the block generator of :mod:`.blocks`); ``A`` must undo the offset, or the
trace vanishes on every block (such a pair is refused).

- Time evolution: exact action of ``exp(L tau)`` on the assembled sparse
  generator, by ``expm_multiply`` (:func:`~thermospin_mc.blocks.evolve_grid`)
  up to ``EXPM_LIMIT`` stored numbers, above it by the package's Chebyshev
  propagator (:func:`~thermospin_mc._blockops.chebyshev_evolve`, all ``taus``
  from one expansion) on the same matrix (:class:`SparseChebyshev`).
- Spectrum, QuTiP's ``spectrum()`` convention: ``S(omega) = 2 Re int_0^inf
  exp(-i omega tau) [<A(tau) B(0)>_ss - <A>_ss <B>_ss] dtau = 2 Re Tr[A (i omega
  - L)^-1 (B rho_ss - <B>_ss rho_ss)]``, exactly: on trace-free operators every
  mode decays and the integral is the resolvent (subtracting ``<B> rho_ss``
  removes the steady mode; offsets +-1 have none and ``<A> <B> = 0``). One solve
  per ``omega``: sparse LU up to ``DIRECT_LIMIT`` stored numbers, above it
  preconditioned GMRES (:class:`ShiftedSolver`).

Length: a little over 500 lines: the regression system, its Chebyshev step and the
shifted solver all work on the same coherence layout and are used only here.
"""

from __future__ import annotations

import weakref
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from threadpoolctl import threadpool_limits

from . import _threads
from . import _validate as v
from ._blockops import chebyshev_evolve
from ._threads import blas_threads
from .blocks import (
    BlockLayout,
    CoherenceLayout,
    check_model,
    evolve_grid,
    feed_generator,
    nojump_generator,
)
from .blocksolve import GMRES_BASIS_BYTES, NoJumpInverse
from .exact import mesolve, steadystate
from .model import ChainModel
from .operators import Operator
from .sectors import SectorSpace

__all__ = ["correlation", "spectrum", "RegressionSystem", "SparseChebyshev", "ShiftedSolver",
           "EXPM_LIMIT", "DIRECT_LIMIT", "STEP_CHUNKS"]

#: Above this many stored numbers the correlation switches from ``expm_multiply``
#: to the Chebyshev propagator (both exact to round-off; a measured crossover).
EXPM_LIMIT = 2_000

#: Up to this many stored numbers the spectrum's shifted systems are solved by a
#: sparse LU per frequency, above it by preconditioned GMRES (a measured crossover).
DIRECT_LIMIT = 1_000

#: Offsets ``(A, B)`` that pair: ``A`` undoes the magnon change of ``B``.
PAIRS = ((0, 0), (-1, 1), (1, -1))


# --------------------------------------------------------------------------- input
def _operator(op, N: int, what: str) -> Operator:
    """``op`` as an :class:`Operator` of ``N`` sites (a string is parsed as words)."""
    if isinstance(op, str):
        try:
            return Operator.parse(op, N, name=what)
        except ValueError as exc:
            msg = str(exc)
            raise ValueError(f"{what}: {msg[6:] if msg.startswith('text: ') else msg}") from None
    if not isinstance(op, Operator):
        raise ValueError(f"{what} must be a tsm.Operator or operator words like '+3' or 'n2', "
                         f"got {type(op).__name__}")
    if op.N != N:
        raise ValueError(f"{what} acts on N = {op.N} sites, the model has N = {N}")
    return op


def _pair(model: ChainModel, A, B) -> tuple[Operator, Operator]:
    A, B = _operator(A, model.N, "A"), _operator(B, model.N, "B")
    if (A.offset, B.offset) not in PAIRS:
        raise ValueError(f"A and B cannot pair: A {A.name!r} has offset {A.offset:+d} and B "
                         f"{B.name!r} offset {B.offset:+d}; correlations need offsets 0 and 0, "
                         "-1 and +1, or +1 and -1")
    return A, B


def _taus(taus) -> np.ndarray:
    arr = v.real_array("taus", np.atleast_1d(taus), lo=0.0)
    if arr.size == 0:
        raise ValueError("taus must contain at least one delay, got an empty array")
    if np.any(np.diff(arr) < 0):
        raise ValueError("taus must be non-decreasing, got a decreasing step at index "
                         f"{int(np.argmax(np.diff(arr) < 0)) + 1}")
    return arr


def _state(model: ChainModel, t0) -> dict:
    """Blocks ``{m: rho_m}`` of the steady state (``t0=None``) or of ``rho(t0)`` (every
    reachable sector, zero blocks included: a set the dynamics never leaves)."""
    n_jobs = _threads.current()
    if t0 is None:
        return steadystate(model, observables=["norm"], n_jobs=n_jobs).blocks
    t0 = v.real("t0", t0, lo=0.0)
    st = mesolve(model, [t0], observables=["norm"], states=True, n_jobs=n_jobs).states[0]
    space = SectorSpace(model)
    return {m: st.blocks[m] if m in st.blocks else np.zeros((space.dim(m),) * 2, dtype=complex)
            for m in model.reachable_sectors()}


def _trace(layout: CoherenceLayout) -> np.ndarray:
    t = np.zeros(layout.size, dtype=complex)
    for m in layout.sectors:
        np.fill_diagonal(layout.block(t, m), 1.0)
    return t


# --------------------------------------------------------------------------- the system
class RegressionSystem:
    """``X = B rho`` on its blocks, the generator there and the trace functional of ``A``.

    Parameters
    ----------
    model : ChainModel
    A, B : Operator
        Offsets that pair (``A.offset == -B.offset``, checked by the callers).
    rho : dict
        Blocks ``{m: rho_m}`` of a state on a set of sectors the dynamics
        never leaves (the steady sectors, or the reachable ones).

    Attributes
    ----------
    layout : CoherenceLayout
        Blocks ``(m + B.offset, m)`` for the sectors ``m`` of ``rho``.
    L, F : scipy.sparse.csr_matrix
        The generator on ``layout`` and its jump part.
    x0 : ndarray
        ``B rho`` stacked.
    a : ndarray
        ``Tr(A X) = a @ x`` for stacked ``x``.
    """

    def __init__(self, model: ChainModel, A: Operator, B: Operator, rho: dict):
        space = SectorSpace(model)
        self.space = space
        self.layout = lay = CoherenceLayout(space, sorted(rho), B.offset)
        self.F = feed_generator(lay) if lay.size else sp.csr_matrix((0, 0), dtype=complex)
        self.L = (nojump_generator(lay) + self.F).tocsr() if lay.size else self.F
        self.x0 = np.zeros(lay.size, dtype=complex)
        self.a = np.zeros(lay.size, dtype=complex)
        for m in lay.sectors:
            lay.block(self.x0, m)[...] = B.sector_matrix(space, m) @ np.asarray(rho[m])
            lay.block(self.a, m)[...] = A.sector_matrix(space, m + lay.shift).T.toarray()

    def trace(self) -> np.ndarray:
        """The trace functional (square blocks, offset 0 only)."""
        return _trace(self.layout)

    def evolve(self, taus: np.ndarray, method: str = "auto") -> np.ndarray:
        """``Tr[A exp(L tau) x0]`` at each of ``taus`` (``auto``: ``expm`` up to
        ``EXPM_LIMIT`` stored numbers, ``chebyshev`` above)."""
        if self.layout.size == 0:
            return np.zeros(taus.size, dtype=complex)
        if method == "auto":
            method = "expm" if self.layout.size <= EXPM_LIMIT else "chebyshev"
        if method == "expm":
            return np.array([self.a @ x for x in evolve_grid(self.L, self.x0, taus)])
        a = self.a

        def observe(x):
            z = a @ x
            return np.array([z.real, z.imag])

        vals, _, _ = chebyshev_evolve(SparseChebyshev(self.L, self.layout), self.x0, taus,
                                      observe)
        return vals[:, 0] + 1j * vals[:, 1]


class SparseChebyshev:
    """An assembled sparse generator as :func:`~thermospin_mc._blockops.chebyshev_evolve`
    takes it (``width``, ``gamma``, ``chebyshev_step``), for any stacked vector.

    ``width``: the largest ``|E_a - E_b|``, ``E_a`` an eigenvalue of the rows'
    sector ``h``, ``E_b`` of the columns'; ``gamma``: the largest decay rate of
    either (the generator's eigenvalues have real parts in ``[-gamma, 0]``). A
    step is one fused pass over ``STEP_CHUNKS`` fixed row ranges shared out
    between ``n_jobs`` threads; the norm adds them in order, so results do not
    depend on the thread count.
    """

    def __init__(self, L: sp.csr_matrix, layout: CoherenceLayout, n_jobs: int | None = None):
        self.L = L.tocsr()
        self.L.sort_indices()
        space = layout.space
        ext, dec = {}, {}
        for k in sorted({k for m in layout.sectors for k in (m, m + layout.shift)}):
            sec = space.sector(k)
            e = np.linalg.eigvalsh(sec.h_sparse(space.a).toarray())
            ext[k] = (float(e[0]), float(e[-1]))
            dec[k] = float(sec.decay.max())
        self.width = max(max(ext[m + layout.shift][1] - ext[m][0],
                             ext[m][1] - ext[m + layout.shift][0]) for m in layout.sectors)
        self.gamma = max(dec.values())
        self.size = n = layout.size
        edges = np.linspace(0, n, min(STEP_CHUNKS, max(n, 1)) + 1).astype(np.int64)
        self.chunks = list(zip(edges[:-1], edges[1:], strict=True))
        threads = _threads.current() if n_jobs is None else int(n_jobs)
        self._pool = None
        if min(threads, len(self.chunks)) > 1:
            self._pool = ThreadPoolExecutor(min(threads, len(self.chunks)))
            weakref.finalize(self, self._pool.shutdown, wait=False)

    def chebyshev_step(self, Hk, Hm, new, c: float, f: float, acc, w: float) -> float:
        """``new = f (L - c) Hk + Hm`` and ``acc += w Hk`` (``acc=None``: skipped);
        returns ``||Hk||^2``."""
        L = self.L
        acc = _NONE if acc is None else acc

        def run(q):
            lo, hi = self.chunks[q]
            return _step_rows(L.indptr, L.indices, L.data, Hk, Hm, new, acc, c, f, w, lo, hi)

        if self._pool is None:
            parts = [run(q) for q in range(len(self.chunks))]
        else:
            parts = list(self._pool.map(run, range(len(self.chunks))))
        nk = 0.0
        for x in parts:  # chunk order, whatever the threads
            nk += x
        return nk


#: Fixed row ranges of one Chebyshev step (independent of the thread count).
STEP_CHUNKS = 16
_NONE = np.zeros(0, dtype=complex)


@nb.njit(cache=True, nogil=True)
def _step_rows(indptr, indices, data, Hk, Hm, new, acc, c, f, w, lo, hi):  # pragma: no cover
    """Rows ``lo:hi`` of ``new = f (L Hk - c Hk) + Hm`` and ``acc += w Hk`` (``acc`` of
    size 0: skipped); returns their part of ``||Hk||^2``."""
    has = acc.shape[0] == Hk.shape[0]
    nk = 0.0
    for i in range(lo, hi):
        z = 0j
        for q in range(indptr[i], indptr[i + 1]):
            z += data[q] * Hk[indices[q]]
        h = Hk[i]
        new[i] = f * (z - c * h) + Hm[i]
        if has:
            acc[i] += w * h
        nk += h.real * h.real + h.imag * h.imag
    return nk


# --------------------------------------------------------------------------- correlation
@blas_threads
def correlation(model: ChainModel, taus, A, B, t0=None) -> np.ndarray:
    """Two-time correlation ``<A(t0 + tau) B(t0)>`` by the quantum regression theorem.

    ``Tr[A exp(L tau)(B rho(t0))]`` evolved exactly on the magnon blocks
    (MODEL.md 12): square blocks for operators of offset 0, the coherence
    blocks ``(m + 1, m)`` for ``B`` of offset +1 (``s-_i``, with ``A`` of offset
    -1, e.g. ``s+_j``) and ``(m - 1, m)`` for the reverse.

    Parameters
    ----------
    model : ChainModel
    taus : array_like
        Non-decreasing delays ``tau >= 0``.
    A, B : Operator or str
        Operators of ``model.N`` sites; a string is read as operator words
        (:meth:`~thermospin_mc.operators.Operator.parse`, e.g. ``"+3"``,
        ``"-2"``, ``"n1 n4"``, ``"z1 + z2"``). Offsets must pair: both 0, or
        ``-1`` and ``+1`` either way round.
    t0 : float, optional
        ``None`` (default): the steady state (needs a unique one, as
        :func:`~thermospin_mc.exact.steadystate`). A time ``>= 0``: the state
        evolved exactly from the model's initial state (prepared at ``t = 0``).

    Returns
    -------
    numpy.ndarray
        Complex, one value per delay in ``taus``.

    Raises
    ------
    ValueError
        One line naming ``A``/``B`` (unknown words, wrong ``N``, offsets that
        cannot pair), ``taus`` or ``t0``.
    """
    model = check_model(model)
    taus = _taus(taus)
    A, B = _pair(model, A, B)
    return RegressionSystem(model, A, B, _state(model, t0)).evolve(taus)


# --------------------------------------------------------------------------- spectrum
@blas_threads
def spectrum(model: ChainModel, omegas, A, B) -> np.ndarray:
    """Steady-state spectrum of ``<A(tau) B(0)>`` in QuTiP's ``spectrum()`` convention.

    ``S(omega) = 2 Re int_0^inf exp(-i omega tau) [<A(tau) B(0)>_ss - <A>_ss <B>_ss]
    dtau`` (MODEL.md 12), exactly: ``2 Re Tr[A (i omega - L)^-1 (B rho_ss - <B>_ss
    rho_ss)]`` on the blocks of ``B rho_ss``, one linear solve per frequency. As
    ``qutip.spectrum(H, omegas, c_ops, A, B)`` (``A`` at time ``tau``).

    Parameters
    ----------
    model : ChainModel
        Needs a unique steady state.
    omegas : array_like
        Real angular frequencies (1-d).
    A, B : Operator or str
        As in :func:`correlation`.

    Returns
    -------
    numpy.ndarray
        Real, one value per frequency.

    Raises
    ------
    ValueError
        One line naming ``A``/``B``, ``omegas`` or the model (no unique steady state).
    """
    model = check_model(model)
    omegas = v.real_array("omegas", np.atleast_1d(omegas))
    A, B = _pair(model, A, B)
    rho = _state(model, None)
    sysm = RegressionSystem(model, A, B, rho)
    lay = sysm.layout
    if lay.size == 0:
        return np.zeros(omegas.size)
    rhs = sysm.x0.copy()
    border = lay.shift == 0
    trace = None
    if border:
        # subtract <B> rho_ss: the trace-free part has no steady mode
        rho_x = np.zeros(lay.size, dtype=complex)
        for m in lay.sectors:
            lay.block(rho_x, m)[...] = rho[m]
        trace = sysm.trace()
        rhs -= (trace @ sysm.x0) * rho_x
    # frequencies are independent: n_jobs threads take one each (one BLAS thread per
    # solve, so the numbers do not depend on n_jobs)
    n = min(_threads.current(), omegas.size)
    solver = None
    if lay.size > DIRECT_LIMIT:
        try:
            solver = ShiftedSolver(sysm.layout, sysm.F, model.channels, border, concurrent=n)
        except ValueError:  # a non-decaying no-jump block: no preconditioner
            solver = None

    def one(w):
        if solver is not None:  # (L - i w + e Tr) y = -rhs
            return 2.0 * (sysm.a @ solver.solve(-rhs, 1j * w)).real
        return 2.0 * (sysm.a @ _direct(sysm, trace, 1j * w, rhs)).real

    with threadpool_limits(limits=1):
        if n > 1:
            with ThreadPoolExecutor(n) as ex:
                return np.array(list(ex.map(one, omegas)))
        return np.array([one(w) for w in omegas])


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


class ShiftedSolver:
    """``y`` with ``(L - sigma) y (+ e Tr y) = r`` by GMRES on a coherence layout
    (``F``: the jump part of ``L``).

    Left preconditioner, as :class:`~thermospin_mc.blocksolve.BorderedSolver`
    for square blocks: the exact inverse of the shifted no-jump part plus the
    jumps of the weaker direction (block triangular in ``m``: one sweep of
    exact block solves ``-i (H_r X - X H^+) - sigma X = Y`` in the eigenbases,
    or Schur forms, of :class:`~thermospin_mc.blocksolve.NoJumpInverse`); GMRES
    sees the other jumps and the border ``e Tr y`` (``border=True``, square
    blocks; ``e``: the first element of the sweep's first block), which makes
    the system regular at ``sigma = 0`` and gives ``Tr y = 0`` for a trace-free
    ``r``. ``solve`` may run in ``concurrent`` threads at once. Raises
    ``ValueError`` (from ``NoJumpInverse``) when a no-jump block has a
    non-decaying state.
    """

    def __init__(self, layout: CoherenceLayout, F: sp.csr_matrix, channels, border: bool,
                 tol: float = 1e-11, concurrent: int = 1):
        self.layout, self.tol = layout, tol
        space, shift = layout.space, layout.shift
        secs = sorted({k for m in layout.sectors for k in (m, m + shift)})
        inv = NoJumpInverse(BlockLayout(space, secs))
        forms = {m: self._form(space, m, inv.data[m]) for m in secs}
        self.blocks = {}
        for m in layout.sectors:
            fr, fc = forms[m + shift], forms[m]
            den = None
            if fr[0] == fc[0] == "eig":
                den = -1j * (fr[3][:, None] - fc[3].conj()[None, :])
            self.blocks[m] = (fr, fc, den)
        # the sweep takes the weaker direction (BorderedSolver's rule)
        loss, pump = (sum(ch.rate for ch in channels if ch.kind == k) for k in ("loss", "pump"))
        self.dm = -1 if loss > 0 and (pump == 0 or loss <= pump) else 1
        self.order = sorted(layout.sectors, reverse=self.dm < 0)
        # the jumps split by direction: those of the sweep in it, the rest for GMRES
        F = F.tocoo()
        where = np.zeros(layout.size, dtype=np.int64)
        for m in layout.sectors:
            o = layout.offsets[m]
            where[o:o + layout.rows[m] * layout.dims[m]] = m
        sweep = (where[F.row] - where[F.col]) == self.dm
        n = layout.size
        Fs = sp.csr_matrix((F.data[sweep], (F.row[sweep], F.col[sweep])), shape=(n, n))
        self.F_rest = sp.csr_matrix((F.data[~sweep], (F.row[~sweep], F.col[~sweep])),
                                    shape=(n, n))
        self.F_into = {m: Fs[layout.offsets[m]:layout.offsets[m]
                             + layout.rows[m] * layout.dims[m]] for m in layout.sectors}
        self.e = np.zeros(n, dtype=complex)
        self.e[layout.offsets[self.order[0]]] = 1.0
        self.trace = _trace(layout) if border else None
        # ``concurrent`` solves share the Krylov basis budget
        self.restart = int(min(80, max(8, GMRES_BASIS_BYTES // (16 * max(n, 1) * concurrent))))
        self.iterations: list[int] = []

    @staticmethod
    def _form(space: SectorSpace, m: int, data):
        """``(kind, S, S^-1, R, S^+, S^-+)`` with ``H_eff = S R S^-1``: ``R`` the
        eigenvalues (``eig``) or the upper triangular Schur factor (``schur``)."""
        kind, P, Q, _den = data
        if kind == "eig":  # H = V diag(lam) W
            H = space.sector(m).heff_sparse(space.a)
            lam = np.einsum("ij,ji->i", Q, np.asarray(H @ P))
            return ("eig", P, Q, lam, P.conj().T, Q.conj().T)
        return ("schur", Q, Q.conj().T, P, Q.conj().T, Q)  # H = Q T Q^+

    def block_solve(self, m: int, Y: np.ndarray, sigma: complex) -> np.ndarray:
        """``X`` with ``-i (H_r X - X H^+) - sigma X = Y`` (``H_r``: rows' sector
        ``m + shift``). With ``H = S R S^-1`` and ``X = S_r Z S^+``:
        ``(R_r - i sigma) Z - Z R^+ = i S_r^-1 Y S^-+``."""
        (kr, Sr, Sir, Rr, _, _), (kc, _, _, Rc, ScH, SicH), den = self.blocks[m]
        C = Sir @ Y @ SicH
        if den is not None:
            Z = C / (den - sigma)
        else:
            Tr = np.diag(Rr) if kr == "eig" else Rr
            Tc = np.diag(Rc) if kc == "eig" else Rc
            Z, scale, info = sla.lapack.ztrsyl(Tr - 1j * sigma * np.eye(Tr.shape[0]), Tc,
                                               1j * C, trana="N", tranb="C", isgn=-1)
            if info < 0:
                raise RuntimeError(f"ztrsyl failed with info = {info}")
            Z = Z / scale
        return Sr @ Z @ ScH

    def precondition(self, y: np.ndarray, sigma: complex) -> np.ndarray:
        """One sweep: the shifted no-jump part plus the jumps of direction ``dm``."""
        lay = self.layout
        x = np.zeros_like(y)
        for m in self.order:
            o, r, c = lay.offsets[m], lay.rows[m], lay.dims[m]
            rhs = y[o:o + r * c] - self.F_into[m] @ x
            x[o:o + r * c] = self.block_solve(m, rhs.reshape(r, c), sigma).ravel()
        return x

    def solve(self, r: np.ndarray, sigma: complex) -> np.ndarray:
        """``y`` with ``(L - sigma) y (+ e Tr y) = r``."""
        it = [0]

        def count(_):
            it[0] += 1

        def matvec(x):
            z = self.F_rest @ x
            if self.trace is not None:
                z += self.e * (self.trace @ x)
            return x + self.precondition(z, sigma)

        n = self.layout.size
        op = spla.LinearOperator((n, n), matvec=matvec, dtype=complex)
        y, code = spla.gmres(op, self.precondition(r, sigma), rtol=self.tol, atol=0.0,
                             restart=self.restart, maxiter=max(50, 4000 // self.restart),
                             callback=count, callback_type="pr_norm")
        if code != 0:
            raise RuntimeError(f"GMRES of the shifted generator did not converge (code {code}, "
                               f"sigma = {sigma})")
        self.iterations.append(it[0])
        return y
