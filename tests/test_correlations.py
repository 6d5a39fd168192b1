"""Two-time correlations and spectra (docs/model.md 13) against QuTiP in the full 2^N space.

References: ``qutip.correlation_2op_1t(H, rho, taus, c_ops, A, B)`` (``reverse=False``:
``<A(t + tau) B(t)>``; ``rho = None`` is QuTiP's own steady state) and
``qutip.spectrum(H, omegas, c_ops, A, B)``, all through ``model.to_qutip()`` and
``Operator.to_qutip()``. Random small chains (XXZ anisotropy, fields, loss, pump
and dephasing at several sites), the paper's pump model, both pairings of
offsets +-1 and conserving pairs; the large-size paths (Chebyshev propagation,
the reduced spectrum) are forced on small models and checked the same way. The
reduced spectrum (Chebyshev head, reduced model of the tail, flexible GMRES) is
also checked against the per-frequency sparse LU to 1e-8 on fine grids, piece by
piece (the head's exact residual, the block-wise generator, the true residual
of the flexible solves), with a full basis, and for its refusals and thread
independence.
"""

from __future__ import annotations

import numpy as np
import pytest

import thermospin_mc as tsm
from thermospin_mc.exact import (
    chebyshev_steps,
    correlation_spectrum,
    reduced_resolvent,
    regression,
    shifted_solver,
    spectrum_head,
)

qutip = pytest.importorskip("qutip")

#: QuTiP's ODE tolerances for the references (its defaults give ~1e-6).
QOPT = {"atol": 1e-13, "rtol": 1e-11}
TOL = 1e-6


#: dense LAPACK on one BLAS thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_blas_thread")


def random_model(seed: int, N: int, kinds, initial=None) -> tsm.ChainModel:
    rng = np.random.default_rng(seed)
    a = tuple(rng.uniform(0.5, 1.5, N - 1))
    aniso = tuple(rng.uniform(-1, 2, N - 1)) if seed % 2 else float(rng.uniform(-1, 2))
    spec = {"loss": tsm.Loss, "pump": tsm.Pump, "dephasing": tsm.Dephasing}
    chans = [spec[k](site=int(rng.integers(1, N + 1)), rate=float(rng.uniform(0.3, 1.5)),
                     name=f"c{j}") for j, k in enumerate(kinds)]
    if initial is None:
        initial = tsm.product_mixture(rng.uniform(0, 1, N))
    return tsm.ChainModel(N=N, profile=tsm.BondCouplings(a), anisotropy=aniso,
                          fields=tuple(rng.uniform(-1, 1, N)), channels=chans, initial=initial)


MODELS = {
    "xxz-lpd-N4": lambda: random_model(1, 4, ["loss", "pump", "dephasing"]),
    "xxz-pll-N5": lambda: random_model(2, 5, ["pump", "loss", "loss"],
                                       initial=tsm.magnons(2, 4)),
    "xxz-ldpd-N5": lambda: random_model(3, 5, ["loss", "dephasing", "pump", "dephasing"]),
    "paper-pump-N5": lambda: tsm.paper_model("pump", N=5),
}

#: (A, B): conserving pairs (Hermitian and not) and both pairings of offsets -1/+1.
PAIRS = [("n1", "n3"), ("z2", "z2"), ("+1 -3", "n2"), ("+2", "-4"), ("-3", "+1"),
         ("+2", "-2")]
TAUS = np.linspace(0.0, 4.0, 9)


def qops(model, A, B):
    H, c_ops, rho0 = model.to_qutip()
    a = tsm.Operator.parse(A, model.N, "A").to_qutip()
    b = tsm.Operator.parse(B, model.N, "B").to_qutip()
    return H, c_ops, rho0, a, b


def assert_close(mine, ref, what):
    scale = max(1.0, float(np.max(np.abs(ref))))
    err = float(np.max(np.abs(np.asarray(mine) - np.asarray(ref))))
    assert err <= TOL * scale, f"{what}: max deviation {err:.3g} from QuTiP"


@pytest.mark.parametrize("name", list(MODELS))
def test_steady_state_correlations_match_qutip(name):
    model = MODELS[name]()
    H, c_ops, _, _, _ = qops(model, "n1", "n1")
    rho_ss = qutip.steadystate(H, c_ops)
    for A, B in PAIRS:
        _, _, _, a, b = qops(model, A, B)
        ref = qutip.correlation_2op_1t(H, rho_ss, TAUS, c_ops, a, b, options=QOPT)
        assert_close(tsm.correlation(model, TAUS, A, B), ref, f"{name} <{A}(tau) {B}>")


def test_qutip_own_steady_state_reference():
    # rho0 = None: QuTiP takes its own steady state (the convention the others rely on)
    model = MODELS["paper-pump-N5"]()
    taus = np.array([0.0, 0.3, 0.31, 1.7, 5.0])  # not uniform
    for A, B in [("n3", "n3"), ("+3", "-3"), ("-1", "+5")]:
        H, c_ops, _, a, b = qops(model, A, B)
        ref = qutip.correlation_2op_1t(H, None, taus, c_ops, a, b, options=QOPT)
        assert_close(tsm.correlation(model, taus, A, B), ref, f"<{A}(tau) {B}>")


@pytest.mark.parametrize("name", list(MODELS))
def test_correlations_from_a_finite_time_match_qutip(name):
    model = MODELS[name]()
    t0 = 0.8
    H, c_ops, rho0, _, _ = qops(model, "n1", "n1")
    rho_t0 = qutip.mesolve(H, rho0, [0.0, t0], c_ops, options=QOPT).states[-1]
    for A, B in PAIRS:
        _, _, _, a, b = qops(model, A, B)
        ref = qutip.correlation_2op_1t(H, rho_t0, TAUS, c_ops, a, b, options=QOPT)
        assert_close(tsm.correlation(model, TAUS, A, B, t0=t0), ref,
                     f"{name} <{A}(t0 + tau) {B}(t0)>")


@pytest.mark.parametrize("scenario", ["closed", "loss"])
def test_finite_time_on_the_pure_state_paths(scenario):
    # mesolve's closed-chain and one-magnon loss paths give rho(t0) as a pure state
    model = tsm.paper_model(scenario, N=5)
    H, c_ops, rho0, _, _ = qops(model, "n1", "n1")
    rho_t0 = qutip.mesolve(H, rho0, [0.0, 0.7], c_ops, options=QOPT).states[-1]
    for A, B in [("n2", "n3"), ("+2", "-4"), ("-1", "+3")]:
        _, _, _, a, b = qops(model, A, B)
        ref = qutip.correlation_2op_1t(H, rho_t0, TAUS, c_ops, a, b, options=QOPT)
        assert_close(tsm.correlation(model, TAUS, A, B, t0=0.7), ref,
                     f"{scenario} <{A}(t0 + tau) {B}(t0)>")


SPECTRUM_CASES = {  # QuTiP's spectrum costs seconds per call at N = 5: fewer pairs there
    "xxz-lpd-N4": (MODELS["xxz-lpd-N4"], PAIRS, "es"),
    "xxz-pdll-N4": (lambda: random_model(6, 4, ["pump", "dephasing", "loss", "loss"]), PAIRS,
                    "es"),
    "paper-pump-N5": (MODELS["paper-pump-N5"], [("n3", "n1"), ("+3", "-3"), ("-2", "+5")],
                      "solve"),
}


@pytest.mark.parametrize("name", list(SPECTRUM_CASES))
def test_spectra_match_qutip(name):
    make, pairs, solver = SPECTRUM_CASES[name]
    model = make()
    omegas = np.array([-5.0, -1.3, -0.2, 0.0, 0.2, 0.9, 2.5, 6.0])
    for A, B in pairs:
        H, c_ops, _, a, b = qops(model, A, B)
        ref = qutip.spectrum(H, omegas, c_ops, a, b, solver=solver)
        assert_close(tsm.spectrum(model, omegas, A, B), ref, f"{name} S_{A},{B}")


def test_loss_only_steady_state_propagates_one_magnon():
    # the steady state is all up (sector 0): B = s-_i lives in the coherence block (1, 0)
    model = random_model(5, 4, ["loss", "loss", "dephasing"])
    for A, B in [("+3", "-1"), ("+2", "-2")]:
        H, c_ops, _, a, b = qops(model, A, B)
        ref = qutip.correlation_2op_1t(H, None, TAUS, c_ops, a, b, options=QOPT)
        assert_close(tsm.correlation(model, TAUS, A, B), ref, f"<{A}(tau) {B}>")
        omegas = np.linspace(-3, 3, 5)
        assert_close(tsm.spectrum(model, omegas, A, B),
                     qutip.spectrum(H, omegas, c_ops, a, b), f"S_{A},{B}")
    # s+_i on the all-up state has no block at all: both vanish identically
    assert np.all(tsm.correlation(model, TAUS, "-2", "+3") == 0)
    assert np.all(tsm.spectrum(model, [0.0, 1.0], "-2", "+3") == 0)


def test_large_size_paths_match_qutip(monkeypatch):
    # Chebyshev propagation and the preconditioned GMRES, forced on a small model
    monkeypatch.setattr(regression, "EXPM_LIMIT", 0)
    monkeypatch.setattr(correlation_spectrum, "DIRECT_LIMIT", 0)
    model = MODELS["xxz-lpd-N4"]()
    omegas = np.array([-2.0, 0.0, 0.7])
    taus = np.array([0.0, 0.25, 1.0, 2.5, 6.0])
    H, c_ops, rho0, _, _ = qops(model, "n1", "n1")
    rho_t0 = qutip.mesolve(H, rho0, [0.0, 1.1], c_ops, options=QOPT).states[-1]
    for A, B in [("n2", "n4"), ("+1 -3", "z4"), ("+4", "-2"), ("-3", "+3")]:
        _, _, _, a, b = qops(model, A, B)
        ref = qutip.correlation_2op_1t(H, None, taus, c_ops, a, b, options=QOPT)
        assert_close(tsm.correlation(model, taus, A, B), ref, f"chebyshev <{A}(tau) {B}>")
        ref = qutip.correlation_2op_1t(H, rho_t0, taus, c_ops, a, b, options=QOPT)
        assert_close(tsm.correlation(model, taus, A, B, t0=1.1), ref,
                     f"chebyshev <{A}(t0 + tau) {B}(t0)>")
        assert_close(tsm.spectrum(model, omegas, A, B),
                     qutip.spectrum(H, omegas, c_ops, a, b), f"gmres S_{A},{B}")


def test_results_do_not_depend_on_threads(monkeypatch):
    # the Chebyshev step's fixed row ranges and one frequency per thread
    monkeypatch.setattr(regression, "EXPM_LIMIT", 0)
    monkeypatch.setattr(correlation_spectrum, "DIRECT_LIMIT", 0)
    model = MODELS["xxz-ldpd-N5"]()
    taus = np.linspace(0, 3, 7)
    one = tsm.correlation(model, taus, "+3", "-4", t0=0.5)
    two = tsm.correlation(model, taus, "+3", "-4", t0=0.5, n_jobs=2)
    np.testing.assert_array_equal(one, two)
    # (the steady state's sparse LU uses the BLAS threads: its last bits may move)
    omegas = [-1.0, 0.0, 0.5, 2.0]
    for A, B in [("n3", "n2"), ("-1", "+2")]:
        np.testing.assert_allclose(tsm.spectrum(model, omegas, A, B),
                                   tsm.spectrum(model, omegas, A, B, n_jobs=2), rtol=0,
                                   atol=1e-13)


@pytest.mark.parametrize("A, B, product", [("n2", "n4", "n2 n4"), ("+3", "-2", "+3 -2"),
                                           ("-1", "+4", "-1 +4"), ("z1", "+2 -3", "z1 +2 -3")])
def test_equal_time_value_is_the_expectation_of_the_product(A, B, product):
    model = MODELS["xxz-ldpd-N5"]()
    op = tsm.Operator.parse(product, model.N, "AB")
    steady = tsm.steadystate(model, states=True).states[0].expect(op)
    assert abs(tsm.correlation(model, [0.0], A, B)[0] - steady) < 1e-12
    later = tsm.mesolve(model, [1.4], states=True).states[0].expect(op)
    assert abs(tsm.correlation(model, [0.0, 0.5], A, B, t0=1.4)[0] - later) < 1e-12


def test_operators_and_words_give_the_same_numbers():
    model = MODELS["paper-pump-N5"]()
    A = tsm.Operator.from_terms({"+2": 1.0}, 5, "splus")
    B = tsm.Operator.from_dense(tsm.Operator.parse("-4", 5).to_dense(), "sminus")
    np.testing.assert_allclose(tsm.correlation(model, TAUS, A, B),
                               tsm.correlation(model, TAUS, "+2", "-4"), atol=1e-14)


@pytest.mark.parametrize("A, B, offsets", [("+1", "+2", "-1 and B 'B' offset -1"),
                                           ("n1", "-2", "+0 and B 'B' offset +1"),
                                           ("-1", "n3", "+1 and B 'B' offset +0"),
                                           ("+1 +2", "-1 -2", "-2 and B 'B' offset +2")])
def test_offsets_that_cannot_pair_are_refused(A, B, offsets):
    model = MODELS["paper-pump-N5"]()
    for fn, grid in ((tsm.correlation, TAUS), (tsm.spectrum, [0.0])):
        with pytest.raises(ValueError, match="A and B cannot pair") as exc:
            fn(model, grid, A, B)
        msg = str(exc.value)
        assert "\n" not in msg and f"offset {offsets}" in msg


def test_bad_arguments_are_named():
    model = MODELS["paper-pump-N5"]()
    cases = [
        (dict(taus=[0.0, 1.0, 0.5]), "taus must be non-decreasing"),
        (dict(taus=[-1.0, 1.0]), "taus must be >= 0"),
        (dict(taus=[]), "taus must contain"),
        (dict(t0=-0.5), "t0 must be >= 0"),
        (dict(A="q1"), "A:"),
        (dict(B="n9"), "B:"),
        (dict(A=3), "A must be a tsm.Operator"),
        (dict(B=tsm.Operator.parse("n1", 4)), "B acts on N = 4 sites, the model has N = 5"),
    ]
    for kw, match in cases:
        args = {"taus": TAUS, "A": "n1", "B": "n2", **kw}
        with pytest.raises(ValueError, match=match) as exc:
            tsm.correlation(model, args["taus"], args["A"], args["B"], t0=kw.get("t0"))
        assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="omegas"):
        tsm.spectrum(model, [[0.0, 1.0]], "n1", "n2")
    with pytest.raises(ValueError, match="steady state"):
        tsm.spectrum(tsm.paper_model("closed", N=5), [0.0], "n1", "n2")


# --------------------------------------------------------------------------- reduced spectra
#: models of the reduced-spectrum tests: pump, loss, dephasing and fields everywhere
REDUCED_MODELS = {
    "lpd-N5": lambda: random_model(7, 5, ["loss", "pump", "dephasing"]),
    "pdll-N5": lambda: random_model(8, 5, ["pump", "dephasing", "loss", "loss"]),
    "paper-pump-N5": lambda: tsm.paper_model("pump", N=5),
}
REDUCED_PAIRS = [("z3", "z3"), ("n1", "n4 + 0.5*z2"), ("+3", "-3"), ("-2", "+4")]


def _direct_spectrum(monkeypatch, model, omegas, A, B):
    monkeypatch.setattr(correlation_spectrum, "DIRECT_LIMIT", 10**9)
    return tsm.spectrum(model, omegas, A, B)


@pytest.mark.parametrize("name", list(REDUCED_MODELS))
@pytest.mark.parametrize("head", [True, False])
def test_reduced_spectrum_matches_the_direct_path(monkeypatch, name, head):
    # the Chebyshev head (forced on even for few frequencies) and the reduced model
    # of the tail, or the reduced model alone, against one sparse LU per frequency,
    # on a grid fine enough to hold the peaks, with omega = 0 in it
    model = REDUCED_MODELS[name]()
    omegas = np.linspace(-5.0, 5.0, 41)
    for A, B in REDUCED_PAIRS if head else REDUCED_PAIRS[::3]:
        ref = _direct_spectrum(monkeypatch, model, omegas, A, B)
        monkeypatch.setattr(correlation_spectrum, "DIRECT_LIMIT", 0)
        monkeypatch.setattr(correlation_spectrum, "HEAD_MIN_MATVECS", 0 if head else 10**9)
        stats: dict = {}
        got = tsm.spectrum(model, omegas, A, B, _stats=stats)
        scale = max(1.0, float(np.max(np.abs(ref))))
        err = float(np.max(np.abs(got - ref)))
        assert err <= 1e-8 * scale, f"{name} S_{A},{B} (head {head}): deviation {err:.3g}"
        assert (stats["T"] > 0) == head
        assert len(stats["solves"]) <= omegas.size
        # the grid resolves the peaks (their widths are the decay rates, ~0.5 here)
        peaks = np.flatnonzero((ref[1:-1] > ref[:-2]) & (ref[1:-1] > ref[2:])) + 1
        assert peaks.size and np.all(np.abs(got[peaks] - ref[peaks]) <= 1e-8 * scale)


def test_reduced_spectrum_any_order_and_repeats(monkeypatch):
    model = REDUCED_MODELS["lpd-N5"]()
    omegas = np.array([2.0, -1.0, 0.0, 2.0, 0.5, -1.0])
    ref = _direct_spectrum(monkeypatch, model, omegas, "+2", "-2")
    monkeypatch.setattr(correlation_spectrum, "DIRECT_LIMIT", 0)
    got = tsm.spectrum(model, omegas, "+2", "-2")
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    assert got[0] == got[3] and got[1] == got[5]


def test_reduced_spectrum_with_a_full_basis(monkeypatch):
    # a basis budget of 8 vectors (and flexible GMRES restarted every 8 iterations):
    # the frequencies still open when it is full are solved one by one
    model = REDUCED_MODELS["pdll-N5"]()
    omegas = np.linspace(-3.0, 3.0, 25)
    ref = _direct_spectrum(monkeypatch, model, omegas, "z3", "z3")
    monkeypatch.setattr(correlation_spectrum, "DIRECT_LIMIT", 0)
    monkeypatch.setattr(shifted_solver, "GMRES_BASIS_BYTES", 1)
    monkeypatch.setattr(reduced_resolvent, "GMRES_BASIS_BYTES", 1)
    stats: dict = {}
    got = tsm.spectrum(model, omegas, "z3", "z3", _stats=stats)
    assert stats["basis"] <= 4 and len(stats["solves"]) > 4
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-8 * np.abs(ref).max())


def test_chebyshev_head_leaves_the_stated_residual():
    # int_0^T exp(-i w t) a.exp(L t) x0 dt + exp(-i w T) a.(i w - L)^-1 x(T)
    # = a.(i w - L)^-1 x0, exactly (dense solves at N = 4)
    model = random_model(9, 4, ["loss", "pump", "dephasing"])
    A, B = regression.pair_operators(model, "+2", "-3")
    sysm = regression.RegressionSystem(model, A, B, regression.state_blocks(model, None))
    gen = chebyshev_steps.BlockGenerator(sysm.layout, sysm.F, n_jobs=1)
    omegas = np.array([-3.0, 0.0, 0.4, 2.5])
    head, xT, T, mv = spectrum_head.chebyshev_head(gen, sysm.x0, sysm.a, omegas, 3000, 0.0)
    assert T > 5 and mv <= 3000
    L = sysm.L.toarray()
    eye = np.eye(L.shape[0])
    for w, h in zip(omegas, head, strict=True):
        full = sysm.a @ np.linalg.solve(1j * w * eye - L, sysm.x0)
        rest = np.exp(-1j * w * T) * (sysm.a @ np.linalg.solve(1j * w * eye - L, xT))
        assert abs(h + rest - full) <= 1e-12 * max(1.0, abs(full))


@pytest.mark.parametrize("A, B", [("z2 + n4", "z3"), ("+1", "-4"), ("-3", "+2")])
def test_block_generator_is_the_assembled_generator(A, B):
    model = random_model(10, 5, ["loss", "dephasing", "pump", "loss"])
    a, b = regression.pair_operators(model, A, B)
    sysm = regression.RegressionSystem(model, a, b, regression.state_blocks(model, None))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(sysm.layout.size) + 1j * rng.standard_normal(sysm.layout.size)
    for n_jobs in (1, 2):
        gen = chebyshev_steps.BlockGenerator(sysm.layout, sysm.F, n_jobs=n_jobs)
        ref = sysm.L @ x
        assert np.abs(gen.matvec(x) - ref).max() <= 1e-14 * np.abs(ref).max()
        new, acc = np.empty_like(x), np.ones_like(x)
        nk = gen.chebyshev_step(x, 0.5 * x, new, -0.3, 0.2, acc, 0.7)
        np.testing.assert_allclose(new, 0.2 * (ref + 0.3 * x) + 0.5 * x, rtol=0, atol=1e-13)
        np.testing.assert_allclose(acc, 1.0 + 0.7 * x, rtol=0, atol=1e-15)
        assert abs(nk - np.vdot(x, x).real) <= 1e-12 * nk


@pytest.mark.parametrize("A, B", [("n2", "z4"), ("+3", "-1")])
def test_flexible_solve_meets_its_true_residual(A, B):
    model = random_model(11, 5, ["pump", "loss", "dephasing"])
    a, b = regression.pair_operators(model, A, B)
    rho = regression.state_blocks(model, None)
    sysm = regression.RegressionSystem(model, a, b, rho)
    lay = sysm.layout
    border = lay.shift == 0
    solver = shifted_solver.ShiftedSolver(lay, sysm.F, model.channels, border, L=sysm.L)
    r, steady = sysm.x0.copy(), None
    if border:  # trace free, iterated in the trace-free space (also at omega = 0)
        steady = np.zeros(lay.size, dtype=complex)
        for m in lay.sectors:
            lay.block(steady, m)[...] = rho[m]
        r -= (solver.trace @ r) * steady
    rng = np.random.default_rng(1)
    y = rng.standard_normal(lay.size) + 0j
    # the single-precision sweep is the double one to single-precision round-off
    p64, p32 = solver.precondition(y, 0.7j), solver.sweep32(y, 0.7j)
    assert np.abs(p32 - p64).max() <= 1e-4 * np.abs(p64).max()
    for w in (0.0, 1.3):
        atol = 1e-10 * np.linalg.norm(r)
        x, its, res = solver.solve_flexible(r, 1j * w, atol=atol, steady=steady)
        np.testing.assert_allclose(res, r - (sysm.L @ x - 1j * w * x), rtol=0, atol=1e-14)
        assert np.linalg.norm(res) <= atol
        assert 0 < its < 200
        if border:
            assert abs(solver.trace @ x) <= 1e-12 * np.linalg.norm(x)
        # a warm start at the solution: nothing to do
        x2, its2, _ = solver.solve_flexible(r, 1j * w, x0=x, atol=atol, steady=steady)
        assert its2 == 0 and np.array_equal(x2, x)


def test_reduced_spectrum_refuses_non_convergence(monkeypatch):
    monkeypatch.setattr(correlation_spectrum, "DIRECT_LIMIT", 0)
    monkeypatch.setattr(shifted_solver, "FGMRES_MAXITER", 1)
    with pytest.raises(RuntimeError, match="did not converge") as exc:
        tsm.spectrum(REDUCED_MODELS["lpd-N5"](), [0.0, 1.0], "+2", "-2")
    assert "\n" not in str(exc.value)


def test_reduced_spectrum_does_not_depend_on_threads(monkeypatch):
    # the rounds of PICKS solves, the head's fixed row ranges: n_jobs only shares them out
    monkeypatch.setattr(correlation_spectrum, "DIRECT_LIMIT", 0)
    monkeypatch.setattr(correlation_spectrum, "HEAD_MIN_MATVECS", 0)
    model = REDUCED_MODELS["pdll-N5"]()
    omegas = np.linspace(-4.0, 4.0, 33)
    for A, B in [("z1", "z1"), ("+5", "-2")]:
        one = tsm.spectrum(model, omegas, A, B)
        two = tsm.spectrum(model, omegas, A, B, n_jobs=2)
        # (the steady state's sparse LU uses the BLAS threads: its last bits may move)
        np.testing.assert_allclose(one, two, rtol=0, atol=1e-13)
