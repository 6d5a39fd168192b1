"""Benchmark: exact counting statistics in block form vs QuTiP's countstat (issue 11).

Paper pump model (linear profile T1 = 0, T2 = 2 eps0, gamma = 3.102,
gamma_I = 0.62), net spin to the right (loss_right - loss_left):

1. cumulant rates of orders 1-4 (recursive Rayleigh-Schroedinger scheme,
   Drazin inverse by bordered block solves) at N = 7, 9, 11 (wall time,
   block-vector size, GMRES iterations);
2. QuTiP 5 ``countstat_current_noise`` in the full 4^N space, its current and
   zero-frequency noise against ours, at N = 5 and 6 (and N = 7 with
   ``--qutip-n7``). Its default ``direct`` method forms the dense projector
   ``rho_ss Tr`` and ``1 - rho_ss Tr`` (two 4^N x 4^N complex matrices: 8.6 GB
   at N = 7); on this 2-core, 24 GB machine it reached 17 GB resident and had
   not finished after 15 minutes, so it is opt-in.

    python scripts/bench_fcs.py            # N = 7, 9, 11; QuTiP at N = 5, 6
    python scripts/bench_fcs.py --quick    # N = 7, 9

Figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from bench_vs_qutip import qutip_problem  # scripts/ is on sys.path when run as a script

import thermospin_mc as tsm

NET = {"loss_right": 1, "loss_left": -1}


def qutip_liouvillian(model):
    """Full-space Liouvillian and the counted [c_right, c_left] (built from docs/model.md only,
    by the QuTiP benchmark's own problem builder)."""
    import qutip

    H, c_ops, _, _ = qutip_problem(model)  # c_ops: loss_left, loss_right, pump
    return qutip.liouvillian(H, c_ops), [c_ops[1], c_ops[0]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 7 and 9 only")
    ap.add_argument("--qutip-n7", dest="qutip_n7", action="store_true",
                    help="also run QuTiP at N = 7 (needs > 17 GB of memory)")
    ap.add_argument("--n-jobs", dest="n_jobs", type=int, default=-1,
                    help="BLAS threads of our solver (default -1: every core)")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    sizes = (7, 9) if args.quick else (7, 9, 11)
    ours = {}
    print("\norders 1-4 of the net spin, long-time rates (block form)")
    print(f"{'N':>3} {'block size':>11} {'time [s]':>9} {'GMRES its':>14}  c1 c2 c3 c4")
    print(f"load average (1 min) {os.getloadavg()[0]:.2f}; BLAS threads n_jobs={args.n_jobs}")
    for N in sizes:
        model = tsm.paper_model("pump", N=N, delta_T=2.0)
        t0 = time.perf_counter()
        df = tsm.exact_counting_statistics(model, NET, order=4, n_jobs=args.n_jobs)
        dt = time.perf_counter() - t0
        c = df["cumulant"].to_numpy()
        ours[N] = c
        its = df.attrs.get("gmres_iterations") or "-"
        print(f"{N:>3} {df.attrs['layout_size']:>11} {dt:>9.2f} {str(its):>14}  "
              + " ".join(f"{x:.10g}" for x in c), flush=True)

    import qutip

    for N in (5, 6, 7) if args.qutip_n7 else (5, 6):
        # even N has no central site: the pump sits at N/2
        model = tsm.paper_model("pump", N=N, delta_T=2.0, pump_site=None if N % 2 else N // 2)
        if N not in ours:
            t0 = time.perf_counter()
            ours[N] = tsm.exact_counting_statistics(model, NET, order=4,
                                                    n_jobs=args.n_jobs)["cumulant"].to_numpy()
            t_ours = time.perf_counter() - t0
        else:
            t_ours = float("nan")
        print(f"\nQuTiP {qutip.__version__} countstat_current_noise at N = {N} "
              f"(full 4^N = {4 ** N} space)")
        t0 = time.perf_counter()
        L, c_ops = qutip_liouvillian(model)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        rhoss = qutip.steadystate(L)
        I, S, _ = qutip.countstat_current_noise(L, c_ops, rhoss=rhoss)
        dt = time.perf_counter() - t0
        if N == 5:
            # without rhoss, countstat computes its own steady state
            I0 = np.real(np.asarray(qutip.countstat_current_noise(L, c_ops)[0]))
            print(f"  note: without rhoss= qutip's countstat gives currents {I0} (right, "
                  "left), with qutip.steadystate(L) passed in "
                  f"{np.real(np.asarray(I))}")
        I = np.real(np.asarray(I))
        S = np.real(np.asarray(S)).reshape(2, 2)
        cur = I[0] - I[1]
        noise = S[0, 0] + S[1, 1] - S[0, 1] - S[1, 0]
        c = ours[N]
        print(f"  qutip: build {t_build:.2f} s, steadystate + countstat {dt:.2f} s; ours "
              "(orders 1-4) "
              f"{t_ours:.2f} s")
        print(f"  current  qutip {cur:.12g}  ours {c[0]:.12g}  diff {cur - c[0]:.2e}")
        print(f"  noise    qutip {noise:.12g}  ours {c[1]:.12g}  diff {noise - c[1]:.2e}")
        print(f"  Fano     qutip {noise / cur:.12g}  ours {c[1] / c[0]:.12g}")
        print(f"  (qutip stops at the noise; ours: c3 = {c[2]:.10g}, c4 = {c[3]:.10g})",
              flush=True)

if __name__ == "__main__":
    main()
