"""Trajectories of time-dependent protocols: ``mcsolve(Schedule)`` (issue 23, docs/model.md 14).

- against the exact block solver on the same schedule (``mesolve(schedule)``,
  itself held against chained full-space exponentials in
  tests/test_schedule_exact.py) by z-scores (``tests/zscores.check_against``):
  a general N = 5 chain (XXZ per bond, fields, loss/pump/dephasing at several
  sites, channels present in some stages only), in eigen and Chebyshev mode,
  from a pure state and from a product mixture, output times on and between
  the boundaries, with user operators and the ``flow`` (stage couplings);
- the jump condition runs on across a boundary: jump by jump, the eigen and
  Chebyshev kernels agree to the root tolerance (each a different exact
  propagator), so a lost or restarted threshold at a boundary would show;
- a schedule whose stages are all one model is that model, bit for bit
  (tables, jumps, states); jump tables carry the stage of each jump;
- bit-identical for any ``n_jobs``, batch size, backend and a kill-and-resume;
  a checkpoint of another schedule is refused;
- trajectory-averaged states converge to the exact ``mesolve(schedule)`` states;
- ``steadystate`` and the counting statistics refuse a schedule.
"""

from __future__ import annotations

import numpy as np
import pytest
from zscores import check_against

import thermospin_mc as tsm
from thermospin_mc.trajectories import batches

#: dense LAPACK on one BLAS thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_blas_thread")

N = 5
#: outputs on the boundaries (1.0, 2.5) and between them (1.6)
TIMES = np.array([0.0, 0.4, 1.0, 1.3, 1.6, 2.2, 2.5, 2.8, 3.4, 4.0])


def stages(initial=(2, 4)):
    """Three stages of a general chain; ``loss@1`` and ``deph`` are missing from some."""
    base = dict(profile=tsm.BondCouplings((1.0, 0.8, 1.2, 0.9)), anisotropy=(1.0, 0.6, 1.3, 0.8),
                fields=(0.2, -0.1, 0.0, 0.3, -0.2), initial=initial)
    a = tsm.ChainModel(N, channels=[tsm.Loss(1, 0.9), tsm.Pump(3, 0.7, name="pump"),
                                    tsm.Loss(5, 1.1)], **base)
    b = tsm.ChainModel(N, channels=[tsm.Pump(3, 1.6, name="pump"), tsm.Loss(5, 0.5),
                                    tsm.Dephasing(2, 0.8, name="deph")],
                       **{**base, "profile": tsm.BondCouplings((0.6, 1.4, 1.0, 1.1))})
    c = tsm.ChainModel(N, channels=[tsm.Loss(1, 1.5), tsm.Dephasing(2, 0.4, name="deph")],
                       **{**base, "anisotropy": 0.7})
    return a, b, c


def schedule(initial=(2, 4)):
    a, b, c = stages(initial)
    return tsm.Schedule([(0.0, a), (1.0, b), (2.5, c)])


HERM = tsm.Operator.parse("x1 x3 + 0.5*z2", N=N, name="mine")


@pytest.mark.parametrize("dense_max,initial", [(100, (2, 4)), (2, (2, 4)),
                                               (100, "mixture")],
                         ids=["eigen", "chebyshev", "mixture"])
def test_trajectories_agree_with_the_exact_schedule(dense_max, initial):
    if initial == "mixture":
        initial = tsm.product_mixture([0.3, 0.0, 0.6, 0.1, 0.5])
    sched = schedule(initial)
    obs = ["j", "m", "n", "flow", HERM]
    ref = tsm.mesolve(sched, TIMES, observables=obs)
    ntraj = 3000
    res = tsm.mcsolve(sched, TIMES, ntraj, seed=7, n_jobs=2, observables=obs,
                      cluster=tsm.Cluster(dense_max=dense_max, progress=False))
    modes = set(res.metadata["sector_modes"].values())
    assert modes == ({"eigen"} if dense_max == 100 else {"eigen", "chebyshev"})
    check_against(res, ref, ntraj)


def test_flow_takes_the_couplings_of_the_stage_at_each_time():
    sched = schedule()
    res = tsm.mcsolve(sched, TIMES, 200, seed=3, observables=["j_bond", "flow"],
                      cluster=tsm.Cluster(progress=False))
    e = res.expect
    for t in TIMES:
        jb = e[(e.observable == "j_bond") & (e.t == t)].sort_values("site")["mean"].to_numpy()
        fl = e[(e.observable == "flow") & (e.t == t)].sort_values("site")["mean"].to_numpy()
        a = sched.model_at(t).couplings
        np.testing.assert_allclose(fl, a / 2 * jb, rtol=1e-12, atol=1e-15)
    # at a boundary the stage that starts there holds
    assert sched.model_at(1.0) is sched.stages[1][1]


def test_jump_threshold_runs_on_across_boundaries():
    # two different exact propagators (eigen, Chebyshev) must give the same jumps
    # to the root tolerance; a threshold redrawn or a norm reset at a boundary
    # would still agree between them, so also check the stage column and that
    # trajectories do jump inside every stage and across boundaries without a jump
    sched = schedule()
    kw = dict(seed=21, record_jumps=True, observables=["m"])
    je = tsm.mcsolve(sched, TIMES, 200, **kw, cluster=tsm.Cluster(dense_max=100,
                                                                  progress=False)).jumps
    jc = tsm.mcsolve(sched, TIMES, 200, **kw, cluster=tsm.Cluster(dense_max=2,
                                                                  progress=False)).jumps
    assert len(je) == len(jc) and len(je) > 200
    assert (je.channel.to_numpy() == jc.channel.to_numpy()).all()
    np.testing.assert_allclose(je.t, jc.t, rtol=0, atol=1e-8)
    st = je.stage.to_numpy()
    expect = np.searchsorted(sched.times, je.t.to_numpy(), side="left") - 1
    assert np.array_equal(st, expect) and set(st) == {0, 1, 2}
    # channels missing from a stage never fire in it
    assert not ((je.stage == 0) & (je.channel == "deph")).any()
    assert not ((je.stage == 2) & (je.channel.isin(["pump", "loss@5"]))).any()


def test_no_jump_probability_is_the_product_over_stages():
    # the no-jump probability to t is ||psi(t)||^2 of the chained no-jump
    # propagators: trajectories without a jump before t, counted, against it
    a, b, c = stages(initial=(3,))
    sched = tsm.Schedule([(0.0, a), (1.0, b), (2.5, c)])
    t_end = 3.4
    m0, psi = tsm.SectorSpace(a).initial_state()
    for (t0, mod), t1 in zip(sched.stages, (1.0, 2.5, t_end), strict=True):
        space = tsm.SectorSpace(mod)
        H = space.sector(m0).heff_sparse(space.a).toarray()
        w, V = np.linalg.eig(H)
        psi = V @ (np.exp(-1j * w * (t1 - t0)) * np.linalg.solve(V, psi))
    p_none = float(np.vdot(psi, psi).real)
    ntraj = 4000
    res = tsm.mcsolve(sched, [t_end], ntraj, seed=5, record_jumps=True, observables=["m"],
                      cluster=tsm.Cluster(progress=False))
    first = res.jumps.groupby("traj").t.min()
    survived = ntraj - int((first <= t_end).sum())
    sem = np.sqrt(p_none * (1 - p_none) / ntraj)
    assert abs(survived / ntraj - p_none) < 4 * sem, (survived / ntraj, p_none, sem)


def _same(r1, r2):
    assert r1.expect.equals(r2.expect)
    if r1.jumps is not None:
        assert r1.jumps.equals(r2.jumps)
    if r1.states is not None:
        for sa, sb in zip(r1.states, r2.states, strict=True):
            for m in sa.blocks:
                assert np.array_equal(sa.blocks[m], sb.blocks[m]), m


def test_a_schedule_of_one_model_is_that_model_bit_for_bit():
    a, _, _ = stages()
    for initial in ((2, 4), tsm.product_mixture([0.3, 0.0, 0.6, 0.1, 0.5])):
        model = a.with_(initial=initial)
        kw = dict(seed=9, record_jumps=True, observables=["j", "m", "n", HERM], states=True,
                  cluster=tsm.Cluster(progress=False))
        plain = tsm.mcsolve(model, TIMES, 300, **kw)
        # later stages' initial states are ignored; equal generators merge
        sched = tsm.Schedule([(0.0, model), (1.3, a), (2.0, model)])
        res = tsm.mcsolve(sched, TIMES, 300, **kw)
        assert res.expect.equals(plain.expect)
        cols = ["traj", "t", "channel", "site", "m_before"]
        assert res.jumps[cols].equals(plain.jumps[cols])
        assert np.array_equal(res.jumps.stage,
                              np.searchsorted([0.0, 1.3, 2.0], res.jumps.t, side="left") - 1)
        for sa, sb in zip(res.states, plain.states, strict=True):
            for m in sa.blocks:
                assert np.array_equal(sa.blocks[m], sb.blocks[m])
        assert res.metadata["model"]["schedule"][1]["t"] == 1.3


def test_bit_identical_across_jobs_batches_backends_and_resume(tmp_path, monkeypatch):
    sched = schedule()
    kw = dict(seed=123, observables=["j", "m", HERM], record_jumps=True, states=True)
    r1 = tsm.mcsolve(sched, TIMES, 500, n_jobs=1, **kw, cluster=tsm.Cluster(progress=False))
    r2 = tsm.mcsolve(sched, TIMES, 500, n_jobs=2, **kw, cluster=tsm.Cluster(batch_size=192,
                                                                            progress=False))
    r3 = tsm.mcsolve(sched, TIMES, 500, n_jobs=2, **kw,
                     cluster=tsm.Cluster(batch_size=128, backend="loky", progress=False))
    assert r3.metadata["backend"] == "loky"
    _same(r1, r2)
    _same(r1, r3)
    # killed after two batches, then resumed
    ck = tmp_path / "ck.npz"
    real, calls = batches.run_batch, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(batches, "run_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tsm.mcsolve(sched, TIMES, 500, **kw, checkpoint=tsm.Checkpointing(path=ck),
                    cluster=tsm.Cluster(batch_size=64, progress=False))
    monkeypatch.setattr(batches, "run_batch", real)
    res = tsm.mcsolve(sched, TIMES, 500, **kw, checkpoint=tsm.Checkpointing(path=ck),
                      cluster=tsm.Cluster(batch_size=64, progress=False))
    assert res.metadata["resumed_ntraj"] == 128
    _same(r1, res)


def test_a_checkpoint_of_another_schedule_is_refused(tmp_path):
    a, b, c = stages()
    ck = tmp_path / "ck.npz"
    kw = dict(seed=1, observables=["m"], cluster=tsm.Cluster(progress=False))
    tsm.mcsolve(tsm.Schedule([(0.0, a), (1.0, b)]), TIMES, 64, **kw,
                checkpoint=tsm.Checkpointing(path=ck))
    with pytest.raises(ValueError, match=r"different model.*stage 1 t: 1\.0 there, 1\.2 here"):
        tsm.mcsolve(tsm.Schedule([(0.0, a), (1.2, b)]), TIMES, 128, **kw,
                    checkpoint=tsm.Checkpointing(path=ck))
    with pytest.raises(ValueError, match="different model"):
        tsm.mcsolve(a, TIMES, 128, **kw, checkpoint=tsm.Checkpointing(path=ck))
    res = tsm.mcsolve(tsm.Schedule([(0.0, a), (1.0, b)]), TIMES, 128, **kw,
                      checkpoint=tsm.Checkpointing(path=ck))
    assert res.metadata["resumed_ntraj"] == 64


def test_trajectory_states_converge_to_the_exact_schedule_states():
    sched = schedule()
    ex = tsm.mesolve(sched, TIMES, states=True).states
    dist = []
    for ntraj in (250, 4000):
        st = tsm.mcsolve(sched, TIMES, ntraj, seed=2, states=True, observables=["m"],
                         cluster=tsm.Cluster(progress=False)).states
        dist.append(max(s.trace_distance(e) for s, e in zip(st, ex, strict=True)))
    # 1/sqrt(ntraj): 16x the trajectories, 4x smaller (loose: a factor 2.5)
    assert dist[1] < dist[0] / 2.5, dist


def test_solvers_without_a_single_generator_refuse_a_schedule():
    sched = schedule()
    for call in (lambda: tsm.steadystate(sched),
                 lambda: tsm.exact_counting_statistics(sched, {"pump": 1}, order=2)):
        with pytest.raises(ValueError, match="[Ss]chedule"):
            call()
