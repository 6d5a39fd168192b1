"""Cross-check of the exact block solvers against QuTiP 5 in the full 2^N space.

The QuTiP model is built here from docs/model.md sections 5-7 only (nothing but the
couplings a_l is taken from the package): sz|up> = +|up>, s+ = |up><down|
(qutip.sigmap(), basis(2, 0) = up), h = sum_l (a_l/2) sigma_l . sigma_{l+1}, jump
operators sqrt(gamma) s+_1, sqrt(gamma) s+_N, sqrt(gamma_I) s-_c, observables
n_i = (1 - sz_i)/2, m = (1/2) sum_i sz_i, Eq. 9 j = sum_l (sy_l sx_{l+1} - sx_l sy_{l+1}).
"""

from __future__ import annotations

import numpy as np
import pytest

import thermospin_mc as tsm

qutip = pytest.importorskip("qutip", minversion="5.0")

# QuTiP integrates with atol = 1e-14, rtol = 1e-12 (adaptive ODE over t <= 20, errors
# accumulate to ~1e-11 on O(1) expectation values; at its default-like 1e-10 they
# reach 1e-8 for N = 7); the package is exact to round-off.
# Tolerance 1e-8 leaves two orders of margin and is still far below any physics
# (e.g. a sign or a factor-2 error in a coupling shows up at the 1e-2 level).
TOL = 1e-8
TIMES = np.linspace(0.0, 20.0, 81)


def site_op(op, i, N):
    return qutip.tensor([op if k == i else qutip.qeye(2) for k in range(N)])


def qutip_model(model):
    """(H, c_ops, e_ops dict, psi0) of ``model`` in the full 2^N space."""
    N, a = model.N, np.asarray(model.couplings, dtype=float)
    sx = [site_op(qutip.sigmax(), i, N) for i in range(N)]
    sy = [site_op(qutip.sigmay(), i, N) for i in range(N)]
    sz = [site_op(qutip.sigmaz(), i, N) for i in range(N)]
    H = 0
    for l in range(N - 1):
        H += 0.5 * a[l] * (sx[l] * sx[l + 1] + sy[l] * sy[l + 1] + sz[l] * sz[l + 1])
    c_ops = []
    if model.gamma > 0:
        c_ops.append(np.sqrt(model.gamma) * site_op(qutip.sigmap(), 0, N))
        c_ops.append(np.sqrt(model.gamma) * site_op(qutip.sigmap(), N - 1, N))
    if model.gamma_pump > 0:
        c = model.pump_site - 1
        c_ops.append(np.sqrt(model.gamma_pump) * site_op(qutip.sigmam(), c, N))
    ident = site_op(qutip.qeye(2), 0, N)
    e_ops = {f"n{i + 1}": 0.5 * (ident - sz[i]) for i in range(N)}
    for l in range(N - 1):
        e_ops[f"jb{l + 1}"] = sy[l] * sx[l + 1] - sx[l] * sy[l + 1]
    e_ops["j"] = sum(e_ops[f"jb{l + 1}"] for l in range(N - 1))
    e_ops["m"] = 0.5 * sum(sz)
    down = set(model.initial.sites)  # 1-based magnon sites
    psi0 = qutip.tensor([qutip.basis(2, 1 if i + 1 in down else 0) for i in range(N)])
    return H, c_ops, e_ops, psi0


def assert_matches(res, qexpect, N, rows=slice(None)):
    n_q = np.column_stack([np.real(qexpect[f"n{i + 1}"]) for i in range(N)])[rows]
    jb_q = np.column_stack([np.real(qexpect[f"jb{l + 1}"]) for l in range(N - 1)])[rows]
    np.testing.assert_allclose(res.get("n"), n_q, rtol=0, atol=TOL)
    np.testing.assert_allclose(res.get("j_bond"), jb_q, rtol=0, atol=TOL)
    np.testing.assert_allclose(res.get("j")[:, 0], np.real(qexpect["j"])[rows], rtol=0, atol=TOL)
    np.testing.assert_allclose(res.get("m")[:, 0], np.real(qexpect["m"])[rows], rtol=0, atol=TOL)


@pytest.mark.parametrize("N", [5, 7])
@pytest.mark.parametrize("scenario", ["closed", "loss", "pump"])
def test_mesolve_matches_qutip(scenario, N):
    model = tsm.paper_model(scenario, N=N)
    H, c_ops, e_ops, psi0 = qutip_model(model)
    rho0 = psi0 if scenario == "closed" else qutip.ket2dm(psi0)
    qres = qutip.mesolve(H, rho0, TIMES, c_ops, e_ops=e_ops,
                         options={"atol": 1e-14, "rtol": 1e-12, "nsteps": 100_000})
    res = tsm.mesolve(model, TIMES)
    assert_matches(res, qres.e_data, N)
    # the comparison is not vacuous: things move, currents flow
    assert np.abs(res.get("j")).max() > 1e-2
    if scenario == "pump":
        assert res.get("n")[-1].sum() > 0.1


@pytest.mark.parametrize("N", [5, 7])
@pytest.mark.parametrize("delta_T", [0.0, 2.0])
def test_steadystate_matches_qutip(N, delta_T):
    model = tsm.paper_model("pump", N=N, delta_T=delta_T)
    H, c_ops, e_ops, _ = qutip_model(model)
    rho_ss = qutip.steadystate(H, c_ops)
    qexpect = {k: np.array([qutip.expect(op, rho_ss)]) for k, op in e_ops.items()}
    res = tsm.steadystate(model)
    assert_matches(res, qexpect, N)


def test_two_magnon_loss_matches_qutip():
    # the general block-Liouvillian path (pump-free, two magnons, sectors 0..2)
    N = 5
    model = tsm.paper_model("loss", N=N, delta_T=2.0).with_(initial=[2, 4])
    H, c_ops, e_ops, psi0 = qutip_model(model)
    qres = qutip.mesolve(H, qutip.ket2dm(psi0), TIMES, c_ops, e_ops=e_ops,
                         options={"atol": 1e-14, "rtol": 1e-12, "nsteps": 100_000})
    assert_matches(tsm.mesolve(model, TIMES), qres.e_data, N)


def test_even_N_custom_pump_site_matches_qutip():
    N = 6
    model = tsm.ChainModel(N=N, profile=tsm.LinearProfile(0.0, 3.0), gamma=2.0,
                           gamma_pump=1.0, pump_site=2, initial=[5])
    H, c_ops, e_ops, psi0 = qutip_model(model)
    times = np.linspace(0.0, 8.0, 17)
    qres = qutip.mesolve(H, qutip.ket2dm(psi0), times, c_ops, e_ops=e_ops,
                         options={"atol": 1e-14, "rtol": 1e-12, "nsteps": 100_000})
    assert_matches(tsm.mesolve(model, times), qres.e_data, N)
    rho_ss = qutip.steadystate(H, c_ops)
    qexpect = {k: np.array([qutip.expect(op, rho_ss)]) for k, op in e_ops.items()}
    assert_matches(tsm.steadystate(model), qexpect, N)
