"""The command line and TOML files: every input honoured or refused, nothing lost."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from clitools import SMALL, dry, one_line_error

import thermospin_mc as tsm
from thermospin_mc.app import cli, config
from thermospin_mc.io import read_table

# --------------------------------------------------------------------------- flag matrix
# Every flag of `run` with a value that differs from its default: the flag must either
# change the resolved model/run (dry run) or be refused with exit 2 and one line.
CHANGES = [
    ["--scenario", "loss"], ["--N", "6", "--pump-site", "3"], ["--profile", "step"],
    ["--T1", "0.5"], ["--T2", "3"], ["--delta-T", "1"], ["--T", "1.5"],
    ["--couplings", "1,1.1,1.2,1.3,1.4,1.5"], ["--bond-temperatures", "0,1,1,1,1,2"],
    ["--gamma", "2"], ["--gamma-pump", "0.3"], ["--pump-site", "3"], ["--initial", "2,6"],
    ["--alpha-method", "sommerfeld"], ["--anisotropy", "0.5"], ["--times", "0:1:3"],
    ["--solver", "exact"], ["--observables", "j,n"], ["--n-jobs", "1"], ["--format", "csv"],
    ["--ntraj", "100"], ["--seed", "5"], ["--batch-size", "128"], ["--record-jumps"],
    ["--max-magnons", "3"], ["--no-compare"], ["--no-progress"],
    ["--checkpoint", "{tmp}/ck.npz"], ["--checkpoint", "{tmp}/ck.npz", "--resume"],
    ["--checkpoint", "{tmp}/ck.npz", "--checkpoint-every", "5"], ["--target-sem", "1e-3"],
    ["--target-sem", "1e-3", "--target-observables", "m"],
    ["--target-sem", "1e-3", "--max-ntraj", "50000"], ["--time-limit", "60"],
    ["--target-sem", "1%", "--rel-floor", "0.5"],
    ["--backend", "serial"], ["--scheduler", "tcp://127.0.0.1:1"], ["--out", "{tmp}/other"],
    ["--config", "{tmp}/run.toml"], ["--scenario", "boundary"],
    ["--scenario", "boundary", "--rate-in", "0.5"], ["--scenario", "boundary", "--rate-out", "2"],
    ["--channel", "loss:1:1", "--channel", "pump:3:0.5"], ["--dephasing", "0.2"],
    ["--dephasing", "0.2", "--dephasing-sites", "2,3"], ["--fields", "0,0,0,0,0,0,1"],
    ["--anisotropy", "0.5,1,1,1,1,1"], ["--initial-p", "0,0,0.5,0.5,0.5,0,0"],
    ["--pairs", "1-3"], ["--pairs", "1-3,2-5", "--observables", "nn,pm"],
    ["--initial-mixture", "4:0.5; 3,5:0.5"], ["--initial-mixture", ":0.2; 4:0.8"],
    ["--operator", "mine=x1 x3 + 0.5*z2"], ["--operator", "a=z1", "--operator", "b=+1 -2"],
    ["--states"], ["--solver", "exact", "--states"],
]
REFUSED = [
    (["--T", "1", "--T1", "0.5"], "cannot be combined with --T1"),
    (["--T", "1", "--profile", "linear"], "cannot be combined with --profile linear"),
    (["--profile", "uniform"], "--profile uniform needs --T"),
    (["--T1", "0", "--T2", "2", "--delta-T", "2"], "at most two of --T1, --T2, --delta-T"),
    (["--T1", "-1"], "T1 must be >= 0.0, got -1.0"),
    (["--couplings", "1,1,1,1,1,1", "--T2", "3"], "cannot be combined with --couplings"),
    (["--couplings", "1,1,1,1,1,1", "--alpha-method", "thermodynamic"],
     "--alpha-method cannot be combined with --couplings"),
    (["--couplings", "1,1"], "couplings must have N - 1 = 6 values, got 2"),
    (["--N", "8"], "pump_site must be given for even N (N = 8)"),
    (["--scenario", "loss", "--pump-site", "3"], "--pump-site does nothing without a pump"),
    (["--solver", "exact", "--ntraj", "100"], "--ntraj does nothing with --solver exact"),
    (["--solver", "exact", "--seed", "3"], "--seed does nothing with --solver exact"),
    (["--solver", "steady", "--record-jumps"], "--record-jumps does nothing"),
    (["--solver", "steady", "--times", "0:1:3"], "--times does nothing with --solver steady"),
    (["--solver", "exact", "--checkpoint", "{tmp}/ck.npz"], "--checkpoint does nothing"),
    (["--solver", "exact", "--no-compare"], "--no-compare does nothing"),
    (["--resume"], "--resume needs --checkpoint"),
    (["--target-sem", "1e-3", "--rel-floor", "0.5"], "--rel-floor only acts with a relative"),
    (["--checkpoint-every", "5"], "--checkpoint-every needs --checkpoint"),
    (["--n-jobs", "0"], "--n-jobs must be >= 1 or -1 (all cores), got 0"),
    (["--times", "a:b"], "--times must be"),
    (["--target-sem", "abc"], "--target-sem must be a number"),
    (["--initial", "x"], "--initial must be 'all_up' or comma-separated magnon sites"),
    (["--initial", "9"], "initial magnon site must be in 1..7, got 9"),
    (["--out", "{tmp}/afile"], "is an existing file, not a directory"),
    (["--out", "{tmp}/afile/sub"], "cannot create output directory"),
    (["--checkpoint", "{tmp}/afile/ck.npz"], "cannot write"),
    (["--config", "{tmp}/missing.toml"], "config file not found"),
    (["--gamma", "-1"], "gamma must be >= 0.0, got -1.0"),
    (["--N", "1"], "N must be >= 2, got 1"),
    (["--channel", "loss:1:1", "--gamma", "2"], "--gamma cannot be combined with channel"),
    (["--channel", "loss:9:1"], "loss site must be <= 7, got 9"),
    (["--channel", "hop:1:1"], "channel kind must be one of"),
    (["--channel", "loss:1"], "--channel must be KIND:SITE:RATE[:NAME]"),
    (["--channel", "loss:1:-1"], "loss rate must be > 0.0, got -1.0"),
    (["--rate-in", "2"], "--rate-in only applies to --scenario boundary"),
    (["--scenario", "boundary", "--gamma", "1"], "the boundary scenario uses --rate-in"),
    (["--dephasing-sites", "2"], "--dephasing-sites needs --dephasing RATE"),
    (["--dephasing", "-1"], "dephasing rate must be > 0.0"),
    (["--fields", "1,2"], "fields"),
    (["--anisotropy", "1,2"], "anisotropy"),
    (["--initial-p", "0.5,0.5"], "p"),
    (["--initial-p", "0,0,0,0,0,0,2"], "probabilit"),
    (["--initial", "3", "--initial-p", "0,0,0,0,0,0,1"], "give one initial state"),
    (["--initial-p", "0,0,0,0,0,0,1", "--initial-mixture", "3:1"], "give one initial state"),
    (["--initial-mixture", "3"], "--initial-mixture must be 'SITES:WEIGHT; ...'"),
    (["--initial-mixture", "9:1"], "9"),
    (["--pairs", "1-9", "--observables", "nn"], "pair sites must be integers in 1..7"),
    (["--pairs", "1-3", "--observables", "j"], "--pairs does nothing without a two-point"),
    (["--observables", "nn"], "need pairs"),
    (["--solver", "steady", "--observables", "count"], "got 'count' (with --solver steady)"),
    (["--observables", "norm"], "got 'norm' (with --solver mc)"),
    (["--operator", "mine"], "--operator must be NAME=TERMS"),
    (["--operator", "mine=q1"], "--operator mine: text: unknown letter 'q'"),
    (["--operator", "n=z1"], "clashes with a built-in"),
]
# refused by mcsolve itself (the same checks and messages as the Python API), before
# anything is computed
REFUSED_AT_START = [
    (["--max-ntraj", "5000"], "max_ntraj only applies with target_sem"),
    (["--target-observables", "m"], "target_observables needs target_sem"),
    (["--scheduler", "tcp://127.0.0.1:1", "--backend", "loky"], "backend must be 'dask'"),
    (["--observables", "j,bogus"], "observable must be one of"),
    (["--max-magnons", "99"], "max_magnons must be <= 5, got 99"),
    (["--target-sem", "1%", "--rel-floor", "1.5"], "rel_floor must be"),
]


def _fill(argv, tmp):
    return [a.format(tmp=tmp) for a in argv]


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "afile").write_text("not a directory")
    (tmp_path / "run.toml").write_text('[model]\nN = 5\n[run]\nntraj = 64\n')
    return tmp_path


def test_every_run_flag_is_in_the_matrix():
    parser = cli._Parser(prog="thermospin-mc")
    sub = parser.add_subparsers()
    cli._add_run(sub)
    run = sub.choices["run"]
    flags = {o for a in run._actions for o in a.option_strings if o.startswith("--")}
    covered = {a for argv in CHANGES for a in argv if a.startswith("--")}
    covered |= {a for argv, _ in REFUSED + REFUSED_AT_START for a in argv if a.startswith("--")}
    missing = flags - covered - {"--help", "--dry-run"}
    assert not missing, f"flags without a matrix entry: {sorted(missing)}"
    # and every flag is a TOML key of [model] or [run] (except --config and --dry-run)
    keys = {f[2:].replace("-", "_") for f in flags} - {"help", "dry_run", "config",
                                                       "no_compare", "no_progress"}
    assert keys | {"compare", "progress"} == set(config.MODEL_KEYS) | set(config.RUN_KEYS)


@pytest.mark.parametrize("argv", CHANGES, ids=lambda a: " ".join(a))
def test_flag_changes_the_resolved_run(argv, capsys, workdir):
    rc0, base, _ = dry([], capsys, workdir)
    rc, got, err = dry(_fill(argv, workdir), capsys, workdir)
    assert rc0 == 0 and rc == 0, err
    assert got != base


@pytest.mark.parametrize("argv, msg", REFUSED, ids=lambda a: " ".join(a) if isinstance(a, list)
                         else "")
def test_flag_refused_with_one_line(argv, msg, capsys, workdir):
    rc, _, err = dry(_fill(argv, workdir), capsys, workdir)
    assert one_line_error(rc, err), err
    assert msg in err


@pytest.mark.parametrize("argv, msg", REFUSED_AT_START,
                         ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_flag_refused_when_the_run_starts(argv, msg, capsys, workdir, monkeypatch):
    def no_kernel(*a, **k):  # refusals must come before any trajectory is computed
        raise AssertionError("a trajectory batch ran")

    monkeypatch.setattr("thermospin_mc.trajectories.batches.run_batch", no_kernel)
    rc = cli.main(["run", *SMALL, "--out", str(workdir / "o"), *argv])
    err = capsys.readouterr().err
    assert one_line_error(rc, err), err
    assert msg in err


def test_temperature_flags_build_the_profile_they_name(capsys, tmp_path):
    def model(*argv):
        rc, got, err = dry(list(argv), capsys, tmp_path)
        assert rc == 0, err
        return got["model"]

    assert model("--T2", "3")["profile"] == {"kind": "linear", "T1": 0.0, "T2": 3.0}
    assert model("--T1", "1", "--T2", "3")["profile"] == {"kind": "linear", "T1": 1.0,
                                                          "T2": 3.0}
    assert model("--T1", "1")["profile"] == {"kind": "linear", "T1": 1.0, "T2": 3.0}
    assert model("--T2", "3", "--delta-T", "1")["profile"]["T1"] == 2.0
    assert model("--T", "1.5")["profile"] == {"kind": "uniform", "T": 1.5}
    assert model("--scenario", "closed", "--T2", "1")["profile"] == {"kind": "step",
                                                                     "T1": 0.0, "T2": 1.0}
    # the couplings really follow the profile: uniform T gives one a(T) on every bond
    a = np.array(model("--T", "1.5")["couplings"])
    np.testing.assert_allclose(a, tsm.alpha_ratio(1.5, N=7), rtol=0, atol=1e-15)
    # the same keys in TOML give the same model as the flags
    toml = tmp_path / "t.toml"
    toml.write_text('[model]\nT1 = 1.0\nT2 = 3.0\nN = 5\n')
    assert model("--config", str(toml)) == model("--T1", "1", "--T2", "3", "--N", "5")


def test_cli_model_equals_the_api_model():
    m = cli.build_model({"scenario": "loss", "N": 9, "T1": 0.5, "T2": 2.5, "gamma": 1.0})
    ref = tsm.ChainModel(N=9, profile=tsm.LinearProfile(0.5, 2.5), gamma=1.0,
                         initial=tsm.magnons(5))
    assert m == ref
    assert cli.build_model({}) == tsm.paper_model("pump")
    assert cli.build_model({"scenario": "closed"}) == tsm.paper_model("closed")


@pytest.mark.parametrize("text, msg", [
    ("N = 5\n", "unknown top-level key 'N'"),
    ("[model]\nntraj = 5\n", "unknown key [model].ntraj"),
    ("[run]\nbogus = 1\n", "unknown key [run].bogus"),
    ("[extra]\nx = 1\n", "unknown top-level key 'extra'"),
    ("model = 3\n", "'model' in"),
    ("[model]\nN = '7'\n", "N must be an integer, got '7'"),
    ("[model]\nT = 1.0\nT1 = 0.5\n", "cannot be combined with --T1"),
    ("[run]\nsolver = 'steady'\nntraj = 10\n", "--ntraj does nothing with --solver steady"),
    ("[model\n", "is not valid TOML"),
])
def test_toml_keys_refused_with_one_line(text, msg, capsys, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    rc, _, err = dry(["--config", str(path)], capsys, tmp_path)
    assert one_line_error(rc, err), err
    assert msg in err


def test_toml_and_flags_agree_key_by_key(capsys, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[model]\nscenario = "loss"\nN = 9\ndelta_T = 1.0\ngamma = 2.0\n'
                    '[run]\ntimes = "0:10:11"\nntraj = 500\nseed = 4\nrecord_jumps = true\n'
                    'observables = ["j", "m"]\n')
    rc1, a, _ = dry(["--config", str(path)], capsys, tmp_path)
    rc2, b, _ = dry(["--scenario", "loss", "--N", "9", "--delta-T", "1", "--gamma", "2",
                     "--times", "0:10:11", "--ntraj", "500", "--seed", "4", "--record-jumps",
                     "--observables", "j,m"], capsys, tmp_path)
    assert rc1 == rc2 == 0 and a == b
    # flags override the file
    rc3, c, _ = dry(["--config", str(path), "--N", "7"], capsys, tmp_path)
    assert rc3 == 0 and c["model"]["N"] == 7


# --------------------------------------------------------------------------- output safety
def test_bad_output_is_refused_before_computing(tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")

    def boom(*a, **k):
        raise AssertionError("computed although the output location is unusable")

    monkeypatch.setattr(tsm, "mcsolve", boom)
    monkeypatch.setattr(tsm, "mesolve", boom)
    for out in ("afile", "afile/sub"):
        rc = cli.main(["run", *SMALL, "--out", str(tmp_path / out)])
        err = capsys.readouterr().err
        assert one_line_error(rc, err) and str(tmp_path / "afile") in err
        assert "Errno" not in err


def test_failed_write_rescues_the_results(tmp_path, capsys, monkeypatch):
    calls = {"n": 0}
    real = tsm.Result.to_parquet

    def full_disk(self, directory, prefix=""):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(directory))
        return real(self, directory, prefix)

    monkeypatch.setattr(tsm.Result, "to_parquet", full_disk)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    rc = cli.main(["run", "--solver", "exact", "--N", "5", "--times", "0:2:3",
                   "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert "no space left on device" in err and "saved to" in err
    rescue = Path(err.split("saved to ")[1].split("'")[1])
    assert rescue.parent == tmp_path / "tmp"
    saved = tsm.read_result(rescue)
    ref = tsm.mesolve(tsm.paper_model("pump", N=5), np.linspace(0, 2, 3))
    pd.testing.assert_frame_equal(saved.expect, ref.expect, check_exact=True)


def test_broken_pipe_ends_quietly(tmp_path):
    cmd = [sys.executable, "-m", "thermospin_mc.cli", "run", "--solver", "steady", "--N", "5",
           "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is printed
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert (tmp_path / "out" / "expect.parquet").exists()  # the results were written first


# --------------------------------------------------------------------------- files
def test_written_tables_load_back(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", *SMALL, "--record-jumps", "--out", str(out)]) == 0
    capsys.readouterr()
    res = tsm.read_result(out)
    assert res.metadata["ntraj"] == 64 and res.jumps is not None and len(res.jumps)
    # CSV is a plain table: pandas reads it without options, equal to the parquet copy
    plain = pd.read_csv(out / "expect.csv")
    pd.testing.assert_frame_equal(plain, read_table(out / "expect.parquet")[0],
                                  check_exact=True)
    csv_res = tsm.read_result(out / "expect.csv")
    assert csv_res.metadata == res.metadata
    pd.testing.assert_frame_equal(csv_res.jumps, res.jumps, check_exact=True)
    # the loader and tsm.io are reachable in a fresh interpreter
    code = ("import thermospin_mc as tsm, sys; r = tsm.read_result(sys.argv[1]); "
            "s = tsm.Result(*tsm.io.read_table(sys.argv[1] + '/expect.parquet')); "
            "print(r.metadata['ntraj'], len(s.expect))")
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["64", str(len(res.expect))]


def test_old_csv_with_a_comment_line_is_still_read(tmp_path):
    meta = {"solver": "mesolve", "ntraj": 0}
    path = tmp_path / "expect.csv"
    path.write_text("# thermospin_mc: " + json.dumps(meta) + "\nt,observable,site,mean,sem,"
                    "ntraj\n0.0,m,0,2.5,0.0,0\n")
    df, got = read_table(path)
    assert got == meta and df["mean"].tolist() == [2.5]


# --------------------------------------------------------------------------- usability
def test_version_help_defaults_and_one_line_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == \
        f"thermospin-mc {tsm.__version__}"
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--ntraj", "many"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "see '" in err
    # --help shows the default of every option that takes a value
    parser = cli._Parser(prog="thermospin-mc")
    sub = parser.add_subparsers()
    cli._add_run(sub)
    lacking = [a.option_strings[0] for a in sub.choices["run"]._actions
               if a.option_strings and a.nargs != 0
               and a.option_strings[0] not in ("--config", "--checkpoint", "--target-sem",
                                               "--scheduler", "--T", "--couplings",
                                               "--bond-temperatures", "--channel",
                                               "--initial-p", "--pairs",
                                               "--initial-mixture")
               and "default" not in (a.help or "")]
    assert not lacking, lacking
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    assert "(default: 20000)" in " ".join(capsys.readouterr().out.split())


def test_exact_solvers_use_the_blas_threads_they_are_given():
    from threadpoolctl import threadpool_info

    from thermospin_mc._threads import blas_threads

    seen = []

    @blas_threads
    def probe():
        seen.append({p["num_threads"] for p in threadpool_info()
                     if p["user_api"] == "blas"})

    probe()
    probe(n_jobs=2)
    if any(p["user_api"] == "blas" for p in threadpool_info()):
        assert seen[0] == {1} and seen[1] <= {1, 2}
    with pytest.raises(ValueError, match="n_jobs must be >= 1 or -1"):
        tsm.steadystate(tsm.paper_model("pump", N=5), n_jobs=0)
    # the thread count never changes the numbers
    a = tsm.steadystate(tsm.paper_model("pump", N=5)).expect["mean"].to_numpy()
    b = tsm.steadystate(tsm.paper_model("pump", N=5), n_jobs=2).expect["mean"].to_numpy()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)


def test_docs_shipped_next_to_the_code():
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    assert "docs/model.md" in readme and "../shared" not in readme
    assert (root / "docs" / "model.md").exists() and (root / "LICENSE").exists()
    assert os.path.getsize(root / "docs" / "model.md") > 2000


@pytest.mark.parametrize("argv, msg", [
    (["fig2", "--ntraj", "100"], "--ntraj does nothing for fig2 (used by fig5, fig6)"),
    (["fig3", "--gamma-pumps", "0.1"], "--gamma-pumps does nothing for fig3 (used by fig6)"),
    (["fig2", "fig4", "--seed", "3"], "--seed does nothing for fig2, fig4"),
    (["fig3", "--out", "{tmp}/afile"], "is an existing file"),
])
def test_reproduce_refuses_flags_its_figures_do_not_use(argv, msg, capsys, workdir):
    rc = cli.main(["reproduce", *_fill(argv, workdir)])
    err = capsys.readouterr().err
    assert one_line_error(rc, err), err
    assert msg in err


def test_general_chain_from_toml_equals_flags_and_api(capsys, tmp_path):
    path = tmp_path / "general.toml"
    path.write_text('[model]\nN = 5\nscenario = "boundary"\nanisotropy = 0.5\n'
                    'fields = [0.0, 0.1, 0.2, 0.3, 0.4]\n'
                    '[[model.channel]]\nkind = "pump"\nsite = 1\nrate = 0.7\n'
                    '[[model.channel]]\nkind = "loss"\nsite = 5\nrate = 1.3\nname = "drain"\n'
                    '[[model.channel]]\nkind = "dephasing"\nsite = 3\nrate = 0.2\n'
                    '[run]\nsolver = "steady"\npairs = [[1, 3]]\nobservables = ["j", "nn"]\n')
    rc1, a, err = dry(["--config", str(path)], capsys, tmp_path)
    rc2, b, _ = dry(["--N", "5", "--scenario", "boundary", "--anisotropy", "0.5", "--fields",
                     "0,0.1,0.2,0.3,0.4", "--channel", "pump:1:0.7", "--channel",
                     "loss:5:1.3:drain", "--channel", "dephasing:3:0.2", "--solver", "steady",
                     "--pairs", "1-3", "--observables", "j,nn"], capsys, tmp_path)
    assert rc1 == rc2 == 0 and a == b, err
    api = tsm.ChainModel(N=5, profile=tsm.UniformProfile(0.0), anisotropy=0.5,
                         fields=[0.0, 0.1, 0.2, 0.3, 0.4],
                         channels=[tsm.Pump(1, 0.7), tsm.Loss(5, 1.3, name="drain"),
                                   tsm.Dephasing(3, 0.2)])
    assert a["model"] == api.to_dict()
    # the run itself: the steady state the CLI writes is the API's
    out = tmp_path / "out"
    assert cli.main(["run", "--config", str(path), "--out", str(out)]) == 0
    capsys.readouterr()
    got = tsm.read_result(out).expect
    ref = tsm.steadystate(api, observables=("j", "nn"), pairs=[(1, 3)]).expect
    pd.testing.assert_frame_equal(got.reset_index(drop=True), ref.reset_index(drop=True),
                                  check_exact=False, rtol=0, atol=1e-13)
    assert set(got["observable"]) == {"j", "nn"} and got["site2"].max() == 3
    # boundary preset from flags equals tsm.boundary_driven
    rc, c, _ = dry(["--scenario", "boundary", "--N", "6", "--rate-in", "0.4"], capsys, tmp_path)
    assert rc == 0 and c["model"] == tsm.boundary_driven(6, 0.4, 1.0).to_dict()


def test_api_checkpoint_in_an_unusable_place_is_refused_in_words(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError, match="afile.* is an existing file, not a directory") as exc:
        tsm.mcsolve(tsm.paper_model("pump", N=5), [0.0, 1.0], ntraj=64, seed=1,
                    checkpoint=tsm.Checkpointing(path=tmp_path / "afile" / "ck.npz"))
    assert "Errno" not in str(exc.value)


# --------------------------------------------------------------------------- fcs command
def _fcs_table(argv, capsys, tmp_path):
    out = tmp_path / "fcs.csv"
    rc = cli.main(["fcs", "--N", "5", *argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    return pd.read_csv(out)


def test_fcs_flags_change_the_numbers_or_are_refused(capsys, tmp_path):
    base = _fcs_table([], capsys, tmp_path)
    assert list(base["order"]) == [1, 2, 3, 4]
    ref = tsm.exact_counting_statistics(tsm.paper_model("pump", N=5),
                                        {"loss_right": 1, "loss_left": -1}, order=4)
    np.testing.assert_allclose(base["cumulant"], ref["cumulant"], rtol=1e-12, atol=1e-15)
    for argv in (["--order", "2"], ["--counts", "pump=1"], ["--t", "2"], ["--t", "2", "--t0", "1"],
                 ["--delta-T", "1"], ["--T", "1"], ["--scenario", "boundary", "--counts",
                                                    "loss@5=1"], ["--gamma-pump", "1"]):
        got = _fcs_table(argv, capsys, tmp_path)
        assert len(got) != len(base) or not np.allclose(got["cumulant"], base["cumulant"]), argv
    for argv, msg in ((["--ntraj", "5"], "--ntraj only acts with --jumps"),
                      (["--window", "0", "1"], "--window only acts with --jumps"),
                      (["--t0", "1"], "--t0 only acts with --t"),
                      (["--T", "1", "--T1", "0"], "cannot be combined with --T1"),
                      (["--counts", "pump"], "--counts must be a list channel=integer")):
        rc = cli.main(["fcs", "--N", "5", *argv])
        err = capsys.readouterr().err
        assert one_line_error(rc, err) and msg in err, (argv, err)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nN = 5\n[run]\nntraj = 10\n")
    rc = cli.main(["fcs", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert one_line_error(rc, err) and "fcs reads only the [model] table" in err
    # at Delta T = 0 the net-spin current vanishes: no Fano factor is claimed
    assert cli.main(["fcs", "--N", "5", "--T", "1", "--order", "2"]) == 0
    assert "undefined (c1 vanishes to round-off)" in capsys.readouterr().out


def test_initial_mixture_from_flags_and_toml_equals_the_api(capsys, tmp_path):
    rc, a, err = dry(["--scenario", "loss", "--N", "5", "--initial-mixture",
                      ":0.2; 3:0.5; 2,4:0.3"], capsys, tmp_path)
    assert rc == 0, err
    path = tmp_path / "m.toml"
    path.write_text('[model]\nscenario = "loss"\nN = 5\ninitial_mixture = [\n'
                    '  {sites = [], weight = 0.2}, {sites = [3], weight = 0.5},\n'
                    '  {sites = [2, 4], weight = 0.3}]\n')
    rc, b, err = dry(["--config", str(path)], capsys, tmp_path)
    assert rc == 0 and a == b, err
    api = tsm.paper_model("loss", N=5).with_(
        initial=tsm.mixture({(): 0.2, (3,): 0.5, (2, 4): 0.3}))
    assert a["model"] == api.to_dict()
