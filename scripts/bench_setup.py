"""Benchmark: model set-up time (issue 9, item 7).

Builds ``tsm.paper_model("loss", N=...)`` (linear profile T1 = 0, T2 = 2 eps0:
N - 1 bonds at N - 2 distinct non-zero temperatures, each needing the exact
canonical a(T)) and prints, per N:

- ``import``: importing thermospin_mc (first N only);
- ``jit``: first call of the canonical a(T) kernel on one temperature (numba
  compilation, or loading its on-disk cache when it is warm);
- ``build``: the model build with no a(T) value cached in memory (wall-clock and
  CPU seconds of this process; the a(T) kernel runs temperatures on all numba threads);
- ``rebuild``: the same build again (a(T) values served from the in-memory cache).

Then the exact steady state of the paper's pump + loss model (``--steady-N``,
default 9 and 11) with the solver's default of one BLAS thread
(``n_jobs=1``), with one BLAS thread per core (``n_jobs=-1``), and with BLAS
left at its own default (no limit), best of ``--repeat`` each. On a busy
machine the unlimited setting oversubscribes the cores.

    python scripts/bench_setup.py                 # N = 101, 1001
    python scripts/bench_setup.py --N 101 1001 3001 --repeat 3 --steady-N 9

Figures are printed; nothing is asserted. Run it twice in a row: the first run
may include numba compilation, the second loads the compiled kernels from disk.
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Model set-up time for paper_model('loss', N).")
    ap.add_argument("--N", type=int, nargs="+", default=[101, 1001],
                    help="chain lengths (default: 101 1001)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="uncached builds per N, best time printed (default: 1)")
    ap.add_argument("--steady-N", dest="steady_N", type=int, nargs="*", default=[9, 11],
                    help="chain lengths of the steady-state timing (default: 9 11; none: "
                         "skip)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    import thermospin_mc as tsm
    from thermospin_mc.physics import thermal

    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    thermal.alpha_ratio(1.0, N=5)  # compile or load the canonical kernel
    t_jit = time.perf_counter() - t0
    print(f"import thermospin_mc: {t_import:.3f} s; a(T) kernel jit/cache load: {t_jit:.3f} s")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cores: {os.cpu_count()}, load average (1 min): {load:.2f}")
    print(f"{'N':>6} {'bonds':>6} {'build [s]':>10} {'build cpu [s]':>14} {'rebuild [s]':>12}")
    for N in args.N:
        best, best_cpu = float("inf"), float("inf")
        for _ in range(max(1, args.repeat)):
            thermal.clear_cache()
            t0, c0 = time.perf_counter(), time.process_time()
            model = tsm.paper_model("loss", N=N)
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
        t0 = time.perf_counter()
        tsm.paper_model("loss", N=N)
        t_re = time.perf_counter() - t0
        print(f"{N:>6} {len(model.couplings):>6} {best:>10.3f} {best_cpu:>14.3f} {t_re:>12.3f}")
    if args.steady_N:
        _steady(tsm, args.steady_N, max(1, args.repeat))


def _steady(tsm, Ns, repeat: int) -> None:
    """Steady-state wall time with BLAS limited to 1 thread, one per core, or unlimited."""
    from thermospin_mc.exact import steadystate

    raw = steadystate.__wrapped__  # the solver without its BLAS limit
    print(f"\nsteadystate, paper pump + loss (BLAS threads; load average "
          f"{os.getloadavg()[0]:.2f})")
    print(f"{'N':>4} {'n_jobs=1 [s]':>13} {'n_jobs=-1 [s]':>14} {'BLAS default [s]':>17}")
    for N in Ns:
        model = tsm.paper_model("pump", N=N)
        tsm.steadystate(tsm.paper_model("pump", N=5))  # warm imports and caches
        row = []
        for fn, kw in ((tsm.steadystate, {"n_jobs": 1}), (tsm.steadystate, {"n_jobs": -1}),
                       (raw, {})):
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn(model, **kw)
                best = min(best, time.perf_counter() - t0)
            row.append(best)
        print(f"{N:>4} {row[0]:>13.2f} {row[1]:>14.2f} {row[2]:>17.2f}")


if __name__ == "__main__":
    main()
