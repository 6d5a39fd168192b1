"""The complete Liouvillian spectrum of small or uncoupled problems: closed form and dense.

Without coupled sectors and without dephasing, a sector's spectrum is that of
``X -> -i (H X - X H^+)`` (:func:`closed_form`, one ``C(N, m)``-sized
eigenproblem); otherwise, up to :data:`~thermospin_mc.exact.relaxation.DENSE_LIMIT`
real unknowns (or on request), the real packed generator is assembled and all
its eigenvalues computed (:func:`dense_cached`, kept for the last few models;
refused above :data:`DENSE_BYTES`). See :mod:`.relaxation`.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import scipy.sparse as sp

from ..core.sectors import SectorSpace
from ..physics.model import ChainModel
from .blocks import BlockLayout, feed_generator, nojump_generator

__all__ = ["closed_form", "dense_cached", "DENSE_BYTES"]

#: Memory budget of ``method="dense"`` (the matrix and LAPACK's copy): 8 GB, at
#: most a quarter of the machine's memory.
try:
    _PHYS = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
    _PHYS = 16 * 2**30
DENSE_BYTES = min(8e9, 0.25 * _PHYS)


def closed_form(space: SectorSpace, m: int, k: int, thr: float) -> np.ndarray:
    """The rightmost eigenvalues of ``X -> -i (H X - X H^+)`` on sector ``m``, at
    least ``k``: ``-i (lambda_a - conj(lambda_b))`` with real part ``Im lambda_a +
    Im lambda_b``, over the ``lambda`` among the ``k`` of largest imaginary part
    (and every one tied with the ``k``-th to ``thr``: the order of equal real
    parts goes by ``|im|``), which holds the ``k`` largest sums."""
    sec = space.sector(m)
    if not np.any(sec.decay):  # Hermitian: real energies, real parts exactly 0
        lam = np.linalg.eigvalsh(sec.h_sparse(space.a).toarray()).astype(complex)
    else:
        lam = np.linalg.eigvals(sec.heff_sparse(space.a).toarray())
    if lam.size > k:
        lam = lam[lam.imag >= np.sort(lam.imag)[::-1][k - 1] - thr]
    re = lam.imag[:, None] + lam.imag[None, :]
    im = -(lam.real[:, None] - lam.real[None, :])
    return (re + 1j * im).ravel()


# ---------------------------------------------------------------------------- dense
def _packing_maps(layout: BlockLayout):
    """``(U, diag, up, low)``: the sparse complex ``U`` with ``unpack(r) = U r`` and
    the packed positions of the diagonal, of ``X_ij`` (``i < j``, its real part)
    and of its imaginary part (:class:`~thermospin_mc.exact.blocksolve.HermitianPacking`)."""
    diag, up, low = [], [], []
    for m in layout.sectors:
        d, o = layout.dims[m], layout.offsets[m]
        i, j = np.triu_indices(d, 1)
        diag.append(o + np.arange(d) * (d + 1))
        up.append(o + i * d + j)
        low.append(o + j * d + i)
    diag, up, low = (np.concatenate(x).astype(np.int64) for x in (diag, up, low))
    s = 1.0 / np.sqrt(2.0)
    # r[up] = sqrt2 Re X_ij, r[low] = sqrt2 Im X_ij: X_ij = (r_up + i r_low) / sqrt2
    rows = np.concatenate([diag, up, low, up, low])
    cols = np.concatenate([diag, up, up, low, low])
    vals = np.concatenate([np.ones(diag.size), np.full(up.size, s), np.full(up.size, s),
                           np.full(up.size, 1j * s), np.full(up.size, -1j * s)])
    n = layout.size
    U = sp.csr_matrix((vals.astype(complex), (rows, cols)), shape=(n, n))
    return U, diag, up, low


@functools.lru_cache(maxsize=4)
def dense_cached(model: ChainModel, group: tuple) -> np.ndarray:
    """:func:`_dense` of the model's blocks ``group``, kept for the last few models
    (``relaxation_time`` after ``liouvillian_spectrum`` costs nothing more)."""
    lam = _dense(BlockLayout(SectorSpace(model), list(group)))
    lam.flags.writeable = False
    return lam


def _dense(layout: BlockLayout) -> np.ndarray:
    """Every eigenvalue of the assembled real packed generator (``8 n^2`` bytes and
    LAPACK's workspace; refused above :data:`DENSE_BYTES`)."""
    n = layout.size
    need = 16.0 * n * n
    if need > DENSE_BYTES:
        raise ValueError(f"method='dense' needs about {need / 1e9:.1f} GB for {n} unknowns "
                         f"(budget {DENSE_BYTES / 1e9:.1f} GB); use method='davidson'")
    L = (nojump_generator(layout) + feed_generator(layout)).tocsr()
    U, diag, up, low = _packing_maps(layout)
    Y = (L @ U).tocsr()  # columns: L of the unpacked unit vectors (Hermitian blocks)
    M = np.empty((n, n))
    M[diag] = Y[diag].real.toarray()
    M[up] = np.sqrt(2.0) * Y[up].real.toarray()
    M[low] = np.sqrt(2.0) * Y[up].imag.toarray()
    return np.linalg.eigvals(M)

