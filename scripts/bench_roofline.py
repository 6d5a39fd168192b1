"""Benchmark: how close the propagation loops run to this machine's limits (issue 25).

First the machine's own peaks on one core, measured here: the floating-point
rate of a large double-precision matrix product (numpy / OpenBLAS, one thread)
and the bandwidth of a large array copy (main memory; bytes read plus bytes
written) and of a copy that stays in the L2 cache.

Then, for each N, the paper's pump + loss chain (linear profile, Delta T = 2,
gamma = 3.102, gamma_I = 0.62, all up, 81 outputs on [0, 20]): a short run
with the jump table gives the fraction of trajectory time spent in each magnon
sector, and every sector holding at least ``--min-share`` of it is timed, loop
by loop, on its own matrices (the engine's compiled loops, called directly):

- ``terms``: the Chebyshev term recursion ``v_k = 2 Hs v_{k-1} - v_{k-2}``
  (:func:`thermospin_mc.trajectories.kernels._cheb_extend`, 40 terms): ``14 d + 4 nnz``
  flops per term; traffic the matrix (16 bytes per nonzero, 24 per row) and
  three vectors (48 bytes per row); ``terms packed`` in the sectors the engine
  stores packed (4 bytes per nonzero, ``sectorpack.PACK_MIN_BYTES``);
- ``output``: the dense output ``psi = sum_k c_k v_k`` from 40 stored terms
  (:func:`thermospin_mc.trajectories.kernels._cheb_sum`): 8 flops and 16 bytes per element
  and term;
- ``eigen``: the eigen-mode product ``psi = V c`` (:func:`_matvec_split`): 8
  flops and 16 bytes per matrix element.

Each line prints the achieved GFLOP/s and GB/s (bytes by the traffic model
above: what must move at least once per call), the arithmetic intensity, the
roofline bound ``min(peak flops, intensity x bandwidth)`` (the copy bandwidth
of the level the loop's working set fits in: L2, L3 or main memory), and the
achieved fraction of that bound. The loops are called from a compiled loop, so
no Python call is timed. Best of ``--repeat`` timings; the load average is printed.

    python scripts/bench_roofline.py                 # N = 7, 11, 13, 17 (~1 min)
    python scripts/bench_roofline.py --N 7 11 13 17 21 --repeat 7

Figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from numba import njit
from threadpoolctl import threadpool_limits

import thermospin_mc as tsm
from thermospin_mc.trajectories import kernels as K
from thermospin_mc.trajectories.sectorpack import SectorPack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_batching import cheb_operator, packed_operator  # noqa: E402

TIMES = np.linspace(0.0, 20.0, 81)
#: L2 cache per core and L3 cache assumed for the bound (this machine's, README Performance)
L2_BYTES = 1 << 20
L3_BYTES = 32 << 20
TERMS = 40


def best_of(fn, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def peaks(repeat: int) -> dict:
    """One core's measured peaks: GFLOP/s of a 2000 x 2000 product, GB/s of copies."""
    n = 2000
    a, b = np.random.default_rng(0).random((2, n, n))
    with threadpool_limits(1):
        a @ b
        t = best_of(lambda: a @ b, repeat)
    flops = 2.0 * n**3 / t / 1e9
    big = np.ones(2**26)  # 512 MB
    dst = np.empty_like(big)
    np.copyto(dst, big)
    dram = 2.0 * big.nbytes / best_of(lambda: np.copyto(dst, big), repeat) / 1e9

    def cached(words: int, reps: int) -> float:
        src = np.ones(words)
        dst = np.empty_like(src)

        def many():
            for _ in range(reps):
                np.copyto(dst, src)

        many()
        return 2.0 * src.nbytes * reps / best_of(many, repeat) / 1e9

    l2 = cached(2**14, 2000)  # 128 kB each, both in L2
    l3 = cached(2**19, 100)  # 4 MB each, both in L3
    return {"flops": flops, "dram": dram, "l2": l2, "l3": l3}


@njit(cache=False)
def _matvecs(reals, off, d, x, y, fs, reps):
    for _ in range(reps):
        K._matvec_split(reals, off, d, x, y, fs)


@njit(cache=False)
def _outputs(B, terms, d, bes, res, fs, reps):
    for _ in range(reps):
        K._cheb_sum(B, terms, d, 0.1, 0.0, 0.5, bes, res, fs)


def shares(model, ntraj: int) -> tuple[dict, dict]:
    """Fraction of trajectory time per sector (from the jump table) and sector modes."""
    res = tsm.mcsolve(model, TIMES, ntraj, seed=1, observables=["j", "m"], record_jumps=True,
                      cluster=tsm.Cluster(progress=False))
    dm = {i: c.dm for i, c in enumerate(model.channels)}
    names = {c.name: i for i, c in enumerate(model.channels)}
    jt = res.jumps
    ch = jt["channel"].map(lambda x: names.get(x, x)).to_numpy()
    time_in = {}
    t_end = TIMES[-1]
    for _, g in jt.assign(ch=ch).groupby("traj"):
        t_prev, m = 0.0, model.initial_sector
        for t, c, mb in zip(g["t"].to_numpy(), g["ch"].to_numpy(), g["m_before"].to_numpy(),
                            strict=True):
            time_in[int(mb)] = time_in.get(int(mb), 0.0) + t - t_prev
            t_prev, m = t, int(mb) + dm[int(c)]
        time_in[m] = time_in.get(m, 0.0) + t_end - t_prev
    quiet = ntraj - jt["traj"].nunique()  # no jump at all: the whole run in the start sector
    time_in[model.initial_sector] = time_in.get(model.initial_sector, 0.0) + quiet * t_end
    total = sum(time_in.values())
    modes = {int(k): v for k, v in res.metadata["sector_modes"].items()}
    return {m: v / total for m, v in sorted(time_in.items())}, modes


def line(N, m, d, share, loop, flops, nbytes, t, peak, ws) -> str:
    gf, gb = flops / t / 1e9, nbytes / t / 1e9
    ai = flops / nbytes
    level = "L2" if ws <= L2_BYTES else "L3" if ws <= L3_BYTES else "mem"
    bw = peak[{"L2": "l2", "L3": "l3", "mem": "dram"}[level]]
    bound = min(peak["flops"], ai * bw)
    return (f"| {N} | {m} | {d} | {100 * share:.0f}% | {loop} | {gf:.2f} | {gb:.1f} | "
            f"{ai:.2f} | {level} | {bound:.1f} | {100 * gf / bound:.0f}% |")


def sector_loops(N, pack, m, share, peak, repeat, rng) -> list[str]:
    stab, _, _, _, cpx, ints, reals, _ = pack.snapshot()
    d = int(stab[m, K.DIM])
    out = []
    if stab[m, K.MODE] == K.MODE_CHEB:
        _, optr, oidx, oval, dgs = cheb_operator(stab, cpx, ints, reals, m)
        nnz = oidx.size
        packed = packed_operator(stab, ints, reals, m)
        entries, per_entry = (oidx, oval), 16.0
        if packed is not None:  # what the engine runs in this sector: 4 bytes per entry
            entries, per_entry = packed, 4.0
        psi = rng.normal(size=d) + 1j * rng.normal(size=d)
        B = np.zeros(2 * (TERMS + 2) * d)
        vn = np.zeros(TERMS + 2)
        K._cheb_start(psi, d, B, vn)
        K._cheb_extend(optr, *entries, dgs, d, B, vn, 0, TERMS)
        t = best_of(lambda: K._cheb_extend(optr, *entries, dgs, d, B, vn, 0, TERMS), repeat)
        flops = TERMS * (14.0 * d + 4.0 * nnz)
        mat = per_entry * nnz + 24.0 * d
        nbytes = TERMS * (mat + 48.0 * d)
        name = "terms packed" if packed is not None else "terms"
        out.append(line(N, m, d, share, f"{name} ({nnz / d:.1f} nnz/row)", flops, nbytes, t,
                        peak, mat + 48.0 * d))
        bes = np.abs(rng.normal(size=TERMS + 2)) * 1e-3
        fs = np.zeros(2 * d)
        res = np.zeros(d, dtype=np.complex128)
        reps = max(1, int(2e6 // (TERMS * d)))
        _outputs(B, TERMS, d, bes, res, fs, reps)
        t = best_of(lambda: _outputs(B, TERMS, d, bes, res, fs, reps), repeat)
        out.append(line(N, m, d, share, "output", reps * 8.0 * (TERMS + 1) * d,
                        reps * 16.0 * (TERMS + 1) * d, t, peak, 16.0 * (TERMS + 1) * d))
    elif stab[m, K.MODE] == K.MODE_EIGEN:
        x = rng.normal(size=d) + 1j * rng.normal(size=d)
        y = np.zeros(d, dtype=np.complex128)
        fs = np.zeros(2 * d)
        off = int(stab[m, K.OFF_V])
        reps = max(1, int(4e6 // (d * d)))
        _matvecs(reals, off, d, x, y, fs, reps)
        t = best_of(lambda: _matvecs(reals, off, d, x, y, fs, reps), repeat)
        out.append(line(N, m, d, share, "eigen", reps * 8.0 * d * d, reps * 16.0 * d * d, t,
                        peak, 16.0 * d * d))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--N", type=int, nargs="+", default=[7, 11, 13, 17])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--min-share", type=float, default=0.05,
                    help="time all sectors holding at least this fraction (default 0.05)")
    args = ap.parse_args(argv)
    peak = peaks(args.repeat)
    print(f"one core, load(1m) {os.getloadavg()[0]:.2f}: peak {peak['flops']:.1f} GFLOP/s "
          f"(2000^3 dgemm, 1 thread), copy bandwidth {peak['dram']:.1f} GB/s (512 MB "
          f"arrays), {peak['l3']:.1f} GB/s (4 MB arrays, L3) and {peak['l2']:.1f} GB/s "
          f"(128 kB arrays, L2)")
    print()
    print("| N | m | d | time share | loop | GFLOP/s | GB/s | flop/byte | fits | "
          "bound GFLOP/s | of bound |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for N in args.N:
        model = tsm.paper_model("pump", N=N, pump_site=None if N % 2 else N // 2)
        share, _ = shares(model, 64 if N <= 15 else 16)
        pack = SectorPack(model, TIMES)
        for m, s in share.items():
            if s < args.min_share:
                continue
            pack.ensure(m)
            for text in sector_loops(N, pack, m, s, peak, args.repeat, rng):
                print(text, flush=True)


if __name__ == "__main__":
    main()
