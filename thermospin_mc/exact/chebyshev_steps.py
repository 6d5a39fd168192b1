"""The generator on a coherence layout as the Chebyshev propagators take it.

Two forms with the same interface (``width``, ``gamma``, ``chebyshev_step``; see
:func:`~thermospin_mc.exact.chebyshev.chebyshev_evolve`): :class:`SparseChebyshev`, the
assembled sparse generator, and :class:`BlockGenerator`, the generator applied
block by block without its assembled matrix (also :meth:`BlockGenerator.matvec`).
A step is one fused pass over ``STEP_CHUNKS`` fixed row ranges (numba kernels),
so results do not depend on the thread count. Used by the correlations' time
evolution (:mod:`.regression`) and the spectrum's Chebyshev head
(:mod:`.spectrum_head`).
"""

from __future__ import annotations

import weakref
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np
import scipy.sparse as sp

from .. import _threads
from .blocks import CoherenceLayout

__all__ = ["SparseChebyshev", "BlockGenerator", "STEP_CHUNKS"]

#: Fixed row ranges of one Chebyshev step (independent of the thread count).
STEP_CHUNKS = 16
_NONE = np.zeros(0, dtype=complex)


class SparseChebyshev:
    """An assembled sparse generator as :func:`~thermospin_mc.exact.chebyshev.chebyshev_evolve`
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
