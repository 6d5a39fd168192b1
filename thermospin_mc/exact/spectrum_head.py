"""The Chebyshev head of a spectrum: ``int_0^T exp(-i omega t) a.exp(L t) x0 dt``
for many frequencies from one Chebyshev expansion in time (:func:`chebyshev_head`).

It leaves the one residual vector ``exp(L T) x0`` for all frequencies, the tail
that :class:`~thermospin_mc.exact.reduced_resolvent.ReducedResolvent` resolves
(:mod:`.correlation_spectrum`).
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.special as ssp

__all__ = ["chebyshev_head", "HEAD_TERMS", "HEAD_TOL", "HEAD_ROUND_TOL", "HEAD_GROWTH"]

#: Chebyshev terms of one head segment (its length is ``HEAD_TERMS / s``).
HEAD_TERMS = 500

#: Truncation of a head segment's series (relative to the norm of its start), its
#: accepted round-off estimate, and the segment length ``gamma t <= HEAD_GROWTH``
#: (as :func:`~thermospin_mc.exact.chebyshev.chebyshev_evolve`).
HEAD_TOL = 1e-15
HEAD_ROUND_TOL = 1e-12
HEAD_GROWTH = 200.0


def chebyshev_head(cheb, x0: np.ndarray, a: np.ndarray, omegas: np.ndarray,
                   budget: int, stop: float):
    """``int_0^T exp(-i omega t) a.exp(L t) x0 dt`` for every omega, and ``exp(L T) x0``.

    ``exp(L t) x0 = exp(c t) sum_k (2 - delta_k0) J_k(s t) H_k`` on segments of
    ``[0, T]`` (``H_{k+1} = 2 (L - c) H_k / s + H_{k-1}``, as
    :func:`~thermospin_mc.exact.chebyshev.chebyshev_evolve`), so ``a.x(t)`` is known at any
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

