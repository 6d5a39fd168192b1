"""Benchmark: steady-state spectra of the paper's pump + loss chain (``tsm.spectrum``).

For each chain length (``paper_model("pump", N)``) and operator pair (default
``z6, z6``: square blocks; ``+6, -6``: the coherence blocks) it times
``tsm.spectrum`` on ``--nw`` frequencies in ``[-6, 6]`` (wall and CPU seconds),
prints what the reduced path did (length ``T`` of the Chebyshev head and its
matrix-vector products, the tail's norm, the exact solves, their flexible-GMRES
iterations, the reduced basis) and checks it against the per-frequency GMRES
path (``ShiftedSolver.solve``, left-preconditioned, ``rtol = 1e-11``: the path
``spectrum`` took above ``DIRECT_LIMIT`` before) at ``omega = 0``, the highest
peak and ``--check`` frequencies spread over the grid (ends included): the
largest difference relative to ``max |S|``, and that path's seconds per
frequency times the grid size (the cost it had for the whole grid; ``--full``
runs it on the whole grid instead).

    python scripts/bench_spectrum.py                      # N = 9 and 11, n_jobs = 2
    python scripts/bench_spectrum.py --N 11 --n-jobs 1 --check 3

Wall times depend on what else runs on the machine (CPU seconds too, less so);
figures are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def per_frequency(model, A, B, omegas, n_jobs):
    """``S(omega)`` by one left-preconditioned GMRES per frequency (frequencies on
    ``n_jobs`` threads, one BLAS thread each, as ``spectrum`` did before), the
    iterations and the seconds of the solves."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    import thermospin_mc as tsm
    from thermospin_mc.exact.regression import RegressionSystem
    from thermospin_mc.exact.shifted_solver import ShiftedSolver

    a = tsm.Operator.parse(A, model.N, name="A")
    b = tsm.Operator.parse(B, model.N, name="B")
    rho = tsm.steadystate(model, observables=["norm"], n_jobs=n_jobs).blocks
    sysm = RegressionSystem(model, a, b, rho)
    lay = sysm.layout
    rhs = sysm.x0.copy()
    border = lay.shift == 0
    if border:
        rho_x = np.zeros(lay.size, dtype=complex)
        for m in lay.sectors:
            lay.block(rho_x, m)[...] = rho[m]
        rhs -= (sysm.trace() @ sysm.x0) * rho_x
    solver = ShiftedSolver(lay, sysm.F, model.channels, border, concurrent=n_jobs)

    def one(w):
        return 2.0 * (sysm.a @ solver.solve(-rhs, 1j * w)).real

    t0 = time.perf_counter()
    with threadpool_limits(limits=1):
        if n_jobs > 1:
            with ThreadPoolExecutor(n_jobs) as ex:
                S = np.array(list(ex.map(one, omegas)))
        else:
            S = np.array([one(w) for w in omegas])
    return S, solver.iterations, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Cost and accuracy of tsm.spectrum.")
    ap.add_argument("--N", type=int, nargs="+", default=[9, 11], help="chain lengths (9 11)")
    ap.add_argument("--pairs", nargs="+", default=["z6,z6", "+6,-6"],
                    help="operator pairs A,B (default: z6,z6 +6,-6)")
    ap.add_argument("--nw", type=int, default=121, help="frequencies on [-6, 6] (121)")
    ap.add_argument("--n-jobs", type=int, default=2, help="threads (default: 2)")
    ap.add_argument("--check", type=int, default=5,
                    help="frequencies spread over the grid checked against the "
                         "per-frequency GMRES, besides omega = 0 and the peak (5)")
    ap.add_argument("--full", action="store_true",
                    help="run the per-frequency GMRES on the whole grid")
    args = ap.parse_args(argv)

    import thermospin_mc as tsm
    from thermospin_mc.exact.correlation_spectrum import SPECTRUM_TOL

    omegas = np.linspace(-6.0, 6.0, args.nw)
    print(f"tsm.spectrum on {args.nw} frequencies in [-6, 6], n_jobs = {args.n_jobs}, "
          f"SPECTRUM_TOL = {SPECTRUM_TOL:g} (relative residual)")
    for N in args.N:
        model = tsm.paper_model("pump", N=N)
        tsm.spectrum(model, [0.0], "z1", "z1")  # numba kernels and caches
        for pair in args.pairs:
            A, B = pair.split(",")
            stats: dict = {}
            t0, c0 = time.perf_counter(), time.process_time()
            S = tsm.spectrum(model, omegas, A, B, n_jobs=args.n_jobs, _stats=stats)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            its = [i for _, i in stats.get("solves", [])]
            head_s, tail_s = stats.get("seconds", (0.0, 0.0))
            print(f"N = {N:2d}  <{A}(tau) {B}(0)>: {wall:6.1f} s wall, {cpu:6.1f} s CPU "
                  f"(steady state and set-up {wall - head_s - tail_s:.1f} s, head {head_s:.1f} s, "
                  f"tail {tail_s:.1f} s)\n"
                  f"        head T = {stats.get('T', 0.0):.1f} ({stats.get('matvecs', 0)} "
                  f"products), tail {stats.get('tail', 1.0):.1e} of the start, {len(its)} exact "
                  f"solves ({sum(its)} FGMRES iterations), basis {stats.get('basis', 0)}")
            if args.full:
                idx = np.arange(omegas.size)
            else:  # omega = 0, the highest peak, the rest spread over the grid
                spread = np.linspace(0, omegas.size - 1, max(args.check, 1)).round()
                idx = np.unique([np.argmin(np.abs(omegas)), np.argmax(S), *spread.astype(int)])
            ref, iters, spent = per_frequency(model, A, B, omegas[idx], args.n_jobs)
            err = float(np.max(np.abs(S[idx] - ref)) / np.max(np.abs(S)))
            per = spent / idx.size
            print(f"        per-frequency GMRES at {idx.size} frequencies: max |dS| / max |S| "
                  f"= {err:.1e}; {np.mean(iters):.0f} iterations and {per:.2f} s per frequency "
                  f"(x {omegas.size} = {per * omegas.size:.0f} s for the grid)")


if __name__ == "__main__":
    main()
