"""Exact solvers on time-dependent protocols (docs/model.md 14): ``mesolve(schedule)``.

The reference is independent of the package's sector machinery: the full 2^N
space Lindblad generator of each stage is written here from docs/general_chain.md and
docs/model.md section 13 (Kronecker products, 4^N unknowns), and the stages' exponentials are
chained (scipy's ``expm_multiply`` from event to event),
``rho(t) = exp(L_k (t - t_k)) ... exp(L_0 t_1) rho0``; jump counts ride along
as extra rows of an augmented generator. The smooth protocol behind
``Schedule.ramp`` is integrated as an ODE (``solve_ivp``, tight tolerances).

Tolerances: both sides are double-precision exponentials of O(1) generators
over O(10) times, so they agree to ~1e-12; the issue's bound is 1e-8.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.integrate import solve_ivp

import thermospin_mc as tsm

TOL = 1e-8

# ----------------------------------------------------------------------- full-space reference
SP = np.array([[0.0, 1.0], [0.0, 0.0]])   # s+ = |up><down| (index 0 up, 1 down)
SM = SP.T.copy()                          # s-
SZ = np.diag([1.0, -1.0])
NN = np.diag([0.0, 1.0])                  # n = |down><down|


def site_op(op, i, N):
    """``op`` on 1-based site ``i`` of ``N`` (site 1 the leftmost factor), sparse."""
    return sp.kron(sp.kron(sp.identity(2 ** (i - 1)), sp.csr_matrix(op)),
                   sp.identity(2 ** (N - i)), format="csr")


def full_hamiltonian(model):
    N, a = model.N, model.couplings
    delta, h = model.bond_anisotropy, model.site_fields
    H = sp.csr_matrix((2**N, 2**N))
    for l in range(1, N):
        H = H + a[l - 1] / 2 * (2 * (site_op(SP, l, N) @ site_op(SM, l + 1, N)
                                     + site_op(SM, l, N) @ site_op(SP, l + 1, N))
                                + delta[l - 1] * site_op(SZ, l, N) @ site_op(SZ, l + 1, N))
    for i in range(1, N + 1):
        H = H + h[i - 1] / 2 * site_op(SZ, i, N)
    return H


def jump_op(ch, N):
    op = {"loss": SP, "pump": SM, "dephasing": SZ}[ch.kind]
    return np.sqrt(ch.rate) * site_op(op, ch.site + 1, N)


def full_generator(model, count_names=()):
    """Full-space generator on the row-major ``vec(rho)`` (``vec(A X B) = (A kron B^T)
    vec(X)``), augmented by ``d c_k/dt = Tr(L_k^+ L_k rho)`` for the channels named in
    ``count_names`` (0 where the model lacks one); sparse."""
    N = model.N
    d = 2**N
    H = full_hamiltonian(model)
    eye = sp.identity(d, format="csr")
    L = -1j * (sp.kron(H, eye) - sp.kron(eye, H.T))
    own = {ch.name: ch for ch in model.channels}
    rates = np.zeros((len(count_names), d * d), dtype=complex)
    for ch in model.channels:
        J = jump_op(ch, N)
        JdJ = J.conj().T @ J
        L = L + sp.kron(J, J.conj()) - 0.5 * (sp.kron(JdJ, eye) + sp.kron(eye, JdJ.T))
    for q, name in enumerate(count_names):
        if name in own:
            J = jump_op(own[name], N)
            rates[q] = (J.conj().T @ J).T.toarray().ravel()  # Tr(A rho) = sum A_ji rho_ij
    nc = len(count_names)
    return sp.bmat([[L, None], [sp.csr_matrix(rates), sp.csr_matrix((nc, nc))]],
                   format="csr") if nc else L.tocsr()


def full_initial(model):
    N = model.N
    ini = model.initial
    d = 2**N
    if isinstance(ini, tsm.Magnons):
        psi = np.zeros(d)
        psi[sum(2 ** (N - s) for s in ini.sites)] = 1.0
        return np.outer(psi, psi).astype(complex)
    if isinstance(ini, tsm.Mixture):
        rho = np.zeros((d, d), dtype=complex)
        for conf, w in zip(ini.configurations, ini.weights, strict=True):
            k = sum(2 ** (N - s) for s in conf)
            rho[k, k] += w
        return rho
    raise AssertionError(f"unsupported initial state {ini!r}")


def full_observables(rho, model, pairs=()):
    """The observables (docs/model.md section 7, docs/general_chain.md) of a full-space
    ``rho``; ``model``
    supplies the couplings of ``flow``."""
    N = model.N
    ev = lambda A: np.sum(A.T.multiply(rho))  # Tr(A rho)  # noqa: E731
    n = np.array([ev(site_op(NN, i, N)).real for i in range(1, N + 1)])
    jb = np.array([(2j * ev(site_op(SM, l, N) @ site_op(SP, l + 1, N)
                            - site_op(SP, l, N) @ site_op(SM, l + 1, N))).real
                   for l in range(1, N)])
    out = {"n": n, "j_bond": jb, "j": np.array([jb.sum()]),
           "flow": model.couplings / 2 * jb,
           "m": np.array([0.5 * sum(ev(site_op(SZ, i, N)).real for i in range(1, N + 1))]),
           "norm": np.array([np.trace(rho).real])}
    if pairs:
        out["nn"] = np.array([ev(site_op(NN, i, N) @ site_op(NN, k, N)).real
                              for i, k in pairs])
        pm = np.array([ev(site_op(SP, i, N) @ site_op(SM, k, N)) for i, k in pairs])
        out["pm_re"], out["pm_im"] = pm.real, pm.imag
    return out


def chained_reference(schedule, times, count_names=(), pairs=()):
    """Observables at ``times`` by chaining the full-space exponentials of every stage
    (the stages as given, nothing merged): from each output time or boundary to the
    next, ``expm_multiply`` of the stage's generator; ``flow`` with ``model_at(t)``."""
    N = schedule.N
    d2 = 4**N
    starts = list(schedule.times)
    gens = [full_generator(m, count_names) for _, m in schedule.stages]
    x = np.concatenate([full_initial(schedule.stages[0][1]).ravel(),
                        np.zeros(len(count_names), dtype=complex)])
    t_now, rows = 0.0, []
    for t in times:
        while t_now < t:
            k = int(np.searchsorted(starts, t_now, side="right")) - 1
            stop = min(t, starts[k + 1]) if k + 1 < len(starts) else t
            x = spla.expm_multiply(gens[k] * (stop - t_now), x)
            t_now = stop
        rho = x[:d2].reshape(2**N, 2**N)
        obs = full_observables(rho, schedule.model_at(t), pairs)
        if count_names:
            obs["count"] = x[d2:].real
        obs["rho"] = rho
        rows.append(obs)
    return rows


# ----------------------------------------------------------------------- random models
def random_schedule(rng, N, nstages=3, mixed=False):
    """Stages with random couplings, XXZ anisotropies, fields and a channel pool of loss,
    pump and dephasing at several sites; each stage keeps a random part of the pool
    (so channels are present in some stages only), with its own rates."""
    pool = [("loss", 1, "L1"), ("loss", N, "LN"), ("pump", (N + 1) // 2, "Pc"),
            ("dephasing", 2, "D2"), ("loss", 3, "L3"), ("pump", 1, "P1")]
    kinds = {"loss": tsm.Loss, "pump": tsm.Pump, "dephasing": tsm.Dephasing}
    if mixed:
        initial = tsm.mixture([((2,), 0.5), ((1, N), 0.3), ((), 0.2)])
    else:
        initial = (2, N - 1)
    stages, t = [], 0.0
    for k in range(nstages):
        keep = [p for p in pool if rng.random() < 0.6] if k else pool[:3]
        chans = [kinds[kind](site=s, rate=float(rng.uniform(0.2, 1.5)), name=name)
                 for kind, s, name in keep]
        model = tsm.ChainModel(
            N=N, profile=tsm.BondCouplings(tuple(rng.uniform(0.5, 1.5, N - 1))),
            anisotropy=tuple(rng.uniform(0.3, 1.7, N - 1)),
            fields=tuple(rng.uniform(-0.5, 0.5, N)), channels=chans or None,
            initial=initial)
        stages.append((t, model))
        t += float(rng.uniform(0.7, 1.6))
    return tsm.Schedule(stages)


def output_times(schedule, extra_end=1.0, num=9):
    """A uniform grid plus every boundary (outputs on and between boundaries)."""
    bounds = list(schedule.times)
    grid = np.linspace(0.0, bounds[-1] + extra_end, num)
    return np.unique(np.concatenate([grid, bounds]))


def get(res, name):
    """``res.get(name)``; ``count``: every channel's row side by side, channel order."""
    if name != "count":
        return res.get(name)
    rows = [o for o in dict.fromkeys(res.expect.observable) if o.startswith("count:")]
    return np.hstack([res.get(o) for o in rows])


def assert_matches(res, ref, names, tol=TOL):
    for name in names:
        got = get(res, name)
        want = np.array([r[name] for r in ref])
        assert got.shape == want.shape, name
        err = np.abs(got - want).max()
        assert err < tol, (name, err)


OBS = ["j", "j_bond", "flow", "m", "n", "norm"]


@pytest.mark.parametrize("N,seed", [(4, 1), (5, 2), (6, 3)])
@pytest.mark.parametrize("method", ["expm", "chebyshev"])
def test_mesolve_schedule_matches_chained_full_space_exponentials(N, seed, method):
    rng = np.random.default_rng(seed)
    sched = random_schedule(rng, N)
    times = output_times(sched)
    names = [c.name for c in sched.channels]
    pairs = [(1, 3), (2, N)]
    res = tsm.mesolve(sched, times, observables=[*OBS, "count", "nn", "pm"], pairs=pairs,
                      method=method)
    ref = chained_reference(sched, times, names, pairs)
    assert_matches(res, ref, [*OBS, "count", "nn", "pm_re", "pm_im"])
    # the count rows are the schedule's channels, in order of first appearance
    counts = res.expect[res.expect.observable.str.startswith("count:")]
    assert list(dict.fromkeys(counts.observable)) == [f"count:{n}" for n in names]
    assert res.metadata["method"] == method


@pytest.mark.parametrize("method", ["expm", "chebyshev"])
def test_mesolve_schedule_mixture_and_states(method):
    rng = np.random.default_rng(11)
    sched = random_schedule(rng, 5, nstages=4, mixed=True)
    times = output_times(sched, num=7)
    res = tsm.mesolve(sched, times, observables=OBS, method=method, states=True)
    ref = chained_reference(sched, times)
    assert_matches(res, ref, OBS)
    for st, r in zip(res.states, ref, strict=True):
        assert np.abs(st.to_dense() - r["rho"]).max() < TOL


def test_mesolve_schedule_operators_match_dense_expectations():
    rng = np.random.default_rng(5)
    sched = random_schedule(rng, 4)
    times = output_times(sched, num=5)
    op = tsm.Operator.parse("x1 x3 + 0.5*z2 + n4", 4, "mine")
    res = tsm.mesolve(sched, times, observables=["m", op])
    ref = chained_reference(sched, times)
    full = op.to_dense()
    want = np.array([np.trace(full @ r["rho"]).real for r in ref])  # dense, N = 4
    assert np.abs(res.get("mine")[:, 0] - want).max() < TOL


def _loss_stage(N, a, rate, name_rates=None):
    chans = [tsm.Loss(site=s, rate=r, name=n) for n, (s, r) in (name_rates or {}).items()]
    return tsm.ChainModel(N=N, profile=tsm.BondCouplings(tuple(a)), channels=chans or None,
                          initial=(N + 1) // 2)


def test_pure_paths_one_magnon_with_losses_and_closed_stages():
    """Loss-only stages from one magnon (the no-jump path), one stage closed; and the
    all-closed schedule (pure state, also through sesolve)."""
    N = 6
    rng = np.random.default_rng(7)
    a = [rng.uniform(0.5, 1.5, N - 1) for _ in range(3)]
    lossy = tsm.Schedule([
        (0.0, _loss_stage(N, a[0], 0, {"left": (1, 1.3), "right": (N, 0.7)})),
        (1.2, _loss_stage(N, a[1], 0)),
        (2.5, _loss_stage(N, a[2], 0, {"right": (N, 2.0), "mid": (3, 0.4)}))])
    times = output_times(lossy)
    res = tsm.mesolve(lossy, times, observables=OBS, states=True)
    assert "method" not in res.metadata  # the pure no-jump path
    ref = chained_reference(lossy, times)
    assert_matches(res, ref, OBS)
    for st, r in zip(res.states, ref, strict=True):
        assert np.abs(st.to_dense() - r["rho"]).max() < TOL
    closed = tsm.Schedule([(t, m.with_(channels=None)) for t, m in lossy.stages])
    ref = chained_reference(closed, times)
    for res in (tsm.mesolve(closed, times, observables=OBS),
                tsm.sesolve(lossy, times, observables=OBS)):  # sesolve ignores channels
        assert_matches(res, ref, OBS)
    assert tsm.sesolve(lossy, times).metadata["solver"] == "sesolve"


# ----------------------------------------------------------------------- boundaries
def test_flow_at_a_boundary_takes_the_stage_that_starts_there():
    """Output times exactly at stage starts, the last output at a stage that then never
    acts: the state is continuous, flow uses model_at(t) (t_k <= t)."""
    N = 4
    a = tsm.ChainModel(N=N, profile=tsm.BondCouplings((1.0, 0.6, 1.4)), gamma=1.0,
                       gamma_pump=0.5, pump_site=2)
    b = a.with_(profile=tsm.BondCouplings((0.3, 2.0, 0.9)))
    c = a.with_(profile=tsm.BondCouplings((1.7, 1.1, 0.2)),
                channels=[tsm.Dephasing(site=3, rate=0.8, name="deph")])
    sched = tsm.Schedule([(0.0, a), (1.0, b), (2.0, c)])
    times = np.array([0.0, 0.5, 1.0, 1.0, 1.5, 2.0])
    for method in ("expm", "chebyshev"):
        res = tsm.mesolve(sched, times, observables=[*OBS, "count"], method=method)
        ref = chained_reference(sched, times, [ch.name for ch in sched.channels])
        assert_matches(res, ref, [*OBS, "count"])
        flow = res.get("flow")
        jb = res.get("j_bond")
        assert np.allclose(flow[-1], c.couplings / 2 * jb[-1], rtol=0, atol=1e-15)
        assert np.allclose(flow[2], b.couplings / 2 * jb[2], rtol=0, atol=1e-15)
        # the dephasing channel of the stage at t = 2 has a row, and 0 counts
        assert get(res, "count").shape == (6, 4)
        assert np.all(res.get("count:deph") == 0.0)


def test_schedule_of_one_model_is_the_plain_model_bit_for_bit():
    model = tsm.paper_model("pump", N=5, delta_T=1.5)
    same = tsm.Schedule([(0.0, model), (1.5, model), (4.0, model.with_(initial=(2,)))])
    times = np.linspace(0.0, 6.0, 13)
    op = tsm.Operator.parse("x1 x3", 5, "xx")
    for kw in ({}, {"method": "expm"}, {"method": "chebyshev"},
               {"observables": [*OBS, "count", "nn", "pm", op], "pairs": [(1, 2), (2, 5)]},
               {"states": True}):
        a = tsm.mesolve(same, times, **kw)
        b = tsm.mesolve(model, times, **kw)
        assert a.expect.equals(b.expect), kw
        assert a.metadata["model"] == same.to_dict()
        assert tsm.Schedule.from_dict(a.metadata["model"]) == same
        assert {k: v for k, v in a.metadata.items() if k != "model"} == \
            {k: v for k, v in b.metadata.items() if k != "model"}
        if kw.get("states"):
            for sa, sb in zip(a.states, b.states, strict=True):
                for m, B in sa.blocks.items():
                    assert np.array_equal(B, sb.blocks[m])
    # the pure paths too: one magnon with losses, a mixture, a closed chain (sesolve)
    for model in (tsm.paper_model("loss", N=6), tsm.paper_model("closed", N=6),
                  tsm.paper_model("pump", N=4, pump_site=2).with_(
                      initial=tsm.mixture([((1,), 0.5), ((2, 3), 0.5)]))):
        same = tsm.Schedule([(0.0, model), (2.0, model)])
        assert tsm.mesolve(same, times).expect.equals(tsm.mesolve(model, times).expect)
    closed = tsm.paper_model("closed", N=6)
    same = tsm.Schedule([(0.0, closed), (2.0, closed)])
    assert tsm.sesolve(same, times).expect.equals(tsm.sesolve(closed, times).expect)


def test_stages_after_the_last_output_change_nothing():
    model = tsm.paper_model("pump", N=5, delta_T=1.0)
    other = tsm.paper_model("pump", N=5, delta_T=3.0, gamma_pump=1.0)
    times = np.linspace(0.0, 3.0, 7)
    late = tsm.Schedule([(0.0, model), (5.0, other)])
    assert tsm.mesolve(late, times).expect.equals(tsm.mesolve(model, times).expect)


# ----------------------------------------------------------------------- ramps
def _pulse(t):
    return np.sin(np.pi * t / 4.0) ** 2


def _smooth(t):
    """A smooth protocol: the couplings and the pump rate follow a sin^2 pulse ``s(t)``
    (both enter the generator linearly: ``L(t) = L_0 + s(t) (L_1 - L_0)``)."""
    s = _pulse(t)
    return tsm.ChainModel(N=4, profile=tsm.BondCouplings((1.0 + 0.8 * s, 1.0 - 0.4 * s,
                                                          1.0 + 0.5 * s)),
                          channels=[tsm.Loss(site=1, rate=0.8), tsm.Loss(site=4, rate=0.8),
                                    tsm.Pump(site=2, rate=0.3 + 0.6 * s)])


def _smooth_reference(t_start, t_stop, t_end):
    """``m`` and ``j`` at ``t_end`` of the smooth protocol: the time-dependent full-space
    Lindblad equation integrated as an ODE (model frozen outside [t_start, t_stop])."""
    G0 = full_generator(_smooth(0.0))  # s = 0
    G1 = full_generator(_smooth(2.0))  # s = 1

    def rhs(t, y):
        s = _pulse(min(max(t, t_start), t_stop))
        return G0 @ y + s * (G1 @ y - G0 @ y)

    y0 = full_initial(_smooth(0.0)).ravel()
    sol = solve_ivp(rhs, (0.0, t_end), y0, method="DOP853", rtol=1e-12, atol=1e-14,
                    t_eval=[t_end])
    obs = full_observables(sol.y[:, -1].reshape(16, 16), _smooth(min(t_end, t_stop)))
    return np.array([obs["m"][0], obs["j"][0]])


@pytest.mark.parametrize("t_start", [0.0, 1.0])
def test_ramp_staircase_converges_as_delta_squared(t_start):
    t_stop, t_end = t_start + 4.0, t_start + 4.5
    want = _smooth_reference(t_start, t_stop, t_end)
    errs = []
    for steps in (10, 20, 40):
        sched = tsm.Schedule.ramp(_smooth, t_start, t_stop, steps)
        res = tsm.mesolve(sched, [t_end], observables=["m", "j"])
        got = np.array([res.get("m")[0, 0], res.get("j")[0, 0]])
        errs.append(np.abs(got - want).max())
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert errs[2] > 1e-9, errs  # far above the ODE's own error
    for r in ratios:
        assert 3.5 < r < 4.5, (errs, ratios)


def test_ramp_staircase_is_exact_for_itself():
    sched = tsm.Schedule.ramp(_smooth, 0.5, 2.5, 5)
    times = output_times(sched, num=6)
    res = tsm.mesolve(sched, times, observables=OBS)
    assert_matches(res, chained_reference(sched, times), OBS)


# ----------------------------------------------------------------------- refusals
def _sched():
    a = tsm.paper_model("pump", N=4, pump_site=2)
    return tsm.Schedule([(0.0, a), (1.0, a.with_(gamma_pump=1.0))])


REFUSALS = [
    ("steadystate", lambda s: tsm.steadystate(s)),
    ("exact_counting_statistics",
     lambda s: tsm.exact_counting_statistics(s, {"loss_right": 1})),
    ("exact_counting_statistics",
     lambda s: tsm.exact_counting_statistics(s, {"loss_right": 1}, t=1.0)),
    ("scgf", lambda s: tsm.scgf(s, {"loss_right": 1}, [0.0, 0.1])),
    ("waiting_time_distribution",
     lambda s: tsm.waiting_time_distribution(s, ["pump"], [0.5])),
    ("waiting_time_bins", lambda s: tsm.waiting_time_bins(s, ["pump"], [0.0, 1.0])),
    ("exit_probabilities", lambda s: tsm.exit_probabilities(s)),
    ("liouvillian_spectrum", lambda s: tsm.liouvillian_spectrum(s)),
    ("relaxation_time", lambda s: tsm.relaxation_time(s)),
    ("correlation", lambda s: tsm.correlation(s, [0.0, 1.0], "n1", "n1")),
    ("spectrum", lambda s: tsm.spectrum(s, [0.0, 1.0], "n1", "n1")),
]


@pytest.mark.parametrize("name,call", REFUSALS, ids=[f"{n}-{i}" for i, (n, _) in
                                                    enumerate(REFUSALS)])
def test_solvers_of_one_generator_refuse_a_schedule_in_one_line(name, call):
    with pytest.raises(ValueError) as exc:
        call(_sched())
    text = str(exc.value)
    assert "\n" not in text
    assert text.startswith(f"{name}: a Schedule has no single generator"), text
    assert "schedule.model_at(t)" in text


def test_mesolve_schedule_input_errors_are_one_line():
    s = _sched()
    for kw, part in (({"method": "nope"}, "method must be"), ({"states": 1}, "states must"),
                     ({"observables": ["bogus"]}, "bogus")):
        with pytest.raises(ValueError) as exc:
            tsm.mesolve(s, [0.0, 1.0], **kw)
        assert part in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="non-decreasing"):
        tsm.mesolve(s, [2.0, 1.0])
    mixed = tsm.Schedule([(0.0, tsm.paper_model("loss", N=4).with_(
        initial=tsm.mixture([((1,), 0.5), ((2,), 0.5)])))])
    with pytest.raises(ValueError, match="sesolve needs a pure initial state"):
        tsm.sesolve(mixed, [1.0])
    with pytest.raises(ValueError, match="count"):
        tsm.sesolve(s, [1.0], observables=["count"])


def test_metadata_records_every_stage_and_survives_files(tmp_path):
    rng = np.random.default_rng(3)
    sched = random_schedule(rng, 4)
    res = tsm.mesolve(sched, [0.0, 1.0, 2.5], observables=["m", "count"])
    meta = res.metadata
    assert meta["solver"] == "mesolve" and meta["ntraj"] == 0
    assert [s["t"] for s in meta["model"]["schedule"]] == list(sched.times)
    res.save(tmp_path / "out")
    back = tsm.read_result(tmp_path / "out")
    assert tsm.Schedule.from_dict(back.metadata["model"]) == sched
    assert back.expect["mean"].to_numpy() == pytest.approx(res.expect["mean"].to_numpy(),
                                                            abs=0)
