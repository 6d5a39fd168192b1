"""Compiled helpers that build a magnon sector's basis and sparse matrices.

The sectors of long chains are large (N = 21, m = 10: 352,716 states, four
million nonzeros), and building them with general tools (``itertools`` and a
sort for the basis, COO -> CSR conversion and sparse sums for ``H_eff``) took
most of the set-up of a run there. These loops produce the same arrays,
entry for entry, in one pass each:

- :func:`colex_subsets`: the ``m``-subsets of ``0..N-1`` in colexicographic
  order (the basis order of :mod:`~thermospin_mc.core.sectors`);
- :func:`shifted_csr`, :func:`off_diagonal`: ``H - c`` and the off-diagonal
  part of a sector's ``H_eff`` for the trajectory engine, the same entries as
  scipy's sparse differences, without their sort-and-merge passes;
- :func:`assemble_csr`: the canonical CSR (rows ascending, columns sorted within
  a row) of a matrix given by its diagonal and its symmetric hop pairs, as
  ``scipy.sparse`` builds it; entries equal to zero are dropped or kept on
  request, to match the two ways :class:`~thermospin_mc.core.sectors.Sector`
  used to build ``h`` (zeros kept) and ``H_eff`` (zeros dropped by the sparse
  difference).

``tests/test_sectors.py`` holds both against the general constructions.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit

__all__ = ["colex_subsets", "assemble_csr", "shifted_csr", "off_diagonal"]


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
def assemble_csr(diag, hop_to, hop_from, vals, drop_zeros: bool):
    """Canonical CSR of ``A = diag(diag) + sum_j vals[j] (|to_j><from_j| + |from_j><to_j|)``.

    ``diag`` (real or complex) sets the dtype; ``vals`` are cast to it. The
    pairs ``(to_j, from_j)`` must be distinct and off the diagonal (so no
    entry is a sum). Returns ``(data, indices, indptr)``; with ``drop_zeros``
    the entries equal to zero are left out.
    """
    d, nh = diag.size, hop_to.size
    count = np.ones(d, dtype=np.int64)
    for j in range(nh):
        count[hop_to[j]] += 1
        count[hop_from[j]] += 1
    indptr = np.zeros(d + 1, dtype=np.int64)
    for i in range(d):
        indptr[i + 1] = indptr[i] + count[i]
    fill = indptr[:-1].copy()
    indices = np.empty(indptr[d], dtype=np.int64)
    data = np.empty(indptr[d], dtype=diag.dtype)
    for i in range(d):
        indices[fill[i]] = i
        data[fill[i]] = diag[i]
        fill[i] += 1
    for j in range(nh):
        t, f = hop_to[j], hop_from[j]
        indices[fill[t]] = f
        data[fill[t]] = vals[j]
        fill[t] += 1
        indices[fill[f]] = t
        data[fill[f]] = vals[j]
        fill[f] += 1
    # sort each (short) row by column, then squeeze out zeros if asked
    n = 0
    start = 0
    for i in range(d):
        end = indptr[i + 1]
        for a in range(start + 1, end):
            col, val = indices[a], data[a]
            b = a - 1
            while b >= start and indices[b] > col:
                indices[b + 1] = indices[b]
                data[b + 1] = data[b]
                b -= 1
            indices[b + 1] = col
            data[b + 1] = val
        for a in range(start, end):
            if drop_zeros and data[a] == 0:
                continue
            indices[n] = indices[a]
            data[n] = data[a]
            n += 1
        start = end
        indptr[i + 1] = n
    return data[:n].copy(), indices[:n].copy(), indptr


def shifted_csr(H, d: int):
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
    diag = H.diagonal().real
    shift = 0.5 * (diag.max() + diag.min()) if d else 0.0
    H = sp.csr_matrix(H)
    on = H.indices == np.repeat(np.arange(d), np.diff(H.indptr))
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
    rows = np.repeat(np.arange(d), np.diff(Hc.indptr))
    keep = (Hc.indices != rows) & (Hc.data != 0)
    indptr = np.zeros(d + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=d), out=indptr[1:])
    off = sp.csr_matrix((Hc.data[keep], Hc.indices[keep], indptr), shape=Hc.shape)
    off.has_sorted_indices = True
    return off
