"""Exact counting statistics (docs/model.md 11) against identities, an independent
full-space (4^N) tilted Liouvillian built here from Pauli matrices, and
trajectories."""

from math import factorial

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import thermospin_mc as tsm
from thermospin_mc import analysis

NET = {"loss_right": 1, "loss_left": -1}


# --------------------------------------------------------------------------- dense reference
def _site_op(op, i, N):
    out = np.array([[1.0 + 0j]])
    for k in range(N):
        out = np.kron(out, op if k == i else np.eye(2))
    return out


SP = np.array([[0, 1], [0, 0]], dtype=complex)  # |up><down|: removes a magnon
SM = SP.T.copy()
SZ = np.diag([1.0, -1.0]).astype(complex)


def _dense(model):
    """Full-space Hamiltonian and jump operators (site basis, up = index 0)."""
    N, a = model.N, model.couplings
    H = np.zeros((2 ** N, 2 ** N), dtype=complex)
    for l in range(N - 1):
        sp_l, sm_l = _site_op(SP, l, N), _site_op(SM, l, N)
        sp_r, sm_r = _site_op(SP, l + 1, N), _site_op(SM, l + 1, N)
        H += a[l] / 2 * (2 * (sp_l @ sm_r + sm_l @ sp_r)
                         + model.anisotropy * _site_op(SZ, l, N) @ _site_op(SZ, l + 1, N))
    ops = {}
    for ch in model.channels:
        base = {"loss": SP, "pump": SM, "dephasing": SZ}[ch.kind]
        ops[ch.name] = np.sqrt(ch.rate) * _site_op(base, ch.site, N)
    return H, ops


def _superops(model):
    """Row-major vec: vec(A X B) = kron(A, B^T) vec(X). Returns (L, {name: J})."""
    H, ops = _dense(model)
    d = H.shape[0]
    eye = np.eye(d)
    L = -1j * (np.kron(H, eye) - np.kron(eye, H.T))
    J = {}
    for name, c in ops.items():
        cdc = c.conj().T @ c
        J[name] = np.kron(c, c.conj())
        L += J[name] - 0.5 * np.kron(cdc, eye) - 0.5 * np.kron(eye, cdc.T)
    return sp.csr_matrix(L), {k: sp.csr_matrix(v) for k, v in J.items()}


def _tilted(L, J, counts, z):
    out = L.astype(complex)
    for name, w in counts.items():
        out = out + (np.exp(z * w) - 1.0) * J[name]
    return out.tocsc()


def _dense_rates(model, counts, order, R=0.1, M=24):
    """Cumulant rates from the Cauchy integral of the eigenvalue nearest 0 of the
    full-space tilted Liouvillian on the circle |s| = R (trapezoid rule)."""
    L, J = _superops(model)
    z = R * np.exp(2j * np.pi * np.arange(M) / M)
    th = np.empty(M, dtype=complex)
    for k, zk in enumerate(z):
        lam = spla.eigs(_tilted(L, J, counts, zk), k=2, sigma=0.0, which="LM",
                        return_eigenvectors=False, tol=1e-14)
        lam = lam[np.argsort(np.abs(lam))]
        # the continued branch is the only one near 0 (reference validity check)
        assert abs(lam[1]) > 2 * abs(lam[0])
        th[k] = lam[0]
    return np.array([factorial(n) * np.mean(th * z ** (-n)).real for n in range(1, order + 1)])


def _initial_vec(model):
    N = model.N
    psi = np.zeros(2 ** N, dtype=complex)
    idx = 0
    for s in model.initial.sites:  # magnon (down = index 1) at 1-based site s
        idx |= 1 << (N - s)
    psi[idx] = 1.0
    return np.outer(psi, psi.conj()).ravel()


def _dense_finite(model, counts, T, order, t0=0.0, M=64):
    """Cumulants of the count in [t0, t0 + T) from P(K = k): discrete Fourier
    transform of Tr exp(L_{i phi} T) rho(t0) on M points of the unit circle."""
    L, J = _superops(model)
    d = 2 ** model.N
    tr = np.eye(d).ravel()
    x0 = _initial_vec(model)
    if t0 > 0:
        x0 = spla.expm_multiply(L.tocsc() * t0, x0)
    phi = 2 * np.pi * np.arange(M) / M
    G = np.array([tr @ spla.expm_multiply(_tilted(L, J, counts, 1j * p) * T, x0) for p in phi])
    P = np.fft.fft(G).real / M  # P[k] = prob(K = k mod M)
    k = np.fft.fftfreq(M, 1.0 / M)  # -M/2 .. M/2 - 1
    assert P[np.abs(k) > M / 2 - 4].sum() < 1e-12  # no aliasing
    mean = np.sum(k * P)
    mu = [np.sum((k - mean) ** n * P) for n in range(order + 1)]
    kap = [mean, mu[2], mu[3], mu[4] - 3 * mu[2] ** 2][:order]
    return np.array(kap), P.sum()


# --------------------------------------------------------------------------- identities
@pytest.fixture(scope="module")
def pump5():
    return tsm.paper_model("pump", N=5, delta_T=2.0)


def test_first_cumulant_equals_steady_jump_rates(pump5):
    n = tsm.steadystate(pump5, observables=("n",)).get("n")[0]
    g, gi = pump5.gamma, pump5.gamma_pump
    c_net = tsm.exact_counting_statistics(pump5, NET, order=1)["cumulant"].iloc[0]
    assert c_net == pytest.approx(g * (n[-1] - n[0]), abs=1e-10)
    c_pump = tsm.exact_counting_statistics(pump5, {"pump": 1}, order=1)["cumulant"].iloc[0]
    assert c_pump == pytest.approx(gi * (1 - n[2]), abs=1e-10)
    c_loss = tsm.exact_counting_statistics(pump5, {"loss_left": 1, "loss_right": 1},
                                           order=1)["cumulant"].iloc[0]
    assert c_loss == pytest.approx(g * (n[0] + n[-1]), abs=1e-10)
    # steady state: pump rate = total loss rate (docs/model.md section 7)
    assert c_pump == pytest.approx(c_loss, abs=1e-10)


def test_odd_cumulants_of_net_spin_vanish_without_gradient():
    model = tsm.paper_model("pump", N=5, delta_T=0.0)
    c = tsm.exact_counting_statistics(model, NET, order=5)["cumulant"].to_numpy()
    assert np.all(np.abs(c[[0, 2, 4]]) < 1e-10)
    assert c[1] > 0.01 and abs(c[3]) > 1e-4  # the even ones do not
    # finite time too (mirror symmetric state and dynamics)
    cT = tsm.exact_counting_statistics(model, NET, order=3, t=4.0)["cumulant"].to_numpy()
    assert abs(cT[0]) < 1e-10 and abs(cT[2]) < 1e-10 and cT[1] > 0.01


def test_table_shape_and_validation(pump5):
    df = tsm.exact_counting_statistics(pump5, NET, order=3)
    assert list(df.columns) == ["order", "cumulant"] and df["order"].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="loss_left"):
        tsm.exact_counting_statistics(pump5, {"loss_top": 1})
    with pytest.raises(ValueError, match="integer weight"):
        tsm.exact_counting_statistics(pump5, {"pump": 0.5})
    with pytest.raises(ValueError, match="order"):
        tsm.exact_counting_statistics(pump5, NET, order=0)
    with pytest.raises(ValueError, match="t must be >= 0"):
        tsm.exact_counting_statistics(pump5, NET, t=-1.0)
    closed = tsm.paper_model("closed", N=5)
    with pytest.raises(ValueError, match="channel"):
        tsm.exact_counting_statistics(closed, {"pump": 1})
    tau0 = tsm.exact_counting_statistics(pump5, NET, order=2, t=0.0)["cumulant"]
    assert np.all(tau0 == 0)


# --------------------------------------------------------------------------- full-space reference
@pytest.mark.parametrize("counts", [NET, {"pump": 1, "loss_right": 2}])
def test_long_time_rates_match_full_space_tilted_liouvillian(pump5, counts):
    ours = tsm.exact_counting_statistics(pump5, counts, order=4)["cumulant"].to_numpy()
    ref = _dense_rates(pump5, counts, 4)
    np.testing.assert_allclose(ours[:2], ref[:2], rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours[2:], ref[2:], rtol=0, atol=1e-6)


def test_scgf_matches_full_space_and_taylor_series(pump5):
    s = np.array([-0.6, -0.1, 0.0, 0.1, 0.5])
    th = tsm.scgf(pump5, NET, s)
    assert abs(th[2]) < 1e-14
    L, J = _superops(pump5)
    for si, t in zip(s, th, strict=True):
        # eigenvalues nearest a point right of ours: a larger real part would show up
        lam = spla.eigs(_tilted(L, J, NET, si), k=4, sigma=t + 0.3, return_eigenvectors=False,
                        tol=1e-14)
        assert t == pytest.approx(lam.real.max(), abs=1e-10)
    c = tsm.exact_counting_statistics(pump5, NET, order=6)["cumulant"].to_numpy()
    taylor = sum(c[n - 1] * 0.1 ** n / factorial(n) for n in range(1, 7))
    assert th[3] == pytest.approx(taylor, abs=1e-8)
    rf = tsm.rate_function(np.linspace(-1, 1, 41), tsm.scgf(pump5, NET, np.linspace(-1, 1, 41)))
    i = np.argmin(rf["I"].to_numpy())
    assert rf["I"].min() == pytest.approx(0.0, abs=2e-4)  # zero at the mean current
    assert rf["x"].iloc[i] == pytest.approx(c[0], abs=0.02)


@pytest.mark.parametrize("t0", [0.0, 1.5])
def test_finite_time_cumulants_match_full_space(pump5, t0):
    model = pump5.with_(initial=(2, 4))
    ours = tsm.exact_counting_statistics(model, NET, order=4, t=3.0, t0=t0)["cumulant"]
    ref, norm = _dense_finite(model, NET, 3.0, 4, t0=t0)
    assert norm == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(ours.to_numpy()[:2], ref[:2], rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.to_numpy()[2:], ref[2:], rtol=0, atol=1e-6)


def test_finite_time_counting_pump_and_loss_only_model():
    pump = tsm.paper_model("pump", N=4, delta_T=1.0, gamma_pump=1.0, pump_site=2)
    ours = tsm.exact_counting_statistics(pump, {"pump": 1}, order=4, t=2.5)["cumulant"]
    ref, _ = _dense_finite(pump, {"pump": 1}, 2.5, 4)
    np.testing.assert_allclose(ours.to_numpy(), ref, rtol=0, atol=1e-8)
    # loss only (Fig. 5 setup, two magnons): the count of losses ends at 2
    loss = tsm.paper_model("loss", N=5, delta_T=2.0).with_(initial=(2, 3))
    for counts in (NET, {"loss_right": 1}):
        ours = tsm.exact_counting_statistics(loss, counts, order=4, t=2.0)["cumulant"]
        ref, _ = _dense_finite(loss, counts, 2.0, 4)
        np.testing.assert_allclose(ours.to_numpy(), ref, rtol=0, atol=1e-8)
    # long times: every loss has happened, K = #right - #left, mean = 2 (P_R - P_L)
    long = tsm.exact_counting_statistics(loss, {"loss_left": 1, "loss_right": 1}, order=2,
                                         t=60.0)["cumulant"].to_numpy()
    np.testing.assert_allclose(long, [2.0, 0.0], atol=1e-8)
    # long-time rates of a loss-only model vanish (all up absorbs)
    assert np.all(tsm.exact_counting_statistics(loss, NET, order=3)["cumulant"] == 0)


# --------------------------------------------------------------------------- waiting times
def test_waiting_time_density_matches_full_space(pump5):
    chans = ["loss_left", "loss_right"]
    tau = np.array([0.0, 0.3, 1.0, 2.5, 7.0])
    ours = tsm.waiting_time_distribution(pump5, chans, tau)
    L, J = _superops(pump5)
    Lc = L.tocsc()
    rho = spla.eigs(Lc, k=1, sigma=1e-6)[1][:, 0]
    d = 2 ** pump5.N
    tr = np.eye(d).ravel()
    rho /= tr @ rho
    Jc = J["loss_left"] + J["loss_right"]
    y = Jc @ rho
    ref = [(tr @ (Jc @ spla.expm_multiply((Lc - Jc) * t, y))).real / (tr @ y).real for t in tau]
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
    # normalised (a next loss always comes), and the ordered pairs add up
    p = tsm.waiting_time_bins(pump5, chans, [0.0, 40.0, 400.0])
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    w_ab = [tsm.waiting_time_distribution(pump5, chans, tau, start="loss_left", end=b)
            for b in chans]
    w_a = tsm.waiting_time_distribution(pump5, chans, tau, start="loss_left")
    np.testing.assert_allclose(w_ab[0] + w_ab[1], w_a, rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match="unknown channel"):
        tsm.waiting_time_distribution(pump5, ["nope"], tau)


# --------------------------------------------------------------------------- trajectories
@pytest.fixture(scope="module")
def run5():
    model = tsm.paper_model("pump", N=5, delta_T=2.0, gamma_pump=1.551)
    res = tsm.mcsolve(model, np.linspace(0.0, 20.0, 3), ntraj=1000, seed=2024,
                      record_jumps=True, observables=("m",))
    return model, res


@pytest.mark.parametrize("counts,window", [(NET, (4.0, 20.0)), ({"pump": 1}, (0.0, 20.0))])
def test_trajectory_statistics_agree_with_exact(run5, counts, window):
    model, res = run5
    cmp = analysis.compare_counting_statistics(res.jumps, 1000, model, counts, window,
                                               bins=10, tau_max=4.0)
    z = cmp.cumulants["z"]
    # 6 z-scores per call at |z| < 3.5: false alarm probability ~ 3e-3
    assert np.all(np.abs(z[["mean", "var", "fano"]]) < 3.5), cmp.cumulants
    # waiting-time histogram: chi^2 with 10 bins, 99.99% quantile is 33.7
    assert cmp.dof == 10 and cmp.chi2 < 33.7, cmp.waiting
    assert cmp.waiting["p_exact"].sum() < 1.0


# --------------------------------------------------------------------------- CLI
def test_cli_fcs_prints_and_writes(tmp_path, capsys, pump5):
    from thermospin_mc.app.cli import main
    from thermospin_mc.io import read_table

    out = tmp_path / "fcs.csv"
    assert main(["fcs", "--N", "5", "--order", "3", "--counts", "pump=1", "--out",
                 str(out)]) == 0
    df, meta = read_table(out)
    ref = tsm.exact_counting_statistics(pump5, {"pump": 1}, order=3)["cumulant"]
    np.testing.assert_allclose(df["cumulant"].to_numpy(), ref.to_numpy(), rtol=1e-12)
    assert "Fano factor" in capsys.readouterr().out
    assert main(["fcs", "--N", "5", "--counts", "loss_top=1"]) == 2
    assert "loss_left" in capsys.readouterr().err
    assert main(["fcs", "--N", "5", "--counts", "pump=x"]) == 2


def test_finite_time_cumulants_of_a_mixture_combine_its_configurations():
    # G(s, t) = Tr exp(L_s t) rho0 is linear in rho0: the raw moments of a mixture are
    # the weighted raw moments of its pure configurations
    channels = [tsm.Loss(1, 1.0), tsm.Pump(3, 0.5), tsm.Dephasing(2, 0.3)]
    mix = tsm.ChainModel(N=4, profile=tsm.BondCouplings((1.0, 1.2, 0.8)), channels=channels,
                         initial=tsm.mixture({(): 0.2, (2,): 0.5, (2, 4): 0.3}))
    counts = {"loss@1": 1, "pump@3": -1}
    got = tsm.exact_counting_statistics(mix, counts, order=3, t=1.7)["cumulant"].to_numpy()
    raw = np.zeros(3)
    for sites, w in (((), 0.2), ((2,), 0.5), ((2, 4), 0.3)):
        pure = mix.with_(initial=tsm.magnons(*sites))
        k1, k2, k3 = tsm.exact_counting_statistics(pure, counts, order=3,
                                                   t=1.7)["cumulant"].to_numpy()
        raw += w * np.array([k1, k2 + k1**2, k3 + 3 * k2 * k1 + k1**3])
    mu1, mu2, mu3 = raw
    want = np.array([mu1, mu2 - mu1**2, mu3 - 3 * mu2 * mu1 + 2 * mu1**3])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
