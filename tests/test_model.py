"""Tests for thermospin_mc.model: validation, profiles, couplings, metadata, paper presets.

Physics contract: docs/model.md sections 4 (profiles -> bond temperatures -> couplings),
6 (channels, pump site) and 8 (paper scenarios).
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

import thermospin_mc as tsm

GAMMA_PAPER = 3.102
GAMMA_PUMP_PAPER = 0.620


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"N": 5, "gamma": -1.0}, "gamma"),
        ({"N": 5, "gamma": float("nan")}, "gamma"),
        ({"N": 5, "gamma_pump": -0.1}, "gamma_pump"),
        ({"N": 5, "gamma_pump": float("inf")}, "gamma_pump"),
        ({"N": 1}, "N"),
        ({"N": 0}, "N"),
        ({"N": -3}, "N"),
        ({"N": 2.5}, "N"),
        ({"N": 6, "gamma_pump": 0.5}, "pump_site"),
        ({"N": 5, "gamma_pump": 0.5, "pump_site": 0}, "pump_site"),
        ({"N": 5, "gamma_pump": 0.5, "pump_site": 6}, "pump_site"),
        ({"N": 5, "alpha_method": "bogus"}, "alpha_method"),
        ({"N": 5, "alpha_method": "enumerate"}, "alpha_method"),
        ({"N": 5, "profile": "linear"}, "profile"),
        ({"N": 5, "profile": 2.0}, "profile"),
        ({"N": 5, "profile": {"kind": "uniform", "T": 1.0}}, "profile"),
        ({"N": 5, "rho": 0.0}, "rho"),
        ({"N": 5, "initial": 0}, "initial magnon site"),
        ({"N": 5, "initial": 6}, "initial magnon site"),
        ({"N": 5, "initial": [1, 7]}, "initial magnon site"),
        ({"N": 5, "initial": [2, 2]}, "distinct"),
        ({"N": 5, "initial": "all_down"}, "initial"),
    ],
)
def test_chain_model_rejects_bad_fields(kwargs, field):
    with pytest.raises(ValueError, match=field):
        tsm.ChainModel(**kwargs)


def test_even_N_pump_needs_explicit_site_only_when_pumped():
    # even N without a pump is fine and has no pump site
    m = tsm.ChainModel(N=6, gamma=1.0)
    assert m.pump_site is None
    # with an explicit site it is accepted
    m = tsm.ChainModel(N=6, gamma_pump=0.5, pump_site=3)
    assert m.pump_site == 3
    assert [ch.name for ch in m.channels] == ["pump"]
    # odd N defaults to the centre (N + 1) / 2
    assert tsm.ChainModel(N=7, gamma_pump=0.5).pump_site == 4


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: tsm.UniformProfile(T=-0.5), "T"),
        (lambda: tsm.UniformProfile(T=float("nan")), "T"),
        (lambda: tsm.StepProfile(T1=-1.0, T2=2.0), "T1"),
        (lambda: tsm.StepProfile(T1=0.0, T2=-2.0), "T2"),
        (lambda: tsm.StepProfile(T1=0.0, T2=float("nan")), "T2"),
        (lambda: tsm.LinearProfile(T1=-1e-9, T2=1.0), "T1"),
        (lambda: tsm.LinearProfile(T1=float("nan"), T2=1.0), "T1"),
        (lambda: tsm.LinearProfile(T1=0.0, T2=float("inf")), "T2"),
        (lambda: tsm.BondTemperatures((0.0, -1.0, 2.0)), "bond temperatures"),
        (lambda: tsm.BondTemperatures((0.0, float("nan"), 2.0)), "bond temperatures"),
        (lambda: tsm.BondCouplings((1.0, -1.0)), "couplings"),
        (lambda: tsm.BondCouplings((1.0, float("nan"))), "couplings"),
    ],
)
def test_profiles_reject_negative_and_nan_temperatures(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_bond_arrays_must_have_N_minus_1_entries():
    with pytest.raises(ValueError, match="bond temperatures"):
        tsm.ChainModel(N=5, profile=tsm.BondTemperatures((0.0, 1.0, 2.0)))
    with pytest.raises(ValueError, match="couplings"):
        tsm.ChainModel(N=5, profile=tsm.BondCouplings((1.0,) * 5))


def test_state_vector_validation():
    N = 5
    # C(5, 2) = 10 entries required
    with pytest.raises(ValueError, match="initial state vector"):
        tsm.ChainModel(N=N, initial=tsm.StateVector(2, tuple(np.ones(9))))
    with pytest.raises(ValueError, match="initial state vector"):
        tsm.ChainModel(N=N, initial=tsm.StateVector(1, tuple(np.ones(6))))
    with pytest.raises(ValueError, match="norm"):
        tsm.ChainModel(N=N, initial=tsm.StateVector(2, tuple(np.zeros(10))))
    with pytest.raises(ValueError, match="initial"):
        tsm.ChainModel(N=N, initial=tsm.StateVector(2, tuple([np.nan] + [1.0] * 9)))
    with pytest.raises(ValueError, match="initial.m"):
        tsm.ChainModel(N=N, initial=tsm.StateVector(6, (1.0,)))
    # a valid one is normalised on use
    amps = np.arange(1, 11) * (1 + 0.5j)
    m = tsm.ChainModel(N=N, initial=tsm.StateVector(2, tuple(amps)))
    stored = np.asarray(m.initial.amplitudes)
    assert np.linalg.norm(stored) == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_allclose(stored, amps / np.linalg.norm(amps), atol=1e-15)
    assert m.initial_sector == 2


def test_initial_state_forms():
    assert tsm.ChainModel(N=5).initial == tsm.magnons()
    assert tsm.ChainModel(N=5, initial=3).initial.sites == (3,)
    # sites are sorted; list / tuple / Magnons are equivalent
    assert tsm.ChainModel(N=5, initial=[4, 2]).initial.sites == (2, 4)
    assert tsm.ChainModel(N=5, initial=tsm.magnons(4, 2)).initial.sites == (2, 4)
    assert tsm.ChainModel(N=5, initial=tsm.magnons([5, 1])).initial_sector == 2


def test_reachable_sectors():
    assert tsm.ChainModel(N=5, initial=[1, 3]).reachable_sectors() == [2]
    assert tsm.ChainModel(N=5, initial=[1, 3], gamma=1.0).reachable_sectors() == [0, 1, 2]
    assert tsm.ChainModel(N=5, gamma_pump=1.0).reachable_sectors() == [0, 1, 2, 3, 4, 5]
    assert tsm.ChainModel(N=5, initial=2, gamma_pump=1.0).reachable_sectors() == [1, 2, 3, 4, 5]


# ------------------------------------------------------------------ profiles (docs/model.md s. 4)
@pytest.mark.parametrize("N", [2, 3, 4, 5, 6, 7, 8, 9, 12])
def test_step_profile_bond_temperatures(N):
    T1, T2 = 0.3, 2.0
    got = tsm.StepProfile(T1, T2).bond_temperatures(N)
    assert got.shape == (N - 1,)
    for l in range(1, N):  # bond l joins sites l, l+1
        expected = T1 if l < (N + 1) / 2 else T2
        assert got[l - 1] == expected
    model = tsm.ChainModel(N=N, profile=tsm.StepProfile(T1, T2))
    np.testing.assert_array_equal(model.bond_temperatures, got)


def test_step_profile_N7_explicit():
    # N = 7: bonds 1, 2, 3 are cold (l < 4), bonds 4, 5, 6 hot; the centre site 4 is
    # the first site of the first hot bond.
    got = tsm.StepProfile(0.0, 2.0).bond_temperatures(7)
    np.testing.assert_array_equal(got, [0, 0, 0, 2, 2, 2])


@pytest.mark.parametrize("N", [3, 4, 5, 7, 9, 11])
@pytest.mark.parametrize(("T1", "T2"), [(0.0, 2.0), (0.7, 3.1), (3.0, 1.0), (1.5, 1.5)])
def test_linear_profile_bond_temperatures(N, T1, T2):
    got = tsm.LinearProfile(T1, T2).bond_temperatures(N)
    assert got.shape == (N - 1,)
    # outer bonds sit exactly at T1 and T2 (Delta T is the edge difference)
    assert got[0] == T1
    assert got[-1] == T2
    l = np.arange(1, N)
    np.testing.assert_allclose(got, T1 + (T2 - T1) * (l - 1) / (N - 2), rtol=0, atol=1e-15)
    # equally spaced
    np.testing.assert_allclose(np.diff(got), (T2 - T1) / (N - 2), rtol=0, atol=1e-14)


def test_linear_profile_paper_values():
    # N = 7, Delta T = 2: T_l = 0, 0.4, 0.8, 1.2, 1.6, 2.0 (hand computed)
    got = tsm.LinearProfile(0.0, 2.0).bond_temperatures(7)
    np.testing.assert_allclose(got, [0.0, 0.4, 0.8, 1.2, 1.6, 2.0], rtol=0, atol=1e-15)


def test_uniform_and_user_profiles():
    np.testing.assert_array_equal(tsm.UniformProfile(1.25).bond_temperatures(6), [1.25] * 5)
    vals = (0.0, 0.5, 3.0, 0.1)
    m = tsm.ChainModel(N=5, profile=tsm.BondTemperatures(vals))
    np.testing.assert_array_equal(m.bond_temperatures, vals)
    c = (1.0, 2.0, 0.5, 1.5)
    m = tsm.ChainModel(N=5, profile=tsm.BondCouplings(c))
    np.testing.assert_array_equal(m.couplings, c)
    assert m.bond_temperatures is None


# ------------------------------------------------------------------ couplings = a(T_l)
@pytest.mark.parametrize("method", ["canonical", "thermodynamic", "sommerfeld"])
@pytest.mark.parametrize(
    "profile",
    [tsm.UniformProfile(1.0), tsm.StepProfile(0.0, 2.0), tsm.LinearProfile(0.0, 3.0),
     tsm.BondTemperatures((0.0, 0.2, 4.0, 1.0, 0.5, 2.5))],
)
def test_couplings_are_alpha_ratio_of_bond_temperatures(method, profile):
    N = 7
    m = tsm.ChainModel(N=N, profile=profile, alpha_method=method)
    T_l = profile.bond_temperatures(N)
    expected = tsm.alpha_ratio(T_l, N=N, rho=1.0, method=method)
    # same function, same inputs: identical up to round-off
    np.testing.assert_allclose(m.couplings, expected, rtol=1e-14, atol=0)
    assert m.couplings.shape == (N - 1,)
    assert not m.couplings.flags.writeable
    # a(0) = 1 exactly; a(T) > 1 for T > 0 (the exchange grows with temperature)
    assert np.all(m.couplings[T_l == 0] == 1.0)
    assert np.all(m.couplings[T_l > 0] > 1.0)


def test_sommerfeld_couplings_formula():
    # Eq. 5 with k_B T = T * pi^2 rho^2 / 6: a = 1 + (k_B T)^2 / (pi^2 rho^4)
    for rho in (1.0, 2.0):
        prof = tsm.LinearProfile(0.0, 2.0)
        m = tsm.ChainModel(N=7, profile=prof, rho=rho, alpha_method="sommerfeld")
        kT = prof.bond_temperatures(7) * math.pi**2 * rho**2 / 6
        np.testing.assert_allclose(m.couplings, 1 + kT**2 / (math.pi**2 * rho**4), rtol=1e-14)


def test_canonical_couplings_against_brute_force_small_N():
    # Independent brute force for N = 3 particles: canonical mean energy of all
    # 3-subsets of box levels n <= 40 (the Boltzmann weight of the cut at
    # T = 1.5 eps0 is exp(-(40^2 - 3^2) pi^2/(2 L^2) / kT) ~ e^-580: negligible).
    N, T = 3, 1.5
    L = float(N)
    kT = T * math.pi**2 / 6
    lev = [n * n * math.pi**2 / (2 * L * L) for n in range(1, 41)]
    E = np.array([sum(c) for c in itertools.combinations(lev, N)])
    w = np.exp(-(E - E.min()) / kT)
    a_expected = float((w * E).sum() / w.sum() / E.min())
    m = tsm.ChainModel(N=N, profile=tsm.UniformProfile(T))
    np.testing.assert_allclose(m.couplings, a_expected, rtol=1e-12)


def test_alpha_N_overrides_curve_particle_number():
    m = tsm.ChainModel(N=5, profile=tsm.UniformProfile(2.0), alpha_N=9)
    np.testing.assert_allclose(m.couplings, tsm.alpha_ratio(2.0, N=9), rtol=1e-14)
    assert m.to_dict()["alpha_N"] == 9


# ------------------------------------------------------------------ metadata
def _profile_from_dict(d: dict):
    kind = d["kind"]
    if kind == "uniform":
        return tsm.UniformProfile(d["T"])
    if kind == "step":
        return tsm.StepProfile(d["T1"], d["T2"])
    if kind == "linear":
        return tsm.LinearProfile(d["T1"], d["T2"])
    if kind == "bond_temperatures":
        return tsm.BondTemperatures(tuple(d["values"]))
    if kind == "bond_couplings":
        return tsm.BondCouplings(tuple(d["values"]))
    raise AssertionError(kind)


def _initial_from_dict(d: dict):
    if d["kind"] == "magnons":
        return tsm.magnons(*d["sites"])
    amps = np.asarray(d["re"]) + 1j * np.asarray(d["im"])
    return tsm.StateVector(d["m"], tuple(amps))


@pytest.mark.parametrize(
    "model",
    [
        tsm.ChainModel(N=7, profile=tsm.LinearProfile(0.0, 2.0), gamma=3.102,
                       gamma_pump=0.62),
        tsm.ChainModel(N=6, profile=tsm.StepProfile(0.5, 1.5), rho=2.0,
                       alpha_method="thermodynamic", gamma_pump=0.3, pump_site=2,
                       initial=[1, 6]),
        tsm.ChainModel(N=4, profile=tsm.BondCouplings((1.0, 1.5, 0.7)), alpha_method="sommerfeld",
                       initial=tsm.StateVector(1, (1.0, 1j, 0.0, -1.0)), anisotropy=0.5),
        tsm.ChainModel(N=5, profile=tsm.BondTemperatures((0.0, 1.0, 2.0, 3.0)), alpha_N=9),
    ],
)
def test_to_dict_round_trip(model):
    d = model.to_dict()
    for key in ("N", "rho", "profile", "alpha_method", "couplings"):
        assert key in d
    assert d["N"] == model.N
    assert d["rho"] == model.rho
    assert d["alpha_method"] == model.alpha_method
    assert d["profile"] == model.profile.to_dict()
    np.testing.assert_array_equal(d["couplings"], model.couplings)
    # JSON serialisable and unchanged by a JSON round trip
    d2 = json.loads(json.dumps(d))
    assert d2 == d
    # rebuild the model from the dict: the same model (equality is on to_dict)
    rebuilt = tsm.ChainModel(
        N=d2["N"], profile=_profile_from_dict(d2["profile"]), rho=d2["rho"],
        alpha_method=d2["alpha_method"], alpha_N=d2["alpha_N"], gamma=d2["gamma"],
        gamma_pump=d2["gamma_pump"], pump_site=d2["pump_site"],
        initial=_initial_from_dict(d2["initial"]), anisotropy=d2["anisotropy"])
    assert rebuilt == model
    assert rebuilt.fingerprint() == model.fingerprint()
    np.testing.assert_array_equal(rebuilt.couplings, model.couplings)


def test_with_changes_and_revalidates():
    m = tsm.paper_model("pump", N=7)
    m2 = m.with_(gamma=1.0)
    assert m2.gamma == 1.0 and m2.gamma_pump == m.gamma_pump
    assert m2 != m
    assert m.with_() == m
    with pytest.raises(ValueError, match="gamma"):
        m.with_(gamma=-1.0)
    # changing N moves the default pump site to the new centre
    assert m.with_(N=9).pump_site == 5


def test_channels_order_and_operators():
    m = tsm.ChainModel(N=5, gamma=2.0, gamma_pump=0.5)
    ch = m.channels
    assert [c.name for c in ch] == ["loss_left", "loss_right", "pump"]
    assert [c.site for c in ch] == [0, 4, 2]  # 0-based internally
    assert [c.dm for c in ch] == [-1, -1, +1]
    assert [c.rate for c in ch] == [2.0, 2.0, 0.5]
    assert tsm.ChainModel(N=5).is_closed


# ------------------------------------------------------------------ paper presets (s. 8)
@pytest.mark.parametrize("N", [5, 7, 9])
def test_paper_model_closed(N):
    m = tsm.paper_model("closed", N=N, delta_T=2.0)
    assert m.N == N and m.rho == 1.0
    assert isinstance(m.profile, tsm.StepProfile)
    assert (m.profile.T1, m.profile.T2) == (0.0, 2.0)
    assert m.is_closed
    assert m.initial.sites == ((N + 1) // 2,)
    assert m.alpha_method == "canonical"
    np.testing.assert_allclose(m.couplings,
                               tsm.alpha_ratio(tsm.StepProfile(0, 2).bond_temperatures(N), N=N),
                               rtol=1e-14)


@pytest.mark.parametrize("N", [5, 7])
def test_paper_model_loss(N):
    m = tsm.paper_model("loss", N=N, delta_T=3.0)
    assert isinstance(m.profile, tsm.LinearProfile)
    assert (m.profile.T1, m.profile.T2) == (0.0, 3.0)
    assert m.gamma == GAMMA_PAPER and m.gamma_pump == 0.0
    assert [c.name for c in m.channels] == ["loss_left", "loss_right"]
    assert m.initial.sites == ((N + 1) // 2,)


@pytest.mark.parametrize("N", [5, 7, 6])
def test_paper_model_pump(N):
    m = tsm.paper_model("pump", N=N, pump_site=None if N % 2 else (N + 1) // 2)
    assert isinstance(m.profile, tsm.LinearProfile)
    assert (m.profile.T1, m.profile.T2) == (0.0, 2.0)
    assert m.gamma == GAMMA_PAPER and m.gamma_pump == GAMMA_PUMP_PAPER
    assert m.pump_site == (N + 1) // 2
    assert m.initial == tsm.magnons()  # initially all up
    assert m.initial_sector == 0


def test_paper_model_even_N_pump_needs_a_site():
    # no central site for even N: the preset refuses to guess, like ChainModel
    with pytest.raises(ValueError, match="pump_site must be given for even N"):
        tsm.paper_model("pump", N=8)
    assert tsm.paper_model("pump", N=8, pump_site=5).pump_site == 5
    with pytest.raises(ValueError, match="pump_site only applies"):
        tsm.paper_model("loss", N=7, pump_site=4)


def test_paper_model_options_and_errors():
    m = tsm.paper_model("pump", N=7, delta_T=1.0, gamma=2.0, gamma_pump=0.3,
                        alpha_method="sommerfeld")
    assert (m.gamma, m.gamma_pump, m.alpha_method) == (2.0, 0.3, "sommerfeld")
    assert m.profile.T2 == 1.0
    # delta_T = 0 gives a uniform chain with a = 1 on every bond
    np.testing.assert_array_equal(tsm.paper_model("loss", delta_T=0.0).couplings, np.ones(6))
    with pytest.raises(ValueError, match="scenario"):
        tsm.paper_model("open")
    with pytest.raises(ValueError, match="N"):
        tsm.paper_model("closed", N=1)
    with pytest.raises(ValueError, match="T2"):
        tsm.paper_model("loss", delta_T=-1.0)


def test_with_keeps_an_explicit_even_N_pump_site():
    base = tsm.ChainModel(N=4, profile=tsm.UniformProfile(1.0), gamma_pump=0.5, pump_site=2)
    assert base.with_(N=6).pump_site == 2
    assert base.with_(N=5).pump_site == 2
    odd = tsm.ChainModel(N=5, profile=tsm.UniformProfile(1.0), gamma_pump=0.5)
    assert odd.with_(N=7).pump_site == 4  # the default centre moves along
