"""Tests for thermospin_mc.exact: the physics checks (symmetry at Delta T = 0, conserved norm,
pump rate = loss rate) on the exact solvers,
plus independent reconstructions (one-magnon Lindblad built here from docs/model.md s. 5-6,
Bessel law of s. 8, exit probabilities as time integrals of the loss rates)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.linalg as sla
import scipy.sparse.linalg as spla
from scipy.integrate import simpson
from scipy.special import jv

import thermospin_mc as tsm
from thermospin_mc.exact import liouvillian
from thermospin_mc.io import read_table

GAMMA = 3.102
GAMMA_PUMP = 0.62

# Exact solvers: everything below is linear algebra in double precision on at most a
# few thousand numbers; expm_multiply truncates at double precision, so identities
# that hold exactly in exact arithmetic are checked at 1e-12 (a few hundred ulps of
# O(1) quantities), and differences of two independent propagations at 1e-10.
EXACT = 1e-12
PROPAGATION = 1e-10


def mirror_profile_error(n):
    """max |n_i - n_{N+1-i}| over time (n is (nt, N))."""
    return np.abs(n - n[:, ::-1]).max()


# ------------------------------------------------------------------ Delta T = 0 symmetry
@pytest.mark.parametrize("T", [0.0, 1.5])
@pytest.mark.parametrize("N", [5, 7])
def test_uniform_pump_mesolve_j_zero_and_mirror_symmetric(N, T):
    model = tsm.ChainModel(N=N, profile=tsm.UniformProfile(T), gamma=GAMMA,
                           gamma_pump=GAMMA_PUMP)
    res = tsm.mesolve(model, np.linspace(0.0, 15.0, 31))
    n = res.get("n")
    assert n.shape == (31, N)
    assert np.abs(res.get("j")).max() < EXACT
    assert mirror_profile_error(n) < EXACT
    # bond currents are mirror antisymmetric: j_l = -j_{N-l}
    jb = res.get("j_bond")
    assert np.abs(jb + jb[:, ::-1]).max() < EXACT
    # non-trivial: the pump has created magnons that flow outward from the centre
    assert n[-1].sum() > 0.1
    assert jb[-1, 0] < -1e-3 and jb[-1, -1] > 1e-3


@pytest.mark.parametrize("T", [0.0, 1.5])
@pytest.mark.parametrize("N", [5, 7])
def test_uniform_pump_steadystate_j_zero_and_mirror_symmetric(N, T):
    model = tsm.ChainModel(N=N, profile=tsm.UniformProfile(T), gamma=GAMMA,
                           gamma_pump=GAMMA_PUMP)
    res = tsm.steadystate(model)
    n = res.get("n")
    assert abs(res.get("j")[0, 0]) < EXACT
    assert mirror_profile_error(n) < EXACT
    assert abs(res.get("norm")[0, 0] - 1.0) < EXACT


@pytest.mark.parametrize("T", [0.0, 2.0])
@pytest.mark.parametrize("N", [5, 7, 8])
def test_uniform_loss_mesolve_j_zero_and_mirror_symmetric(N, T):
    # magnon(s) placed mirror-symmetrically: centre for odd N, a symmetric pair for even N
    initial = [(N + 1) // 2] if N % 2 else [N // 2, N // 2 + 1]
    model = tsm.ChainModel(N=N, profile=tsm.UniformProfile(T), gamma=GAMMA, initial=initial)
    res = tsm.mesolve(model, np.linspace(0.0, 10.0, 41))
    assert np.abs(res.get("j")).max() < EXACT
    assert mirror_profile_error(res.get("n")) < EXACT
    # the loss scenario's steady state is the all-up state: trivially symmetric, j = 0
    ss = tsm.steadystate(model)
    assert abs(ss.get("j")[0, 0]) < EXACT
    assert np.abs(ss.get("n")).max() < EXACT
    assert abs(ss.get("m")[0, 0] - N / 2) < EXACT


# ------------------------------------------------------------------ closed system
@pytest.mark.parametrize("initial", [[4], [2, 5], [1, 3, 6]])
def test_closed_norm_and_magnon_number(initial):
    N = 7
    model = tsm.paper_model("closed", N=N).with_(initial=initial)
    res = tsm.mesolve(model, np.linspace(0.0, 30.0, 61))
    k = len(initial)
    assert np.abs(res.get("norm") - 1.0).max() < EXACT
    assert np.abs(res.get("n").sum(axis=1) - k).max() < EXACT
    assert np.abs(res.get("m") - (N / 2 - k)).max() < EXACT
    # the dynamics actually moved the magnons
    assert np.abs(res.get("n")[-1] - res.get("n")[0]).max() > 0.05
    # sesolve is the same closed evolution
    res2 = tsm.sesolve(model, np.linspace(0.0, 30.0, 61))
    np.testing.assert_allclose(res2.get("n"), res.get("n"), atol=EXACT)


def test_closed_state_vector_initial():
    # superposition in the 2-magnon sector: magnon number stays exactly 2
    N = 6
    rng = np.random.default_rng(3)
    amps = rng.normal(size=15) + 1j * rng.normal(size=15)
    model = tsm.ChainModel(N=N, profile=tsm.StepProfile(0.0, 2.0),
                           initial=tsm.StateVector(2, tuple(amps)))
    res = tsm.mesolve(model, np.linspace(0, 10, 21))
    assert np.abs(res.get("norm") - 1).max() < EXACT
    assert np.abs(res.get("n").sum(axis=1) - 2).max() < EXACT


def test_sesolve_ignores_channels():
    model = tsm.paper_model("loss", N=7)
    a = tsm.sesolve(model, [0.0, 1.0, 2.0])
    b = tsm.mesolve(model.with_(gamma=0.0), [0.0, 1.0, 2.0])
    np.testing.assert_allclose(a.get("n"), b.get("n"), atol=EXACT)
    assert np.abs(a.get("norm") - 1).max() < EXACT


@pytest.mark.parametrize(
    "model",
    [tsm.paper_model("closed", N=7).with_(initial=[2, 4]),
     tsm.paper_model("loss", N=7),
     tsm.paper_model("pump", N=5)],
    ids=["closed-2mag", "loss", "pump"],
)
def test_continuity_equation(model):
    """d<n_i>/dt = F_{i-1} - F_i - gamma n_i [i edge] + gamma_I (1 - n_c) [i = c]
    (docs/model.md s. 7), by a central difference with step h = 1e-4: truncation error
    ~ h^2 |n'''| / 6 < 1e-7, round-off ~ 1e-16 / h = 1e-12; tolerance 1e-6."""
    h = 1e-4
    for t0 in (0.7, 3.3):
        res = tsm.mesolve(model, [t0 - h, t0, t0 + h], observables=["n", "flow"])
        n, F = res.get("n"), res.get("flow")[1]
        dndt = (n[2] - n[0]) / (2 * h)
        Fpad = np.concatenate([[0.0], F, [0.0]])
        rhs = Fpad[:-1] - Fpad[1:]
        rhs[0] -= model.gamma * n[1, 0]
        rhs[-1] -= model.gamma * n[1, -1]
        if model.gamma_pump:
            c = model.pump_site - 1
            rhs[c] += model.gamma_pump * (1 - n[1, c])
        np.testing.assert_allclose(dndt, rhs, rtol=0, atol=1e-6)
        assert np.abs(rhs).max() > 1e-2  # non-trivial


def test_observable_identities():
    model = tsm.paper_model("pump", N=5, delta_T=2.0)
    res = tsm.mesolve(model, np.linspace(0, 5, 11))
    a = model.couplings
    np.testing.assert_allclose(res.get("j")[:, 0], res.get("j_bond").sum(axis=1), atol=EXACT)
    np.testing.assert_allclose(res.get("flow"), 0.5 * a * res.get("j_bond"), atol=EXACT)
    np.testing.assert_allclose(res.get("m")[:, 0], model.N / 2 - res.get("n").sum(axis=1),
                               atol=EXACT)
    assert np.abs(res.get("norm") - 1).max() < EXACT
    n = res.get("n")
    assert n.min() > -EXACT and n.max() < 1 + EXACT


@pytest.mark.parametrize(
    "model", [tsm.paper_model("loss", N=7), tsm.paper_model("pump", N=5)], ids=["loss", "pump"])
@pytest.mark.parametrize(("t0", "t1"), [(0.7 - 1e-4, 0.7 + 1e-4), (5.0, 5.02), (30.0, 31.0)])
def test_uniform_grid_not_starting_at_zero(model, t0, t1):
    # a uniform output grid starting at t0 > 0 must give the same states as single
    # times (regression: scipy's expm_multiply(start=t0) scales exp(t0 A) for the
    # interval length, scipy gh-16363, which was off by up to 1e-2 here)
    grid = np.linspace(t0, t1, 3)
    res = tsm.mesolve(model, grid, observables=["n", "j"])
    for k, t in enumerate(grid):
        single = tsm.mesolve(model, [t], observables=["n", "j"])
        np.testing.assert_allclose(res.get("n")[k], single.get("n")[0], atol=PROPAGATION)
        np.testing.assert_allclose(res.get("j")[k], single.get("j")[0], atol=PROPAGATION)


# ------------------------------------------------------------------ steady state
@pytest.mark.parametrize("N", [5, 7])
@pytest.mark.parametrize("delta_T", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("gamma_pump", [0.62, 2.0])
def test_steadystate_pump_rate_equals_loss_rate(N, delta_T, gamma_pump):
    model = tsm.paper_model("pump", N=N, delta_T=delta_T, gamma_pump=gamma_pump)
    res = tsm.steadystate(model)
    n = res.get("n")[0]
    c = model.pump_site - 1
    pump_rate = gamma_pump * (1 - n[c])
    loss_rate = GAMMA * (n[0] + n[-1])
    assert pump_rate > 0.05  # a genuinely driven state
    assert abs(pump_rate - loss_rate) < PROPAGATION
    # stationary continuity: the flow is uniform on each side of the pump, carries the
    # left loss out through bond 1 and the right loss out through bond N-1
    F = res.get("flow")[0]
    np.testing.assert_allclose(F[:c], -GAMMA * n[0], rtol=0, atol=PROPAGATION)
    np.testing.assert_allclose(F[c:], GAMMA * n[-1], rtol=0, atol=PROPAGATION)
    # hence j = sum_l (2 / a_l) F_l
    a = model.couplings
    assert abs(res.get("j")[0, 0] - np.sum(2 * F / a)) < PROPAGATION
    # density matrix blocks: Hermitian, positive semidefinite, unit total trace
    tr = 0.0
    for B in res.blocks.values():
        assert np.abs(B - B.conj().T).max() < EXACT
        assert np.linalg.eigvalsh(B).min() > -PROPAGATION
        tr += np.trace(B).real
    assert abs(tr - 1) < EXACT


def test_steadystate_hot_side_gets_more_magnons():
    # Delta T > 0: the spin current flows toward the hot (right) reservoir
    res = tsm.steadystate(tsm.paper_model("pump", N=7, delta_T=2.0))
    n = res.get("n")[0]
    assert res.get("j")[0, 0] > 0
    assert n[-1] > n[0]


def test_mesolve_relaxes_to_steadystate():
    # the Liouvillian gap of this model is O(0.1 J0): at t = 400 the remaining
    # transient is far below 1e-10
    model = tsm.paper_model("pump", N=5, delta_T=2.0)
    ss = tsm.steadystate(model)
    late = tsm.mesolve(model, [400.0])
    for name in ("n", "j", "m", "j_bond"):
        np.testing.assert_allclose(late.get(name)[0], ss.get(name)[0], atol=1e-9)


@pytest.mark.parametrize("N", [5, pytest.param(7, marks=pytest.mark.slow)])
def test_steadystate_direct_vs_gmres(N):
    model = tsm.paper_model("pump", N=N, delta_T=2.0)
    d = tsm.steadystate(model, method="direct")
    g = tsm.steadystate(model, method="gmres")
    assert d.metadata["method"] == "direct" and g.metadata["method"] == "gmres"
    # two different exact solves of the same linear system (GMRES tol 1e-13)
    for name in ("n", "j", "j_bond", "m"):
        np.testing.assert_allclose(d.get(name), g.get(name), rtol=0, atol=PROPAGATION)
    for m in d.blocks:
        assert np.abs(d.blocks[m] - g.blocks[m]).max() < PROPAGATION
    assert d.metadata["residual"] < 1e-10 and g.metadata["residual"] < 1e-10


def test_steadystate_gmres_N7_is_kernel_of_block_liouvillian():
    # the direct N = 7 solve takes ~20 s (SuperLU fill-in) and is marked slow above; in
    # the default run the GMRES steady state at N = 7 is checked to be the kernel of the
    # block Liouvillian assembled separately (residual of an exact solve: round-off).
    model = tsm.paper_model("pump", N=7, delta_T=1.0, gamma_pump=1.3)
    g = tsm.steadystate(model, method="gmres")
    L, layout = liouvillian(model, list(range(8)))
    x = np.concatenate([g.blocks[m].ravel() for m in range(8)])
    assert np.linalg.norm(L @ x) < PROPAGATION


# ------------------------------------------------------------------ small Delta T law
def _steady_j(delta_T, method):
    model = tsm.ChainModel(N=7, profile=tsm.LinearProfile(0.0, delta_T), alpha_method=method,
                           gamma=GAMMA, gamma_pump=GAMMA_PUMP)
    return tsm.steadystate(model).get("j")[0, 0]


def test_small_delta_T_sommerfeld_is_quadratic():
    # Sommerfeld: a_l - 1 ~ T_l^2, and j is linear in a - 1 to leading order, so
    # doubling Delta T multiplies j by 4 up to O(Delta T^2) corrections (docs/model.md s. 9
    # quotes 3.9-4.0 for 0.1 -> 0.2 -> 0.4).
    j = {dT: _steady_j(dT, "sommerfeld") for dT in (0.05, 0.1, 0.2, 0.4)}
    assert all(v > 0 for v in j.values())  # toward the hot side
    r1, r2, r3 = j[0.1] / j[0.05], j[0.2] / j[0.1], j[0.4] / j[0.2]
    for r in (r2, r3):
        assert 3.85 < r < 4.05
    # corrections shrink as Delta T -> 0: the ratio approaches 4
    assert abs(r1 - 4) < abs(r2 - 4) < abs(r3 - 4)
    assert abs(r1 - 4) < 0.01


def test_small_delta_T_canonical_is_not_quadratic():
    # exact canonical a(T) - 1 is thermally activated across the finite-size gap
    # (~exp(-gap/T)), so j rises far faster than Delta T^2 (docs/model.md: ~x110 for 0.1 -> 0.2)
    j1, j2, j4 = (_steady_j(dT, "canonical") for dT in (0.1, 0.2, 0.4))
    assert 0 < j1 < j2 < j4
    assert j2 / j1 > 50
    assert j4 / j2 > 4


# ------------------------------------------------------------------ Bessel law
def test_single_magnon_bessel_law():
    # infinite uniform chain with hopping a: <n_{i0+k}(t)> = J_k(2 a t)^2 (docs/model.md s. 8).
    # On the open chain the boundary (missing bonds, edge potential) acts only after
    # the wave has reached the edge: up to t_max = (N/2 - 5)/(2a) the front (speed 2a)
    # has not reached sites within 5 of the edges; sites |k| <= 15 would need a path to
    # the edge and back (>= 62 - 15 = 47 hops) whose weight ~ J_47(2 a t_max) ~ 1e-9
    # enters only as a product with the direct amplitude -> error far below 1e-10.
    N, a = 61, 1.3
    i0 = (N + 1) // 2
    model = tsm.ChainModel(N=N, profile=tsm.BondCouplings((a,) * (N - 1)), initial=i0)
    t_max = (N / 2 - 5) / (2 * a)
    times = np.linspace(0.0, t_max, 60)
    res = tsm.mesolve(model, times, observables=["n", "j", "norm"])
    n = res.get("n")
    k = np.arange(1, N + 1) - i0
    ref = jv(k[None, :], 2 * a * times[:, None]) ** 2
    inner = np.abs(k) <= 15
    assert np.abs(n[:, inner] - ref[:, inner]).max() < PROPAGATION
    # all sites at early times (front < 13 sites from the centre: edge weight ~1e-20)
    early = times <= t_max / 2
    assert np.abs(n[early] - ref[early]).max() < PROPAGATION
    # short-time check P_{i0+1} ~ (a t)^2
    tt = 1e-3
    r = tsm.mesolve(model, [tt], observables=["n"]).get("n")[0]
    assert r[i0] == pytest.approx((a * tt) ** 2, rel=1e-5)
    # a real symmetric problem from a site state: no net current at any time
    assert np.abs(res.get("j")).max() < EXACT


# ------------------------------------------------------------------ one-magnon loss path
def one_magnon_lindblad(model):
    """Dense Lindbladian on span{|all up>, |i> (magnon at i)} built from docs/model.md s. 5-6;
    row-major vectorisation: vec(A X B) = (A kron B^T) vec(X)."""
    N, a, g = model.N, np.asarray(model.couplings), model.gamma
    D = N + 1
    H = np.zeros((D, D))
    H[0, 0] = a.sum() / 2
    apad = np.concatenate([[0.0], a, [0.0]])
    for i in range(1, N + 1):
        H[i, i] = a.sum() / 2 - (apad[i - 1] + apad[i])
    for l in range(1, N):
        H[l, l + 1] = H[l + 1, l] = a[l - 1]
    Ls = []
    for site in (1, N):  # sqrt(gamma) s+_site: |magnon at site> -> |all up>
        L = np.zeros((D, D))
        L[0, site] = np.sqrt(g)
        Ls.append(L)
    eye = np.eye(D)
    sup = -1j * (np.kron(H, eye) - np.kron(eye, H.T))
    for L in Ls:
        LdL = L.T @ L
        sup += np.kron(L, L) - 0.5 * (np.kron(LdL, eye) + np.kron(eye, LdL.T))
    return sup


def observables_one_magnon(rho, N):
    n = np.real(np.diag(rho))[1:]
    # <j_l> = -4 Im(psi_l^* psi_{l+1}) -> -4 Im rho[l+1, l]
    jb = np.array([-4 * rho[l + 1, l].imag for l in range(1, N)])
    return n, jb, np.real(np.trace(rho))


@pytest.mark.parametrize("delta_T", [0.0, 2.0])
@pytest.mark.parametrize("N", [5, 7])
def test_one_magnon_loss_path_vs_independent_lindblad(N, delta_T):
    model = tsm.paper_model("loss", N=N, delta_T=delta_T)
    times = np.linspace(0.0, 12.0, 25)
    res = tsm.mesolve(model, times)
    sup = one_magnon_lindblad(model)
    rho0 = np.zeros((N + 1, N + 1), dtype=complex)
    c = (N + 1) // 2
    rho0[c, c] = 1.0
    got = {name: res.get(name) for name in ("n", "j_bond", "norm", "m")}
    step = sla.expm(sup * (times[1] - times[0]))  # uniform grid: rho_k = step^k rho_0
    vec = rho0.ravel()
    for it in range(times.size):
        if it:
            vec = step @ vec
        rho = vec.reshape(N + 1, N + 1)
        n, jb, tr = observables_one_magnon(rho, N)
        np.testing.assert_allclose(got["n"][it], n, atol=PROPAGATION)
        np.testing.assert_allclose(got["j_bond"][it], jb, atol=PROPAGATION)
        assert abs(got["norm"][it, 0] - tr) < PROPAGATION
        assert abs(got["m"][it, 0] - (N / 2 - n.sum())) < PROPAGATION
    # norm is the full trace (lost population sits in the all-up state) and is kept
    assert np.abs(res.get("norm") - 1).max() < EXACT
    # the magnon is really being lost
    assert res.get("n")[-1].sum() < 0.5


@pytest.mark.parametrize("delta_T", [0.0, 2.0])
def test_one_magnon_loss_path_vs_block_liouvillian(delta_T):
    # the special no-jump path against the general block Liouvillian (sectors 0, 1)
    model = tsm.paper_model("loss", N=7, delta_T=delta_T)
    times = np.linspace(0.0, 10.0, 21)
    res = tsm.mesolve(model, times)
    L, layout = liouvillian(model)
    assert layout.sectors == [0, 1]
    m0, psi0 = layout.space.initial_state()
    x0 = layout.pure(m0, psi0)
    xs = spla.expm_multiply(L, x0, start=0.0, stop=10.0, num=21, endpoint=True)
    got = {name: res.get(name) for name in ("n", "j", "j_bond", "m", "norm")}
    for it, x in enumerate(xs):
        obs = layout.observables(x, list(got))
        for name, val in obs.items():
            np.testing.assert_allclose(got[name][it], val, atol=PROPAGATION)


# ------------------------------------------------------------------ exit probabilities
def test_exit_probabilities_one_magnon():
    pr = tsm.exit_probabilities(tsm.paper_model("loss", N=7, delta_T=2.0))
    assert isinstance(pr, pd.Series)
    assert list(pr.index) == ["loss_left", "loss_right"]
    # one magnon, no pump: exactly one loss per trajectory
    assert abs(pr.sum() - 1) < EXACT
    # drift toward the hot (right) side
    assert pr["loss_right"] > pr["loss_left"] > 0


@pytest.mark.parametrize("N", [5, 7])
@pytest.mark.parametrize("T", [0.0, 1.0])
def test_exit_probabilities_symmetric_at_zero_delta_T(N, T):
    model = tsm.ChainModel(N=N, profile=tsm.UniformProfile(T), gamma=GAMMA,
                           initial=(N + 1) // 2)
    pr = tsm.exit_probabilities(model)
    assert abs(pr["loss_left"] - 0.5) < EXACT
    assert abs(pr["loss_right"] - 0.5) < EXACT


def test_exit_probabilities_empty_chain():
    pr = tsm.exit_probabilities(tsm.ChainModel(N=5, gamma=1.0))
    assert pr.sum() == 0


def simpson_richardson(f, x):
    """Simpson on step h, improved by the Simpson result on step 2h: S_h + (S_h - S_2h)/15
    cancels the h^4 error term (len(x) must be 4k + 1)."""
    s1 = simpson(f, x=x)
    s2 = simpson(f[::2], x=x[::2])
    return s1 + (s1 - s2) / 15


@pytest.mark.parametrize(
    "initial", [[4], [2], [2, 5]], ids=["centre", "off-centre", "two-magnons"])
def test_exit_probabilities_equal_time_integral_of_loss_rates(initial):
    """P(side) = int_0^inf gamma <n_side>(t) dt. The slowest no-jump decay rate of this
    chain is ~0.25 J0, so beyond t = 120 the remaining weight is ~e^-30. Plain Simpson
    on h = 0.05 is off by ~1e-6 here (fast start next to an edge, error ~ h^4); the
    Richardson-improved value is good to ~2e-8, hence tolerance 1e-7."""
    model = tsm.paper_model("loss", N=7, delta_T=2.0).with_(initial=initial)
    pr = tsm.exit_probabilities(model)
    times = np.linspace(0.0, 120.0, 2401)
    n = tsm.mesolve(model, times, observables=["n"]).get("n")
    assert n[-1].sum() < 1e-12
    left = simpson_richardson(GAMMA * n[:, 0], times)
    right = simpson_richardson(GAMMA * n[:, -1], times)
    assert abs(pr["loss_left"] - left) < 1e-7
    assert abs(pr["loss_right"] - right) < 1e-7
    # every magnon leaves eventually: expected number of losses = initial magnon number
    assert abs(pr.sum() - len(initial)) < 1e-10


# ------------------------------------------------------------------ result tables
def test_result_table_layout():
    N = 5
    times = np.linspace(0, 2, 5)
    res = tsm.mesolve(tsm.paper_model("pump", N=N), times)
    df = res.expect
    assert list(df.columns) == ["t", "observable", "site", "mean", "sem", "ntraj"]
    assert df["t"].dtype == np.float64
    assert df["site"].dtype == np.int64
    assert df["mean"].dtype == np.float64 and df["sem"].dtype == np.float64
    assert df["ntraj"].dtype == np.int64
    assert pd.api.types.is_string_dtype(df["observable"])
    assert (df["sem"] == 0).all() and (df["ntraj"] == 0).all()
    sites = df.groupby("observable")["site"].agg(lambda s: sorted(set(s)))
    assert sites["n"] == list(range(1, N + 1))
    assert sites["j_bond"] == list(range(1, N)) and sites["flow"] == list(range(1, N))
    for name in ("j", "m", "norm"):
        assert sites[name] == [0]
    assert len(df) == times.size * (N + 2 * (N - 1) + 3)
    assert res.get("n").shape == (5, N)
    assert res.get("j_bond").shape == (5, N - 1)
    assert res.get("j").shape == (5, 1)
    np.testing.assert_array_equal(res.times, times)
    with pytest.raises(ValueError, match="observable"):
        res.get("nope")
    # subset of observables
    sub = tsm.mesolve(tsm.paper_model("pump", N=N), times, observables=["j", "n"])
    assert set(sub.expect["observable"]) == {"j", "n"}
    # metadata records the model and the a(T) curve
    assert res.metadata["model"] == tsm.paper_model("pump", N=N).to_dict()
    assert res.metadata["alpha_method"] == "canonical"
    assert res.metadata["solver"] == "mesolve"


def test_compare_identical_results():
    res = tsm.mesolve(tsm.paper_model("loss", N=5), [0.0, 1.0])
    cmp = res.compare(res)
    assert len(cmp) == len(res.expect)
    assert (cmp["diff"] == 0).all() and (cmp["z"] == 0).all()


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("kind", ["mesolve", "steadystate"])
def test_table_round_trip(tmp_path, fmt, kind):
    model = tsm.paper_model("pump", N=5)
    res = (tsm.mesolve(model, np.linspace(0, 3, 7)) if kind == "mesolve"
           else tsm.steadystate(model))
    paths = res.to_parquet(tmp_path) if fmt == "parquet" else res.to_csv(tmp_path)
    assert len(paths) == 1 and paths[0].suffix == f".{fmt}"
    df, meta = read_table(paths[0])
    exp = res.expect
    assert list(df.columns) == list(exp.columns)
    assert df["observable"].tolist() == exp["observable"].tolist()
    np.testing.assert_array_equal(df["site"].to_numpy(), exp["site"].to_numpy())
    np.testing.assert_array_equal(df["ntraj"].to_numpy(), exp["ntraj"].to_numpy())
    np.testing.assert_array_equal(df["t"].to_numpy(), exp["t"].to_numpy())  # incl. inf
    if fmt == "parquet":
        np.testing.assert_array_equal(df["mean"].to_numpy(), exp["mean"].to_numpy())
    else:  # pandas writes floats with round-trip precision
        np.testing.assert_allclose(df["mean"].to_numpy(), exp["mean"].to_numpy(),
                                   rtol=1e-15, atol=0)
    np.testing.assert_array_equal(df["sem"].to_numpy(), exp["sem"].to_numpy())
    assert meta == json.loads(res.metadata_json())
    assert meta["model"]["couplings"] == list(model.couplings)
    assert df.attrs["thermospin_mc"] == meta


def test_read_table_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_table(tmp_path / "missing.parquet")
    p = tmp_path / "x.txt"
    p.write_text("a\n1\n")
    with pytest.raises(ValueError, match="parquet or .csv"):
        read_table(p)


# ------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    "times", [[0.0, 2.0, 1.0], [-1.0, 0.0, 1.0], [0.0, np.nan], [0.0, np.inf], []],
    ids=["decreasing", "negative", "nan", "inf", "empty"],
)
@pytest.mark.parametrize("solver", [tsm.mesolve, tsm.sesolve])
def test_bad_times(solver, times):
    with pytest.raises(ValueError, match="times"):
        solver(tsm.paper_model("loss", N=5), times)


def test_bad_observable():
    for solver in (tsm.mesolve, tsm.sesolve):
        with pytest.raises(ValueError, match="observable"):
            solver(tsm.paper_model("loss", N=5), [0.0, 1.0], observables=["j", "current"])
    with pytest.raises(ValueError, match="observable"):
        tsm.steadystate(tsm.paper_model("pump", N=5), observables=["spin"])


def test_bad_steadystate_inputs():
    with pytest.raises(ValueError, match="jump channels"):
        tsm.steadystate(tsm.paper_model("closed", N=5))
    with pytest.raises(ValueError, match="method"):
        tsm.steadystate(tsm.paper_model("pump", N=5), method="lu")
    with pytest.raises(ValueError, match="tol"):
        tsm.steadystate(tsm.paper_model("pump", N=5), tol=-1.0)
    with pytest.raises(ValueError, match="model"):
        tsm.steadystate("pump")


def test_bad_exit_probabilities_inputs():
    with pytest.raises(ValueError, match="gamma_pump"):
        tsm.exit_probabilities(tsm.paper_model("pump", N=5))
    with pytest.raises(ValueError, match="gamma"):
        tsm.exit_probabilities(tsm.paper_model("closed", N=5))
    with pytest.raises(ValueError, match="model"):
        tsm.exit_probabilities(None)
    with pytest.raises(ValueError, match="model"):
        tsm.mesolve(None, [0.0])


def test_pump_only_steady_state_is_all_down_and_agrees_with_long_evolution():
    # gamma = 0: magnons are only added; without dark states everything ends all down
    model = tsm.ChainModel(N=5, profile=tsm.LinearProfile(0.0, 1.0), gamma_pump=0.62)
    ss = tsm.steadystate(model)
    np.testing.assert_allclose(ss.get("n")[0], 1.0, atol=1e-14)
    # the evolution creeps toward it (nearly dark states decay slowly)
    late = tsm.mesolve(model, [100.0, 1000.0, 10000.0], observables=("m",)).get("m")[:, 0]
    gap = late - ss.get("m")[0, 0]
    assert np.all(gap > 0) and np.all(np.diff(gap) < 0) and gap[-1] < 5e-3


def test_pump_only_dark_state_is_refused():
    # uniform N = 3 with the pump at the centre: a_1|{1,2}> - a_2|{2,3}> never decays,
    # so the long-time state depends on the initial state
    model = tsm.ChainModel(N=3, profile=tsm.UniformProfile(1.0), gamma_pump=0.62)
    with pytest.raises(ValueError, match="dark"):
        tsm.steadystate(model)


def test_repeated_output_times_keep_their_rows():
    model = tsm.ChainModel(N=4, profile=tsm.LinearProfile(0.0, 2.0), gamma=1.3, gamma_pump=0.9,
                           pump_site=2, initial=tsm.StateVector(2, (.3, .5j, -.4, .2 + .1j,
                                                                    .6, -.3j)))
    res = tsm.mesolve(model, [0.3, 0.3, 1.0])
    np.testing.assert_array_equal(res.times, [0.3, 0.3, 1.0])
    n = res.get("n")
    assert n.shape == (3, 4)
    np.testing.assert_allclose(n[0], n[1], atol=0)
    assert len(res.compare(res)) == len(res.expect)
