"""Block states and operator rows of the exact solvers against QuTiP in the full 2^N space.

Models are random small general chains (fields, XXZ anisotropy, loss, pump and
dephasing at several sites, product mixtures); QuTiP's mesolve and steadystate
run on ``model.to_qutip()``, whose Hamiltonian and jump operators are checked
against Kronecker products in tests/test_operators.py. Every path of mesolve is
covered: the assembled generator (expm), the matrix-free Chebyshev propagator,
the closed chain (sesolve) and the pump-free one-magnon no-jump path.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import thermospin_mc as tsm
from thermospin_mc.core import blockstate
from thermospin_mc.core.operators import Operator

qutip = pytest.importorskip("qutip", minversion="5.0")

TOL = 1e-8
QOPT = {"atol": 1e-13, "rtol": 1e-12, "nsteps": 100_000}


def random_model(seed: int, N: int, pump: bool = True) -> tsm.ChainModel:
    rng = np.random.default_rng(seed)
    sites = rng.permutation(np.arange(1, N + 1))
    channels = [tsm.Loss(site=int(sites[0]), rate=float(rng.uniform(0.4, 1.2))),
                tsm.Loss(site=int(sites[1]), rate=float(rng.uniform(0.4, 1.2))),
                tsm.Dephasing(site=int(sites[2]), rate=float(rng.uniform(0.1, 0.5))),
                tsm.Dephasing(site=int(sites[0]), rate=float(rng.uniform(0.1, 0.5)))]
    if pump:
        channels.append(tsm.Pump(site=int(sites[3]), rate=float(rng.uniform(0.3, 1.0))))
    return tsm.ChainModel(
        N=N, profile=tsm.BondCouplings(tuple(rng.uniform(0.5, 1.5, N - 1))),
        anisotropy=tuple(rng.uniform(-1.0, 1.5, N - 1)), fields=tuple(rng.uniform(-0.6, 0.6, N)),
        channels=channels, initial=tsm.product_mixture(rng.uniform(0.0, 1.0, N)))


def user_operators(N: int, seed: int) -> list[Operator]:
    rng = np.random.default_rng(100 + seed)
    c = rng.normal(size=4)
    return [Operator.from_terms({"x1 x3": c[0], "z2": c[1], f"n{N - 1} n{N}": c[2]}, N=N,
                                name="mine"),
            Operator.from_terms({f"+2 -{N}": 1.0, "y1 y2": c[3]}, N=N, name="coh"),
            Operator.parse(f"0.5*z1 z{N} - 2j*+1 -2 + 2j*-1 +2", N, "herm")]


def qutip_expect(model, ops, times):
    H, c_ops, rho0 = model.to_qutip()
    res = qutip.mesolve(H, rho0, times, c_ops, options={**QOPT, "store_states": True})
    vals = {op.name: np.array([qutip.expect(op.to_qutip(), s) for s in res.states])
            for op in ops}
    return vals, [s.full() for s in res.states]


def check_rows(res, ops, ref, tol=TOL):
    for op in ops:
        val = np.asarray(ref[op.name])
        if op.hermitian:
            np.testing.assert_allclose(res.get(op.name)[:, 0], val.real, atol=tol, rtol=0)
        else:
            np.testing.assert_allclose(res.get(f"{op.name}_re")[:, 0], val.real, atol=tol,
                                       rtol=0)
            np.testing.assert_allclose(res.get(f"{op.name}_im")[:, 0], val.imag, atol=tol,
                                       rtol=0)


# ---------------------------------------------------------------------------- mesolve
@pytest.mark.parametrize("seed, N, method", [(1, 4, "expm"), (2, 5, "expm"),
                                             (3, 4, "chebyshev"), (4, 5, "chebyshev")])
def test_mesolve_operators_and_states_match_qutip(seed, N, method):
    model = random_model(seed, N)
    ops = user_operators(N, seed)
    times = np.linspace(0.0, 4.0, 9)
    ex = tsm.mesolve(model, times, observables=["j", "n", *ops], method=method, states=True)
    assert ex.metadata["method"] == method
    ref, rhos = qutip_expect(model, ops, times)
    check_rows(ex, ops, ref)
    assert ops[0].hermitian and not ops[1].hermitian and ops[2].hermitian
    assert len(ex.states) == times.size
    for st, rho in zip(ex.states, rhos, strict=True):
        assert isinstance(st, tsm.BlockState)
        np.testing.assert_allclose(st.to_dense(), rho, atol=TOL, rtol=0)
        for op in ops:  # the state's own expectation agrees with the table
            val = st.expect(op)
            assert isinstance(val, float) == op.hermitian
    k = 5
    np.testing.assert_allclose(ex.states[k].expect(ops[1]),
                               ex.get("coh_re")[k, 0] + 1j * ex.get("coh_im")[k, 0], atol=1e-13)
    # built-in rows: bit-identical with operators; with states the Chebyshev segments end
    # at the output times (round-off only)
    plain = tsm.mesolve(model, times, observables=["j", "n"], method=method)
    rows = ["mine", "coh_re", "coh_im", "herm"]
    base = ex.expect[~ex.expect["observable"].isin(rows)]
    np.testing.assert_allclose(base["mean"], plain.expect["mean"], atol=1e-13, rtol=0)
    no_states = tsm.mesolve(model, times, observables=["j", "n", *ops], method=method)
    base = no_states.expect[~no_states.expect["observable"].isin(rows)]
    np.testing.assert_array_equal(base.to_numpy(), plain.expect.to_numpy())
    np.testing.assert_allclose(no_states.expect["mean"], ex.expect["mean"], atol=1e-13, rtol=0)
    assert [r["name"] for r in ex.metadata["operators"]] == ["mine", "coh", "herm"]


def test_closed_and_no_jump_paths():
    N = 5
    times = np.linspace(0.0, 3.0, 7)
    ops = user_operators(N, 7)
    closed = tsm.ChainModel(N=N, profile=tsm.BondCouplings((1.0, 0.7, 1.3, 0.9)),
                            anisotropy=0.4, fields=(0.1, -0.2, 0.3, 0.0, 0.2),
                            initial=tsm.StateVector(2, tuple(np.linspace(1, 2, 10) * (1 + 1j))))
    loss = tsm.ChainModel(N=N, profile=tsm.BondCouplings((1.0, 0.7, 1.3, 0.9)),
                          channels=[tsm.Loss(site=1, rate=0.8), tsm.Loss(site=4, rate=0.5)],
                          initial=tsm.magnons(3))
    for model in (closed, loss):
        ex = tsm.mesolve(model, times, observables=ops, states=True)
        assert "method" not in ex.metadata  # the pure paths
        assert set(ex.expect["observable"]) == {"mine", "coh_re", "coh_im", "herm"}
        ref, rhos = qutip_expect(model, ops, times)
        check_rows(ex, ops, ref)
        for st, rho in zip(ex.states, rhos, strict=True):
            np.testing.assert_allclose(st.to_dense(), rho, atol=TOL, rtol=0)
    se = tsm.sesolve(closed, times, observables=["m", ops[0]], states=True)
    np.testing.assert_allclose(se.states[-1].purity(), 1.0, atol=1e-12)
    assert abs(se.states[-1].entropy()) < 1e-9


def test_steadystate_operators_and_state():
    for seed, N in ((5, 4), (6, 5)):
        model = random_model(seed, N)
        ops = user_operators(N, seed)
        ss = tsm.steadystate(model, observables=ops, states=True)
        H, c_ops, _ = model.to_qutip()
        rho = qutip.steadystate(H, c_ops)
        ref = {op.name: qutip.expect(op.to_qutip(), rho) for op in ops}
        check_rows(ss, ops, {k: [v] for k, v in ref.items()})
        (st,) = ss.states
        np.testing.assert_allclose(st.to_dense(), rho.full(), atol=TOL, rtol=0)
        assert set(st.blocks) == set(ss.blocks)
        for m, B in ss.blocks.items():
            np.testing.assert_array_equal(st.blocks[m], B)
        assert ss.times[0] == np.inf


def test_identities_with_builtin_observables():
    N = 5
    model = random_model(11, N)
    times = np.linspace(0.0, 3.0, 7)
    pm = Operator.from_terms({"+2 -4": 1.0}, N=N, name="pm24")
    nn = Operator.from_terms({"n3 n5": 1.0}, N=N, name="nn35")
    xx = Operator.from_terms({"x1 x3": 1.0}, N=N, name="xx13")
    assert xx.dropped_norm > 0
    ex = tsm.mesolve(model, times, observables=["nn", "pm", pm, nn, xx],
                     pairs=[(2, 4), (3, 5), (1, 3)])

    def pair(name, i, k):
        sub = ex.expect[(ex.expect["observable"] == name) & (ex.expect["site"] == i)
                        & (ex.expect["site2"] == k)]
        return sub["mean"].to_numpy()

    np.testing.assert_allclose(ex.get("pm24_re")[:, 0], pair("pm_re", 2, 4), atol=1e-13)
    np.testing.assert_allclose(ex.get("pm24_im")[:, 0], pair("pm_im", 2, 4), atol=1e-13)
    np.testing.assert_allclose(ex.get("nn35")[:, 0], pair("nn", 3, 5), atol=1e-13)
    np.testing.assert_allclose(ex.get("xx13")[:, 0], 2 * pair("pm_re", 1, 3), atol=1e-13)
    # the steady state too
    ss = tsm.steadystate(model, observables=["pm", xx], pairs=[(1, 3)])
    np.testing.assert_allclose(ss.get("xx13")[0, 0], 2 * ss.get("pm_re")[0, 0], atol=1e-13)


def test_operator_observable_refusals():
    model = random_model(1, 4)
    times = [0.0, 1.0]
    cases = [
        ([Operator.from_terms({"+2": 1.0}, N=4, name="sp")], "changes the magnon number by -1"),
        ([Operator.from_terms({"z2": 1.0}, N=5, name="z")], "is for N = 5 sites"),
        ([Operator.from_terms({"z2": 1.0}, N=4, name="n")], "clashes with a built-in"),
        ([Operator.from_terms({"+1 -2": 1.0}, N=4, name="pm")], "clashes"),
        ([Operator.from_terms({"+1 -2": 1.0}, N=4, name="a"),
          Operator.from_terms({"z1": 1.0}, N=4, name="a_re")], "clashes"),
        ([Operator.from_terms({"z1": 1.0}, N=4, name="a"),
          Operator.from_terms({"z2": 1.0}, N=4, name="a")], "clashes"),
        ([np.eye(16)], "each entry must be a name or a thermospin_mc.Operator"),
    ]
    for obs, pattern in cases:
        for solve in (lambda o: tsm.mesolve(model, times, observables=o),
                      lambda o: tsm.steadystate(model, observables=o)):
            with pytest.raises(ValueError, match=pattern) as info:
                solve(obs)
            assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="states must be True or False"):
        tsm.mesolve(model, times, states="yes")


def test_states_memory_budget(monkeypatch):
    model = random_model(1, 5)
    monkeypatch.setattr(blockstate, "STATES_BUDGET_BYTES", 10_000)
    with pytest.raises(ValueError, match="states=True of mesolve would keep .* GiB") as info:
        tsm.mesolve(model, np.linspace(0, 1, 11), states=True)
    assert "\n" not in str(info.value)
    tsm.mesolve(model, np.linspace(0, 1, 11))  # without states: fine


# ---------------------------------------------------------------------------- BlockState
def random_state(N, seed, sectors=None):
    rng = np.random.default_rng(seed)
    space = tsm.SectorSpace(tsm.ChainModel(N=N, gamma=1.0))
    blocks = {}
    for m in sectors if sectors is not None else range(N + 1):
        d = space.dim(m)
        A = rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d))
        blocks[m] = A @ A.conj().T
    tr = sum(np.trace(B).real for B in blocks.values())
    return tsm.BlockState(N, {m: B / tr for m, B in blocks.items()})


def test_blockstate_against_dense():
    N = 4
    st = random_state(N, 1)
    other = random_state(N, 2, sectors=[1, 2, 4])
    rho, sigma = st.to_dense(), other.to_dense()
    np.testing.assert_allclose(st.trace(), 1.0, atol=1e-14)
    np.testing.assert_allclose(st.purity(), np.trace(rho @ rho).real, atol=1e-14)
    lam = np.linalg.eigvalsh(rho)
    lam = lam[lam > 0]
    np.testing.assert_allclose(st.entropy(), -np.sum(lam * np.log(lam)), atol=1e-12)
    np.testing.assert_allclose(st.trace_distance(other),
                               0.5 * np.abs(np.linalg.eigvalsh(rho - sigma)).sum(), atol=1e-13)
    assert st.trace_distance(st) == 0.0
    q = st.to_qutip()
    assert q.dims == [[2] * N, [2] * N]
    np.testing.assert_allclose(st.entropy(), qutip.entropy_vn(q), atol=1e-12)
    np.testing.assert_allclose(st.trace_distance(other), qutip.tracedist(q, other.to_qutip()),
                               atol=1e-12)
    for terms in ({"x1 x3": 0.7, "z2": 0.3}, {"+1 -4": 1.0}, {"n2 n3": 1.0, "y1 y4": 2.0}):
        op = Operator.from_terms(terms, N=N, name="o")
        val = st.expect(op)
        ref = np.trace(op.to_dense() @ rho)
        assert isinstance(val, float) == op.hermitian
        np.testing.assert_allclose(val, ref if not op.hermitian else ref.real, atol=1e-14)
    # basis order = SectorSpace order = the rows of the blocks
    space = tsm.SectorSpace(tsm.ChainModel(N=N, gamma=1.0))
    assert st.basis(2) == [tuple(int(s) for s in row) for row in space.basis(2)]
    assert st.basis(0) == [()]
    back = pickle.loads(pickle.dumps(st))
    np.testing.assert_array_equal(back.to_dense(), rho)
    with pytest.raises(AttributeError):
        st.N = 3


def test_blockstate_refusals():
    with pytest.raises(ValueError, match="blocks: block m = 1 must be 4 x 4"):
        tsm.BlockState(4, {1: np.eye(3)})
    with pytest.raises(ValueError, match="blocks: keys must be magnon numbers in 0..4"):
        tsm.BlockState(4, {5: np.eye(1)})
    with pytest.raises(ValueError, match="N must be an integer"):
        tsm.BlockState(0, {})
    big = tsm.BlockState(15, {0: np.eye(1)})
    with pytest.raises(ValueError, match="to_dense: N = 15 is above 14"):
        big.to_dense()
    st = random_state(4, 3)
    with pytest.raises(ValueError, match="op changes the magnon number by \\+1"):
        st.expect(Operator.from_terms({"-2": 1.0}, N=4))
    with pytest.raises(ValueError, match="op is for N = 5"):
        st.expect(Operator.from_terms({"z2": 1.0}, N=5))
    with pytest.raises(ValueError, match="other has N = 5"):
        st.trace_distance(random_state(5, 1, sectors=[0]))
    with pytest.raises(ValueError, match="m must be an integer in 0..4"):
        st.basis(7)
