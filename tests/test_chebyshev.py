"""Chebyshev mode of large sectors: kernels against scipy, trajectories against
the exact solver and against the Taylor mode, and reproducibility.

``dense_max`` is set low so that small, fast chains use the propagator of
large sectors. Statistical tolerances as in ``test_mcsolve.py``: >= 90% of the
rows within 2 sem, none beyond 5 sem.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import expm_multiply
from scipy.special import jv
from zscores import check_against

import thermospin_mc as tsm
from thermospin_mc.trajectories import kernels as K
from thermospin_mc.trajectories.batches import run_batch
from thermospin_mc.trajectories.sectorpack import SectorPack

TIMES = np.linspace(0.0, 20.0, 81)


@pytest.mark.parametrize("x", [0.0, 1e-9, 0.3, 7.5, 17.3, 45.0, 60.0])
def test_bessel_recurrence_matches_scipy(x):
    K_ = 40
    out = np.zeros(K_ + 1)
    K._bessel_j(x, K_, out)
    ref = jv(np.arange(K_ + 1), x)
    assert np.abs(out - ref).max() < 1e-14


#: the plain CSR off-diagonal part (no packed copy) for ``kernels._cheb_build``
NOPACK = (np.zeros(0, dtype=np.uint32), np.zeros(0))


def _cheb_sector(N, m, scenario="pump"):
    model = tsm.paper_model(scenario, N=N, delta_T=2.0)
    pack = SectorPack(model, TIMES, dense_max=1)
    pack.ensure(m)
    stab, _, _, _, cpx, ints, reals, _ = pack.snapshot()
    assert stab[m, K.MODE] == K.MODE_CHEB
    d = int(stab[m, K.DIM])
    P = reals[stab[m, K.OFF_CHEB]:stab[m, K.OFF_CHEB] + K.CHEB_NPAR]
    op, oi, ov, og = (int(P[j]) for j in (K.CHEB_OPTR, K.CHEB_OIDX, K.CHEB_OVAL, K.CHEB_ODG))
    optr = ints[op:op + d + 1]
    n = int(optr[d])
    # the independent reference: H_eff built by the sector code, unshifted
    sec = pack.space.sector(m)
    H = sec.heff_sparse(pack.space.a)
    return model, d, P, (optr, ints[oi:oi + n], reals[ov:ov + n], cpx[og:og + d]), H


@pytest.mark.parametrize("N,m", [(9, 4), (11, 5)])
def test_no_jump_propagation_matches_expm_multiply(N, m):
    # norm decay (and the state up to the global phase of the diagonal shift)
    # of exp(-i H_eff t) psi0 against scipy, at times across a whole step
    _, d, P, ops, H = _cheb_sector(N, m)
    cr, ci, rho, h = (P[j] for j in (K.CHEB_CR, K.CHEB_CI, K.CHEB_RHO, K.CHEB_H))
    kcap = int(P[K.CHEB_KCAP])
    rng = np.random.default_rng(N)
    psi0 = rng.normal(size=d) + 1j * rng.normal(size=d)
    psi0 /= np.linalg.norm(psi0)
    B = np.zeros(2 * (kcap + 1) * d)
    vn = np.zeros(kcap + 2)
    bes = np.zeros(kcap + 2)
    Kn = K._cheb_build(*ops, rho, h, kcap, psi0, d, B, vn, bes, *NOPACK)
    assert 0 < Kn <= kcap
    out = np.zeros(d, dtype=complex)
    fs = np.zeros(2 * d)
    for tau in (0.0, 0.13 * h, 0.5 * h, 0.97 * h, h):
        nrm = K._cheb_eval(B, vn, Kn, d, cr, ci, rho, tau, bes, out, fs)
        ref = expm_multiply(-1j * tau * H, psi0) if tau > 0 else psi0
        nref = float(np.vdot(ref, ref).real)
        assert abs(nrm / nref - 1.0) < 1e-10
        # global phase of the shift: compare |overlap| and moduli
        assert abs(abs(np.vdot(ref, out)) / nref - 1.0) < 1e-10
        assert np.abs(np.abs(out) - np.abs(ref)).max() < 1e-10
    assert nrm < 0.999  # the test is not vacuous: the state decays over the step


@pytest.mark.parametrize("N,m", [(9, 4), (11, 3), (11, 4)])
def test_whole_step_is_at_round_off_against_dense_expm(N, m):
    # The truncation rule (CHEB_TOL) and the step length (CHEB_BH) keep a whole
    # step at the round-off of the sum: against the dense exponential of the
    # shifted H_eff, every time of the step, basis and random start vectors.
    # Measured: largest error 5.8e-16 to 8.4e-16 of ||psi0|| over the three
    # sectors; a truncation at 1e-12 instead of 1e-14 gives 3.7e-15 to 5.2e-15,
    # which fails the bound here in every sector.
    from scipy.linalg import expm

    _, d, P, ops, H = _cheb_sector(N, m)
    cr, ci, rho, h = (P[j] for j in (K.CHEB_CR, K.CHEB_CI, K.CHEB_RHO, K.CHEB_H))
    kcap = int(P[K.CHEB_KCAP])
    assert h * rho > 30.0  # a long step: well beyond the ~1.3 of a typical visit
    Hd = H.toarray()
    dg = Hd.diagonal().real
    Hd -= 0.5 * (dg.max() + dg.min()) * np.eye(d)  # the pack's shift (a global phase)
    rng = np.random.default_rng(N + m)
    starts = [rng.normal(size=d) + 1j * rng.normal(size=d), np.eye(d)[rng.integers(d)]]
    taus = (0.07 * h, 0.25 * h, 0.5 * h, 0.8 * h, h)
    U = [expm(-1j * tau * Hd) for tau in taus]
    B = np.zeros(2 * (kcap + 1) * d)
    vn = np.zeros(kcap + 2)
    bes = np.zeros(kcap + 2)
    out = np.zeros(d, dtype=complex)
    fs = np.zeros(2 * d)
    worst = 0.0
    for psi0 in starts:
        psi0 = psi0 / np.linalg.norm(psi0)
        Kn = K._cheb_build(*ops, rho, h, kcap, psi0, d, B, vn, bes, *NOPACK)
        assert 0 < Kn <= kcap
        for tau, u in zip(taus, U, strict=True):
            K._cheb_eval(B, vn, Kn, d, cr, ci, rho, tau, bes, out, fs)
            worst = max(worst, float(np.linalg.norm(out - u @ psi0)))
    assert worst < 2e-15


def test_chebyshev_trajectories_agree_with_mesolve():
    # N = 9 with dense_max = 50: sectors m = 2..7 (36 to 126 states) in Chebyshev mode
    model = tsm.paper_model("pump", N=9, delta_T=2.0)
    ntraj = 2000
    res = tsm.mcsolve(model, TIMES, ntraj=ntraj, seed=4242, observables=("j", "j_bond", "m", "n"),
                      cluster=tsm.Cluster(dense_max=50))
    modes = res.metadata["sector_modes"]
    assert sum(v == "chebyshev" for v in modes.values()) >= 3
    ref = tsm.mesolve(model, TIMES, observables=("j", "j_bond", "m", "n"))
    check_against(res, ref, ntraj)


def test_chebyshev_general_chain_with_dephasing_agrees_with_mesolve():
    # in-sector dephasing jumps, a product-state mixture and two-point observables
    base = tsm.ChainModel(5, profile=tsm.BondCouplings((1.0, 1.2, 0.9, 1.1)), gamma=1.5,
                          gamma_pump=0.6, initial=tsm.ProductMixture((0.2, 0.5, 0.1, 0.7, 0.3)),
                          anisotropy=0.7, fields=(0.3, 0.0, -0.2, 0.1, 0.0))
    model = tsm.with_dephasing(base, 0.4, sites=(2, 4))
    obs = ["j", "m", "n", "nn", "pm", "count"]
    times = np.linspace(0.0, 6.0, 25)
    ntraj = 3000
    res = tsm.mcsolve(model, times, ntraj=ntraj, seed=31, observables=obs, pairs=[(1, 3)],
                      cluster=tsm.Cluster(dense_max=1))
    assert "chebyshev" in res.metadata["sector_modes"].values()
    ref = tsm.mesolve(model, times, observables=obs, pairs=[(1, 3)])
    check_against(res, ref, ntraj)


def test_chebyshev_and_taylor_trajectories_coincide():
    # two independent exact propagators, same random streams: the same jumps
    # (times to the 1e-10 root tolerance) and the same means up to round-off
    model = tsm.paper_model("pump", N=7, delta_T=2.0)
    key = np.random.SeedSequence(5).generate_state(4, dtype=np.uint64)
    names = ("j", "m", "n")
    got = {}
    for large in ("chebyshev", "taylor"):
        pack = SectorPack(model, TIMES, dense_max=1, large=large)
        blocks, modes = run_batch(model, TIMES, key, [0, 1], 128, names, True, False, 7,
                                  dense_max=1, pack=pack)
        assert set(modes.values()) - {"eigen"} == {large}
        got[large] = blocks
    for bc, bt in zip(got["chebyshev"], got["taylor"], strict=True):
        jc, jt = bc["jumps"], bt["jumps"]
        assert jc.shape == jt.shape and jc.shape[0] > 500
        assert np.array_equal(jc[:, [0, 2, 3]], jt[:, [0, 2, 3]])
        assert np.abs(jc[:, 1] - jt[:, 1]).max() < 1e-8
        assert np.abs(bc["mean"] - bt["mean"]).max() < 1e-8


def test_packed_off_diagonal_gives_the_same_bits(monkeypatch):
    # the packed form of the off-diagonal part (kernels._entry_impl, used
    # for sectors too large for the cache) against the plain CSR loop: the same
    # terms to the bit, and whole runs (N = 9, every sparse sector packed) with
    # the same jumps and means to the bit
    from thermospin_mc.trajectories import sectorpack

    model = tsm.paper_model("pump", N=9, delta_T=2.0)
    key = np.random.SeedSequence(8).generate_state(4, dtype=np.uint64)
    _, d, _, ops, _ = _cheb_sector(9, 4)  # the plain form (N = 9 is below PACK_MIN_BYTES)
    got = {}
    for packed in (False, True):
        monkeypatch.setattr(sectorpack, "PACK_MIN_BYTES", 0 if packed else 2**62)
        pack = SectorPack(model, TIMES, dense_max=1)
        blocks, modes = run_batch(model, TIMES, key, [0, 1], 96, ("j", "m", "n"), True,
                                  False, 9, dense_max=1, pack=pack)
        stab, _, _, _, _, _, reals, _ = pack.snapshot()
        cheb = [m for m in range(10) if stab[m, K.BUILT] and stab[m, K.MODE] == K.MODE_CHEB]
        assert len(cheb) >= 4
        pk = [reals[stab[m, K.OFF_CHEB] + K.CHEB_PK] >= 0 for m in cheb]
        assert all(pk) if packed else not any(pk)
        got[packed] = blocks
        if packed:
            m = 4
            P = reals[stab[m, K.OFF_CHEB]:stab[m, K.OFF_CHEB] + K.CHEB_NPAR]
            assert P[K.CHEB_OIDX] == P[K.CHEB_OVAL] == -1  # no plain form kept
            _, _, _, _, _, ints, _, _ = pack.snapshot()
            n = ops[1].size
            opk = ints[int(P[K.CHEB_PK]):int(P[K.CHEB_PK]) + (n + 1) // 2].view(np.uint32)
            vtab = reals[int(P[K.CHEB_VT]):int(P[K.CHEB_VT]) + K.PACK_MAX_VALUES]
            assert np.array_equal(vtab[opk[:n] >> K.PACK_SHIFT], ops[2])
            assert np.array_equal(opk[:n] & K.PACK_MASK, ops[1])
            psi0 = np.random.default_rng(4).normal(size=d) + 0.5j
            kcap, terms = int(P[K.CHEB_KCAP]), []
            for extra in (NOPACK, (opk, vtab)):
                B, vn, bes = np.zeros(2 * (kcap + 1) * d), np.zeros(kcap + 2), np.zeros(kcap + 2)
                Kn = K._cheb_build(*ops, P[K.CHEB_RHO], P[K.CHEB_H], kcap, psi0, d, B, vn, bes,
                                   *extra)
                terms.append((Kn, B[:2 * (Kn + 1) * d].copy()))
            assert terms[0][0] == terms[1][0] > 20
            assert np.array_equal(terms[0][1], terms[1][1])
    for a, b in zip(got[False], got[True], strict=True):
        assert a["jumps"].shape[0] > 100
        assert np.array_equal(a["jumps"], b["jumps"])
        assert np.array_equal(a["mean"], b["mean"]) and np.array_equal(a["m2"], b["m2"])


def test_chebyshev_mode_is_bit_identical_across_jobs_and_batches():
    model = tsm.paper_model("pump", N=9, delta_T=2.0)
    kw = dict(ntraj=300, seed=17, observables=("j", "m", "n"), record_jumps=True)
    a = tsm.mcsolve(model, TIMES, n_jobs=1, **kw,
                    cluster=tsm.Cluster(dense_max=1, progress=False))
    assert "chebyshev" in a.metadata["sector_modes"].values()
    for n_jobs, extra in ((2, {}), (2, dict(batch_size=64)), (2, dict(batch_size=192)),
                          (2, dict(backend="loky", batch_size=128))):
        b = tsm.mcsolve(model, TIMES, n_jobs=n_jobs, **kw,
                        cluster=tsm.Cluster(dense_max=1, progress=False, **extra))
        pd.testing.assert_frame_equal(a.expect, b.expect, check_exact=True)
        pd.testing.assert_frame_equal(a.jumps, b.jumps, check_exact=True)


def test_large_mode_option_is_checked():
    model = tsm.paper_model("pump", N=5)
    with pytest.raises(ValueError, match="large"):
        SectorPack(model, TIMES, large="krylov")


def test_cheb_params_enclose_the_spectrum():
    # the ellipse parameters: centre and focal half-length cover the eigenvalues
    _, d, P, _, H = _cheb_sector(7, 3)
    lam = np.linalg.eigvals(H.toarray())
    diag = H.diagonal().real
    shift = 0.5 * (diag.max() + diag.min())
    c = complex(P[K.CHEB_CR], P[K.CHEB_CI])
    z = (lam - shift - c) / P[K.CHEB_RHO]
    assert np.abs(z.real).max() <= 1.0 + 1e-9
    assert sp.issparse(H) and d == 35


@pytest.mark.parametrize("N,m,general", [(9, 3, False), (13, 4, False), (9, 4, True)])
def test_cheb_params_symmetric_shortcut_is_exact(N, m, general):
    # a sector's H_eff is complex symmetric: reading its Hermitian and decay parts
    # as Re H and -Im H (what SectorPack does) gives the parameters of the general
    # formulas to the bit, for dense (d <= 300) and Lanczos (d = 715) ranges
    from thermospin_mc.core.sectors import SectorSpace
    from thermospin_mc.trajectories.chebyshev_params import cheb_params

    model = tsm.paper_model("pump", N=N, delta_T=2.0)
    if general:
        model = tsm.ChainModel(N=N, profile=tsm.LinearProfile(T1=0.0, T2=2.0), anisotropy=0.5,
                               fields=np.linspace(0.0, 0.6, N),
                               channels=[tsm.Loss(site=1, rate=1.0), tsm.Pump(site=N, rate=0.5),
                                         tsm.Dephasing(site=4, rate=0.2)])
    space = SectorSpace(model)
    H = space.sector(m).heff_sparse(space.a)
    assert abs(H - H.T).max() == 0.0 and np.any(H.diagonal().imag)
    a, b = cheb_params(H), cheb_params(H, symmetric=True)
    assert a[K.CHEB_RHO] > 0 and np.array_equal(a, b)


def test_chebyshev_sparse_output_grid_agrees_with_mesolve():
    # three output times far apart: the steps end at jumps found by the
    # jump-time probes between outputs (lazy terms), not at output times
    model = tsm.paper_model("pump", N=9, delta_T=2.0)
    times = np.array([0.0, 3.7, 9.0])
    ntraj = 3000
    res = tsm.mcsolve(model, times, ntraj=ntraj, seed=777, observables=("j", "m", "n", "count"),
                      cluster=tsm.Cluster(dense_max=50))
    assert sum(v == "chebyshev" for v in res.metadata["sector_modes"].values()) >= 3
    ref = tsm.mesolve(model, times, observables=("j", "m", "n", "count"))
    check_against(res, ref, ntraj)


def test_pack_pools_keep_earlier_tables_intact():
    # tables are views of the pack's growing pools: sectors built later (which
    # may move the pools to bigger buffers) leave earlier tables unchanged
    model = tsm.paper_model("pump", N=9, delta_T=2.0)
    pack = SectorPack(model, TIMES, dense_max=1)
    pack.ensure(1)
    first = pack.tables()
    saved = [first.cpx.copy(), first.ints.copy(), first.reals.copy()]
    for m in range(2, 8):
        pack.ensure(m)
    later = pack.tables()
    assert later.reals.size > 20 * saved[2].size  # the pools grew past their first buffers
    for a, b, c in zip(saved, (first.cpx, first.ints, first.reals),
                       (later.cpx, later.ints, later.reals), strict=True):
        assert np.array_equal(a, b)  # the earlier tables are unchanged
        assert np.array_equal(a, c[:a.size])  # and are the start of the later ones


def test_chebyshev_start_sector_keeps_its_taylor_form_and_no_other_does():
    # the shared no-jump path runs Taylor steps in the start sector, so only that
    # Chebyshev sector stores its sparse H_eff; from a three-magnon start
    # (Chebyshev mode) the trajectories agree with the all-Taylor engine
    base = tsm.paper_model("pump", N=9, delta_T=2.0)
    model = tsm.ChainModel(N=9, profile=tsm.LinearProfile(T1=0.0, T2=2.0),
                           channels=base.channels, initial=tsm.magnons(2, 5, 8))
    key = np.random.SeedSequence(6).generate_state(4, dtype=np.uint64)
    got = {}
    for large in ("chebyshev", "taylor"):
        pack = SectorPack(model, TIMES, dense_max=1, large=large)
        blocks, _ = run_batch(model, TIMES, key, [0], 64, ("j", "m", "n"), True, False, 9,
                              dense_max=1, pack=pack)
        got[large] = blocks[0]
        if large == "chebyshev":
            stab = pack.snapshot()[0]
            built = [m for m in range(10) if stab[m, K.BUILT] and stab[m, K.MODE] == K.MODE_CHEB]
            assert 3 in built and len(built) >= 4
            assert [m for m in built if stab[m, K.OFF_INDPTR] >= 0] == [3]
    jc, jt = got["chebyshev"]["jumps"], got["taylor"]["jumps"]
    assert jc.shape == jt.shape and jc.shape[0] > 100
    assert np.array_equal(jc[:, [0, 2, 3]], jt[:, [0, 2, 3]])
    assert np.abs(jc[:, 1] - jt[:, 1]).max() < 1e-8
    assert np.abs(got["chebyshev"]["mean"] - got["taylor"]["mean"]).max() < 1e-8


def _flip_chain(N, fields):
    return tsm.ChainModel(N=N, profile=tsm.BondCouplings(tuple(np.linspace(0.6, 1.4, N - 1))),
                          anisotropy=tuple(np.linspace(0.4, 1.2, N - 1)),
                          fields=fields,
                          channels=[tsm.Loss(1, 0.7), tsm.Pump(N // 2, 0.4),
                                    tsm.Dephasing(3, 0.2)])


@pytest.mark.parametrize("fields", [None, (0.0, 0.3, -0.2, 0.0, 0.1, 0.0, 0.2, -0.1)],
                         ids=["no-fields", "fields"])
def test_flip_partners_share_the_hermitian_range(fields):
    """Without site fields the global spin flip maps the chain Hamiltonian of
    sector m onto that of N - m (the same spectrum; loss, pump and dephasing
    enter H_eff only through its decay part), and the pack takes the second
    sector's Chebyshev range from the first; with fields it computes both."""
    from thermospin_mc.core.sector_build import shifted_csr
    from thermospin_mc.trajectories.chebyshev_params import cheb_params

    N = 8
    model = _flip_chain(N, fields)
    space = tsm.SectorSpace(model)
    for m in range(N // 2):
        e1 = np.linalg.eigvalsh(space.sector(m).h_sparse(space.a).toarray())
        e2 = np.linalg.eigvalsh(space.sector(N - m).h_sparse(space.a).toarray())
        gap = np.abs(e1 - e2).max()
        assert (gap < 1e-12) if fields is None else (m == 0 or gap > 1e-3)
    pack = SectorPack(model, TIMES, dense_max=1)
    for m in range(N + 1):
        pack.ensure(m)
    stab, *_, reals, _ = pack.snapshot()
    # sectors 1..N/2 share (sector 0, one state, is in eigen mode)
    assert sorted(pack._hranges) == ([(0, m) for m in range(1, N // 2 + 1)]
                                     if fields is None else [])
    for m in range(1, N):
        P = reals[stab[m, K.OFF_CHEB]:stab[m, K.OFF_CHEB] + K.CHEB_NPAR]
        H = space.sector(m).heff_sparse(space.a)
        direct = cheb_params(shifted_csr(H)[0], symmetric=True)
        keys = [K.CHEB_CR, K.CHEB_CI, K.CHEB_RHO, K.CHEB_H, K.CHEB_KCAP]
        if fields is not None or m <= N // 2:  # computed here: the same bits
            np.testing.assert_array_equal(P[keys], direct[keys])
        else:  # read from sector N - m: the same up to the eigensolver's round-off
            np.testing.assert_allclose(P[keys], direct[keys], rtol=1e-12, atol=1e-12)
    # the parameters do not depend on the order in which a run meets the sectors
    # (threads, workers, resumed runs): built high m first, the same bits
    down = SectorPack(model, TIMES, dense_max=1)
    for m in range(N, -1, -1):
        down.ensure(m)
    stab2, *_, reals2, _ = down.snapshot()
    for m in range(1, N):
        P = reals[stab[m, K.OFF_CHEB]:stab[m, K.OFF_CHEB] + K.CHEB_NPAR]
        P2 = reals2[stab2[m, K.OFF_CHEB]:stab2[m, K.OFF_CHEB] + K.CHEB_NPAR]
        np.testing.assert_array_equal(P[keys], P2[keys])
