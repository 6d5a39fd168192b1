"""Trajectory engine against exact results, closed forms and itself.

Statistical tolerances: a row's z-score is (trajectory mean - exact) / sem.
With ~10^3 rows per comparison, about 95% must lie within 2 sem (we require
>= 90%: rows at neighbouring times are correlated, which widens the spread of
the fraction) and none beyond 5 sem (probability ~6e-7 per row for a correct
engine). Rows whose sample variance is exactly zero (every trajectory gave
the same value, e.g. no loss yet at the first output time) have no error bar;
for them the exact value must lie within the "rule of three" bound 3/ntraj of
the sample value (95% bound on a probability never observed in ntraj tries).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from zscores import check_against

import thermospin_mc as tsm
from thermospin_mc.trajectories import kernels

TIMES = np.linspace(0.0, 20.0, 81)


@pytest.mark.parametrize("N", [5, 7])
@pytest.mark.parametrize("scenario", ["loss", "pump"])
def test_trajectories_agree_with_mesolve(N, scenario):
    model = tsm.paper_model(scenario, N=N, delta_T=2.0)
    ntraj = 3000
    res = tsm.mcsolve(model, TIMES, ntraj=ntraj, seed=20260 + N)
    ref = tsm.mesolve(model, TIMES)
    check_against(res, ref, ntraj)
    assert (res.expect["ntraj"] == ntraj).all()


def test_chebyshev_mode_in_every_sector_agrees_with_mesolve():
    # dense_max = 1 forces the sparse propagator of large sectors (Chebyshev
    # steps with dense output) in every visited sector
    model = tsm.paper_model("pump", N=7, delta_T=2.0)
    ntraj = 2000
    res = tsm.mcsolve(model, TIMES, ntraj=ntraj, seed=77, cluster=tsm.Cluster(dense_max=1))
    modes = res.metadata["sector_modes"]  # sectors 0 and N have dimension 1
    assert all(mode == "chebyshev" for m, mode in modes.items() if 0 < int(m) < 7)
    assert len(modes) >= 3
    check_against(res, tsm.mesolve(model, TIMES), ntraj)


@pytest.mark.parametrize("N", [5, 7])
def test_closed_trajectories_are_exact(N):
    # without channels every trajectory is the exact pure evolution: zero spread
    model = tsm.paper_model("closed", N=N, delta_T=2.0)
    res = tsm.mcsolve(model, TIMES, ntraj=70, seed=1)
    ref = tsm.mesolve(model, TIMES)
    cmp_ = res.compare(ref)
    assert cmp_["diff"].abs().max() < 1e-10
    assert (res.expect["sem"] == 0).all()


def test_delta_T_zero_current_vanishes_and_profile_is_mirror_symmetric():
    model = tsm.paper_model("pump", N=7, delta_T=0.0)
    a = tsm.mcsolve(model, TIMES, ntraj=3000, seed=11, observables=("j", "n"))
    b = tsm.mcsolve(model, TIMES, ntraj=3000, seed=12, observables=("n",))
    j = a.get("j")[1:, 0]
    sj = a.get("j", "sem")[1:, 0]
    # before the first loss every trajectory is mirror symmetric and its j is
    # round-off (~1e-17); a floor of 1e-12 on the error bar keeps z meaningful
    zj = j / np.maximum(sj, 1e-12)
    assert np.mean(np.abs(zj) < 2) >= 0.90 and np.abs(zj).max() < 5
    # mirror symmetry: n_i of one ensemble against n_{N+1-i} of an independent one
    na, sa = a.get("n")[1:], a.get("n", "sem")[1:]
    nb, sb = b.get("n")[1:, ::-1], b.get("n", "sem")[1:, ::-1]
    z = (na - nb) / np.maximum(np.sqrt(sa**2 + sb**2), 1e-12)
    assert np.mean(np.abs(z) < 2) >= 0.90 and np.abs(z).max() < 5


def test_edge_loss_exactly_one_loss_and_exit_fraction():
    model = tsm.paper_model("loss", N=7, delta_T=2.0)
    ntraj = 4000
    # by t = 100 the survival probability is ~1e-6 (exact m(t) - N/2 + 1)
    res = tsm.mcsolve(model, np.linspace(0, 100, 11), ntraj=ntraj, seed=5,
                      record_jumps=True, observables=("m",))
    jumps = res.jumps
    per_traj = jumps.groupby("traj").size()
    assert len(per_traj) == ntraj and (per_traj == 1).all()
    assert set(jumps["channel"]) <= {"loss_left", "loss_right"}
    assert (jumps["m_before"] == 1).all()
    p_right = float((jumps["channel"] == "loss_right").mean())
    exact = tsm.exit_probabilities(model)["loss_right"]
    se = np.sqrt(exact * (1 - exact) / ntraj)
    assert abs(p_right - exact) < 4 * se, (p_right, exact, se)
    # loss sites are the chain edges
    assert set(jumps.loc[jumps.channel == "loss_right", "site"]) == {7}


def test_bit_identical_for_jobs_and_batch_sizes():
    model = tsm.paper_model("pump", N=5, delta_T=2.0)
    kw = dict(ntraj=700, seed=123, record_jumps=True)
    r1 = tsm.mcsolve(model, TIMES, n_jobs=1, **kw, cluster=tsm.Cluster(batch_size=64))
    r2 = tsm.mcsolve(model, TIMES, n_jobs=2, **kw, cluster=tsm.Cluster(batch_size=192))
    r3 = tsm.mcsolve(model, TIMES, n_jobs=1, **kw, cluster=tsm.Cluster(batch_size=700))
    r5 = tsm.mcsolve(model, TIMES, n_jobs=2, **kw,
                     cluster=tsm.Cluster(batch_size=128, backend="loky"))
    assert r2.metadata["backend"] == "threads" and r5.metadata["backend"] == "loky"
    for other in (r2, r3, r5):
        assert np.array_equal(r1.expect["mean"].to_numpy(), other.expect["mean"].to_numpy())
        assert np.array_equal(r1.expect["sem"].to_numpy(), other.expect["sem"].to_numpy())
        assert r1.jumps.equals(other.jumps)
    r4 = tsm.mcsolve(model, TIMES, n_jobs=1, **{**kw, "seed": 124},
                     cluster=tsm.Cluster(batch_size=64))
    assert not np.array_equal(r1.expect["mean"].to_numpy(), r4.expect["mean"].to_numpy())


def test_threads_building_sectors_concurrently_match_serial():
    # a fresh grid: the two threads find the sectors unbuilt and build them while
    # the other runs kernels on its snapshot (sector tables are shared per process)
    model = tsm.paper_model("pump", N=7, delta_T=2.0)
    times = np.linspace(0.0, 13.0, 27)
    kw = dict(ntraj=1024, seed=9, record_jumps=True, cluster=tsm.Cluster(batch_size=64))
    threaded = tsm.mcsolve(model, times, n_jobs=2, **kw)
    serial = tsm.mcsolve(model, times, n_jobs=1, **kw)
    assert np.array_equal(threaded.expect["mean"].to_numpy(), serial.expect["mean"].to_numpy())
    assert threaded.jumps.equals(serial.jumps)


def _first_uniform(seed, traj):
    key = np.random.SeedSequence(seed).generate_state(4, dtype=np.uint64)
    state = np.zeros(4, dtype=np.uint64)
    kernels.seed_state(key, traj, state)
    return kernels.next_uniform(state)


def test_jump_time_root_is_exact_for_two_site_loss():
    # one magnon on N = 2 with loss gamma on both sites: H_eff = h - i gamma/2,
    # so ||psi(t)||^2 = exp(-gamma t) exactly and the jump time is -ln(r)/gamma
    gamma = 1.7
    model = tsm.ChainModel(N=2, profile=tsm.BondCouplings([1.3]), gamma=gamma, initial=[1])
    ntraj = 2000
    res = tsm.mcsolve(model, np.linspace(0, 40, 5), ntraj=ntraj, seed=77, record_jumps=True,
                      observables=("m",))
    jt = res.jumps.sort_values("traj")
    expected = np.array([-np.log(_first_uniform(77, k)) / gamma for k in jt["traj"]])
    # root found to 1e-10 relative in the norm -> 1e-10/gamma absolute in time
    assert np.max(np.abs(jt["t"].to_numpy() - expected)) < 1e-9
    # and the waiting times are exponential with rate gamma (KS test)
    p = stats.kstest(jt["t"], "expon", args=(0, 1 / gamma)).pvalue
    assert p > 1e-3


def test_pump_only_first_jump_exponential():
    # all up with only the pump: the first jump happens at rate gamma_pump
    gp = 0.62
    model = tsm.ChainModel(N=5, profile=tsm.BondCouplings([1.0, 1.2, 1.4, 1.6]),
                           gamma_pump=gp)
    res = tsm.mcsolve(model, np.linspace(0, 30, 4), ntraj=3000, seed=9, record_jumps=True,
                      observables=("m",))
    first = res.jumps.groupby("traj")["t"].min()
    assert (res.jumps.groupby("traj")["channel"].first() == "pump").all()
    p = stats.kstest(first.to_numpy(), "expon", args=(0, 1 / gp)).pvalue
    assert p > 1e-3


def test_max_magnons_truncation_is_reported():
    model = tsm.paper_model("pump", N=5, delta_T=2.0, gamma_pump=3.0)
    res = tsm.mcsolve(model, TIMES, ntraj=500, seed=3, observables=("m",),
                      target=tsm.Target(max_magnons=1))
    frac = res.metadata["truncated_fraction"]
    assert 0 < frac <= 1
    last = res.expect[res.expect.t == TIMES[-1]]
    assert (last["ntraj"] < 500).all()
    # no kept trajectory ever has more than one magnon: m >= N/2 - 1
    # rows with no trajectory left are NaN, never a fake number
    kept = res.expect.dropna(subset=["mean"])
    assert (kept["mean"] >= 1.5 - 1e-12).all()
    assert res.expect.loc[res.expect["ntraj"] == 0, "mean"].isna().all()


def test_keep_trajectories_reproduces_the_streamed_mean():
    model = tsm.paper_model("pump", N=5, delta_T=2.0)
    res = tsm.mcsolve(model, TIMES, ntraj=150, seed=4, observables=("j", "m"),
                      checkpoint=tsm.Checkpointing(keep_trajectories=True))
    rows = res.trajectories["rows"]
    assert rows.shape[0] == 150
    lo, hi = res.trajectories["columns"]["j"]
    np.testing.assert_allclose(rows[:, :, lo].mean(axis=0), res.get("j")[:, 0], atol=1e-12)
    sem = rows[:, :, lo].std(axis=0, ddof=1) / np.sqrt(150)
    np.testing.assert_allclose(sem[1:], res.get("j", "sem")[1:, 0], rtol=1e-9)


def test_long_chain_single_impurity_chebyshev_mode_agrees_with_exact():
    # one magnon on a 201-site chain, sector forced into sparse Chebyshev mode
    N, ntraj = 201, 1000
    model = tsm.paper_model("loss", N=N, delta_T=2.0)
    times = np.linspace(0.0, 150.0, 31)
    res = tsm.mcsolve(model, times, ntraj=ntraj, seed=8, record_jumps=True,
                      observables=("j", "m", "n"), cluster=tsm.Cluster(dense_max=100))
    assert res.metadata["sector_modes"]["1"] == "chebyshev"
    ref = tsm.mesolve(model, times, observables=("j", "m", "n"))
    check_against(res, ref, ntraj)
    # at most one loss per trajectory; the number lost by t_end is binomial
    # with the exact loss probability 1 - ||psi||^2 = 1 - (N/2 - m(t_end))
    assert (res.jumps.groupby("traj").size() == 1).all()
    p_lost = 1.0 - (N / 2 - float(ref.get("m")[-1, 0]))
    assert 0.2 < p_lost < 0.9  # the test is not vacuous
    n_lost = len(res.jumps)
    assert abs(n_lost - ntraj * p_lost) < 4 * np.sqrt(ntraj * p_lost * (1 - p_lost))


def test_bad_input_is_rejected():
    model = tsm.paper_model("pump", N=5)
    with pytest.raises(ValueError, match="ntraj"):
        tsm.mcsolve(model, TIMES, ntraj=0)
    with pytest.raises(ValueError, match="times"):
        tsm.mcsolve(model, [1.0, 0.5], ntraj=10)
    with pytest.raises(ValueError, match="observable"):
        tsm.mcsolve(model, TIMES, ntraj=10, observables=("bogus",))
    with pytest.raises(ValueError, match="n_jobs"):
        tsm.mcsolve(model, TIMES, ntraj=10, n_jobs=0)
    with pytest.raises(ValueError, match="max_magnons"):
        tsm.mcsolve(model, TIMES, ntraj=10, target=tsm.Target(max_magnons=99))


def test_repeated_times_with_truncation_report_counts_per_row():
    model = tsm.ChainModel(N=4, profile=tsm.LinearProfile(0.0, 2.0), gamma=1.3, gamma_pump=0.9,
                           pump_site=2, initial=tsm.StateVector(2, (.3, .5j, -.4, .2 + .1j,
                                                                    .6, -.3j)))
    res = tsm.mcsolve(model, [0.3, 0.3, 1.7, 5.0], ntraj=500, seed=1,
                      target=tsm.Target(max_magnons=2))
    counts = res.expect[res.expect.observable == "m"]["ntraj"].to_numpy()
    # truncation only removes trajectories: counts never grow, and repeated times agree
    assert counts[0] == counts[1] and np.all(np.diff(counts) <= 0) and counts[-1] < 500
    assert (res.expect.groupby(["observable", "site"])["ntraj"].apply(
        lambda c: np.array_equal(c.to_numpy(), counts))).all()
