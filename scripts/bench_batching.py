"""Benchmark: does advancing trajectories of one sector together pay? (issue 12)

A Chebyshev term of one trajectory is ``v_k = 2 Hs v_{k-1} - v_{k-2}`` with the
sector's sparse ``Hs`` (:func:`thermospin_mc.trajectories.kernels._cheb_extend`, the
engine's kernel). Batching ``nb`` trajectories that sit in the same sector
would replace it by a sparse matrix times a ``d x nb`` block: the matrix
indices and values are read once for ``nb`` vectors and the gathers become
contiguous. This script times both on the sectors that dominate the paper's
pump + loss runs at N = 17 and 21 and prints the cost per nonzero and vector;
nothing is asserted. The batched kernel is written here for the measurement
only (same arithmetic per vector, vectors interleaved, ``nb`` fixed at
compile time so that the inner loop vectorises; ``nb=4 registers`` keeps the
four vectors' sums in scalar locals, the fastest form measured). Built into
the engine (branch ``lanes``, bit-identical results), the 1.5x cheaper product
did not make whole runs faster: the trajectories' stored terms no longer fit
the cache (README, Performance). The single-vector row is the engine's loop
as it runs in that sector (packed in the largest sectors, see
``sectorpack.PACK_MIN_BYTES``).

    python scripts/bench_batching.py            # N = 17 (m = 5, 6, 7), ~30 s
    python scripts/bench_batching.py --N 21 --m 7 8
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from numba import njit

import thermospin_mc as tsm
from thermospin_mc.trajectories import kernels as K
from thermospin_mc.trajectories.sectorpack import SectorPack


def _batched(nb: int):
    @njit(cache=False, _nrt=False)
    def step(optr, oidx, oval, dgs, d, Vp, Vpp, Vn, two, acc):
        # V[(i * 2 + part) * nb + b]: row i, real/imag part, trajectory b
        for i in range(d):
            g = dgs[i]
            bi = 2 * nb * i
            for b in range(nb):
                xr = Vp[bi + b]
                xi = Vp[bi + nb + b]
                acc[b] = g.real * xr - g.imag * xi
                acc[nb + b] = g.real * xi + g.imag * xr
            for p in range(optr[i], optr[i + 1]):
                w = oval[p]
                bj = 2 * nb * oidx[p]
                for b in range(2 * nb):
                    acc[b] += w * Vp[bj + b]
            for b in range(2 * nb):
                Vn[bi + b] = two * acc[b] - Vpp[bi + b]
    return step


@njit(cache=False, _nrt=False)
def _four_in_registers(optr, oidx, oval, dgs, d, Vp, Vpp, Vn, two, acc):
    """Four vectors with their eight sums in scalar locals (registers) instead of an
    array; unsigned indices as in the engine. ``V[8 i + 4 part + b]``."""
    one = np.uint64(1)
    u2, u3, u4, u5, u6, u7, u8 = (np.uint64(2), np.uint64(3), np.uint64(4), np.uint64(5),
                                  np.uint64(6), np.uint64(7), np.uint64(8))
    p = np.uint64(optr[0])
    for i in range(d):
        ui = np.uint64(i)
        gr, gi = dgs[ui].real, dgs[ui].imag
        bi = u8 * ui
        x0, x1, x2, x3 = Vp[bi], Vp[bi + one], Vp[bi + u2], Vp[bi + u3]
        y0, y1, y2, y3 = Vp[bi + u4], Vp[bi + u5], Vp[bi + u6], Vp[bi + u7]
        a0, a1, a2, a3 = gr * x0 - gi * y0, gr * x1 - gi * y1, gr * x2 - gi * y2, gr * x3 - gi * y3
        c0, c1, c2, c3 = gr * y0 + gi * x0, gr * y1 + gi * x1, gr * y2 + gi * x2, gr * y3 + gi * x3
        p_end = np.uint64(optr[ui + one])
        while p < p_end:
            w = oval[p]
            bj = u8 * np.uint64(oidx[p])
            a0 += w * Vp[bj]
            a1 += w * Vp[bj + one]
            a2 += w * Vp[bj + u2]
            a3 += w * Vp[bj + u3]
            c0 += w * Vp[bj + u4]
            c1 += w * Vp[bj + u5]
            c2 += w * Vp[bj + u6]
            c3 += w * Vp[bj + u7]
            p += one
        Vn[bi] = two * a0 - Vpp[bi]
        Vn[bi + one] = two * a1 - Vpp[bi + one]
        Vn[bi + u2] = two * a2 - Vpp[bi + u2]
        Vn[bi + u3] = two * a3 - Vpp[bi + u3]
        Vn[bi + u4] = two * c0 - Vpp[bi + u4]
        Vn[bi + u5] = two * c1 - Vpp[bi + u5]
        Vn[bi + u6] = two * c2 - Vpp[bi + u6]
        Vn[bi + u7] = two * c3 - Vpp[bi + u7]


def cheb_operator(stab, cpx, ints, reals, m: int):
    """``(d, optr, oidx, oval, dgs)``: sector ``m``'s Chebyshev operator in the
    plain form of :func:`thermospin_mc.trajectories.kernels._cheb_extend`, from a pack
    snapshot (decoded from the packed form where the engine keeps only that)."""
    d = int(stab[m, K.DIM])
    P = reals[stab[m, K.OFF_CHEB]:stab[m, K.OFF_CHEB] + K.CHEB_NPAR]
    op, oi, ov, og = (int(P[j]) for j in (K.CHEB_OPTR, K.CHEB_OIDX, K.CHEB_OVAL, K.CHEB_ODG))
    optr = ints[op:op + d + 1]
    nnz = int(optr[d])
    packed = packed_operator(stab, ints, reals, m)
    if packed is not None:  # a packed sector keeps no plain copy: decode it
        opk, vtab = packed
        return (d, optr, (opk[:nnz] & K.PACK_MASK).astype(np.int64),
                vtab[opk[:nnz] >> K.PACK_SHIFT], cpx[og:og + d])
    return d, optr, ints[oi:oi + nnz], reals[ov:ov + nnz], cpx[og:og + d]


def packed_operator(stab, ints, reals, m: int):
    """``(opk, vtab)``: the packed form of sector ``m``'s off-diagonal part, which
    the engine's term loop reads instead of ``(oidx, oval)`` (sectors of at least
    ``sectorpack.PACK_MIN_BYTES``), or None."""
    P = reals[stab[m, K.OFF_CHEB]:stab[m, K.OFF_CHEB] + K.CHEB_NPAR]
    if P[K.CHEB_PK] < 0:
        return None
    d = int(stab[m, K.DIM])
    op, pk, vt = int(P[K.CHEB_OPTR]), int(P[K.CHEB_PK]), int(P[K.CHEB_VT])
    nnz = int(ints[op + d])
    return (ints[pk:pk + (nnz + 1) // 2].view(np.uint32),
            reals[vt:vt + K.PACK_MAX_VALUES])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--N", type=int, default=17)
    ap.add_argument("--m", type=int, nargs="+", default=[5, 6, 7])
    ap.add_argument("--nb", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--terms", type=int, default=40)
    args = ap.parse_args(argv)
    model = tsm.paper_model("pump", N=args.N)
    pack = SectorPack(model, np.linspace(0.0, 20.0, 81))
    for m in args.m:
        pack.ensure(m)
    stab, _, _, _, cpx, ints, reals, _ = pack.snapshot()
    kernels = {f"batched nb={nb}": (nb, _batched(nb)) for nb in args.nb}
    kernels["nb=4 registers"] = (4, _four_in_registers)
    rng = np.random.default_rng(0)
    print(f"N = {args.N}, {args.terms} terms per timing, best of 5; load(1m) "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'m':>2} {'d':>7} {'nnz/row':>7} {'kernel':>14} {'ns/(nnz*vector)':>16} "
          f"{'vs single':>9}")
    for m in args.m:
        d, optr, oidx, oval, dgs = cheb_operator(stab, cpx, ints, reals, m)
        nnz = oidx.size
        psi = rng.normal(size=d) + 1j * rng.normal(size=d)
        B = np.zeros(2 * (args.terms + 1) * d)
        vn = np.zeros(args.terms + 2)
        packed = packed_operator(stab, ints, reals, m)
        entries = (oidx, oval) if packed is None else packed  # what the engine runs
        K._cheb_start(psi, d, B, vn)
        K._cheb_extend(optr, *entries, dgs, d, B, vn, 0, args.terms)
        best = np.inf
        for _ in range(5):
            t0 = time.perf_counter()
            K._cheb_extend(optr, *entries, dgs, d, B, vn, 0, args.terms)
            best = min(best, time.perf_counter() - t0)
        single = best / args.terms / nnz * 1e9
        label = "single (ours)" if packed is None else "single packed"
        print(f"{m:>2} {d:>7} {nnz / d:>7.1f} {label:>14} {single:>16.2f} {1.0:>9.2f}")
        for name, (nb, kern) in kernels.items():
            V = [rng.normal(size=2 * nb * d) for _ in range(3)]
            acc = np.zeros(2 * nb)
            kern(optr, oidx, oval, dgs, d, V[0], V[1], V[2], 2.0, acc)
            best = np.inf
            for _ in range(5):
                t0 = time.perf_counter()
                for _k in range(args.terms):
                    kern(optr, oidx, oval, dgs, d, V[0], V[1], V[2], 2.0, acc)
                best = min(best, time.perf_counter() - t0)
            per = best / args.terms / nnz / nb * 1e9
            print(f"{m:>2} {d:>7} {nnz / d:>7.1f} {name:>14} {per:>16.2f} "
                  f"{single / per:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
