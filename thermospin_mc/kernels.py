"""Numba kernels of the quantum-jump engine. Flat arrays in, flat arrays out.

A trajectory lives in one magnon sector between jumps and evolves there under
the non-Hermitian ``H_eff = h - (i/2) sum_k L_k^+ L_k`` of that sector, exactly:

- *eigen mode* (small, well-conditioned sectors): ``H_eff = V diag(lam) V^-1``
  is precomputed; the state is kept as eigen-coefficients ``c`` and
  ``psi(t) = V (exp(-i lam t) c)``; on a uniform grid the phases advance by a
  cached ``exp(-i lam dt)``;
- *Taylor mode* (large sectors, or eigenvectors ill-conditioned near an
  exceptional point): ``psi(t + h) = exp(-i H_eff h) psi`` by a Taylor series
  of the sparse ``H_eff`` with substeps ``||H|| h_sub <= 1``, summed until the
  terms fall below double precision.

Neither mode has a time-step error. The jump time is the root of
``log ||psi(t)||^2 = log r`` (``r`` uniform), bracketed by the output grid and
found by safeguarded Newton (``d||psi||^2/dt = -psi^+ Gamma psi``) to 1e-10
relative in the norm. The channel is drawn with weight ``rate ||L_k psi||^2``.

Random numbers: xoshiro256** per trajectory, its state seeded by splitmix64
from (run key, trajectory index), so a trajectory is a pure function of the
run seed and its index.

Sector data layout (see ``ensemble.SectorPack``): ``stab[m, :]`` holds
``built, dim, mode, off_V, off_Vinv, off_lam, off_sites, off_hop, nhop,
off_decay, off_indptr, off_indices, off_data, nnz, off_phase``; ``jtab[k, m]``
holds ``(offset, count)`` of channel ``k``'s index map out of sector ``m``
(``src`` at ``ints[offset:offset+count]``, ``dst`` right after).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# columns of stab
BUILT, DIM, MODE, OFF_V, OFF_VINV, OFF_LAM, OFF_SITES, OFF_HOP, NHOP, OFF_DECAY, \
    OFF_INDPTR, OFF_INDICES, OFF_DATA, NNZ, OFF_PHASE = range(15)
NCOL = 15

MODE_EIGEN = 0
MODE_TAYLOR = 1

# kernel status codes (>= 0: ok; the value is the number of jumps written)
STATUS_NEED_SECTOR = -1
STATUS_JUMP_BUFFER_FULL = -2

# observable flags
FLAG_J, FLAG_JBOND, FLAG_N = 0, 1, 2

_ROOT_TOL = 1e-10
#: Taylor substeps satisfy ||H|| h <= TAYLOR_THETA (about 30 terms to 1e-17).
TAYLOR_THETA = 3.0


# --------------------------------------------------------------------------- RNG
@njit(cache=True, inline="always")
def _rotl(x, k):
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(cache=True)
def _splitmix64(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    z = x
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31)), x


@njit(cache=True)
def seed_state(key, traj, state):
    """Seed the xoshiro256** ``state`` of trajectory ``traj`` from the run ``key``."""
    h, _ = _splitmix64(np.uint64(traj) ^ key[1])
    x = key[0] ^ h
    for i in range(4):
        z, x = _splitmix64(x ^ key[2 + (i & 1)])
        state[i] = z


@njit(cache=True)
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
@njit(cache=True)
def _csr_apply(indptr, indices, data, x, out, d):
    for i in range(d):
        acc = 0j
        for p in range(indptr[i], indptr[i + 1]):
            acc += data[p] * x[indices[p]]
        out[i] = acc


@njit(cache=True)
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
            onorm += abs(out[i])
        for k in range(1, 80):
            _csr_apply(indptr, indices, data, w1, w2, d)
            fac = -1j * h / k
            tn = 0.0
            for i in range(d):
                w1[i] = fac * w2[i]
                out[i] += w1[i]
                tn += abs(w1[i])
            if tn <= 1e-17 * onorm:
                break


@njit(cache=True)
def _eval_state(stab, cpx, ints, reals, hnorms, m, cur, tau, use_phase, psi, coef, w1, w2):
    """State at ``t_cur + tau`` from the current representation ``cur``.

    Writes the site-basis state into ``psi`` and, in eigen mode, the phased
    coefficients into ``coef``. Returns the squared norm.
    """
    d = stab[m, DIM]
    if stab[m, MODE] == MODE_EIGEN:
        ol = stab[m, OFF_LAM]
        if use_phase:
            op = stab[m, OFF_PHASE]
            for a in range(d):
                coef[a] = cur[a] * cpx[op + a]
        else:
            for a in range(d):
                lam = cpx[ol + a]
                coef[a] = cur[a] * np.exp(-1j * lam * tau)
        ov = stab[m, OFF_V]
        for i in range(d):
            acc = 0j
            row = ov + i * d
            for a in range(d):
                acc += cpx[row + a] * coef[a]
            psi[i] = acc
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


@njit(cache=True)
def _accept(stab, m, cur, psi, coef):
    d = stab[m, DIM]
    if stab[m, MODE] == MODE_EIGEN:
        for a in range(d):
            cur[a] = coef[a]
    else:
        for a in range(d):
            cur[a] = psi[a]


@njit(cache=True)
def _set_state(stab, cpx, m, psi, cur):
    """Current representation of the site-basis state ``psi`` in sector ``m``."""
    d = stab[m, DIM]
    if stab[m, MODE] == MODE_EIGEN:
        ov = stab[m, OFF_VINV]
        for a in range(d):
            acc = 0j
            row = ov + a * d
            for i in range(d):
                acc += cpx[row + i] * psi[i]
            cur[a] = acc
    else:
        for a in range(d):
            cur[a] = psi[a]


@njit(cache=True)
def _decay_rate(stab, reals, m, psi):
    d = stab[m, DIM]
    od = stab[m, OFF_DECAY]
    g = 0.0
    for i in range(d):
        g += reals[od + i] * (psi[i].real * psi[i].real + psi[i].imag * psi[i].imag)
    return g


# --------------------------------------------------------------------------- observables
@njit(cache=True)
def _record(stab, ints, reals, m, psi, nrm, N, flags, row, couplings_unused):
    """Write the observables of ``psi / sqrt(nrm)`` into ``row``.

    Component layout: [j] (if FLAG_J), [j_bond x (N-1)] (if FLAG_JBOND),
    [m], [n x N] (if FLAG_N).
    """
    d = stab[m, DIM]
    inv = 1.0 / nrm
    pos = 0
    want_j = flags[FLAG_J] != 0
    want_jb = flags[FLAG_JBOND] != 0
    if want_j or want_jb:
        oh = stab[m, OFF_HOP]
        nh = stab[m, NHOP]
        jpos = pos
        jbpos = pos + (1 if want_j else 0)
        if want_jb:
            for l in range(N - 1):
                row[jbpos + l] = 0.0
        tot = 0.0
        for h in range(nh):
            b = ints[oh + h]
            to = ints[oh + nh + h]
            fr = ints[oh + 2 * nh + h]
            # -4 Im(conj(psi_to) psi_from)
            x = -4.0 * (psi[to].real * psi[fr].imag - psi[to].imag * psi[fr].real) * inv
            tot += x
            if want_jb:
                row[jbpos + b] += x
        if want_j:
            row[jpos] = tot
        pos = jbpos + (N - 1 if want_jb else 0)
    row[pos] = N / 2.0 - m
    pos += 1
    if flags[FLAG_N] != 0:
        for i in range(N):
            row[pos + i] = 0.0
        os_ = stab[m, OFF_SITES]
        for bidx in range(d):
            p = (psi[bidx].real * psi[bidx].real + psi[bidx].imag * psi[bidx].imag) * inv
            for k in range(m):
                row[pos + ints[os_ + bidx * m + k]] += p


# --------------------------------------------------------------------------- shared start
@njit(cache=True)
def initial_path(stab, cpx, ints, reals, hnorms, m0, psi0, fine_t, out_idx, use_phase_grid,
                 N, flags, ncomp, path_cur, path_norm, path_obs):
    """No-jump path from the initial state, shared by every trajectory.

    ``fine_t`` is the output grid, refined in Taylor mode to about one
    substep so that a trajectory starts its jump search at most one substep
    before its jump; ``out_idx[k]`` is the fine index of output time ``k``.
    Fills ``path_cur[f]`` (current representation) and ``path_norm[f]``
    (squared norm) at every fine point and the normalised observables
    ``path_obs[k]`` at every output time.
    """
    d = stab[m0, DIM]
    maxd = psi0.size if psi0.size > d else d
    cur = np.zeros(maxd, dtype=np.complex128)
    psi = np.zeros(maxd, dtype=np.complex128)
    coef = np.zeros(maxd, dtype=np.complex128)
    w1 = np.zeros(maxd, dtype=np.complex128)
    w2 = np.zeros(maxd, dtype=np.complex128)
    _set_state(stab, cpx, m0, psi0, cur)
    t_cur = 0.0
    k = 0
    for f in range(fine_t.size):
        tau = fine_t[f] - t_cur
        ph = use_phase_grid and f > 0
        nrm = _eval_state(stab, cpx, ints, reals, hnorms, m0, cur, tau, ph, psi, coef, w1, w2)
        _accept(stab, m0, cur, psi, coef)
        t_cur = fine_t[f]
        for a in range(d):
            path_cur[f, a] = cur[a]
        path_norm[f] = nrm
        while k < out_idx.size and out_idx[k] == f:
            if nrm > 0.0:
                _record(stab, ints, reals, m0, psi, nrm, N, flags, path_obs[k], reals)
            k += 1


# --------------------------------------------------------------------------- one block
@njit(cache=True)
def run_block(stab, jtab, cpx, ints, reals, hnorms, ch_rate, ch_site, ch_dm,
              key, traj0, ntraj, m0, psi0, times, use_phase_grid, N, flags, ncomp,
              max_magnons, fine_t, out_idx, path_cur, path_norm, path_obs,
              cnt, mean, m2, jump_buf, record_jumps, keep, kept, maxdim):
    """Run trajectories ``traj0 .. traj0 + ntraj - 1`` and fold them into
    Welford accumulators ``cnt[t]``, ``mean[t, c]``, ``m2[t, c]`` in index order.

    ``jump_buf`` rows are ``(traj, t, channel, m_before)``; ``kept`` receives
    each trajectory's observable rows when ``keep`` is true.

    Returns ``(status, njumps, n_truncated, missing_sector)``; status < 0
    means the block must be re-run (a sector to build, or a bigger jump buffer).
    """
    nt = times.size
    nfine = fine_t.size
    nch = ch_rate.size
    state = np.zeros(4, dtype=np.uint64)
    cur = np.zeros(maxdim, dtype=np.complex128)
    psi = np.zeros(maxdim, dtype=np.complex128)
    coef = np.zeros(maxdim, dtype=np.complex128)
    w1 = np.zeros(maxdim, dtype=np.complex128)
    w2 = np.zeros(maxdim, dtype=np.complex128)
    newpsi = np.zeros(maxdim, dtype=np.complex128)
    X = np.zeros((nt, ncomp))
    weights = np.zeros(nch)
    njumps = 0
    ntrunc = 0
    cap = jump_buf.shape[0]
    for it in range(ntraj):
        traj = traj0 + it
        seed_state(key, traj, state)
        r = next_uniform(state)
        # ---- shared no-jump start: first fine point where the norm falls to r
        # (the norm never increases along a no-jump path)
        lo_f = 0
        hi_f = nfine
        while lo_f < hi_f:
            mid = (lo_f + hi_f) // 2
            if path_norm[mid] > r:
                lo_f = mid + 1
            else:
                hi_f = mid
        f0 = lo_f
        k0 = 0
        while k0 < nt and out_idx[k0] < f0:
            for c in range(ncomp):
                X[k0, c] = path_obs[k0, c]
            k0 += 1
        if k0 == nt:
            valid = nt
        else:
            m = m0
            d0 = stab[m0, DIM]
            if f0 == 0:
                _set_state(stab, cpx, m0, psi0, cur)
                t_cur = 0.0
            else:
                for a in range(d0):
                    cur[a] = path_cur[f0 - 1, a]
                t_cur = fine_t[f0 - 1]
            # the eigen-mode phase cache holds for steps between output times
            on_grid = k0 > 0 and out_idx[k0 - 1] == f0 - 1
            k = k0
            valid = nt
            while k < nt:
                tau = times[k] - t_cur
                nrm = _eval_state(stab, cpx, ints, reals, hnorms, m, cur, tau,
                                  use_phase_grid and on_grid, psi, coef, w1, w2)
                if nrm > r:
                    _record(stab, ints, reals, m, psi, nrm, N, flags, X[k], reals)
                    _accept(stab, m, cur, psi, coef)
                    t_cur = times[k]
                    on_grid = True
                    k += 1
                    continue
                # ---- jump in (t_cur, times[k]]: safeguarded Newton on log-norm
                logr = np.log(r)
                if stab[m, MODE] == MODE_TAYLOR and hnorms[m] * tau > TAYLOR_THETA:
                    # march in Taylor substeps until the crossing is bracketed by one
                    # substep, so each root-finding evaluation costs at most one substep
                    hs = TAYLOR_THETA / hnorms[m]
                    while times[k] - t_cur > hs:
                        ns = _eval_state(stab, cpx, ints, reals, hnorms, m, cur, hs, False,
                                         psi, coef, w1, w2)
                        if ns <= r:
                            nrm = ns
                            break
                        _accept(stab, m, cur, psi, coef)
                        t_cur += hs
                        on_grid = False
                    tau = min(hs, times[k] - t_cur)
                lo = 0.0
                hi = tau
                f_hi = np.log(nrm) - logr if nrm > 0.0 else -np.inf
                n_lo = _eval_state(stab, cpx, ints, reals, hnorms, m, cur, 0.0, False,
                                   psi, coef, w1, w2)
                f_lo = np.log(n_lo) - logr
                if np.isfinite(f_hi) and f_lo - f_hi > 0.0:
                    x = lo + (hi - lo) * f_lo / (f_lo - f_hi)
                else:
                    x = 0.5 * (lo + hi)
                for _ in range(200):
                    nx = _eval_state(stab, cpx, ints, reals, hnorms, m, cur, x, False,
                                     psi, coef, w1, w2)
                    fx = np.log(nx) - logr if nx > 0.0 else -np.inf
                    if abs(fx) <= _ROOT_TOL:
                        break
                    if fx > 0.0:
                        lo = x
                    else:
                        hi = x
                    g = _decay_rate(stab, reals, m, psi)
                    xn = -1.0
                    if nx > 0.0 and g > 0.0:
                        xn = x + fx * nx / g  # f' = -g / n
                    if not (lo < xn < hi):
                        xn = 0.5 * (lo + hi)
                    if hi - lo <= 1e-15 * (1.0 + t_cur + hi):
                        x = hi
                        nx = _eval_state(stab, cpx, ints, reals, hnorms, m, cur, x, False,
                                         psi, coef, w1, w2)
                        break
                    x = xn
                t_jump = t_cur + x
                # ---- choose the channel with weight rate * ||L psi||^2
                wsum = 0.0
                for c in range(nch):
                    jo = jtab[c, m, 0]
                    jc = jtab[c, m, 1]
                    s = 0.0
                    for q in range(jc):
                        v = psi[ints[jo + q]]
                        s += v.real * v.real + v.imag * v.imag
                    weights[c] = ch_rate[c] * s
                    wsum += weights[c]
                u = next_uniform(state) * wsum
                ch = nch - 1
                acc = 0.0
                for c in range(nch):
                    acc += weights[c]
                    if u < acc and weights[c] > 0.0:
                        ch = c
                        break
                while weights[ch] <= 0.0 and ch > 0:
                    ch -= 1
                m_new = m + ch_dm[ch]
                if record_jumps:
                    if njumps >= cap:
                        return STATUS_JUMP_BUFFER_FULL, njumps, ntrunc, -1
                    jump_buf[njumps, 0] = traj
                    jump_buf[njumps, 1] = t_jump
                    jump_buf[njumps, 2] = ch
                    jump_buf[njumps, 3] = m
                    njumps += 1
                if m_new > max_magnons:
                    ntrunc += 1
                    valid = k
                    break
                if stab[m_new, BUILT] == 0:
                    return STATUS_NEED_SECTOR, njumps, ntrunc, m_new
                # ---- apply the jump and renormalise in the new sector
                d_new = stab[m_new, DIM]
                for i in range(d_new):
                    newpsi[i] = 0j
                jo = jtab[ch, m, 0]
                jc = jtab[ch, m, 1]
                scale = 1.0 / np.sqrt(weights[ch] / ch_rate[ch])
                for q in range(jc):
                    newpsi[ints[jo + jc + q]] = psi[ints[jo + q]] * scale
                m = m_new
                _set_state(stab, cpx, m, newpsi, cur)
                t_cur = t_jump
                on_grid = False
                r = next_uniform(state)
        # ---- fold this trajectory into the block statistics (index order)
        for k in range(valid):
            cnt[k] += 1
            inv = 1.0 / cnt[k]
            for c in range(ncomp):
                x = X[k, c]
                delta = x - mean[k, c]
                mean[k, c] += delta * inv
                m2[k, c] += delta * (x - mean[k, c])
        if keep:
            for k in range(nt):
                for c in range(ncomp):
                    kept[it, k, c] = X[k, c] if k < valid else np.nan
    return 0, njumps, ntrunc, -1
