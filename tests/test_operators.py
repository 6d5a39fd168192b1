"""Operators (words, dense matrices, QuTiP objects) and the full-space export of a model.

The reference is written here from scratch: Pauli matrices and Kronecker
products in the full 2^N space (site 1 the leftmost factor, local basis (up,
down)), the projectors P_m on the magnon sectors, and the sector basis order
taken from ``SectorSpace.basis``.
"""

from __future__ import annotations

import pickle
from functools import reduce

import numpy as np
import pytest
import scipy.sparse as sp

import thermospin_mc as tsm
from thermospin_mc.core.operators import Operator

I2 = np.eye(2, dtype=complex)
LOCAL = {"x": np.array([[0, 1], [1, 0]], dtype=complex),
         "y": np.array([[0, -1j], [1j, 0]]),
         "z": np.diag([1.0, -1.0]).astype(complex),
         "+": np.array([[0, 1], [0, 0]], dtype=complex),
         "-": np.array([[0, 0], [1, 0]], dtype=complex),
         "n": np.diag([0.0, 1.0]).astype(complex)}


def dense_word(word: str, N: int) -> np.ndarray:
    """Kronecker product of one word (identity elsewhere)."""
    ops = [I2] * N
    for f in word.split():
        ops[int(f[1:]) - 1] = LOCAL[f[0]]
    return reduce(np.kron, ops)


def dense_terms(terms: dict, N: int) -> np.ndarray:
    return sum(c * dense_word(w, N) for w, c in terms.items())


def sector_index(N: int, m: int) -> np.ndarray:
    """Full-space index of each basis state of sector m, in SectorSpace order."""
    space = tsm.SectorSpace(tsm.ChainModel(N=N, gamma=1.0))
    basis = space.basis(m)
    return np.array([sum(1 << (N - s) for s in row) for row in basis], dtype=np.int64)


def space_of(N):
    return tsm.SectorSpace(tsm.ChainModel(N=N, gamma=1.0))


def magnon_number(N):
    return np.array([bin(i).count("1") for i in range(2 ** N)])


def conserving_part(M, N):
    cnt = magnon_number(N)
    return np.where(cnt[:, None] == cnt[None, :], M, 0.0)


RANDOM_WORDS = ["x1 x3", "y2 z4", "+1 -3", "n2 n3", "z1", "-2 +1 z3", "x2 y3", "+3", "-1",
                "n1 x2 y3", ""]


@pytest.mark.parametrize("N", [3, 4, 5])
def test_sector_matrices_equal_projected_dense(N):
    rng = np.random.default_rng(N)
    space = space_of(N)
    for word in ["x1 x3", "y2 z3", "+1 -3", "-2 +1 z3", "n2 n3", "z1 z2 z3", "+3", "-1",
                 "x1 y2 n3", "-1 -3", ""]:
        coef = complex(rng.normal(), rng.normal())
        op = Operator.from_terms({word: coef}, N=N, name="o")
        full = coef * dense_word(word, N)
        d = op.offset
        for m in range(N + 1):
            B = op.sector_matrix(space, m)
            assert sp.issparse(B) and B.shape[1] == space.dim(m)
            if not 0 <= m + d <= N:
                assert B.shape[0] == 0
                continue
            ref = full[np.ix_(sector_index(N, m + d), sector_index(N, m))]
            np.testing.assert_allclose(B.toarray(), ref, atol=1e-14)
        cnt = magnon_number(N)
        kept = np.where(cnt[:, None] - cnt[None, :] == d, full, 0.0)
        np.testing.assert_allclose(op.to_dense(), kept, atol=1e-14)
        np.testing.assert_allclose(op.dropped_norm, np.linalg.norm(full - kept), atol=1e-12)
        np.testing.assert_allclose(op.dagger().to_dense(), kept.conj().T, atol=1e-14)
        assert op.hermitian == bool(np.allclose(kept, kept.conj().T) and d == 0)
        assert op.norm_bound >= np.linalg.norm(kept, 2) - 1e-12


def test_sums_of_words_and_parse():
    N = 5
    terms = {"x1 x3": 1.0, "z2": 0.5, "y4 y5": -0.25j, "+2 -5": 2 - 1j, "n1 n4": 3.0}
    op = Operator.from_terms(terms, N=N, name="mine")
    full = dense_terms(terms, N)
    np.testing.assert_allclose(op.to_dense(), conserving_part(full, N), atol=1e-14)
    np.testing.assert_allclose(op.dropped_norm,
                               np.linalg.norm(full - conserving_part(full, N)), atol=1e-12)
    text = "x1 x3 + 0.5*z2 - 0.25j*y4 y5 + (2-1j)*+2 -5 + 3*n1 n4"
    parsed = Operator.parse(text, N, "mine")
    np.testing.assert_allclose(parsed.to_dense(), op.to_dense(), atol=1e-14)
    # a separator '-' and an s- factor, a leading sign, the identity
    p2 = Operator.parse("- 2*+1 -3 - z2 + 1.5", N, "p")
    ref = -2 * dense_word("+1 -3", N) - dense_word("z2", N) + 1.5 * np.eye(2 ** N)
    np.testing.assert_allclose(p2.to_dense(), ref, atol=1e-14)


def test_offsets():
    N = 7
    assert Operator.from_terms({"+1 -3": 1.0}, N=N).offset == 0
    assert Operator.from_terms({"z2": 1.0}, N=N).offset == 0
    assert Operator.from_terms({"+3": 1.0}, N=N).offset == -1
    assert Operator.from_terms({"-3": 1.0}, N=N).offset == 1
    assert Operator.from_terms({"-3 -5": 1.0, "-1 -2": 2.0}, N=N).offset == 2
    for w in ("+1 -3", "z2", "+3", "-3"):
        assert Operator.from_terms({w: 1.0}, N=N).dropped_norm == 0.0


def test_mixed_offsets_reduced_to_conserving_part():
    N = 5
    op = Operator.from_terms({"x1 x3": 1.0}, N=N, name="xx")
    assert op.offset == 0 and op.dropped_norm > 0 and op.hermitian
    assert op.terms == {"+1 -3": 1.0, "-1 +3": 1.0}
    ref = dense_word("+1 -3", N) + dense_word("-1 +3", N)
    np.testing.assert_allclose(op.to_dense(), ref, atol=1e-14)
    # dropped: s+_1 s+_3 + s-_1 s-_3, each of squared Frobenius norm 2^(N-2)
    np.testing.assert_allclose(op.dropped_norm, np.sqrt(2 * 2 ** (N - 2)), rtol=1e-14)
    # no conserving part at all: a zero operator that says so
    z = Operator.from_terms({"+1": 1.0, "-2": 1.0}, N=N)
    assert z.offset == 0 and z.terms == {} and z.dropped_norm > 0
    assert not np.any(z.to_dense())


def test_long_chain_without_full_space():
    N = 101
    op = Operator.from_terms({"z1 z101": 1.0, "+50 -51": 0.5, "-50 +51": 0.5}, N=N, name="zz")
    space = space_of(N)
    assert op.offset == 0 and op.hermitian and op.dropped_norm == 0.0
    B = op.sector_matrix(space, 2)
    assert B.shape == (5050, 5050)
    # <z1 z101> on basis states: +1 unless exactly one of sites 1, 101 is down
    basis = space.basis(2)
    d = B.diagonal().real
    one = np.array([(1 in row) != (101 in row) for row in basis])
    np.testing.assert_array_equal(d, np.where(one, -1.0, 1.0))
    x = Operator.from_terms({"x1 x101": 1.0}, N=N)
    assert np.isfinite(x.dropped_norm) and x.dropped_norm > 0
    with pytest.raises(ValueError, match="to_dense: N = 101"):
        op.to_dense()
    huge = Operator.from_terms({"x1 x3000": 1.0, "z5": 0.5}, N=3000)
    assert huge.offset == 0 and huge.hermitian and huge.dropped_norm == np.inf
    # through the no-jump path of a long chain: <n_i> rows equal the operator "n i"
    model = tsm.ChainModel(N=N, profile=tsm.UniformProfile(T=0.0),
                           channels=[tsm.Loss(site=1, rate=1.0), tsm.Loss(site=N, rate=1.0)],
                           initial=tsm.magnons(51))
    ops = [Operator.from_terms({f"n{i}": 1.0}, N=N, name=f"n_{i}") for i in (40, 51, 60)]
    ex = tsm.mesolve(model, [0.0, 3.0, 6.0], observables=["n", *ops])
    for i, o in zip((40, 51, 60), ops, strict=True):
        np.testing.assert_allclose(ex.get(o.name)[:, 0], ex.get("n")[:, i - 1], atol=1e-14)


@pytest.mark.parametrize("N", [3, 4, 5])
def test_from_dense_and_qutip_round_trip(N):
    rng = np.random.default_rng(10 + N)
    M = rng.normal(size=(2 ** N, 2 ** N)) + 1j * rng.normal(size=(2 ** N, 2 ** N))
    space = space_of(N)
    op = Operator.from_dense(M, name="rnd")
    kept = conserving_part(M, N)
    assert op.offset == 0 and not op.hermitian
    np.testing.assert_allclose(op.to_dense(), kept, atol=1e-13)
    np.testing.assert_allclose(op.dropped_norm, np.linalg.norm(M - kept), rtol=1e-12)
    for m in range(N + 1):
        idx = sector_index(N, m)
        np.testing.assert_allclose(op.sector_matrix(space, m).toarray(), M[np.ix_(idx, idx)])
    herm = Operator.from_dense(sp.csr_matrix(M + M.conj().T), name="h")
    assert herm.hermitian
    # a word through dense and QuTiP gives the same blocks
    words = Operator.from_terms({"-2": 1.0, "-1 z3": 0.5}, N=N)
    dense = Operator.from_dense(dense_terms({"-2": 1.0, "-1 z3": 0.5}, N))
    assert dense.offset == 1 == words.offset
    qutip = pytest.importorskip("qutip")
    q = Operator.from_qutip(words.to_qutip(), name="q")
    for m in range(N):
        a = words.sector_matrix(space, m).toarray()
        np.testing.assert_allclose(dense.sector_matrix(space, m).toarray(), a)
        np.testing.assert_allclose(q.sector_matrix(space, m).toarray(), a)
    assert words.to_qutip().dims == [[2] * N, [2] * N]
    sz = qutip.tensor([qutip.sigmaz()] + [qutip.qeye(2)] * (N - 1))
    np.testing.assert_allclose(Operator.from_qutip(sz).to_dense(), dense_word("z1", N))


def test_pickle_and_immutability():
    op = Operator.from_terms({"x1 x3": 1.0, "z2": 0.5}, N=5, name="mine")
    back = pickle.loads(pickle.dumps(op))
    np.testing.assert_allclose(back.to_dense(), op.to_dense())
    assert (back.name, back.offset, back.hermitian) == ("mine", 0, True)
    with pytest.raises(AttributeError):
        op.name = "other"
    d = Operator.from_dense(np.eye(8), name="one")
    np.testing.assert_allclose(pickle.loads(pickle.dumps(d)).to_dense(), np.eye(8))


@pytest.mark.parametrize("call, pattern", [
    (lambda: Operator.from_terms({"q1": 1.0}, N=4), "terms: unknown letter 'q'"),
    (lambda: Operator.from_terms({"x5": 1.0}, N=4), "terms: site 5 .* outside 1..4"),
    (lambda: Operator.from_terms({"x0": 1.0}, N=4), "terms: site 0 .* outside 1..4"),
    (lambda: Operator.from_terms({"x1 z1": 1.0}, N=4), "terms: site 1 is repeated"),
    (lambda: Operator.from_terms({"x1": "a"}, N=4), "terms: the coefficient"),
    (lambda: Operator.from_terms({"x1": np.nan}, N=4), "terms: the coefficient .* finite"),
    (lambda: Operator.from_terms({"x": 1.0}, N=4), "terms: cannot read word"),
    (lambda: Operator.from_terms({}, N=4), "terms must hold"),
    (lambda: Operator.from_terms({"x1": 1.0}, N=1), "N must be an integer >= 2"),
    (lambda: Operator.from_terms({"x1": 1.0}, N=4, name="1bad"), "name must be"),
    (lambda: Operator.parse("x1 + + z2", 4), "text: a '\\+' or '-' without a term"),
    (lambda: Operator.parse("x1 x3 +", 4), "text: a '\\+' or '-' without a term"),
    (lambda: Operator.parse("x1 0.5*z2", 4), "text: a coefficient must come first"),
    (lambda: Operator.parse("w2", 4), "text: unknown letter 'w'"),
    (lambda: Operator.parse("x9", 4), "text: site 9"),
    (lambda: Operator.parse("abc*x1", 4), "text: cannot read the coefficient"),
    (lambda: Operator.from_dense(np.eye(6)), "matrix must be 2\\^N x 2\\^N"),
    (lambda: Operator.from_dense(np.ones((4, 8))), "matrix must be square"),
    (lambda: Operator.from_dense(sp.identity(2 ** 15, format="csr")), "matrix: N = 15"),
    (lambda: Operator.from_dense(np.full((4, 4), np.inf)), "matrix must contain only finite"),
])
def test_bad_input_one_line(call, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        call()
    assert "\n" not in str(info.value)


def test_bad_qutip_input():
    qutip = pytest.importorskip("qutip")
    with pytest.raises(ValueError, match="qobj must be a square operator"):
        Operator.from_qutip(qutip.basis(8, 0))
    with pytest.raises(ValueError, match="qobj must have dims"):
        Operator.from_qutip(qutip.qeye(8))
    with pytest.raises(ValueError, match="qobj must be a qutip.Qobj"):
        Operator.from_qutip(np.eye(8))
    big = qutip.Qobj(sp.identity(2 ** 15, format="csr"), dims=[[2] * 15, [2] * 15])
    with pytest.raises(ValueError, match="qobj: N = 15"):
        Operator.from_qutip(big)


def test_sector_matrix_arguments():
    op = Operator.from_terms({"z1": 1.0}, N=4)
    with pytest.raises(ValueError, match="space must be a SectorSpace of N = 4"):
        op.sector_matrix(space_of(5), 1)
    with pytest.raises(ValueError, match="m must be an integer in 0..4"):
        op.sector_matrix(space_of(4), 5)


# ---------------------------------------------------------------------------- to_qutip
def random_model(seed: int, N: int) -> tsm.ChainModel:
    rng = np.random.default_rng(seed)
    channels = [tsm.Loss(site=int(rng.integers(1, N + 1)), rate=float(rng.uniform(0.3, 1.5))),
                tsm.Pump(site=int(rng.integers(1, N + 1)), rate=float(rng.uniform(0.3, 1.5))),
                tsm.Dephasing(site=int(rng.integers(1, N + 1)),
                              rate=float(rng.uniform(0.1, 0.6))),
                tsm.Loss(site=int(rng.integers(1, N + 1)), rate=float(rng.uniform(0.3, 1.5)))]
    return tsm.ChainModel(
        N=N, profile=tsm.BondCouplings(tuple(rng.uniform(0.5, 1.5, N - 1))),
        anisotropy=tuple(rng.uniform(-1.0, 1.5, N - 1)) if seed % 2 else 0.7,
        fields=tuple(rng.uniform(-0.5, 0.5, N)), channels=channels,
        initial=tsm.product_mixture(rng.uniform(0.0, 1.0, N)))


def full_hamiltonian(model):
    """The general chain's h (docs/general_chain.md) from Kronecker products."""
    N, a = model.N, np.asarray(model.couplings)
    delta, h = np.asarray(model.bond_anisotropy), np.asarray(model.site_fields)
    H = 0
    for l in range(1, N):
        H = H + a[l - 1] / 2 * (dense_word(f"x{l} x{l + 1}", N) + dense_word(f"y{l} y{l + 1}", N)
                                + delta[l - 1] * dense_word(f"z{l} z{l + 1}", N))
    for i in range(1, N + 1):
        H = H + h[i - 1] / 2 * dense_word(f"z{i}", N)
    return H


@pytest.mark.parametrize("seed, N", [(1, 4), (2, 5), (3, 3)])
def test_to_qutip_matches_sector_hamiltonians(seed, N):
    qutip = pytest.importorskip("qutip")
    model = random_model(seed, N)
    H, c_ops, rho0 = model.to_qutip()
    for q in (H, rho0, *c_ops):
        assert isinstance(q, qutip.Qobj) and q.dims == [[2] * N, [2] * N]
    Hd = H.full()
    np.testing.assert_allclose(Hd, full_hamiltonian(model), atol=1e-13)
    space = tsm.SectorSpace(model)
    for m in range(N + 1):
        idx = sector_index(N, m)
        block = Hd[np.ix_(idx, idx)]
        np.testing.assert_allclose(block, space.sector(m).h_sparse(space.a).toarray(),
                                   atol=1e-13)
        # H_eff = h - (i/2) sum_k L_k^+ L_k, block by block
        decay = sum(c.dag() * c for c in c_ops).full()[np.ix_(idx, idx)]
        np.testing.assert_allclose(block - 0.5j * decay,
                                   space.sector(m).heff_sparse(space.a).toarray(), atol=1e-13)
    letters = {"loss": "+", "pump": "-", "dephasing": "z"}
    for c, ch in zip(c_ops, model.channels, strict=True):
        ref = np.sqrt(ch.rate) * dense_word(f"{letters[ch.kind]}{ch.site + 1}", N)
        np.testing.assert_allclose(c.full(), ref, atol=1e-14)
    ref_rho = reduce(np.kron, [np.diag([1 - p, p]) for p in model.initial.p])
    np.testing.assert_allclose(rho0.full(), ref_rho, atol=1e-14)


def test_to_qutip_pure_states():
    pytest.importorskip("qutip")
    model = tsm.paper_model("pump", N=5).with_(initial=tsm.magnons(2, 5))
    rho0 = model.to_qutip()[2].full()
    idx = (1 << 3) + 1
    assert rho0[idx, idx] == 1.0 and np.trace(rho0) == 1.0
    amps = np.array([0.5, 1j, -0.3, 0.2, 0.1])
    sv = model.with_(initial=tsm.StateVector(1, tuple(amps)))
    rho0 = sv.to_qutip()[2].full()
    v = np.zeros(32, dtype=complex)
    v[sector_index(5, 1)] = amps / np.linalg.norm(amps)
    np.testing.assert_allclose(rho0, np.outer(v, v.conj()), atol=1e-15)
    with pytest.raises(ValueError, match="model: N = 15"):
        tsm.ChainModel(N=15, gamma=1.0).to_qutip()


def test_without_qutip_one_clear_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "qutip", None)  # import qutip -> ImportError
    op = Operator.from_terms({"z1": 1.0}, N=3)
    model = tsm.ChainModel(N=3, gamma=1.0)
    for call in (op.to_qutip, lambda: Operator.from_qutip(object()), model.to_qutip,
                 tsm.BlockState(3, {0: np.eye(1)}).to_qutip):
        with pytest.raises(ImportError, match="pip install qutip") as info:
            call()
        assert "\n" not in str(info.value)
