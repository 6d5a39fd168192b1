"""The exact Doob process (tsm.doob, docs/model.md 15) against an independent dense
full-space (4^N) tilted Lindblad generator built from ``model.to_qutip()``, its
identities (trace preservation, s = 0, steady state, theta'(s)) and its refusals."""

import pickle

import numpy as np
import pytest
import scipy.linalg as sla

import thermospin_mc as tsm
from thermospin_mc.core.basis import full_indices
from thermospin_mc.exact import doob_eigen
from thermospin_mc.exact.counting import CountingSystem
from thermospin_mc.exact.doob import DOOB_LIMIT
from thermospin_mc.exact.doob_eigen import _NoJumpInverse

NET = {"loss_right": 1, "loss_left": -1}


def _random_model(seed, N=4, kinds=("loss", "pump", "dephasing")):
    """Random couplings, XXZ anisotropies, fields and channels at several sites."""
    rng = np.random.default_rng(seed)
    spec = {"loss": tsm.Loss, "pump": tsm.Pump, "dephasing": tsm.Dephasing}
    chans = []
    for kind in kinds:
        for site in rng.choice(np.arange(1, N + 1), size=2, replace=False):
            chans.append(spec[kind](int(site), float(rng.uniform(0.3, 2.0))))
    return tsm.ChainModel(N=N, profile=tsm.BondCouplings(tuple(rng.uniform(0.5, 1.5, N - 1))),
                          anisotropy=tuple(rng.uniform(0.3, 1.6, N - 1)),
                          fields=tuple(rng.uniform(-1, 1, N)), channels=chans,
                          initial=tsm.magnons(1))


def _random_counts(model, seed):
    rng = np.random.default_rng(seed)
    names = [ch.name for ch in model.channels]
    chosen = rng.choice(names, size=3, replace=False)
    return {str(n): int(rng.choice([-2, -1, 1, 2])) for n in chosen}


# --------------------------------------------------------------------------- dense reference
def _dense_tilted(model, counts, s):
    """Full-space L_s acting on row-major vec(rho): vec(A rho B) = (A kron B^T) vec(rho)."""
    H, c_ops, _ = model.to_qutip()
    H = H.full()
    n = H.shape[0]
    one = np.eye(n)
    L = -1j * (np.kron(H, one) - np.kron(one, H.T))
    for ch, c in zip(model.channels, c_ops, strict=True):
        c = c.full()
        cdc = c.conj().T @ c
        L += np.exp(s * counts.get(ch.name, 0)) * np.kron(c, c.conj())
        L -= 0.5 * (np.kron(cdc, one) + np.kron(one, cdc.T))
    return L


def _dense_left(model, counts, s):
    """Leading eigenvalue and left eigenmatrix l (L_s^*(l) = theta l) of the full space."""
    L = _dense_tilted(model, counts, s)
    lam, vl = sla.eig(L, left=True, right=False)
    i = int(np.argmax(lam.real))
    n = 2 ** model.N
    # left eigenvector: vl^H L = lam vl^H, i.e. L^H vl = conj(lam) vl = vec(l)
    return lam[i], vl[:, i].reshape(n, n), lam


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("seed,s", [(1, 0.7), (2, -0.8), (3, 0.3)])
def test_theta_and_l_match_the_dense_full_space(seed, s):
    model = _random_model(seed, N=3 + seed % 2)
    counts = _random_counts(model, seed)
    d = tsm.doob(model, counts, s)
    theta, lfull, lam = _dense_left(model, counts, s)
    assert abs(theta.imag) < 1e-10
    # a simple leading eigenvalue
    assert np.sort(lam.real)[-2] < theta.real - 1e-6
    assert abs(d.theta - theta.real) < 1e-8
    assert abs(d.theta - float(tsm.scgf(model, counts, s))) < 1e-8
    N = model.N
    idx = {m: full_indices(N, m) for m in range(N + 1)}
    assert d.reachable_sectors() == list(range(N + 1))
    # one common (complex: the eigenvector's phase) factor for every block ...
    num = sum(np.vdot(d.l(m), lfull[np.ix_(idx[m], idx[m])]) for m in idx)
    c = num / sum(np.linalg.norm(d.l(m)) ** 2 for m in idx)
    scale = max(np.abs(d.l(m)).max() for m in idx)
    for m in idx:
        assert np.abs(lfull[np.ix_(idx[m], idx[m])] / c - d.l(m)).max() < 1e-8 * scale
        assert np.allclose(d.l(m), d.l(m).conj().T, atol=0)
        assert np.linalg.eigvalsh(d.l(m)).min() > 0
    # ... and l is block diagonal in m
    mask = np.zeros_like(lfull, dtype=bool)
    for m in idx:
        mask[np.ix_(idx[m], idx[m])] = True
    assert np.abs(lfull[~mask]).max() / abs(c) < 1e-8 * scale


def test_s_zero_is_the_original_process():
    model = _random_model(4, N=4)
    d = tsm.doob(model, _random_counts(model, 4), 0.0)
    assert abs(d.theta) < 1e-12
    space = tsm.SectorSpace(model)
    for m in d.reachable_sectors():
        dim = space.dim(m)
        c = d.l(m)[0, 0].real
        assert np.abs(d.l(m) - np.eye(dim)).max() < 1e-10  # normalised: Tr(l r) = 1
        assert c > 0
        H = space.sector(m).heff_sparse(space.a).toarray()
        assert np.abs(d.sector_heff(m) - H).max() < 1e-10
        for k, ch in enumerate(model.channels):
            M = d.jump_matrix(k, m)
            if not 0 <= m + ch.dm <= model.N:
                assert M is None
                continue
            A = np.zeros((space.dim(m + ch.dm), dim))
            src, dst = space.jump_map(ch, m)
            A[dst, src] = space.jump_amplitudes(ch, m)
            assert np.abs(M - A).max() < 1e-10
    m0, psi = d.initial_state()
    m1, psi1 = space.initial_state()
    assert m0 == m1 and np.abs(psi - psi1).max() < 1e-10


@pytest.mark.parametrize("seed", [5, 6, 7])
@pytest.mark.parametrize("s", [-1.0, -0.3, 0.4, 1.0])
def test_trace_preservation(seed, s):
    model = _random_model(seed, N=4 + seed % 2)
    d = tsm.doob(model, _random_counts(model, seed), s)
    assert d.check() < 1e-11
    for m in d.reachable_sectors():
        G = d.sector_gamma(m)
        assert np.allclose(G, G.conj().T, atol=0)
        assert np.linalg.eigvalsh(G).min() > -1e-10 * np.abs(G).max()
        HD = d.sector_heff(m)
        assert np.allclose(1j * (HD - HD.conj().T), G, rtol=0, atol=1e-14 * np.abs(G).max())


def _doob_generator(d):
    """Dense block generator of the Doob process from sector_heff / jump_matrix."""
    secs = d.reachable_sectors()
    dims = {m: d.l(m).shape[0] for m in secs}
    off, o = {}, 0
    for m in secs:
        off[m], o = o, o + dims[m] ** 2
    L = np.zeros((o, o), dtype=complex)
    for m in secs:
        H, I = d.sector_heff(m), np.eye(dims[m])
        sl = slice(off[m], off[m] + dims[m] ** 2)
        L[sl, sl] += -1j * (np.kron(H, I) - np.kron(I, H.conj()))
        for k, ch in enumerate(d.channels):
            M = d.jump_matrix(k, m)
            if M is None:
                continue
            t = m + ch.dm
            L[off[t]:off[t] + dims[t] ** 2, sl] += ch.rate * np.kron(M, M.conj())
    return L, off, dims


@pytest.mark.parametrize("seed,s", [(8, 0.6), (9, -0.7)])
def test_doob_steady_state_and_current(seed, s):
    model = _random_model(seed, N=4)
    counts = _random_counts(model, seed)
    d = tsm.doob(model, counts, s)
    L, off, dims = _doob_generator(d)
    # the right eigenmatrix r_s of the block L_s, then rho_D = l^(1/2) r l^(1/2) / Tr
    sysm = CountingSystem(model, d.reachable_sectors())
    lam, vr = np.linalg.eig(sysm.tilted(counts, s).toarray())
    i = int(np.argmax(lam.real))
    r = vr[:, i] / (sysm.trace @ vr[:, i])
    rho = np.zeros_like(r)
    for m in d.reachable_sectors():
        sq = sla.sqrtm(d.l(m))
        blk = slice(off[m], off[m] + dims[m] ** 2)
        rho[blk] = (sq @ r[blk].reshape(dims[m], dims[m]) @ sq).ravel()
    rho /= sysm.trace @ rho
    assert np.linalg.norm(L @ rho) < 1e-10 * np.linalg.norm(rho)
    # trace preserving: the trace is a left null vector
    assert np.abs(sysm.trace @ L).max() < 1e-10
    # rho_D agrees with the process's own steady state
    for m, R in d.steady_state().items():
        blk = slice(off[m], off[m] + dims[m] ** 2)
        assert np.abs(rho[blk].reshape(dims[m], dims[m]) - R).max() < 1e-10
    # the mean counted current is theta'(s)
    cur = 0.0
    for k, ch in enumerate(d.channels):
        nu = counts.get(ch.name, 0)
        for m in d.reachable_sectors():
            M = d.jump_matrix(k, m)
            if nu and M is not None:
                R = rho[off[m]:off[m] + dims[m] ** 2].reshape(dims[m], dims[m])
                cur += nu * ch.rate * np.trace(M @ R @ M.conj().T).real
    h = 1e-4
    th = tsm.scgf(model, counts, [s - h, s + h])
    assert abs(cur - (th[1] - th[0]) / (2 * h)) < 1e-6
    assert abs(d.count_rate() - cur) < 1e-12


def test_paper_chain_record_and_api():
    model = tsm.paper_model("pump", N=5)
    d = tsm.doob(model, NET, 0.5)
    assert isinstance(d, tsm.DoobProcess)
    assert d.N == 5 and d.s == 0.5 and d.counts == NET
    assert d.channels == model.channels and d.alpha_method == model.alpha_method
    assert np.array_equal(d.couplings, model.couplings)
    assert d.initial_sectors == [0] and d.initial_sector == 0 and d.is_mixed is False
    rec = d.to_dict()
    assert set(rec) == {"N", "couplings", "doob"}
    assert rec["doob"]["model"] == model.to_dict() and rec["doob"]["theta"] == d.theta
    assert d.fingerprint() != model.fingerprint()
    d2 = tsm.DoobProcess.from_dict(rec)
    assert d2 == d and d2.fingerprint() == d.fingerprint()
    assert tsm.doob(model, NET, 0.6).fingerprint() != d.fingerprint()
    assert "DoobProcess(s=0.5" in repr(d)
    # worker processes receive it pickled: the same matrices, still read-only
    p = pickle.loads(pickle.dumps(d))
    assert p == d and p.theta == d.theta and p.check() == d.check()
    for m in d.reachable_sectors():
        assert np.array_equal(p.sector_heff(m), d.sector_heff(m))
        assert not p.sector_gamma(m).flags.writeable
        for k in range(len(d.channels)):
            M, Mp = d.jump_matrix(k, m), p.jump_matrix(k, m)
            assert (M is None and Mp is None) or np.array_equal(M, Mp)
    assert np.array_equal(p.initial_state()[1], d.initial_state()[1])
    with pytest.raises(AttributeError):
        p.theta = 0.0
    with pytest.raises(AttributeError):
        d.s = 1.0
    with pytest.raises(ValueError):
        d.l(0).__setitem__((0, 0), 2.0)  # read-only arrays
    assert d.jump_matrix(2, 5) is None  # pump out of the full sector
    assert d.jump_matrix(0, 0) is None  # loss out of the empty sector
    m0, psi = d.initial_state()
    assert m0 == 0 and abs(np.linalg.norm(psi) - 1) < 1e-14
    assert abs(sum(np.trace(R).real for R in d.steady_state().values()) - 1) < 1e-12
    # the dephasing amplitudes (+-1) reach the jump matrices
    deph = tsm.with_dephasing(model, 0.4, sites=[2])
    dd = tsm.doob(deph, {"pump": 1}, -0.5)
    assert dd.check() < 1e-11


def test_loss_only_chain_uses_its_reachable_sectors():
    model = tsm.paper_model("loss", N=5).with_(initial=tsm.magnons(2, 4))
    d = tsm.doob(model, NET, 0.8)
    assert d.reachable_sectors() == [0, 1, 2]
    assert abs(d.theta - float(tsm.scgf(model, NET, 0.8))) < 1e-12
    assert d.check() < 1e-11


@pytest.mark.parametrize("cond_limit", [1e8, 0.0])
def test_nojump_inverse_both_paths(cond_limit):
    """The preconditioner of large layouts (eigenbasis and Schur paths) inverts the
    shifted no-jump part and its adjoint exactly."""
    model = _random_model(10, N=4)
    sysm = CountingSystem(model, model.reachable_sectors())
    pre = _NoJumpInverse(sysm.layout, cond_limit=cond_limit)
    rng = np.random.default_rng(0)
    y = rng.normal(size=sysm.layout.size) + 1j * rng.normal(size=sysm.layout.size)
    n, sigma = sysm.layout.size, 0.37
    A = sysm.A.toarray() - sigma * np.eye(n)
    assert np.abs(A @ pre.apply(y, sigma, False) - y).max() < 1e-10
    assert np.abs(A.conj().T @ pre.apply(y, sigma, True) - y).max() < 1e-10


def test_large_layout_path_agrees_with_scgf(monkeypatch):
    """The GMRES path (layouts above DIRECT_LIMIT) on a small chain."""
    model = _random_model(11, N=5)
    counts = _random_counts(model, 11)
    direct = tsm.doob(model, counts, 0.5)
    monkeypatch.setattr(doob_eigen, "DIRECT_LIMIT", 10)
    it = tsm.doob(model, counts, 0.5)
    assert abs(it.theta - direct.theta) < 1e-10
    for m in it.reachable_sectors():
        assert np.abs(it.l(m) - direct.l(m)).max() < 1e-8 * np.abs(direct.l(0)).max()
    assert it.check() < 1e-11


def _one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def test_refusals():
    model = tsm.paper_model("pump", N=5)
    with pytest.raises(ValueError) as e:
        tsm.doob(model, {"nope": 1}, 0.5)
    assert "unknown channel" in _one_line(e)
    for bad in (float("nan"), float("inf"), "0.5", None):
        with pytest.raises(ValueError) as e:
            tsm.doob(model, NET, bad)
        assert "finite" in _one_line(e)
    with pytest.raises(ValueError) as e:
        tsm.doob(tsm.paper_model("closed", N=5), {"x": 1}, 0.5)
    _one_line(e)
    closed = tsm.ChainModel(N=4, channels=[tsm.Dephasing(2, 0.5)], initial=tsm.magnons(1))
    with pytest.raises(ValueError) as e:
        tsm.doob(closed, {"dephasing@2": 1}, 0.5)
    assert "steady state" in _one_line(e)
    with pytest.raises(ValueError) as e:
        tsm.doob(tsm.paper_model("pump", N=11), NET, 0.5)
    assert str(DOOB_LIMIT) in _one_line(e)
    mixed = model.with_(initial=tsm.product_mixture([0.2] * 5))
    with pytest.raises(ValueError) as e:
        tsm.doob(mixed, NET, 0.5)
    assert "mixture" in _one_line(e)
    with pytest.raises(ValueError) as e:
        tsm.doob(model, {"pump": 0.5}, 0.5)
    _one_line(e)
