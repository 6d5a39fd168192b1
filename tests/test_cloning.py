"""Cloning (population dynamics) against the exact theta(s) (issue 24, docs/model.md 15).

- ``theta(s)`` and the tilted current against the exact ``scgf`` and its
  derivative (a central difference) on the paper's pump chain at N = 5 and on
  a general chain (XXZ, fields, dephasing, a product mixture), s in [-1, 1]:
  z-scores against the populations' error bars (12 populations: a z-score is
  Student-t with 11 degrees of freedom, |z| > 4 has probability 2e-3). At these
  settings (t = 30 with a quarter burn-in, about 3 relaxation times; 200
  clones; moderate tilts, weights e^(s nu) with |s nu| <= 1) the O(1/n_c) and
  O(1/t) biases stay below the error bars; stronger tilts need more clones or
  ``extrapolate=True`` (docs/model.md);
- ``theta(0) = 0`` exactly (every weight is 1);
- ``extrapolate=True``: the 1/n_c fit reports a bias and stays within its
  error bars of the exact value;
- bit-identical for any ``n_jobs`` and backend;
- bad input: one line each.
"""

from __future__ import annotations

import numpy as np
import pytest

import thermospin_mc as tsm

#: dense LAPACK on one BLAS thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_blas_thread")

S = np.array([-1.0, -0.4, 0.0, 0.5, 1.0])


def _exact(model, counts, s):
    h = 1e-4
    theta = tsm.scgf(model, counts, s)
    slope = (tsm.scgf(model, counts, s + h) - tsm.scgf(model, counts, s - h)) / (2 * h)
    return theta, slope


def _general():
    return tsm.ChainModel(
        5, profile=tsm.BondCouplings((1.0, 0.7, 1.2, 0.9)), anisotropy=0.6,
        fields=(0.3, 0.0, -0.2, 0.1, 0.0),
        channels=[tsm.Loss(1, 1.2), tsm.Pump(3, 0.8, name="pump"), tsm.Loss(5, 0.6),
                  tsm.Dephasing(2, 0.5, name="deph")],
        initial=tsm.product_mixture([0.2, 0.0, 0.5, 0.0, 0.1]))


@pytest.mark.parametrize("which", ["paper", "general"])
def test_cloning_agrees_with_the_exact_scgf_and_its_slope(which):
    if which == "paper":
        model, counts = tsm.paper_model("pump", N=5), {"pump": 1}
    else:
        model, counts = _general(), {"pump": 1, "deph": 1}
    df = tsm.cloning(model, counts, S, t=30.0, clones=200, seed=3, n_jobs=2, populations=12)
    assert list(df.columns[:7]) == ["s", "theta", "theta_sem", "current", "current_sem",
                                    "clones", "t"]
    theta, slope = _exact(model, counts, S)
    zero = S == 0
    assert np.all(df.theta[zero] == 0.0) and np.all(df.theta_sem[zero] == 0.0)
    z = (df.theta[~zero] - theta[~zero]) / df.theta_sem[~zero]
    assert np.all(np.abs(z) < 4), z.to_numpy()
    zc = (df.current - slope) / df.current_sem
    assert np.all(np.abs(zc) < 4), zc.to_numpy()


def test_extrapolation_in_the_population_size():
    model, counts = tsm.paper_model("pump", N=5), {"pump": 1}
    s = np.array([-1.0, 1.0])
    df = tsm.cloning(model, counts, s, t=30.0, clones=200, seed=5, n_jobs=2,
                     extrapolate=True, populations=12)
    theta, _ = _exact(model, counts, s)
    assert np.all(np.isfinite(df.bias))
    z = (df.theta - theta) / df.theta_sem
    assert np.all(np.abs(z) < 4), z.to_numpy()
    plain = tsm.cloning(model, counts, s, t=30.0, clones=200, seed=5, n_jobs=2,
                        populations=12)
    np.testing.assert_allclose(df.bias, plain.theta - df.theta, rtol=0, atol=1e-12)


def test_bit_identical_for_any_n_jobs_and_backend():
    model, counts = _general(), {"pump": 1}
    kw = dict(t=6.0, clones=40, seed=11, populations=3)
    a = tsm.cloning(model, counts, [-0.5, 0.7], n_jobs=1, **kw)
    b = tsm.cloning(model, counts, [-0.5, 0.7], n_jobs=2, **kw)
    c = tsm.cloning(model, counts, [-0.5, 0.7], n_jobs=2, backend="loky", **kw)
    pd_eq = a.equals(b) and a.equals(c)
    assert pd_eq, (a, b, c)
    # the seed matters
    d = tsm.cloning(model, counts, [-0.5, 0.7], n_jobs=1, **{**kw, "seed": 12})
    assert not a.equals(d)


@pytest.mark.parametrize("kw,match", [
    (dict(counts={"nope": 1}), "unknown channel"),
    (dict(clones=1), "clones must be an integer >= 2"),
    (dict(s=np.nan), "s must be a finite"),
    (dict(s=[0.1, np.inf]), "s must be a finite"),
    (dict(t=0.0), "t must be a finite number > 0"),
    (dict(t=-1.0), "t must be a finite number > 0"),
    (dict(populations=1), "populations must be"),
    (dict(interval=0.0), "interval must be"),
    (dict(burn=0.5), "burn must be"),
])
def test_bad_input_is_refused_in_one_line(kw, match):
    args = dict(model=tsm.paper_model("pump", N=3), counts={"pump": 1}, s=0.5, t=2.0,
                clones=4)
    args.update(kw)
    with pytest.raises(ValueError, match=match) as err:
        tsm.cloning(**args)
    assert "\n" not in str(err.value)
