"""Compiled kernels on stacked Hermitian blocks: the real packing and its checks.

The stacked blocks of an :class:`~thermospin_mc.exact.blocks.BlockLayout`
(``offs``, ``dims``) that are Hermitian hold ``d^2`` real numbers each:
:func:`hermitian_pack` writes them in place of each block's ``d x d`` slots and
:func:`hermitian_unpack` restores the blocks (the real packing of
:class:`~thermospin_mc.exact.blocksolve.HermitianPacking`, on which the
steady-state GMRES and the Davidson spectrum run); :func:`hermitian_defect`
measures how far blocks are from Hermitian. :func:`upper_half` and
:func:`hermitian_sum` build Hermitian blocks from half products (``Y = U + U^+``)
for the block solves of :class:`~thermospin_mc.exact.blocksolve.NoJumpInverse`.
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["hermitian_pack", "hermitian_unpack", "hermitian_defect", "upper_half",
           "hermitian_sum"]


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
