"""Compiled helpers that build a magnon sector's basis and sparse matrices.

The sectors of long chains are large (N = 21, m = 10: 352,716 states, four
million nonzeros), and building them with general tools (``itertools`` and a
sort for the basis, COO -> CSR conversion and sparse sums for ``H_eff``) took
most of the set-up of a run there. These functions produce the same arrays,
entry for entry, in a pass or two each:

- :func:`colex_subsets`: the ``m``-subsets of ``0..N-1`` in colexicographic
  order (the basis order of :mod:`~thermospin_mc.core.sectors`);
- :func:`shifted_csr`, :func:`off_diagonal`: ``H - c`` and the off-diagonal
  part of a sector's ``H_eff`` for the trajectory engine, the same entries as
  scipy's sparse differences, without their sort-and-merge passes;
- :func:`assemble_csr`: the canonical CSR (rows ascending, columns sorted within
  a row) of a sector's ``h`` or ``H_eff``, row by row from the basis, as
  ``scipy.sparse`` builds it from the hop lists; entries equal to zero are
  dropped or kept on request, to match the two ways
  :class:`~thermospin_mc.core.sectors.Sector` used to build ``h`` (zeros
  kept) and ``H_eff`` (zeros dropped by the sparse difference).

``tests/test_sectors.py`` holds each against the general construction it replaced.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit

__all__ = ["colex_subsets", "assemble_csr", "shifted_csr", "off_diagonal", "csr_rows"]


@njit(cache=True, nogil=True)
def colex_subsets(N: int, m: int, dim: int) -> np.ndarray:
    """``(dim, m)`` int64: every ``m``-subset of ``0..N-1`` (ascending within a row),
    row ``r`` the subset of colex rank ``r`` (``dim`` must be ``C(N, m)``)."""
    out = np.empty((dim, m), dtype=np.int64)
    c = np.arange(m + 1, dtype=np.int64)
    c[m] = N  # sentinel: the first subset is 0..m-1, the last ends at N-1
    for r in range(dim):
        for k in range(m):
            out[r, k] = c[k]
        # successor in colex order: raise the lowest element that can move up
        # by one, and reset the ones below it to 0, 1, ...
        k = 0
        while k < m and c[k] + 1 == c[k + 1]:
            k += 1
        if k < m:
            c[k] += 1
            for j in range(k):
                c[j] = j
    return out


@njit(cache=True, nogil=True)
def assemble_csr(sites, N: int, a, diag, drop_zeros: bool):
    """Canonical CSR of a sector's ``h`` (or ``H_eff``), row by row from its basis.

    ``sites``: the ``(dim, m)`` basis in colex order; ``a``: the hopping
    amplitude of each bond (``N - 1``); ``diag``: the diagonal (real or
    complex, it sets the dtype). Row ``i`` holds the diagonal and, for every
    magnon that can hop to an empty neighbouring site across bond ``l``, the
    entry ``a[l]`` at the colex rank of the state it hops to (the rank moves
    by ``C(c', k + 1) - C(c, k + 1)`` for magnon ``k`` from site ``c`` to
    ``c'``), columns sorted. With ``drop_zeros`` entries equal to zero are
    left out. Returns ``(data, indices, indptr)``. Rows are written in order,
    each from its own basis state, so the build streams through memory.
    """
    dim, m = sites.shape
    C = np.zeros((N + 1, m + 2), dtype=np.int64)  # C[n, k] = binomial(n, k)
    for n in range(N + 1):
        C[n, 0] = 1
        for k in range(1, min(n, m + 1) + 1):
            C[n, k] = C[n - 1, k - 1] + (C[n - 1, k] if k <= n - 1 else 0)
    # two passes, count then fill, so that the arrays are allocated (and first
    # touched, which costs as much as the filling) at their final size
    indptr = np.zeros(dim + 1, dtype=np.int64)
    for fill in range(2):
        if fill:
            indices = np.empty(indptr[dim], dtype=np.int64)
            data = np.empty(indptr[dim], dtype=diag.dtype)
        for i in range(dim):
            n = indptr[i]
            if not (drop_zeros and diag[i] == 0):
                if fill:
                    indices[n] = i
                    data[n] = diag[i]
                n += 1
            for k in range(m):
                c = sites[i, k]
                for side in range(2):  # hop left (across bond c - 1), then right (bond c)
                    if side == 0:
                        if c == 0 or (k > 0 and sites[i, k - 1] == c - 1):
                            continue
                        to, v = c - 1, a[c - 1]
                    else:
                        if c == N - 1 or (k < m - 1 and sites[i, k + 1] == c + 1):
                            continue
                        to, v = c + 1, a[c]
                    if drop_zeros and v == 0:
                        continue
                    if fill:
                        indices[n] = i - C[c, k + 1] + C[to, k + 1]
                        data[n] = v
                    n += 1
            if not fill:
                indptr[i + 1] = n
                continue
            start = indptr[i]
            for p in range(start + 1, n):  # insertion sort of the (short) row
                col, val = indices[p], data[p]
                q = p - 1
                while q >= start and indices[q] > col:
                    indices[q + 1] = indices[q]
                    data[q + 1] = data[q]
                    q -= 1
                indices[q + 1] = col
                data[q + 1] = val
    return data, indices, indptr


def csr_rows(M) -> np.ndarray:
    """The row of every stored entry of the CSR matrix ``M`` (aligned with ``M.indices``)."""
    return np.repeat(np.arange(M.shape[0]), np.diff(M.indptr))


def shifted_csr(H):
    """``(H - c, c)``: the sorted CSR ``H - c``, ``c`` the middle of the real diagonal's range.

    The shift is a global phase ``exp(-i c t)``, invisible to norms, jumps and
    observables; it cuts ``||H||`` from ~ ``sum_l a_l / 2`` (the Ising offset)
    to ~ ``4 max(a) + gamma``, and with it the number of Taylor substeps.
    Entry for entry scipy's sparse difference ``H - c I``, which it takes
    where a diagonal entry is absent or becomes zero or an off-diagonal entry
    is an explicit zero (the difference drops zeros); otherwise it subtracts
    ``c`` in place of a copy (the difference's sorting and merging take most
    of the time in the large sectors).
    """
    d = H.shape[0]
    diag = H.diagonal().real
    shift = 0.5 * (diag.max() + diag.min()) if d else 0.0
    H = sp.csr_matrix(H)
    on = H.indices == csr_rows(H)
    if (H.has_sorted_indices and np.count_nonzero(on) == d
            and not np.any(H.data[on] - shift == 0) and np.all(H.data[~on] != 0)):
        data = H.data.copy()
        data[on] -= shift
        Hc = sp.csr_matrix((data, H.indices.copy(), H.indptr.copy()), shape=H.shape)
    else:
        Hc = (H - shift * sp.identity(d, format="csr")).tocsr()
    Hc.sort_indices()
    return Hc, float(shift)


def off_diagonal(Hc):
    """The off-diagonal entries of the sorted CSR ``Hc`` that are not zero: entry for
    entry ``(Hc - diags(Hc.diagonal())).eliminate_zeros()``, by selection."""
    d = Hc.shape[0]
    rows = csr_rows(Hc)
    keep = (Hc.indices != rows) & (Hc.data != 0)
    indptr = np.zeros(d + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=d), out=indptr[1:])
    off = sp.csr_matrix((Hc.data[keep], Hc.indices[keep], indptr), shape=Hc.shape)
    off.has_sorted_indices = True
    return off
