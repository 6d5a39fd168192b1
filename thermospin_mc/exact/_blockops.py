"""Matrix-free block Lindblad generator and its Chebyshev propagator.

The generator of the stacked blocks (``exact.BlockLayout``) is applied without
assembling it: per block ``-i (h X - X h) - (1/2) {D, X}`` with ``h`` the real
symmetric sector Hamiltonian (sparse rows times the dense block: ``nnz(h) d``
work instead of the ``d^3`` of a dense product, which only pays for tiny
blocks), the dephasing jumps as an elementwise factor inside the block, and the
loss / pump jumps as 0/1 index maps into the neighbouring block. Memory: the
blocks, a work copy and, with dephasing, one real ``d x d`` factor per block.

Time evolution (:func:`chebyshev_evolve`) expands ``exp(tau L)`` in Chebyshev
polynomials of ``A = (L - c) / s`` whose spectrum lies near ``[-i, i]`` (``s``:
largest width ``E_max - E_min`` of a sector Hamiltonian, ``c``: centre of the
decay rates). With ``H_0 = v``, ``H_1 = A v``, ``H_{k+1} = 2 A H_k + H_{k-1}``
(Hermitian for Hermitian ``v``), ``exp(theta A) v = J_0(theta) H_0 + 2 sum_k
J_k(theta) H_k``, ``theta = s tau`` (Jacobi-Anger). The series is cut a
posteriori once the weighted terms ``|e^{c tau} J_k(theta)| ||H_k||`` stay below
``tol ||v||``. The terms grow like the slowest mode of ``exp(tau (L - c))``;
a segment whose round-off estimate (machine epsilon times its largest weighted
term) exceeds ``ROUND_TOL ||v||`` is redone at half the length, so segments are
as long as accuracy allows (one segment over ``[0, 20]`` for the paper's
models). Every output time inside a segment is a combination of the same
``H_k`` with its own Bessel weights, so output times never force steps:
observables (real-linear in ``rho``) are taken per term and combined; the jump
counts (time integrals of linear functionals) use the integrated weights
(Gauss-Legendre, exact to round-off for the smooth integrand). The state after
the last output time is never formed.

The steady-state preconditioner :func:`triangular_solve` inverts the no-jump
part plus the jumps of one direction (block triangular in ``m``); the
steady-state GMRES runs on the real packing of Hermitian blocks
(:func:`hermitian_pack`).

Length: the generator, its Chebyshev propagator, the preconditioner sweep and
the Hermitian packing all walk the same stacked-block layout (offsets, dims)
in compiled loops; one module keeps that layout's kernels in one place and one
numba cache unit.
"""

from __future__ import annotations

import functools
import weakref
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np
import scipy.special as ssp

from .. import _threads

__all__ = ["BlockGenerator", "chebyshev_evolve", "triangular_solve", "hermitian_pack",
           "hermitian_unpack", "hermitian_defect", "upper_half", "hermitian_sum"]

#: Blocks up to this dimension use a dense (BLAS) product with ``h``.
DENSE_DIM = 48


# ---------------------------------------------------------------------------- Hermitian packing
@nb.njit(cache=True, nogil=True)
def hermitian_pack(x, offs, dims, r):
    """Real coordinates of Hermitian blocks, in place of each block's ``d x d``
    slots: ``Re X_ii`` on the diagonal, ``sqrt(2) Re X_ij`` above it and
    ``sqrt(2) Im X_ij`` below (``i < j``); the Euclidean norm of ``r`` is the
    Frobenius norm of the blocks."""
    s2 = np.sqrt(2.0)
    for b in range(offs.size):
        o = offs[b]
        d = dims[b]
        for i in range(d):
            r[o + i * d + i] = x[o + i * d + i].real
            for j in range(i + 1, d):
                v = x[o + i * d + j]
                r[o + i * d + j] = s2 * v.real
                r[o + j * d + i] = s2 * v.imag


@nb.njit(cache=True, nogil=True)
def hermitian_unpack(r, offs, dims, x):
    """The Hermitian blocks of the real coordinates ``r`` (:func:`hermitian_pack`)."""
    s2 = np.sqrt(2.0)
    for b in range(offs.size):
        o = offs[b]
        d = dims[b]
        for i in range(d):
            x[o + i * d + i] = r[o + i * d + i]
            for j in range(i + 1, d):
                v = complex(r[o + i * d + j] / s2, r[o + j * d + i] / s2)
                x[o + i * d + j] = v
                x[o + j * d + i] = np.conj(v)


@nb.njit(cache=True, nogil=True)
def hermitian_defect(x, offs, dims):
    """``(defect, scale)``: the largest ``|X_ij - conj(X_ji)|`` (diagonal:
    ``|Im X_ii|``) and the largest ``|X_ij|`` over the blocks."""
    worst = 0.0
    scale = 0.0
    for b in range(offs.size):
        o = offs[b]
        d = dims[b]
        for i in range(d):
            v = x[o + i * d + i]
            worst = max(worst, abs(v.imag))
            scale = max(scale, abs(v))
            for j in range(i + 1, d):
                u = x[o + i * d + j]
                w = x[o + j * d + i]
                worst = max(worst, abs(u - np.conj(w)))
                scale = max(scale, abs(u), abs(w))
    return worst, scale


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


@nb.njit(cache=True, nogil=True)
def upper_half(Y, U):  # pragma: no cover - numba
    """``U`` = the part of ``Y`` above the diagonal, half its diagonal and zeros
    below: ``Y = U + U^+`` for Hermitian ``Y`` (only the upper part is read)."""
    d = Y.shape[0]
    for i in range(d):
        for j in range(i):
            U[i, j] = 0.0
        U[i, i] = 0.5 * Y[i, i]
        for j in range(i + 1, d):
            U[i, j] = Y[i, j]


@nb.njit(cache=True, nogil=True)
def hermitian_sum(G, den, sigma, U, full):  # pragma: no cover - numba
    """``U = (G + G^+) / (den - sigma)`` (``den`` of size 0: no division), tiled
    transpose; ``full=False``: the triangle :func:`upper_half` gives (above the
    diagonal, half the diagonal, zeros below)."""
    d = G.shape[0]
    div = den.shape[0] == d
    T = 32
    for i0 in range(0, d, T):
        for j0 in range(0, d, T):
            for i in range(i0, min(i0 + T, d)):
                for j in range(j0, min(j0 + T, d)):
                    if not full and j < i:
                        U[i, j] = 0.0
                        continue
                    g = G[i, j] + np.conj(G[j, i])
                    if i == j and not full:
                        g = 0.5 * g
                    if div:
                        g = g / (den[i, j] - sigma)
                    U[i, j] = g


class BlockGenerator:
    """Matrix-free Lindblad generator on a :class:`~thermospin_mc.exact.BlockLayout`.

    ``apply(x)`` equals ``liouvillian(model)[0] @ x`` (to round-off) without
    building it; ``feed(x)`` is its jump part (``exact._feed_generator``).

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


def _bessel_weights(K: int, theta: np.ndarray) -> np.ndarray:
    """``(len(theta), K)`` weights ``J_0``, ``2 J_k`` of the expansion."""
    k = np.arange(K)
    w = ssp.jv(k[None, :], np.asarray(theta, dtype=float)[:, None])
    w[:, 1:] *= 2.0
    return w

#: Accepted round-off estimate of a segment, relative to the norm of its start.
ROUND_TOL = 1e-12


def _sweep(gen, x, theta, scale, c, s, tol, observe, count_R, acc, abort=True):
    """Chebyshev terms of one segment from ``x`` (left intact): per-term observables
    and counts, ``acc`` (if given) the end state; ``err`` estimates the round-off
    (machine epsilon times the largest weighted term)."""
    terms_obs, terms_cnt = [], []
    Hk, Hm, new = x, np.zeros_like(x), np.empty_like(x)
    W = _bessel_weights(int(theta[-1] + 60), theta)
    nrm0 = np.linalg.norm(x)
    small, k, big, matvecs = 0, 0, 0.0, 0
    while True:
        if k >= W.shape[1]:
            W = _bessel_weights(2 * W.shape[1], theta)
        terms_obs.append(observe(Hk))
        if count_R is not None:
            terms_cnt.append(count_R @ Hk)
        wk = scale[-1] * W[-1, k]
        # next term: H_{k+1} = 2 A H_k + H_{k-1}, A = (L - c) / s (H_1 = A H_0)
        nk = np.sqrt(gen.chebyshev_step(Hk, Hm, new, c, (2.0 if k else 1.0) / s, acc, wk))
        matvecs += 1
        contrib = np.max(np.abs(scale * W[:, k])) * nk
        big = max(big, contrib)
        # a-posteriori cut: the weighted terms against the start's norm
        if k > theta[-1] and contrib <= tol * nrm0:
            small += 1
            if small >= 2:
                break
        else:
            small = 0
        if k == 1:  # keep the segment start intact (a rejected segment restarts there)
            Hm, Hk, new = Hk, new, np.empty_like(x)
        else:
            Hm, Hk, new = Hk, new, Hm
        k += 1
        if not np.isfinite(nk) or (abort and np.finfo(float).eps * big > ROUND_TOL * nrm0):
            break  # hopeless: the caller shortens the segment
    err = np.finfo(float).eps * big * np.sqrt(k + 1) if np.isfinite(big) else np.inf
    return terms_obs, terms_cnt, acc, err, k, W, scale, matvecs


def chebyshev_evolve(gen: BlockGenerator, x0: np.ndarray, times: np.ndarray, observe,
                     count_R=None, tol: float = 1e-15, growth: float = 200.0,
                     margin: float = 0.1, on_state=None, on_final=None):
    """Evolve ``x0`` (Hermitian blocks) under ``gen`` and return the observables.

    Parameters
    ----------
    gen : BlockGenerator
    x0 : ndarray
        Stacked initial blocks at ``t = 0``.
    times : ndarray
        Non-decreasing output times ``>= 0``.
    observe : callable
        ``observe(x) -> 1-d float array``, real-linear in ``x``.
    count_R : sparse matrix, optional
        ``(nch, size)`` rates ``R``; the integrals ``int_0^t R x(t') dt'`` are
        returned as well.
    tol : float
        Truncation of the series relative to ``||x0||``.
    growth : float
        Segment length ``tau`` with ``Gamma tau <= growth``: the terms grow like the
        slowest mode of ``exp(tau (L - c))``, ``exp(Gamma tau / 2)``, which bounds
        the exponent range (round-off stays relative to that mode, measured
        ~1e-14 on the observables up to ``Gamma tau = 200``).
    on_state : callable, optional
        ``on_state(j, x)`` receives the state at each output time ``times[j]``
        (``x`` is reused afterwards: copy it). Segments then end at the output
        times (the state is only formed at segment ends), which costs a few
        dozen extra matrix-vector products per output.
    on_final : callable, optional
        ``on_final(x)`` receives the state at ``times[-1]`` (which is then formed;
        segments are not shortened): the start of the next stage of a
        piecewise-constant protocol.

    Returns
    -------
    obs : (len(times), nobs) ndarray
    counts : (len(times), nch) ndarray or None
    info : dict
        ``matvecs`` (including those of rejected segments) and ``segments``.
    """
    s = max(gen.width, 1e-3) * 1.01 + margin * gen.gamma
    c = -0.5 * gen.gamma
    tau_max = growth / max(gen.gamma, 1e-12)
    x = x0.copy()
    nobs = observe(x).size
    nch = 0 if count_R is None else count_R.shape[0]
    obs = np.zeros((times.size, nobs))
    counts = np.zeros((times.size, nch)) if nch else None
    cnt_now = np.zeros(nch)
    t_now = 0.0
    j = 0
    matvecs, segments = 0, 0
    while j < times.size:
        if times[j] <= t_now:
            obs[j] = observe(x)
            if nch:
                counts[j] = cnt_now
            if on_state is not None:
                on_state(j, x)
            j += 1
            continue
        tau_try = tau_max
        while True:
            t_end = min(times[-1] if on_state is None else times[j], t_now + tau_try)
            # outputs inside (t_now, t_end]
            jj = j
            while jj < times.size and times[jj] <= t_end:
                jj += 1
            taus = np.append(times[j:jj] - t_now, t_end - t_now)
            theta = s * taus
            # the state after the last output is not needed (unless it is kept)
            last = jj == times.size and on_state is None and on_final is None
            final = tau_try * s < 8.0  # short enough to accept whatever the growth
            sweep = _sweep(gen, x, theta, np.exp(c * taus), c, s, tol, observe, count_R,
                           None if last else np.zeros_like(x), abort=not final)
            matvecs += sweep[-1]
            if final or sweep[3] <= ROUND_TOL * np.linalg.norm(x):
                break
            tau_try *= 0.5  # round-off from term growth too large: shorter segment
        terms_obs, terms_cnt, acc, _err, k, W, scale, _ = sweep
        K = k + 1
        To = np.array(terms_obs)  # (K, nobs)
        wts = scale[:-1, None] * W[:-1, :K]  # outputs
        obs[j:jj] = wts @ To
        if nch:
            Tc = np.array(terms_cnt).real  # (K, nch)
            # int_0^tau exp(c u) J_k(s u) du by Gauss-Legendre on each output interval
            edges = np.concatenate([[0.0], taus])
            cum = np.zeros((taus.size, K))
            acc_int = np.zeros(K)
            for q in range(taus.size):
                a_, b_ = edges[q], edges[q + 1]
                if b_ > a_:
                    n = int(0.5 * s * (b_ - a_) + 20)
                    u, wq = np.polynomial.legendre.leggauss(n)
                    uu = 0.5 * (b_ - a_) * u + 0.5 * (a_ + b_)
                    Wq = _bessel_weights(K, s * uu) * np.exp(c * uu)[:, None]
                    acc_int = acc_int + 0.5 * (b_ - a_) * (wq @ Wq)
                cum[q] = acc_int
            cvals = cnt_now + cum @ Tc
            counts[j:jj] = cvals[:-1]
            cnt_now = cvals[-1]
        x = acc  # holds every term up to k (each step adds its own)
        t_now = t_end
        if on_state is not None:
            for q in range(j, jj):  # outputs of this segment: all at its end t_end
                on_state(q, x)
        j = jj
        segments += 1
        # outputs equal to t_end were written from the series; skip them
    if on_final is not None:
        on_final(x)  # the state at t_now = times[-1]
    return obs, counts, {"matvecs": matvecs, "segments": segments}
