"""User operators and trajectory-averaged states in ``mcsolve`` (issue 22, docs/model.md 13).

- operator rows against the exact block solver's operator rows (z-scores,
  ``tests/zscores.check_against``) for a Hermitian and a non-Hermitian operator
  on a general N = 5 chain (XXZ per bond, fields, loss, pump and dephasing at
  several sites), in eigen and Chebyshev mode and from a product mixture;
- identities that hold trajectory by trajectory: ``"n3 n5"`` is the ``nn`` row
  of pair (3, 5) and ``"+1 -3"`` the ``pm`` rows of pair (1, 3), means and
  standard errors equal; ``"x1 x3"`` keeps ``s+_1 s-_3 + s-_1 s+_3``, twice ``pm_re``;
- ``states=True``: unit trace (the surviving fraction under ``max_magnons``),
  Hermitian and positive blocks, the trace distance to the exact ``mesolve``
  state shrinking as ``1/sqrt(ntraj)``; bit-identical for any ``n_jobs``,
  batch size, backend and a checkpoint resume; refused above the memory budget;
- refusals: an operator of offset != 0, a checkpoint of another operator.
"""

from __future__ import annotations

import pickle
from math import comb

import numpy as np
import pytest
from zscores import check_against

import thermospin_mc as tsm
from thermospin_mc.core import blockstate, errorbars
from thermospin_mc.trajectories import batches, driver, layouts, sectorpack
from thermospin_mc.trajectories.snapshot import dump, restore
from thermospin_mc.trajectories.stats import Reducer
from thermospin_mc.trajectories.worker import Job

#: dense LAPACK on one BLAS thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_blas_thread")


N = 5
TIMES = np.linspace(0.0, 3.0, 13)


def general_model(initial=(2, 4)):
    """Couplings, XXZ anisotropy per bond, fields, loss/pump/dephasing at several sites."""
    return tsm.ChainModel(
        N=N, profile=tsm.BondCouplings((0.8, 1.2, 1.0, 0.7)),
        anisotropy=(0.5, 1.3, -0.4, 0.9), fields=(0.3, -0.5, 0.2, 0.0, 0.6),
        channels=[tsm.Loss(1, 0.9), tsm.Pump(3, 0.6), tsm.Dephasing(2, 0.4), tsm.Loss(5, 0.5),
                  tsm.Pump(4, 0.3)],
        initial=list(initial) if not isinstance(initial, tsm.ProductMixture) else initial)


HERM = tsm.Operator.parse("x1 x3 + 0.5*z2 + y2 y4", N=N, name="h")
NONHERM = tsm.Operator.from_terms({"+1 -3": 1.0, "+2 -5": 0.5j, "n4": 0.3}, N=N, name="g")


def rows(res, name, site=None):
    df = res.expect
    sel = df.observable == name
    if site is not None:
        sel &= df.site == site
    return df[sel]


# ----------------------------------------------------------------------------- against exact
@pytest.mark.parametrize("case", ["eigen", "chebyshev", "mixture"])
def test_operator_rows_agree_with_the_exact_solver(case):
    # Chebyshev mode in every sector above 4 states (the kernels' second propagator);
    # a product mixture draws each trajectory's start (no shared no-jump path)
    initial = (tsm.product_mixture([0.3, 0.6, 0.2, 0.5, 0.1]) if case == "mixture"
               else (2, 4))
    model = general_model(initial)
    ntraj = 4000
    res = tsm.mcsolve(model, TIMES, ntraj, seed=5, observables=["m", "n", HERM, NONHERM],
                      states=True,
                      cluster=tsm.Cluster(dense_max=4 if case == "chebyshev" else 100,
                                          progress=False))
    if case == "chebyshev":
        assert res.metadata["sector_modes"]["2"] == "chebyshev"
    ex = tsm.mesolve(model, TIMES, observables=["m", "n", HERM, NONHERM], states=True)
    # the states of every propagator and start: close to the exact ones (at 4096
    # trajectories the mean trace distance of this model is 0.019-0.025 over eight seeds)
    dist = [res.states[k].trace_distance(ex.states[k]) for k in range(TIMES.size)]
    assert np.mean(dist) < 0.035, dist
    assert list(res.expect.observable.unique()) == ["m", "n", "h", "g_re", "g_im"]
    assert (rows(res, "h").site == 0).all() and (rows(res, "g_im").site == 0).all()
    assert [o["name"] for o in res.metadata["operators"]] == ["h", "g"]
    # at least 90% of the rows within 2 sem, none beyond 5, the 3 x 13 operator rows
    # among them; from a pure state the t = 0 rows (every trajectory agrees) to round-off
    check_against(res, ex, ntraj)
    z = res.compare(ex)
    for name in ("h", "g_re", "g_im"):
        zo = z[(z.observable == name) & (z["sem"] > 0)]
        assert len(zo) >= 12 and (zo.z.abs() < 4.5).all(), zo
        if case != "mixture":
            np.testing.assert_allclose(rows(res, name)["mean"].iloc[0],
                                       rows(ex, name)["mean"].iloc[0], atol=1e-12)


def test_operator_only_observables_and_target_on_an_operator():
    model = general_model()
    res = tsm.mcsolve(model, TIMES, 256, seed=2, observables=[HERM],
                      target=tsm.Target(sem=0.05, max_ntraj=4096),
                      cluster=tsm.Cluster(progress=False))
    assert list(res.expect.observable.unique()) == ["h"]
    assert res.metadata["target_observables"] == ["h"]
    assert res.metadata["stopped_by"] == "target_sem"
    later = rows(res, "h")[rows(res, "h").t > 0]
    assert later["sem"].max() <= 0.05


def test_target_on_one_part_of_a_non_hermitian_operator():
    """``target_observables`` names a non-Hermitian operator whole (both parts) or one
    part: the run stops when that part's rows (t > 0) reach the target, whatever the
    other part's; the reported achieved sem is the part's worst row."""
    model = general_model()
    goal = 0.05  # relative: the parts' means differ, so do the counts they need
    out = {}
    for part in ("g_re", "g_im", "g"):
        res = tsm.mcsolve(model, TIMES, 64, seed=3, observables=[NONHERM],
                          target=tsm.Target(sem=goal, observables=[part], max_ntraj=20000,
                                            relative=True),
                          cluster=tsm.Cluster(batch_size=64, progress=False))
        assert res.metadata["stopped_by"] == "target_sem", part
        assert res.metadata["target_observables"] == [part]
        late = res.expect[res.expect.t > 0]
        # the rule's standard errors: floored at one event's worth over ntraj
        eff = errorbars.effective_sem(late.observable.to_numpy(), late.site.to_numpy(),
                                      late["sem"].to_numpy(), late.ntraj.to_numpy(),
                                      model.couplings, errorbars.operator_floors([NONHERM]))

        def rel(names, late=late, eff=eff):  # relative: rows of |mean| >= 0.25 of the largest
            sel = late.observable.isin(names).to_numpy()
            size = np.abs(late["mean"].to_numpy()[sel])
            keep = (size > 0) & (size >= 0.25 * size.max())
            return (eff[sel][keep] / size[keep]).max()

        worst = {p: rel([p]) for p in ("g_re", "g_im")}
        achieved = rel(["g_re", "g_im"] if part == "g" else [part])
        assert achieved <= goal
        np.testing.assert_allclose(res.metadata["achieved_sem"], achieved, rtol=1e-12)
        out[part] = (res.metadata["ntraj"], worst)
    # the parts are targeted separately: the imaginary part, smaller, needs more
    # trajectories for the same relative error; the whole operator stops at its own
    # rule (one observable, the rows of the larger part set the floor of |mean|)
    assert out["g_re"][0] < out["g_im"][0]
    assert out["g_im"][1]["g_re"] <= goal < out["g_re"][1]["g_im"]
    with pytest.raises(ValueError, match="target_observables must be among"):
        tsm.mcsolve(model, TIMES, 16, seed=3, observables=[NONHERM],
                    target=tsm.Target(sem=goal, observables=["g_xx"]),
                    cluster=tsm.Cluster(progress=False))


# ----------------------------------------------------------------------------- identities
def test_operator_identities_hold_trajectory_by_trajectory():
    model = general_model()
    nn = tsm.Operator.from_terms({"n3 n5": 1.0}, N=N, name="n3n5")
    pm = tsm.Operator.from_terms({"+1 -3": 1.0}, N=N, name="pm13")
    xx = tsm.Operator.from_terms({"x1 x3": 1.0}, N=N, name="x1x3")
    assert xx.dropped_norm > 0 and xx.hermitian and not pm.hermitian
    res = tsm.mcsolve(model, TIMES, 700, seed=9, observables=["nn", "pm", nn, pm, xx],
                      pairs=[(3, 5), (1, 3)], target=tsm.Target(max_magnons=3),
                      cluster=tsm.Cluster(progress=False))
    assert res.metadata["truncated_fraction"] > 0  # rows of truncated trajectories too
    for mine, ref, site in (("n3n5", "nn", 3), ("pm13_re", "pm_re", 1),
                            ("pm13_im", "pm_im", 1)):
        a, b = rows(res, mine), rows(res, ref, site)
        for col in ("mean", "sem", "ntraj"):
            np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-13,
                                       atol=1e-15, err_msg=f"{mine} {col}")
    # x1 x3 keeps s+_1 s-_3 + s-_1 s+_3 = 2 Re s+_1 s-_3 (on every trajectory)
    np.testing.assert_allclose(rows(res, "x1x3")["mean"].to_numpy(),
                               2 * rows(res, "pm_re", 1)["mean"].to_numpy(), atol=1e-13)
    np.testing.assert_allclose(rows(res, "x1x3")["sem"].to_numpy(),
                               2 * rows(res, "pm_re", 1)["sem"].to_numpy(), rtol=1e-10,
                               atol=1e-15)


def test_operator_entries_keep_diagonal_and_upper_triangle():
    A = np.array([[1.0, 2 - 1j, 0], [2 + 1j, 0, 3], [0, 3, -4]], dtype=complex)
    r, c, v, nd = sectorpack.operator_entries(A, hermitian=True)
    assert nd == 2 and list(zip(r[:nd], c[:nd], strict=True)) == [(0, 0), (2, 2)]
    assert list(zip(r[nd:], c[nd:], strict=True)) == [(0, 1), (1, 2)]
    psi = np.array([0.3 + 0.1j, -0.5j, 0.7])
    val = (np.sum(v[:nd].real * np.abs(psi[r[:nd]]) ** 2)
           + 2 * np.sum(np.conj(psi[r[nd:]]) * v[nd:] * psi[c[nd:]]).real)
    np.testing.assert_allclose(val, (psi.conj() @ A @ psi).real, atol=1e-15)
    r, c, v, nd = sectorpack.operator_entries(A, hermitian=False)
    assert nd == 2 and r.size == 6


# ----------------------------------------------------------------------------- states
def test_states_are_normalised_hermitian_positive_and_converge():
    model = general_model()
    times = np.linspace(0.0, 3.0, 7)
    ex = tsm.mesolve(model, times, observables=["m"], states=True)
    dist = {}
    for n in (256, 4096):
        res = tsm.mcsolve(model, times, n, seed=1, observables=["m", HERM], states=True,
                          cluster=tsm.Cluster(progress=False))
        assert len(res.states) == times.size
        assert res.metadata["state_sectors"] == list(range(N + 1))
        for k, st in enumerate(res.states):
            assert isinstance(st, tsm.BlockState)
            assert abs(st.trace() - 1.0) < 1e-12
            for B in st.blocks.values():
                np.testing.assert_allclose(B, B.conj().T, atol=0)
                assert np.linalg.eigvalsh(B).min() > -1e-12
            # the state reproduces the table rows of the same run (one average)
            np.testing.assert_allclose(st.expect(HERM).real, rows(res, "h")["mean"].iloc[k],
                                       atol=1e-12)
            mag = N / 2 - sum(m * np.trace(B).real for m, B in st.blocks.items())
            np.testing.assert_allclose(mag, rows(res, "m")["mean"].iloc[k], atol=1e-12)
        np.testing.assert_allclose(res.states[0].blocks[2], ex.states[0].blocks[2], atol=1e-15)
        dist[n] = np.mean([res.states[k].trace_distance(ex.states[k])
                           for k in range(1, times.size)])
    # E ||rho_bar - rho||_1 ~ c / sqrt(n): 16x the trajectories, a quarter of the distance.
    # Over eight seeds the ratio of these time-averaged distances ranged over 2.9-4.8
    # (mean 3.8, sd 0.6: each distance fluctuates by ~8% between seeds); the bounds are
    # 4 x [0.63, 1.6], more than 2.5 sd either side.
    assert 2.5 < dist[256] / dist[4096] < 6.4, dist
    assert dist[4096] < 0.04


def test_states_under_max_magnons_count_the_surviving_fraction():
    model = tsm.paper_model("pump", N=5, delta_T=2.0, gamma_pump=3.0)
    times = np.linspace(0.0, 4.0, 9)
    ntraj = 300
    res = tsm.mcsolve(model, times, ntraj, seed=3, observables=["m"], states=True,
                      target=tsm.Target(max_magnons=1), cluster=tsm.Cluster(progress=False))
    assert res.metadata["truncated_fraction"] > 0
    assert res.metadata["state_sectors"] == [0, 1]
    counted = rows(res, "m")["ntraj"].to_numpy()
    assert counted[-1] < ntraj
    for k, st in enumerate(res.states):
        assert all(not np.any(B) for m, B in st.blocks.items() if m > 1)
        np.testing.assert_allclose(st.trace(), counted[k] / ntraj, atol=1e-13)


def _same(a, b):
    ea, eb = a.expect, b.expect
    assert (ea["observable"].to_numpy() == eb["observable"].to_numpy()).all()
    for col in ("t", "site", "ntraj", "mean", "sem"):
        assert np.array_equal(ea[col].to_numpy(), eb[col].to_numpy(), equal_nan=True), col
    assert len(a.states) == len(b.states)
    for sa, sb in zip(a.states, b.states, strict=True):
        assert sorted(sa.blocks) == sorted(sb.blocks)
        for m in sa.blocks:
            assert np.array_equal(sa.blocks[m], sb.blocks[m]), m


def test_states_and_operators_bit_identical_across_jobs_batches_backends():
    model = general_model()
    kw = dict(ntraj=700, seed=123, observables=["j", HERM, NONHERM], states=True)
    r1 = tsm.mcsolve(model, TIMES, n_jobs=1, **kw, cluster=tsm.Cluster(progress=False))
    r2 = tsm.mcsolve(model, TIMES, n_jobs=2, **kw, cluster=tsm.Cluster(batch_size=192,
                                                                       progress=False))
    r3 = tsm.mcsolve(model, TIMES, n_jobs=1, **kw, cluster=tsm.Cluster(batch_size=700,
                                                                       progress=False))
    r4 = tsm.mcsolve(model, TIMES, n_jobs=2, **kw,
                     cluster=tsm.Cluster(batch_size=128, backend="loky", progress=False))
    assert r2.metadata["backend"] == "threads" and r4.metadata["backend"] == "loky"
    for other in (r2, r3, r4):
        _same(r1, other)
    # the job (with its operators) travels to worker processes by pickle
    job = pickle.loads(pickle.dumps(Job(model, TIMES, np.zeros(4, np.uint64), 64, ("m",),
                                        False, False, N, 100, None, (HERM,), True)))
    assert job.operators[0].to_dict() == HERM.to_dict()


def test_states_and_operators_resume_bit_for_bit(tmp_path, monkeypatch):
    model = general_model()
    kw = dict(seed=11, observables=["m", HERM, NONHERM], states=True,
              cluster=tsm.Cluster(batch_size=64, progress=False))
    ck = tmp_path / "ck.npz"
    plain = tsm.mcsolve(model, TIMES, ntraj=500, **kw)
    # a short finished run extends (its short last block is run again in full) ...
    tsm.mcsolve(model, TIMES, ntraj=100, **kw, checkpoint=tsm.Checkpointing(path=ck))
    # ... and is interrupted on the way (two more blocks merged and saved)
    real, calls = batches.run_batch, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(batches, "run_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tsm.mcsolve(model, TIMES, ntraj=500, **kw, checkpoint=tsm.Checkpointing(path=ck))
    monkeypatch.setattr(batches, "run_batch", real)
    _same(plain, tsm.mcsolve(model, TIMES, ntraj=500, **kw, checkpoint=tsm.Checkpointing(path=ck)))


def test_reducer_checkpoint_keeps_pending_state_blocks(tmp_path):
    # blocks finished out of order wait in the reducer; a checkpoint keeps their states
    rng = np.random.default_rng(0)
    nt, nc, size = 3, 2, 10

    def block(nb):
        return {"cnt": np.full(nt, nb), "mean": rng.normal(size=(nt, nc)),
                "m2": rng.random((nt, nc)), "ntrunc": 0, "jumps": None, "kept": None,
                "rho": rng.normal(size=size)}

    red = Reducer(nt, nc, 200, False, False, state_size=size)
    b0, b1, b2, b3 = (block(64), block(64), block(64), block(8))
    red.offer([2, 1], [b2, b1], {})
    red.offer([0], [b0], {})
    red.merge_next()
    state, arrays = dump(red, 1.0)
    assert arrays["p_st"].shape == (2, size)
    back = Reducer(nt, nc, 200, False, False, state_size=size)
    restore(back, tmp_path / "x.npz", state, arrays)
    for r in (red, back):
        r.offer([3], [dict(b3)], {})
        while r.next_block in r.pending:
            r.merge_next()
    assert np.array_equal(red.rho, back.rho)
    assert np.array_equal(red.rho, ((b0["rho"] + b1["rho"]) + b2["rho"]) + b3["rho"])
    # the short last block's base: the state before it
    state, arrays = dump(back, 1.0)
    assert np.array_equal(arrays["base_st"], (b0["rho"] + b1["rho"]) + b2["rho"])


# ----------------------------------------------------------------------------- refusals
def test_states_above_the_memory_budget_are_refused(monkeypatch):
    model = general_model()
    layout = layouts.state_layout(model, N)
    assert layout.stride == sum(comb(N, m) * (comb(N, m) + 1) for m in range(N + 1))
    need, copies = driver.states_memory(layout, TIMES.size, "serial", 1, 1)
    full = 16 * sum(comb(N, m) ** 2 for m in range(N + 1)) * TIMES.size
    assert copies == 2 and need == 2 * 8 * layout.stride * TIMES.size + full
    monkeypatch.setattr(blockstate, "STATES_BUDGET_BYTES", need - 1)
    with pytest.raises(ValueError, match=r"^states=True of mcsolve needs about .* above the "
                                         r"budget") as exc:
        tsm.mcsolve(model, TIMES, 64, seed=1, states=True, cluster=tsm.Cluster(progress=False))
    assert "\n" not in str(exc.value)
    # the same run fits with fewer output times
    tsm.mcsolve(model, TIMES[:6], 64, seed=1, states=True, cluster=tsm.Cluster(progress=False))
    # parallel runs keep more blocks in flight: counted
    assert driver.states_memory(layout, 1, "threads", 2, 1)[1] == 1 + 8
    assert driver.states_memory(layout, 1, "dask", 1, 2)[1] == 1 + 16


def test_operator_of_nonzero_offset_is_refused_with_one_line():
    up = tsm.Operator.from_terms({"+3": 1.0}, N=N, name="up")
    assert up.offset == -1
    with pytest.raises(ValueError, match=r"^observables: operator 'up' changes the magnon "
                                         r"number by -1") as exc:
        tsm.mcsolve(general_model(), TIMES, 64, observables=["m", up])
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="states must be True or False"):
        tsm.mcsolve(general_model(), TIMES, 64, states="yes")


def test_checkpoint_of_another_operator_is_refused(tmp_path):
    model = general_model()
    ck = tmp_path / "ck.npz"
    a = tsm.Operator.from_terms({"z2": 1.0}, N=N, name="mine")
    b = tsm.Operator.from_terms({"z3": 1.0}, N=N, name="mine")
    tsm.mcsolve(model, TIMES, 64, seed=1, observables=["m", a],
                checkpoint=tsm.Checkpointing(path=ck), cluster=tsm.Cluster(progress=False))
    with pytest.raises(ValueError, match=r"belongs to a different operators"):
        tsm.mcsolve(model, TIMES, 128, seed=1, observables=["m", b],
                    checkpoint=tsm.Checkpointing(path=ck))
    with pytest.raises(ValueError, match=r"belongs to a different states setting"):
        tsm.mcsolve(model, TIMES, 128, seed=1, observables=["m", a], states=True,
                    checkpoint=tsm.Checkpointing(path=ck))
    # the same operator resumes
    res = tsm.mcsolve(model, TIMES, 128, seed=1, observables=["m", a],
                      checkpoint=tsm.Checkpointing(path=ck), cluster=tsm.Cluster(progress=False))
    assert res.metadata["resumed_ntraj"] == 64
