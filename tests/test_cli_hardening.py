"""Issue 21 item 5: the command line keeps its one input rule everywhere.

Every flag and key changes the run, or the run is refused with one line
``thermospin-mc: error: ...`` naming the flag, before anything is computed;
the references printed next to trajectories are the exact values of the same
quantity (same window, every observable); exact solvers take one BLAS thread
unless told otherwise; a Dask scheduler that does not answer fails fast.

Statistical tolerances: a trajectory estimate agrees with its exact value when
``|z| < 4`` (two-sided probability 6e-5 per row for a correct, normally
distributed estimator; the seeds are fixed, so a pass is reproducible).
"""

from __future__ import annotations

import errno
import importlib
import json
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from clitools import SMALL, dry, one_line_error

import thermospin_mc as tsm
from thermospin_mc import _threads, analysis
from thermospin_mc.app import cli
from thermospin_mc.io import read_table
from thermospin_mc.trajectories import backends

Z_TOL = 4.0


# --------------------------------------------------------------------------- 1: stats rates
# pump + loss, N = 5, window [1, 4): the chain is still filling up, so the mean
# rates over the window differ from the steady-state rates by several error bars
# (loss_right: 0.207 vs 0.262, sem 0.007 with 1000 trajectories): a steady-state
# reference fails this test, the exact rates of the same window pass it
STATS_RUN = ["--N", "5", "--times", "0:4:9", "--ntraj", "1000", "--seed", "7", "--n-jobs", "1",
             "--no-progress", "--no-compare", "--record-jumps"]


def _exact_window_rates(model, t_a, t_b) -> dict:
    """Mean jump rate of each channel over [t_a, t_b]: expected counts from mesolve."""
    df = tsm.mesolve(model, [t_a, t_b], observables=["count"]).expect
    out = {}
    for name in ("loss_left", "loss_right", "pump"):
        c = df.loc[df["observable"] == f"count:{name}", "mean"].to_numpy()
        out[name] = (c[1] - c[0]) / (t_b - t_a)
    loss = out["loss_left"] + out["loss_right"]
    return {**out, "loss_total": loss, "net_right": out["loss_right"] - out["loss_left"],
            "pump_minus_loss": out["pump"] - loss}


def test_stats_rates_are_compared_with_the_exact_rates_of_the_same_window(
        tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert cli.main(["run", *STATS_RUN, "--out", str(out)]) == 0
    capsys.readouterr()
    seen = []
    real = analysis.steady_state_from_jumps

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(analysis, "steady_state_from_jumps", spy)
    assert cli.main(["stats", str(out / "jumps.parquet"), "--burn", "1"]) == 0
    text = capsys.readouterr().out
    assert "rates per unit time in [1, 4); exact: mean rates over the same window" in text
    assert "counting statistics in [1, 4)" in text
    rates = seen[0]
    model = tsm.paper_model("pump", N=5)
    exact = _exact_window_rates(model, 1.0, 4.0)
    for key, val in exact.items():
        row = rates.loc[key]
        assert row["exact"] == pytest.approx(val, rel=1e-10, abs=1e-14), key
        assert abs(row["z"]) < Z_TOL, (key, row.to_dict())
    # the window is a transient: the steady state would be a wrong reference here
    ss = tsm.steadystate(model, observables=["n"]).get("n")[0]
    steady_right = model.gamma * ss[-1]
    assert abs(rates.loc["loss_right", "rate"] - steady_right) > 5 * rates.loc["loss_right",
                                                                              "sem"]
    # the cumulants in the same output use the same window and the exact state at its start
    assert "net spin to the hot side in [1, 4)" in text


def test_window_rates_from_the_api_equal_the_exact_counts():
    model = tsm.paper_model("pump", N=5)
    run = tsm.mcsolve(model, np.linspace(0, 4, 9), ntraj=300, seed=2, n_jobs=1,
                      observables=["m"], record_jumps=True)
    rates = analysis.steady_state_from_jumps(run.jumps, 300, 0.0, 4.0, model=model,
                                             reference="window")
    exact = _exact_window_rates(model, 0.0, 4.0)
    assert rates["exact"].to_dict() == pytest.approx(exact, rel=1e-10, abs=1e-14)
    with pytest.raises(ValueError, match="reference must be 'steady' or 'window'"):
        analysis.steady_state_from_jumps(run.jumps, 300, 0.0, 4.0, model=model,
                                         reference="later")


# --------------------------------------------------------------------------- 2: run compare
COMPARED = ["--N", "5", "--times", "0:2:5", "--ntraj", "400", "--seed", "3", "--n-jobs", "1",
            "--no-progress", "--observables", "j,m,nn,pm,count", "--pairs", "1-3"]
COMPARED_NAMES = ("j", "m", "nn", "pm_re", "pm_im", "count:loss_left", "count:loss_right",
                  "count:pump")


def _expected_compare(out: Path) -> pd.DataFrame:
    res = tsm.read_result(out)
    ref = tsm.mesolve(tsm.paper_model("pump", N=5), np.linspace(0, 2, 5),
                      observables=["j", "m", "nn", "pm", "count"], pairs=[(1, 3)])
    return res.compare(ref)


def test_run_compares_every_observable_and_writes_the_table(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", *COMPARED, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    expected = _expected_compare(out)
    assert set(expected["observable"]) == set(COMPARED_NAMES)
    # plain CSV (pandas reads it as it is) and parquet with the run's metadata
    plain = pd.read_csv(out / "compare.csv")
    pd.testing.assert_frame_equal(plain, expected.reset_index(drop=True), check_exact=False,
                                  rtol=1e-12, atol=1e-14)
    table, meta = read_table(out / "compare.parquet")
    pd.testing.assert_frame_equal(table, expected.reset_index(drop=True), check_exact=False,
                                  rtol=1e-12, atol=1e-14)
    assert meta["seed"] == 3 and meta["table"] == "compare"
    assert meta["reference"]["solver"] == "mesolve"
    assert json.loads((out / "compare.meta.json").read_text())["ntraj"] == 400
    # every z is of a correct run
    assert (expected["z"].abs() < Z_TOL).all()
    # the summary: one line per observable (rows, max |z|, rows with |z| > 3), short
    lines = text.splitlines()
    for name in COMPARED_NAMES:
        sub = expected[expected["observable"] == name]
        row = [ln.split() for ln in lines if ln.split()[:1] == [name]]
        assert row, name
        assert int(row[-1][1]) == len(sub)
        assert float(row[-1][2]) == pytest.approx(sub["z"].abs().max(), abs=0.006)
        assert int(row[-1][3]) == int((sub["z"].abs() > 3).sum())
    assert any(ln.startswith("all ") for ln in lines)
    assert len(lines) < 45
    assert f"wrote {out / 'compare.csv'}" in text


def test_compare_table_follows_the_format_and_the_rescue_rule(tmp_path, capsys, monkeypatch):
    out = tmp_path / "csv_only"
    assert cli.main(["run", *COMPARED, "--format", "csv", "--out", str(out)]) == 0
    capsys.readouterr()
    assert (out / "compare.csv").exists() and not (out / "compare.parquet").exists()
    # no comparison asked: no table
    assert cli.main(["run", *SMALL, "--no-compare", "--out", str(tmp_path / "none")]) == 0
    capsys.readouterr()
    assert not list((tmp_path / "none").glob("compare.*"))
    # a write that fails: the comparison is rescued with the results
    calls = {"n": 0}
    real = tsm.Result.to_parquet

    def full_disk(self, directory, prefix=""):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(directory))
        return real(self, directory, prefix)

    monkeypatch.setattr(tsm.Result, "to_parquet", full_disk)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    rc = cli.main(["run", *COMPARED, "--out", str(tmp_path / "full")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "saved to" in err
    rescue = Path(err.split("saved to ")[1].split("'")[1])
    for name in ("compare.parquet", "compare.csv", "compare.meta.json", "expect.parquet"):
        assert (rescue / name).exists(), name
    pd.testing.assert_frame_equal(pd.read_csv(rescue / "compare.csv"),
                                  read_table(rescue / "compare.parquet")[0],
                                  check_exact=False, rtol=1e-15)


# --------------------------------------------------------------------------- 3: messages
@pytest.mark.parametrize("argv, msg", [
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--times", "-1:2:3"], "--times must be >= 0.0 everywhere, got minimum -1.0"),
    (["--times=-1:2:3"], "--times must be >= 0.0 everywhere, got minimum -1.0"),
    (["--times", "-1,2"], "--times must be >= 0.0 everywhere"),
    (["--times", "2,1"], "--times must be non-decreasing"),
    (["--solver", "exact", "--times", "-1:2:3"], "--times must be >= 0.0 everywhere"),
    (["--T1", "-1e-3"], "T1 must be >= 0.0, got -0.001"),
    (["--ntraj", "0"], "--ntraj must be >= 1, got 0"),
    (["--n-jobs", "-2"], "--n-jobs must be >= 1 or -1 (all cores), got -2"),
    # what mcsolve refuses before it computes, refused by the dry run as well
    (["--max-ntraj", "5000"], "max_ntraj only applies with target_sem"),
    (["--target-observables", "m"], "target_observables needs target_sem"),
    (["--scheduler", "tcp://127.0.0.1:1", "--backend", "loky"], "backend must be 'dask'"),
    (["--max-magnons", "99"], "max_magnons must be <= 7, got 99"),
    (["--target-sem", "1%", "--rel-floor", "1.5"], "rel_floor must be"),
    (["--target-sem", "1e-3", "--target-observables", "nn"], "target_observables must be"),
    (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
    (["--time-limit", "-5"], "time_limit must be > 0.0"),
])
def test_dry_run_refuses_what_the_run_refuses_naming_the_flag(argv, msg, capsys, tmp_path):
    rc, _, err = dry(argv, capsys, tmp_path)
    assert one_line_error(rc, err), err
    assert msg in err, err


def test_negative_values_reach_their_flag(capsys, tmp_path):
    # legitimate negative values are accepted, in both spellings
    rc, a, err = dry(["--fields", "-1,0,0,0,0,0,0.5"], capsys, tmp_path)
    assert rc == 0, err
    assert a["model"]["fields"] == [-1.0, 0, 0, 0, 0, 0, 0.5]
    rc, b, err = dry(["--fields=-1,0,0,0,0,0,0.5"], capsys, tmp_path)
    assert rc == 0 and a == b, err
    rc, c, err = dry(["--anisotropy", "-0.5"], capsys, tmp_path)
    assert rc == 0 and c["model"]["anisotropy"] == -0.5, err
    # an unknown option is still an unknown option
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--bogus", "1"])
    assert exc.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_stats_and_fcs_name_their_flags(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", *SMALL, "--record-jumps", "--no-compare", "--out", str(out)]) == 0
    capsys.readouterr()
    jumps = str(out / "jumps.parquet")
    for argv, msg in (
            (["stats", jumps, "--window", "-1e-3", "2"], "--window[0] must be >= 0.0"),
            (["stats", jumps, "--burn", "-1"], "--burn must be >= 0.0, got -1.0"),
            (["stats", jumps, "--window", "3", "1"], "--window must satisfy t_a < t_b"),
            (["fcs", "--N", "5", "--order", "0"], "--order must be >= 1, got 0"),
            (["fcs", "--N", "5", "--t", "-2"], "--t must be >= 0.0, got -2.0"),
            (["fcs", "--N", "5", "--t", "2", "--t0", "-1"], "--t0 must be >= 0.0, got -1.0"),
            (["fcs", "--N", "5", "--n-jobs", "0"], "--n-jobs must be >= 1 or -1"),
            (["fcs", "--N", "5", "--counts", "nowhere=1"], "--counts names an unknown channel"),
            (["fcs", "--jumps", jumps, "--window", "1", "4", "--order", "4"],
             "--order must be 2 or 3 with --jumps")):
        rc = cli.main(argv)
        err = capsys.readouterr().err
        assert one_line_error(rc, err) and msg in err, (argv, err)


# --------------------------------------------------------------------------- 4: TOML rule
@pytest.mark.parametrize("text, msg", [
    ('[model]\nN = 5\n[[channel]]\nkind = "loss"\nsite = 1\nrate = 1.0\n',
     "top-level [[channel]] tables in"),
    ('[[channel]]\nkind = "loss"\nsite = 1\nrate = 1.0\n', "write them as [[model.channel]]"),
    ('[[model.channel]]\nkind = "loss"\nsite = 1\nrate = 1.0\n[[channel]]\nkind = "pump"\n'
     'site = 3\nrate = 1.0\n', "write them as [[model.channel]]"),
    # [[stage]] tables are a protocol (tests/test_schedule_cli.py); other names are refused
    ("[[stages]]\nt = 1.0\n", "unknown top-level key 'stages'"),
    ("N = 5\n", "put it under the [model] table"),
    ("ntraj = 5\n", "put it under the [run] table"),
    ('[run]\nseed = -3\n', "--seed must be >= 0, got -3"),
    ('[run]\nseed = []\n', "--seed must be an integer >= 0 or a non-empty list"),
])
def test_toml_keys_outside_model_and_run_are_refused(text, msg, capsys, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    rc, _, err = dry(["--config", str(path)], capsys, tmp_path)
    assert one_line_error(rc, err), err
    assert msg in err, err


def test_model_channel_tables_equal_the_flags_and_are_documented(capsys, tmp_path):
    path = tmp_path / "ch.toml"
    path.write_text('[model]\nN = 5\n[[model.channel]]\nkind = "loss"\nsite = 1\nrate = 1.0\n'
                    '[[model.channel]]\nkind = "pump"\nsite = 3\nrate = 0.5\nname = "in"\n')
    rc, a, err = dry(["--config", str(path)], capsys, tmp_path)
    assert rc == 0, err
    rc, b, _ = dry(["--N", "5", "--channel", "loss:1:1", "--channel", "pump:3:0.5:in"], capsys,
                   tmp_path)
    assert rc == 0 and a == b
    # the same channels as strings in [model] (the --channel syntax)
    path.write_text('[model]\nN = 5\nchannel = ["loss:1:1", "pump:3:0.5:in"]\n')
    rc, c, _ = dry(["--config", str(path)], capsys, tmp_path)
    assert rc == 0 and c == a
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "[[model.channel]]" in help_text and "[[channel]]" not in help_text
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "[[model.channel]]" in readme
    # the only top-level [[channel]] in the README is the one it refuses
    assert readme.count("[[channel]]") == 1
    assert "a top-level `[[channel]]`: write `[[model.channel]]`" in " ".join(readme.split())


# --------------------------------------------------------------------------- 5: fcs defaults
def test_fcs_default_counts_fit_the_scenario(capsys, tmp_path):
    out = tmp_path / "b.csv"
    assert cli.main(["fcs", "--scenario", "boundary", "--N", "5", "--order", "3",
                     "--out", str(out)]) == 0
    assert "counts={'loss@5': 1}" in capsys.readouterr().out
    model = tsm.boundary_driven(5, 1.0, 1.0)
    got = pd.read_csv(out)["cumulant"].to_numpy()
    ref = tsm.exact_counting_statistics(model, {"loss@5": 1}, order=3)["cumulant"]
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)
    # the spin carried through the chain: in the long run the pump at site 1 counts the same
    pump = tsm.exact_counting_statistics(model, {"pump@1": 1}, order=3)["cumulant"]
    np.testing.assert_allclose(got, pump, rtol=1e-9, atol=1e-12)
    assert got[0] > 0.1
    # the paper's scenarios keep the net spin to the right
    out2 = tmp_path / "p.csv"
    assert cli.main(["fcs", "--N", "5", "--order", "2", "--out", str(out2)]) == 0
    capsys.readouterr()
    ref2 = tsm.exact_counting_statistics(tsm.paper_model("pump", N=5),
                                         {"loss_right": 1, "loss_left": -1}, order=2)
    np.testing.assert_allclose(pd.read_csv(out2)["cumulant"], ref2["cumulant"], rtol=1e-12)
    # a channel set of one's own has no default; a closed chain nothing to count
    for argv, msg in ((["--channel", "loss:2:1"], "--counts is needed"),
                      (["--scenario", "closed"], "no jump channels")):
        rc = cli.main(["fcs", "--N", "5", *argv])
        err = capsys.readouterr().err
        assert one_line_error(rc, err) and msg in err, err
    with pytest.raises(SystemExit):
        cli.main(["fcs", "--help"])
    assert "loss@N=1 for --scenario boundary" in " ".join(capsys.readouterr().out.split())


# --------------------------------------------------------------------------- 6: BLAS threads
def test_exact_solvers_default_to_one_blas_thread(capsys, tmp_path, monkeypatch):
    for argv, n_jobs, exact in ((["--solver", "exact"], 1, 1), (["--solver", "steady"], 1, 1),
                                (["--solver", "exact", "--n-jobs", "2"], 2, 2),
                                ([], -1, 1), (["--n-jobs", "2"], 2, 2)):
        rc, got, err = dry(argv, capsys, tmp_path)
        assert rc == 0, err
        assert (got["run"]["n_jobs"], got["run"]["exact_n_jobs"]) == (n_jobs, exact), argv
    calls = []

    def spy(fn):
        def wrapped(*args, **kwargs):
            calls.append((fn.__name__, kwargs.get("n_jobs")))
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(cli, "mesolve", spy(cli.mesolve))
    monkeypatch.setattr(cli, "steadystate", spy(cli.steadystate))
    for argv in (["--solver", "exact", "--times", "0:1:3"], ["--solver", "steady"],
                 ["--times", "0:1:3", "--ntraj", "64", "--no-progress"]):
        assert cli.main(["run", "--N", "5", *argv, "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    assert calls == [("mesolve", 1), ("steadystate", 1), ("mesolve", 1)]
    # fcs: the exact solver runs with the threads it is given, 1 by default
    seen = []
    fcs = importlib.import_module("thermospin_mc.fcs")
    real = fcs._long_time_rates

    def probe(*args, **kwargs):
        seen.append(_threads.current())
        return real(*args, **kwargs)

    monkeypatch.setattr(fcs, "_long_time_rates", probe)
    assert cli.main(["fcs", "--N", "5", "--order", "2"]) == 0
    assert cli.main(["fcs", "--N", "5", "--order", "2", "--n-jobs", "2"]) == 0
    capsys.readouterr()
    assert seen == [1, 2]


# --------------------------------------------------------------------------- 7: Dask
def test_a_scheduler_that_does_not_answer_fails_fast_with_one_line(capsys, tmp_path):
    pytest.importorskip("distributed")
    assert backends.DASK_CONNECT_TIMEOUT <= 5.0
    t0 = time.perf_counter()
    rc = cli.main(["run", *SMALL, "--scheduler", "tcp://127.0.0.1:1",
                   "--out", str(tmp_path / "o")])
    wall = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert one_line_error(rc, err), err
    assert "could not connect to the Dask scheduler at 'tcp://127.0.0.1:1' within 5 s" in err
    assert wall < 10.0  # the 5 s connect timeout plus start-up; distributed's default is 30 s


def test_local_dask_cluster_has_no_dashboard_and_no_port_warning(monkeypatch, recwarn):
    pytest.importorskip("distributed")
    monkeypatch.delenv(backends.DASHBOARD_ENV, raising=False)
    taken = socket.socket()
    try:
        taken.bind(("", 8787))  # another cluster's dashboard port (if it is free now)
        taken.listen()
    except OSError:
        pass  # already taken by something else: the same situation
    try:
        cluster = backends._local_cluster(1)
        try:
            # the scheduler's HTTP endpoints on a free loopback port, no dashboard pages
            http = cluster.scheduler.http_server
            assert http.port != 8787 and http.address == "127.0.0.1"
        finally:
            cluster.close()
    finally:
        taken.close()
    assert not [w for w in recwarn if "already in use" in str(w.message)]
