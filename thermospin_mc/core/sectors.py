"""Magnon-number sectors: bases, sector Hamiltonians, decay rates, jump maps.

Basis ordering (fixed everywhere): the states of the ``m``-magnon sector are the
``m``-subsets ``c_0 < c_1 < ... < c_{m-1}`` of the 0-based sites, in
colexicographic order. The index of a subset is its colex rank
``sum_k C(c_k, k + 1)`` (combinatorial number system), so ranking is a formula
and the index of any state reached by a hop or a jump is computed, not searched.
In the one-magnon sector, index ``i - 1`` is the magnon at site ``i``.

Everything is built lazily per sector and cached: the cost of a run grows with
the sectors it visits, never with ``2^N``.
"""

from __future__ import annotations

from math import comb

import numpy as np
import scipy.sparse as sp

from ..physics.model import ChainModel, Channel, Magnons, ProductMixture
from .sector_build import assemble_csr, colex_subsets

__all__ = ["Sector", "SectorSpace", "MAX_SECTOR_DIM"]

#: Largest sector dimension whose basis we are willing to enumerate.
MAX_SECTOR_DIM = 5_000_000


class Sector:
    """Data of one magnon sector (0-based sites).

    Attributes
    ----------
    m, dim : int
        Magnon number and dimension ``C(N, m)``.
    sites : (dim, m) int64
        Occupied sites of every basis state, ascending.
    diag : (dim,) float
        Diagonal of the chain Hamiltonian ``h``.
    hop_bond, hop_to, hop_from : (nhop,) int64
        ``h[to, from] = h[from, to] = a[bond]``; ``to`` has the magnon at site
        ``bond``, ``from`` at ``bond + 1``.
    decay : (dim,) float
        Diagonal of ``sum_k L_k^+ L_k`` (so ``H_eff = h - (i/2) diag(decay)``).
    """

    def __init__(self, N: int, m: int, sites, diag, hop_bond, hop_to, hop_from, decay):
        self.N, self.m = N, m
        self.sites, self.diag = sites, diag
        self.hop_bond, self.hop_to, self.hop_from = hop_bond, hop_to, hop_from
        self.decay = decay
        self.dim = sites.shape[0]

    def h_sparse(self, a: np.ndarray) -> sp.csr_matrix:
        """Chain Hamiltonian ``h`` of this sector (sparse CSR, real; zeros kept)."""
        return self._csr(self.diag.astype(float), a, drop_zeros=False)

    def heff_sparse(self, a: np.ndarray) -> sp.csr_matrix:
        """``H_eff = h - (i/2) sum_k L_k^+ L_k`` (sparse CSR, complex; zeros dropped).

        Entry for entry the matrix ``h - 0.5j * diags(decay)`` (scipy's sparse
        difference), assembled in one pass.
        """
        diag = self.diag.astype(complex)  # keeps the sign of a zero, as the difference does
        diag.imag = 0.0 - 0.5 * self.decay
        return self._csr(diag, a, drop_zeros=True)

    def _csr(self, diag: np.ndarray, a: np.ndarray, drop_zeros: bool) -> sp.csr_matrix:
        """The sector's matrix with diagonal ``diag`` and hopping ``a[bond]``
        (``sector_build.assemble_csr``: the hop lists' entries, row by row)."""
        data, indices, indptr = assemble_csr(self.sites, self.N,
                                             np.asarray(a, dtype=float), diag, drop_zeros)
        M = sp.csr_matrix((data, indices, indptr), shape=(self.dim, self.dim))
        M.has_sorted_indices = True
        M.has_canonical_format = True
        return M

    def occupation(self) -> sp.csr_matrix:
        """``(dim, N)`` 0/1 matrix: entry ``[b, i]`` is ``n_i`` in basis state ``b``."""
        rows = np.repeat(np.arange(self.dim), self.m)
        return sp.csr_matrix((np.ones(rows.size), (rows, self.sites.ravel())),
                             shape=(self.dim, self.N))


class SectorSpace:
    """Lazily built, cached magnon sectors and jump maps of one model."""

    def __init__(self, model: ChainModel):
        self.model = model
        self.N = model.N
        self.a = np.asarray(model.couplings, dtype=float)
        self.channels: tuple[Channel, ...] = model.channels
        self._binom = np.array([[comb(n, k) for k in range(self.N + 2)]
                                for n in range(self.N + 1)], dtype=object)
        self._sectors: dict[int, Sector] = {}
        self._maps: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    # ---------------------------------------------------------------- ranking
    def dim(self, m: int) -> int:
        return comb(self.N, m)

    def _binom_col(self, k: int) -> np.ndarray:
        return self._binom[:, k].astype(np.int64)

    def rank(self, sites: np.ndarray) -> np.ndarray:
        """Colex rank (= basis index) of each row of sorted 0-based ``sites``."""
        sites = np.asarray(sites, dtype=np.int64)
        r = np.zeros(sites.shape[0], dtype=np.int64)
        for k in range(sites.shape[1]):
            r += self._binom_col(k + 1)[sites[:, k]]
        return r

    def basis(self, m: int) -> np.ndarray:
        """Occupied sites (1-based) of every basis state of sector ``m``, in basis order."""
        return self.sector(m).sites + 1

    # ---------------------------------------------------------------- sectors
    def sector(self, m: int) -> Sector:
        """The ``m``-magnon sector (built on first use, then cached)."""
        if m in self._sectors:
            return self._sectors[m]
        N = self.N
        if not 0 <= m <= N:
            raise ValueError(f"magnon number must be in 0..{N}, got {m}")
        dim = comb(N, m)
        if dim > MAX_SECTOR_DIM:
            raise ValueError(f"sector m = {m} of N = {N} has dimension C(N, m) = {dim}, "
                             f"above the limit {MAX_SECTOR_DIM}; use fewer magnons "
                             "(max_magnons) or a shorter chain")
        if m == 0:
            sites = np.zeros((1, 0), dtype=np.int64)
        else:
            sites = colex_subsets(N, m, dim)
        a = self.a
        delta = self.model.anisotropy
        if isinstance(delta, float):
            # one anisotropy (the paper's form; kept as it was, bit for bit)
            diag = np.full(dim, delta * a.sum() / 2.0)
        else:
            # per bond: Delta_l a_l in place of Delta a_l
            a = np.asarray(self.model.bond_anisotropy) * a
            delta = 1.0
            diag = np.full(dim, a.sum() / 2.0)
        idx = np.arange(dim, dtype=np.int64)
        hb, ht, hf = [], [], []
        for k in range(m):
            c = sites[:, k]
            # left wall of magnon k: site c-1 exists and is empty
            left = c > 0
            if k > 0:
                left &= sites[:, k - 1] != c - 1
            # right wall: site c+1 exists and is empty
            right = c < N - 1
            if k < m - 1:
                right &= sites[:, k + 1] != c + 1
            diag[left] -= delta * a[c[left] - 1]
            diag[right] -= delta * a[c[right]]
            # hop of magnon k one site to the left (bond c-1 joins sites c-1, c)
            col_k = self._binom_col(k + 1)
            cl = c[left]
            hb.append(cl - 1)
            hf.append(idx[left])
            ht.append(idx[left] - col_k[cl] + col_k[cl - 1])
        h = self.model.site_fields
        if np.any(h):
            # sum_i (h_i / 2) sigma^z_i = sum_i h_i / 2 - sum_{occupied i} h_i
            diag += h.sum() / 2.0 - (h[sites].sum(axis=1) if m else 0.0)
        hop_bond = np.concatenate(hb) if hb else np.zeros(0, dtype=np.int64)
        hop_to = np.concatenate(ht) if ht else np.zeros(0, dtype=np.int64)
        hop_from = np.concatenate(hf) if hf else np.zeros(0, dtype=np.int64)
        decay = np.zeros(dim)
        for ch in self.channels:
            if ch.kind == "dephasing":
                decay += ch.rate  # L^+ L = rate (sigma^z)^2 = rate
                continue
            occ = (sites == ch.site).any(axis=1)
            decay += ch.rate * (occ if ch.kind == "loss" else ~occ)
        sec = Sector(N, m, sites, diag, hop_bond, hop_to, hop_from, decay)
        self._sectors[m] = sec
        return sec

    def jump_map(self, channel: Channel, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Index map of ``channel`` from sector ``m`` to ``m + channel.dm``.

        Returns ``(src, dst)``: the jump operator (without its ``sqrt(rate)``) maps
        basis state ``src[j]`` of sector ``m`` to basis state ``dst[j]`` of the
        target sector with amplitude 1; states not in ``src`` are annihilated.
        """
        key = (self.channels.index(channel), m)
        if key in self._maps:
            return self._maps[key]
        sec = self.sector(m)
        occ = (sec.sites == channel.site).any(axis=1)
        if channel.kind == "dephasing":
            src = np.arange(sec.dim, dtype=np.int64)
            self._maps[key] = (src, src.copy())
            return self._maps[key]
        if channel.kind == "loss":
            src = np.flatnonzero(occ)
            rows = sec.sites[src]
            new = rows[rows != channel.site].reshape(src.size, m - 1) if m > 0 else rows
        else:
            src = np.flatnonzero(~occ)
            rows = sec.sites[src]
            new = np.sort(np.concatenate([rows, np.full((src.size, 1), channel.site)], axis=1),
                          axis=1)
        dst = self.rank(new) if src.size else np.zeros(0, dtype=np.int64)
        self._maps[key] = (src.astype(np.int64), dst.astype(np.int64))
        return self._maps[key]

    def jump_amplitudes(self, channel: Channel, m: int) -> np.ndarray:
        """Amplitudes of ``channel``'s map out of sector ``m`` (aligned with
        :meth:`jump_map`): 1 for loss and pump; for dephasing the eigenvalue of
        ``sigma^z`` at the site, +1 (up) or -1 (down, a magnon)."""
        src, _ = self.jump_map(channel, m)
        if channel.kind != "dephasing":
            return np.ones(src.size)
        occ = (self.sector(m).sites == channel.site).any(axis=1)
        return np.where(occ, -1.0, 1.0)[src]

    def pair_maps(self, i: int, k: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Two-point operators of the 0-based sites ``i, k`` in sector ``m``.

        Returns ``(both, src, dst)``: ``both`` lists the basis states with ``n_i
        n_k = 1``; ``s+_i s-_k`` maps basis state ``src[q]`` to ``dst[q]`` with
        amplitude 1 (for ``i != k`` it moves the magnon at ``i`` to the empty site
        ``k``; for ``i == k`` it is ``1 - n_i``). Hence
        ``<n_i n_k> = sum_q rho[both_q, both_q]`` and
        ``<s+_i s-_k> = sum_q rho[src_q, dst_q]``.
        """
        sec = self.sector(m)
        occ_i = (sec.sites == i).any(axis=1)
        occ_k = (sec.sites == k).any(axis=1)
        both = np.flatnonzero(occ_i & occ_k).astype(np.int64)
        if i == k:
            src = np.flatnonzero(~occ_i).astype(np.int64)
            return both, src, src.copy()
        src = np.flatnonzero(occ_i & ~occ_k).astype(np.int64)
        if not src.size:
            return both, src, src.copy()
        rows = sec.sites[src].copy()
        rows[rows == i] = k
        return both, src, self.rank(np.sort(rows, axis=1)).astype(np.int64)

    def initial_state(self) -> tuple[int, np.ndarray]:
        """``(m0, psi0)``: the model's initial pure state in its sector's basis."""
        ini = self.model.initial
        if self.model.is_mixed:
            raise ValueError("the initial state is a mixture, not a pure state; use "
                             "initial_mixture()")
        if isinstance(ini, Magnons):
            m0 = len(ini.sites)
            psi = np.zeros(self.dim(m0), dtype=complex)
            idx = self.rank(np.array([[s - 1 for s in ini.sites]], dtype=np.int64))[0]
            psi[idx] = 1.0
            return m0, psi
        return ini.m, np.asarray(ini.amplitudes, dtype=complex)

    def initial_mixture(self) -> list[tuple[int, np.ndarray]]:
        """Site-diagonal initial mixture as ``[(m, weights over sector m's basis)]``
        (weights sum to 1 over all sectors); sectors without weight are left out."""
        ini = self.model.initial
        out = []
        if isinstance(ini, ProductMixture):
            p = np.asarray(ini.p)
            for m in self.model.initial_sectors:
                sites = self.sector(m).sites
                occ = np.zeros((sites.shape[0], self.N), dtype=bool)
                if m:
                    occ[np.arange(sites.shape[0])[:, None], sites] = True
                w = np.prod(np.where(occ, p, 1.0 - p), axis=1)
                if np.any(w > 0):
                    out.append((m, w))
            return out
        by_m: dict[int, np.ndarray] = {}
        for cfg, w in zip(ini.configurations, ini.weights, strict=True):
            m = len(cfg)
            if m not in by_m:
                by_m[m] = np.zeros(self.dim(m))
            idx = self.rank(np.array([[s - 1 for s in cfg]], dtype=np.int64))[0] if m else 0
            by_m[m][idx] += w
        return sorted(by_m.items())
