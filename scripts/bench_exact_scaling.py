"""Benchmark: exact block solvers (mesolve, steadystate) for N = 7..13 (issue 12).

Problem: the paper's pump + loss model (linear profile T1 = 0, T2 = 2 eps0,
initially all up; for even N the pump sits at site N / 2), mesolve on
``t in [0, 20]`` with 81 output times (default observables), and steadystate.
Each case runs in a fresh subprocess, which reports its wall time and its peak
resident memory (``VmHWM`` of ``/proc/self/status``). QuTiP 5 ``mesolve`` /
``steadystate`` in the full ``2^N`` space run beside them up to ``--qutip-max-N``.

    python scripts/bench_exact_scaling.py                     # N = 7..13
    python scripts/bench_exact_scaling.py --N 7 9 11 --qutip-max-N 9
    python scripts/bench_exact_scaling.py --tree /work/main   # another checkout
    python scripts/bench_exact_scaling.py --method expm       # assembled generator
    python scripts/bench_exact_scaling.py --N 12 13 --n-jobs 1 2   # threads per solve

Figures are printed (load averages with them); nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _hwm_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _model(N: int):
    import thermospin_mc as tsm

    return tsm.paper_model("pump", N=N, pump_site=None if N % 2 else N // 2)


def _child(kind: str, N: int, method: str, n_jobs: int = 1) -> dict:
    """Run one case in this (fresh) process; returns the figures."""
    import numpy as np

    times = np.linspace(0.0, 20.0, 81)
    if kind.startswith("qutip"):
        import qutip

        sys.path.insert(0, HERE)
        from bench_vs_qutip import qutip_problem

        H, c_ops, e_ops, psi0 = qutip_problem(_model(N))
        t0 = time.perf_counter()
        if kind == "qutip_mesolve":
            qutip.mesolve(H, psi0 * psi0.dag(), times, c_ops, e_ops=e_ops,
                          options={"progress_bar": False, "store_states": False})
        else:
            qutip.steadystate(H, c_ops)
        return {"time": time.perf_counter() - t0, "hwm": _hwm_mb(), "info": ""}
    from thermospin_mc.exact import solvers as exact

    model = _model(N)
    t0 = time.perf_counter()
    if kind == "mesolve":
        kw = {} if method == "auto" else {"method": method}
        res = exact.mesolve(model, times, n_jobs=n_jobs, **kw)
        meta = res.metadata
        info = (f"{meta.get('method', '')} matvecs={meta['matvecs']}" if "matvecs" in meta
                else str(meta.get("method", "")))
    else:
        res = exact.steadystate(model, n_jobs=n_jobs)
        meta = res.metadata
        info = f"{meta.get('method', '')} it={meta.get('gmres_iterations', '')}"
    dt = time.perf_counter() - t0
    j = float(res.get("j")[-1, 0])
    return {"time": dt, "hwm": _hwm_mb(), "info": info, "j": j}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Exact mesolve / steadystate time and memory.")
    ap.add_argument("--N", type=int, nargs="+", default=list(range(7, 14)))
    ap.add_argument("--qutip-max-N", dest="qmax", type=int, default=9)
    ap.add_argument("--tree", default=os.path.dirname(HERE),
                    help="checkout whose thermospin_mc is measured (PYTHONPATH)")
    ap.add_argument("--method", default="auto", help="mesolve method (auto, expm, chebyshev)")
    ap.add_argument("--timeout", type=float, default=1200.0, help="per case, seconds")
    ap.add_argument("--skip", nargs="*", default=[],
                    help="cases to skip: mesolve steadystate qutip_mesolve qutip_steadystate")
    ap.add_argument("--n-jobs", dest="n_jobs", type=int, nargs="+", default=[1],
                    help="threads of our solvers (BLAS and block generator); one row each")
    ap.add_argument("--child", nargs=4, metavar=("KIND", "N", "METHOD", "NJOBS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        out = _child(args.child[0], int(args.child[1]), args.child[2], int(args.child[3]))
        print("RESULT " + json.dumps(out))
        return
    print(f"tree {args.tree}; mesolve method {args.method}; cores {os.cpu_count()}; "
          f"threads per solve {args.n_jobs} (QuTiP: 1 BLAS thread)")
    print(f"{'N':>3} {'case':>18} {'threads':>7} {'time [s]':>10} {'peak RSS [MB]':>14} "
          f"{'load(1m)':>9}  info")
    for N in args.N:
        kinds = [(k, n) for k in ("mesolve", "steadystate") for n in args.n_jobs]
        if N <= args.qmax:
            kinds += [("qutip_mesolve", 1), ("qutip_steadystate", 1)]
        for kind, nj in kinds:
            if kind in args.skip:
                continue
            env = dict(os.environ, PYTHONPATH=args.tree, OMP_NUM_THREADS=str(nj),
                       OPENBLAS_NUM_THREADS=str(nj), MKL_NUM_THREADS=str(nj))
            cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, str(N),
                   args.method, str(nj)]
            try:
                p = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                   timeout=args.timeout)
                line = [s for s in p.stdout.splitlines() if s.startswith("RESULT ")]
                if not line:
                    err = (p.stderr.strip().splitlines() or ["?"])[-1]
                    print(f"{N:>3} {kind:>18} {nj:>7} {'failed':>10} {'':>14} "
                          f"{os.getloadavg()[0]:>9.2f}  {err[:80]}")
                    continue
                r = json.loads(line[0][7:])
                extra = f" j(end)={r['j']:.12g}" if "j" in r else ""
                print(f"{N:>3} {kind:>18} {nj:>7} {r['time']:>10.2f} {r['hwm']:>14.0f} "
                      f"{os.getloadavg()[0]:>9.2f}  {r['info']}{extra}", flush=True)
            except subprocess.TimeoutExpired:
                print(f"{N:>3} {kind:>18} {nj:>7} {'>' + str(int(args.timeout)):>10} {'':>14} "
                      f"{os.getloadavg()[0]:>9.2f}  timeout", flush=True)


if __name__ == "__main__":
    main()
