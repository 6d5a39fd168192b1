"""Benchmark: trajectory throughput against chain length, beside QuTiP 5 ``mcsolve``.

Problem (issue 12): the paper's pump + loss chain (linear profile, Delta T = 2,
gamma = 3.102, gamma_I = 0.62, all up at t = 0), 81 output times on [0, 20],
observables j and m, N = 5, 7, ..., 21. For each N, one row: our traj/s on
1 core and on all cores, QuTiP mcsolve traj/s on 1 core (where it finishes in
reasonable time; default N <= 13), the ratio on 1 core, the sectors the
trajectories visited and the propagator of each (``e`` eigen, ``c``
Chebyshev, ``t`` Taylor), and the machine's 1-minute load average (other jobs
on a shared machine lower every figure).

Sectors are built by a warm-up run of the first 256 (N <= 15) or 64 trajectories
of the timed runs before the clock starts (its time is the ``setup`` column; a
sector first visited by a later trajectory is built inside the timed run).
QuTiP's times include its per-run set-up (one mcsolve call). Every figure is the
best of ``--repeat`` (default 3) identical timed runs, for both engines: single
runs on this shared machine varied by 20-40% (ours and QuTiP's alike), and by up
to 1.8x between consecutive identical runs in slow spells of the host. The
1-core runs of the two engines alternate (ours, QuTiP, ours, QuTiP, ...), so that
both bests are drawn from the same stretch of time.

    python scripts/bench_scaling.py                  # default, ~10 min on 2 cores
    python scripts/bench_scaling.py --N 5-13 --ntraj-scale 0.25
    python scripts/bench_scaling.py --N 17 --ntraj 1000 --skip-qutip
    python scripts/bench_scaling.py --exact-N 7 9 11 12 13 --exact-n-jobs 1 2
        # appends the exact solvers' time / memory table (bench_exact_scaling.py)

Figures are printed (a markdown table); nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vs_qutip import TIMES, header, run_qutip  # noqa: E402

import thermospin_mc as tsm  # noqa: E402

#: default trajectories per N (ours; each of the 1-core and all-core runs)
NTRAJ = {5: 8000, 7: 8000, 9: 4000, 11: 2000, 13: 1000, 15: 300, 17: 200, 19: 128, 21: 128}
MODE_LETTER = {"eigen": "e", "chebyshev": "c", "taylor": "t"}


def parse_ns(text: str) -> list[int]:
    """``"5-21"`` (odd N in the range), ``"5,7,11"`` or ``"17"``."""
    out = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-"))
            out.extend(n for n in range(lo, hi + 1) if n % 2 == 1)
        else:
            out.append(int(part))
    return out


def ours(model, ntraj, n_jobs, seed, repeat=1):
    """Our traj/s: the best of ``repeat`` identical timed runs (and the last result)."""
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = tsm.mcsolve(model, TIMES, ntraj=ntraj, seed=seed, n_jobs=n_jobs,
                          observables=("j", "m"), cluster=tsm.Cluster(progress=False))
        best = max(best, ntraj / (time.perf_counter() - t0))
    return best, res


def qutip_size(model, budget, nmax, repeat=1):
    """Trajectories per timed QuTiP run: a 4-trajectory probe, then as many as fit
    ``budget / repeat`` s (at least 4, at most ``nmax``)."""
    dt, _, _ = run_qutip(model, 4, 1)
    return int(min(nmax, max(4, 0.8 * budget / repeat * 4 / dt)))


def one_core_pair(model, ntraj, seed, repeat, qutip_n):
    """Best 1-core traj/s of ours and of QuTiP (``qutip_n`` trajectories per run; 0:
    QuTiP skipped), their runs alternating; also our last result."""
    r1 = q = 0.0
    res = None
    for _ in range(repeat):
        r, res = ours(model, ntraj, 1, seed=seed)
        r1 = max(r1, r)
        if qutip_n:
            dt, _, _ = run_qutip(model, qutip_n, 1)
            q = max(q, qutip_n / dt)
    return r1, (q if qutip_n else float("nan")), res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", default="5-21", help="odd range 'lo-hi' or comma list (default 5-21)")
    ap.add_argument("--ntraj", type=int, default=None,
                    help="trajectories per run for every N (default: a per-N schedule)")
    ap.add_argument("--ntraj-scale", type=float, default=1.0,
                    help="multiply the default schedule (e.g. 0.25 for a quick look)")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                    help="workers of the all-core run (default: every core)")
    ap.add_argument("--qutip-max-N", type=int, default=13,
                    help="largest N run with QuTiP (default 13)")
    ap.add_argument("--qutip-budget", type=float, default=30.0,
                    help="seconds of QuTiP per N, over all repeats (default 30)")
    ap.add_argument("--skip-qutip", action="store_true")
    ap.add_argument("--repeat", type=int, default=3,
                    help="timed runs per figure, ours and QuTiP alike; the best is "
                         "shown (default 3; single runs on a shared machine vary by 20-40%%)")
    ap.add_argument("--exact-n-jobs", dest="exact_n_jobs", type=int, nargs="+", default=[1],
                    help="threads per exact solve (one row each), e.g. 1 2")
    ap.add_argument("--exact-N", dest="exact_N", type=int, nargs="*", default=[],
                    help="also run scripts/bench_exact_scaling.py (exact mesolve/steadystate "
                         "time and peak memory, fresh process per case) for these N, e.g. "
                         "7 9 11 13; default: none")
    args = ap.parse_args(argv)
    Ns = parse_ns(args.N)
    header()
    tsm.trajectories.batches.warm_kernels()
    print(f"\n## Pump + loss, linear profile Delta T = 2, 81 times on [0, 20], observables j, m;"
          f" all cores = {args.cores}")
    print("| N | ntraj | setup [s] | ours 1 core [traj/s] | ours all cores [traj/s] | "
          "QuTiP 1 core [traj/s] (ntraj) | ratio 1 core | sectors (m:mode) | load |")
    print("|---:|---:|---:|---:|---:|---:|---:|:---|---:|")
    t_start = time.perf_counter()
    for N in Ns:
        model = tsm.paper_model("pump", N=N, delta_T=2.0)
        # at least one statistics block (64 trajectories) per worker
        ntraj = args.ntraj or max(64 * args.cores, int(NTRAJ.get(N, 64) * args.ntraj_scale))
        t0 = time.perf_counter()
        # warm-up: the first trajectories of the timed runs themselves (trajectory k is a
        # pure function of (seed, k)), so that the sectors they visit are built untimed
        ours(model, min(ntraj, 256 if N <= 15 else 64), 1, seed=1)
        setup = time.perf_counter() - t0
        nq = 0
        if not args.skip_qutip and N <= args.qutip_max_N:
            nq = qutip_size(model, args.qutip_budget, 2000, repeat=args.repeat)
        r1, q, res = one_core_pair(model, ntraj, 1, args.repeat, nq)
        ratio = r1 / q if nq else float("nan")
        rall, res2 = ours(model, ntraj, args.cores, seed=1, repeat=args.repeat)
        modes = {**res.metadata["sector_modes"], **res2.metadata["sector_modes"]}
        sectors = " ".join(f"{m}:{MODE_LETTER.get(v, v)}"
                           for m, v in sorted(modes.items(), key=lambda kv: int(kv[0])))
        qtxt = f"{q:,.2f} ({nq})" if nq else "-"
        rtxt = f"x{ratio:,.0f}" if ratio == ratio else "-"
        print(f"| {N} | {ntraj} | {setup:.1f} | {r1:,.1f} | {rall:,.1f} | {qtxt} | {rtxt} | "
              f"{sectors} | {os.getloadavg()[0]:.1f} |", flush=True)
    print(f"\n# total {time.perf_counter() - t_start:.0f} s; 1-min load average at the end "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    if args.exact_N:
        import bench_exact_scaling  # scripts/ is on sys.path when run as a script

        print("\n## Exact block solvers (bench_exact_scaling.py)")
        bench_exact_scaling.main(["--N", *map(str, args.exact_N),
                                  "--n-jobs", *map(str, args.exact_n_jobs)])


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
