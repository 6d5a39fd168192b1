"""Matrix-free block Lindblad generator and its triangular preconditioner sweep.

The generator of the stacked blocks (``exact.BlockLayout``) is applied without
assembling it: per block ``-i (h X - X h) - (1/2) {D, X}`` with ``h`` the real
symmetric sector Hamiltonian (sparse rows times the dense block: ``nnz(h) d``
work instead of the ``d^3`` of a dense product, which only pays for tiny
blocks), the dephasing jumps as an elementwise factor inside the block, and the
loss / pump jumps as 0/1 index maps into the neighbouring block. Memory: the
blocks, a work copy and, with dephasing, one real ``d x d`` factor per block.
:meth:`BlockGenerator.chebyshev_step` is the fused step of the Chebyshev
propagator (:func:`~thermospin_mc.exact.chebyshev.chebyshev_evolve`).

The steady-state preconditioner :func:`triangular_solve` inverts the no-jump
part plus the jumps of one direction (block triangular in ``m``); the
steady-state GMRES runs on the real packing of Hermitian blocks
(:func:`~thermospin_mc.exact.hermitian.hermitian_pack`). The propagator and the
Hermitian kernels, once in this module, are re-exported here.
"""

from __future__ import annotations

import functools
import weakref
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np

from .. import _threads
from .chebyshev import ROUND_TOL, chebyshev_evolve  # re-export
from .hermitian import (  # re-export
    hermitian_defect,
    hermitian_pack,
    hermitian_sum,
    hermitian_unpack,
    upper_half,
)

__all__ = ["BlockGenerator", "chebyshev_evolve", "triangular_solve", "hermitian_pack",
           "hermitian_unpack", "hermitian_defect", "upper_half", "hermitian_sum", "ROUND_TOL"]

#: Blocks up to this dimension use a dense (BLAS) product with ``h``.
DENSE_DIM = 48


@nb.njit(cache=True, nogil=True)
def _csr_rows(indptr, indices, data, X, P):  # pragma: no cover - numba
    """``P = h X`` for real CSR ``h`` and a complex C-ordered block ``X``."""
    d, n = X.shape
    for a in range(d):
        for b in range(n):
            P[a, b] = 0.0
        for q in range(indptr[a], indptr[a + 1]):
            c = indices[q]
            w = data[q]
            for b in range(n):
                P[a, b] += w * X[c, b]


@nb.njit(cache=True, nogil=True)
def _combine_herm(P, X, dec, deph, Y):  # pragma: no cover - numba
    """``Y = -i P + i P^+ + E * X`` (``P = h X``, X Hermitian), tiled transpose;
    ``E_ab = -(dec_a + dec_b) / 2 (+ deph_ab)``."""
    d = X.shape[0]
    has = deph.shape[0] == d
    T = 32
    for a0 in range(0, d, T):
        for b0 in range(0, d, T):
            for a in range(a0, min(a0 + T, d)):
                for b in range(b0, min(b0 + T, d)):
                    pab = P[a, b]
                    pba = P[b, a]
                    e = -0.5 * (dec[a] + dec[b])
                    if has:
                        e += deph[a, b]
                    # -i p_ab + i conj(p_ba)
                    Y[a, b] = complex(pab.imag + pba.imag, pba.real - pab.real) + e * X[a, b]


@nb.njit(cache=True, nogil=True)
def _combine_gen(P1, P2, X, dec, deph, Y):  # pragma: no cover - numba
    """``Y = -i (P1 - P2^T) + E * X`` with ``P1 = h X``, ``P2 = h X^T``."""
    d = X.shape[0]
    has = deph.shape[0] == d
    T = 32
    for a0 in range(0, d, T):
        for b0 in range(0, d, T):
            for a in range(a0, min(a0 + T, d)):
                for b in range(b0, min(b0 + T, d)):
                    z = P1[a, b] - P2[b, a]
                    e = -0.5 * (dec[a] + dec[b])
                    if has:
                        e += deph[a, b]
                    Y[a, b] = complex(z.imag, -z.real) + e * X[a, b]


@nb.njit(cache=True, nogil=True)
def _feed(y, oy, dy, dst, x, ox, dx, src, rate):  # pragma: no cover - numba
    """``Y[dst, dst] += rate X[src, src]`` between two stacked blocks."""
    n = src.size
    for i in range(n):
        ry = oy + dst[i] * dy
        rx = ox + src[i] * dx
        for j in range(n):
            y[ry + dst[j]] += rate * x[rx + src[j]]


@nb.njit(cache=True, nogil=True)
def _combine_step(P, X, dec, deph, c, f, Hm, New, acc, w):  # pragma: no cover - numba
    """Fused Chebyshev step on one Hermitian block: ``New = f ((L_0 - c) X) + Hm``
    and ``acc += w X`` (``L_0``: everything but the inter-block feeding, ``P = h X``);
    returns ``||X||^2``. ``deph`` is ``(d, d)`` or ``(0, 0)`` (no dephasing)."""
    d = X.shape[0]
    has = deph.shape[0] == d
    hasacc = acc.shape[0] == d
    T = 32
    nk = 0.0
    for a0 in range(0, d, T):
        for b0 in range(0, d, T):
            for a in range(a0, min(a0 + T, d)):
                for b in range(b0, min(b0 + T, d)):
                    pab = P[a, b]
                    pba = P[b, a]
                    xab = X[a, b]
                    e = -0.5 * (dec[a] + dec[b]) - c
                    if has:
                        e += deph[a, b]
                    y = complex(pab.imag + pba.imag, pba.real - pab.real) + e * xab
                    New[a, b] = f * y + Hm[a, b]
                    if hasacc:
                        acc[a, b] += w * xab
                    nk += xab.real * xab.real + xab.imag * xab.imag
    return nk


class BlockGenerator:
    """Matrix-free Lindblad generator on a :class:`~thermospin_mc.exact.BlockLayout`.

    ``apply(x)`` equals ``liouvillian(model)[0] @ x`` (to round-off) without
    building it; ``feed(x)`` is its jump part (``blocks.feed_generator``).

    ``n_jobs`` threads (default: the exact solver's ``n_jobs``) share out the
    blocks of a Chebyshev step (the numba loops release the GIL); each block
    is finished by one thread, its incoming jumps in a fixed order, so the
    step's result does not depend on the thread count (bit for bit).
    """

    def __init__(self, layout, n_jobs: int | None = None):
        self.layout = layout
        space = layout.space
        self.blocks = []
        gam = 0.0
        for m in layout.sectors:
            sec = space.sector(m)
            d, o = layout.dims[m], layout.offsets[m]
            h = sec.h_sparse(space.a).tocsr()
            h.sort_indices()
            deph = np.zeros((0, 0))
            for ch in space.channels:
                if ch.kind == "dephasing":
                    if not deph.size:
                        deph = np.zeros((d, d))
                    s = space.jump_amplitudes(ch, m)
                    deph += ch.rate * np.outer(s, s)
            dec = sec.decay
            hd = h.toarray() if d <= DENSE_DIM else None
            gam = max(gam, float(dec.max()) if d else 0.0)
            self.blocks.append((m, d, o, h, hd, np.ascontiguousarray(dec, dtype=float), deph))
        self.feeds, self.feed_dm = [], []
        for ch in space.channels:
            if ch.kind == "dephasing":
                continue
            for m in layout.sectors:
                t = m + ch.dm
                if t not in layout.dims:
                    continue
                src, dst = space.jump_map(ch, m)
                if src.size:
                    self.feeds.append((layout.offsets[t], layout.dims[t], dst,
                                       layout.offsets[m], layout.dims[m], src, float(ch.rate)))
                    self.feed_dm.append(ch.dm)
        dmax = max(layout.dims.values())
        self.gamma = gam
        self.size = layout.size
        # jumps into each block, in list order (the order of the additions)
        index = {o: i for i, (_m, _d, o, *_rest) in enumerate(self.blocks)}
        self.feeds_into = [[] for _ in self.blocks]
        for q, fd in enumerate(self.feeds):
            self.feeds_into[index[fd[0]]].append(q)
        n = _threads.current() if n_jobs is None else int(n_jobs)
        n = max(1, min(n, len(self.blocks)))
        # blocks shared out by work (~ d^2), largest first, to the least loaded thread
        load = [0.0] * n
        self.groups = [[] for _ in range(n)]
        for i in sorted(range(len(self.blocks)), key=lambda i: -self.blocks[i][1]):
            g = int(np.argmin(load))
            self.groups[g].append(i)
            load[g] += float(self.blocks[i][1]) ** 2
        self.groups = [sorted(g) for g in self.groups if g]
        wsize = dmax * dmax
        self._works = [np.empty(wsize, dtype=complex) for _ in self.groups]
        self._work = self._works[0]
        self._pool = None
        if len(self.groups) > 1:
            self._pool = ThreadPoolExecutor(len(self.groups))
            weakref.finalize(self, self._pool.shutdown, wait=False)

    @functools.cached_property
    def width(self) -> float:
        """Largest spectral width ``E_max - E_min`` of a block's ``h`` (the
        Chebyshev scale; computed on first use: the steady state never needs it)."""
        width = 0.0
        for _m, d, _o, h, hd, _dec, _deph in self.blocks:
            if hd is not None:
                ext = np.linalg.eigvalsh(hd) if d else np.zeros(1)
            else:
                ext = _extremes(h)
            width = max(width, float(ext[-1] - ext[0]))
        return width

    def _hx(self, h, hd, X, work=None):
        if hd is not None:
            return hd @ X
        d = X.shape[0]
        P = (self._work if work is None else work)[:d * d].reshape(d, d)
        _csr_rows(h.indptr, h.indices, h.data, X, P)
        return P

    def apply(self, x: np.ndarray, out: np.ndarray | None = None,
              hermitian: bool = False) -> np.ndarray:
        """``L x``. ``hermitian=True``: every block of ``x`` is Hermitian (skips one
        product: ``X h = (h X)^+``)."""
        y = np.empty_like(x) if out is None else out
        for _m, d, o, h, hd, dec, deph in self.blocks:
            X = x[o:o + d * d].reshape(d, d)
            Y = y[o:o + d * d].reshape(d, d)
            P1 = self._hx(h, hd, X)
            if hermitian:
                _combine_herm(P1, X, dec, deph, Y)
            else:
                P1 = P1.copy()
                P2 = self._hx(h, hd, np.ascontiguousarray(X.T))
                _combine_gen(P1, P2, X, dec, deph, Y)
        self._feed_into(x, y)
        return y

    def _feed_into(self, x, y, scale: float = 1.0):
        for oy, dy, dst, ox, dx, src, rate in self.feeds:
            _feed(y, oy, dy, dst, x, ox, dx, src, rate * scale)

    def chebyshev_step(self, Hk, Hm, new, c: float, f: float, acc, w: float) -> float:
        """``new = f (L - c) Hk + Hm`` and ``acc += w Hk`` (``acc=None``: skipped) for
        Hermitian ``Hk`` in one pass per block; returns ``||Hk||^2``."""
        nks = [0.0] * len(self.blocks)
        none = np.zeros((0, 0), dtype=complex)

        def run(group, work):
            for i in group:
                _m, d, o, h, hd, dec, deph = self.blocks[i]
                sl = slice(o, o + d * d)
                X = Hk[sl].reshape(d, d)
                P = self._hx(h, None, X, work)  # numba rows: no BLAS inside the threads
                nks[i] = _combine_step(P, X, dec, deph, c, f,
                                       Hm[sl].reshape(d, d), new[sl].reshape(d, d),
                                       none if acc is None else acc[sl].reshape(d, d), w)
                for q in self.feeds_into[i]:  # the jumps into block i, in list order
                    oy, dy, dst, ox, dx, src, rate = self.feeds[q]
                    _feed(new, oy, dy, dst, Hk, ox, dx, src, rate * f)

        if self._pool is None:
            run(self.groups[0], self._works[0])
        else:
            for fut in [self._pool.submit(run, g, wk)
                        for g, wk in zip(self.groups, self._works, strict=True)]:
                fut.result()
        nk = 0.0
        for x in nks:  # block order, whatever the threads
            nk += x
        return nk

    def feed_except(self, x: np.ndarray, dm: int) -> np.ndarray:
        """The jump terms except those changing the magnon number by ``dm`` (loss:
        -1, pump: +1): the opposite direction and the dephasing."""
        y = np.zeros_like(x)
        for _m, d, o, _h, _hd, _dec, deph in self.blocks:
            if deph.size:
                y[o:o + d * d] = (deph * x[o:o + d * d].reshape(d, d)).ravel()
        for f, fdm in zip(self.feeds, self.feed_dm, strict=True):
            if fdm != dm:
                oy, dy, dst, ox, dx, src, rate = f
                _feed(y, oy, dy, dst, x, ox, dx, src, rate)
        return y

    def feed(self, x: np.ndarray) -> np.ndarray:
        """The jump part alone: index maps between blocks and the dephasing factor."""
        y = np.zeros_like(x)
        for _m, d, o, _h, _hd, _dec, deph in self.blocks:
            if deph.size:
                y[o:o + d * d] = (deph * x[o:o + d * d].reshape(d, d)).ravel()
        self._feed_into(x, y)
        return y


def triangular_solve(gen: BlockGenerator, block_solve, y: np.ndarray, dm: int,
                     hermitian: bool = False) -> np.ndarray:
    """Solve ``(A + F_dm) x = y``: ``A`` the block no-jump part (``block_solve(m, Y,
    out=X, hermitian=...)`` solves ``A_m X = Y`` into ``X``), ``F_dm`` the jumps
    changing the magnon number by ``dm``. Block triangular in ``m``: swept from
    the sector nothing feeds (top for ``dm = -1``, bottom for ``dm = +1``).
    ``hermitian=True``: every block of ``y`` is Hermitian (so is every block of
    ``x``)."""
    lay = gen.layout
    x = np.empty_like(y)  # every block is written below
    order = sorted(lay.sectors, reverse=dm < 0)
    for m in order:
        d, o = lay.dims[m], lay.offsets[m]
        rhs = y[o:o + d * d].copy()
        for f, fdm in zip(gen.feeds, gen.feed_dm, strict=True):
            oy, dy, dst, ox, dx, src, rate = f
            if fdm == dm and oy == o:
                # subtract the feeding into block m from the block already solved
                _feed(rhs, 0, dy, dst, x, ox, dx, src, -rate)
        block_solve(m, rhs.reshape(d, d), out=x[o:o + d * d].reshape(d, d),
                    hermitian=hermitian)
    return x


def _extremes(h) -> np.ndarray:
    """Lowest and highest eigenvalue of the real symmetric sparse ``h`` (Lanczos,
    widened by the returned residual bound)."""
    import scipy.sparse.linalg as spla

    # a fixed start vector: ARPACK's own is random, which would make the
    # propagator's scale (and results, at round-off) differ from call to call
    v0 = np.random.default_rng(12345).standard_normal(h.shape[0])
    w = spla.eigsh(h, k=2, which="BE", tol=1e-8, v0=v0, return_eigenvectors=False)
    lo, hi = float(np.min(w)), float(np.max(w))
    pad = 1e-6 * max(1.0, abs(lo), abs(hi))
    return np.array([lo - pad, hi + pad])
