"""Numba kernels of the quantum-jump engine. Flat arrays in, flat arrays out.

A trajectory lives in one magnon sector between jumps and evolves there under
the non-Hermitian ``H_eff = h - (i/2) sum_k L_k^+ L_k`` of that sector, exactly:

- *eigen mode* (small, well-conditioned sectors): ``H_eff = V diag(lam) V^-1``
  is precomputed; the state is kept as eigen-coefficients ``c`` and
  ``psi(t) = V (exp(-i lam t) c)``; on a uniform grid the phases advance by a
  cached ``exp(-i lam dt)``;
- *Chebyshev mode* (large sectors, or eigenvectors ill-conditioned near an
  exceptional point; the default): a step stores ``v_k = T_k((H_eff - c)/rho) psi``
  and gives ``psi`` at any time inside the step as a Bessel-weighted sum of
  them (dense output for output times and jump-time iterations), with the
  number of terms controlled a posteriori to below double precision; the
  terms are computed lazily, only as far as the latest time evaluated needs,
  and the step is probed at the output times and at the Newton estimate of
  the jump time, so no term beyond the jump's bracket is ever computed;
- *Taylor mode* (the same sectors with ``SectorPack(large="taylor")``):
  ``psi(t + h) = exp(-i H_eff h) psi`` by a Taylor series of the sparse
  ``H_eff`` with substeps ``||H||_1 h_sub <= TAYLOR_THETA``, summed until the
  terms fall below double precision (also used for the shared initial path
  outside eigen mode).

No mode has a time-step error. The jump time is the root of
``log ||psi(t)||^2 = log r`` (``r`` uniform), bracketed by the output grid and
found by safeguarded Newton (``d||psi||^2/dt = -psi^+ Gamma psi``) to 1e-10
relative in the norm. The channel is drawn with weight ``rate ||L_k psi||^2``.

Performance notes: helpers that allocate nothing are compiled with
``_nrt=False``. With the runtime on, numba brackets every array argument of an
inlined helper with atomic reference-count updates, which cost ~40% of the
run time of a small-sector trajectory; without it they cost nothing. Dense
products index with unsigned integers so that the loops vectorise.

Random numbers: xoshiro256** per trajectory, its state seeded by splitmix64
from (run key, trajectory index), so a trajectory is a pure function of the
run seed and its index.

Length: this module is the whole compiled trajectory engine (RNG, the three
propagation modes, jump search, observables, the block loop). Its functions
share the flat-table layout below and call each other inline; keeping them in
one module keeps that layout in one place and one numba cache unit.

Entry points (:func:`initial_path`, :func:`run_block`) take their arguments as
the record types :class:`SectorTables`, :class:`Start`, :class:`RunSpec` and
:class:`BlockOut` (named tuples of arrays and scalars; numba compiles them
as tuples, so they carry no Python objects into the compiled code).

Sector data layout (see ``sectorpack.SectorPack``): ``stab[m, :]`` holds
``built, dim, mode, off_V, off_Vinv, off_lam, off_sites, off_hop, nhop,
off_decay, off_indptr, off_indices, off_data, nnz, off_phase, off_cheb,
off_gamma`` (``off_indptr``, ``off_indices``, ``off_data``: the sparse ``H_eff``
for Taylor steps, -1 in a Chebyshev-mode row where the shared no-jump path
does not run, which only :func:`_cheb_segment` propagates); ``jtab[k, m]``
holds ``(offset, count, amp_offset, dense)`` of channel ``k``'s index map out
of sector ``m`` (``src`` at ``ints[offset:offset+count]``, ``dst`` right after;
amplitudes at
``reals[amp_offset:...]``, or all 1 when ``amp_offset < 0``: dephasing maps
every state to itself with the sign of ``sigma^z`` at its site). The Doob
process (docs/model.md 15) has dense jump matrices instead (``dense >= 0``, ``count``
rows) and a dense decay matrix (``off_gamma >= 0``; else -1 and the diagonal
at ``off_decay``). ``ptab[p, m]``
holds ``(off_both, nboth, off_pm, npm)`` of the two-point pair ``p`` (see
``SectorSpace.pair_maps``). ``otab[o, m]`` holds user operator ``o`` in
sector ``m`` as a coordinate list (``OP_*``: rows and columns in ``ints``,
complex values in ``cpx``, its nonzero diagonal first; a Hermitian operator
keeps only its strict upper triangle besides, see :func:`_record_ops`); the
operators' columns are the last of a row.

States (``FLAG_STATE``, ``mcsolve(states=True)``): at every output time a
trajectory records, its normalised state is added to ``BlockOut.rho``, the
block's sum of ``psi psi^+ / <psi|psi>`` per output time and sector (packed
upper triangles, real and imaginary parts apart; :func:`_record_state`). The rows a
trajectory takes from the shared no-jump path are counted instead and their
state added once per output time at the end of the block.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.extending import overload

# columns of stab
# (OFF_GAMMA: a dense decay matrix, the Doob process; -1: the diagonal at OFF_DECAY)
BUILT, DIM, MODE, OFF_V, OFF_VINV, OFF_LAM, OFF_SITES, OFF_HOP, NHOP, OFF_DECAY, \
    OFF_INDPTR, OFF_INDICES, OFF_DATA, NNZ, OFF_PHASE, OFF_CHEB, OFF_GAMMA = range(17)
NCOL = 17

# columns of jtab[c, m]: offset of the index map (sources, then destinations) in
# ints, its length, offset of its amplitudes in reals (-1: all 1), and of a dense
# jump matrix in reals (-1: none; else JT_COUNT holds its number of rows)
JT_MAP, JT_COUNT, JT_AMP, JT_DENSE = range(4)
NJCOL = 4

MODE_EIGEN = 0
MODE_TAYLOR = 1
MODE_CHEB = 2

# layout of a sector's Chebyshev parameters at reals[off_cheb:off_cheb + CHEB_NPAR]
# (offsets into ints: off-diagonal CSR indptr, indices; into reals: its values / rho;
# into cpx: the diagonal (H_jj - c) / rho; CHEB_PK, CHEB_VT: the packed form of the
# off-diagonal part, see :func:`_entry_impl`, or -1; a packed sector has no plain
# form: CHEB_OIDX = CHEB_OVAL = -1)
CHEB_CR, CHEB_CI, CHEB_RHO, CHEB_H, CHEB_KCAP, CHEB_OPTR, CHEB_OIDX, CHEB_OVAL, \
    CHEB_ODG, CHEB_PK, CHEB_VT = range(11)
CHEB_NPAR = 11
#: packed off-diagonal entries (:func:`_entry_impl`): column in the low
#: ``PACK_SHIFT`` bits of a uint32, index of the value in the sector's value table above
PACK_SHIFT = 24
PACK_MASK = (1 << PACK_SHIFT) - 1
PACK_MAX_VALUES = 1 << (32 - PACK_SHIFT)
#: a Chebyshev evaluation stops adding terms when two consecutive terms
#: ``|J_k(rho tau)| ||T_k psi||`` fall below this fraction of ``||psi||``. The
#: neglected tail is then far below the round-off of the sum itself: whole steps
#: agree with the dense exponential to 6e-16 to 1.2e-15 of the state, as with the
#: 1e-16 used before, which took 2-3 more terms per step (6% of the terms of a
#: trajectory at N = 11); ``tests/test_chebyshev.py`` holds the error below 2e-15
#: (a rule of 1e-12 fails that).
CHEB_TOL = 1e-14

# kernel status codes (0: ok; negative: see run_block)
STATUS_NEED_SECTOR = -1
STATUS_JUMP_BUFFER_FULL = -2

# observable flags (component layout: see layouts.kernel_layout); FLAG_OP:
# user operators (the last columns of a row), FLAG_STATE: accumulate the block density
# matrix (BlockOut.rho)
FLAG_J, FLAG_JBOND, FLAG_N, FLAG_NN, FLAG_PM, FLAG_COUNT, FLAG_OP, FLAG_STATE = range(8)
NFLAGS = 8

# columns of otab[o, m]: a user operator's entries in sector m as a coordinate list
# (rows and columns in ints, complex values in cpx); the first ``nd`` entries are its
# nonzero diagonal, the rest off-diagonal (Hermitian operators: the strict upper
# triangle only; otherwise all of them). OP_HERM: 1 for a Hermitian operator.
OP_HERM, OP_ROW, OP_COL, OP_VAL, OP_ND, OP_NNZ = range(6)
NOPCOL = 6

# initial-state kinds of run_block
INIT_PURE, INIT_PRODUCT, INIT_TABLE = 0, 1, 2

_ROOT_TOL = 1e-10
#: a Chebyshev step probes the estimated jump time only if that spares more than
#: about this many terms before the next output time
PROBE_SAVE = 4.0
#: Taylor substeps satisfy ||H||_1 h <= TAYLOR_THETA: about 40 terms to 1e-17, fewer
#: matrix-vector products per unit time than smaller substeps; the largest term is
#: <= 6^6/6! ~ 65, so cancellation costs under two digits.
TAYLOR_THETA = 6.0


# --------------------------------------------------------------------------- RNG
@njit(cache=True)
def _rotl(x, k):
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(cache=True, _nrt=False)
def _splitmix64(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    z = x
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31)), x


@njit(cache=True, _nrt=False)
def seed_state(key, traj, state):
    """Seed the xoshiro256** ``state`` of trajectory ``traj`` from the run ``key``."""
    h, _ = _splitmix64(np.uint64(traj) ^ key[1])
    x = key[0] ^ h
    for i in range(4):
        z, x = _splitmix64(x ^ key[2 + (i & 1)])
        state[i] = z


@njit(cache=True, _nrt=False)
def next_uniform(state):
    """Uniform double in the open interval (0, 1)."""
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    result = _rotl(s1 * np.uint64(5), 7) * np.uint64(9)
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3
    return ((result >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


# --------------------------------------------------------------------------- propagation
@njit(cache=True, _nrt=False)
def _csr_apply(indptr, indices, data, x, out, d):
    for i in range(d):
        acc = 0j
        for p in range(indptr[i], indptr[i + 1]):
            acc += data[p] * x[indices[p]]
        out[i] = acc


@njit(cache=True, _nrt=False)
def _taylor(indptr, indices, data, hnorm, x, tau, out, w1, w2, d):
    """out = exp(-i H tau) x for sparse H (``tau >= 0``), to double precision."""
    for i in range(d):
        out[i] = x[i]
    if tau <= 0.0:
        return
    nsub = int(np.ceil(hnorm * tau / TAYLOR_THETA))
    if nsub < 1:
        nsub = 1
    h = tau / nsub
    for _ in range(nsub):
        for i in range(d):
            w1[i] = out[i]
        onorm = 0.0
        for i in range(d):
            onorm += out[i].real * out[i].real + out[i].imag * out[i].imag
        for k in range(1, 100):
            _csr_apply(indptr, indices, data, w1, w2, d)
            fac = -1j * h / k
            tn = 0.0
            for i in range(d):
                w1[i] = fac * w2[i]
                out[i] += w1[i]
                tn += w1[i].real * w1[i].real + w1[i].imag * w1[i].imag
            if tn <= 1e-34 * onorm:  # term below 1e-17 of the state (2-norms)
                break


@njit(cache=True, _nrt=False)
def _bessel_j(x, K, out):
    """``out[k] = J_k(x)`` for ``k = 0..K`` (``x >= 0``): Miller's backward
    recurrence from well above ``max(K, x)``, normalised by
    ``J_0 + 2 sum J_2k = 1`` (rescaled on the way to avoid overflow)."""
    for k in range(K + 1):
        out[k] = 0.0
    if x <= 0.0:
        out[0] = 1.0
        return
    top = K if K > x else int(x)
    M = top + 30 + int(6.0 * x ** (1.0 / 3.0))
    if M % 2 == 1:
        M += 1
    jp1 = 0.0
    j = 1.0
    s = 0.0
    for n in range(M, 0, -1):
        if n <= K:
            out[n] = j
        if n % 2 == 0:
            s += 2.0 * j
        jm1 = (2.0 * n / x) * j - jp1
        jp1 = j
        j = jm1
        if abs(j) > 1e250:
            j *= 1e-250
            jp1 *= 1e-250
            s *= 1e-250
            for q in range(n, K + 1):
                out[q] *= 1e-250
    s += j
    out[0] = j
    inv = 1.0 / s
    for k in range(K + 1):
        out[k] *= inv


@njit(cache=True, _nrt=False)
def _cheb_start(psi0, d, B, vn):
    """Term ``v_0 = psi0`` of a Chebyshev step (split storage, see
    :func:`_cheb_extend`); returns ``||psi0||^2``."""
    n0 = 0.0
    for i in range(d):
        B[i] = psi0[i].real
        B[d + i] = psi0[i].imag
        n0 += psi0[i].real * psi0[i].real + psi0[i].imag * psi0[i].imag
    vn[0] = n0
    return n0


def _entry(idx, val, p):
    """Column and value of off-diagonal entry ``p`` (compiled form: :func:`_entry_impl`)."""
    raise NotImplementedError("compiled code only")


@overload(_entry, inline="always")
def _entry_impl(idx, val, p):
    """Column and value of entry ``p`` of a Chebyshev off-diagonal part, chosen at
    compile time by the index type: ``int64`` columns with their values
    (``oidx``, ``oval``), or ``uint32`` packed entries (``opk``: the column in
    the low ``PACK_SHIFT`` bits, above them the index of the value in ``vtab``,
    the sector's distinct off-diagonal values, one per bond coupling)."""
    if isinstance(idx, types.Array) and idx.dtype == types.uint32:
        mask = np.uint32(PACK_MASK)
        shift = np.uint32(PACK_SHIFT)

        def packed(idx, val, p):
            q = idx[p]
            return np.uint64(q & mask), val[np.uint64(q >> shift)]
        return packed

    def plain(idx, val, p):
        return np.uint64(idx[p]), val[p]
    return plain


@njit(cache=True, _nrt=False)
def _cheb_extend(optr, oidx, oval, dgs, d, B, vn, k_from, k_to):
    """Chebyshev terms ``v_k = T_k(Hs) psi0`` for ``k = k_from + 1 .. k_to``
    (``v_0 .. v_{k_from}`` present), ``Hs = (H - c) / rho``, split into real and
    imaginary parts: ``B[2 k d + i] = Re v_k[i]``, ``B[(2 k + 1) d + i] = Im v_k[i]``;
    ``vn[k] = ||v_k||^2``. ``Hs`` is given as its real off-diagonal part (CSR
    ``optr, oidx, oval``, already divided by ``rho``, or packed: ``opk, vtab``,
    see :func:`_entry_impl`) and its complex diagonal ``dgs``. The terms do not
    depend on the step length, so a step computes only as many as its latest
    evaluation time needs (:func:`_cheb_terms`).

    The packed form takes 4 bytes per entry instead of 16: for sectors whose
    matrix does not fit the cache, where the loop is bound by memory traffic
    (``sectorpack.PACK_MIN_BYTES``). Both forms give the same bits."""
    # unsigned indices and nonzero counter: a signed one gets numba's
    # negative-index wraparound (a sign mask and conditional moves per access);
    # measured 1.3-1.5x for the indices, then 1.30-1.36x for the counter, with
    # the arithmetic unchanged
    ud = np.uint64(d)
    one = np.uint64(1)
    for k in range(k_from + 1, k_to + 1):
        base = np.uint64(2 * k * d)
        pr_ = base - np.uint64(2 * d)
        pi_ = pr_ + ud
        two = 2.0 if k > 1 else 1.0
        # the diagonal products first, in a loop of their own that vectorises
        # (3-6% faster than inside the row loop; the same operations in the
        # same order, so the same bits)
        for i in range(d):
            ui = np.uint64(i)
            br = B[pr_ + ui]
            bi = B[pi_ + ui]
            g = dgs[ui]
            B[base + ui] = g.real * br - g.imag * bi
            B[base + ud + ui] = g.real * bi + g.imag * br
        nrm = 0.0
        p = np.uint64(optr[0])
        for i in range(d):
            ui = np.uint64(i)
            ar = B[base + ui]
            ai = B[base + ud + ui]
            p_end = np.uint64(optr[ui + one])
            while p < p_end:
                j, w = _entry(oidx, oval, p)
                ar += w * B[pr_ + j]
                ai += w * B[pi_ + j]
                p += one
            ar *= two
            ai *= two
            if k > 1:
                ar -= B[pr_ - ud - ud + ui]
                ai -= B[pr_ - ud + ui]
            B[base + ui] = ar
            B[base + ud + ui] = ai
            nrm += ar * ar + ai * ai
        vn[k] = nrm


@njit(cache=True, _nrt=False)
def _cheb_terms(optr, oidx, oval, dgs, d, B, vn, bes, x, kb, kcap, opk, vtab):
    """Number of terms ``Ke`` that evaluation at ``x = rho tau`` needs, computing
    further terms after the ``kb`` present (``v_0 .. v_kb``) as required:
    the first ``k > x`` where two consecutive terms satisfy
    ``|J_k(x)| ||v_k|| <= CHEB_TOL ||psi0||`` (``|J_k(rho t)|`` grows with ``t``
    for ``k > rho t``, so the bound also holds at every earlier time). ``bes``
    receives ``J_0(x) .. J_Ke(x)`` (computed to ``2 x + 30`` first, which covers
    the tail of every sector measured, and to ``kcap`` if that falls short).
    Returns ``(Ke, kb)`` with the new count of present terms; ``Ke = -1`` if
    ``kcap`` terms do not suffice. A non-empty ``opk`` selects the packed
    off-diagonal part (``opk``, ``vtab``; :func:`_entry_impl`)."""
    kn = min(kcap, int(2.0 * x) + 30)
    _bessel_j(x, kn, bes)
    if x <= 0.0 or vn[0] == 0.0:
        return 0, kb
    tol2 = CHEB_TOL * CHEB_TOL * vn[0]
    small = 0
    for k in range(1, kcap + 1):
        if k > kn:
            kn = kcap
            _bessel_j(x, kn, bes)
        if k > kb:
            if opk.size > 0:
                _cheb_extend(optr, opk, vtab, dgs, d, B, vn, kb, k)
            else:
                _cheb_extend(optr, oidx, oval, dgs, d, B, vn, kb, k)
            kb = k
        if k > x and bes[k] * bes[k] * vn[k] <= tol2:
            small += 1
            if small >= 2:
                return k, kb
        else:
            small = 0
    return -1, kb


@njit(cache=True, _nrt=False)
def _cheb_build(optr, oidx, oval, dgs, rho, h, kcap, psi0, d, B, vn, bes, opk, vtab):
    """All Chebyshev terms a step of length ``h`` needs (:func:`_cheb_start`,
    :func:`_cheb_terms`; ``opk`` empty or the packed entries); returns ``K``, or -1
    if ``kcap`` terms did not suffice."""
    _cheb_start(psi0, d, B, vn)
    K, _ = _cheb_terms(optr, oidx, oval, dgs, d, B, vn, bes, rho * h, 0, kcap, opk, vtab)
    return K


@njit(cache=True, _nrt=False)
def _cheb_eval(B, vn, K, d, cr, ci, rho, tau, bes, psi, fs):
    """``psi = exp(-i H tau) psi0`` from the step's Chebyshev vectors
    (``0 <= tau <= h``): ``e^{-i c tau} sum_k (2 - delta_k0) (-i)^k J_k(rho tau) v_k``,
    summed up to the first two consecutive terms below ``CHEB_TOL ||psi0||``
    beyond ``k = rho tau`` (the tail decays from there). ``fs`` is real
    scratch of size ``2 d``. Returns the squared norm."""
    x = rho * tau
    _bessel_j(x, K, bes)
    tol2 = CHEB_TOL * CHEB_TOL * vn[0]
    Ke = K
    small = 0
    for k in range(1, K + 1):
        if k > x and bes[k] * bes[k] * vn[k] <= tol2:
            small += 1
            if small >= 2:
                Ke = k
                break
        else:
            small = 0
    return _cheb_sum(B, Ke, d, cr, ci, tau, bes, psi, fs)


@njit(cache=True, _nrt=False)
def _cheb_sum(B, Ke, d, cr, ci, tau, bes, psi, fs):
    """``psi = e^{-i c tau} sum_{k <= Ke} (2 - delta_k0) (-i)^k J_k(rho tau) v_k``
    with ``bes[k] = J_k(rho tau)`` given; returns the squared norm."""
    ud = np.uint64(d)
    fac = np.exp(complex(ci * tau, -cr * tau))
    for i in range(d):
        fs[i] = 0.0
        fs[d + i] = 0.0
    # two terms per sweep (one load and store of the sum per element instead of
    # two; the additions happen in the same order, so the result is unchanged)
    k = 0
    while k < Ke:
        c0 = fac * bes[k] * (2.0 if k > 0 else 1.0)
        fac = fac * (-1j)
        c1 = fac * bes[k + 1] * 2.0
        fac = fac * (-1j)
        a0 = c0.real
        b0 = c0.imag
        a1 = c1.real
        b1 = c1.imag
        r0 = np.uint64(2 * k * d)
        i0 = r0 + ud
        r1 = i0 + ud
        i1 = r1 + ud
        for i in range(d):
            ui = np.uint64(i)
            vr = B[r0 + ui]
            vi = B[i0 + ui]
            wr = B[r1 + ui]
            wi = B[i1 + ui]
            fs[ui] = (fs[ui] + (a0 * vr - b0 * vi)) + (a1 * wr - b1 * wi)
            fs[ud + ui] = (fs[ud + ui] + (a0 * vi + b0 * vr)) + (a1 * wi + b1 * wr)
        k += 2
    if k == Ke:
        c0 = fac * bes[k] * (2.0 if k > 0 else 1.0)
        a0 = c0.real
        b0 = c0.imag
        r0 = np.uint64(2 * k * d)
        i0 = r0 + ud
        for i in range(d):
            ui = np.uint64(i)
            vr = B[r0 + ui]
            vi = B[i0 + ui]
            fs[ui] += a0 * vr - b0 * vi
            fs[ud + ui] += a0 * vi + b0 * vr
    nrm = 0.0
    for i in range(d):
        psi[i] = complex(fs[i], fs[d + i])
        nrm += fs[i] * fs[i] + fs[d + i] * fs[d + i]
    return nrm


@njit(cache=True, _nrt=False)
def _matvec_split(reals, off, d, x, out, fs):
    """``out = M x`` for a dense complex ``d x d`` ``M`` stored transposed and split
    (:func:`_matvec_rect` with ``rows = cols = d``)."""
    _matvec_rect(reals, off, d, d, x, out, fs)


@njit(cache=True, _nrt=False, inline="always")
def _matvec_rect(reals, off, rows, cols, x, out, fs):
    """``out = M x`` for a dense complex ``rows x cols`` ``M`` stored transposed and
    split: ``reals[off + a rows + i] = Re M[i, a]``, ``reals[off + rows cols + a rows
    + i] = Im M[i, a]``.

    The inner loop is a contiguous real axpy, which the compiler vectorises
    (no reassociation of sums is needed); ``fs`` is real scratch of size ``2 rows``.
    """
    # unsigned indices: no negative-index wraparound, so the loop vectorises
    # without views (a view costs a reference-count update)
    ud = np.uint64(rows)
    for i in range(rows):
        fs[i] = 0.0
        fs[rows + i] = 0.0
    for a in range(cols):
        xr = x[a].real
        xi = x[a].imag
        if xr == 0.0 and xi == 0.0:
            continue  # a jumped state fills only part of its sector
        br = np.uint64(off + a * rows)
        bi = np.uint64(off + rows * cols + a * rows)
        for i in range(rows):
            ui = np.uint64(i)
            vr = reals[br + ui]
            vi = reals[bi + ui]
            fs[ui] += vr * xr - vi * xi
            fs[ud + ui] += vr * xi + vi * xr
    for i in range(rows):
        out[i] = complex(fs[i], fs[rows + i])


@njit(cache=True, _nrt=False)
def _eval_state(stab, cpx, ints, reals, hnorms, m, cur, tau, ph, psi, coef, w1, w2,
                fs):
    """State at ``t_cur + tau`` from the current representation ``cur``.

    Writes the site-basis state into ``psi`` and, in eigen mode, the phased
    coefficients into ``coef``. Returns the squared norm. ``ph >= 0`` (eigen
    mode): the phases ``exp(-i lambda tau)`` are cached at ``cpx[ph:]`` (the
    uniform output step, ``OFF_PHASE``, or a step to or from a stage boundary,
    ``SectorTables.bph``); ``ph < 0``: computed.
    """
    d = stab[m, DIM]
    if stab[m, MODE] == MODE_EIGEN:
        ol = stab[m, OFF_LAM]
        if ph >= 0:
            for a in range(d):
                coef[a] = cur[a] * cpx[ph + a]
        else:
            for a in range(d):
                lam = cpx[ol + a]
                coef[a] = cur[a] * np.exp(-1j * lam * tau)
        _matvec_split(reals, stab[m, OFF_V], d, coef, psi, fs)
    else:
        oi = stab[m, OFF_INDPTR]
        nnz = stab[m, NNZ]
        oj = stab[m, OFF_INDICES]
        od = stab[m, OFF_DATA]
        _taylor(ints[oi:oi + d + 1], ints[oj:oj + nnz], cpx[od:od + nnz], hnorms[m],
                cur, tau, psi, w1, w2, d)
    nrm = 0.0
    for i in range(d):
        nrm += psi[i].real * psi[i].real + psi[i].imag * psi[i].imag
    return nrm


@njit(cache=True, _nrt=False)
def _accept(stab, m, cur, psi, coef):
    d = stab[m, DIM]
    if stab[m, MODE] == MODE_EIGEN:
        for a in range(d):
            cur[a] = coef[a]
    else:
        for a in range(d):
            cur[a] = psi[a]


@njit(cache=True, _nrt=False)
def _set_state(stab, reals, m, psi, cur, fs):
    """Current representation of the site-basis state ``psi`` in sector ``m``."""
    d = stab[m, DIM]
    if stab[m, MODE] == MODE_EIGEN:
        _matvec_split(reals, stab[m, OFF_VINV], d, psi, cur, fs)
    else:
        for a in range(d):
            cur[a] = psi[a]


@njit(cache=True, _nrt=False)
def _decay_rate(stab, reals, m, psi):
    """``psi^+ Gamma psi``: ``-d ||psi||^2 / dt`` along the no-jump evolution."""
    d = stab[m, DIM]
    if stab[m, OFF_GAMMA] >= 0:
        return _decay_dense(reals, stab[m, OFF_GAMMA], d, psi)
    od = stab[m, OFF_DECAY]
    g = 0.0
    uod = np.uint64(od)
    for i in range(d):
        ui = np.uint64(i)
        g += reals[uod + ui] * (psi[ui].real * psi[ui].real + psi[ui].imag * psi[ui].imag)
    return g


@njit(cache=True, _nrt=False)
def _decay_dense(reals, off, d, psi):
    """``psi^+ Gamma psi`` for a dense Hermitian ``Gamma`` stored as in :func:`_matvec_rect`."""
    g = 0.0
    for a in range(d):
        xr = psi[a].real
        xi = psi[a].imag
        br = off + a * d
        bi = off + d * d + a * d
        for i in range(d):
            gr = reals[br + i]
            gi = reals[bi + i]
            g += psi[i].real * (gr * xr - gi * xi) + psi[i].imag * (gr * xi + gi * xr)
    return g


@njit(cache=True, _nrt=False)
def _newton_bracket(x, fx, nx, g, lo, hi):
    """One safeguarded Newton step on ``f = log n - log r`` (``f' = -g / n``, ``g``
    the decay rate at ``x``): the narrowed bracket ``(lo, hi)`` and the next
    iterate, bisecting when Newton leaves the bracket."""
    if fx > 0.0:
        lo = x
    else:
        hi = x
    xn = -1.0
    if nx > 0.0 and g > 0.0:
        xn = x + fx * nx / g
    if not (lo < xn < hi):
        xn = 0.5 * (lo + hi)
    return lo, hi, xn


@njit(cache=True, _nrt=False)
def _hermite_root(f0, s0, f1, s1):
    """Root in [0, 1] of the cubic with values ``f0 > 0 >= f1`` and slopes ``s0, s1``
    at 0 and 1 (safeguarded Newton from the secant root)."""
    lo = 0.0
    hi = 1.0
    x = f0 / (f0 - f1)
    for _ in range(30):
        x2 = x * x
        x3 = x2 * x
        p = ((2 * x3 - 3 * x2 + 1) * f0 + (x3 - 2 * x2 + x) * s0
             + (3 * x2 - 2 * x3) * f1 + (x3 - x2) * s1)
        if p > 0.0:
            lo = x
        else:
            hi = x
        dp = ((6 * x2 - 6 * x) * (f0 - f1) + (3 * x2 - 4 * x + 1) * s0
              + (3 * x2 - 2 * x) * s1)
        xn = x - p / dp if dp < 0.0 else -1.0
        if not (lo < xn < hi):
            xn = 0.5 * (lo + hi)
        if abs(xn - x) <= 1e-15:
            return xn
        x = xn
    return x


# --------------------------------------------------------------------------- observables
@njit(cache=True, _nrt=False)
def _record(stab, ints, row, psi, nrm, N, flags, out, k_out):
    """Write the observables of ``psi / sqrt(nrm)`` (in the sector of table row
    ``row``) into ``out[k_out]``.

    Component layout: [j] (if FLAG_J), [j_bond x (N-1)] (if FLAG_JBOND),
    [m] (the magnetisation ``N/2 - magnons``), [n x N] (if FLAG_N); the
    two-point observables and the jump counts that follow are written by
    :func:`_record_extra`.
    """
    d = stab[row, DIM]
    magnons = row % (N + 1)  # the sector (``row`` is a table row: stage base + magnons)
    inv = 1.0 / nrm
    pos = 0
    want_j = flags[FLAG_J] != 0
    want_jb = flags[FLAG_JBOND] != 0
    if want_j or want_jb:
        oh = stab[row, OFF_HOP]
        nh = stab[row, NHOP]
        jpos = pos
        jbpos = pos + (1 if want_j else 0)
        if want_jb:
            for l in range(N - 1):
                out[k_out, jbpos + l] = 0.0
        tot = 0.0
        uh = np.uint64(oh)
        unh = np.uint64(nh)
        for h in range(nh):
            q = uh + np.uint64(h)
            b = ints[q]
            to = np.uint64(ints[q + unh])
            fr = np.uint64(ints[q + unh + unh])
            # -4 Im(conj(psi_to) psi_from)
            x = -4.0 * (psi[to].real * psi[fr].imag - psi[to].imag * psi[fr].real) * inv
            tot += x
            if want_jb:
                out[k_out, jbpos + b] += x
        if want_j:
            out[k_out, jpos] = tot
        pos = jbpos + (N - 1 if want_jb else 0)
    out[k_out, pos] = N / 2.0 - magnons  # the magnetisation
    pos += 1
    if flags[FLAG_N] != 0:
        for i in range(N):
            out[k_out, pos + i] = 0.0
        os_ = stab[row, OFF_SITES]
        for bidx in range(d):
            p = (psi[bidx].real * psi[bidx].real + psi[bidx].imag * psi[bidx].imag) * inv
            for k in range(magnons):
                out[k_out, pos + ints[os_ + bidx * magnons + k]] += p


@njit(cache=True, _nrt=False, inline="always")
def _record_ops(cpx, ints, otab, m, psi, inv, out, k_out, pos):
    """The user operators' columns from ``pos``: ``<psi|O|psi> inv`` of each operator
    in sector ``m`` (``otab``, see ``OP_*``): its real part (Hermitian, one column)
    or its real and imaginary parts (two columns).

    Hermitian: ``sum_diag Re O_ii |psi_i|^2 + 2 Re sum_{i<j} conj(psi_i) O_ij psi_j``
    (only the strict upper triangle is stored), so an off-diagonal pair costs one
    entry and only real parts are formed."""
    # unsigned indices: no negative-index wraparound in the gathers
    p = pos
    for o in range(otab.shape[0]):
        ro = np.uint64(otab[o, m, OP_ROW])
        co = np.uint64(otab[o, m, OP_COL])
        vo = np.uint64(otab[o, m, OP_VAL])
        nd = np.uint64(otab[o, m, OP_ND])
        nnz = np.uint64(otab[o, m, OP_NNZ])
        if otab[o, m, OP_HERM] != 0:
            dr = 0.0
            for q in range(nd):
                uq = np.uint64(q)
                x = psi[np.uint64(ints[ro + uq])]
                dr += cpx[vo + uq].real * (x.real * x.real + x.imag * x.imag)
            sr = 0.0
            for q in range(nd, nnz):
                uq = np.uint64(q)
                a = psi[np.uint64(ints[ro + uq])]
                b = psi[np.uint64(ints[co + uq])]
                v = cpx[vo + uq]
                # Re(conj(a) v b)
                sr += (a.real * (v.real * b.real - v.imag * b.imag)
                       + a.imag * (v.real * b.imag + v.imag * b.real))
            out[k_out, p] = (dr + 2.0 * sr) * inv
            p += 1
        else:
            dr = 0.0
            di = 0.0
            for q in range(nd):
                uq = np.uint64(q)
                x = psi[np.uint64(ints[ro + uq])]
                a2 = x.real * x.real + x.imag * x.imag
                v = cpx[vo + uq]
                dr += v.real * a2
                di += v.imag * a2
            sr = 0.0
            si = 0.0
            for q in range(nd, nnz):
                uq = np.uint64(q)
                a = psi[np.uint64(ints[ro + uq])]
                b = psi[np.uint64(ints[co + uq])]
                v = cpx[vo + uq]
                # conj(a) v b
                br = v.real * b.real - v.imag * b.imag
                bi = v.real * b.imag + v.imag * b.real
                sr += a.real * br + a.imag * bi
                si += a.real * bi - a.imag * br
            out[k_out, p] = (dr + sr) * inv
            out[k_out, p + 1] = (di + si) * inv
            p += 2


@njit(cache=True, _nrt=False)
def _record_ops_call(cpx, ints, otab, m, psi, inv, out, k_out, pos):
    """:func:`_record_ops` as a call of its own (it is inlined into :func:`_segment_user`,
    the eigen-mode loop, where the call cost a third of a typical operator's
    evaluation at N = 7; the Chebyshev loop calls this, which keeps that loop
    as it was for runs without operators)."""
    _record_ops(cpx, ints, otab, m, psi, inv, out, k_out, pos)


@njit(cache=True, _nrt=False)
def _op_start(otab, flags, ncomp):
    """First column of the user operators in a row of ``ncomp`` columns (``ncomp``
    without them): they take the last columns, one per Hermitian operator, two
    per other."""
    pos = ncomp
    if flags[FLAG_OP] != 0:
        for o in range(otab.shape[0]):
            pos -= 1 if otab[o, 0, OP_HERM] != 0 else 2
    return pos


@njit(cache=True, _nrt=False)
def _record_extra(ints, ptab, m, psi, nrm, flags, out, k_out, counts, opos):
    """Columns after ``n`` and before the user operators' (which start at ``opos``):
    ``[nn x npair] [pm_re x npair, pm_im x npair]`` (``<n_i n_k>``, ``<s+_i s-_k>``
    of every pair, see ``SectorSpace.pair_maps``) and ``[count x nch]`` (jumps so
    far), as flagged."""
    npair = ptab.shape[0]
    inv = 1.0 / nrm
    pos = opos
    if flags[FLAG_COUNT] != 0:
        pos -= counts.size
        for c in range(counts.size):
            out[k_out, pos + c] = counts[c]
    if flags[FLAG_PM] != 0:
        pos -= 2 * npair
    if flags[FLAG_NN] != 0:
        pos -= npair
    if flags[FLAG_NN] != 0:
        for p in range(npair):
            ob = ptab[p, m, 0]
            s = 0.0
            for q in range(ptab[p, m, 1]):
                v = psi[ints[ob + q]]
                s += v.real * v.real + v.imag * v.imag
            out[k_out, pos + p] = s * inv
        pos += npair
    if flags[FLAG_PM] != 0:
        for p in range(npair):
            op = ptab[p, m, 2]
            npm = ptab[p, m, 3]
            acc = 0j
            for q in range(npm):
                acc += psi[ints[op + q]] * np.conj(psi[ints[op + npm + q]])
            out[k_out, pos + p] = acc.real * inv
            out[k_out, pos + npair + p] = acc.imag * inv


@njit(cache=True, _nrt=False)
def _record_state(rho, base, d, psi, w):
    """Add ``w psi psi^+`` to one sector block of the density-matrix sum: its upper
    triangle (``j >= i``) packed row by row, ``T = d (d + 1) / 2`` real parts from
    ``rho[base]`` (entry ``(i, j)`` at ``i d - i (i - 1) / 2 + j - i``), then the
    ``T`` imaginary parts (the lower triangle follows by Hermiticity when the sum
    is read, ``layouts.state_blocks``)."""
    ud = np.uint64(d)
    tri = ud * (ud + np.uint64(1)) // np.uint64(2)
    row = np.uint64(base)
    for i in range(d):
        ar = psi[i].real * w
        ai = psi[i].imag * w
        ui = np.uint64(i)
        if ar != 0.0 or ai != 0.0:
            for j in range(i, d):
                uj = np.uint64(j)
                br = psi[uj].real
                bi = psi[uj].imag
                q = row + uj - ui
                rho[q] += ar * br + ai * bi
                rho[q + tri] += ai * br - ar * bi
        row += ud - ui


# --------------------------------------------------------------------------- entry records
class SectorTables(NamedTuple):
    """The flat sector data of a run (``sectorpack.SectorPack.tables``).

    ``stab (N+1, NCOL) int64``: per-sector row (``BUILT, DIM, MODE, OFF_*``);
    ``jtab (nch, N+1, 3) int64``: jump maps ``(offset, count, amp_offset)``;
    ``ptab (npair, N+1, 4) int64``: two-point maps; ``hnorms (N+1,)``: 1-norms
    of the shifted sparse ``H_eff`` (Taylor mode); ``cpx``/``ints``/``reals``:
    the pools the offsets point into; ``ch_rate (nmodel, nch)``, ``ch_dm
    (nch,)``: rate (per distinct stage model) and magnon-number change of each
    channel; ``maxdim``: the largest sector dimension built so far (work-vector
    size); ``otab (nop, N+1, NOPCOL) int64``: the user operators' coordinate
    lists per sector (``OP_*``; one unused row when there are none).

    ``bph (S, N + 1, 2) int64``: per stage ``s`` and sector, offsets in ``cpx``
    of the eigen-mode phases of the step into the stage's end (from
    ``RunSpec.stage_L[s]``) and out of its start (to its first output time);
    -1: none (not eigen mode, or no such step).

    Schedules (docs/model.md 14): every table has ``nmodel (N + 1)`` sector rows,
    row ``u (N + 1) + m`` for sector ``m`` of the ``u``-th distinct stage model
    (one model: the rows are the sectors). Functions below take such a row as
    ``m``; only :func:`_record` needs the magnon number (``m % (N + 1)``).
    """

    stab: np.ndarray
    jtab: np.ndarray
    ptab: np.ndarray
    hnorms: np.ndarray
    cpx: np.ndarray
    ints: np.ndarray
    reals: np.ndarray
    ch_rate: np.ndarray
    ch_dm: np.ndarray
    maxdim: int
    otab: np.ndarray
    bph: np.ndarray


class RunSpec(NamedTuple):
    """What every trajectory of a run shares.

    ``key (4,) uint64``: run key (trajectory ``k`` seeds from ``(key, k)``);
    ``times (nt,)``: output times; ``use_phase_grid``: the output grid is
    uniform, eigen-mode phases advance by a cached factor (for
    :func:`initial_path`: the fine grid is that grid); ``N``: sites;
    ``flags (NFLAGS,) int64``: observables to record (``FLAG_*``); ``ncomp``:
    components per output row; ``nch``: jump channels; ``max_magnons``:
    magnon cap; ``record_jumps``, ``keep``: fill ``BlockOut.jump_buf`` /
    ``BlockOut.kept``; ``rho_off (N+1,) int64``, ``rho_stride``: with
    ``FLAG_STATE``, where sector ``m``'s block of output time ``k`` starts in
    ``BlockOut.rho`` (``k * rho_stride + rho_off[m]``; -1: not stored; one entry
    per table row, see :class:`SectorTables`). Stages (docs/model.md 14; one stage
    for a plain model): ``stage_t (S,)`` start times (``stage_t[0] = 0``),
    ``stage_base (S,)`` the table row of sector 0 of each stage's model,
    ``stage_u (S,)`` its row of ``SectorTables.ch_rate``, ``stage_kend (S,)``
    the number of output times ``<= stage_t[s + 1]`` (``nt`` for the last),
    ``stage_L (S,)`` the time from which a trajectory without a jump in stage
    ``s`` probes its end (its last output time, else ``stage_t[s]``).
    """

    key: np.ndarray
    times: np.ndarray
    use_phase_grid: bool
    N: int
    flags: np.ndarray
    ncomp: int
    nch: int
    max_magnons: int
    record_jumps: bool
    keep: bool
    rho_off: np.ndarray
    rho_stride: int
    stage_t: np.ndarray
    stage_base: np.ndarray
    stage_u: np.ndarray
    stage_kend: np.ndarray
    stage_L: np.ndarray


class Start(NamedTuple):
    """The initial state and the shared no-jump path from it.

    ``init_kind``: ``INIT_PURE`` (``psi0 (d,) complex`` in sector ``m0``),
    ``INIT_PRODUCT`` (site ``i`` down with probability ``init_p[i]``; colex
    ranks from ``binom``) or ``INIT_TABLE`` (row ``j`` of ``init_cfg (n, 2)``
    = ``(m, basis index)`` with cumulative weights ``init_p``). Path
    (``INIT_PURE`` only; empty otherwise): ``fine_t (nf,)`` the refined grid,
    ``out_idx (nt,)`` fine index of each output time, ``path_cur (nf, d)``
    current representation, ``path_norm (nf,)`` squared norm, ``path_decay
    (nf,)`` ``psi^+ Gamma psi``, ``path_obs (nt, ncomp)`` normalised
    observables, ``path_psi (nt, d)`` the normalised state at each output time
    (with ``FLAG_STATE``; else one unused row); :func:`initial_path` fills the
    ``path_*`` arrays.
    """

    m0: int
    psi0: np.ndarray
    init_kind: int
    init_p: np.ndarray
    init_cfg: np.ndarray
    binom: np.ndarray
    fine_t: np.ndarray
    out_idx: np.ndarray
    path_cur: np.ndarray
    path_norm: np.ndarray
    path_decay: np.ndarray
    path_obs: np.ndarray
    path_psi: np.ndarray


class BlockOut(NamedTuple):
    """Output buffers of one :func:`run_block` call.

    ``cnt (nt,) int64``, ``mean (nt, ncomp)``, ``m2 (nt, ncomp)``: Welford
    accumulators (zeroed by the caller); ``jump_buf (cap, 4)``: rows
    ``(traj, t, channel, m_before)``; ``kept (ntraj, nt, ncomp)``: each
    trajectory's rows when ``RunSpec.keep``; ``rho (nt * rho_stride,)``: with
    ``FLAG_STATE``, the sum over the block's trajectories of ``psi psi^+ /
    <psi|psi>`` at each output time, sector block by sector block (packed
    upper triangles, see :func:`_record_state`; zeroed by the caller).
    """

    cnt: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    jump_buf: np.ndarray
    kept: np.ndarray
    rho: np.ndarray


# --------------------------------------------------------------------------- shared start
@njit(cache=True, nogil=True)
def initial_path(tables, spec, start):
    """No-jump path from the initial state, shared by every trajectory.

    ``start.fine_t`` is the output grid, refined in Taylor mode to about one
    substep so that a trajectory starts its jump search at most one substep
    before its jump; ``start.out_idx[k]`` is the fine index of output time
    ``k``. Fills ``start.path_cur[f]`` (current representation),
    ``path_norm[f]`` (squared norm) and ``path_decay[f]`` (``psi^+ Gamma psi``)
    at every fine point and the normalised observables ``path_obs[k]`` at
    every output time. ``spec.use_phase_grid`` refers to ``fine_t``.

    Stages: ``fine_t`` holds every stage boundary; the state at a boundary is
    reached with the stage that ends there and stored in the representation
    of the stage that starts there (whose decay rate ``path_decay`` holds).
    """
    stab, cpx, ints, reals = tables.stab, tables.cpx, tables.ints, tables.reals
    hnorms, ptab, otab = tables.hnorms, tables.ptab, tables.otab
    m0, psi0, fine_t, out_idx = start.m0, start.psi0, start.fine_t, start.out_idx
    path_cur, path_norm = start.path_cur, start.path_norm
    path_decay, path_obs, path_psi = start.path_decay, start.path_obs, start.path_psi
    use_phase_grid, N, flags, nch = spec.use_phase_grid, spec.N, spec.flags, spec.nch
    stage_t, stage_base = spec.stage_t, spec.stage_base
    nst = stage_t.size
    s = 0
    m0 = stage_base[0] + m0
    d = stab[m0, DIM]
    opos = _op_start(otab, flags, path_obs.shape[1])
    maxd = psi0.size if psi0.size > d else d
    cur = np.zeros(maxd, dtype=np.complex128)
    psi = np.zeros(maxd, dtype=np.complex128)
    coef = np.zeros(maxd, dtype=np.complex128)
    w1 = np.zeros(maxd, dtype=np.complex128)
    w2 = np.zeros(maxd, dtype=np.complex128)
    fs = np.zeros(2 * maxd)
    _set_state(stab, reals, m0, psi0, cur, fs)
    t_cur = 0.0
    k = 0
    for f in range(fine_t.size):
        tau = fine_t[f] - t_cur
        ph = stab[m0, OFF_PHASE] if use_phase_grid and f > 0 else -1
        nrm = _eval_state(stab, cpx, ints, reals, hnorms, m0, cur, tau, ph, psi, coef, w1, w2, fs)
        _accept(stab, m0, cur, psi, coef)
        t_cur = fine_t[f]
        while s + 1 < nst and stage_t[s + 1] <= t_cur:
            s += 1
            m0 = m0 % (N + 1) + stage_base[s]
            _set_state(stab, reals, m0, psi, cur, fs)
        for a in range(d):
            path_cur[f, a] = cur[a]
        path_norm[f] = nrm
        path_decay[f] = _decay_rate(stab, reals, m0, psi)
        while k < out_idx.size and out_idx[k] == f:
            if nrm > 0.0:
                _record(stab, ints, m0, psi, nrm, N, flags, path_obs, k)
                if flags[FLAG_NN] != 0 or flags[FLAG_PM] != 0:
                    _record_extra(ints, ptab, m0, psi, nrm, flags, path_obs, k,
                                  np.zeros(nch), opos)
                if flags[FLAG_OP] != 0:
                    _record_ops_call(cpx, ints, otab, m0, psi, 1.0 / nrm, path_obs, k, opos)
                if flags[FLAG_STATE] != 0:
                    sc = 1.0 / np.sqrt(nrm)
                    for a in range(d):
                        path_psi[k, a] = psi[a] * sc
            k += 1


# --------------------------------------------------------------------------- pieces of a trajectory
@njit(cache=True, _nrt=False)
def _segment(stab, cpx, ints, reals, hnorms, ptab, m, times, nt, k, t_cur, n_cur, g_cur,
             on_grid, use_phase_grid, r, cur, psi, coef, w1, w2, fs, N, flags, X, counts, opos,
             ph_first):
    """No-jump evolution in sector ``m`` over the output times ``times[k:nt]``.

    Records the observables at every output time whose squared norm stays
    above ``r`` (``opos``: the first user-operator column, where the columns of
    :func:`_record_extra` end; the operators themselves and the states are
    recorded by :func:`_segment_user`). Returns ``(k, t_cur, n_cur, g_cur, n_hi,
    g_hi, on_grid)``: either ``k == times.size`` (no jump before the end), or
    the jump lies in ``(t_cur, times[k]]``, where the squared norm is ``n_hi <= r``
    and the decay rate ``psi^+ Gamma psi`` is ``g_hi``. ``ph_first``: cached
    phases of the first step when it is not on the grid (``-1``: none).
    """
    n_hi = 0.0
    g_hi = 0.0
    ph_grid = stab[m, OFF_PHASE] if use_phase_grid else -1
    ph = ph_grid if on_grid else ph_first
    while k < nt:
        nrm = _eval_state(stab, cpx, ints, reals, hnorms, m, cur, times[k] - t_cur,
                          ph, psi, coef, w1, w2, fs)
        if nrm <= r:
            n_hi = nrm
            g_hi = _decay_rate(stab, reals, m, psi)
            break
        _record(stab, ints, m, psi, nrm, N, flags, X, k)
        if flags[FLAG_NN] != 0 or flags[FLAG_PM] != 0 or flags[FLAG_COUNT] != 0:
            _record_extra(ints, ptab, m, psi, nrm, flags, X, k, counts, opos)
        _accept(stab, m, cur, psi, coef)
        t_cur = times[k]
        n_cur = nrm
        g_cur = _decay_rate(stab, reals, m, psi)
        on_grid = True
        ph = ph_grid
        k += 1
    return k, t_cur, n_cur, g_cur, n_hi, g_hi, on_grid


@njit(cache=True, _nrt=False)
def _segment_user(stab, cpx, ints, reals, hnorms, ptab, m, times, nt, k, t_cur, n_cur, g_cur,
                  on_grid, use_phase_grid, r, cur, psi, coef, w1, w2, fs, N, flags, X, counts,
                  otab, opos, racc, rho_off, rho_stride, ph_first):
    """:func:`_segment` that also records the user operators (``FLAG_OP``, columns
    from ``opos``) and the state into ``racc`` (``FLAG_STATE``; ``rho_off``,
    ``rho_stride``: see :class:`RunSpec`) at every recorded output time.

    A copy of :func:`_segment` with two more calls in its loop rather than
    branches in :func:`_segment` itself: with them (and the five more
    arguments) the plain eigen-mode path measured 4% slower at N = 7.
    """
    n_hi = 0.0
    g_hi = 0.0
    want_ops = flags[FLAG_OP] != 0
    want_state = flags[FLAG_STATE] != 0 and rho_off[m] >= 0
    ph_grid = stab[m, OFF_PHASE] if use_phase_grid else -1
    ph = ph_grid if on_grid else ph_first
    while k < nt:
        nrm = _eval_state(stab, cpx, ints, reals, hnorms, m, cur, times[k] - t_cur,
                          ph, psi, coef, w1, w2, fs)
        if nrm <= r:
            n_hi = nrm
            g_hi = _decay_rate(stab, reals, m, psi)
            break
        _record(stab, ints, m, psi, nrm, N, flags, X, k)
        if flags[FLAG_NN] != 0 or flags[FLAG_PM] != 0 or flags[FLAG_COUNT] != 0:
            _record_extra(ints, ptab, m, psi, nrm, flags, X, k, counts, opos)
        if want_ops:
            _record_ops(cpx, ints, otab, m, psi, 1.0 / nrm, X, k, opos)
        if want_state:
            _record_state(racc, k * rho_stride + rho_off[m], stab[m, DIM], psi, 1.0 / nrm)
        _accept(stab, m, cur, psi, coef)
        t_cur = times[k]
        n_cur = nrm
        g_cur = _decay_rate(stab, reals, m, psi)
        on_grid = True
        ph = ph_grid
        k += 1
    return k, t_cur, n_cur, g_cur, n_hi, g_hi, on_grid


@njit(cache=True, _nrt=False)
def _locate_jump(stab, cpx, ints, reals, hnorms, m, t_cur, n_cur, g_cur, t_hi, n_hi, g_hi,
                 r, cur, psi, coef, w1, w2, fs):
    """Time of the jump in ``(t_cur, t_hi]``: the root of ``log ||psi||^2 = log r``.

    First guess from the cubic Hermite interpolant of the log-norm (values and
    slopes ``-g/n`` at both ends), then safeguarded Newton to ``_ROOT_TOL``.
    In Taylor mode the bracket is first narrowed to one substep by marching
    (``cur`` is advanced). On return ``psi`` holds the unnormalised state at
    the jump time, which is returned.
    """
    logr = np.log(r)
    tau = t_hi - t_cur
    if stab[m, MODE] == MODE_TAYLOR and hnorms[m] * tau > TAYLOR_THETA:
        hs = TAYLOR_THETA / hnorms[m]
        while t_hi - t_cur > hs:
            ns = _eval_state(stab, cpx, ints, reals, hnorms, m, cur, hs, -1,
                             psi, coef, w1, w2, fs)
            if ns <= r:
                n_hi = ns
                g_hi = _decay_rate(stab, reals, m, psi)
                break
            _accept(stab, m, cur, psi, coef)
            t_cur += hs
            n_cur = ns
            g_cur = _decay_rate(stab, reals, m, psi)
        tau = min(hs, t_hi - t_cur)
    lo = 0.0
    hi = tau
    f_hi = np.log(n_hi) - logr if n_hi > 0.0 else -np.inf
    f_lo = np.log(n_cur) - logr
    if np.isfinite(f_hi) and f_lo - f_hi > 0.0:
        x = hi * _hermite_root(f_lo, -g_cur / n_cur * hi, f_hi, -g_hi / n_hi * hi)
    else:
        x = 0.5 * (lo + hi)
    for _ in range(200):
        nx = _eval_state(stab, cpx, ints, reals, hnorms, m, cur, x, -1,
                         psi, coef, w1, w2, fs)
        fx = np.log(nx) - logr if nx > 0.0 else -np.inf
        if abs(fx) <= _ROOT_TOL:
            break
        lo, hi, xn = _newton_bracket(x, fx, nx, _decay_rate(stab, reals, m, psi), lo, hi)
        if hi - lo <= 1e-15 * (1.0 + t_cur + hi):
            x = hi
            _eval_state(stab, cpx, ints, reals, hnorms, m, cur, x, -1,
                        psi, coef, w1, w2, fs)
            break
        x = xn
    return t_cur + x


@njit(cache=True, _nrt=False)
def _cheb_segment(stab, cpx, ints, reals, ptab, m, times, nt, k, t_cur, r, cur, psi, B, vn,
                  bes, fs, N, flags, X, counts, otab, opos, racc, rho_off, rho_stride,
                  t_end, probe_end):
    """No-jump evolution in a Chebyshev-mode sector from ``cur`` (site basis,
    unnormalised) at ``t_cur``, until the jump or the last output time.

    A step of at most the sector's length ``h`` starts from one state; its
    Chebyshev terms are computed lazily (:func:`_cheb_terms`): only as many as
    the latest time evaluated so far needs. The step is probed at the output
    times inside it and, where outputs are sparse, at the time the current
    decay rate brings the squared norm to ``r`` (a Newton step on the
    log-norm, slightly overshot). The norm never increases along a no-jump
    path, so the first probe with squared norm ``<= r`` brackets the jump and
    no term beyond it is ever computed. Evaluations are dense output from the
    terms (``(K + 1) d`` operations each, no further products). Returns
    ``(k, t_jump)``: ``t_jump < 0`` means no jump before the end (then
    ``k == times.size``); otherwise ``psi`` holds the unnormalised state at ``t_jump``, the root of
    ``log ||psi||^2 = log r`` to ``_ROOT_TOL``.

    Only ``times[:nt]`` are output times here. ``probe_end`` (a stage boundary
    at ``t_end >= times[nt - 1]``, docs/model.md 14): the evolution runs on to
    ``t_end`` as to an output time; with no jump before it, returns ``(nt,
    -1.0)`` with the unnormalised state at ``t_end`` in ``cur``.
    """
    d = stab[m, DIM]
    pr = stab[m, OFF_CHEB]
    op_ = int(reals[pr + CHEB_OPTR])
    optr = ints[op_:op_ + d + 1]
    onnz = optr[d]
    og_ = int(reals[pr + CHEB_ODG])
    dgs = cpx[og_:og_ + d]
    pk_ = int(reals[pr + CHEB_PK])
    if pk_ >= 0:  # the packed entries only, two per element of ints
        opk = ints[pk_:pk_ + (onnz + 1) // 2].view(np.uint32)
        vt_ = int(reals[pr + CHEB_VT])
        vtab = reals[vt_:vt_ + PACK_MAX_VALUES]
        oidx = ints[0:0]
        oval = reals[0:0]
    else:
        opk = ints[0:0].view(np.uint32)
        vtab = reals[0:0]
        oi_ = int(reals[pr + CHEB_OIDX])
        oidx = ints[oi_:oi_ + onnz]
        ov_ = int(reals[pr + CHEB_OVAL])
        oval = reals[ov_:ov_ + onnz]
    cr = reals[pr + CHEB_CR]
    ci = reals[pr + CHEB_CI]
    rho = reals[pr + CHEB_RHO]
    hmax = reals[pr + CHEB_H]
    kcap = int(reals[pr + CHEB_KCAP])
    logr = np.log(r)
    t_last = t_end if probe_end else times[nt - 1]
    want_extra = flags[FLAG_NN] != 0 or flags[FLAG_PM] != 0 or flags[FLAG_COUNT] != 0
    want_ops = flags[FLAG_OP] != 0
    want_state = flags[FLAG_STATE] != 0 and rho_off[m] >= 0
    while True:
        # ---- one step from cur at t_b
        n_b = _cheb_start(cur, d, B, vn)
        kb = 0
        t_b = t_cur
        h = hmax
        at_end = False
        if t_b + h >= t_last:
            h = t_last - t_b
            if h < 0.0:
                h = 0.0
            at_end = True
        lo = 0.0
        n_lo = n_b
        g_lo = _decay_rate(stab, reals, m, cur)
        jump_here = False
        hi = 0.0
        n_hi = 0.0
        g_hi = 0.0
        while True:
            is_out = k < nt and times[k] - t_b <= h
            if is_out:
                tau = times[k] - t_b
            elif at_end and not probe_end:
                return nt, -1.0  # every remaining output lies inside the step
            else:
                tau = h
            if g_lo > 0.0 and n_lo > r:
                # Newton step of the log-norm to log r, overshot a little
                t_p = lo + 1.1 * np.log(n_lo / r) * n_lo / g_lo + 1.0 / rho
                if t_p < tau - PROBE_SAVE / rho:
                    tau = t_p
                    is_out = False
            Ke, kb = _cheb_terms(optr, oidx, oval, dgs, d, B, vn, bes, rho * tau, kb, kcap,
                                 opk, vtab)
            if Ke < 0:
                # kcap terms do not reach tau: end the step earlier
                h = lo if lo > 0.0 else 0.5 * tau
                at_end = False
                continue
            nrm = _cheb_sum(B, Ke, d, cr, ci, tau, bes, psi, fs)
            g_p = _decay_rate(stab, reals, m, psi)
            if nrm <= r:
                hi = tau
                n_hi = nrm
                g_hi = g_p
                jump_here = True
                break
            if is_out:
                _record(stab, ints, m, psi, nrm, N, flags, X, k)
                if want_extra:
                    _record_extra(ints, ptab, m, psi, nrm, flags, X, k, counts, opos)
                if want_ops:
                    _record_ops_call(cpx, ints, otab, m, psi, 1.0 / nrm, X, k, opos)
                if want_state:
                    _record_state(racc, k * rho_stride + rho_off[m], d, psi, 1.0 / nrm)
                k += 1
            lo = tau
            n_lo = nrm
            g_lo = g_p
            if not is_out and tau >= h:
                break  # the step's end, no jump: psi holds the state there
            if is_out and k >= nt:
                if not probe_end:
                    return nt, -1.0
                if at_end and tau >= h:
                    break  # the last output is the boundary itself
        if jump_here:
            break
        for i in range(d):
            cur[i] = psi[i]
        t_cur = t_b + h
        if probe_end and at_end:
            return nt, -1.0
    K = kb
    # ---- jump inside (lo, hi] of this step: Hermite guess, safeguarded Newton
    f_hi = np.log(n_hi) - logr if n_hi > 0.0 else -np.inf
    f_lo = np.log(n_lo) - logr
    w = hi - lo
    if np.isfinite(f_hi) and f_lo - f_hi > 0.0 and n_hi > 0.0:
        x = lo + w * _hermite_root(f_lo, -g_lo / n_lo * w, f_hi, -g_hi / n_hi * w)
    else:
        x = 0.5 * (lo + hi)
    for _ in range(200):
        nx = _cheb_eval(B, vn, K, d, cr, ci, rho, x, bes, psi, fs)
        fx = np.log(nx) - logr if nx > 0.0 else -np.inf
        if abs(fx) <= _ROOT_TOL:
            break
        lo, hi, xn = _newton_bracket(x, fx, nx, _decay_rate(stab, reals, m, psi), lo, hi)
        if hi - lo <= 1e-15 * (1.0 + t_b + hi):
            x = hi
            _cheb_eval(B, vn, K, d, cr, ci, rho, x, bes, psi, fs)
            break
        x = xn
    return k, t_b + x


@njit(cache=True, _nrt=False)
def _choose_channel(stab, jtab, ints, reals, ch_rate, m, psi, u, weights, work, fs):
    """Channel ``k`` drawn with weight ``rate_k ||L_k psi||^2`` by the uniform ``u``.

    Returns ``(k, ||L_k psi||^2 / rate_k)`` (the squared norm of the jumped state).
    ``work``: complex scratch for a dense jump matrix's product.
    """
    nch = ch_rate.size
    wsum = 0.0
    for c in range(nch):
        jo = jtab[c, m, JT_MAP]
        jc = jtab[c, m, JT_COUNT]
        s = 0.0
        if jtab[c, m, JT_DENSE] >= 0:
            _matvec_rect(reals, jtab[c, m, JT_DENSE], jc, stab[m, DIM], psi, work, fs)
            for q in range(jc):
                s += work[q].real * work[q].real + work[q].imag * work[q].imag
        else:
            for q in range(jc):
                v = psi[ints[jo + q]]
                s += v.real * v.real + v.imag * v.imag
        weights[c] = ch_rate[c] * s
        wsum += weights[c]
    u = u * wsum
    ch = nch - 1
    acc = 0.0
    for c in range(nch):
        acc += weights[c]
        if u < acc and weights[c] > 0.0:
            ch = c
            break
    while weights[ch] <= 0.0 and ch > 0:
        ch -= 1
    return ch, weights[ch] / ch_rate[ch]


@njit(cache=True, _nrt=False)
def _apply_jump(stab, jtab, ints, reals, ch, m, m_new, psi, sq, newpsi, cur, fs):
    """Apply channel ``ch`` to ``psi`` (sector ``m``), normalise in sector ``m_new``
    and set ``cur``; returns the decay rate of the new state."""
    d_new = stab[m_new, DIM]
    for i in range(d_new):
        newpsi[i] = 0j
    jo = jtab[ch, m, JT_MAP]
    jc = jtab[ch, m, JT_COUNT]
    ao = jtab[ch, m, JT_AMP]
    scale = 1.0 / np.sqrt(sq)
    if jtab[ch, m, JT_DENSE] >= 0:
        _matvec_rect(reals, jtab[ch, m, JT_DENSE], jc, stab[m, DIM], psi, newpsi, fs)
        for i in range(d_new):
            newpsi[i] *= scale
    elif ao < 0:
        for q in range(jc):
            newpsi[ints[jo + jc + q]] = psi[ints[jo + q]] * scale
    else:
        for q in range(jc):
            newpsi[ints[jo + jc + q]] = psi[ints[jo + q]] * (scale * reals[ao + q])
    _set_state(stab, reals, m_new, newpsi, cur, fs)
    return _decay_rate(stab, reals, m_new, newpsi)


@njit(cache=True, _nrt=False)
def _fold(X, valid, cnt, mean, m2):
    """Welford update of the block accumulators with one trajectory's rows."""
    ncomp = X.shape[1]
    for k in range(valid):
        cnt[k] += 1
        inv = 1.0 / cnt[k]
        for c in range(ncomp):
            x = X[k, c]
            delta = x - mean[k, c]
            mean[k, c] += delta * inv
            m2[k, c] += delta * (x - mean[k, c])


@njit(cache=True)
def _cheb_workspace(stab, reals):
    """Chebyshev work arrays ``(B, bes, vn)`` for the built Chebyshev sectors (the
    largest ``(kcap + 1) d`` terms)."""
    nbuf = 1
    kbuf = 1
    for ms in range(stab.shape[0]):
        if stab[ms, BUILT] != 0 and stab[ms, MODE] == MODE_CHEB:
            kc = int(reals[stab[ms, OFF_CHEB] + CHEB_KCAP])
            if (kc + 1) * stab[ms, DIM] > nbuf:
                nbuf = (kc + 1) * stab[ms, DIM]
            if kc + 1 > kbuf:
                kbuf = kc + 1
    return np.zeros(2 * nbuf), np.zeros(kbuf + 1), np.zeros(kbuf + 1)


# --------------------------------------------------------------------------- clones
@njit(cache=True, nogil=True)
def advance_clones(tables, key, t0, t1, nu, m_in, psi_in, m_out, psi_out, k_out, n_out):
    """Advance the clones of a population from ``t0`` to ``t1`` (cloning, docs/model.md 15).

    Clone ``i`` starts from the normalised state ``psi_in[i, :d]`` in sector row
    ``m_in[i]``, draws its no-jump threshold and its channels from the stream
    ``(key, i)`` (a fresh threshold at ``t0`` is exact: the no-jump survival is
    Markov in the normalised state) and runs the ordinary unravelling, with the
    propagators of :func:`run_block`, to ``t1``, where ``psi_out[i]`` holds its
    normalised state (zeros past its dimension), ``m_out[i]`` its row,
    ``k_out[i]`` the sum of ``nu[channel]`` over its jumps and ``n_out[i]``
    their number. One channel-rate row (``tables.ch_rate[0]``): a plain model
    or a Doob process, no stages. Returns ``(status, row)``:
    ``STATUS_NEED_SECTOR`` and the row to build (the inputs are untouched;
    call again), else ``(0, -1)``.
    """
    stab, jtab, ptab, cpx, ints, reals = (tables.stab, tables.jtab, tables.ptab, tables.cpx,
                                          tables.ints, tables.reals)
    hnorms, ch_dm, maxdim, otab = tables.hnorms, tables.ch_dm, tables.maxdim, tables.otab
    rates = tables.ch_rate[0]
    N = stab.shape[0] - 1
    state = np.zeros(4, dtype=np.uint64)
    cur = np.zeros(maxdim, dtype=np.complex128)
    psi = np.zeros(maxdim, dtype=np.complex128)
    coef = np.zeros(maxdim, dtype=np.complex128)
    w1 = np.zeros(maxdim, dtype=np.complex128)
    w2 = np.zeros(maxdim, dtype=np.complex128)
    newpsi = np.zeros(maxdim, dtype=np.complex128)
    fs = np.zeros(2 * maxdim)
    weights = np.zeros(rates.size)
    B, bes, vn = _cheb_workspace(stab, reals)
    # no output times: empty recording arguments of _cheb_segment
    no_t = np.zeros(1)
    flags = np.zeros(NFLAGS, dtype=np.int64)
    X = np.zeros((1, 1))
    counts = np.zeros(rates.size)
    racc = np.zeros(1)
    rho_off = np.full(stab.shape[0], -1, dtype=np.int64)
    for i in range(m_in.size):
        seed_state(key, i, state)
        m = m_in[i]
        if stab[m, BUILT] == 0:
            return STATUS_NEED_SECTOR, m
        for a in range(stab[m, DIM]):
            psi[a] = psi_in[i, a]
        _set_state(stab, reals, m, psi, cur, fs)
        g_cur = _decay_rate(stab, reals, m, psi)
        t_cur = t0
        n_cur = 1.0
        kk = 0.0
        nj = 0
        r = next_uniform(state)
        while True:
            if stab[m, MODE] == MODE_CHEB:
                _, t_jump = _cheb_segment(stab, cpx, ints, reals, ptab, m, no_t, 0, 0, t_cur,
                                          r, cur, psi, B, vn, bes, fs, N, flags, X, counts,
                                          otab, 0, racc, rho_off, 0, t1, True)
                if t_jump < 0.0:
                    for a in range(stab[m, DIM]):
                        psi[a] = cur[a]
                    break
            else:
                n_hi = _eval_state(stab, cpx, ints, reals, hnorms, m, cur, t1 - t_cur, -1,
                                   psi, coef, w1, w2, fs)
                if n_hi > r:
                    break
                t_jump = _locate_jump(stab, cpx, ints, reals, hnorms, m, t_cur, n_cur, g_cur,
                                      t1, n_hi, _decay_rate(stab, reals, m, psi), r, cur, psi,
                                      coef, w1, w2, fs)
            ch, sq = _choose_channel(stab, jtab, ints, reals, rates, m, psi,
                                     next_uniform(state), weights, newpsi, fs)
            m_new = m + ch_dm[ch]
            if stab[m_new, BUILT] == 0:
                return STATUS_NEED_SECTOR, m_new
            g_cur = _apply_jump(stab, jtab, ints, reals, ch, m, m_new, psi, sq, newpsi, cur, fs)
            kk += nu[ch]
            nj += 1
            m = m_new
            t_cur = t_jump
            n_cur = 1.0
            r = next_uniform(state)
        d = stab[m, DIM]
        nrm = 0.0
        for a in range(d):
            nrm += psi[a].real * psi[a].real + psi[a].imag * psi[a].imag
        sc = 1.0 / np.sqrt(nrm)
        for a in range(psi_out.shape[1]):
            psi_out[i, a] = psi[a] * sc if a < d else 0j
        m_out[i] = m
        k_out[i] = kk
        n_out[i] = nj
    return 0, -1


# --------------------------------------------------------------------------- one block
@njit(cache=True, _nrt=False)
def _draw_start(state, init_kind, init_p, init_cfg, binom, N):
    """The site-basis configuration a trajectory starts from (``INIT_PRODUCT``,
    ``INIT_TABLE``; see :func:`run_block`), drawn from its stream ``state``:
    returns ``(m, basis index)``."""
    idx = 0
    if init_kind == INIT_PRODUCT:
        m_init = 0
        for i in range(N):
            if next_uniform(state) < init_p[i]:
                m_init += 1
                idx += binom[i, m_init]  # colex rank: sum_k C(c_k, k + 1)
    else:
        u = next_uniform(state)
        lo_j = 0
        hi_j = init_cfg.shape[0] - 1
        while lo_j < hi_j:
            mid = (lo_j + hi_j) // 2
            if init_p[mid] > u:
                hi_j = mid
            else:
                lo_j = mid + 1
        m_init = init_cfg[lo_j, 0]
        idx = init_cfg[lo_j, 1]
    return m_init, idx


@njit(cache=True, _nrt=False)
def _path_start(path_norm, out_idx, path_obs, r, X, nfine):
    """Where a trajectory with the no-jump threshold ``r`` leaves the shared no-jump
    path (``nfine`` fine points): the first fine point ``f0`` where the norm falls
    to ``r`` (the norm never increases along a no-jump path). Copies the path's
    observable rows of the output times before it into ``X``; returns ``(f0,
    k)``, ``k`` the first output row left to compute."""
    lo_f = 0
    hi_f = nfine
    while lo_f < hi_f:
        mid = (lo_f + hi_f) // 2
        if path_norm[mid] > r:
            lo_f = mid + 1
        else:
            hi_f = mid
    f0 = lo_f
    nt, ncomp = X.shape
    k = 0
    while k < nt and out_idx[k] < f0:
        for c in range(ncomp):
            X[k, c] = path_obs[k, c]
        k += 1
    return f0, k


@njit(cache=True, _nrt=False)
def _run_trajectory(tables, start, spec, ws, traj, m, psi_init, f0, k, r, state, X, counts,
                    racc, jump_buf, njumps, opos):
    """Run one trajectory of :func:`run_block` from the point where it leaves the
    shared no-jump path (fine point ``f0``, output row ``k``; ``f0 == 0``: from its
    initial state, ``psi0`` or ``psi_init``, in sector ``m``) with the no-jump
    threshold ``r``, writing its observable rows into ``X`` (and ``counts``,
    ``racc``) and its jumps into ``jump_buf`` from row ``njumps``.

    ``ws`` holds the work arrays ``(cur, psi, coef, w1, w2, newpsi, fs, weights,
    B, bes, vn)``. Returns ``(status, njumps, valid, truncated, missing_sector)``:
    ``valid`` rows of ``X`` count (fewer than ``nt`` when a jump left the magnon
    cap: ``truncated``); ``status < 0`` as in :func:`run_block` (the trajectory
    is abandoned).
    """
    stab, jtab, ptab, cpx, ints, reals = (tables.stab, tables.jtab, tables.ptab, tables.cpx,
                                          tables.ints, tables.reals)
    hnorms, ch_rate, ch_dm, otab, bph = (tables.hnorms, tables.ch_rate, tables.ch_dm,
                                         tables.otab, tables.bph)
    psi0, init_kind, fine_t, out_idx = (start.psi0, start.init_kind, start.fine_t,
                                         start.out_idx)
    path_cur, path_norm, path_decay = start.path_cur, start.path_norm, start.path_decay
    times, use_phase_grid, N, flags = spec.times, spec.use_phase_grid, spec.N, spec.flags
    max_magnons, record_jumps = spec.max_magnons, spec.record_jumps
    rho_off, rho_stride = spec.rho_off, spec.rho_stride
    stage_t, stage_base, stage_u, stage_kend = (spec.stage_t, spec.stage_base, spec.stage_u,
                                                spec.stage_kend)
    stage_L = spec.stage_L
    cur, psi, coef, w1, w2, newpsi, fs, weights, B, bes, vn = ws
    nst = stage_t.size
    nt = times.size
    want_user = flags[FLAG_STATE] != 0 or flags[FLAG_OP] != 0
    cap = jump_buf.shape[0]
    s = 0
    ph_first = -1
    if f0 == 0:
        sm = stage_base[0] + m
        if init_kind == INIT_PURE:
            _set_state(stab, reals, sm, psi0, cur, fs)
            g_cur = _decay_rate(stab, reals, sm, psi0)
        else:
            _set_state(stab, reals, sm, psi_init, cur, fs)
            g_cur = _decay_rate(stab, reals, sm, psi_init)
        t_cur = 0.0
        n_cur = 1.0
    else:
        t_cur = fine_t[f0 - 1]
        while s + 1 < nst and stage_t[s + 1] <= t_cur:
            s += 1  # a boundary point holds the next stage's representation
        sm = stage_base[s] + m
        if stab[sm, BUILT] == 0:
            return STATUS_NEED_SECTOR, njumps, nt, False, sm
        if s > 0 and t_cur == stage_t[s]:
            ph_first = bph[s, m, 1]
        for a in range(stab[sm, DIM]):
            cur[a] = path_cur[f0 - 1, a]
        n_cur = path_norm[f0 - 1]
        g_cur = path_decay[f0 - 1]
    # the eigen-mode phase cache holds for steps between output times
    on_grid = k > 0 and out_idx[k - 1] == f0 - 1
    while True:
        kend = stage_kend[s]
        last = s + 1 >= nst
        t_end = times[nt - 1] if last else stage_t[s + 1]
        cross = False
        if stab[sm, MODE] == MODE_CHEB:
            k, t_jump = _cheb_segment(stab, cpx, ints, reals, ptab, sm, times, kend, k,
                                      t_cur, r, cur, psi, B, vn, bes, fs, N, flags,
                                      X, counts, otab, opos, racc, rho_off,
                                      rho_stride, t_end, not last)
            if t_jump < 0.0:
                if last:
                    return 0, njumps, nt, False, -1
                cross = True  # no jump before t_end: cur holds the state there
                n_cur = 0.0
                for a in range(stab[sm, DIM]):
                    psi[a] = cur[a]
                    n_cur += cur[a].real * cur[a].real + cur[a].imag * cur[a].imag
        else:
            if want_user:
                k, t_cur, n_cur, g_cur, n_hi, g_hi, on_grid = _segment_user(
                    stab, cpx, ints, reals, hnorms, ptab, sm, times, kend, k, t_cur,
                    n_cur, g_cur, on_grid, use_phase_grid, r, cur, psi, coef, w1, w2, fs, N,
                    flags, X, counts, otab, opos, racc, rho_off, rho_stride, ph_first)
            else:
                k, t_cur, n_cur, g_cur, n_hi, g_hi, on_grid = _segment(
                    stab, cpx, ints, reals, hnorms, ptab, sm, times, kend, k, t_cur,
                    n_cur, g_cur, on_grid, use_phase_grid, r, cur, psi, coef, w1, w2, fs, N,
                    flags, X, counts, opos, ph_first)
            ph_first = -1
            t_hi = t_end
            if k == kend:
                if last:
                    return 0, njumps, nt, False, -1
                # the stage boundary, probed like an output time
                ph = bph[s, m, 0] if t_cur == stage_L[s] else -1
                n_hi = _eval_state(stab, cpx, ints, reals, hnorms, sm, cur,
                                   t_end - t_cur, ph, psi, coef, w1, w2, fs)
                if n_hi > r:
                    cross = True
                    n_cur = n_hi
                else:
                    g_hi = _decay_rate(stab, reals, sm, psi)
            else:
                t_hi = times[k]
            if not cross:
                t_jump = _locate_jump(stab, cpx, ints, reals, hnorms, sm, t_cur, n_cur,
                                      g_cur, t_hi, n_hi, g_hi, r, cur, psi, coef, w1,
                                      w2, fs)
        if cross:
            # into the next stage: the unnormalised state passes unchanged
            s += 1
            sm = stage_base[s] + m
            if stab[sm, BUILT] == 0:
                return STATUS_NEED_SECTOR, njumps, nt, False, sm
            _set_state(stab, reals, sm, psi, cur, fs)
            g_cur = _decay_rate(stab, reals, sm, psi)
            t_cur = t_end
            on_grid = False
            ph_first = bph[s, m, 1]
            continue
        ch, sq = _choose_channel(stab, jtab, ints, reals, ch_rate[stage_u[s]], sm, psi,
                                 next_uniform(state), weights, newpsi, fs)
        m_new = m + ch_dm[ch]
        counts[ch] += 1.0
        if record_jumps:
            if njumps >= cap:
                return STATUS_JUMP_BUFFER_FULL, njumps, nt, False, -1
            jump_buf[njumps, 0] = traj
            jump_buf[njumps, 1] = t_jump
            jump_buf[njumps, 2] = ch
            jump_buf[njumps, 3] = m
            njumps += 1
        if m_new > max_magnons:
            return 0, njumps, k, True, -1  # truncated: its rows before k count
        sm_new = stage_base[s] + m_new
        if stab[sm_new, BUILT] == 0:
            return STATUS_NEED_SECTOR, njumps, nt, False, sm_new
        g_cur = _apply_jump(stab, jtab, ints, reals, ch, sm, sm_new, psi, sq, newpsi,
                            cur, fs)
        m = m_new
        sm = sm_new
        t_cur = t_jump
        n_cur = 1.0
        on_grid = False
        r = next_uniform(state)


@njit(cache=True, nogil=True)
def run_block(tables, start, spec, traj0, ntraj, out, first, njumps):
    """Run trajectories ``traj0 + first .. traj0 + ntraj - 1`` and fold them into
    the Welford accumulators ``out.cnt[t]``, ``out.mean[t, c]``, ``out.m2[t, c]``
    in index order.

    Arguments: :class:`SectorTables`, :class:`Start`, :class:`RunSpec`, the
    block's first trajectory index, its number of trajectories,
    :class:`BlockOut`, and where to resume: ``first`` trajectories of the block
    are already folded into ``out`` (with ``njumps`` rows of ``jump_buf``);
    0 and 0 for a fresh block.

    Initial state: ``init_kind == INIT_PURE``: ``psi0`` in sector ``m0`` with the
    shared no-jump path ``path_*``; otherwise a site-basis configuration drawn
    from the trajectory's own stream before anything else: ``INIT_PRODUCT``
    draws site ``i`` down with probability ``init_p[i]`` (one uniform per site),
    ``INIT_TABLE`` draws row ``j`` of ``init_cfg`` (``m, basis index``) with the
    cumulative weights ``init_p`` (one uniform); the path arrays are then empty.

    ``jump_buf`` rows are ``(traj, t, channel, m_before)``; ``kept`` receives
    each trajectory's observable rows when ``keep`` is true. With
    ``FLAG_STATE``, ``out.rho`` receives the sum of the normalised states
    ``psi psi^+ / <psi|psi>`` of the rows that are folded (in trajectory order;
    the rows a trajectory takes from the shared no-jump path are counted, and
    their states added once per output time at the end of the block).

    Stages (``spec.stage_*``, docs/model.md 14): a stage boundary is probed like an
    output time; with the norm still above the threshold there, the
    unnormalised state passes unchanged into the next stage's sector row
    (same threshold, same random stream), else the jump is located before it.
    A missing sector row is reported as ``stage_base[s] + m``.

    Returns ``(status, njumps, n_truncated, missing_sector, done)``: ``done``
    trajectories of the block are folded (``n_truncated`` of them in this call).
    ``status == STATUS_NEED_SECTOR``: trajectory ``done`` needs the missing
    sector; nothing of it is folded or in the first ``njumps`` rows of
    ``jump_buf``, so once the sector is built the block resumes from it
    (``first = done``) and ends with the same bits as a run that never
    stopped, except with ``FLAG_STATE`` (the stopped trajectory has already
    added states to ``out.rho``: the block is run again from its start).
    ``STATUS_JUMP_BUFFER_FULL``: the block is run again from its start with a
    bigger buffer.
    """
    stab, reals, maxdim, otab = tables.stab, tables.reals, tables.maxdim, tables.otab
    m0, init_kind, init_p = start.m0, start.init_kind, start.init_p
    init_cfg, binom, fine_t, out_idx = start.init_cfg, start.binom, start.fine_t, start.out_idx
    path_norm, path_obs, path_psi = start.path_norm, start.path_obs, start.path_psi
    key, times, N, flags, ncomp = spec.key, spec.times, spec.N, spec.flags, spec.ncomp
    keep, rho_off, rho_stride = spec.keep, spec.rho_off, spec.rho_stride
    stage_base = spec.stage_base
    cnt, mean, m2, jump_buf, kept = out.cnt, out.mean, out.m2, out.jump_buf, out.kept
    racc = out.rho
    want_state = flags[FLAG_STATE] != 0
    npath = np.zeros(times.size, dtype=np.int64)
    opos = _op_start(otab, flags, ncomp)
    nt = times.size
    nfine = fine_t.size
    state = np.zeros(4, dtype=np.uint64)
    cur = np.zeros(maxdim, dtype=np.complex128)
    psi = np.zeros(maxdim, dtype=np.complex128)
    coef = np.zeros(maxdim, dtype=np.complex128)
    w1 = np.zeros(maxdim, dtype=np.complex128)
    w2 = np.zeros(maxdim, dtype=np.complex128)
    newpsi = np.zeros(maxdim, dtype=np.complex128)
    fs = np.zeros(2 * maxdim)
    X = np.zeros((nt, ncomp))
    weights = np.zeros(tables.ch_rate.size)
    counts = np.zeros(tables.ch_rate.size)
    psi_init = np.zeros(maxdim, dtype=np.complex128)
    B, bes, vn = _cheb_workspace(stab, reals)
    ws = (cur, psi, coef, w1, w2, newpsi, fs, weights, B, bes, vn)
    ntrunc = 0
    for it in range(first, ntraj):
        traj = traj0 + it
        seed_state(key, traj, state)
        m_init = m0
        if init_kind != INIT_PURE:
            m_init, idx = _draw_start(state, init_kind, init_p, init_cfg, binom, N)
            if stab[stage_base[0] + m_init, BUILT] == 0:
                return STATUS_NEED_SECTOR, njumps, ntrunc, stage_base[0] + m_init, it
            for a in range(stab[m_init, DIM]):
                psi_init[a] = 0j
            psi_init[idx] = 1.0
        if flags[FLAG_COUNT] != 0:
            for c in range(counts.size):
                counts[c] = 0.0
        r = next_uniform(state)
        f0, k = _path_start(path_norm, out_idx, path_obs, r, X, nfine)
        n_from_path = k
        valid = nt
        if k < nt:
            nj_before = njumps
            status, njumps, valid, truncated, need = _run_trajectory(
                tables, start, spec, ws, traj, m_init, psi_init, f0, k, r, state, X, counts,
                racc, jump_buf, njumps, opos)
            if status < 0:
                return status, nj_before, ntrunc, need, it
            if truncated:
                ntrunc += 1
        # ---- fold this trajectory into the block statistics (index order)
        _fold(X, valid, cnt, mean, m2)
        if want_state:
            for k in range(min(n_from_path, valid)):
                npath[k] += 1
        if keep:
            for k in range(nt):
                for c in range(ncomp):
                    kept[it, k, c] = X[k, c] if k < valid else np.nan
    if want_state and rho_off[m0] >= 0:
        # the rows taken from the shared no-jump path: one state per output time
        for k in range(nt):
            if npath[k] > 0:
                _record_state(racc, k * rho_stride + rho_off[m0], stab[stage_base[0] + m0, DIM],
                              path_psi[k], float(npath[k]))
    return 0, njumps, ntrunc, -1, ntraj
