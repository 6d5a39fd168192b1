"""The general chain (docs/general_chain.md) against an independent full-space solver.

The reference below is written from scratch in the 2^N-dimensional Hilbert
space: Pauli matrices, Kronecker products, the 4^N x 4^N Liouvillian of
``d rho/dt = -i[H, rho] + sum_k D[L_k] rho`` acting on row-major vec(rho),
``expm`` for the evolution (the jump counts by an augmented generator) and the
null space for the steady state. It shares nothing with the package but the
conventions: site 1 is the leftmost tensor factor, local basis (up, down),
sigma^z |up> = +|up>, s+ = |up><down|, a magnon is a down spin.

Statistical tolerances follow tests/test_mcsolve.py: at least 90% of the rows
within 2 sem and none beyond 5 sem; rows without spread must match to 7 x
(rule of three) / ntraj.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from zscores import check_against

import thermospin_mc as tsm

#: dense LAPACK on one BLAS thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_blas_thread")

# ----------------------------------------------------------------------------- reference
SZ = np.diag([1.0, -1.0]).astype(complex)
SP = np.array([[0, 1], [0, 0]], dtype=complex)  # |up><down|
SM = SP.T.copy()
SX = np.array([[0, 1], [1, 0]], dtype=complex)
SY = np.array([[0, -1j], [1j, 0]])
NOP = np.diag([0.0, 1.0]).astype(complex)
I2 = np.eye(2, dtype=complex)


def op(N, **local):
    """Kronecker product with the given 0-based site operators (identity elsewhere)."""
    out = np.ones((1, 1), dtype=complex)
    for i in range(N):
        out = np.kron(out, local.get(f"s{i}", I2))
    return out


def site_op(N, i, A, k=None, B=None):
    ops = {f"s{i}": A}
    if k is not None:
        if k == i:
            ops[f"s{i}"] = A @ B
        else:
            ops[f"s{k}"] = B
    return op(N, **ops)


def reference_ops(model):
    N = model.N
    a = np.asarray(model.couplings)
    delta = np.asarray(model.bond_anisotropy)
    h = np.asarray(model.site_fields)
    H = np.zeros((2**N, 2**N), dtype=complex)
    for l in range(N - 1):
        H += a[l] / 2 * (2 * (site_op(N, l, SP, l + 1, SM) + site_op(N, l, SM, l + 1, SP))
                         + delta[l] * site_op(N, l, SZ, l + 1, SZ))
    for i in range(N):
        H += h[i] / 2 * site_op(N, i, SZ)
    Ls = []
    for ch in model.channels:
        A = {"loss": SP, "pump": SM, "dephasing": SZ}[ch.kind]
        Ls.append(np.sqrt(ch.rate) * site_op(N, ch.site, A))
    return H, Ls


def liouvillian_full(H, Ls):
    """Sparse 4^N x 4^N Liouvillian on row-major vec(rho): vec(A rho B) = (A kron B^T) vec."""
    d = H.shape[0]
    eye = sp.identity(d, format="csr")
    Hs = sp.csr_matrix(H)
    L = -1j * (sp.kron(Hs, eye) - sp.kron(eye, Hs.T))
    for C in Ls:
        Cs = sp.csr_matrix(C)
        CdC = Cs.conj().T @ Cs
        L = L + sp.kron(Cs, Cs.conj()) - 0.5 * sp.kron(CdC, eye) - 0.5 * sp.kron(eye, CdC.T)
    return L.tocsr()


def rho0_full(model):
    N = model.N
    ini = model.initial

    def ket(sites):
        v = np.zeros(2**N, dtype=complex)
        idx = sum(1 << (N - 1 - (s - 1)) for s in sites)  # site 1 = most significant bit
        v[idx] = 1.0
        return v

    if isinstance(ini, tsm.Magnons):
        v = ket(ini.sites)
        return np.outer(v, v.conj())
    if isinstance(ini, tsm.StateVector):
        basis = tsm.SectorSpace(model).basis(ini.m)
        v = sum(c * ket(tuple(b)) for c, b in zip(ini.amplitudes, basis, strict=True))
        return np.outer(v, v.conj())
    if isinstance(ini, tsm.ProductMixture):
        rho = np.ones((1, 1))
        for p in ini.p:
            rho = np.kron(rho, np.diag([1 - p, p]))
        return rho.astype(complex)
    rho = np.zeros((2**N, 2**N), dtype=complex)
    for cfg, w in zip(ini.configurations, ini.weights, strict=True):
        v = ket(cfg)
        rho += w * np.outer(v, v.conj())
    return rho


def reference_observables(model, pairs):
    """``[(table observable, site, site2, operator)]`` in the full space."""
    N = model.N
    a = np.asarray(model.couplings)
    rows = []
    jb = [site_op(N, l, SY, l + 1, SX) - site_op(N, l, SX, l + 1, SY) for l in range(N - 1)]
    rows.append(("j", 0, 0, sum(jb)))
    rows += [("j_bond", l + 1, 0, jb[l]) for l in range(N - 1)]
    rows += [("flow", l + 1, 0, a[l] / 2 * jb[l]) for l in range(N - 1)]
    rows.append(("m", 0, 0, sum(site_op(N, i, SZ) for i in range(N)) / 2))
    rows += [("n", i + 1, 0, site_op(N, i, NOP)) for i in range(N)]
    for i, k in pairs:
        rows.append(("nn", i, k, site_op(N, i - 1, NOP, k - 1, NOP)))
        pm = site_op(N, i - 1, SP, k - 1, SM)
        rows.append(("pm_re", i, k, ("re", pm)))
        rows.append(("pm_im", i, k, ("im", pm)))
    return rows


def expect_full(rho, O):
    if isinstance(O, tuple):
        val = np.trace(O[1] @ rho)
        return val.real if O[0] == "re" else val.imag
    return np.trace(O @ rho).real


def reference_mesolve(model, times, pairs):
    """``{(observable, site, site2): array over times}`` including ``count:<name>``."""
    H, Ls = reference_ops(model)
    L = liouvillian_full(H, Ls)
    d2 = L.shape[0]
    nch = len(Ls)
    # augmented generator: d c_k/dt = Tr(L_k^+ L_k rho) = vec((L^+ L)^T) . vec(rho)
    R = sp.csr_matrix(np.array([(C.conj().T @ C).T.ravel() for C in Ls]).reshape(nch, d2))
    A = sp.bmat([[L, None], [R, sp.csr_matrix((nch, nch))]], format="csr") if nch else L
    x0 = np.concatenate([rho0_full(model).ravel(), np.zeros(nch)])
    rows = reference_observables(model, pairs)
    out = {}
    for t in times:
        x = spla.expm_multiply(A * t, x0) if d2 > 300 else sla.expm(A.toarray() * t) @ x0
        rho = x[:d2].reshape(H.shape)
        for name, s1, s2, O in rows:
            out.setdefault((name, s1, s2), []).append(expect_full(rho, O))
        for k, ch in enumerate(model.channels):
            out.setdefault((f"count:{ch.name}", ch.site + 1, 0), []).append(x[d2 + k].real)
    return {k: np.array(v) for k, v in out.items()}


def reference_steady(model, pairs):
    """Steady-state expectations, or None if the steady state is not unique."""
    H, Ls = reference_ops(model)
    L = liouvillian_full(H, Ls).toarray()
    d = H.shape[0]
    # dimension of the null space from a rank-revealing (column-pivoted) QR
    R = sla.qr(L, mode="r", pivoting=True)[0]
    diag = np.abs(np.diag(R))
    if np.sum(diag <= 1e-10 * diag[0]) != 1:
        return None
    # the unique null vector with unit trace: L x = 0, Tr x = 1 (bordered system)
    tr = np.eye(d).ravel()
    x = np.linalg.solve(L + np.outer(tr, tr) / d, tr / d)
    rho = x.reshape(d, d)
    rho = rho / np.trace(rho)
    assert np.abs(L @ rho.ravel()).max() < 1e-10
    return {(name, s1, s2): expect_full(rho, O)
            for name, s1, s2, O in reference_observables(model, pairs)}


def table_dict(res):
    df = res.expect
    s2 = df["site2"] if "site2" in df.columns else np.zeros(len(df), dtype=int)
    out = {}
    for (name, s1, ss2), sub in df.assign(site2=s2).groupby(["observable", "site", "site2"],
                                                           sort=False):
        out[(name, int(s1), int(ss2))] = sub["mean"].to_numpy()
    return out


# ----------------------------------------------------------------------------- random models
def random_model(seed, N, kinds=None, initial=None, scalar_aniso=None):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 1.5, N - 1)
    aniso = (float(rng.uniform(-1, 2)) if (scalar_aniso if scalar_aniso is not None
                                           else rng.random() < 0.5)
             else tuple(rng.uniform(-1, 2, N - 1)))
    fields = rng.uniform(-1, 1, N) if rng.random() < 0.7 else None
    if kinds is None:
        kinds = list(rng.choice(["loss", "pump", "dephasing"], size=rng.integers(1, 5)))
    spec = {"loss": tsm.Loss, "pump": tsm.Pump, "dephasing": tsm.Dephasing}
    chans = [spec[k](site=int(rng.integers(1, N + 1)), rate=float(rng.uniform(0.2, 1.5)),
                     name=f"c{j}") for j, k in enumerate(kinds)]
    if initial is None:
        choice = rng.integers(0, 4)
        if choice == 0:
            initial = tsm.magnons(*sorted(rng.choice(np.arange(1, N + 1), 2, replace=False)))
        elif choice == 1:
            m = int(rng.integers(1, N))
            dim = tsm.SectorSpace(tsm.ChainModel(N=N)).dim(m)
            initial = tsm.StateVector(m, tuple(rng.normal(size=dim) + 1j * rng.normal(size=dim)))
        elif choice == 2:
            initial = tsm.product_mixture(rng.uniform(0, 1, N))
        else:
            initial = tsm.mixture({(): 0.2, (1,): 0.3, (2, N): 0.5})
    return tsm.ChainModel(N=N, profile=tsm.BondCouplings(tuple(a)), anisotropy=aniso,
                          fields=fields, channels=chans, initial=initial)


CASES = [
    # (seed, N, kinds, initial) -- None: random
    (1, 4, None, None),
    (2, 4, None, None),
    (3, 5, None, None),
    (4, 5, None, None),
    (5, 4, ["dephasing"], tsm.product_mixture([0.2, 0.5, 0.9, 0.1])),   # dephasing only
    (6, 4, ["pump", "pump", "loss"], None),                              # two pumps
    (7, 5, ["loss", "dephasing", "pump", "dephasing"], None),
    (8, 4, ["pump", "loss"], tsm.mixture({(1,): 0.5, (2, 3): 0.25, (1, 2, 4): 0.25})),
    (9, 5, None, tsm.product_mixture([0.1, 0.7, 0.0, 1.0, 0.4])),
    (10, 4, ["loss", "dephasing"], tsm.magnons(2, 3)),                   # loss only
    (11, 4, ["pump", "dephasing", "dephasing"], tsm.magnons(1)),         # pump only
]


def same_site_model():
    # loss and dephasing on one site, and a pump on the same site as well
    return tsm.ChainModel(
        N=4, profile=tsm.BondCouplings((0.7, 1.3, 1.1)), anisotropy=(0.4, -0.8, 1.5),
        fields=(0.3, -0.5, 0.0, 0.8),
        channels=[tsm.Loss(2, 0.9), tsm.Dephasing(2, 0.4), tsm.Pump(2, 0.3), tsm.Loss(4, 0.6)],
        initial=tsm.product_mixture([0.3, 0.6, 0.2, 0.5]))


TIMES = np.array([0.0, 0.35, 1.1, 2.5])
PAIRS = [(1, 3), (2, 2), (3, 1), (2, 4)]


def _models():
    out = [random_model(seed, N, kinds, ini) for seed, N, kinds, ini in CASES]
    out.append(same_site_model())
    return out


@pytest.mark.parametrize("model", _models(), ids=lambda m: f"N{m.N}-" + "-".join(
    c.kind[0] + str(c.site + 1) for c in m.channels))
def test_mesolve_matches_full_space_lindblad(model):
    pairs = [p for p in PAIRS if max(p) <= model.N]
    ref = reference_mesolve(model, TIMES, pairs)
    res = tsm.mesolve(model, TIMES, observables=["j", "j_bond", "flow", "m", "n", "norm",
                                                 "nn", "pm", "count"], pairs=pairs)
    got = table_dict(res)
    for key, val in ref.items():
        assert key in got, key
        np.testing.assert_allclose(got[key], val, rtol=0, atol=1e-8, err_msg=str(key))
    np.testing.assert_allclose(got[("norm", 0, 0)], 1.0, atol=1e-10)


@pytest.mark.parametrize("model", _models(), ids=lambda m: f"N{m.N}-" + "-".join(
    c.kind[0] + str(c.site + 1) for c in m.channels))
def test_steadystate_matches_full_space_null_vector(model):
    pairs = [p for p in PAIRS if max(p) <= model.N]
    ref = reference_steady(model, pairs)
    if ref is None:
        with pytest.raises(ValueError, match="not unique"):
            tsm.steadystate(model, pairs=pairs)
        return
    res = tsm.steadystate(model, pairs=pairs)
    got = table_dict(res)
    for key, val in ref.items():
        np.testing.assert_allclose(got[key][0], val, rtol=0, atol=1e-8, err_msg=str(key))


def test_six_site_model_matches_full_space():
    model = tsm.ChainModel(
        N=6, profile=tsm.LinearProfile(0.0, 2.0), anisotropy=0.6,
        fields=(0.2, 0.0, -0.4, 0.1, 0.0, 0.5),
        channels=[tsm.Pump(1, 0.8), tsm.Loss(6, 1.1), tsm.Dephasing(3, 0.3)],
        initial=tsm.product_mixture([0.5, 0.1, 0.0, 0.3, 0.0, 0.2]))
    pairs = [(1, 6), (3, 4)]
    ref = reference_mesolve(model, np.array([0.0, 0.9]), pairs)
    got = table_dict(tsm.mesolve(model, np.array([0.0, 0.9]), pairs=pairs,
                                 observables=["j_bond", "n", "nn", "pm", "count", "m"]))
    for key, val in got.items():
        np.testing.assert_allclose(val, ref[key], rtol=0, atol=1e-8, err_msg=str(key))


def test_dephasing_only_steady_state_is_refused():
    model = tsm.ChainModel(N=4, channels=[tsm.Dephasing(2, 0.5)], initial=[1])
    with pytest.raises(ValueError, match="not unique"):
        tsm.steadystate(model)


def test_boundary_driven_steady_state_is_unique_and_balanced():
    model = tsm.boundary_driven(4, rate_in=0.7, rate_out=1.3, anisotropy=0.5)
    ref = reference_steady(model, [])
    assert ref is not None
    ss = tsm.steadystate(model, method="gmres")
    n = ss.get("n")[0]
    for i in range(4):
        assert abs(n[i] - ref[("n", i + 1, 0)]) < 1e-9
    # pump rate into site 1 equals the loss rate out of site N
    assert abs(0.7 * (1 - n[0]) - 1.3 * n[-1]) < 1e-10
    # and the flow is the same on every bond (continuity in the steady state)
    flow = ss.get("flow")[0]
    np.testing.assert_allclose(flow, 1.3 * n[-1], atol=1e-10)


# ----------------------------------------------------------------------------- exact identities
def test_dephasing_keeps_populations_and_kills_coherences_at_rate_2r():
    # no hopping (couplings 0), no field: H is diagonal, dephasing at every site
    # leaves the site populations fixed and multiplies a one-magnon coherence
    # between sites i != k by exp(-2 (r_i + r_k) t) (each site contributes 2 r)
    r = 0.37
    psi = np.array([0.6, 0.0, 0.8j, 0.0])
    model = tsm.with_dephasing(tsm.ChainModel(N=4, profile=tsm.BondCouplings((0.0, 0.0, 0.0)),
                                              initial=tsm.StateVector(1, tuple(psi))), r)
    t = np.array([0.0, 0.5, 1.3])
    res = tsm.mesolve(model, t, pairs=[(1, 3)])
    np.testing.assert_allclose(res.get("n"), np.tile(np.abs(psi) ** 2, (3, 1)), atol=1e-13)
    # <s+_1 s-_3> = rho[1, 3] = psi_1 conj(psi_3) in the one-magnon sector
    pm = res.get("pm_re")[:, 0] + 1j * res.get("pm_im")[:, 0]
    np.testing.assert_allclose(pm, psi[0] * np.conj(psi[2]) * np.exp(-4 * r * t), atol=1e-13)


def test_dephasing_on_one_site_kills_its_coherences_at_rate_2r_and_conserves_populations():
    # a hopping chain: at t = 0+ the populations do not change (d<n_i>/dt = 0 for a
    # site-localised state) and with hopping switched off coherences to the dephased
    # site decay at exactly 2 r
    r = 0.8
    psi = np.array([1.0, 1.0j, 0.0, 0.0]) / np.sqrt(2)
    base = tsm.ChainModel(N=4, profile=tsm.BondCouplings((0.0, 0.0, 0.0)),
                          initial=tsm.StateVector(1, tuple(psi)),
                          channels=[tsm.Dephasing(2, r)])
    t = np.array([0.0, 0.4, 1.0])
    res = tsm.mesolve(base, t, pairs=[(1, 2)])
    pm = res.get("pm_re")[:, 0] + 1j * res.get("pm_im")[:, 0]
    np.testing.assert_allclose(pm, psi[0] * np.conj(psi[1]) * np.exp(-2 * r * t), atol=1e-13)
    np.testing.assert_allclose(res.get("n")[:, :2], 0.5, atol=1e-13)
    hop = base.with_(profile=tsm.BondCouplings((1.0, 0.7, 1.2)), initial=[2])
    h = 1e-6
    n = tsm.mesolve(hop, [0.0, h]).get("n")
    assert np.abs(n[1] - n[0]).max() < 1e-10  # O(h^2): populations start flat


def test_field_gradient_conserves_magnetisation_of_closed_chain():
    model = tsm.ChainModel(N=6, profile=tsm.StepProfile(0.0, 2.0), anisotropy=(0.3, 1, 2, 1, .5),
                           fields=np.linspace(-1.0, 1.5, 6),
                           initial=tsm.mixture({(2, 5): 0.5, (1, 3, 4): 0.5}))
    res = tsm.mesolve(model, np.linspace(0, 5, 11))
    np.testing.assert_allclose(res.get("m")[:, 0], 3 - 2.5, atol=1e-12)
    n = res.get("n")
    np.testing.assert_allclose(n.sum(axis=1), 2.5, atol=1e-12)
    assert np.abs(n - n[0]).max() > 0.05  # the magnons do move


def test_continuity_with_xxz_current_fields_and_jumps():
    # d<n_i>/dt = F_{i-1} - F_i - (loss rate at i) + (pump rate at i), dephasing adds nothing
    model = tsm.ChainModel(
        N=5, profile=tsm.BondCouplings((0.8, 1.2, 0.9, 1.4)), anisotropy=(2.0, -0.5, 0.7, 1.3),
        fields=(0.5, -0.3, 0.9, 0.0, -1.0),
        channels=[tsm.Loss(1, 0.6), tsm.Pump(3, 0.4), tsm.Dephasing(4, 0.9), tsm.Loss(5, 0.3)],
        initial=tsm.StateVector(2, tuple(np.exp(1j * np.arange(10)) * np.linspace(1, 2, 10))))
    t0, h = 0.7, 1e-4
    res = tsm.mesolve(model, [t0 - h, t0, t0 + h])
    n = res.get("n")
    dndt = (n[2] - n[0]) / (2 * h)
    F = res.get("flow")[1]
    Fp = np.concatenate([[0.0], F, [0.0]])
    rhs = Fp[:-1] - Fp[1:]
    nn = n[1]
    rhs[0] -= 0.6 * nn[0]
    rhs[4] -= 0.3 * nn[4]
    rhs[2] += 0.4 * (1 - nn[2])
    np.testing.assert_allclose(dndt, rhs, atol=1e-7)


def test_current_is_four_times_imaginary_part_of_coherence():
    model = random_model(11, 5, ["loss", "pump", "dephasing"],
                         tsm.product_mixture([0.3, 0.8, 0.2, 0.6, 0.5]))
    pairs = [(l, l + 1) for l in range(1, 5)]
    res = tsm.mesolve(model, [0.0, 0.6, 1.7], pairs=pairs)
    np.testing.assert_allclose(res.get("j_bond"), 4 * res.get("pm_im"), atol=1e-12)


def test_exit_probabilities_with_dephasing_and_mixture_match_integrated_counts():
    model = tsm.ChainModel(N=5, profile=tsm.BondCouplings((1.0, 0.6, 1.3, 0.9)),
                           anisotropy=0.4, fields=(0.0, 0.5, 0.0, -0.5, 0.2),
                           channels=[tsm.Loss(1, 0.8), tsm.Loss(4, 1.4),
                                     tsm.Dephasing(3, 0.6)],
                           initial=tsm.mixture({(3,): 0.5, (2, 5): 0.5}))
    ex = tsm.exit_probabilities(model)
    assert list(ex.index) == ["loss@1", "loss@4"]
    # every magnon leaves: the expected losses add up to the mean initial magnon number
    assert abs(ex.sum() - 1.5) < 1e-9
    # and they are the long-time limits of the exact jump counts (full-space reference)
    ref = reference_mesolve(model, np.array([200.0]), [])
    assert abs(ex["loss@1"] - ref[("count:loss@1", 1, 0)][0]) < 1e-7
    assert abs(ex["loss@4"] - ref[("count:loss@4", 4, 0)][0]) < 1e-7


# ----------------------------------------------------------------------------- trajectories
TRAJ_TIMES = np.linspace(0.0, 4.0, 21)


@pytest.mark.parametrize("case", [1, 5, 6, 8, 9, 10])
def test_trajectories_agree_with_mesolve_for_general_models(case):
    seed, N, kinds, ini = next(c for c in CASES if c[0] == case)
    model = random_model(seed, N, kinds, ini)
    pairs = [p for p in PAIRS if max(p) <= model.N]
    obs = ["j", "j_bond", "m", "n", "nn", "pm", "count"]
    ntraj = 2000
    res = tsm.mcsolve(model, TRAJ_TIMES, ntraj=ntraj, seed=400 + case, observables=obs,
                      pairs=pairs)
    ref = tsm.mesolve(model, TRAJ_TIMES, observables=obs, pairs=pairs)
    check_against(res, ref, ntraj)


def test_same_site_channels_trajectories_in_taylor_mode():
    model = same_site_model()
    obs = ["j", "n", "pm", "count"]
    res = tsm.mcsolve(model, TRAJ_TIMES, ntraj=4000, seed=9, observables=obs, pairs=[(1, 2)],
                      cluster=tsm.Cluster(dense_max=1))
    check_against(res, tsm.mesolve(model, TRAJ_TIMES, observables=obs, pairs=[(1, 2)]),
                   4000)


def test_mixed_initial_state_is_bit_identical_across_jobs_and_batches():
    model = random_model(9, 5, None, tsm.product_mixture([0.1, 0.7, 0.0, 1.0, 0.4]))
    kw = dict(ntraj=300, seed=5, observables=["n", "count"], record_jumps=True)
    a = tsm.mcsolve(model, TRAJ_TIMES, **kw)
    b = tsm.mcsolve(model, TRAJ_TIMES, n_jobs=2, **kw, cluster=tsm.Cluster(batch_size=64))
    assert a.expect.equals(b.expect)
    assert a.jumps.equals(b.jumps)
    # the initial configuration is drawn per trajectory: sites 3 and 4 are fixed
    n0 = a.get("n")[0]
    assert abs(n0[2]) < 1e-15 and abs(n0[3] - 1.0) < 1e-15 and 0 < n0[1] < 1


def test_product_mixture_initial_draw_matches_probabilities():
    p = np.array([0.15, 0.5, 0.85, 0.3])
    model = tsm.ChainModel(N=4, initial=tsm.product_mixture(p))  # closed: n stays put
    res = tsm.mcsolve(model, [0.0], ntraj=4000, seed=2, observables=["n", "m"])
    z = (res.get("n")[0] - p) / res.get("n", "sem")[0]
    assert np.abs(z).max() < 4


# ----------------------------------------------------------------------------- model API
def test_channel_validation_and_names():
    with pytest.raises(ValueError, match="either channels"):
        tsm.ChainModel(N=4, gamma=1.0, channels=[tsm.Loss(1, 1.0)])
    with pytest.raises(ValueError, match="site"):
        tsm.ChainModel(N=4, channels=[tsm.Loss(5, 1.0)])
    with pytest.raises(ValueError, match="rate"):
        tsm.ChainModel(N=4, channels=[tsm.Pump(2, 0.0)])
    with pytest.raises(ValueError, match="unique"):
        tsm.ChainModel(N=4, channels=[tsm.Loss(2, 1.0), tsm.Loss(2, 0.5)])
    with pytest.raises(ValueError, match="anisotropy"):
        tsm.ChainModel(N=4, anisotropy=(1.0, 2.0))
    with pytest.raises(ValueError, match="fields"):
        tsm.ChainModel(N=4, fields=(1.0, 2.0))
    with pytest.raises(ValueError, match="product_mixture"):
        tsm.ChainModel(N=3, initial=tsm.product_mixture([0.5, 1.2, 0.0]))
    m = tsm.ChainModel(N=4, channels=[tsm.Loss(2, 1.0), tsm.Loss(2, 0.5, name="slow"),
                                      tsm.Dephasing(3, 0.1)])
    assert [c.name for c in m.channels] == ["loss@2", "slow", "dephasing@3"]
    assert [c.dm for c in m.channels] == [-1, -1, 0]
    assert [c.site for c in m.channels] == [1, 1, 2]
    assert tsm.paper_model("pump").channels[2].name == "pump"


def test_metadata_rebuilds_the_model_and_fingerprints_differ():
    model = same_site_model()
    again = tsm.ChainModel.from_dict(model.to_dict())
    assert again == model and again.fingerprint() == model.fingerprint()
    assert model.with_(fields=None).fingerprint() != model.fingerprint()
    paper = tsm.paper_model("pump")
    assert "channels" not in paper.to_dict() and "fields" not in paper.to_dict()
    assert tsm.ChainModel.from_dict(paper.to_dict()) == paper
    dep = tsm.with_dephasing(paper, 0.2, sites=[2, 5])
    assert [c.name for c in dep.channels][:3] == ["loss_left", "loss_right", "pump"]
    assert dep.reachable_sectors() == list(range(8))
    bd = tsm.boundary_driven(6, 0.5, 1.0)
    assert [(c.kind, c.site) for c in bd.channels] == [("pump", 0), ("loss", 5)]
    mix = tsm.ChainModel(N=5, initial=tsm.product_mixture([0, 1, 0.5, 0.5, 0]),
                         channels=[tsm.Dephasing(1, 1.0)])
    assert mix.reachable_sectors() == [1, 2, 3]


def test_pairs_need_valid_sites():
    model = tsm.paper_model("pump", N=5)
    with pytest.raises(ValueError, match="pair sites"):
        tsm.mesolve(model, [0.0, 1.0], pairs=[(0, 2)])
    with pytest.raises(ValueError, match="need pairs"):
        tsm.mcsolve(model, [0.0, 1.0], ntraj=10, observables=["nn"])


def test_all_configurations_of_a_mixture_are_reached_by_trajectories():
    # every configuration of a small mixture shows up with its weight
    model = tsm.ChainModel(N=4, initial=tsm.mixture({(1,): 0.2, (2, 3): 0.3, (1, 2, 4): 0.5}))
    res = tsm.mcsolve(model, [0.0], ntraj=3000, seed=8, observables=["m", "n"])
    exp_n = np.zeros(4)
    for cfg, w in {(1,): 0.2, (2, 3): 0.3, (1, 2, 4): 0.5}.items():
        for s in cfg:
            exp_n[s - 1] += w
    z = (res.get("n")[0] - exp_n) / res.get("n", "sem")[0]
    assert np.abs(z).max() < 4


def test_two_point_results_merge_and_compare_on_both_sites():
    model = tsm.boundary_driven(4, 0.8, 1.2, initial=tsm.product_mixture([0.5] * 4))
    kw = dict(observables=["n", "nn", "pm"], pairs=[(1, 2), (1, 3)])
    a = tsm.mcsolve(model, [0.0, 1.0], ntraj=128, seed=1, **kw)
    b = tsm.mcsolve(model, [0.0, 1.0], ntraj=64, seed=2, **kw)
    whole = tsm.merge(a, b)
    assert whole.get("nn").shape == (2, 2)
    assert list(whole.expect.query("observable == 'nn'")["site2"].unique()) == [2, 3]
    z = whole.compare(tsm.mesolve(model, [0.0, 1.0], **kw))
    assert "site2" in z.columns and len(z) == len(whole.expect)
    # at t = 0 the product mixture gives <n_1 n_3> = p_1 p_3 and <s+_1 s-_3> = 0
    ref0 = tsm.mesolve(model, [0.0], **kw)
    np.testing.assert_allclose(ref0.get("nn")[0], [0.25, 0.25], atol=1e-14)
    np.testing.assert_allclose(ref0.get("pm_re")[0], [0.0, 0.0], atol=1e-14)


def test_loss_in_the_middle_of_a_symmetric_chain_leaves_a_dark_state():
    # uniform 3-site chain, loss at site 2 only: (|1> - |3>)/sqrt(2) is an eigenstate
    # of h with no weight on site 2, so it never decays (full-space check below)
    model = tsm.ChainModel(N=3, profile=tsm.BondCouplings((1.0, 1.0)), initial=[1],
                           channels=[tsm.Loss(2, 1.0)])
    assert reference_steady(model, []) is None
    with pytest.raises(ValueError, match="not unique"):
        tsm.steadystate(model)
    with pytest.raises(ValueError, match="dark|never"):
        tsm.exit_probabilities(model)
    # with dephasing at site 1 the dark state is mixed away: unique again (all up)
    dep = tsm.with_dephasing(model, 0.5, sites=[1])
    assert reference_steady(dep, []) is not None
    np.testing.assert_allclose(tsm.steadystate(dep).get("m")[0, 0], 1.5, atol=1e-12)
    ex = tsm.exit_probabilities(dep)
    np.testing.assert_allclose(ex["loss@2"], 1.0, atol=1e-9)
    # dephasing at site 2 instead does not help: the state is an eigenstate of sz_2
    dep2 = tsm.with_dephasing(model, 0.5, sites=[2])
    assert reference_steady(dep2, []) is None
    with pytest.raises(ValueError, match="not unique"):
        tsm.steadystate(dep2)
    with pytest.raises(ValueError, match="never"):
        tsm.exit_probabilities(dep2)


def test_gmres_steady_state_with_dephasing_matches_full_space():
    # the GMRES path preconditions with the no-jump inverse; the dephasing jumps
    # (inside the blocks) must be carried by the iteration
    model = tsm.with_dephasing(tsm.boundary_driven(4, 0.9, 0.6, anisotropy=(0.5, 1.5, -0.3),
                                                   fields=(0.2, -0.1, 0.4, 0.0)), 0.7,
                               sites=[2, 3])
    ref = reference_steady(model, [(1, 4)])
    got = table_dict(tsm.steadystate(model, method="gmres", pairs=[(1, 4)]))
    for key, val in ref.items():
        np.testing.assert_allclose(got[key][0], val, rtol=0, atol=1e-8, err_msg=str(key))


def test_channel_tables_are_validated():
    from thermospin_mc.physics.model import channel_from_dict

    spec = channel_from_dict({"kind": "dephasing", "site": 3, "rate": 0.2})
    model = tsm.ChainModel(N=4, channels=[spec])
    assert model.channels[0].name == "dephasing@3"
    with pytest.raises(ValueError, match="kind"):
        channel_from_dict({"kind": "gain", "site": 1, "rate": 1.0})
    with pytest.raises(ValueError, match="lacks"):
        channel_from_dict({"kind": "loss", "site": 1})
    with pytest.raises(ValueError, match="unknown"):
        channel_from_dict({"kind": "loss", "site": 1, "rate": 1.0, "gamma": 2})


def test_review_regressions_mixtures_with_the_all_up_state_and_exact_round_trips():
    # exit probabilities of a mixture with weight on the all-up state: that part never
    # loses anything; each magnon leaves through one of the two symmetric edges
    m = tsm.ChainModel(N=3, channels=[tsm.Loss(site=1, rate=1.0), tsm.Loss(site=3, rate=1.0)],
                       initial=tsm.product_mixture([0.5, 0.5, 0.5]))
    ex = tsm.exit_probabilities(m)
    np.testing.assert_allclose(ex.to_numpy(), [0.75, 0.75], rtol=0, atol=1e-12)
    one = tsm.ChainModel(N=3, channels=[tsm.Loss(site=1, rate=1.0)],
                         initial=tsm.mixture({(): 0.5, (2,): 0.5}))
    assert abs(tsm.exit_probabilities(one)["loss@1"] - 0.5) < 1e-12
    # finite-time counting from a mixture spanning sectors 1 and 3 with a pump only:
    # the mean count equals mesolve's integrated count
    pm = tsm.ChainModel(N=3, channels=[tsm.Pump(site=1, rate=1.0)],
                        initial=tsm.mixture({(2,): 0.5, (1, 2, 3): 0.5}))
    c = tsm.exact_counting_statistics(pm, {"pump@1": 1}, order=2, t=1.0)["cumulant"]
    ref = tsm.mesolve(pm, [1.0], observables=["count"]).get("count:pump@1")[0, 0]
    assert abs(c.iloc[0] - ref) < 1e-10
    # a normalised state vector survives to_dict/from_dict bit for bit
    sv = tsm.ChainModel(N=3, initial=tsm.StateVector(1, (0.3 + 0.1j, 0.7, -0.2j)))
    again = tsm.ChainModel.from_dict(sv.to_dict())
    assert again == sv and again.fingerprint() == sv.fingerprint()
