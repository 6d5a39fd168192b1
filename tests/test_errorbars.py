"""Error-bar rules in one place: the stop rule, per-row z-scores and the global
goodness of fit agree, and the goodness of fit is calibrated (uniform p-values
on correct runs) and sensitive (a 5% wrong rate is rejected)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import thermospin_mc as tsm
from thermospin_mc.core.errorbars import GROUPS, ONE_EVENT, signflip_fit

KINDS = ("j", "j_bond", "flow", "m", "n", "nn", "pm_re", "pm_im", "count")


def _small():
    return tsm.ChainModel(N=4, profile=tsm.LinearProfile(T1=0.0, T2=2.0), initial="all_up",
                          channels=[tsm.Loss(site=1, rate=1.0), tsm.Pump(site=2, rate=0.6),
                                    tsm.Loss(site=4, rate=0.8)])


@pytest.mark.parametrize("kind", KINDS)
def test_target_sem_stops_on_the_rows_effective_sem_for_every_kind(kind):
    # the stop rule and Result.effective_sem are one rule: the achieved value the
    # run reports is the worst effective sem of the target rows of its own table
    model = _small()
    times = np.linspace(0.0, 2.0, 5)
    obs = ["j", "j_bond", "flow", "m", "n", "nn", "pm", "count"]
    res = tsm.mcsolve(model, times, ntraj=64, seed=5, observables=obs, pairs=[(1, 3)],
                      target=tsm.Target(sem=0.08, observables=(kind,), max_ntraj=64 * 40),
                      cluster=tsm.Cluster(progress=False))
    meta = res.metadata
    e = res.expect
    eff = res.effective_sem()
    rows = (e["t"].to_numpy() > 0) & np.array(
        [o == kind or (kind == "count" and o.startswith("count:")) for o in e["observable"]])
    assert rows.sum() > 0
    assert meta["achieved_sem"] == pytest.approx(eff[rows].max(), rel=1e-12)
    assert meta["stopped_by"] in ("target_sem", "max_ntraj")
    if meta["stopped_by"] == "target_sem":
        assert eff[rows].max() <= 0.08
        # one block fewer would not have met the target: the run is the shortest one
        assert meta["ntraj"] >= 64


def test_relative_target_on_counts():
    model = _small()
    times = np.linspace(0.0, 2.0, 5)
    res = tsm.mcsolve(model, times, ntraj=128, seed=2, observables=["count"],
                      target=tsm.Target(sem=0.1, relative=True, max_ntraj=64 * 30),
                      cluster=tsm.Cluster(progress=False))
    e = res.expect
    rows = e["t"].to_numpy() > 0
    mean = np.abs(e["mean"].to_numpy())
    # every channel's count is one component of the observable "count" (as the
    # sites are of n): the floor is relative to the largest count of any channel
    keep = rows & (mean > 0) & (mean >= 0.25 * mean[rows].max())
    rel = res.effective_sem()[keep] / mean[keep]
    assert res.metadata["achieved_sem"] == pytest.approx(rel.max(), rel=1e-12)


def test_count_rows_have_a_one_event_floor():
    assert ONE_EVENT["count"] == 1.0
    from thermospin_mc.core.errorbars import effective_sem
    assert effective_sem("count:pump", 2, 0.0, 100)[0] == pytest.approx(0.01)


# --------------------------------------------------------------------------- groups
def test_groups_are_bit_identical_across_workers_and_batches():
    model = _small()
    times = np.linspace(0.0, 2.0, 6)
    a = tsm.mcsolve(model, times, ntraj=700, seed=9, cluster=tsm.Cluster(progress=False))
    b = tsm.mcsolve(model, times, ntraj=700, seed=9, n_jobs=2,
                    cluster=tsm.Cluster(batch_size=128, progress=False))
    assert np.array_equal(a.groups["count"], b.groups["count"])
    assert np.array_equal(a.groups["mean"], b.groups["mean"])
    # 700 trajectories: 11 blocks, the last one short, one group each
    assert a.groups["count"].shape == (11, len(a.expect))
    assert int(a.groups["count"][:, 0].sum()) == 700
    # the groups' weighted mean is the table's mean
    g = a.groups
    pooled = (g["count"] * g["mean"]).sum(axis=0) / g["count"].sum(axis=0)
    np.testing.assert_allclose(pooled, a.expect["mean"].to_numpy(), rtol=1e-12, atol=1e-14)


def test_groups_survive_extension_save_read_and_merge(tmp_path):
    model = _small()
    times = np.linspace(0.0, 2.0, 6)
    ck = tmp_path / "run.npz"
    tsm.mcsolve(model, times, ntraj=600, seed=4, checkpoint=tsm.Checkpointing(path=ck),
                cluster=tsm.Cluster(progress=False))
    ext = tsm.mcsolve(model, times, ntraj=64 * GROUPS + 200, seed=4,
                      checkpoint=tsm.Checkpointing(path=ck), cluster=tsm.Cluster(progress=False))
    plain = tsm.mcsolve(model, times, ntraj=64 * GROUPS + 200, seed=4,
                        cluster=tsm.Cluster(progress=False))
    assert np.array_equal(ext.groups["mean"], plain.groups["mean"])
    assert np.array_equal(ext.groups["count"], plain.groups["count"])
    assert plain.groups["count"].shape[0] == GROUPS  # blocks wrap round the groups
    plain.save(tmp_path / "out")
    back = tsm.read_result(tmp_path / "out")
    assert np.array_equal(back.groups["mean"], plain.groups["mean"])
    other = tsm.mcsolve(model, times, ntraj=640, seed=5, cluster=tsm.Cluster(progress=False))
    both = plain + other
    assert both.groups["count"].shape[0] == GROUPS + 10
    pooled = (both.groups["count"] * both.groups["mean"]).sum(axis=0) / \
        both.groups["count"].sum(axis=0)
    np.testing.assert_allclose(pooled, both.expect["mean"].to_numpy(), rtol=1e-11,
                               atol=1e-13)


# --------------------------------------------------------------------------- goodness of fit
def test_goodness_of_fit_is_uniform_on_correct_runs():
    # 24 seeds of a correct run against the exact solution, and against an
    # independent run of the same model: p-values uniform (KS at the 1% level;
    # fixed seeds, so the outcome is reproducible)
    model = _small()
    times = np.linspace(0.0, 3.0, 7)
    ref = tsm.mesolve(model, times)
    p_exact, p_pair = [], []
    for seed in range(24):
        a = tsm.mcsolve(model, times, ntraj=768, seed=seed, cluster=tsm.Cluster(progress=False))
        b = tsm.mcsolve(model, times, ntraj=768 + 64 * (seed % 3), seed=100 + seed,
                        cluster=tsm.Cluster(progress=False))
        p_exact.append(a.goodness_of_fit(ref)["p_value"])
        p_pair.append(a.goodness_of_fit(b)["p_value"])
    assert stats.kstest(p_exact, "uniform").pvalue > 0.01
    assert stats.kstest(p_pair, "uniform").pvalue > 0.01
    # and the per-row z-scores of those runs are strongly correlated: the
    # effective number of independent rows is far below the row count
    g = a.goodness_of_fit(ref)
    assert g["rows"] > 3 * g["dof"]


def test_goodness_of_fit_rejects_a_five_percent_wrong_rate():
    model = tsm.paper_model("pump", N=5)
    wrong = tsm.paper_model("pump", N=5, gamma_pump=0.62 * 1.05)
    times = np.linspace(0.0, 10.0, 21)
    run = tsm.mcsolve(model, times, ntraj=8192, seed=1, n_jobs=2,
                      cluster=tsm.Cluster(progress=False))
    right = run.goodness_of_fit(tsm.mesolve(model, times))
    bad = run.goodness_of_fit(tsm.mesolve(wrong, times))
    assert bad["p_value"] < 1e-3
    assert right["p_value"] > 1e-3


def test_signflip_is_exact_for_few_groups():
    # with 2^G patterns enumerated the p-value is a multiple of 2^-G, and an
    # exactly symmetric configuration (one group deviating) gives the largest one
    rng = np.random.default_rng(0)
    dev = rng.normal(size=(8, 5))
    out = signflip_fit(dev, np.full(8, 64.0), np.zeros(5))
    assert out["flips"] == 2**8
    assert (out["p_value"] * 2**8) == pytest.approx(round(out["p_value"] * 2**8))
    # a common shift far beyond the spread is the most extreme pattern (with its mirror)
    out = signflip_fit(dev * 1e-3 + 1.0, np.full(8, 64.0), np.zeros(5))
    assert out["p_value"] == pytest.approx(2 / 2**8)


def test_goodness_of_fit_refusals():
    model = _small()
    times = np.linspace(0.0, 1.0, 3)
    ref = tsm.mesolve(model, times)
    with pytest.raises(ValueError, match="trajectory groups"):
        ref.goodness_of_fit(ref)
    few = tsm.mcsolve(model, times, ntraj=200, seed=1, cluster=tsm.Cluster(progress=False))
    with pytest.raises(ValueError, match="at least 6 independent"):
        few.goodness_of_fit(ref)
    with pytest.raises(ValueError, match="flips"):
        few.goodness_of_fit(ref, flips=0)


def test_cli_prints_the_goodness_of_fit_of_its_own_tables(tmp_path, capsys):
    from thermospin_mc.app.cli import main

    out = tmp_path / "o"
    rc = main(["run", "--N", "4", "--pump-site", "2", "--times", "0:2:5", "--ntraj", "640",
               "--n-jobs", "1", "--seed", "3", "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.startswith("goodness of fit"))
    res = tsm.read_result(out)
    model = tsm.paper_model("pump", N=4, pump_site=2)
    fit = res.goodness_of_fit(tsm.mesolve(model, res.times))
    assert f"p = {fit['p_value']:.3g}" in line
    assert f"{fit['groups']} trajectory groups" in line


def test_merge_pools_trajectory_states_by_their_trajectories():
    model = tsm.boundary_driven(4, 1.0, 0.7)
    times = np.linspace(0.0, 2.0, 3)
    a = tsm.mcsolve(model, times, 640, seed=1, states=True, observables=["m"],
                    cluster=tsm.Cluster(progress=False))
    b = tsm.mcsolve(model, times, 1280, seed=2, states=True, observables=["m"],
                    cluster=tsm.Cluster(progress=False))
    ab = a + b
    for k in range(times.size):
        for m, B in ab.states[k].blocks.items():
            want = (640 * a.states[k].blocks[m] + 1280 * b.states[k].blocks[m]) / 1920
            np.testing.assert_allclose(B, want, rtol=0, atol=1e-15)
        # the pooled state's magnetisation is the pooled table's
        e = ab.expect
        mag = e.loc[e["t"] == times[k], "mean"].iloc[0]
        pops = ab.states[k].populations()
        assert mag == pytest.approx(model.N / 2 - sum(m * p for m, p in pops.items()),
                                    abs=1e-12)
