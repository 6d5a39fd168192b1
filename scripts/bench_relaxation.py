"""Benchmark: Liouvillian spectrum and relaxation time (issue 22).

Problem: the paper's pump + loss model (``tsm.paper_model("pump", N)``, linear
profile T1 = 0, T2 = 2 eps0, gamma = 3.102, gamma_I = 0.62; for even N the pump
sits at site N / 2). Each case runs in a fresh subprocess, which times
``liouvillian_spectrum(model, k)`` and ``relaxation_time(model)`` (wall time,
set-up included) and reports the Davidson iterations, the peak resident memory
(``VmHWM``) and the load average.

    python scripts/bench_relaxation.py                      # N = 7, 9, 11, 2 threads
    python scripts/bench_relaxation.py --N 7 9 --n-jobs 1 2 --k 6 10

Figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _hwm_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _case(N: int, k: int, n_jobs: int) -> dict:
    import thermospin_mc as tsm

    model = tsm.paper_model("pump", N=N, pump_site=None if N % 2 else N // 2)
    t0 = time.perf_counter()
    df = tsm.liouvillian_spectrum(model, k=k, n_jobs=n_jobs)
    t1 = time.perf_counter()
    tau = tsm.relaxation_time(model, n_jobs=n_jobs)
    t2 = time.perf_counter()
    return {"N": N, "k": k, "n_jobs": n_jobs, "spectrum_s": t1 - t0, "relaxation_s": t2 - t1,
            "method": df.attrs["method"], "iterations": df.attrs.get("iterations"),
            "size": df.attrs["size"], "eigenvalues": [[float(r), float(i)] for r, i in
                                                      zip(df["re"], df["im"], strict=True)],
            "relaxation_time": tau, "rss_mb": _hwm_mb(), "load": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, nargs="+", default=[7, 9, 11])
    ap.add_argument("--k", type=int, nargs="+", default=[6])
    ap.add_argument("--n-jobs", dest="n_jobs", type=int, nargs="+", default=[2])
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(_case(*json.loads(args.case))))
        return
    print(f"{'N':>3} {'k':>3} {'jobs':>4} {'unknowns':>9} {'method':>9} {'its':>5} "
          f"{'spectrum':>9} {'relax.':>8} {'RSS':>8} {'load':>5}  1/g")
    for N in args.N:
        for k in args.k:
            for n_jobs in args.n_jobs:
                out = subprocess.run([sys.executable, __file__, "--case",
                                      json.dumps([N, k, n_jobs])],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{N:>3} {k:>3} {n_jobs:>4} {r['size']:>9} {r['method']:>9} "
                      f"{str(r['iterations']):>5} {r['spectrum_s']:8.2f}s "
                      f"{r['relaxation_s']:7.2f}s {r['rss_mb']:6.0f}MB {r['load']:5.2f}  "
                      f"{r['relaxation_time']:.8g}")
                print("      slowest: " + ", ".join(f"{a:.6g}{b:+.6g}j"
                                                 for a, b in r["eigenvalues"]))


if __name__ == "__main__":
    main()
