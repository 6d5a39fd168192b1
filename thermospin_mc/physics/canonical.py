"""Exact canonical excitation energy of N spinless fermions in a hard-wall box:
the ``"canonical"`` curve of :func:`thermospin_mc.physics.thermal.alpha_ratio`
(docs/model.md section 3).

The partition function and the mean *excitation* energy are built from
particle-hole pairs across the ground-state Fermi level: positive-term
recursions over single-particle levels (elementary symmetric sums of the hole
and particle Boltzmann weights and their energy moments), in linear arithmetic
with exact power-of-two scaling (no cancellations, no overflow; a - 1 keeps its
relative accuracy down to ~1e-300). Truncated only where the omitted levels or
pair numbers contribute below ~1e-18 relative (the pair cut-off is verified a
posteriori). Values are cached per (N, T).

Energies are in units of ``pi^2 / (2 L^2)`` (levels ``e_n = n^2``); ``b`` is the
reduced inverse temperature ``beta pi^2 / (2 L^2)`` (:func:`reduced_beta`).
Inputs are validated by :mod:`thermospin_mc.physics.thermal`, not here.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["ratio_minus_one", "excitation_kernel", "levels_kept", "holes_kept",
           "reduced_beta", "clear_cache", "P_WIDTH"]

# Levels n with beta * (e_n - e_{N+1}) > _CUT (plus a tail margin) are dropped:
# their Boltzmann weight relative to the retained ones is < exp(-_CUT) ~ 1e-26.
_CUT: float = 60.0


def reduced_beta(T: np.ndarray, N: int, rho: float) -> np.ndarray:
    """beta * pi^2 / (2 L^2): inverse temperature in units of the level spacing unit.

    With e_n = n^2 * u, u = pi^2 / (2 L^2), L = N / rho, and k_B T = T * pi^2 rho^2 / 6,
    beta * u = 3 / (N^2 T). Entries with T == 0 give +inf.
    """
    with np.errstate(divide="ignore"):
        return 3.0 / (float(N) ** 2 * T)


@njit(cache=True, nogil=True, fastmath={"contract"})
def _esym_moments(x: np.ndarray, eps: np.ndarray, P: int,
                  m: np.ndarray, u: np.ndarray, J: np.ndarray) -> None:
    """Elementary symmetric sums of the weights ``x`` and their energy moments, rows 0..P.

    On return, for p = 0..P (m and u stored reversed, index r = P - p):
        e_p = m[r] * 2^J[p],   M_p = u[r] * 2^J[p],
    with e_p the sum over p-subsets S of prod_{i in S} x_i and M_p the same sum weighted
    by sum_{i in S} eps_i. Recursion over items i (all terms positive):
        e_p <- e_p + x_i e_{p-1},   M_p <- M_p + x_i (M_{p-1} + eps_i e_{p-1}).
    ``x`` must be sorted in decreasing order. Row p is born (becomes non-zero) at item
    p - 1 with its exponent J[p] chosen so that m is in [1, 2); afterwards rows only grow,
    by at most a factor p + 1 <= P + 1 per item (for decreasing weights
    e_{p-1} <= p e_p / x_{i-1}), so checking every K items with (P + 1)^K <= 2^600 for
    m > 2^300 and moving 2^300 into J[p] keeps every row within [1, 2^900] (and u / m is
    below p * max(eps) < 2^60): no overflow, no underflow, and all rescalings are exact
    powers of two. The reversed storage makes the inner loop read index r + 1 before
    writing index r, and unsigned indices let LLVM vectorise it.
    """
    m[:] = 0.0
    u[:] = 0.0
    m[P] = 1.0
    J[:] = 0
    f = np.ones(P + 1)  # f[r] = 2^(J[p-1] - J[p]) for row p = P - r
    big = math.ldexp(1.0, 300)
    one = np.uint64(1)
    Pu = np.uint64(P)
    K = int(600.0 / math.log2(P + 1.0)) if P > 0 else 1
    for i in range(x.shape[0]):
        xi = x[i]
        ei = eps[i]
        if i + 1 <= P:  # row p = i + 1 is born here
            p = i + 1
            _, e = math.frexp(xi * m[P - p + 1])
            J[p] = J[p - 1] + e - 1
            f[P - p] = math.ldexp(1.0, 1 - e)
        top = i + 1 if i + 1 < P else P
        for r in range(np.uint64(P - top), Pu):
            c = xi * f[r]
            mp = m[r + one]
            u[r] += c * (u[r + one] + ei * mp)
            m[r] += c * mp
        if i % K == K - 1:
            for p in range(1, top + 1):
                r = P - p
                if m[r] > big:
                    m[r] = math.ldexp(m[r], -300)
                    u[r] = math.ldexp(u[r], -300)
                    J[p] += 300
                    f[r] = math.ldexp(f[r], -300)
                    if r > 0:
                        f[r - 1] = math.ldexp(f[r - 1], 300)


@njit(cache=True, nogil=True)
def _pair_terms(P: int, e_pair: int, mh: np.ndarray, uh: np.ndarray, jh: np.ndarray,
                mq: np.ndarray, uq: np.ndarray, jq: np.ndarray):
    """The pair terms ``t_p = e_p(h) e_p(q)``, p = 0..P, and their sums, all relative to
    the largest term; from the rows of :func:`_esym_moments` of the holes (``mh, uh, jh``)
    and the particles (``mq, uq, jq``), one pair carrying ``2^e_pair``.

    Returns ``(t, Zs, Us)``: ``Zs = sum_p t_p`` and ``Us = sum_p t_p (H_p / e_p(h) +
    Q_p / e_p(q))`` (the energy-weighted sum), in the common scale of ``t``.
    """
    # t_p = e_p(h) e_p(q) = mh mq 2^(jh + jq + p e_pair): exact power-of-two shifts
    expo = np.empty(P + 1, dtype=np.int64)
    mant_t = np.zeros(P + 1)
    emx = -(1 << 62)
    for p in range(P + 1):
        a = mh[P - p]
        c = mq[P - p]
        if a > 0.0 and c > 0.0:
            ma, ea = math.frexp(a)
            mc, ec = math.frexp(c)
            mant_t[p] = ma * mc
            expo[p] = ea + ec + p * e_pair + jh[p] + jq[p]
            if expo[p] > emx:
                emx = expo[p]
    Zs = 0.0
    Us = 0.0
    t = np.zeros(P + 1)
    for p in range(P + 1):
        if mant_t[p] > 0.0:
            t[p] = math.ldexp(mant_t[p], int(expo[p] - emx))
            if t[p] > 0.0:
                Zs += t[p]
                Us += t[p] * (uh[P - p] / mh[P - p] + uq[P - p] / mq[P - p])
    return t, Zs, Us


@njit(cache=True, nogil=True)
def _excitation_one(bt: float, N: int, kmax: int, nmin: int, width: float) -> float:
    """Mean canonical excitation energy <E - E_1> (units pi^2 / (2 L^2)) for one b = bt > 0.

    Particle-hole form of the exact canonical sum. With mu = N^2 + N + 1/2 (between the
    last occupied and the first empty level of the ground state), a state with p holes
    at levels n <= N and p particles at levels k > N has excitation energy
        E - E_1 = sum_holes (mu - n^2) + sum_particles (k^2 - mu),
    a sum of positive terms. Hence Z = sum_p e_p(h) e_p(q) and
    Z <E - E_1> = sum_p [H_p e_p(q) + e_p(h) Q_p], with e_p the elementary symmetric sums
    of the hole weights h_n = exp(-b (mu - n^2)) and particle weights q_k = exp(-b (k^2 - mu))
    and H_p, Q_p their energy moments: every term is positive, the excitation (not E)
    is accumulated, so a - 1 keeps its relative accuracy at any T.

    Levels kept: holes nmin..N, particles N+1..kmax (omitted ones weigh < exp(-_CUT)
    relative to the lowest excitation). The pair number p is summed up to P, chosen from
    the grand-canonical mean and width and then checked: t_p = e_p(h) e_p(q) is
    log-concave in p (Newton's inequalities), so once t_P / t_{P-1} = r < 1 the omitted
    terms are below the geometric tail t_P r / (1 - r); P is raised by half until that
    tail (and its energy-weighted version) is below 1e-18 of the retained sums.

    Scaling is done with powers of two only (exact): the pair factor
    exp(-b (2N + 1)) = mant * 2^e2 has its mantissa folded into the particle weights, each
    weight family is pre-scaled to a sum in [1/2, 1), and the rows of the recursion carry
    their own binary exponents (:func:`_esym_moments`); the pair terms are summed by
    :func:`_pair_terms`.
    """
    z = bt * (2.0 * N + 1.0)  # b times the gap: weight of one pair = exp(-z)
    if z > 760.0:
        return 0.0  # a - 1 < 2e4 * exp(-760): below the smallest double
    mu = float(N) * N + N + 0.5
    e0 = float(N) + 0.5  # smallest hole and particle energy
    nh = N - nmin + 1
    nq = kmax - N
    eh = np.empty(nh)
    xh = np.empty(nh)
    eq = np.empty(nq)
    xq = np.empty(nq)
    # exp(-z) = mant * 2^e2 without underflow
    e2 = -int(math.ceil(z / math.log(2.0)))
    mant = math.exp(-z - e2 * math.log(2.0))
    g = math.exp(-bt * e0)  # weight of the lowest hole (and particle); may underflow
    sh = 0.0
    mean_h = 0.0
    var_h = 0.0
    for i in range(nh):
        n = float(N - i)
        e = mu - n * n
        eh[i] = e
        x = math.exp(-bt * (e - e0))
        xh[i] = x
        sh += x
        w = g * x
        th = w / (1.0 + w)
        mean_h += th
        var_h += th * (1.0 - th)
    sq = 0.0
    mean_q = 0.0
    var_q = 0.0
    for i in range(nq):
        k = float(N + 1 + i)
        e = k * k - mu
        eq[i] = e
        x = math.exp(-bt * (e - e0))
        xq[i] = mant * x
        sq += mant * x
        w = g * x
        th = w / (1.0 + w)
        mean_q += th
        var_q += th * (1.0 - th)
    # pre-scale both families by powers of two: sums in [1/2, 1)
    fh, kh = math.frexp(sh)
    fq, kq = math.frexp(sq)
    for i in range(nh):
        xh[i] = math.ldexp(xh[i], -kh)
    for i in range(nq):
        xq[i] = math.ldexp(xq[i], -kq)
    e_pair = e2 + kh + kq  # one pair carries 2^e_pair on top of the scaled weights
    emax = eh[nh - 1] + eq[nq - 1]
    Pmax = nh if nh < nq else nq
    # first guess: the geometric mean of the hole and particle numbers of the
    # grand-canonical ensemble at mu is close to the mode of t_p; `width` (8 by default)
    # widths above it t_p is below ~1e-21 of its maximum (a guess only: checked below)
    P = int(math.ceil(math.sqrt(mean_h * mean_q) + width * (math.sqrt(max(var_h, var_q)) + 1.0)))
    if P < 1:
        P = 1
    if P > Pmax:
        P = Pmax
    while True:
        mh = np.empty(P + 1)
        uh = np.empty(P + 1)
        jh = np.empty(P + 1, dtype=np.int64)
        mq = np.empty(P + 1)
        uq = np.empty(P + 1)
        jq = np.empty(P + 1, dtype=np.int64)
        _esym_moments(xh, eh, P, mh, uh, jh)
        _esym_moments(xq, eq, P, mq, uq, jq)
        t, Zs, Us = _pair_terms(P, e_pair, mh, uh, jh, mq, uq, jq)
        if P == Pmax or t[P] == 0.0:
            break
        if t[P - 1] > 0.0 and t[P] < t[P - 1]:
            r = t[P] / t[P - 1]
            gsum = r / (1.0 - r)
            tail_z = t[P] * gsum
            tail_u = emax * t[P] * (P * gsum + gsum / (1.0 - r))
            if tail_z <= 1e-18 * Zs and tail_u <= 1e-18 * Us + 1e-300 * Zs:
                break
        P = P + P // 2 + 8 if P + P // 2 + 8 < Pmax else Pmax
    return Us / Zs


@njit(cache=True, parallel=True)
def excitation_kernel(b: np.ndarray, N: int, n_levels: np.ndarray,
                                 n_min: np.ndarray, width: float) -> np.ndarray:
    """Mean canonical excitation energies <E - E_1> (units pi^2 / (2 L^2)), one per b > 0.

    ``n_levels[i]`` is the highest particle level and ``n_min[i]`` the deepest hole level
    kept for ``b[i]``; ``width`` sets the first guess of the pair cut-off (it changes
    the cost only, never the result); see :func:`_excitation_one`. Temperatures run in
    parallel.
    """
    nT = b.shape[0]
    out = np.zeros(nT)
    for it in prange(nT):  # temperatures are independent
        out[it] = _excitation_one(b[it], N, n_levels[it], n_min[it], width)
    return out


def levels_kept(b: np.ndarray, N: int) -> np.ndarray:
    """Number of single-particle levels to keep for each reduced inverse temperature b > 0.

    Keep levels with b (n^2 - (N+1)^2) <= cut, where the cut includes a margin for the
    geometric tail sum (~1 / (2 b n)) and for the energy weight of the tail.
    """
    n1 = float(N + 1)
    margin = np.log1p(1.0 / (2.0 * b * n1))
    kk = np.sqrt(n1**2 + (_CUT + margin) / b)
    return (np.ceil(kk).astype(np.int64) + 2).clip(min=N + 2)


def holes_kept(b: np.ndarray, N: int) -> np.ndarray:
    """Deepest hole level to keep for each b > 0: the mirror image of :func:`levels_kept`.

    Keep holes n <= N with b (N^2 - n^2) <= cut (same cut and tail margin as for
    particles); deeper holes weigh < exp(-_CUT) relative to the hole at N.
    """
    n0 = float(N)
    margin = np.log1p(1.0 / (2.0 * b * n0))
    v = n0**2 - (_CUT + margin) / b
    nn = np.floor(np.sqrt(np.clip(v, 0.0, None))).astype(np.int64) - 2
    return nn.clip(min=1, max=N)


_CACHE_MAX = 1 << 16
# first guess of the pair cut-off, in grand-canonical widths above the mode
P_WIDTH: float = 8.0
# exact canonical a(T) - 1 per (N, T): model presets and ChainModel.with_ rebuild the
# same couplings many times; identical keys give bit-identical values
_canonical_cache: dict[tuple[int, float], float] = {}


def clear_cache() -> None:
    """Forget the cached exact canonical a(T) values (kept per (N, T) in memory)."""
    _canonical_cache.clear()


def ratio_minus_one(T: np.ndarray, N: int) -> np.ndarray:
    """a(T) - 1 for the exact canonical ensemble (rho drops out of the ratio); ``T``
    a validated array (eps0 units, >= 0), ``N >= 1``.

    Each distinct T > 0 is computed once and cached in memory per (N, T).
    """
    flat = T.ravel()
    out = np.zeros_like(flat)
    pos = flat > 0.0
    if np.any(pos):
        uniq, inv = np.unique(flat[pos], return_inverse=True)
        vals = np.empty(uniq.size)
        missing = []
        for i, t in enumerate(uniq.tolist()):
            hit = _canonical_cache.get((N, t))
            if hit is None:
                missing.append(i)
            else:
                vals[i] = hit
        if missing:
            idx = np.asarray(missing, dtype=np.int64)
            b = reduced_beta(uniq[idx], N, 1.0)
            fin = np.isfinite(b)  # T so small that b overflows: a - 1 underflows to 0
            res = np.zeros(idx.size)
            if np.any(fin):
                bf = np.ascontiguousarray(b[fin])
                exc = excitation_kernel(bf, N, levels_kept(bf, N), holes_kept(bf, N),
                                        P_WIDTH)
                res[fin] = exc / (N * (N + 1) * (2 * N + 1) / 6.0)
            vals[idx] = res
            if len(_canonical_cache) + idx.size > _CACHE_MAX:
                _canonical_cache.clear()
            for i, r in zip(idx.tolist(), res.tolist(), strict=True):
                _canonical_cache[(N, uniq[i].item())] = r
        out[pos] = vals[inv]
    return out.reshape(T.shape)
