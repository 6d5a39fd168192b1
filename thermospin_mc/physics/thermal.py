"""Temperature-dependent exchange ratio a(T) = alpha(T) / alpha_1 (docs/model.md section 3).

The link of N strongly interacting fermions maps onto a spin chain whose exchange
coefficient is alpha(T) = 2 eps(T) / L (paper Eq. 3), with eps(T) the canonical
mean energy of N spinless fermions in a hard-wall box of length L = N / rho.
The ratio a(T) = eps(T) / E_1 (E_1 the ground energy) enters the chain.

Units: hbar = m = k_B = 1. Single-particle levels e_n = n^2 pi^2 / (2 L^2), n >= 1.
Temperatures are given in units of eps0 = pi^2 rho^2 / 6, i.e. the physical
k_B T is ``T * EPS0_FACTOR * rho**2``.

Four curves are available (``ALPHA_METHODS``):

``"canonical"``
    Exact canonical ensemble with *all* manifolds (Slater determinants). The
    partition function and the mean *excitation* energy are built from
    particle-hole pairs across the ground-state Fermi level: positive-term
    recursions over single-particle levels (elementary symmetric sums of the
    hole and particle Boltzmann weights and their energy moments), in linear
    arithmetic with exact power-of-two scaling (no cancellations, no overflow;
    a - 1 keeps its relative accuracy down to ~1e-300). Truncated only
    where the omitted levels or pair numbers contribute below ~1e-18 relative
    (the pair cut-off is verified a posteriori). Values are cached per (N, T).
    The recursion lives in :mod:`thermospin_mc.physics.canonical`.
``"enumerate"``
    Brute-force canonical average over the lowest ``n_manifolds`` manifolds,
    ordered by energy, as in the paper (which uses 10^6 manifolds and reports
    that ~10^4 are not converged). Manifolds are enumerated exactly, grouped by
    their (integer, in units of pi^2 / (2 L^2)) excitation energy.
``"thermodynamic"``
    N -> infinity at fixed density: an ideal 1D Fermi gas with the chemical
    potential fixed by rho.
``"sommerfeld"``
    Low-temperature expansion, paper Eq. 5: a = 1 + (k_B T)^2 / (pi^2 rho^4).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy import integrate, optimize, special

from .canonical import clear_cache, ratio_minus_one, reduced_beta

__all__ = [
    "ALPHA_METHODS",
    "EPS0_FACTOR",
    "alpha_ratio",
    "canonical_energy",
    "clear_cache",
    "ground_energy",
    "manifold_counts",
]

#: eps0 = EPS0_FACTOR * rho^2 is the energy per particle at T = 0 in the
#: thermodynamic limit, the temperature unit of the paper (Fig. 2).
EPS0_FACTOR: float = math.pi**2 / 6.0

#: Allowed values of ``method`` in :func:`alpha_ratio`.
ALPHA_METHODS: tuple[str, ...] = ("canonical", "enumerate", "thermodynamic", "sommerfeld")

#: Upper limit on N for the finite-N methods (canonical cost per T grows like
#: n_levels * n_pairs <= N^2 sqrt(1 + 20 T); see :func:`alpha_ratio`).
N_MAX_ALLOWED: int = 10_000


# --------------------------------------------------------------------------- validation


def _check_N(N: object) -> int:
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)):
        if isinstance(N, (float, np.floating)) and float(N).is_integer():
            N = int(N)
        else:
            raise ValueError(f"N must be an integer in [1, {N_MAX_ALLOWED}], got {N!r}")
    N = int(N)
    if not 1 <= N <= N_MAX_ALLOWED:
        raise ValueError(f"N must be an integer in [1, {N_MAX_ALLOWED}], got {N}")
    return N


def _check_rho(rho: object) -> float:
    try:
        r = float(rho)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"rho must be a finite number > 0, got {rho!r}") from None
    if not math.isfinite(r) or r <= 0.0:
        raise ValueError(f"rho must be a finite number > 0, got {rho!r}")
    return r


def _check_T(T: object) -> np.ndarray:
    try:
        arr = np.asarray(T, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"T must be finite and >= 0 (in units of eps0), got {T!r}") from None
    bad = ~np.isfinite(arr) | (arr < 0.0)
    if np.any(bad):
        first = arr[bad].flat[0]
        raise ValueError(f"T must be finite and >= 0 (in units of eps0), got {first!r}")
    return arr


def _check_n_manifolds(n_manifolds: object) -> int:
    if n_manifolds is None:
        raise ValueError("n_manifolds must be given (an integer >= 1) for method='enumerate'")
    if isinstance(n_manifolds, bool):
        raise ValueError(f"n_manifolds must be an integer >= 1, got {n_manifolds!r}")
    if isinstance(n_manifolds, (float, np.floating)):
        if not (math.isfinite(n_manifolds) and float(n_manifolds).is_integer()):
            raise ValueError(f"n_manifolds must be an integer >= 1, got {n_manifolds!r}")
        n_manifolds = int(n_manifolds)
    if not isinstance(n_manifolds, (int, np.integer)) or n_manifolds < 1:
        raise ValueError(f"n_manifolds must be an integer >= 1, got {n_manifolds!r}")
    return int(n_manifolds)



def ground_energy(N: int, rho: float = 1.0) -> float:
    """Ground-state energy E_1 = e_1 + ... + e_N of N spinless fermions in the box.

    Parameters
    ----------
    N : int
        Number of particles (>= 1).
    rho : float
        Density N / L (> 0).

    Returns
    -------
    float
        E_1 = (pi^2 / (2 L^2)) N (N + 1) (2 N + 1) / 6 with L = N / rho.
    """
    N = _check_N(N)
    rho = _check_rho(rho)
    L = N / rho
    return math.pi**2 / (2.0 * L**2) * N * (N + 1) * (2 * N + 1) / 6.0


def canonical_energy(T: float | ArrayLike, N: int, rho: float = 1.0) -> float | np.ndarray:
    """Exact canonical mean energy eps(T) of N spinless fermions in the hard-wall box.

    Parameters
    ----------
    T : float or array_like
        Temperature(s) in units of eps0 = pi^2 rho^2 / 6 (finite, >= 0).
    N : int
        Number of particles.
    rho : float
        Density N / L.

    Returns
    -------
    float or ndarray
        eps(T) in the same units as e_n = n^2 pi^2 / (2 L^2) (hbar = m = 1),
        same shape as ``T``.
    """
    return _finish(alpha_ratio(T, N=N, rho=rho, method="canonical"), ground_energy(N, rho))


def _finish(a: float | np.ndarray, scale: float) -> float | np.ndarray:
    if isinstance(a, float):
        return a * scale
    return np.asarray(a) * scale


# --------------------------------------------------------------------------- enumerate


def manifold_counts(N: int, max_excitation: int) -> np.ndarray:
    """Number of N-fermion manifolds at each excitation energy.

    Parameters
    ----------
    N : int
        Number of particles.
    max_excitation : int
        Largest excitation energy to count, in units of pi^2 / (2 L^2).

    Returns
    -------
    ndarray of int64, shape (max_excitation + 1,)
        ``g[x]`` is the number of N-subsets {n_1 < ... < n_N} of levels with
        sum(n_i^2) - sum_{i<=N} i^2 == x (the degeneracy of excitation energy x).

    Notes
    -----
    Dynamic programming over levels k = 1, 2, ...: a j-particle subset of levels
    1..k with excitation x (relative to 1^2 + ... + j^2) gains k'^2 - (j+1)^2 >= 0
    when a higher level k' is added, so excitations never decrease and the table
    can be truncated at ``max_excitation``. Cost ~ N * sqrt(N^2 + X) * X.
    """
    N = _check_N(N)
    X = int(max_excitation)
    if X < 0:
        raise ValueError(f"max_excitation must be >= 0, got {max_excitation}")
    cnt = np.zeros((N + 1, X + 1), dtype=np.int64)
    cnt[0, 0] = 1
    kmax = math.isqrt(N * N + X)
    for k in range(1, kmax + 1):
        for j in range(min(k, N), 0, -1):
            d = k * k - j * j
            if d > X:
                break  # smaller j have even larger d
            cnt[j, d:] += cnt[j - 1, : X + 1 - d]
    if np.any(cnt < 0):  # pragma: no cover - needs astronomically many manifolds
        raise OverflowError("manifold count overflowed int64; lower max_excitation")
    return cnt[N].copy()


def _enumerate_ratio_minus_one(T: np.ndarray, N: int, n_manifolds: int) -> np.ndarray:
    """a(T) - 1 averaging over the lowest ``n_manifolds`` manifolds only."""
    # grow the excitation window until it holds n_manifolds manifolds
    X = max(4 * N, 16)
    while True:
        g = manifold_counts(N, X)
        cum = np.cumsum(g)
        if cum[-1] >= n_manifolds:
            break
        X *= 2
    xstar = int(np.searchsorted(cum, n_manifolds))  # first x with cum[x] >= M
    weights = g[: xstar + 1].astype(float)
    prev = cum[xstar - 1] if xstar > 0 else 0
    # degenerate manifolds share the energy: only how many of the last shell enter matters
    weights[xstar] = float(n_manifolds - prev)
    x = np.arange(xstar + 1, dtype=float)

    flat = T.ravel()
    out = np.zeros_like(flat)
    b = reduced_beta(flat, N, 1.0)
    pos = np.isfinite(b)
    if np.any(pos):
        boltz = weights[None, :] * np.exp(-b[pos, None] * x[None, :])  # x >= 0: no overflow
        z = boltz.sum(axis=1)
        out[pos] = (boltz @ x) / z / (N * (N + 1) * (2 * N + 1) / 6.0)
    return out.reshape(T.shape)


# --------------------------------------------------------------------------- thermodynamic


def _fd_moments(mu: float, kT: float) -> tuple[float, float]:
    """pi * density and pi * energy density of the ideal 1D Fermi gas (k > 0 modes).

    Returns (int_0^inf f dk, int_0^inf (k^2/2) f dk) with f = 1 / (exp((k^2/2 - mu)/kT) + 1).
    For mu > 0 the step at k_mu = sqrt(2 mu) is integrated exactly and only the
    smooth, small corrections are left to quadrature (accurate even at low T).
    """
    opts = {"epsabs": 0.0, "epsrel": 1e-13, "limit": 400}

    def g(k: float) -> float:  # min(f, 1 - f)
        return float(special.expit(-abs(0.5 * k * k - mu) / kT))

    # beyond kend, f < exp(-60)
    kend = math.sqrt(2.0 * (max(mu, 0.0) + 60.0 * kT))

    if mu > 0.0:
        km = math.sqrt(2.0 * mu)
        w = math.sqrt(2.0 * max(mu - 60.0 * kT, 0.0))  # below w, 1 - f is negligible
        hole0 = integrate.quad(g, w, km, **opts)[0] if km > w else 0.0
        part0 = integrate.quad(g, km, kend, **opts)[0]
        hole1 = integrate.quad(lambda k: 0.5 * k * k * g(k), w, km, **opts)[0] if km > w else 0.0
        part1 = integrate.quad(lambda k: 0.5 * k * k * g(k), km, kend, **opts)[0]
        return km - hole0 + part0, km**3 / 6.0 - hole1 + part1

    def f(k: float) -> float:
        return float(special.expit(-(0.5 * k * k - mu) / kT))

    n0 = integrate.quad(f, 0.0, kend, **opts)[0]
    n1 = integrate.quad(lambda k: 0.5 * k * k * f(k), 0.0, kend, **opts)[0]
    return n0, n1


def _thermodynamic_single(T: float, rho: float) -> float:
    """a(T) - 1 in the thermodynamic limit for one temperature T > 0 (eps0 units)."""
    kT = T * EPS0_FACTOR * rho**2
    target = math.pi * rho
    mu0 = 0.5 * target**2  # Fermi energy

    def h(mu: float) -> float:
        return _fd_moments(mu, kT)[0] - target

    # bracket: density grows with mu
    lo = min(mu0, kT * math.log(target / math.sqrt(math.pi * kT / 2.0))) - 2.0 * kT - 1.0
    hi = mu0 + kT + 1.0
    while h(lo) > 0.0:
        lo -= 10.0 * (kT + 1.0)
    while h(hi) < 0.0:
        hi += 10.0 * (kT + 1.0)
    mu = optimize.brentq(h, lo, hi, xtol=1e-15 * (abs(mu0) + kT), rtol=1e-15, maxiter=200)
    e_pi = _fd_moments(mu, kT)[1]  # pi * E / L
    e0_pi = target**3 / 6.0  # pi * E_0 / L = pi * pi^2 rho^3 / 6
    return (e_pi - e0_pi) / e0_pi


def _map_scalar(fun: Callable[[float], float], T: np.ndarray) -> np.ndarray:
    flat = T.ravel()
    out = np.zeros_like(flat)
    for i, t in enumerate(flat):
        if t > 0.0:
            out[i] = fun(float(t))
    return out.reshape(T.shape)


# --------------------------------------------------------------------------- public


def alpha_ratio(
    T: float | ArrayLike,
    N: int = 7,
    rho: float = 1.0,
    method: str = "canonical",
    n_manifolds: int | None = None,
) -> float | np.ndarray:
    """Exchange ratio a(T) = alpha(T) / alpha_1 = eps(T) / E_1 (paper Eqs. 3-5, Fig. 2).

    Parameters
    ----------
    T : float or array_like
        Temperature(s) in units of eps0 = pi^2 rho^2 / 6; finite and >= 0.
    N : int
        Number of particles (1 <= N <= 10000) for the finite-N methods;
        ignored by ``"thermodynamic"`` and ``"sommerfeld"``. The canonical cost per
        temperature is ~ n_levels * P vectorised multiply-adds, with
        n_levels ~ N sqrt(1 + 20 T) single-particle levels and P <= N the number of
        particle-hole pairs that matter (~0.35 N at T = 2, close to N for T >> 1).
        Measured (one core of a loaded 2-core machine): N = 1001 about 0.5 ms per
        temperature for T <= 2 (a 1000-bond linear profile in ~0.5 s), 15 ms at
        T = 50; N = 10^4 about 0.1 s at T = 2 and 2 s at T = 50. Each distinct
        (N, T) is computed once and then served from an in-memory cache
        (:func:`clear_cache` empties it).
    rho : float
        Density N / L (> 0). For the finite-N methods a(T) with T in eps0 units
        does not depend on rho; it is validated all the same.
    method : {"canonical", "enumerate", "thermodynamic", "sommerfeld"}
        ``"canonical"``: exact canonical ensemble, all manifolds.
        ``"enumerate"``: canonical average over the lowest ``n_manifolds`` manifolds.
        ``"thermodynamic"``: N -> infinity at fixed rho (ideal 1D Fermi gas).
        ``"sommerfeld"``: Eq. 5, a = 1 + (k_B T)^2 / (pi^2 rho^4).
    n_manifolds : int, optional
        Number of lowest-energy manifolds kept by ``"enumerate"`` (required there).
        Degenerate manifolds have identical energies, so the result only depends on
        how many of the last degenerate shell are included; exactly
        ``n_manifolds`` are.

    Returns
    -------
    float or ndarray
        a(T), a Python float for scalar ``T``, otherwise an array of ``T``'s shape.
        a(0) = 1 exactly for every method.

    Raises
    ------
    ValueError
        For invalid ``T``, ``N``, ``rho``, ``method`` or ``n_manifolds``.
    """
    if not isinstance(method, str) or method not in ALPHA_METHODS:
        raise ValueError(f"method must be one of {ALPHA_METHODS}, got {method!r}")
    Tarr = _check_T(T)
    rho = _check_rho(rho)
    scalar = Tarr.ndim == 0
    if method in ("canonical", "enumerate"):
        N = _check_N(N)
    if method == "canonical":
        am1 = ratio_minus_one(Tarr, N)
    elif method == "enumerate":
        M = _check_n_manifolds(n_manifolds)
        am1 = _enumerate_ratio_minus_one(Tarr, N, M)
    elif method == "thermodynamic":
        am1 = _map_scalar(lambda t: _thermodynamic_single(t, rho), Tarr)
    else:  # sommerfeld, Eq. 5
        kT = Tarr * EPS0_FACTOR * rho**2
        am1 = kT**2 / (math.pi**2 * rho**4)
    a = 1.0 + np.asarray(am1, dtype=float)
    if scalar:
        return float(a)
    return a
