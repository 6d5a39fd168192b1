"""Protocols on the command line: ``[[stage]]`` tables in a ``--config`` TOML file
(docs/model.md 14, config.resolve_schedule).

``[model]`` is stage 0 from ``t = 0``; each ``[[stage]]`` table (stages 1, 2, ...
in file order) is ``[model]`` plus its own keys from its ``t`` on. Every stage
key obeys the one input rule (honoured, or refused with one line naming the
stage, exit status 2); ``--dry-run`` prints every resolved stage. Runs are small
(N = 4-5, a few hundred trajectories).

Statistical tolerance: trajectories agree with the exact protocol when every
``|z| < 5`` (rows share trajectories; with ~50 rows a correct run exceeds 5 with
probability ~3e-5, and the seed is fixed).
"""

from __future__ import annotations

import numpy as np
import pytest
from clitools import dry, one_line_error

import thermospin_mc as tsm
from thermospin_mc.app import cli

PULSE = """[model]
scenario = "pump"
N = 5
delta_T = 0.0
[[stage]]
t = 1.0
delta_T = 2.0
[[stage]]
t = 2.5
delta_T = 0.0
"""


def _config(tmp_path, text, name="run.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _pulse_schedule():
    a = tsm.paper_model("pump", N=5, delta_T=0.0)
    return tsm.Schedule([(0.0, a), (1.0, tsm.paper_model("pump", N=5, delta_T=2.0)),
                         (2.5, a)])


# --------------------------------------------------------------------------- dry run
def test_dry_run_prints_every_resolved_stage(capsys, tmp_path):
    rc, out, err = dry(["--config", _config(tmp_path, PULSE)], capsys, tmp_path)
    assert rc == 0, err
    want = _pulse_schedule()
    assert [s["stage"] for s in out["stages"]] == [0, 1, 2]
    assert [s["t"] for s in out["stages"]] == [0.0, 1.0, 2.5]
    for got, (_, model) in zip(out["stages"], want.stages, strict=True):
        assert tsm.ChainModel.from_dict(got["model"]) == model
    assert out["model"] == want.first.to_dict()  # [model] is stage 0
    # without stages the output has no "stages" key (unchanged for plain models)
    rc, plain, _ = dry(["--N", "5"], capsys, tmp_path)
    assert rc == 0 and "stages" not in plain


def test_stage_keys_override_model_and_flags_but_not_each_other(capsys, tmp_path):
    text = ('[model]\nN = 5\ndelta_T = 1.0\n'
            '[[stage]]\nt = 2.0\ngamma_pump = 1.5\n'
            '[[stage]]\nt = 3.0\ndelta_T = 3.0\n'
            '[[stage]]\nt = 4.0\ngamma = 0.5\n')
    rc, out, err = dry(["--config", _config(tmp_path, text), "--gamma", "2.0"], capsys,
                       tmp_path)
    assert rc == 0, err
    models = [tsm.ChainModel.from_dict(s["model"]) for s in out["stages"]]
    base = tsm.paper_model("pump", N=5, delta_T=1.0, gamma=2.0)
    assert models[0] == base
    assert models[1] == base.with_(gamma_pump=1.5)
    # stage 2 starts from [model] (and the flags), not from stage 1
    assert models[2] == tsm.paper_model("pump", N=5, delta_T=3.0, gamma=2.0)
    assert models[3] == base.with_(gamma=0.5)  # a stage key beats the flag


def test_stage_channel_tables_and_same_valued_keys(capsys, tmp_path):
    text = ('[model]\nscenario = "boundary"\nN = 4\n'
            '[[stage]]\nt = 1.0\nrate_in = 1.0\n'  # the default value: honoured, no change
            '[[stage]]\nt = 2.0\n'
            '[[stage.channel]]\nkind = "pump"\nsite = 1\nrate = 2.0\nname = "pump@1"\n'
            '[[stage.channel]]\nkind = "dephasing"\nsite = 2\nrate = 0.3\n')
    rc, out, err = dry(["--config", _config(tmp_path, text)], capsys, tmp_path)
    assert rc == 0, err
    chans = [[c["name"] for c in s["model"].get("channels", [])] for s in out["stages"]]
    assert chans == [["pump@1", "loss@4"], ["pump@1", "loss@4"], ["pump@1", "dephasing@2"]]
    assert out["stages"][1]["model"] == out["stages"][0]["model"]


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("stages, msg", [
    ("[[stage]]\nt = 4.0\ndelta_T = 1.0\n[[stage]]\nt = 3.0\ndelta_T = 0.0\n",
     "[[stage]] 2: t = 3 is not after stage 1's t = 4"),
    ("[[stage]]\nt = 4.0\ndelta_T = 1.0\n[[stage]]\nt = 4.0\ndelta_T = 0.0\n",
     "[[stage]] 2: t = 4 is not after stage 1's t = 4"),
    ("[[stage]]\nt = -1.0\ndelta_T = 1.0\n", "[[stage]] 1: t = -1 is negative"),
    ("[[stage]]\nt = 0.0\ndelta_T = 1.0\n", "[[stage]] 1: t = 0 would replace [model]"),
    ("[[stage]]\ndelta_T = 1.0\n", "[[stage]] 1 has no t"),
    ("[[stage]]\nt = 1.0\n[[stage]]\ndelta_T = 1.0\n", "[[stage]] 2 has no t"),
    ("[[stage]]\nt = 'soon'\n", "[[stage]] 1: t must be a finite number, got 'soon'"),
    ("[[stage]]\nt = true\n", "[[stage]] 1: t must be a finite number"),
    ("[[stage]]\nt = nan\n", "[[stage]] 1: t must be a finite number"),
    ("[[stage]]\nt = 1.0\nN = 6\n", "[[stage]] 1 (t = 1): N = 6 differs from [model]'s N = 5"),
    ("[[stage]]\nt = 1.0\nbogus = 1\n", "unknown key 'bogus' in [[stage]] 1"),
    ("[[stage]]\nt = 1.0\n[[stage]]\nt = 2.0\nntraj = 10\n",
     "unknown key 'ntraj' in [[stage]] 2"),
    ("[[stage]]\nt = 1.0\ninitial = [2]\n", "[[stage]] 1 (t = 1): initial does nothing"),
    ("[[stage]]\nt = 1.0\ninitial_p = '0.5,0,0,0,0'\n", "initial_p does nothing in a stage"),
    ("[[stage]]\nt = 1.0\ndelta_T = 'hot'\n", "[[stage]] 1 (t = 1): "),
    ("[[stage]]\nt = 1.0\ngamma = -1.0\n", "[[stage]] 1 (t = 1): gamma must be >= 0"),
    ("[[stage]]\nt = 1.0\nT = 1.0\n",
     "[[stage]] 1 (t = 1): --T (uniform temperature) cannot be combined with --delta-T"),
    ("[[stage]]\nt = 1.0\nscenario = 'nope'\n", "[[stage]] 1 (t = 1): --scenario must be"),
    ("[stage]\nt = 1.0\n", "must be [[stage]] tables"),
    ("[[stage]]\nt = 1.0\n[[stage.channel]]\nkind = 'loss'\nsite = 3\nrate = 1.0\n"
     "name = 'pump'\n",
     "stage 1: channel 'pump' is loss at site 3, but pump at site 3 in stage 0"),
])
def test_bad_stages_are_refused_in_one_line_naming_the_stage(stages, msg, capsys, tmp_path):
    text = '[model]\nN = 5\ndelta_T = 0.0\n' + stages
    rc, _, err = dry(["--config", _config(tmp_path, text)], capsys, tmp_path)
    assert one_line_error(rc, err), err
    assert msg in err, err


def test_model_stage_table_and_steady_solver_are_refused(capsys, tmp_path):
    rc, _, err = dry(["--config", _config(tmp_path, 'stage = [1, 2]\n[model]\nN = 5\n')],
                     capsys, tmp_path)
    assert one_line_error(rc, err) and "must be [[stage]] tables" in err, err
    rc, _, err = dry(["--config", _config(tmp_path, '[model]\nN = 5\n[[model.stage]]\nt = 1\n')],
                     capsys, tmp_path)
    assert one_line_error(rc, err) and "top-level [[stage]] tables" in err, err
    path = _config(tmp_path, PULSE + '[run]\nsolver = "steady"\n')
    rc, _, err = dry(["--config", path], capsys, tmp_path)
    assert one_line_error(rc, err), err
    assert "--solver steady: the [[stage]] tables make a time-dependent protocol" in err
    rc, _, err = dry(["--config", _config(tmp_path, PULSE), "--solver", "steady"], capsys,
                     tmp_path)
    assert one_line_error(rc, err) and "no steady state" in err, err


@pytest.mark.parametrize("command", ["fcs", "spectrum"])
def test_commands_of_one_generator_refuse_stages(command, capsys, tmp_path):
    rc = cli.main([command, "--config", _config(tmp_path, PULSE)])
    err = capsys.readouterr().err
    assert one_line_error(rc, err), err
    assert f"{command} needs one time-independent model" in err
    assert "read by 'thermospin-mc run' only" in err


# --------------------------------------------------------------------------- runs
def test_exact_run_of_a_protocol_equals_the_api(capsys, tmp_path):
    out = tmp_path / "exact"
    path = _config(tmp_path, PULSE + '[run]\nsolver = "exact"\ntimes = "0:4:9"\n'
                                     'observables = ["j", "m", "flow", "count"]\n')
    assert cli.main(["run", "--config", path, "--out", str(out), "--format", "csv"]) == 0
    text = capsys.readouterr().out
    assert "protocol of 3 stages" in text and "stage 1 from t = 1:" in text
    res = tsm.read_result(out)
    want = tsm.mesolve(_pulse_schedule(), np.linspace(0.0, 4.0, 9),
                       observables=["j", "m", "flow", "count"])
    assert np.allclose(res.expect["mean"].to_numpy(), want.expect["mean"].to_numpy(),
                       rtol=0, atol=1e-15)
    assert tsm.Schedule.from_dict(res.metadata["model"]) == _pulse_schedule()


def test_trajectory_run_of_a_protocol_agrees_with_the_exact_protocol(capsys, tmp_path):
    out = tmp_path / "mc"
    path = _config(tmp_path, PULSE.replace("N = 5", "N = 4\npump_site = 2")
                   + '[run]\ntimes = "0:4:9"\nntraj = 400\nseed = 3\nn_jobs = 1\n'
                     'progress = false\nrecord_jumps = true\n')
    assert cli.main(["run", "--config", path, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "trajectories vs exact (mesolve)" in text
    cmp = tsm.io.read_table(out / "compare.csv")[0]
    assert np.nanmax(np.abs(cmp["z"].to_numpy())) < 5.0
    res = tsm.read_result(out)
    sched = tsm.Schedule.from_dict(res.metadata["model"])
    assert sched.times.tolist() == [0.0, 1.0, 2.5] and sched.N == 4
    assert res.jumps is not None and len(res.jumps)
