"""Trajectories of the Doob process, ``mcsolve(tsm.doob(model, counts, s))`` (issue 24).

The Doob process makes the rare histories at tilt ``s`` typical (docs/model.md 15):

- its long-time counted current equals ``theta'(s)`` and the growth rate of
  the count's variance equals ``theta''(s)`` (derivatives of the exact
  ``tsm.scgf`` by central differences), by z-scores against error bars from
  independent groups of trajectories; the variance rate is taken between two
  windows, ``(Var K[t0, t2] - Var K[t0, t1]) / (t2 - t1)``, which cancels the
  windows' boundary terms;
- at ``s = 0`` it is the original process: the same jumps as ``mcsolve(model)``
  on the same seed (times to the root tolerance), through a different
  propagator (dense Doob sectors);
- its jump tables keep the original channel names; bit-identical across
  ``n_jobs`` and backends.
"""

from __future__ import annotations

import numpy as np
import pytest

import thermospin_mc as tsm

#: dense LAPACK on one BLAS thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_blas_thread")

T0, T1, T2 = 8.0, 24.0, 48.0
GROUPS = 16


def _derivatives(model, counts, s):
    h1, h2 = 1e-4, 1e-3
    d1 = (tsm.scgf(model, counts, s + h1) - tsm.scgf(model, counts, s - h1)) / (2 * h1)
    d2 = (tsm.scgf(model, counts, s + h2) - 2 * tsm.scgf(model, counts, s)
          + tsm.scgf(model, counts, s - h2)) / h2 ** 2
    return float(d1), float(d2)


def _window_counts(res, model, counts):
    """Counted ``K`` of each trajectory over ``[T0, T1]`` and ``[T0, T2]``."""
    tr = res.trajectories
    lo, _ = tr["columns"]["count"]
    rows = tr["rows"]
    idx = {ch.name: i for i, ch in enumerate(model.channels)}
    K = sum(w * rows[:, :, lo + idx[name]] for name, w in counts.items())
    return K[:, 2] - K[:, 1], K[:, 3] - K[:, 1]


def _general():
    return tsm.ChainModel(
        5, profile=tsm.BondCouplings((1.0, 0.7, 1.2, 0.9)), anisotropy=0.6,
        fields=(0.3, 0.0, -0.2, 0.1, 0.0),
        channels=[tsm.Loss(1, 1.2), tsm.Pump(3, 0.8, name="pump"), tsm.Loss(5, 0.6),
                  tsm.Dephasing(2, 0.5, name="deph")])


@pytest.mark.parametrize("which,s", [("paper", -0.6), ("paper", 0.8), ("general", -0.5),
                                     ("general", 0.7)])
def test_doob_current_and_variance_rate_are_the_scgf_derivatives(which, s):
    if which == "paper":
        model, counts = tsm.paper_model("pump", N=5), {"pump": 1}
    else:
        model, counts = _general(), {"pump": 1, "loss@1": -1, "deph": 1}
    d = tsm.doob(model, counts, s)
    assert abs(d.theta - tsm.scgf(model, counts, s)) < 1e-9
    ntraj = 4096
    res = tsm.mcsolve(d, [0.0, T0, T1, T2], ntraj, seed=17, n_jobs=2, observables=["count"],
                      checkpoint=tsm.Checkpointing(keep_trajectories=True),
                      cluster=tsm.Cluster(progress=False))
    k1, k2 = _window_counts(res, model, counts)
    d1, d2 = _derivatives(model, counts, s)
    # mean current over [T0, T2]
    rate = k2.mean() / (T2 - T0)
    sem = k2.std(ddof=1) / np.sqrt(ntraj) / (T2 - T0)
    assert abs(rate - d1) < 4 * sem, (rate, d1, sem)
    # variance growth rate, error bar from independent groups of trajectories
    g = [(np.var(b, ddof=1) - np.var(a, ddof=1)) / (T2 - T1)
         for a, b in zip(np.array_split(k1, GROUPS), np.array_split(k2, GROUPS), strict=True)]
    est, err = np.mean(g), np.std(g, ddof=1) / np.sqrt(GROUPS)
    # 16 groups: Student-t with 15 degrees of freedom, |z| > 4.5 has probability 5e-4
    assert abs(est - d2) < 4.5 * err, (est, d2, err)


def test_doob_at_s_zero_is_the_original_process():
    model = _general().with_(initial=(2, 4))
    d = tsm.doob(model, {"pump": 1}, 0.0)
    times = np.linspace(0.0, 6.0, 7)
    kw = dict(seed=4, record_jumps=True, observables=["m", "n"],
              cluster=tsm.Cluster(progress=False))
    jd = tsm.mcsolve(d, times, 200, **kw).jumps
    jm = tsm.mcsolve(model, times, 200, **kw).jumps
    assert len(jd) == len(jm) > 100
    assert (jd.channel.to_numpy() == jm.channel.to_numpy()).all()
    assert set(jd.channel) <= {ch.name for ch in model.channels}
    np.testing.assert_allclose(jd.t, jm.t, rtol=0, atol=1e-8)


def test_doob_runs_are_bit_identical_across_jobs_and_backends():
    d = tsm.doob(_general(), {"pump": 1, "deph": 1}, 0.6)
    times = np.linspace(0.0, 5.0, 6)
    kw = dict(seed=8, record_jumps=True, observables=["m", "n", "count"])
    a = tsm.mcsolve(d, times, 300, n_jobs=1, **kw, cluster=tsm.Cluster(progress=False))
    b = tsm.mcsolve(d, times, 300, n_jobs=2, **kw, cluster=tsm.Cluster(batch_size=64,
                                                                       progress=False))
    c = tsm.mcsolve(d, times, 300, n_jobs=2, **kw, cluster=tsm.Cluster(backend="loky",
                                                                       progress=False))
    for other in (b, c):
        assert a.expect.equals(other.expect) and a.jumps.equals(other.jumps)
    assert a.metadata["model"]["doob"]["s"] == 0.6
