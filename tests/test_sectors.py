"""Tests for thermospin_mc.sectors against a naive full 2^N construction (docs/model.md s. 5-6).

Conventions built here from scratch: single-site basis (|up>, |down>), sz|up> = +|up>,
s+ = |up><down|, s- = |down><up|; a product state with down spins (magnons) on the
0-based site set S has full-space index sum_{i in S} 2^(N-1-i) (site 0 is the most
significant kron factor).
"""

from __future__ import annotations

import itertools
from functools import reduce
from math import comb

import numpy as np
import pytest

import thermospin_mc as tsm

# Exact integer/binary-fraction arithmetic in both constructions up to sums of a
# few O(1) couplings: agreement to 1e-12 leaves only round-off.
TOL = 1e-12

I2 = np.eye(2)
SX = np.array([[0.0, 1.0], [1.0, 0.0]])
SY = np.array([[0.0, -1j], [1j, 0.0]])
SZ = np.diag([1.0, -1.0])
SP = np.array([[0.0, 1.0], [0.0, 0.0]])  # |up><down|: removes a magnon
SM = SP.T  # |down><up|: creates a magnon


def site_op(op, i, N):
    """Full 2^N operator acting with ``op`` on 0-based site ``i``."""
    return reduce(np.kron, [op if k == i else I2 for k in range(N)])


def full_h(a, N, delta=1.0):
    """h = sum_l (a_l/2) (sx sx + sy sy + delta sz sz) on bonds (l, l+1), full space."""
    h = np.zeros((2**N, 2**N), dtype=complex)
    for l in range(N - 1):
        h += 0.5 * a[l] * (site_op(SX, l, N) @ site_op(SX, l + 1, N)
                           + site_op(SY, l, N) @ site_op(SY, l + 1, N)
                           + delta * site_op(SZ, l, N) @ site_op(SZ, l + 1, N))
    return h


def full_index(sites0, N):
    """Full-space index of the product state with magnons on 0-based ``sites0``."""
    return sum(2 ** (N - 1 - s) for s in sites0)


def sector_indices(space, m):
    """Full-space indices of the basis states of sector m, in the package's order."""
    N = space.N
    return np.array([full_index(row - 1, N) for row in space.basis(m)], dtype=int)


def random_couplings(N, seed):
    rng = np.random.default_rng(seed)
    return tuple(rng.uniform(0.5, 2.0, N - 1))


# ------------------------------------------------------------------ bases
@pytest.mark.parametrize("N", [2, 3, 5, 7, 10])
def test_sector_dimensions_and_basis(N):
    space = tsm.SectorSpace(tsm.ChainModel(N=N))
    total = 0
    for m in range(N + 1):
        sec = space.sector(m)
        assert sec.dim == comb(N, m) == space.dim(m)
        b = space.basis(m)
        assert b.shape == (comb(N, m), m)
        # every m-subset of 1..N exactly once, each row strictly increasing
        assert np.all(np.diff(b, axis=1) > 0)
        assert {tuple(r) for r in b} == set(itertools.combinations(range(1, N + 1), m))
        # the ranking formula is the inverse of the basis enumeration
        np.testing.assert_array_equal(space.rank(b - 1), np.arange(sec.dim))
        total += sec.dim
    assert total == 2**N


def test_one_magnon_basis_is_site_order():
    # documented convention: in the one-magnon sector index i-1 is the magnon at site i
    space = tsm.SectorSpace(tsm.ChainModel(N=6))
    np.testing.assert_array_equal(space.basis(1)[:, 0], np.arange(1, 7))


def test_sector_out_of_range():
    space = tsm.SectorSpace(tsm.ChainModel(N=4))
    with pytest.raises(ValueError, match="magnon number"):
        space.sector(5)
    with pytest.raises(ValueError, match="magnon number"):
        space.sector(-1)


# ------------------------------------------------------------------ one-magnon form
@pytest.mark.parametrize("N", [2, 3, 5, 8])
def test_one_magnon_hamiltonian_tridiagonal(N):
    a = np.array(random_couplings(N, seed=N))
    model = tsm.ChainModel(N=N, profile=tsm.BondCouplings(tuple(a)))
    space = tsm.SectorSpace(model)
    H = space.sector(1).h_sparse(space.a).toarray()
    # docs/model.md s. 5: hopping a_l between |l>, |l+1>; E_i = sum a/2 - (a_{i-1} + a_i)
    apad = np.concatenate([[0.0], a, [0.0]])  # a_0 = a_N = 0
    E = np.array([a.sum() / 2 - (apad[i - 1] + apad[i]) for i in range(1, N + 1)])
    expected = np.diag(E) + np.diag(a, 1) + np.diag(a, -1)
    np.testing.assert_allclose(H, expected, rtol=0, atol=TOL)


def test_zero_magnon_energy():
    # all up: every sz sz = +1, so h = sum_l a_l / 2
    a = random_couplings(6, seed=1)
    space = tsm.SectorSpace(tsm.ChainModel(N=6, profile=tsm.BondCouplings(a)))
    H = space.sector(0).h_sparse(space.a).toarray()
    np.testing.assert_allclose(H, [[sum(a) / 2]], atol=TOL)


# ------------------------------------------------------------------ vs full space
@pytest.mark.parametrize("N", [4, 5, 6])
@pytest.mark.parametrize("delta", [1.0, 0.37])
def test_sector_hamiltonians_match_full_space(N, delta):
    a = random_couplings(N, seed=10 * N)
    model = tsm.ChainModel(N=N, profile=tsm.BondCouplings(a), anisotropy=delta)
    space = tsm.SectorSpace(model)
    h = full_h(np.array(a), N, delta)
    assert np.allclose(h, h.conj().T)
    seen = []
    for m in range(N + 1):
        idx = sector_indices(space, m)
        seen.append(idx)
        H = space.sector(m).h_sparse(space.a).toarray()
        np.testing.assert_allclose(H, h[np.ix_(idx, idx)], rtol=0, atol=TOL)
        # h conserves m: nothing couples this sector to the rest of the space
        rest = np.setdiff1d(np.arange(2**N), idx)
        assert np.abs(h[np.ix_(rest, idx)]).max(initial=0.0) < TOL
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(2**N))


def test_sector_hamiltonian_uses_model_couplings_from_profile():
    # couplings coming through a temperature profile (not given directly)
    N = 5
    model = tsm.ChainModel(N=N, profile=tsm.LinearProfile(0.0, 3.0))
    space = tsm.SectorSpace(model)
    h = full_h(np.asarray(model.couplings), N)
    for m in range(N + 1):
        idx = sector_indices(space, m)
        np.testing.assert_allclose(space.sector(m).h_sparse(space.a).toarray(),
                                   h[np.ix_(idx, idx)], rtol=0, atol=TOL)


@pytest.mark.parametrize(("N", "pump_site"), [(4, 2), (5, None), (6, 4)])
def test_jump_maps_match_full_space(N, pump_site):
    gamma, gamma_pump = 1.3, 0.7
    model = tsm.ChainModel(N=N, profile=tsm.BondCouplings(random_couplings(N, 3)),
                           gamma=gamma, gamma_pump=gamma_pump, pump_site=pump_site)
    space = tsm.SectorSpace(model)
    c = model.pump_site - 1  # 0-based
    full_ops = {"loss_left": site_op(SP, 0, N), "loss_right": site_op(SP, N - 1, N),
                "pump": site_op(SM, c, N)}
    assert [ch.name for ch in model.channels] == list(full_ops)
    for ch in model.channels:
        op = full_ops[ch.name]
        for m in range(N + 1):
            t = m + ch.dm
            if not 0 <= t <= N:
                continue
            src, dst = space.jump_map(ch, m)
            P = np.zeros((space.dim(t), space.dim(m)))
            P[dst, src] = 1.0
            idx_m, idx_t = sector_indices(space, m), sector_indices(space, t)
            np.testing.assert_array_equal(P, op[np.ix_(idx_t, idx_m)].real)
            # and the operator leaves nothing outside the target sector
            rest = np.setdiff1d(np.arange(2**N), idx_t)
            assert not np.any(op[np.ix_(rest, idx_m)])


@pytest.mark.parametrize(("N", "pump_site"), [(4, 1), (5, None), (6, 3), (7, None)])
def test_decay_diagonal(N, pump_site):
    gamma, gamma_pump = 3.102, 0.62
    model = tsm.ChainModel(N=N, gamma=gamma, gamma_pump=gamma_pump, pump_site=pump_site)
    space = tsm.SectorSpace(model)
    c = model.pump_site
    for m in range(N + 1):
        b = space.basis(m)
        n1 = (b == 1).any(axis=1)
        nN = (b == N).any(axis=1)
        nc = (b == c).any(axis=1)
        expected = gamma * (n1.astype(float) + nN) + gamma_pump * (1.0 - nc)
        np.testing.assert_allclose(space.sector(m).decay, expected, rtol=0, atol=TOL)


@pytest.mark.parametrize("N", [4, 5])
def test_heff_matches_full_space(N):
    # H_eff = h - (i/2) sum_k L_k^+ L_k, built in the full space
    gamma, gamma_pump = 2.0, 0.5
    a = random_couplings(N, seed=7)
    model = tsm.ChainModel(N=N, profile=tsm.BondCouplings(a), gamma=gamma,
                           gamma_pump=gamma_pump, pump_site=2)
    space = tsm.SectorSpace(model)
    Ls = [np.sqrt(gamma) * site_op(SP, 0, N), np.sqrt(gamma) * site_op(SP, N - 1, N),
          np.sqrt(gamma_pump) * site_op(SM, 1, N)]
    heff = full_h(np.array(a), N) - 0.5j * sum(L.conj().T @ L for L in Ls)
    for m in range(N + 1):
        idx = sector_indices(space, m)
        np.testing.assert_allclose(space.sector(m).heff_sparse(space.a).toarray(),
                                   heff[np.ix_(idx, idx)], rtol=0, atol=TOL)


def test_occupation_matrix():
    N = 5
    space = tsm.SectorSpace(tsm.ChainModel(N=N))
    nz = [np.real(np.diag((I2 - SZ) / 2)) for _ in range(N)]  # n = (1 - sz)/2
    for m in range(N + 1):
        occ = space.sector(m).occupation().toarray()
        idx = sector_indices(space, m)
        for i in range(N):
            diag_full = reduce(np.kron, [nz[k] if k == i else np.ones(2) for k in range(N)])
            np.testing.assert_array_equal(occ[:, i], diag_full[idx])
        np.testing.assert_array_equal(occ.sum(axis=1), m)


def test_initial_state_vector():
    N = 6
    space = tsm.SectorSpace(tsm.ChainModel(N=N, initial=[2, 5]))
    m0, psi = space.initial_state()
    assert m0 == 2
    assert np.count_nonzero(psi) == 1 and abs(psi).max() == 1.0
    assert tuple(space.basis(2)[np.argmax(abs(psi))]) == (2, 5)
    m0, psi = tsm.SectorSpace(tsm.ChainModel(N=N)).initial_state()
    assert m0 == 0 and psi.tolist() == [1.0]


# ---------------------------------------------------------------- compiled assembly
def _general_chain(N):
    """A chain with per-bond anisotropy, fields, a zero coupling and every channel."""
    a = np.linspace(0.7, 1.3, N - 1)
    a[N // 2 - 1] = 0.0  # a cut bond: its hops are explicit zeros in h
    return tsm.ChainModel(N=N, profile=tsm.BondCouplings(tuple(a)),
                          anisotropy=tuple(np.linspace(0.5, 1.5, N - 1)),
                          fields=tuple(np.linspace(-0.3, 0.2, N)),
                          channels=[tsm.Loss(1, 0.4), tsm.Pump(N // 2 + 1, 0.3),
                                    tsm.Dephasing(2, 0.2)])


@pytest.mark.parametrize("model", [tsm.paper_model("pump", N=9), tsm.paper_model("loss", N=8),
                                   _general_chain(7), _general_chain(10),
                                   # a diagonal of signed zeros (-0.0)
                                   tsm.ChainModel(N=3, profile=tsm.BondCouplings((1.0, 1.0)),
                                                  anisotropy=-0.0,
                                                  channels=[tsm.Pump(2, 0.5)])],
                         ids=["pump9", "loss8", "general7", "general10", "negative-zero"])
def test_compiled_assembly_matches_general_construction(model):
    """The basis in colex order and ``h`` / ``H_eff`` equal, entry for entry, what
    ``itertools`` with a rank sort and scipy's COO conversion and sparse
    difference build (the constructions the compiled loops replaced)."""
    import scipy.sparse as sp

    space = tsm.SectorSpace(model)
    for m in range(model.N + 1):
        sec = space.sector(m)
        ref = np.array(list(itertools.combinations(range(model.N), m)),
                       dtype=np.int64).reshape(comb(model.N, m), m)
        ref = ref[np.argsort(space.rank(ref), kind="stable")]
        np.testing.assert_array_equal(sec.sites, ref)
        d = sec.dim
        rows = np.concatenate([np.arange(d), sec.hop_to, sec.hop_from])
        cols = np.concatenate([np.arange(d), sec.hop_from, sec.hop_to])
        vals = space.a[sec.hop_bond]
        h_ref = sp.csr_matrix((np.concatenate([sec.diag, vals, vals]), (rows, cols)),
                              shape=(d, d))
        H_ref = (h_ref - 0.5j * sp.diags(sec.decay)).tocsr()
        for new, old in ((sec.h_sparse(space.a), h_ref), (sec.heff_sparse(space.a), H_ref)):
            assert new.dtype == old.dtype and new.nnz == old.nnz
            np.testing.assert_array_equal(new.indptr, old.indptr)
            np.testing.assert_array_equal(new.indices, old.indices)
            # bit for bit, the sign of zero parts included
            assert new.data.tobytes() == old.data.tobytes()


def _same_csr(new, old):
    assert new.dtype == old.dtype and new.shape == old.shape and new.nnz == old.nnz
    np.testing.assert_array_equal(new.indptr, old.indptr)
    np.testing.assert_array_equal(new.indices, old.indices)
    assert new.data.tobytes() == old.data.tobytes()


@pytest.mark.parametrize("case", ["pump9", "general10", "missing-diagonal", "zero-shifted"])
def test_shifted_and_off_diagonal_match_sparse_differences(case):
    """The trajectory engine's ``H_eff - c`` and off-diagonal part equal scipy's
    sparse differences entry for entry: on sector matrices (the in-place path)
    and where a diagonal entry is absent or becomes zero (scipy's path)."""
    import scipy.sparse as sp

    from thermospin_mc.core.sector_build import off_diagonal, shifted_csr

    if case in ("pump9", "general10"):
        model = tsm.paper_model("pump", N=9) if case == "pump9" else _general_chain(10)
        space = tsm.SectorSpace(model)
        mats = [space.sector(m).heff_sparse(space.a) for m in range(model.N + 1)]
    else:
        rng = np.random.default_rng(4)
        A = rng.normal(size=(6, 6)) * (rng.random((6, 6)) < 0.5)
        A = A + A.T - 0.3j * np.diag(rng.random(6))
        A[2, 2] = 0.0 if case == "missing-diagonal" else A[2, 2]
        if case == "zero-shifted":  # the middle of the diagonal's range (1) is an entry
            A[np.diag_indices(6)] = np.array([-1.0, 3.0, 1.0, 0.5, -0.5, 0.25]) - 0.2j
            A[2, 2] = 1.0
        mats = [sp.csr_matrix(A)]
    for H in mats:
        d = H.shape[0]
        Hc, c = shifted_csr(H)
        assert (Hc.nnz < H.nnz) == (case == "zero-shifted")  # the entry 1 - 1 is dropped
        diag = H.diagonal().real
        ref = (H - (0.5 * (diag.max() + diag.min())) * sp.identity(d, format="csr")).tocsr()
        ref.sort_indices()
        _same_csr(Hc, ref)
        off = (ref - sp.diags(ref.diagonal())).tocsr()
        off.eliminate_zeros()
        off.sort_indices()
        _same_csr(off_diagonal(Hc), off)
