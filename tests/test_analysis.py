"""Jump statistics and steady-state estimators against exact results.

Statistical tolerances: an estimate agrees with an exact value when
|estimate - exact| < 4 of its standard errors (two-sided probability 6e-5 for
a correct, normally distributed estimator; the seeds are fixed, so a pass is
reproducible). Systematic errors that the error bar does not cover (the finite
run length for exit sides, incomplete relaxation after burn-in) are bounded with
the exact solvers first and required to be below 0.1 error bars.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import thermospin_mc as tsm
from thermospin_mc import analysis
from thermospin_mc.app.cli import main

Z_TOL = 4.0

# pump + loss, N = 5 (Fig. 6 setup, smaller chain): relaxed by T_BURN (checked below)
T_BURN, T_END = 20.0, 60.0
PUMP_TIMES = np.linspace(0.0, T_END, 241)
PUMP_NTRAJ = 3000


@pytest.fixture(scope="module")
def pump_model():
    return tsm.paper_model("pump", N=5, delta_T=2.0)


@pytest.fixture(scope="module")
def pump_steady(pump_model):
    return tsm.steadystate(pump_model)


@pytest.fixture(scope="module")
def pump_run(pump_model):
    return tsm.mcsolve(pump_model, PUMP_TIMES, ntraj=PUMP_NTRAJ, seed=2024, n_jobs=1,
                       observables=("j", "m"), record_jumps=True,
                       checkpoint=tsm.Checkpointing(keep_trajectories=True))


def _z(est, exact, sem):
    return (est - exact) / sem


# --------------------------------------------------------------------------- exit sides
@pytest.mark.parametrize("delta_T", [2.0, 0.0])
def test_exit_sides_agree_with_exact_exit_probabilities(delta_T):
    model = tsm.paper_model("loss", N=7, delta_T=delta_T)
    ntraj, t_end = 4000, 100.0
    # the exact probabilities are for t -> inf: the probability that the magnon is
    # still in the chain at t_end (slowest at delta_T = 0, ~5e-4) must be < 0.1 sem
    left_in_chain = model.N / 2 - tsm.mesolve(model, [t_end], observables=("m",)).get("m")[0, 0]
    assert 0 <= left_in_chain < 0.1 * math.sqrt(0.25 / ntraj)
    res = tsm.mcsolve(model, [0.0, t_end], ntraj=ntraj, seed=11, n_jobs=1, observables=("m",),
                      record_jumps=True)
    ex = analysis.exit_sides(res.jumps, ntraj)
    exact = tsm.exit_probabilities(model)
    # trajectories without a loss by t_end: Poisson with mean ntraj * left_in_chain
    # (central 1 - 6e-5 range)
    mu = ntraj * left_in_chain
    assert ex.loc["none", "count"] <= stats.poisson.ppf(1 - 6e-5, mu)
    assert ex.loc[["loss_right", "loss_left", "none"], "count"].sum() == ntraj
    for side in ("loss_right", "loss_left"):
        p, se = ex.loc[side, "p"], ex.loc[side, "sem"]
        assert math.isclose(se, math.sqrt(p * (1 - p) / ntraj))
        assert abs(_z(p, exact[side], se)) < Z_TOL, (side, p, exact[side], se)
        assert ex.loc[side, "ci_low"] < p < ex.loc[side, "ci_high"]
    diff = ex.loc["right_minus_left"]
    assert abs(_z(diff["p"], exact["loss_right"] - exact["loss_left"], diff["sem"])) < Z_TOL
    if delta_T == 0.0:
        # mirror symmetry: P(right) = P(left) exactly; the trajectories agree within errors
        assert exact["loss_right"] == pytest.approx(exact["loss_left"], abs=1e-10)
        assert abs(diff["p"]) < Z_TOL * diff["sem"]
    else:
        # the hot (right, larger couplings) side wins, clearly resolved
        assert diff["p"] > 5 * diff["sem"]


# --------------------------------------------------------------------------- pump + loss
def test_burn_in_is_relaxed(pump_model, pump_steady):
    # bias of a window average starting at T_BURN: every <n_i>, j, m within 1e-5 of
    # the steady state, i.e. rate biases gamma * 1e-5 = 3e-5 and j, m biases 1e-5,
    # far below 0.1 of the error bars used below (rates ~1e-3, j ~1e-3, m ~3e-3)
    ref = tsm.mesolve(pump_model, PUMP_TIMES[PUMP_TIMES >= T_BURN], observables=("j", "m", "n"))
    for name in ("j", "m", "n"):
        dev = np.abs(ref.get(name) - pump_steady.get(name)).max()
        assert dev < 1e-5, (name, dev)


def test_transfer_and_balance_rates_match_steadystate(pump_model, pump_steady, pump_run):
    g, gp = pump_model.gamma, pump_model.gamma_pump
    n = pump_steady.get("n")[0]
    c = pump_model.pump_site - 1
    exact = {"loss_left": g * n[0], "loss_right": g * n[-1], "pump": gp * (1 - n[c]),
             "loss_total": g * (n[0] + n[-1]), "net_right": g * (n[-1] - n[0])}
    # exact steady state itself: pump rate = total loss rate (docs/model.md section 7)
    assert exact["pump"] == pytest.approx(exact["loss_total"], rel=1e-8)

    cs = analysis.counting_statistics(pump_run.jumps, PUMP_NTRAJ, (T_BURN, T_END))
    q = cs.loc["net_to_hot"]
    assert q["rate"] == pytest.approx(q["mean"] / (T_END - T_BURN))
    assert abs(_z(q["rate"], exact["net_right"], q["rate_sem"])) < Z_TOL, q.to_dict()
    assert q["rate"] > 10 * q["rate_sem"]  # a resolved transfer, not a test of zero

    rates = analysis.steady_state_from_jumps(pump_run.jumps, PUMP_NTRAJ, T_BURN, T_END,
                                             model=pump_model)
    for key, val in exact.items():
        row = rates.loc[key]
        assert abs(_z(row["rate"], val, row["sem"])) < Z_TOL, (key, row.to_dict(), val)
        assert row["exact"] == pytest.approx(val, rel=1e-10, abs=1e-14)
    # pump rate = total loss rate, with the error of the per-trajectory difference
    bal = rates.loc["pump_minus_loss"]
    assert abs(bal["rate"]) < Z_TOL * bal["sem"]
    # that difference is the change of the magnon number, at most N per trajectory
    assert bal["sem"] < pump_model.N / (T_END - T_BURN) / math.sqrt(PUMP_NTRAJ)
    # both functions count the same jumps
    assert rates.loc["net_right", "rate"] == pytest.approx(q["rate"])
    assert rates.loc["pump", "rate"] == pytest.approx(cs.loc["pump", "rate"])


def test_time_average_from_trajectories_matches_steadystate(pump_run, pump_steady):
    ta = analysis.time_average(pump_run, None, T_BURN, ("j", "m")).set_index("observable")
    assert (ta["method"] == "trajectories").all()
    assert (ta["ntraj"] == PUMP_NTRAJ).all()
    assert (ta["npoints"] == int((PUMP_TIMES >= T_BURN).sum())).all()
    for name in ("j", "m"):
        mean, sem = ta.loc[name, "mean"], ta.loc[name, "sem"]
        exact = pump_steady.get(name)[0, 0]
        assert 0 < sem < 0.05 * abs(exact)
        assert abs(_z(mean, exact, sem)) < Z_TOL, (name, mean, exact, sem)
    # the time average beats a single time point: its sem is smaller than the
    # ensemble sem at the last time (autocorrelation only limits the gain)
    last = pump_run.expect[(pump_run.expect.t == T_END) & (pump_run.expect.observable == "j")]
    assert ta.loc["j", "sem"] < float(last["sem"].iloc[0])


def test_time_average_error_bars_cover(pump_model, pump_steady):
    zs = []
    for seed in range(10):
        res = tsm.mcsolve(pump_model, PUMP_TIMES, ntraj=150, seed=900 + seed, n_jobs=1,
                          observables=("j", "m"),
                          checkpoint=tsm.Checkpointing(keep_trajectories=True))
        ta = analysis.time_average(res, None, T_BURN).set_index("observable")
        for name in ("j", "m"):
            zs.append(_z(ta.loc[name, "mean"], pump_steady.get(name)[0, 0], ta.loc[name, "sem"]))
    zs = np.array(zs)
    # ~95% expected; >= 70% of 20 fails with probability ~1e-3 for correct error bars
    assert np.mean(np.abs(zs) < 2) >= 0.7, zs
    assert np.abs(zs).max() < 5, zs


def test_single_long_trajectory_batch_means(pump_model, pump_steady):
    times = np.linspace(0.0, 2000.0, 8001)
    res = tsm.mcsolve(pump_model, times, ntraj=1, seed=31, n_jobs=1, observables=("j", "m"),
                      checkpoint=tsm.Checkpointing(keep_trajectories=True))
    ta = analysis.time_average(res, None, T_BURN).set_index("observable")
    assert (ta["method"] == "batch_means").all()
    assert (ta["n_batches"] >= 10).all()
    for name in ("j", "m"):
        row = ta.loc[name]
        assert abs(_z(row["mean"], pump_steady.get(name)[0, 0], row["sem"])) < Z_TOL, row


def test_batch_means_and_autocorrelation_on_ar1():
    # AR(1): x_k = phi x_{k-1} + e_k has tau_int = (1 + phi) / (1 - phi) and a
    # known mean 0, so the batch-means z-scores must be ~ N(0, 1)
    phi, n, reps = 0.9, 20_000, 200
    rng = np.random.default_rng(5)
    e = rng.standard_normal((reps, n))
    x = np.empty_like(e)
    x[:, 0] = e[:, 0] / math.sqrt(1 - phi * phi)  # stationary start
    for k in range(1, n):
        x[:, k] = phi * x[:, k - 1] + e[:, k]
    tau = np.mean([analysis.integrated_autocorr_time(s) for s in x[:20]])
    assert tau == pytest.approx((1 + phi) / (1 - phi), rel=0.1)
    z = np.array([(bm.mean / bm.sem) for bm in map(analysis.batch_means, x)])
    # sd of the sample sd of 200 normal z-scores is ~0.05: 0.8..1.25 is > 4 sd
    assert 0.8 < z.std() < 1.25, z.std()
    assert np.mean(np.abs(z) < 2) >= 0.85
    bm = analysis.batch_means(x[0])
    assert bm.batch_length >= 10 * (1 + phi) / (1 - phi) * 0.8
    assert bm.n_batches == n // bm.batch_length


# --------------------------------------------------------------------------- waiting times
def test_first_waiting_time_is_exponential_with_pump_rate():
    gp = 0.62
    model = tsm.ChainModel(N=5, profile=tsm.UniformProfile(1.0), gamma=0.0, gamma_pump=gp,
                           initial="all_up")
    ntraj, t_end = 2000, 30.0  # P(no pump by t_end) = exp(-18.6): no censoring
    res = tsm.mcsolve(model, [0.0, t_end], ntraj=ntraj, seed=7, n_jobs=1, observables=("m",),
                      record_jumps=True)
    assert set(res.jumps.channel) == {"pump"}
    wt = analysis.waiting_times(res.jumps, channel="pump")
    first = wt.first["pump"]
    assert first.size == ntraj
    row = wt.summary.set_index(["channel", "which"]).loc[("pump", "first")]
    assert row["count"] == ntraj
    assert abs(_z(row["mean"], 1 / gp, row["sem"])) < Z_TOL, row.to_dict()
    # all-up state: the pump rate gamma_pump (1 - <n_c>) is exactly gamma_pump
    assert stats.kstest(first, "expon", args=(0.0, 1 / gp)).pvalue > 1e-3
    # later pumps happen at rate gamma_pump (1 - n_c) <= gamma_pump (the centre is
    # occupied right after a pump, and the chain fills up): longer waits on average,
    # and no trajectory pumps more than N magnons into the chain
    assert res.jumps.groupby("traj").size().max() <= model.N
    allrow = wt.summary.set_index(["channel", "which"]).loc[("pump", "all")]
    assert allrow["mean"] > row["mean"] + Z_TOL * math.hypot(allrow["sem"], row["sem"])


# --------------------------------------------------------------------------- hand-made table
def _hand_table():
    rows = [  # (traj, t, channel)
        (0, 0.5, "loss_right"), (0, 1.5, "loss_right"), (0, 2.0, "loss_left"),
        (0, 2.5, "pump"), (0, 4.9, "loss_right"), (0, 5.0, "loss_right"),
        (1, 3.0, "loss_left"),
        (3, 1.0, "pump"), (3, 4.0, "loss_right"),
    ]
    df = pd.DataFrame(rows, columns=["traj", "t", "channel"])
    df["site"] = df["channel"].map({"loss_left": 1, "loss_right": 5, "pump": 3})
    df["m_before"] = 1
    return df.sample(frac=1.0, random_state=3)  # any row order must work


def test_counting_statistics_on_hand_made_table():
    df = _hand_table()
    # window [1, 5): per trajectory (loss_left, loss_right, pump):
    # traj 0: L = 1 (2.0), R = 2 (1.5, 4.9), P = 1; traj 1: L = 1; traj 2: none;
    # traj 3: R = 1 (4.0), P = 1 (1.0, on t_a: included). 0.5 and 5.0 are outside.
    counts = analysis.jump_counts(df, 4, (1.0, 5.0))
    assert counts["loss_left"].tolist() == [1, 1, 0, 0]
    assert counts["loss_right"].tolist() == [2, 0, 0, 1]
    assert counts["pump"].tolist() == [1, 0, 0, 1]
    cs = analysis.counting_statistics(df, 4, (1.0, 5.0))
    # Q = R - L = [1, -1, 0, 1]: mean 1/4, var = (0.75^2 + 1.25^2 + 0.25^2 + 0.75^2) / 3
    q = cs.loc["net_to_hot"]
    assert q["mean"] == pytest.approx(0.25)
    assert q["var"] == pytest.approx(2.75 / 3)
    assert q["fano"] == pytest.approx((2.75 / 3) / 0.25)
    assert q["mean_sem"] == pytest.approx(math.sqrt(2.75 / 3 / 4))
    assert q["rate"] == pytest.approx(0.25 / 4.0)
    assert q["rate_sem"] == pytest.approx(math.sqrt(2.75 / 3 / 4) / 4.0)
    # total losses [3, 1, 0, 1]: mean 5/4, var = (1.75^2 + .25^2 + 1.25^2 + .25^2) / 3
    lt = cs.loc["loss_total"]
    assert lt["mean"] == pytest.approx(1.25)
    assert lt["var"] == pytest.approx(4.75 / 3)
    assert lt["fano"] == pytest.approx(4.75 / 3 / 1.25)
    assert cs.loc["pump", "var"] == pytest.approx(1 / 3)
    # cold/hot swapped: Q -> -Q, same variance, Fano uses |mean|
    left = analysis.counting_statistics(df, 4, (1.0, 5.0), hot="left").loc["net_to_hot"]
    assert left["mean"] == pytest.approx(-0.25)
    assert left["var"] == pytest.approx(2.75 / 3)
    assert left["fano"] == pytest.approx(q["fano"])
    # more trajectories without jumps: zeros join the sample
    q6 = analysis.counting_statistics(df, 6, (1.0, 5.0)).loc["net_to_hot"]
    assert q6["mean"] == pytest.approx(1 / 6)
    # bootstrap is reproducible for a fixed seed
    again = analysis.counting_statistics(df, 4, (1.0, 5.0))
    assert again.loc["net_to_hot", "var_err"] == q["var_err"]


def test_exit_sides_and_waiting_times_on_hand_made_table():
    df = _hand_table()
    ex = analysis.exit_sides(df, 4)
    # first losses: traj 0 right (0.5), traj 1 left (3.0), traj 2 none, traj 3 right (4.0)
    assert ex["count"].to_dict() == {"loss_right": 2, "loss_left": 1, "none": 1,
                                     "right_minus_left": 1}
    assert ex.loc["loss_right", "sem"] == pytest.approx(math.sqrt(0.5 * 0.5 / 4))
    assert ex.loc["right_minus_left", "sem"] == pytest.approx(
        math.sqrt((0.5 + 0.25 - 0.25**2) / 4))
    # Wilson interval for 2/4 is symmetric about 1/2
    assert ex.loc["loss_right", "ci_low"] + ex.loc["loss_right", "ci_high"] == pytest.approx(1.0)

    wt = analysis.waiting_times(df)
    np.testing.assert_allclose(wt.samples["loss_right"], [0.5, 1.0, 3.4, 0.1, 4.0])
    np.testing.assert_allclose(wt.first["loss_right"], [0.5, 4.0])
    np.testing.assert_allclose(wt.first["pump"], [2.5, 1.0])
    np.testing.assert_allclose(wt.samples["any"], [0.5, 1.0, 0.5, 0.5, 2.4, 0.1, 3.0, 1.0, 3.0])
    wt1 = analysis.waiting_times(df, channel="loss_right", t0=1.0)
    np.testing.assert_allclose(wt1.samples["loss_right"], [0.5, 3.4, 0.1, 3.0])
    s = wt1.summary.set_index("which")
    assert list(wt1.summary["channel"].unique()) == ["loss_right"]
    assert s.loc["all", "mean"] == pytest.approx(7.0 / 4)
    assert s.loc["all", "median"] == pytest.approx(1.75)
    # cluster-robust sem: trajectory sums (4.0, 3.0) over counts (3, 1), ratio 7/4
    resid = np.array([4.0 - 3 * 1.75, 3.0 - 1 * 1.75])
    assert s.loc["all", "sem"] == pytest.approx(math.sqrt(2 * np.sum(resid**2)) / 4)
    assert s.loc["first", "count"] == 2


def test_bootstrap_errors_on_poisson_counts():
    # Poisson counts: Fano factor 1; the error of the sample variance is
    # sqrt((mu4 - sigma^4) / n) with mu4 = lam + 3 lam^2 (to O(1/n))
    lam, n = 5.0, 4000
    rng = np.random.default_rng(17)
    k = rng.poisson(lam, n)
    df = pd.DataFrame({"traj": np.repeat(np.arange(n), k), "t": 1.0, "channel": "pump"})
    cs = analysis.counting_statistics(df, n, (0.0, 2.0)).loc["pump"]
    assert cs["var_err"] == pytest.approx(math.sqrt((lam + 3 * lam**2 - lam**2) / n), rel=0.15)
    assert abs(cs["fano"] - 1.0) < Z_TOL * cs["fano_err"]
    assert abs(cs["mean"] - lam) < Z_TOL * cs["mean_sem"]


# --------------------------------------------------------------------------- validation
def test_bad_input_is_rejected_with_named_fields():
    df = _hand_table()
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['channel'\]"):
        analysis.exit_sides(df.drop(columns="channel"), 4)
    with pytest.raises(ValueError, match="ntraj must be > the largest trajectory index"):
        analysis.exit_sides(df, 3)
    with pytest.raises(ValueError, match="ntraj must be >= 1, got 0"):
        analysis.exit_sides(df.iloc[:0], 0)
    with pytest.raises(ValueError, match="jumps.channel must hold channel names"):
        analysis.waiting_times(df.assign(channel=""))
    # a general chain's own channel names are accepted and counted
    other = analysis.jump_counts(df.assign(channel="dephasing@2"), 4, (0.0, 100.0))
    assert list(other.columns) == ["dephasing@2"]
    assert int(other["dephasing@2"].sum()) == len(df)
    with pytest.raises(ValueError, match="jumps.t must be >= 0"):
        analysis.waiting_times(df.assign(t=-1.0))
    with pytest.raises(ValueError, match="jumps must be a pandas DataFrame"):
        analysis.waiting_times([1, 2])
    with pytest.raises(ValueError, match="channel must be one of"):
        analysis.waiting_times(df, channel="loss")
    with pytest.raises(ValueError, match="t0 must be >= 0"):
        analysis.waiting_times(df, t0=-1)
    with pytest.raises(ValueError, match="t_window must satisfy t_a < t_b"):
        analysis.counting_statistics(df, 4, (5.0, 1.0))
    with pytest.raises(ValueError, match="hot must be 'right' or 'left'"):
        analysis.counting_statistics(df, 4, (1.0, 5.0), hot="up")
    with pytest.raises(ValueError, match="t_end must be > t_burn"):
        analysis.steady_state_from_jumps(df, 4, 3.0, 3.0)
    with pytest.raises(ValueError, match="batch means"):
        analysis.batch_means([1.0, 2.0])
    rows = {"rows": np.zeros((3, 5, 1)), "columns": {"m": (0, 1)}}
    with pytest.raises(ValueError, match="t_burn must be <= 4.0"):
        analysis.time_average(rows, np.arange(5.0), 5.0)
    with pytest.raises(ValueError, match="times must have one entry per row time"):
        analysis.time_average(rows, np.arange(4.0), 0.0)
    with pytest.raises(ValueError, match="observable must be one of"):
        analysis.time_average(rows, np.arange(5.0), 0.0, ("j",))
    res = tsm.steadystate(tsm.paper_model("pump", N=3))
    with pytest.raises(ValueError, match="keep_trajectories=True"):
        analysis.time_average(res, None, 0.0)


# --------------------------------------------------------------------------- CLI
def test_stats_command(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "--scenario", "pump", "--N", "5", "--times", "0:30:31", "--ntraj", "256",
               "--seed", "5", "--n-jobs", "1", "--record-jumps", "--out", str(out),
               "--no-compare", "--no-progress"])
    assert rc == 0
    assert (out / "jumps.parquet").exists() and (out / "jumps.csv").exists()
    capsys.readouterr()
    assert main(["stats", str(out / "jumps.parquet"), "--burn", "10"]) == 0
    text = capsys.readouterr().out
    for word in ("ntraj=256", "exit sides", "waiting times", "counting statistics in [10, 30)",
                 "loss_left", "loss_right", "pump", "net_to_hot", "right_minus_left",
                 "pump_minus_loss", "exact"):
        assert word in text, word
    assert main(["stats", str(out / "jumps.csv"), "--window", "5", "25", "--ntraj", "256"]) == 0
    assert "counting statistics in [5, 25)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, msg", [
    (["stats", "{tmp}/missing.parquet"], "table file does not exist"),
    (["stats", "{tmp}/plain.csv"], "--ntraj is needed"),
    (["stats", "{tmp}/plain.csv", "--ntraj", "1"], "ntraj must be > the largest"),
    (["stats", "{tmp}/plain.csv", "--ntraj", "4", "--window", "3", "1"], "t_a < t_b"),
])
def test_stats_command_bad_input(tmp_path, capsys, argv, msg):
    _hand_table().to_csv(tmp_path / "plain.csv", index=False)  # no metadata line
    rc = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("thermospin-mc: error: ")
    assert msg in err
