"""Chebyshev step parameters of one sector: the design of the Chebyshev propagator.

:func:`cheb_params` chooses, for the sparse ``H_eff`` of one sector, the
centre ``c`` and focal half-length ``rho`` of the ellipse that encloses its
numerical range, the step length ``h`` and the term cap ``kcap``, in the
layout ``kernels.CHEB_*`` that :class:`~thermospin_mc.trajectories.sectorpack.SectorPack`
stores next to the sector's data and the kernels read.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp

from ..core.sector_build import csr_rows
from . import kernels as K

__all__ = ["cheb_params", "hermitian_range", "CHEB_BYTES", "CHEB_KMIN", "CHEB_KMAX", "CHEB_BH",
           "CHEB_KOPT", "CHEB_BH_OPT", "DENSE_RANGE_MAX"]

#: Memory of one Chebyshev step's vectors per worker; at least ``CHEB_KMIN + 1``
#: and at most ``CHEB_KMAX + 1`` vectors of the sector's dimension.
CHEB_BYTES = 256 * 2**20
CHEB_KMIN, CHEB_KMAX = 24, 120
#: Longest Chebyshev step in units of the damping spread: ``b h <= CHEB_BH``
#: bounds the growth of the partial sums (``e^{b h}`` at worst; round-off).
#: Measured against the dense exponential, whole steps of ``b h`` = 7 (h = 4.1,
#: 89-105 terms) stay at the round-off of the sum: errors of 6e-16 to 1.2e-15
#: of the state at N = 9-13 (``tests/test_chebyshev.py`` checks N = 9 and 11).
CHEB_BH = 7.0
#: The focal length ``rho`` is chosen for the cost per unit time of steps within
#: these (tighter) bounds, which suits the short visits between jumps (terms are
#: lazy, so only the first ``rho t + 25`` or so are ever computed in a visit of
#: length ``t``); the step is then lengthened to the bounds above.
CHEB_KOPT, CHEB_BH_OPT = 72, 4.0
#: Largest sector whose range comes from a dense ``eigvalsh`` (above: Lanczos).
DENSE_RANGE_MAX = 300


def _hermitian_part(H, symmetric: bool):
    """``A`` of ``H = A - i B`` (sparse; ``A``, ``B`` Hermitian). ``symmetric``
    (``H^T = H``): ``A = Re H``, read without transposes: complex, like the
    general case's, where the range comes from a dense ``eigvalsh``; real
    where it comes from a Lanczos run, which reads the real part anyway."""
    if symmetric:
        H = sp.csr_matrix(H)
        re = H.data.real
        re = re.astype(complex) if H.shape[0] <= DENSE_RANGE_MAX else np.ascontiguousarray(re)
        return sp.csr_matrix((re, H.indices, H.indptr), shape=H.shape)
    return (0.5 * (H + H.conj().T)).tocsr()


def _decay_part(H, symmetric: bool):
    """``B`` of ``H = A - i B`` (sparse); ``symmetric``: ``B = -Im H``."""
    if symmetric:
        H = sp.csr_matrix(H)
        return sp.csr_matrix((-H.data.imag, H.indices, H.indptr), shape=H.shape)
    return (0.5j * (H - H.conj().T)).tocsr()


def hermitian_range(H, symmetric: bool = False) -> tuple[float, float]:
    """Smallest and largest eigenvalue (padded) of the Hermitian part of the sparse ``H``
    (the range :func:`cheb_params` computes when it is not given one)."""
    return _hermitian_range(_hermitian_part(H, symmetric))


def _hermitian_range(A) -> tuple[float, float]:
    """Smallest and largest eigenvalue of the sparse Hermitian ``A`` (padded)."""
    d = A.shape[0]
    if d <= DENSE_RANGE_MAX:
        w = np.linalg.eigvalsh(A.toarray())
        lo, hi = float(w[0]), float(w[-1])
    else:
        from scipy.sparse.linalg import eigsh

        M = A if A.dtype.kind == "f" else (A.real if not np.any(A.imag.data) else A)
        v0 = np.ones(d) / np.sqrt(d)
        # loose Lanczos tolerance, covered by the padding (and a slightly too
        # small range only costs a few terms: convergence is checked a posteriori)
        # both ends in one Lanczos run (half the cost of two)
        w = eigsh(M, k=2, which="BE", tol=1e-4, v0=v0, return_eigenvectors=False)
        lo, hi = float(np.min(w)), float(np.max(w))
    pad = 1e-4 * max(hi - lo, 1.0)
    return lo - pad, hi + pad


@functools.lru_cache(maxsize=16)
def _bessel_grid(kopt: int, kcap: int) -> tuple[np.ndarray, np.ndarray]:
    """The step lengths ``x = rho h`` that :func:`cheb_params` tries and ``|J_k(x)|``
    on them for ``k = 0 .. kcap + 1`` (the same for every sector with these caps)."""
    from scipy.special import jv

    xs = np.linspace(2.0, kopt, 60)
    J = np.abs(jv(np.arange(kcap + 2)[None, :], xs[:, None]))
    J.flags.writeable = False
    xs.flags.writeable = False
    return xs, J


def _first_converged(tail: np.ndarray, xs: np.ndarray, kk: np.ndarray):
    """Per row ``x`` of the tail bounds ``|J_k(x)| R^k``: the first ``K`` after which
    two consecutive terms ``k > x`` are below ``CHEB_TOL`` (the kernel's rule), and
    whether there is one."""
    ok = (tail <= K.CHEB_TOL) & (kk[None, :] > xs[:, None])
    both = ok[:, 1:] & ok[:, :-1]
    return np.argmax(both, axis=1) + 1, both.any(axis=1)


def cheb_params(H, symmetric: bool = False, hrange=None) -> np.ndarray:
    """Chebyshev parameters of the sparse ``H_eff`` of one sector (``kernels.CHEB_*``).

    The numerical range of ``H = A - i B`` (``A``, ``B`` Hermitian, ``B >= 0``
    the decay part) lies in the rectangle ``[a0, a1] x -i [b0, b1]``; its
    centre is ``c``, the focal half-length ``rho`` of the ellipse is chosen
    with the step length ``h`` to minimise the estimated products per unit
    time, ``(K + 1) / h``, where ``K`` is the first term with
    ``|J_K(rho h)| R^K <= CHEB_TOL`` (``R`` the ellipse through the rectangle's
    corners), subject to ``K <= CHEB_KOPT`` and ``(b1 - b0) h / 2 <= CHEB_BH_OPT``;
    the step is then lengthened as far as ``kcap`` terms and ``CHEB_BH`` allow
    (terms are computed lazily, so a long step costs a short visit nothing).
    The kernel checks convergence a posteriori on the actual vectors.

    ``symmetric``: the caller knows that ``H^T = H`` (a sector's ``H_eff`` built
    from a real symmetric ``h`` and a diagonal decay part): then ``A = Re H``
    and ``B = -Im H`` exactly (the general formulas give the same numbers), read
    without the two transposes, sums and differences of the general case,
    which take most of the set-up of the largest sectors (N = 21).

    ``hrange``: the (padded) range ``(a0, a1)`` of the Hermitian part when the
    caller knows it (a sector with the same spectrum, ``SectorPack``); by
    default it is computed (:func:`hermitian_range`), the largest cost here.
    """
    from scipy.special import jv

    d = H.shape[0]
    a0, a1 = hermitian_range(H, symmetric) if hrange is None else (float(hrange[0]),
                                                                   float(hrange[1]))
    Bd = _decay_part(H, symmetric)
    # Gershgorin bounds of the decay part (exact when it is diagonal, as it is
    # for a sector's H_eff: a real off-diagonal part, checked, gives zero sums)
    diag = Bd.diagonal().real
    if symmetric and not np.any(Bd.data[Bd.indices != csr_rows(Bd)]):
        off = np.zeros(d)
    else:
        off = np.asarray(abs(Bd - sp.diags(Bd.diagonal())).sum(axis=1)).ravel()
    b0 = float(np.min(diag - off)) if d else 0.0
    b1 = float(np.max(diag + off)) if d else 0.0
    # imaginary centre: the centroid of the eigenvalues' imaginary parts, exactly
    # -tr(B) / d; eigenstates spread over the chain, so their decay rates gather
    # near the mean of the diagonal rather than the middle of its range (the
    # terms' growth, and with it the tail, is smaller: 5% fewer terms at N = 11
    # and 13 than with the middle, same accuracy); the range still bounds the step
    cr, ci = 0.5 * (a0 + a1), -float(np.mean(diag)) if d else 0.0
    ar, br = max(0.5 * (a1 - a0), 1e-12), 0.5 * (b1 - b0)
    kcap = int(np.clip(CHEB_BYTES // (16 * max(d, 1)) - 1, CHEB_KMIN, CHEB_KMAX))
    hcap = CHEB_BH / br if br > 0 else np.inf
    kopt = min(kcap, CHEB_KOPT)
    hopt = CHEB_BH_OPT / br if br > 0 else np.inf
    kk = np.arange(kcap + 2)
    z = complex(ar, br) / ar
    best = (np.inf, ar, 1.0 / ar, max(abs(z + np.sqrt(z - 1) * np.sqrt(z + 1)), 1.0))
    xs, J = _bessel_grid(kopt, kcap)
    for s in (1.0, 1.02, 1.05, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0, 2.5):
        rho = s * ar
        z = complex(ar, br) / rho
        R = abs(z + np.sqrt(z - 1) * np.sqrt(z + 1))
        R = max(R, 1.0)
        hs = xs / rho
        n = int(np.count_nonzero(hs <= hopt))  # the grid is increasing
        Kn, found = _first_converged(J[:n] * R ** kk, xs[:n], kk)
        cost = np.where(found, (Kn + 1) / hs[:n], np.inf)
        if n and cost.min() < best[0]:
            i = int(np.argmin(cost))  # the first of equal costs, as in a loop
            best = (cost[i], rho, hs[i], R)
    _, rho, h, R = best
    # Terms are computed lazily (only as far as the latest time evaluated), so a
    # step longer than the cost optimum costs nothing on visits that end before
    # it, and spares the fresh tail of ~25 terms that a restart needs on those
    # that do not: the step is the longest that ``kcap`` terms and ``CHEB_BH``
    # allow for this ``rho``.
    xl = np.linspace(rho * h, min(rho * hcap, kcap), 40)
    Kn, found = _first_converged(np.abs(jv(kk[None, :], xl[:, None])) * R ** kk, xl, kk)
    ok = found & (Kn <= kcap)  # some K <= kcap suffices
    if ok.any():
        h = max(h, float(np.max(xl[ok] / rho)))
    par = np.zeros(K.CHEB_NPAR)
    par[[K.CHEB_PK, K.CHEB_VT]] = -1  # no packed copy (SectorPack adds one)
    par[[K.CHEB_CR, K.CHEB_CI, K.CHEB_RHO, K.CHEB_H, K.CHEB_KCAP]] = cr, ci, rho, h, kcap
    return par
