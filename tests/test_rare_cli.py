"""``thermospin-mc rare`` (issue 24): theta(s) by cloning from the command line.

- the table is written (parquet and CSV with metadata, or one file) and read
  back with :func:`thermospin_mc.io.read_table`; its numbers are those of
  :func:`thermospin_mc.cloning` called with the same arguments, bit for bit,
  whatever ``--n-jobs`` (every cloning flag is passed through: a run with all
  of them set equals the API call with all of them);
- ``--exact`` adds the exact ``theta(s)`` (:func:`thermospin_mc.scgf`) and
  ``theta'(s)`` (central difference) with z-scores;
- the input rule of the command line: one line ``thermospin-mc: error: ...``,
  exit status 2, naming the flag, before anything is computed (also in
  ``--dry-run``, which computes nothing and prints the resolved run);
- a table that cannot be written is rescued (exit status 1, the line says where).

Sizes are tiny (N = 5, tens of clones, t of a few units): these tests check
the plumbing, ``tests/test_cloning.py`` the statistics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from clitools import one_line_error

import thermospin_mc as tsm
from thermospin_mc.app import cli, cli_rare, figure_settings, figures_counting
from thermospin_mc.io import read_table

#: dense LAPACK on one BLAS thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_blas_thread")

SMALL = ["--N", "5", "--counts", "pump=1", "--clones", "12", "--t", "4", "--populations", "3",
         "--seed", "5"]
S = [-1.0, -0.5, 0.5, 1.0]


def _rare(argv, capsys):
    rc = cli.main(["rare", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_rare_writes_the_table_equal_to_the_api_bit_for_bit(tmp_path, capsys):
    out = tmp_path / "res"
    rc, text, err = _rare([*SMALL, "--s", "-1,-0.5,0.5,1", "--n-jobs", "2", "--out", str(out)],
                          capsys)
    assert rc == 0, err
    assert "thermospin-mc rare  N=5" in text and f"wrote {out / 'rare.parquet'}" in text
    model = tsm.paper_model("pump", N=5)
    ref = tsm.cloning(model, {"pump": 1}, S, t=4.0, clones=12, seed=5, n_jobs=1,
                      populations=3)
    for name in ("rare.parquet", "rare.csv"):
        df, meta = read_table(out / name)
        assert list(df.columns) == list(ref.columns)
        if name.endswith(".parquet"):  # CSV keeps 17 significant digits, parquet every bit
            pd.testing.assert_frame_equal(df, ref, check_exact=True)
        else:
            pd.testing.assert_frame_equal(df, ref, check_exact=False, rtol=1e-15, atol=0)
        assert meta["solver"] == "rare" and meta["counts"] == {"pump": 1}
        assert meta["s"] == S and meta["clones"] == 12 and meta["t"] == 4.0
        assert meta["populations"] == 3 and meta["seed"] == 5 and meta["burn"] == 0.25
        assert meta["interval"] == pytest.approx(1 / (2 * 3.102 + 0.62))
        assert tsm.ChainModel.from_dict(meta["model"]) == model
    assert (out / "rare.meta.json").exists()


def test_every_cloning_flag_reaches_the_api(tmp_path, capsys):
    path = tmp_path / "one.csv"
    rc, text, err = _rare(["--N", "5", "--counts", "loss_right=1,loss_left=-1",
                           "--s=-0.7,0.4", "--clones", "16", "--t", "3", "--populations", "4",
                           "--interval", "0.25", "--burn", "0.1", "--extrapolate",
                           "--seed", "9", "--n-jobs", "1", "--out", str(path)], capsys)
    assert rc == 0, err
    assert "extrapolated in 1/clones" in text and "bias" in text
    ref = tsm.cloning(tsm.paper_model("pump", N=5), {"loss_right": 1, "loss_left": -1},
                      [-0.7, 0.4], t=3.0, clones=16, seed=9, populations=4, interval=0.25,
                      burn=0.1, extrapolate=True, n_jobs=2)
    df, meta = read_table(path)
    assert not (tmp_path / "one.parquet").exists()
    pd.testing.assert_frame_equal(df, ref, check_exact=False, rtol=1e-15, atol=0)
    assert np.isfinite(df["bias"]).all() and meta["extrapolate"] is True
    assert meta["interval"] == 0.25


def test_exact_columns_and_z_scores(tmp_path, capsys):
    out = tmp_path / "ex.parquet"
    rc, text, err = _rare([*SMALL, "--s", "-0.5,0,0.5", "--exact", "--out", str(out)], capsys)
    assert rc == 0, err
    df, _ = read_table(out)
    model = tsm.paper_model("pump", N=5)
    s = np.array([-0.5, 0.0, 0.5])
    h = cli_rare.SLOPE_STEP
    # (scgf continues from s = 0 through the fields it is given: the grid changes the
    # last digits)
    np.testing.assert_allclose(df["theta_exact"], tsm.scgf(model, {"pump": 1}, s), rtol=1e-10,
                               atol=1e-15)
    slope = (tsm.scgf(model, {"pump": 1}, s + h) - tsm.scgf(model, {"pump": 1}, s - h)) / (2 * h)
    np.testing.assert_allclose(df["current_exact"], slope, rtol=1e-7)
    # the mean pump rate of the steady state (c_1) at s = 0
    c1 = tsm.exact_counting_statistics(model, {"pump": 1}, order=1)["cumulant"].iloc[0]
    assert df["current_exact"].iloc[1] == pytest.approx(c1, rel=1e-6)
    z = (df["theta"] - df["theta_exact"]) / df["theta_sem"]
    np.testing.assert_allclose(df["theta_z"][[0, 2]], z[[0, 2]], rtol=1e-14)
    assert np.isnan(df["theta_z"].iloc[1])  # theta(0) = 0 exactly, sem 0
    for col in ("theta_exact", "theta_z", "current_exact", "current_z"):
        assert col in text


def test_dry_run_computes_nothing_and_prints_the_resolved_run(tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("computed in a dry run")

    monkeypatch.setattr(cli_rare, "cloning", boom)
    monkeypatch.setattr(cli_rare, "scgf", boom)
    out = tmp_path / "never"
    rc, text, err = _rare(["--dry-run", "--N", "5", "--exact", "--s=-1,1", "--out", str(out)],
                          capsys)
    assert rc == 0, err
    got = json.loads(text)
    assert got["model"]["N"] == 5
    run = got["rare"]
    assert run["counts"] == {"loss_left": -1, "loss_right": 1}  # fcs's default count
    assert run["s"] == [-1.0, 1.0] and run["clones"] == 1000 and run["t"] == 50.0
    assert run["exact"] is True and run["out"] == [str(out / "rare.parquet"),
                                                   str(out / "rare.csv")]
    assert not out.exists()


@pytest.mark.parametrize("argv, msg", [
    (["--counts", "nope=1"], "--counts names an unknown channel 'nope'"),
    (["--counts", "pump"], "--counts must be a list channel=integer"),
    (["--counts", "pump=1.5"], "--counts must be a list channel=integer"),
    (["--clones", "1"], "--clones must be >= 2, got 1"),
    (["--clones", "0"], "--clones must be >= 2"),
    (["--populations", "1"], "--populations must be >= 2"),
    (["--s", "nan"], "--s must be finite, got nan"),
    (["--s", "1,inf"], "--s must be finite, got inf"),
    (["--s=-inf"], "--s must be finite, got -inf"),
    (["--s", "1;2"], "--s must be a comma list of numbers"),
    (["--s", "a"], "--s must be a comma list of numbers"),
    (["--s", ","], "--s must list at least one number"),
    (["--t", "0"], "--t must be > 0.0, got 0.0"),
    (["--t", "-2"], "--t must be > 0.0, got -2.0"),
    (["--t", "inf"], "--t must be finite"),
    (["--interval", "0"], "--interval must be > 0.0"),
    (["--t", "2", "--interval", "3"], "--interval must be in (0, t = 2], got 3.0"),
    (["--burn", "0.5"], "--burn must be a fraction in [0, 0.5)"),
    (["--burn", "-0.1"], "--burn must be >= 0.0"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--n-jobs", "0"], "--n-jobs must be >= 1 or -1"),
    (["--N", "15", "--exact"], "--exact: the model (N = 15) is beyond the exact solvers' reach"),
    (["--scenario", "closed"], "the model has no jump channels"),
    (["--channel", "dephasing:2:1:d2", "--counts", "d2=1", "--exact"],
     "--exact: long-time statistics need a unique steady state"),
    (["--channel", "loss:1:1", "--channel", "pump:3:1"], "--counts is needed"),
    (["--clones", "x"], "argument --clones: invalid int value"),
])
@pytest.mark.parametrize("dry", [True, False])
def test_bad_input_is_refused_in_one_line_naming_the_flag(argv, msg, dry, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.setattr(cli_rare, "cloning", lambda *a, **k: pytest.fail("computed"))
    args = ["rare", *(["--dry-run"] if dry else []), "--out", str(tmp_path / "o"), *argv]
    if "--N" not in argv:
        args += ["--N", "5"]
    try:
        rc = cli.main(args)
    except SystemExit as exc:  # argparse's own refusals (one line, status 2)
        rc = exc.code
    err = capsys.readouterr().err
    assert one_line_error(rc, err), err
    assert msg in err, err


def test_run_keys_and_stages_of_a_config_are_refused(tmp_path, capsys):
    cfg = tmp_path / "r.toml"
    cfg.write_text("[model]\nN = 5\n[run]\nntraj = 10\n")
    rc, _, err = _rare(["--config", str(cfg), "--dry-run"], capsys)
    assert one_line_error(rc, err) and "rare reads only the [model] table" in err
    cfg.write_text("[model]\nN = 5\ncount = 1\n")
    rc, _, err = _rare(["--config", str(cfg), "--dry-run"], capsys)
    assert one_line_error(rc, err) and "count" in err
    cfg.write_text("[model]\nN = 5\nscenario = 'pump'\n[[stage]]\nt = 1.0\ngamma = 1.0\n")
    rc, _, err = _rare(["--config", str(cfg), "--dry-run"], capsys)
    assert one_line_error(rc, err) and "[[stage]]" in err


def test_output_location_is_checked_first_and_a_failed_write_is_rescued(
        tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setattr(cli_rare, "cloning", lambda *a, **k: pytest.fail("computed"))
    rc, _, err = _rare([*SMALL, "--out", str(blocker)], capsys)
    assert one_line_error(rc, err) and "is an existing file" in err
    monkeypatch.undo()
    real = cli_rare.write_table
    out = tmp_path / "out"

    def failing(df, path, meta):
        if Path(path).parent == out:
            raise OSError(28, "No space left on device", str(path))
        return real(df, path, meta)

    monkeypatch.setattr(cli_rare, "write_table", failing)
    rc, _, err = _rare([*SMALL, "--s", "0.5", "--out", str(out)], capsys)
    assert rc == 1 and err.count("\n") == 1 and "saved to" in err, err
    rescue = Path(err.split("saved to ")[1].split("'")[1])
    df, meta = read_table(rescue / "rare.parquet")
    assert meta["solver"] == "rare" and df["s"].tolist() == [0.5]


# --------------------------------------------------------------------------- reproduce rare
#: ``reproduce rare`` at test size (tests/test_rare_cli.py only checks the plumbing)
TINY = {"s": (-0.5, 0.5), "clones": 10, "t": 4.0, "populations": 3, "s_fine": (-0.5, 0.0, 0.5),
        "doob_s": (-1.0, 0.0, 1.0), "t_doob": 6.0, "n_times": 13, "burn": 2.0}


def test_reproduce_rare_cloning_half_equals_the_api():
    settings = figure_settings.Settings(N=5, seed=3, n_jobs=1)
    out = figures_counting.rare_cloning(settings, TINY)
    model = tsm.paper_model("pump", N=5)
    ref = tsm.cloning(model, figures_counting.RARE["counts"], [-0.5, 0.5], t=4.0, clones=10, seed=3,
                      populations=3, n_jobs=2)
    clo = out["cloning"]
    pd.testing.assert_frame_equal(clo[list(ref.columns)], ref, check_exact=True)
    theta = tsm.scgf(model, figures_counting.RARE["counts"], np.array([-0.5, 0.5]))
    np.testing.assert_allclose(clo["theta_exact"], theta, rtol=1e-10)
    np.testing.assert_allclose(clo["theta_z"], (clo["theta"] - theta) / clo["theta_sem"],
                               rtol=1e-9)
    fine = out["scgf"]
    assert fine["s"].tolist() == [-0.5, 0.0, 0.5] and abs(fine["theta"].iloc[1]) < 1e-12


def test_reproduce_rare_refuses_flags_it_does_not_use(tmp_path, capsys):
    rc = cli.main(["reproduce", "rare", "--delta-T", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert one_line_error(rc, err) and "--delta-T does nothing for rare" in err


def test_reproduce_rare_writes_tables_and_the_figure(tmp_path, capsys, monkeypatch):
    for key, val in TINY.items():
        monkeypatch.setitem(figures_counting.RARE, key, val)
    rc = cli.main(["reproduce", "rare", "--N", "5", "--ntraj", "12", "--n-jobs", "1",
                   "--no-progress", "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "rare.png").exists()
    doob, meta = read_table(tmp_path / "rare_doob.parquet")
    assert meta["figure"] == "rare" and doob["s"].tolist() == [-1.0, 0.0, 1.0]
    assert (doob["ntraj"] == 12).all() and np.isfinite(doob["current_exact"]).all()
    # s = 0: the Doob process is the chain itself, its rate the exact mean current
    c1 = tsm.exact_counting_statistics(tsm.paper_model("pump", N=5),
                                       figures_counting.RARE["counts"],
                                       order=1)["cumulant"].iloc[0]
    assert doob["current_exact"].iloc[1] == pytest.approx(c1, rel=1e-8)
    prof, _ = read_table(tmp_path / "rare_profile.csv")
    assert len(prof) == 15 and prof["n_exact"].between(0, 1).all()
    hist, _ = read_table(tmp_path / "rare_history.parquet")
    assert len(hist) == 3 * 13 * 5 and hist["n"].between(-1e-12, 1 + 1e-12).all()
    cloning_table, _ = read_table(tmp_path / "rare_cloning.parquet")
    assert cloning_table["clones"].eq(10).all()


def _readme_rare_lines() -> list[list[str]]:
    import shlex

    readme = Path(__file__).resolve().parents[1] / "README.md"
    out = []
    for raw in readme.read_text().splitlines():
        if raw.startswith("    ") and raw.strip().startswith("thermospin-mc rare"):
            out.append(shlex.split(raw.strip(), comments=True)[2:])
    return out


def test_readme_rare_command_lines_are_accepted(tmp_path, capsys, monkeypatch):
    lines = _readme_rare_lines()
    assert len(lines) >= 2
    monkeypatch.chdir(tmp_path)
    for argv in lines:
        rc = cli.main(["rare", *argv, "--dry-run"])
        assert rc == 0, (argv, capsys.readouterr().err)
