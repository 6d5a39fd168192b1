"""Tests for thermospin_mc.thermal: the exchange ratio a(T) = alpha(T) / alpha_1
(docs/model.md section 3)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from thermospin_mc.physics import canonical
from thermospin_mc.physics.thermal import (
    ALPHA_METHODS,
    EPS0_FACTOR,
    alpha_ratio,
    canonical_energy,
    clear_cache,
    ground_energy,
    manifold_counts,
)


def brute_force_energy(T: float, N: int, rho: float, n_cut: int) -> float:
    """Canonical mean energy by direct summation over all N-subsets of levels 1..n_cut.

    Written from the definitions only: L = N / rho, e_n = n^2 pi^2 / (2 L^2),
    k_B T = T * pi^2 rho^2 / 6, eps = sum_A E_A exp(-E_A / k_B T) / Z.
    """
    L = N / rho
    levels = [n * n * math.pi**2 / (2.0 * L * L) for n in range(1, n_cut + 1)]
    kT = T * math.pi**2 * rho**2 / 6.0
    energies = np.array([sum(c) for c in itertools.combinations(levels, N)])
    e0 = energies.min()
    w = np.exp(-(energies - e0) / kT)
    return float(np.sum(w * energies) / np.sum(w))


def brute_force_degeneracies(N: int, n_cut: int) -> np.ndarray:
    """Histogram of sum(n_i^2) - sum(i^2) over N-subsets of levels 1..n_cut."""
    g0 = sum(i * i for i in range(1, N + 1))
    x = [sum(n * n for n in c) - g0 for c in itertools.combinations(range(1, n_cut + 1), N)]
    return np.bincount(x)


# ---------------------------------------------------------------- basic contract


def test_constants_and_methods():
    assert EPS0_FACTOR == pytest.approx(math.pi**2 / 6, rel=1e-15)
    assert ALPHA_METHODS == ("canonical", "enumerate", "thermodynamic", "sommerfeld")


def test_ground_energy_definition():
    for N, rho in [(1, 1.0), (5, 1.0), (7, 2.5)]:
        L = N / rho
        expected = sum(n * n * math.pi**2 / (2 * L * L) for n in range(1, N + 1))
        assert ground_energy(N, rho) == pytest.approx(expected, rel=1e-14)
    # thermodynamic limit: E_1 / N -> eps0 = pi^2 rho^2 / 6
    assert ground_energy(2000, 1.0) / 2000 == pytest.approx(EPS0_FACTOR, rel=1e-3)


@pytest.mark.parametrize("method", ALPHA_METHODS)
def test_zero_temperature_is_exactly_one(method):
    kw = {"n_manifolds": 100} if method == "enumerate" else {}
    assert alpha_ratio(0.0, N=7, method=method, **kw) == 1.0
    assert alpha_ratio(0, N=5, method=method, **kw) == 1.0


@pytest.mark.parametrize("method", ALPHA_METHODS)
def test_shapes_and_scalar_output(method):
    kw = {"n_manifolds": 1000} if method == "enumerate" else {}
    s = alpha_ratio(1.0, N=5, method=method, **kw)
    assert isinstance(s, float)
    T = np.array([[0.0, 0.5, 1.0], [1.5, 2.0, 3.0]])
    a = alpha_ratio(T, N=5, method=method, **kw)
    assert isinstance(a, np.ndarray) and a.shape == T.shape
    assert a[0, 0] == 1.0
    assert a[0, 2] == pytest.approx(s, rel=1e-14)
    assert alpha_ratio([1.0, 2.0], N=5, method=method, **kw).shape == (2,)


# ---------------------------------------------------------------- canonical vs brute force


@pytest.mark.parametrize("N,rho,n_cut", [(3, 1.0, 30), (4, 1.0, 30), (3, 1.7, 30), (2, 1.0, 40)])
@pytest.mark.parametrize("T", [0.2, 0.7, 1.5, 3.0])
def test_canonical_matches_brute_force(N, rho, n_cut, T):
    # truncation check for the reference itself: at n_cut the Boltzmann factor
    # relative to the Fermi level is exp(-40) or smaller for every case here
    L = N / rho
    kT = T * math.pi**2 * rho**2 / 6
    assert (n_cut**2 - (N + 1) ** 2) * math.pi**2 / (2 * L * L) / kT > 40
    ref = brute_force_energy(T, N, rho, n_cut)
    assert canonical_energy(T, N, rho) == pytest.approx(ref, rel=1e-11)
    a = alpha_ratio(T, N=N, rho=rho)
    assert a == pytest.approx(ref / ground_energy(N, rho), rel=1e-11)
    # excitation part resolved to high relative accuracy as well
    assert a - 1 == pytest.approx(ref / ground_energy(N, rho) - 1, rel=1e-9)


def test_finite_N_ratio_independent_of_density():
    # with T in eps0 = pi^2 rho^2/6 units, L = N / rho: a(T) does not depend on rho
    T = np.array([0.3, 1.0, 4.0])
    a1 = alpha_ratio(T, N=6, rho=1.0)
    a2 = alpha_ratio(T, N=6, rho=0.37)
    np.testing.assert_allclose(a1, a2, rtol=1e-13)


def test_low_temperature_is_activated_across_finite_size_gap():
    # lowest excitation: particle N -> level N+1, gap (2N+1) pi^2/(2L^2); a - 1 ~ gap/E1 e^{-gap/T}
    N = 7
    L = float(N)
    gap = (2 * N + 1) * math.pi**2 / (2 * L * L)
    for T in (0.05, 0.1):
        kT = T * EPS0_FACTOR
        leading = gap / ground_energy(N) * math.exp(-gap / kT)
        assert alpha_ratio(T, N=N) - 1 == pytest.approx(leading, rel=0.01)


def reference_ratio_minus_one(T: float, N: int, cut: float = 80.0) -> float:
    """a(T) - 1 from the textbook level recursion, written independently of the package.

    Levels k = 1, 2, ... are added one at a time (docs/model.md s. 3): with Z(k, j) the
    j-particle partition function on levels 1..k and energies measured from the j-particle
    ground state G(j) = 1^2 + ... + j^2 (units pi^2 / (2 L^2), b = beta pi^2 / (2 L^2)),
        Z(k, j) = Z(k-1, j) + Z(k-1, j-1) exp(-b (k^2 - j^2)),
        U(k, j) = U(k-1, j) + exp(-b (k^2 - j^2)) (U(k-1, j-1) + (k^2 - j^2) Z(k-1, j-1)),
    U the excitation-weighted sum, so a - 1 = U / (Z G(N)) keeps its relative accuracy.
    Each row is stored as mantissa * 2^E (renormalised with frexp after every level).
    Levels with b (k^2 - (N+1)^2) > cut are dropped (relative weight < exp(-80)).
    """
    b = 3.0 / (N * N * T)  # beta * pi^2 / (2 L^2) with k_B T = T pi^2 / 6, L = N
    kmax = int(math.ceil(math.sqrt((N + 1) ** 2 + cut / b))) + 2
    W = np.zeros(N + 1)
    U = np.zeros(N + 1)
    E = np.zeros(N + 1, dtype=np.int64)
    W[0] = 1.0
    for k in range(1, kmax + 1):
        jt = min(k, N)
        if k <= N:
            E[k] = E[k - 1]  # row k is empty until now
        j = np.arange(1, jt + 1)
        d = float(k * k) - (j * j).astype(float)
        fac = np.ldexp(np.exp(-b * d), E[j - 1] - E[j])
        U[j], W[j] = U[j] + fac * (U[j - 1] + d * W[j - 1]), W[j] + fac * W[j - 1]
        mant, e = np.frexp(W[1:jt + 1])
        U[1:jt + 1] = np.ldexp(U[1:jt + 1], -e)
        W[1:jt + 1] = mant
        E[1:jt + 1] += e
    assert np.all(np.isfinite(W)) and np.all(np.isfinite(U))
    return float(U[N] / W[N] / (N * (N + 1) * (2 * N + 1) / 6.0))


T_GRID = (1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 50.0)


@pytest.mark.parametrize("N", [1, 2, 3, 7, 20, 60])
def test_canonical_matches_reference_recursion(N):
    T = np.array(T_GRID)
    clear_cache()
    am1 = canonical.ratio_minus_one(T, N)  # a - 1 before adding 1
    a = alpha_ratio(T, N=N)
    ref = np.array([reference_ratio_minus_one(t, N) for t in T])
    ok = ref > 1e-300
    assert ok.sum() >= 7  # most of the grid is above the underflow limit
    # the excitation a - 1 to 1e-12 relative (spans 1e-300 .. 25 here)
    np.testing.assert_allclose(am1[ok], ref[ok], rtol=1e-12, atol=0.0)
    # where a - 1 underflows for the reference it is at the underflow limit here too
    assert np.all(am1[~ok] < 1e-290)
    # a itself to 1e-14 (relative; a <= 27 on this grid)
    np.testing.assert_allclose(a, 1.0 + ref, rtol=1e-14, atol=0.0)


@pytest.mark.parametrize("T", [0.05, 0.5, 2.0, 10.0])
def test_canonical_matches_reference_recursion_N301(T):
    # several hundred particle-hole pairs: exercises the row scaling of the recursion
    clear_cache()
    am1 = canonical.ratio_minus_one(np.array([T]), 301)[0]
    assert am1 == pytest.approx(reference_ratio_minus_one(T, 301), rel=1e-12)


def test_pair_cutoff_guess_changes_cost_not_result():
    # the first guess of the pair cut-off P is only a guess: too small a guess must be
    # detected by the a-posteriori tail test and enlarged; a huge guess (all pairs) must
    # give the same numbers
    for N in (7, 60, 301):
        T = np.array([0.02, 0.1, 0.7, 2.0, 8.0])
        b = 3.0 / (N * N * T)
        kl, nm = canonical.levels_kept(b, N), canonical.holes_kept(b, N)
        base = canonical.excitation_kernel(b, N, kl, nm, canonical.P_WIDTH)
        for width in (0.0, 1.0, 1e6):
            other = canonical.excitation_kernel(b, N, kl, nm, width)
            np.testing.assert_allclose(other, base, rtol=1e-13, atol=0.0)


def test_canonical_cache_is_per_N_and_T_and_bit_identical():
    T = np.array([0.4, 1.3, 0.4, 0.0, 2.2])
    clear_cache()
    first = alpha_ratio(T, N=9)
    assert first[0] == first[2] and first[3] == 1.0
    assert alpha_ratio(T, N=9).tobytes() == first.tobytes()  # served from the cache
    other = alpha_ratio(T, N=11)  # different N: different values, not the cached ones
    assert np.all(other[[0, 1, 4]] > first[[0, 1, 4]])
    clear_cache()
    assert alpha_ratio(T[::-1], N=9).tobytes() == first[::-1].tobytes()
    assert alpha_ratio(1.3, N=9) == first[1]


# ---------------------------------------------------------------- manifold enumeration


def test_manifold_counts_match_itertools():
    for N, n_cut in [(3, 25), (5, 18)]:
        ref = brute_force_degeneracies(N, n_cut)
        # excitations below (n_cut+1)^2 - N^2 cannot involve levels above n_cut
        xmax = (n_cut + 1) ** 2 - N**2 - 1
        g = manifold_counts(N, xmax)
        np.testing.assert_array_equal(g, ref[: xmax + 1])
    # unique ground state, first excitation 2N+1 (N -> N+1) is non-degenerate
    g = manifold_counts(7, 20)
    assert g[0] == 1 and g[15] == 1 and g[1:15].sum() == 0


def test_enumerate_with_all_relevant_manifolds_equals_canonical():
    T = np.array([0.5, 1.0, 2.0, 3.0])
    for N in (5, 7):
        exact = alpha_ratio(T, N=N)
        enum = alpha_ratio(T, N=N, method="enumerate", n_manifolds=10**7)
        np.testing.assert_allclose(enum, exact, rtol=1e-12)
    # larger N at lower T, where 10^7 manifolds are again complete
    T = np.array([0.25, 0.5])
    np.testing.assert_allclose(
        alpha_ratio(T, N=16, method="enumerate", n_manifolds=10**7),
        alpha_ratio(T, N=16),
        rtol=1e-10,
    )


def test_enumerate_converges_from_below_monotonically():
    # adding manifolds of higher energy can only raise the mean energy
    T = 3.0
    exact = alpha_ratio(T, N=9)
    prev = 1.0
    for M in (1, 10, 100, 10**3, 10**4, 10**5, 10**6):
        a = alpha_ratio(T, N=9, method="enumerate", n_manifolds=M)
        assert prev <= a <= exact + 1e-14
        prev = a
    assert alpha_ratio(T, N=9, method="enumerate", n_manifolds=1) == 1.0


@pytest.mark.parametrize("N,T", [(7, 3.0), (7, 4.0), (7, 5.0), (9, 2.0), (9, 3.0)])
def test_paper_convergence_statement(N, T):
    # Paper (Fig. 2 text): 10^6 manifolds ensure convergence, ~10^4 are not accurate.
    exact = alpha_ratio(T, N=N)
    a4 = alpha_ratio(T, N=N, method="enumerate", n_manifolds=10**4)
    a6 = alpha_ratio(T, N=N, method="enumerate", n_manifolds=10**6)
    assert exact - a4 > 5e-3  # visibly unconverged
    assert abs(exact - a6) < 1e-3  # converged on the scale of the figure


def test_enumerate_1e6_not_converged_for_N9_at_T5():
    # Beyond the paper's claim: for N = 9 at the top of Fig. 2's range even 10^6
    # manifolds miss a visible part of the curve; the exact method does not.
    exact = alpha_ratio(5.0, N=9)
    a6 = alpha_ratio(5.0, N=9, method="enumerate", n_manifolds=10**6)
    assert exact - a6 > 1e-2


# ---------------------------------------------------------------- paper values, limits


@pytest.mark.parametrize("N,expected", [(5, 1.51), (7, 1.59), (9, 1.64)])
def test_sanity_values_fig2(N, expected):
    # docs/model.md s. 3 / paper Fig. 2: a(T = 2 eps0) ~ 1.51, 1.59, 1.64 for N = 5, 7, 9
    assert abs(alpha_ratio(2.0, N=N) - expected) < 0.01


def test_monotone_in_T_and_N_ordering():
    T = np.linspace(0.0, 6.0, 61)
    curves = [alpha_ratio(T, N=N) for N in (5, 7, 9)]
    for a in curves:
        assert np.all(np.diff(a) > 0)
    # at fixed T > 0 the finite-size gap shrinks with N: larger N lies higher (Fig. 2)
    assert np.all(curves[0][1:] < curves[1][1:])
    assert np.all(curves[1][1:] < curves[2][1:])
    th = alpha_ratio(T, method="thermodynamic")
    assert np.all(np.diff(th) > 0)


def test_canonical_approaches_thermodynamic_limit():
    T = np.array([1.0, 2.0])
    a_inf = alpha_ratio(T, method="thermodynamic")
    diffs = [np.abs(alpha_ratio(T, N=N) - a_inf) for N in (10, 40, 160)]
    assert np.all(diffs[0] > diffs[1]) and np.all(diffs[1] > diffs[2])
    # finite-size correction is O(1/N): quadrupling N divides it by ~4
    ratio = diffs[1] / diffs[2]
    assert np.all((ratio > 3.0) & (ratio < 5.0))
    assert np.all(diffs[2] < 0.02)


def test_thermodynamic_vs_sommerfeld_is_order_T4():
    T = np.array([0.01, 0.02, 0.04, 0.08])
    d = alpha_ratio(T, method="thermodynamic") - alpha_ratio(T, method="sommerfeld")
    c = d / T**4
    # the T^2 term is reproduced exactly; the remainder scales as T^4
    assert np.all(np.abs(c) < 0.2)
    assert np.all(np.abs(c / c[0] - 1) < 0.05)
    # and the T^2 coefficient itself: (a - 1)/T^2 -> (pi^2/6)^2 / pi^2 = pi^2/36
    a = alpha_ratio(1e-3, method="thermodynamic")
    assert (a - 1) / 1e-6 == pytest.approx(math.pi**2 / 36, rel=1e-5)


def test_sommerfeld_formula_eq5():
    for rho in (1.0, 0.5, 2.0):
        T = 0.7
        kT = T * math.pi**2 * rho**2 / 6
        expected = 1 + kT**2 / (math.pi**2 * rho**4)
        assert alpha_ratio(T, rho=rho, method="sommerfeld") == pytest.approx(expected, rel=1e-15)


def test_thermodynamic_independent_of_density_in_eps0_units():
    T = np.array([0.3, 2.0, 10.0])
    np.testing.assert_allclose(
        alpha_ratio(T, method="thermodynamic", rho=1.0),
        alpha_ratio(T, method="thermodynamic", rho=3.0),
        rtol=1e-11,
    )


def test_thermodynamic_classical_limit_with_pauli_correction():
    # high T: E/N -> k_B T / 2 (equipartition), i.e. a -> T/2 in eps0 units; the
    # leading quantum (Pauli) correction in 1D is the second virial term rho*lambda/2^(3/2),
    # lambda = sqrt(2 pi / k_B T) (hbar = m = 1).
    rel = []
    for T in (50.0, 200.0, 1000.0):
        a = alpha_ratio(T, method="thermodynamic")
        lam = math.sqrt(2 * math.pi / (T * EPS0_FACTOR))
        rel.append((a / (T / 2) - 1) / (lam / 2**1.5))
    assert abs(rel[-1] - 1) < 0.03
    assert abs(rel[0] - 1) > abs(rel[1] - 1) > abs(rel[2] - 1)


def test_large_N_high_T_stability():
    T = np.linspace(0.0, 50.0, 101)
    a = alpha_ratio(T, N=200)
    assert np.all(np.isfinite(a))
    assert a[0] == 1.0
    assert np.all(np.diff(a) > 0)
    # near-classical at T = 50: finite-N curve within O(1/N) of the N -> inf curve
    a_inf = alpha_ratio(50.0, method="thermodynamic")
    assert a[-1] == pytest.approx(a_inf, rel=0.02)
    assert a[-1] == pytest.approx(25.0, rel=0.15)  # equipartition a ~ T/2 (+ corrections)
    # tiny temperatures do not produce NaN / overflow
    tiny = alpha_ratio([1e-300, 1e-12, 1e-3], N=200)
    assert np.all(tiny >= 1.0) and np.all(np.isfinite(tiny))


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"T": -1.0}, "T"),
        ({"T": float("nan")}, "T"),
        ({"T": [1.0, float("inf")]}, "T"),
        ({"T": "hot"}, "T"),
        ({"T": 1.0, "N": 0}, "N"),
        ({"T": 1.0, "N": 2.5}, "N"),
        ({"T": 1.0, "N": "seven"}, "N"),
        ({"T": 1.0, "N": 10**6}, "N"),
        ({"T": 1.0, "rho": 0.0}, "rho"),
        ({"T": 1.0, "rho": -1.0}, "rho"),
        ({"T": 1.0, "rho": float("inf")}, "rho"),
        ({"T": 1.0, "method": "grand"}, "method"),
        ({"T": 1.0, "method": "enumerate"}, "n_manifolds"),
        ({"T": 1.0, "method": "enumerate", "n_manifolds": 0}, "n_manifolds"),
        ({"T": 1.0, "method": "enumerate", "n_manifolds": 2.5}, "n_manifolds"),
        ({"T": 1.0, "rho": 0.0, "method": "thermodynamic"}, "rho"),
        ({"T": -0.1, "method": "sommerfeld"}, "T"),
    ],
)
def test_bad_input_raises(kwargs, field):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        alpha_ratio(**kwargs)


def test_error_messages_are_informative():
    with pytest.raises(ValueError, match=r"T must be finite and >= 0.*-2"):
        alpha_ratio(-2.0)
    with pytest.raises(ValueError, match="canonical"):
        alpha_ratio(1.0, method="nope")
