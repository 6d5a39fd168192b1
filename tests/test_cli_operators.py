"""``--operator`` / ``[[run.operator]]`` and ``--states`` on the command line and in TOML."""

from __future__ import annotations

import numpy as np
import pytest
from clitools import SMALL, dry, one_line_error

import thermospin_mc as tsm
from thermospin_mc.app import cli

EXACT = ["--scenario", "boundary", "--N", "5", "--dephasing", "0.3", "--times", "0:2:5",
         "--solver", "exact"]


def model_of_exact():
    return tsm.with_dephasing(tsm.boundary_driven(5, 1.0, 1.0), 0.3)


def run(argv, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["run", "--out", str(out), *argv])
    cap = capsys.readouterr()
    return rc, out, cap


def test_exact_run_with_operators_and_states(tmp_path, capsys):
    rc, out, cap = run([*EXACT, "--observables", "j", "--operator", "mine=x1 x3 + 0.5*z2",
                        "--operator", "coh=+2 -4", "--states"], tmp_path, capsys)
    assert rc == 0, cap.err
    assert "states.npz" in cap.out and "mine" in cap.out
    res = tsm.read_result(out)
    assert list(dict.fromkeys(res.expect["observable"])) == ["j", "mine", "coh_re", "coh_im"]
    ops = [tsm.Operator.parse("x1 x3 + 0.5*z2", 5, "mine"), tsm.Operator.parse("+2 -4", 5, "coh")]
    model = model_of_exact()
    ref = tsm.mesolve(model, np.linspace(0, 2, 5), observables=["j", *ops], states=True)
    np.testing.assert_allclose(res.expect["mean"], ref.expect["mean"], atol=1e-14)
    assert len(res.states) == 5
    for got, want in zip(res.states, ref.states, strict=True):
        assert isinstance(got, tsm.BlockState)
        assert got.sectors == want.sectors
        np.testing.assert_array_equal(got.to_dense(), want.to_dense())
    assert [r["name"] for r in res.metadata["operators"]] == ["mine", "coh"]


def test_steady_run_with_states_and_default_observables(tmp_path, capsys):
    argv = ["--scenario", "boundary", "--N", "4", "--solver", "steady", "--operator",
            "zz=z1 z4", "--states", "--format", "csv"]
    rc, out, cap = run(argv, tmp_path, capsys)
    assert rc == 0, cap.err
    res = tsm.read_result(out)
    names = list(dict.fromkeys(res.expect["observable"]))
    assert names[:1] == ["j"] and names[-1] == "zz" and "norm" in names
    ss = tsm.steadystate(tsm.boundary_driven(4, 1.0, 1.0),
                         observables=[tsm.Operator.parse("z1 z4", 4, "zz")], states=True)
    np.testing.assert_allclose(res.get("zz"), ss.get("zz"), atol=1e-14)
    (st,) = res.states
    np.testing.assert_allclose(st.to_dense(), ss.states[0].to_dense(), atol=0)
    np.testing.assert_allclose(st.trace(), 1.0, atol=1e-12)


def test_toml_operator_tables(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[model]\nscenario = "boundary"\nN = 5\ndephasing = 0.3\n'
                   '[run]\nsolver = "exact"\ntimes = "0:2:5"\nobservables = ["m"]\n'
                   '[[run.operator]]\nname = "mine"\n'
                   'terms = { "x1 x3" = 1.0, "z2" = 0.5 }\n'
                   '[[run.operator]]\nname = "c"\n'
                   'terms = { "+2 -4" = [0.0, 1.0] }\n')
    rc, out, cap = run(["--config", str(cfg)], tmp_path, capsys)
    assert rc == 0, cap.err
    res = tsm.read_result(out)
    assert res.states is None
    ops = [tsm.Operator.from_terms({"x1 x3": 1.0, "z2": 0.5}, N=5, name="mine"),
           tsm.Operator.from_terms({"+2 -4": 1j}, N=5, name="c")]
    ref = tsm.mesolve(model_of_exact(), np.linspace(0, 2, 5), observables=["m", *ops])
    np.testing.assert_allclose(res.expect["mean"], ref.expect["mean"], atol=1e-14)
    # the same operator by flag and by table: the same resolved run
    rc1, flagged, _ = dry(["--operator", "mine=x1 x3 + 0.5*z2"], capsys, tmp_path)
    cfg2 = tmp_path / "op.toml"
    cfg2.write_text('[[run.operator]]\nname = "mine"\nterms = { "x1 x3" = 1.0, "z2" = 0.5 }\n')
    rc2, tabled, _ = dry(["--config", str(cfg2)], capsys, tmp_path)
    assert rc1 == rc2 == 0
    assert flagged["run"]["operators"][0]["name"] == tabled["run"]["operators"][0]["name"]


@pytest.mark.parametrize("toml, msg", [
    ('[[operator]]\nname = "a"\nterms = { "z1" = 1.0 }\n', "write them as [[run.operator]]"),
    ('[[run.operator]]\nname = "a"\n', "need exactly the keys name and terms"),
    ('[[run.operator]]\nname = "a"\nterms = { "z1" = "x" }\n', "must be a number or [re, im]"),
    ('[[run.operator]]\nname = "a"\nterms = { "z9" = 1.0 }\n', "--operator a: terms: site 9"),
    ('[[run.operator]]\nname = "a b"\nterms = { "z1" = 1.0 }\n', "--operator name must be"),
    ('[[run.operator]]\nname = "a"\nterms = { "z1" = 1.0 }\n'
     '[[run.operator]]\nname = "a"\nterms = { "z2" = 1.0 }\n', "names must be distinct"),
    ('[run]\nstates = "yes"\n', "--states must be true or false"),
])
def test_toml_refusals(toml, msg, tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    rc, _, err = dry(["--config", str(cfg)], capsys, tmp_path)
    assert one_line_error(rc, err), err
    assert msg in err


@pytest.mark.parametrize("argv, msg", [
    (["--operator", "sp=+1"], "changes the magnon number by -1"),
    (["--operator", "a=x1 x1"], "site 1 is repeated"),
    (["--operator", "a=x8"], "site 8 of word 'x8' is outside 1..7"),
    (["--operator", "=x1"], "--operator must be NAME=TERMS"),
    (["--operator", "m=z1"], "clashes with a built-in"),
    (["--operator", "a=z1", "--operator", "a=z2"], "names must be distinct"),
    (["--operator", "a=x1 + + z2"], "without a term"),
])
def test_flag_refusals(argv, msg, tmp_path, capsys):
    rc, _, err = dry(argv, capsys, tmp_path)
    assert one_line_error(rc, err), err
    assert msg in err


def test_trajectory_run_with_operator_and_states(tmp_path, capsys):
    argv = [*SMALL, "--scenario", "boundary", "--operator", "mine=x1 x3 + 0.5*z2", "--states"]
    rc, out, cap = run(argv, tmp_path, capsys)
    assert rc == 0, cap.err
    res = tsm.read_result(out)
    assert "mine" in set(res.expect["observable"])
    assert len(res.states) == 5 and res.states[0].N == 5
    np.testing.assert_allclose([s.trace() for s in res.states], 1.0, atol=1e-12)
    # the comparison with the exact solution includes the operator rows
    cmp = tsm.io.read_table(out / "compare.parquet")[0]
    assert "mine" in set(cmp["observable"])


@pytest.mark.parametrize("names, ok", [("mine", True), ("coh", True), ("coh_re", True),
                                       ("coh_im,j", True), ("coh_xx", False)])
def test_target_observables_name_operators(names, ok, tmp_path, capsys):
    """``--target-observables`` takes an operator's name, or one part of a non-Hermitian
    one, in the dry run as in the run; anything else is refused in one line."""
    argv = ["--operator", "mine=x1 x3", "--operator", "coh=+2 -4", "--target-sem", "0.01",
            "--target-observables", names]
    rc, resolved, err = dry(argv, capsys, tmp_path)
    if ok:
        assert rc == 0, err
        assert resolved["run"]["mc"]["target_observables"] == names.split(",")
    else:
        assert one_line_error(rc, err), err
        assert "target_observables must be among" in err and "'coh_re'" in err
