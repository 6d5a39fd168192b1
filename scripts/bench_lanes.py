"""Benchmark: what advancing the trajectories of one eigen-mode sector in lockstep
("lanes", issue 25) can gain on the output loop, measured on this machine.

For each sector of the paper's pump chain (eigen mode: ``d <= DENSE_MAX``) it
times the work of one output step of the kernels' eigen-mode loop, for ``B``
trajectories:

- one lane at a time (today's kernel: ``coef = cur * phase``, ``psi = V coef``
  as a split real matrix-vector product, the squared norm, the decay rate
  ``sum_i g_i |psi_i|^2``), ``B`` times;
- ``B`` lanes at once, lane-contiguous (``[d, B]`` arrays, the innermost loop
  over lanes so that it vectorises): the same arithmetic, ``psi = V C`` as one
  matrix-matrix product.

Both compute the same numbers (checked). Printed: nanoseconds per trajectory
and output step, and the ratio, for ``B`` = 1, 4, 8, 16, 32. This is the
upper bound of the gain on output steps: real lanes also pay for lanes that
jump, finish or change sector, and the jump-time root finding of each lane
stays one lane at a time.

Usage: ``python scripts/bench_lanes.py [--N 7 9 11] [--steps 200]``.
"""

from __future__ import annotations

import argparse
import time
from math import comb

import numpy as np
from numba import njit

import thermospin_mc as tsm


@njit(cache=True)
def one_lane(vr, vi, ph_r, ph_i, g, cur_r, cur_i, steps, out):
    """``steps`` output steps of every trajectory, one after the other."""
    d, nb = cur_r.shape
    cr = np.empty(d)
    ci = np.empty(d)
    pr = np.empty(d)
    pi = np.empty(d)
    for b in range(nb):
        for a in range(d):
            cr[a] = cur_r[a, b]
            ci[a] = cur_i[a, b]
        for _ in range(steps):
            for a in range(d):
                x = cr[a] * ph_r[a] - ci[a] * ph_i[a]
                ci[a] = cr[a] * ph_i[a] + ci[a] * ph_r[a]
                cr[a] = x
            for i in range(d):
                pr[i] = 0.0
                pi[i] = 0.0
            for a in range(d):
                xr = cr[a]
                xi = ci[a]
                for i in range(d):
                    pr[i] += vr[a, i] * xr - vi[a, i] * xi
                    pi[i] += vr[a, i] * xi + vi[a, i] * xr
            nrm = 0.0
            dec = 0.0
            for i in range(d):
                s = pr[i] * pr[i] + pi[i] * pi[i]
                nrm += s
                dec += g[i] * s
            out[0, b] += nrm
            out[1, b] += dec


@njit(cache=True)
def lanes(vr, vi, ph_r, ph_i, g, cur_r, cur_i, steps, out):
    """The same steps for all trajectories at once (lane-contiguous arrays)."""
    d, nb = cur_r.shape
    cr = cur_r.copy()
    ci = cur_i.copy()
    pr = np.empty((d, nb))
    pi = np.empty((d, nb))
    nrm = np.empty(nb)
    dec = np.empty(nb)
    for _ in range(steps):
        for a in range(d):
            for b in range(nb):
                x = cr[a, b] * ph_r[a] - ci[a, b] * ph_i[a]
                ci[a, b] = cr[a, b] * ph_i[a] + ci[a, b] * ph_r[a]
                cr[a, b] = x
        pr[:, :] = 0.0
        pi[:, :] = 0.0
        for a in range(d):
            for i in range(d):
                wr = vr[a, i]
                wi = vi[a, i]
                for b in range(nb):
                    pr[i, b] += wr * cr[a, b] - wi * ci[a, b]
                    pi[i, b] += wr * ci[a, b] + wi * cr[a, b]
        nrm[:] = 0.0
        dec[:] = 0.0
        for i in range(d):
            gi = g[i]
            for b in range(nb):
                s = pr[i, b] * pr[i, b] + pi[i, b] * pi[i, b]
                nrm[b] += s
                dec[b] += gi * s
        for b in range(nb):
            out[0, b] += nrm[b]
            out[1, b] += dec[b]


def sector_data(model, m: int, h: float):
    """Eigenvectors (transposed, split), grid phases and decay diagonal of sector m."""
    sec = tsm.SectorSpace(model).sector(m)
    H = sec.heff_sparse(model.couplings).toarray()
    lam, V = np.linalg.eig(H)
    ph = np.exp(-1j * lam * h)
    g = np.asarray(sec.decay, dtype=float)  # the decay rates psi^+ Gamma psi weighs
    Vt = np.ascontiguousarray(V.T)          # row a: eigenvector a (the kernels' layout)
    return Vt.real.copy(), Vt.imag.copy(), ph.real.copy(), ph.imag.copy(), g


def best(fn, *args, repeat=5):
    t = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        t = min(t, time.perf_counter() - t0)
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, nargs="+", default=[7, 9, 11])
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    widths = (1, 4, 8, 16, 32)
    print("# ns per trajectory and output step: one lane at a time / B lanes at once "
          "(ratio)")
    print(f"{'N':>3} {'m':>3} {'d':>5}  " + "  ".join(f"{'B=' + str(b):>22}" for b in widths))
    for N in args.N:
        model = tsm.paper_model("pump", N=N, delta_T=2.0)
        for m in range(1, N // 2 + 2):
            d = comb(N, m)
            if d > 100:
                continue
            vr, vi, phr, phi, g = sector_data(model, m, 0.25)
            cells = []
            for nb in widths:
                cur_r = rng.standard_normal((d, nb))
                cur_i = rng.standard_normal((d, nb))
                steps = max(2, args.steps * 32 // (nb * max(1, d // 8)))
                o1 = np.zeros((2, nb))
                o2 = np.zeros((2, nb))
                one_lane(vr, vi, phr, phi, g, cur_r, cur_i, 1, o1)   # compile
                lanes(vr, vi, phr, phi, g, cur_r, cur_i, 1, o2)
                o1[:] = 0.0
                o2[:] = 0.0
                one_lane(vr, vi, phr, phi, g, cur_r, cur_i, steps, o1)
                lanes(vr, vi, phr, phi, g, cur_r, cur_i, steps, o2)
                assert np.allclose(o1, o2, rtol=1e-9), (N, m, nb)
                t1 = best(one_lane, vr, vi, phr, phi, g, cur_r, cur_i, steps, o1)
                t2 = best(lanes, vr, vi, phr, phi, g, cur_r, cur_i, steps, o2)
                n = steps * nb
                cells.append(f"{t1 / n * 1e9:7.1f}/{t2 / n * 1e9:7.1f} (x{t1 / t2:4.2f})")
            print(f"{N:>3} {m:>3} {d:>5}  " + "  ".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
