"""Two-time correlations and their spectra by the quantum regression theorem (docs/model.md 13).

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

- Time evolution: exact action of ``exp(L tau)``, by ``expm_multiply`` on the
  assembled sparse generator (:func:`~thermospin_mc.blocks.evolve_grid`) up to
  ``EXPM_LIMIT`` stored numbers, above it by the package's Chebyshev propagator
  (:func:`~thermospin_mc._blockops.chebyshev_evolve`, all ``taus`` from one
  expansion) on the generator applied block by block (:class:`BlockGenerator`).
- Spectrum, QuTiP's ``spectrum()`` convention: ``S(omega) = 2 Re int_0^inf
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

Length: about 1200 lines: the regression system, its Chebyshev steps (assembled
and block-wise), the shifted solver, the Chebyshev head and the reduced model of
the spectrum all work on the same coherence layout and are used only here.
"""

from __future__ import annotations

import functools
import queue
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import scipy.special as ssp
from threadpoolctl import threadpool_limits

from .. import _threads
from .. import _validate as v
from .._threads import blas_threads
from ..core.operators import Operator
from ..core.sectors import SectorSpace
from ..physics.model import ChainModel
from ._blockops import chebyshev_evolve
from .blocks import (
    BlockLayout,
    CoherenceLayout,
    check_model,
    evolve_grid,
    feed_generator,
    nojump_generator,
)
from .blocksolve import GMRES_BASIS_BYTES, NoJumpInverse
from .solvers import mesolve, steadystate

__all__ = ["correlation", "spectrum", "RegressionSystem", "SparseChebyshev", "BlockGenerator",
           "ShiftedSolver", "ReducedResolvent", "chebyshev_head", "EXPM_LIMIT", "DIRECT_LIMIT",
           "STEP_CHUNKS", "SPECTRUM_TOL"]

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
        ``EXPM_LIMIT`` stored numbers, ``chebyshev`` above, on the block-wise
        generator :class:`BlockGenerator`)."""
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

        vals, _, _ = chebyshev_evolve(BlockGenerator(self.layout, self.F), self.x0, taus,
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
        self.width, self.gamma = _bounds(layout)
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


class BlockGenerator:
    """The generator on a coherence layout applied block by block, without its
    assembled matrix: ``-i (H_r X - X H^+)`` from the real hopping amplitudes
    of the two sectors' ``h`` (whole rows of ``X`` combined in float
    arithmetic) and the complex diagonal of ``H_eff``, plus the jumps ``F`` (a
    sparse matrix of a few entries per row).

    The same interface as :class:`SparseChebyshev` (``width``, ``gamma``,
    ``chebyshev_step``) and :meth:`matvec`. It reads 0.55 million stored
    numbers (``F``) in place of 8.6 million at N = 11 (``z6``); a plain product
    costs as much as the assembled matrix's (16 ms), a fused Chebyshev step
    20 % less than :class:`SparseChebyshev`'s (17 against 21 ms, one thread).
    Rows of ``X`` are shared out in ``STEP_CHUNKS`` fixed ranges of about equal
    size, so results do not depend on the thread count.

    Parameters
    ----------
    layout : CoherenceLayout
    F : scipy.sparse matrix
        The jump part of the generator on ``layout``.
    n_jobs : int, optional
        Threads (default: the calling solver's).
    """

    def __init__(self, layout: CoherenceLayout, F: sp.spmatrix, n_jobs: int | None = None):
        space, shift = layout.space, layout.shift
        secs = sorted({k for m in layout.sectors for k in (m, m + shift)})
        self.width, self.gamma = _bounds(layout)
        self.size = layout.size
        # the sectors' H_eff = h - (i/2) decay: the real hopping part of h (row
        # pointers shifted into the joint arrays) and the complex diagonal
        ptrs, idxs, vals, diags, start, base = [], [], [], [], {}, 0
        pos = 0
        for k in secs:
            sec = space.sector(k)
            h = sp.csr_matrix(sec.h_sparse(space.a), dtype=float)
            d = h.diagonal()
            off = (h - sp.diags(d)).tocsr()
            off.eliminate_zeros()
            off.sort_indices()
            start[k] = pos
            ptrs.append(off.indptr[:-1].astype(np.int64) + base)
            idxs.append(off.indices.astype(np.int64))
            vals.append(off.data)
            diags.append(d - 0.5j * sec.decay)
            base += off.nnz
            pos += h.shape[0]
        ptrs.append(np.array([base], dtype=np.int64))
        self.hptr, self.hidx = np.concatenate(ptrs), np.concatenate(idxs)
        self.hval, self.hdiag = np.concatenate(vals), np.concatenate(diags)
        blocks = layout.sectors
        self.b_off = np.array([layout.offsets[m] for m in blocks], dtype=np.int64)
        self.b_cols = np.array([layout.dims[m] for m in blocks], dtype=np.int64)
        self.b_hr = np.array([start[m + shift] for m in blocks], dtype=np.int64)
        self.b_hc = np.array([start[m] for m in blocks], dtype=np.int64)
        self.row_blk = np.concatenate([np.full(layout.rows[m], b, dtype=np.int64)
                                       for b, m in enumerate(blocks)])
        self.row_i = np.concatenate([np.arange(layout.rows[m], dtype=np.int64) for m in blocks])
        self.maxcols = int(self.b_cols.max())
        F = sp.csr_matrix(F)
        F.sort_indices()
        self.fptr, self.fidx = F.indptr.astype(np.int64), F.indices.astype(np.int64)
        self.fval = F.data.astype(complex)
        # fixed row ranges of about equal numbers of elements
        ends = np.cumsum(self.b_cols[self.row_blk])
        q = min(STEP_CHUNKS, self.row_blk.size)
        cuts = np.searchsorted(ends, np.arange(1, q) * ends[-1] / q)
        edges = np.unique(np.concatenate([[0], cuts + 1, [self.row_blk.size]]))
        self.chunks = list(zip(edges[:-1], edges[1:], strict=True))
        threads = _threads.current() if n_jobs is None else int(n_jobs)
        self._pool = None
        if min(threads, len(self.chunks)) > 1:
            self._pool = ThreadPoolExecutor(min(threads, len(self.chunks)))
            weakref.finalize(self, self._pool.shutdown, wait=False)

    def _run(self, x, Hm, new, acc, c, f, w, fused, parallel=True) -> float:
        def run(q):
            lo, hi = self.chunks[q]
            return _block_rows(lo, hi, self.row_blk, self.row_i, self.b_off, self.b_cols,
                               self.b_hr, self.b_hc, self.hptr, self.hidx, self.hval,
                               self.hdiag, self.fptr, self.fidx, self.fval, x, x.view(np.float64),
                               Hm, new, acc, c, f, w, fused, self.maxcols)

        if self._pool is None or not parallel:
            parts = [run(q) for q in range(len(self.chunks))]
        else:
            parts = list(self._pool.map(run, range(len(self.chunks))))
        nk = 0.0
        for p in parts:  # chunk order, whatever the threads
            nk += p
        return nk

    def matvec(self, x: np.ndarray, parallel: bool = True) -> np.ndarray:
        """``L x`` (``parallel=False``: on the calling thread alone)."""
        out = np.empty_like(x)
        self._run(x, _NONE, out, _NONE, 0.0, 1.0, 0.0, False, parallel)
        return out

    def chebyshev_step(self, Hk, Hm, new, c: float, f: float, acc, w: float) -> float:
        """``new = f (L - c) Hk + Hm`` and ``acc += w Hk`` (``acc=None``: skipped);
        returns ``||Hk||^2``."""
        return self._run(Hk, Hm, new, _NONE if acc is None else acc, c, f, w, True)


def _bounds(layout: CoherenceLayout) -> tuple[float, float]:
    """``(width, gamma)`` of :class:`SparseChebyshev`."""
    space = layout.space
    ext, dec = {}, {}
    for k in sorted({k for m in layout.sectors for k in (m, m + layout.shift)}):
        sec = space.sector(k)
        e = np.linalg.eigvalsh(sec.h_sparse(space.a).toarray())
        ext[k] = (float(e[0]), float(e[-1]))
        dec[k] = float(sec.decay.max())
    width = max(max(ext[m + layout.shift][1] - ext[m][0], ext[m][1] - ext[m + layout.shift][0])
                for m in layout.sectors)
    return width, max(dec.values())


@nb.njit(cache=True, nogil=True)
def _block_rows(t0, t1, row_blk, row_i, b_off, b_cols, b_hr, b_hc, hptr, hidx, hval, hdiag,
                fptr, fidx, fval, x, xf, Hm, new, acc, c, f, w, fused,
                maxcols):  # pragma: no cover - numba
    """Rows ``t0:t1`` (of all blocks' rows, in order) of ``z = L x``: ``new = z`` or,
    ``fused``, ``new = f (z - c x) + Hm`` and ``acc += w x`` (``acc`` of size 0:
    skipped); returns their part of ``||x||^2``. ``xf``: ``x`` as floats (the real
    hopping amplitudes combine whole rows of ``X`` in float arithmetic)."""
    has = acc.shape[0] == x.shape[0]
    tmp = np.empty(2 * maxcols)
    nk = 0.0
    for t in range(t0, t1):
        b = row_blk[t]
        i = row_i[t]
        o = b_off[b]
        nc = b_cols[b]
        pr = b_hr[b]
        pc = b_hc[b]
        for jj in range(2 * nc):
            tmp[jj] = 0.0
        for p in range(hptr[pr + i], hptr[pr + i + 1]):  # hopping of H_r: rows of X
            h = hval[p]
            src = 2 * (o + hidx[p] * nc)
            for jj in range(2 * nc):
                tmp[jj] += h * xf[src + jj]
        row = o + i * nc
        dr = hdiag[pr + i]
        for j in range(nc):
            sr = 0.0
            si = 0.0
            for q in range(hptr[pc + j], hptr[pc + j + 1]):  # hopping of H^+ inside row i
                h = hval[q]
                k2 = 2 * (row + hidx[q])
                sr += h * xf[k2]
                si += h * xf[k2 + 1]
            g = row + j
            xv = x[g]
            # -i (H_r X - X H^+)_ij: hopping parts and the diagonal
            z = 1j * complex(sr - tmp[2 * j], si - tmp[2 * j + 1]) \
                - 1j * (dr - np.conj(hdiag[pc + j])) * xv
            for q in range(fptr[g], fptr[g + 1]):
                z += fval[q] * x[fidx[q]]
            if fused:
                new[g] = f * (z - c * xv) + Hm[g]
                if has:
                    acc[g] += w * xv
                nk += xv.real * xv.real + xv.imag * xv.imag
            else:
                new[g] = z
    return nk


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
    (docs/model.md 13): square blocks for operators of offset 0, the coherence
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
#: Relative residual every frequency of :func:`spectrum` meets above ``DIRECT_LIMIT``:
#: ``||r - (i omega - L) y|| <= SPECTRUM_TOL ||r||`` (``r = B rho_ss - <B> rho_ss``).
SPECTRUM_TOL = 1e-9

#: Matrix-vector products per frequency the Chebyshev head may spend (it runs only
#: when that allows ``HEAD_MIN_MATVECS``).
HEAD_MATVECS = 12
HEAD_MIN_MATVECS = 400

#: Chebyshev terms of one head segment (its length is ``HEAD_TERMS / s``).
HEAD_TERMS = 500

#: Frequencies solved per round of the reduced model (fixed: the rounds, and so the
#: numbers, do not depend on ``n_jobs``; up to this many threads solve them at once).
PICKS = 2

#: Iterations of one flexible GMRES solve before it is refused.
FGMRES_MAXITER = 1000

#: Truncation of a head segment's series (relative to the norm of its start), its
#: accepted round-off estimate, and the segment length ``gamma t <= HEAD_GROWTH``
#: (as :func:`~thermospin_mc._blockops.chebyshev_evolve`).
HEAD_TOL = 1e-15
HEAD_ROUND_TOL = 1e-12
HEAD_GROWTH = 200.0


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
    A, B = _pair(model, A, B)
    rho = _state(model, None)
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
        return 2.0 * np.array(_map(lambda w: (sysm.a @ _direct(sysm, trace, 1j * w, rhs)).real,
                                   omegas, n))


def _map(fn, items, n: int) -> list:
    """``[fn(x) for x in items]`` on up to ``n`` threads (in order)."""
    items = list(items)
    if n > 1 and len(items) > 1:
        with ThreadPoolExecutor(min(n, len(items))) as ex:
            return list(ex.map(fn, items))
    return [fn(x) for x in items]


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


# --------------------------------------------------------------------------- Chebyshev head
def chebyshev_head(cheb, x0: np.ndarray, a: np.ndarray, omegas: np.ndarray,
                   budget: int, stop: float):
    """``int_0^T exp(-i omega t) a.exp(L t) x0 dt`` for every omega, and ``exp(L T) x0``.

    ``exp(L t) x0 = exp(c t) sum_k (2 - delta_k0) J_k(s t) H_k`` on segments of
    ``[0, T]`` (``H_{k+1} = 2 (L - c) H_k / s + H_{k-1}``, as
    :func:`~thermospin_mc._blockops.chebyshev_evolve`), so ``a.x(t)`` is known at any
    ``t`` from the moments ``a.H_k``; the integral is a Gauss-Legendre rule of
    ``0.33 nu t + 24`` nodes per segment (``nu = s + |c| + max|omega|`` bounds the
    frequencies of the integrand; the rule is exact to round-off from ``0.28 nu
    t + 20``). With ``y_T = int_0^T exp(-(i omega - L) t) x0 dt``, ``(i omega - L)
    y_T = x0 - exp(-i omega T) x(T)`` exactly: the head leaves the residual
    ``x(T)``, whatever ``omega``.

    Parameters
    ----------
    cheb : BlockGenerator or SparseChebyshev
    x0 : ndarray
    a : ndarray
        The functional ``a.x`` (few nonzero entries: read at those alone).
    omegas : ndarray
    budget : int
        Matrix-vector products: segments start while the next fits.
    stop : float
        Segments stop once ``||x(T)|| <= stop``.

    Returns
    -------
    head : ndarray
        Complex, one value per omega.
    x : ndarray
        ``exp(L T) x0``.
    T : float
    matvecs : int
        Including those of segments redone shorter.
    """
    s = max(cheb.width, 1e-3) * 1.01 + 0.1 * cheb.gamma
    c = -0.5 * cheb.gamma
    nu = s + abs(c) + float(np.max(np.abs(omegas)))
    dt_max = min(HEAD_TERMS / s, HEAD_GROWTH / max(cheb.gamma, 1e-12))
    head = np.zeros(omegas.size, dtype=complex)
    x, t, used = x0, 0.0, 0
    while np.linalg.norm(x) > stop:
        # a segment costs about s dt terms and the tail of the series (~50-100 more)
        dt = min(dt_max, (budget - used - 40) / (1.1 * s))
        if dt < 0.25 * dt_max:
            break
        while True:
            seg, mv = _head_segment(cheb, x, a, dt, c, s, nu)
            used += mv
            if seg is not None:
                break
            dt *= 0.5  # round-off from term growth: a shorter segment
            if s * dt < 1.0:
                raise RuntimeError("the Chebyshev head of the spectrum lost its accuracy to "
                                   "round-off (terms grow without bound)")
        nodes, weights, cvals, x = seg
        head += np.exp(-1j * np.outer(omegas, t + nodes)) @ (weights * cvals)
        t += dt
    return head, x, t, used


@functools.lru_cache(maxsize=16)
def _gauss(q: int):
    """Gauss-Legendre nodes and weights on ``[-1, 1]``."""
    return np.polynomial.legendre.leggauss(q)


def _bessel(K: int, theta: np.ndarray) -> np.ndarray:
    """``(len(theta), K)``: ``J_0``, ``2 J_k``."""
    w = ssp.jv(np.arange(K)[None, :], theta[:, None])
    w[:, 1:] *= 2.0
    return w


def _head_segment(cheb, x, a, dt, c, s, nu):
    """One segment ``[0, dt]`` from ``x`` (left intact): ``(nodes, weights, a.x(nodes),
    x(dt))`` and the products used; ``None`` in place of the tuple if the terms grow
    beyond the round-off allowance."""
    u, wq = _gauss(int(np.ceil(0.33 * nu * dt + 24)))
    nodes, weights = 0.5 * dt * (u + 1.0), 0.5 * dt * wq
    taus = np.append(nodes, dt)
    theta = s * taus
    damp = np.exp(c * taus)
    W = _bessel(int(theta[-1] + 64), theta)
    acc = np.zeros_like(x)
    Hk, Hm, new = x, np.zeros_like(x), np.empty_like(x)
    nrm0 = float(np.linalg.norm(x))
    a_at = np.flatnonzero(a)  # the functional is sparse (A's matrix elements)
    a_val = a[a_at]
    mus, k, small, big = [], 0, 0, 0.0
    while True:
        if k >= W.shape[1]:
            W = _bessel(2 * W.shape[1], theta)
        mus.append(a_val @ Hk[a_at])
        nk = np.sqrt(cheb.chebyshev_step(Hk, Hm, new, c, (2.0 if k else 1.0) / s, acc,
                                         damp[-1] * W[-1, k]))
        contrib = float(np.max(np.abs(damp * W[:, k]))) * nk
        big = max(big, contrib)
        if not np.isfinite(nk) or np.finfo(float).eps * big > HEAD_ROUND_TOL * nrm0:
            return None, k + 1
        if k > theta[-1] and contrib <= HEAD_TOL * nrm0:
            small += 1
            if small >= 2:
                break
        else:
            small = 0
        if k == 1:  # keep the segment start intact (a refused segment restarts there)
            Hm, Hk, new = Hk, new, np.empty_like(x)
        else:
            Hm, Hk, new = Hk, new, Hm
        k += 1
    cvals = damp[:-1] * (W[:-1, :k + 1] @ np.array(mus))
    return (nodes, weights, cvals, acc), k + 1


# --------------------------------------------------------------------------- reduced model
class ReducedResolvent:
    """Minimal-residual solutions of ``(i omega - L) y = r`` for many omega in one
    growing subspace, with their true residuals.

    The subspace ``V`` starts as ``span{r}``; :meth:`solve` adds, round by round,
    the exact solutions (flexible GMRES, warm-started from the reduced solution)
    at the ``PICKS`` frequencies whose residual is largest, until every
    frequency's residual is at most ``atol``. ``Q`` is an orthonormal basis of
    ``span{V, L V}`` (``L v`` is computed for every new ``v``), so the residual
    ``r - (i omega - L) V z`` of any ``z`` is a short vector of coordinates: its
    norm, the true residual, costs no products of length ``n``, and the
    minimal residual is a small least-squares problem per omega.

    Parameters
    ----------
    L : scipy.sparse matrix
    r : ndarray
        The right-hand side (trace free if ``steady`` is given).
    a : ndarray
        The functional ``a.y`` returned per omega.
    steady, trace : ndarray or None
        Square blocks: the steady state and the trace; every vector of ``V`` is
        made trace free (the space the steady mode does not reach), where
        ``i omega - L`` is regular at ``omega = 0`` too.
    n_jobs : int
        Threads (results do not depend on them).
    """

    def __init__(self, L, r: np.ndarray, a: np.ndarray, steady, trace, n_jobs: int = 1):
        n = r.size
        self.L, self.a, self.steady, self.trace, self.n_jobs = L, a, steady, trace, n_jobs
        self.cap = int(max(8, min(400, GMRES_BASIS_BYTES // (16 * max(n, 1)))))
        self.Q = np.empty((self.cap, n), dtype=complex)  # pages are touched as rows fill
        self.K = self.k = 0
        self.CV = np.zeros((self.cap, self.cap), dtype=complex)  # V = CV^T Q
        self.CL = np.zeros((self.cap, self.cap), dtype=complex)  # L V = CL^T Q
        self.aQ = np.zeros(self.cap, dtype=complex)
        self.nr = float(np.linalg.norm(r))
        self.r = r
        self.cr = np.zeros(self.cap, dtype=complex)
        self.solves: list[tuple[float, int]] = []
        if self.nr > 0:
            self.add([r])
            self.cr = self.nr * self.CV[:, 0]

    # ------------------------------------------------------------------ basis
    def add(self, vectors: list) -> bool:
        """Add directions (and their images under ``L``) to the subspace; ``False``
        (nothing added) when the basis would exceed its capacity."""
        if self.K + 2 * len(vectors) > self.cap:
            return False
        rows = []
        for vec in vectors:
            vec = np.array(vec, dtype=complex)
            if self.steady is not None:
                vec -= (self.trace @ vec) * self.steady
            nv = np.linalg.norm(vec)
            if nv > 0:
                vec /= nv
                rows += [vec, self.L @ vec]
        if not rows:
            return True
        coef = self._orthonormalise(np.array(rows))
        for t in range(0, len(rows), 2):
            self.CV[:, self.k], self.CL[:, self.k] = coef[t], coef[t + 1]
            self.k += 1
        return True

    def add_solutions(self, sols: list) -> bool:
        """Add exact solutions ``(y, x0, z0, sigma, res)``: ``(L - sigma) y = -r - res``
        (``res`` the solver's residual), warm-started from ``x0 = V z0``. The new
        direction is ``d = y - x0``; its image ``L d = sigma y - r - res - L V z0``
        needs no product with ``L``, only ``res`` as one more direction (the
        rational Krylov relation: with exact solves ``L V`` stays in ``span{V, r}``).
        ``False`` (nothing added) when the basis would exceed its capacity."""
        if self.K + 2 * len(sols) > self.cap:
            return False
        rows, parts = [], []
        for y, x0, z0, sigma, res in sols:
            d = y - x0
            nd, nres = np.linalg.norm(d), np.linalg.norm(res)
            if not nd > 0:
                continue
            parts.append((nd, nres, z0, sigma, len(rows)))
            rows.append(d / nd)
            if nres > 0:
                rows.append(res / nres)
        if not rows:
            return True
        coef = self._orthonormalise(np.array(rows))
        k0 = self.k
        for nd, nres, z0, sigma, t in parts:
            cd = coef[t]
            cres = nres * coef[t + 1] if nres > 0 else 0.0
            y = self.CV[:, :k0] @ z0 + nd * cd
            self.CV[:, self.k] = cd
            self.CL[:, self.k] = (sigma * y - self.cr - cres - self.CL[:, :k0] @ z0) / nd
            self.k += 1
        return True

    def _orthonormalise(self, W: np.ndarray) -> np.ndarray:
        """Coordinates (rows) of the rows of ``W`` in ``Q`` after extending ``Q`` by
        their new directions: block classical Gram-Schmidt, twice, against ``Q``
        (read four times whatever the number of rows), then in order among
        themselves, twice, with one more pass against all of ``Q`` for a row
        that loses more than 90 % of its norm (its remainder is then mostly
        round-off of the earlier passes)."""
        K0 = self.K
        coef = np.zeros((W.shape[0], self.cap), dtype=complex)
        nrm = np.linalg.norm(W, axis=1)
        Q = self.Q[:K0]
        for _ in range(2):
            if K0:
                h = (Q @ W.conj().T).conj()  # <q_i, w_t>, without a conjugated copy of Q
                W -= h.T @ Q
                coef[:, :K0] += h.T
        for t in range(W.shape[0]):
            w = W[t]
            for lo, extra in ((K0, False), (K0, False), (0, True)):
                if extra and np.linalg.norm(w) > 0.1 * nrm[t]:
                    break
                if self.K > lo:
                    Qn = self.Q[lo:self.K]
                    h = (Qn @ w.conj()).conj()
                    w -= h @ Qn
                    coef[t, lo:self.K] += h
            rest = np.linalg.norm(w)
            if rest > 1e-13 * nrm[t]:  # else: inside span Q to round-off
                self.Q[self.K] = w / rest
                self.aQ[self.K] = self.a @ self.Q[self.K]
                coef[t, self.K] = rest
                self.K += 1
        return coef

    # ------------------------------------------------------------------ reduced solves
    def reduced(self, omegas: np.ndarray):
        """Minimal residual in the subspace: ``(res, Z)``, the residual norms and the
        coefficients ``z`` (``y = V z``) per omega."""
        K, k = self.K, self.k
        CV, CL, rhs = self.CV[:K, :k], self.CL[:K, :k], self.cr[:K]

        def one(w):
            M = 1j * w * CV - CL
            z = np.linalg.lstsq(M, rhs, rcond=None)[0]
            return float(np.linalg.norm(rhs - M @ z)), z

        parts = _map(one, omegas, self.n_jobs)
        return np.array([p[0] for p in parts]), [p[1] for p in parts]

    def vector(self, z: np.ndarray) -> np.ndarray:
        """``V z``."""
        return (self.CV[:self.K, :self.k] @ z) @ self.Q[:self.K]

    def value(self, z: np.ndarray) -> complex:
        """``a.V z``."""
        return complex(self.aQ[:self.K] @ (self.CV[:self.K, :self.k] @ z))

    # ------------------------------------------------------------------ the loop
    def solve(self, omegas: np.ndarray, solver: ShiftedSolver, atol: float) -> np.ndarray:
        """``a.y`` with ``(i omega - L) y = r`` and ``||r - (i omega - L) y|| <= atol`` for
        every omega (sorted, distinct): rounds of ``PICKS`` exact solves at the
        frequencies of largest reduced residual (solved to ``atol / 2``, their own
        values kept), added to the subspace, until all others meet ``atol`` in it.
        Each round settles at least one frequency, so at most ``len(omegas)``
        rounds; when the basis is full, the rest are solved one by one."""
        vals = np.zeros(omegas.size, dtype=complex)
        if self.nr == 0.0:
            return vals
        done = np.zeros(omegas.size, dtype=bool)
        while True:
            res, Z = self.reduced(omegas)
            open_ = ~done & (res > atol)
            if not open_.any():
                break
            picks = _picks(res, open_)
            if self.K + 2 * len(picks) > self.cap:  # full: every open one on its own
                picks = list(np.flatnonzero(open_))
                out = _map(lambda j, Z=Z: self._exact(solver, omegas[j], self.vector(Z[j]),
                                                      atol), picks, min(self.n_jobs, PICKS))
                for j, (y, its, _) in zip(picks, out, strict=True):
                    vals[j], done[j] = self.a @ y, True
                    self.solves.append((float(omegas[j]), its))
                break
            x0s = [self.vector(Z[j]) for j in picks]
            out = _map(lambda jx: self._exact(solver, omegas[jx[0]], jx[1], atol),
                       list(zip(picks, x0s, strict=True)), min(self.n_jobs, PICKS))
            for j, (y, its, _) in zip(picks, out, strict=True):
                vals[j], done[j] = self.a @ y, True
                self.solves.append((float(omegas[j]), its))
            self.add_solutions([(y, x0, Z[j], 1j * omegas[j], res) for j, x0, (y, _, res)
                                in zip(picks, x0s, out, strict=True)])
        for j in np.flatnonzero(~done):
            vals[j] = self.value(Z[j])
        return vals

    def _exact(self, solver, w: float, x0: np.ndarray, atol: float):
        """The solve at ``omega = w`` to ``atol / 2``: ``(y, iterations, residual)``."""
        return solver.solve_flexible(-self.r, 1j * w, x0=x0, atol=0.5 * atol,
                                     steady=self.steady)


def _picks(res: np.ndarray, open_: np.ndarray) -> list[int]:
    """Up to ``PICKS`` open frequencies of largest residual, more than two grid
    points apart."""
    order = np.argsort(-np.where(open_, res, -1.0), kind="stable")
    picks: list[int] = []
    for j in order:
        if not open_[j]:
            break
        if all(abs(int(j) - p) > 2 for p in picks):
            picks.append(int(j))
            if len(picks) == PICKS:
                break
    return picks


# --------------------------------------------------------------------------- shifted solver
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

    :meth:`solve_flexible` (needs ``L``, the whole generator) is the
    right-preconditioned flexible GMRES of :func:`spectrum`: the same sweep in
    single precision (:meth:`sweep32`; the blocks whose eigenbases are too
    ill-conditioned for it stay in double), the Arnoldi vectors, the products
    with ``L`` and the residual in double, so the stated residual is the true
    one.
    """

    def __init__(self, layout: CoherenceLayout, F: sp.csr_matrix, channels, border: bool,
                 tol: float = 1e-11, concurrent: int = 1, L: sp.csr_matrix | None = None):
        self.layout, self.tol, self.L = layout, tol, L
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
        # single-precision copies where the rounded eigenbases stay inverse to 1e-3
        ok = {m: forms[m][0] == "eig" and _single_ok(forms[m][1], forms[m][2]) for m in secs}
        self.blocks32 = {}
        for m in layout.sectors:
            (_, Sr, Sir, _, _, _), (_, _, _, _, ScH, SicH), den = self.blocks[m]
            if den is not None and ok[m] and ok[m + shift]:
                self.blocks32[m] = tuple(np.asarray(z, dtype=np.complex64)
                                         for z in (Sir, SicH, Sr, ScH, den))
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
        # flexible GMRES keeps 2 m + 1 vectors: PICKS such workspaces in half the budget
        self.restart_flexible = int(min(80, max(8, GMRES_BASIS_BYTES
                                                // (32 * max(n, 1) * PICKS * 2))))
        self.iterations: list[int] = []
        self._spare: queue.SimpleQueue = queue.SimpleQueue()

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

    def sweep32(self, y: np.ndarray, sigma: complex) -> np.ndarray:
        """:meth:`precondition` with the block transforms in single precision (the
        blocks of :attr:`blocks32`; the others, and the jumps, in double)."""
        lay = self.layout
        x = np.zeros_like(y)
        s32 = np.complex64(sigma)
        for m in self.order:
            o, r, c = lay.offsets[m], lay.rows[m], lay.dims[m]
            rhs = (y[o:o + r * c] - self.F_into[m] @ x).reshape(r, c)
            fast = self.blocks32.get(m)
            if fast is None:
                x[o:o + r * c] = self.block_solve(m, rhs, sigma).ravel()
                continue
            Sir, SicH, Sr, ScH, den = fast
            Z = (Sir @ rhs.astype(np.complex64) @ SicH) / (den - s32)
            x[o:o + r * c] = (Sr @ Z @ ScH).ravel()
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

    def solve_flexible(self, b: np.ndarray, sigma: complex, x0: np.ndarray | None = None,
                       atol: float = 0.0, steady: np.ndarray | None = None):
        """``y`` with ``(L - sigma) y = b`` and ``||b - (L - sigma) y|| <= atol`` (true
        residual, checked with ``L``), by flexible GMRES right-preconditioned with
        :meth:`sweep32`, restarted every :attr:`restart_flexible` iterations.

        ``steady`` (square blocks; ``b`` and ``x0`` trace free): every
        preconditioned vector is made trace free along it, so the iterates stay
        in the trace-free space, where ``L - sigma`` is regular at ``sigma = 0``
        too (no border). Returns ``(y, iterations, b - (L - sigma) y)``; raises
        ``RuntimeError`` after ``FGMRES_MAXITER`` iterations.
        """
        L = self.L

        def apply(z):
            return L @ z - sigma * z

        x = np.zeros_like(b) if x0 is None else np.array(x0, dtype=complex)
        r = b - apply(x) if x0 is not None else b.copy()
        beta = float(np.linalg.norm(r))
        m = self.restart_flexible
        try:  # a workspace of an earlier solve (its pages are touched already)
            work = self._spare.get_nowait()
        except queue.Empty:
            work = (np.empty((m + 1, b.size), dtype=complex), np.empty((m, b.size), dtype=complex))
        try:
            x, its, r = self._flexible(apply, b, x, r, beta, sigma, atol, steady, work)
        finally:
            self._spare.put(work)
        self.iterations.append(its)
        return x, its, r

    def _flexible(self, apply, b, x, r, beta, sigma, atol, steady, work):
        m, trace = self.restart_flexible, self.trace
        its = 0
        while beta > atol:
            if its >= FGMRES_MAXITER:
                raise RuntimeError(f"flexible GMRES of the shifted generator did not converge "
                                   f"in {its} iterations (omega = {sigma.imag:g}, residual "
                                   f"{beta:.3g} > {atol:.3g})")
            V, Zs = work
            H = np.zeros((m + 1, m), dtype=complex)
            V[0] = r / beta
            g = np.zeros(m + 1, dtype=complex)
            g[0] = beta
            for j in range(m):
                z = self.sweep32(V[j], sigma)
                if steady is not None:
                    z -= (trace @ z) * steady
                Zs[j] = z
                w = apply(z)
                its += 1
                for _ in range(2):  # classical Gram-Schmidt, twice
                    h = (V[:j + 1] @ w.conj()).conj()
                    w -= h @ V[:j + 1]
                    H[:j + 1, j] += h
                H[j + 1, j] = hn = np.linalg.norm(w)
                y = np.linalg.lstsq(H[:j + 2, :j + 1], g[:j + 2], rcond=None)[0]
                est = np.linalg.norm(g[:j + 2] - H[:j + 2, :j + 1] @ y)
                if hn > 0:
                    V[j + 1] = w / hn
                if est <= 0.8 * atol or hn == 0 or its >= FGMRES_MAXITER:
                    break
            x = x + y @ Zs[:j + 1]
            r = b - apply(x)  # the true residual
            beta = float(np.linalg.norm(r))
        return x, its, r


def _single_ok(S: np.ndarray, Sinv: np.ndarray) -> bool:
    """The eigenbasis ``S`` and its inverse still inverse to 1e-3 once rounded to
    single precision (a conditioning test that costs one product)."""
    S32 = np.asarray(S, dtype=np.complex64).astype(complex)
    Si32 = np.asarray(Sinv, dtype=np.complex64).astype(complex)
    err = np.abs(Si32 @ S32 - np.eye(S.shape[0])).max()
    return bool(err <= 1e-3)
