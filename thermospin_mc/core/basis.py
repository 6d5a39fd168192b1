"""Sector bases of a bare chain of ``N`` sites (no model), and the full-space order.

The states of the ``m``-magnon sector are the ``m``-subsets of the 0-based sites
in colexicographic order (:func:`colex_rank`, :mod:`thermospin_mc.core.sectors`);
:class:`SectorBasis` serves them to :meth:`Operator.sector_matrix
<thermospin_mc.core.operators.Operator.sector_matrix>` and the block states without
building a model. :func:`full_tables` and :func:`full_indices` place the sector
bases in the full ``2^N`` space: the tensor product of sites ``1..N`` with site 1
the leftmost factor, index 0 ``|up>`` and 1 ``|down>`` on one site (docs/model.md
section 13).
"""

from __future__ import annotations

import itertools
import types
from math import comb

import numpy as np

__all__ = ["SectorBasis", "colex_rank", "full_tables", "full_indices", "sector_sites"]


def colex_rank(sites: np.ndarray) -> np.ndarray:
    """Colex rank (the sector basis index) of each row of sorted 0-based ``sites``."""
    sites = np.asarray(sites, dtype=np.int64)
    r = np.zeros(sites.shape[0], dtype=np.int64)
    for k in range(sites.shape[1]):
        col = np.array([comb(int(c), k + 1) for c in range(int(sites[:, k].max()) + 1)]
                       if sites.shape[0] else [0], dtype=np.int64)
        r += col[sites[:, k]]
    return r


def full_tables(N: int) -> tuple[np.ndarray, np.ndarray]:
    """``(magnons, rank)`` of every full-space index ``0..2^N - 1`` (docs/model.md 13 order)."""
    idx = np.arange(1 << N, dtype=np.int64)
    count = np.zeros(idx.size, dtype=np.int64)
    rank = np.zeros(idx.size, dtype=np.int64)
    for s in range(N):  # 0-based site s is bit N - 1 - s; ascending sites give colex ranks
        down = (idx >> (N - 1 - s)) & 1
        binom = np.array([comb(s, k + 1) for k in range(N + 1)], dtype=np.int64)
        rank += down * binom[count]
        count += down
    return count, rank


def full_indices(N: int, m: int) -> np.ndarray:
    """Full-space indices of the basis states of sector ``m``, in sector basis order."""
    count, rank = full_tables(N)
    idx = np.flatnonzero(count == m)
    return idx[np.argsort(rank[idx], kind="stable")]


def sector_sites(N: int, m: int) -> np.ndarray:
    """``(C(N, m), m)`` 0-based down sites of sector ``m`` in basis (colex) order."""
    if m == 0:
        return np.zeros((1, 0), dtype=np.int64)
    sites = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(N), m)),
                        dtype=np.int64, count=comb(N, m) * m).reshape(-1, m)
    return sites[np.argsort(colex_rank(sites), kind="stable")]


class SectorBasis:
    """The sector bases of an ``N``-site chain without a model: what
    :meth:`Operator.sector_matrix` needs (``N``, ``sector(m).sites``, ``rank``),
    for block states and full-space conversions. Bases are cached per ``m``."""

    def __init__(self, N: int):
        self.N = int(N)
        self._sites: dict[int, types.SimpleNamespace] = {}

    def dim(self, m: int) -> int:
        return comb(self.N, m)

    def rank(self, sites: np.ndarray) -> np.ndarray:
        return colex_rank(sites)

    def sector(self, m: int) -> types.SimpleNamespace:
        """``sector(m).sites``: ``(C(N, m), m)`` 0-based down sites in basis order."""
        if m not in self._sites:
            self._sites[m] = types.SimpleNamespace(m=m, sites=sector_sites(self.N, m))
        return self._sites[m]

    def basis(self, m: int) -> np.ndarray:
        """1-based down sites of every basis state of sector ``m``, in basis order."""
        return self.sector(m).sites + 1
