"""Benchmark: thermospin_mc trajectories against QuTiP 5 ``mcsolve``, measured in one run.

Problem (issue 4): N = 7, linear profile T1 = 0, T2 = 2 eps0, gamma = 3.102,
gamma_I = 0.62, initial all up, 81 output times on [0, 20], observables j and m.
Both engines run the same ntraj, on 1 core and on 2 cores; both are compared
with the exact block density-matrix solution (z-scores). Then a scaling table
over N (QuTiP where it finishes within the budget), the N = 1001 single
impurity on 2 cores, and the exact solvers' time and memory per N.

    python scripts/bench_vs_qutip.py            # full (several minutes)
    python scripts/bench_vs_qutip.py --quick    # about a minute

Figures are printed; nothing is asserted. Timings of the pool-based runs are
given for the default thread backend and for loky worker processes, cold
(process start-up included) and warm (the reusable pool is up).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

import thermospin_mc as tsm

TIMES = np.linspace(0.0, 20.0, 81)


def qutip_problem(model):
    """(H, c_ops, e_ops, psi0) in the full 2^N space, built from docs/model.md only."""
    import qutip

    N, a = model.N, np.asarray(model.couplings, dtype=float)

    def op(o, i):
        return qutip.tensor([o if k == i else qutip.qeye(2) for k in range(N)])

    sx = [op(qutip.sigmax(), i) for i in range(N)]
    sy = [op(qutip.sigmay(), i) for i in range(N)]
    sz = [op(qutip.sigmaz(), i) for i in range(N)]
    H = sum(0.5 * a[l] * (sx[l] * sx[l + 1] + sy[l] * sy[l + 1] + sz[l] * sz[l + 1])
            for l in range(N - 1))
    c_ops = [np.sqrt(model.gamma) * op(qutip.sigmap(), 0),
             np.sqrt(model.gamma) * op(qutip.sigmap(), N - 1)]
    if model.gamma_pump > 0:
        c_ops.append(np.sqrt(model.gamma_pump) * op(qutip.sigmam(), model.pump_site - 1))
    e_ops = {"j": sum(sy[l] * sx[l + 1] - sx[l] * sy[l + 1] for l in range(N - 1)),
             "m": 0.5 * sum(sz)}
    down = set(model.initial.sites)
    psi0 = qutip.tensor([qutip.basis(2, 1 if i + 1 in down else 0) for i in range(N)])
    return H, c_ops, e_ops, psi0


def run_qutip(model, ntraj, ncpu, seed=1):
    import qutip

    H, c_ops, e_ops, psi0 = qutip_problem(model)
    opts = {"progress_bar": False, "store_states": False, "keep_runs_results": False}
    opts.update({"map": "parallel", "num_cpus": ncpu} if ncpu > 1 else {"map": "serial"})
    t0 = time.perf_counter()
    res = qutip.mcsolve(H, psi0, TIMES, c_ops, e_ops=e_ops, ntraj=ntraj, seeds=seed,
                        options=opts)
    dt = time.perf_counter() - t0
    mean = {k: np.real(np.asarray(res.average_e_data[k])) for k in e_ops}
    sem = {k: np.real(np.asarray(res.std_e_data[k])) / np.sqrt(ntraj) for k in e_ops}
    return dt, mean, sem


def run_ours(model, ntraj, n_jobs, seed=1, backend=None):
    t0 = time.perf_counter()
    res = tsm.mcsolve(model, TIMES, ntraj=ntraj, seed=seed, n_jobs=n_jobs, observables=("j", "m"),
                      cluster=tsm.Cluster(backend=backend, progress=False))
    dt = time.perf_counter() - t0
    return dt, {k: res.get(k)[:, 0] for k in ("j", "m")}, \
        {k: res.get(k, "sem")[:, 0] for k in ("j", "m")}


def zstats(mean, sem, exact):
    """Fraction of rows within 2 sem and the largest |z| (rows with sem > 0)."""
    zs = []
    for k in ("j", "m"):
        ok = sem[k] > 0
        zs.append((mean[k][ok] - exact[k][ok]) / sem[k][ok])
    z = np.abs(np.concatenate(zs))
    return float((z < 2).mean()), float(z.max())


def header():
    import numba

    try:
        import qutip

        qv = qutip.__version__
    except ImportError:
        qv = "not installed"
    print(f"# thermospin_mc {tsm.__version__}, numba {numba.__version__}, QuTiP {qv}, "
          f"Python {platform.python_version()}, {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}")


def section_n7(ntraj_q, ntraj_big, skip_qutip):
    model = tsm.paper_model("pump", N=7, delta_T=2.0)
    ref = tsm.mesolve(model, TIMES, observables=("j", "m"))
    exact = {k: ref.get(k)[:, 0] for k in ("j", "m")}
    run_ours(model, 64, 1)  # compile / load the numba cache outside the timings
    print(f"\n## N = 7 pump + loss, 81 times on [0, 20], ntraj = {ntraj_q} for both engines")
    print(f"{'engine':<28}{'cores':>6}{'time [s]':>11}{'traj/s':>11}{'within 2 sem':>14}"
          f"{'max |z|':>9}")
    rows = {}
    for n_jobs, label, backend in ((1, "thermospin_mc", None),
                                   (2, "thermospin_mc (threads)", None),
                                   (2, "thermospin_mc (loky, cold)", "loky"),
                                   (2, "thermospin_mc (loky, warm)", "loky")):
        dt, mean, sem = run_ours(model, ntraj_q, n_jobs, backend=backend)
        f2, zmax = zstats(mean, sem, exact)
        rows[(label, n_jobs)] = ntraj_q / dt
        print(f"{label:<28}{n_jobs:>6}{dt:>11.3f}{ntraj_q / dt:>11.0f}{f2:>14.3f}{zmax:>9.2f}")
    if not skip_qutip:
        for ncpu in (1, 2):
            dt, mean, sem = run_qutip(model, ntraj_q, ncpu)
            f2, zmax = zstats(mean, sem, exact)
            rows[("qutip", ncpu)] = ntraj_q / dt
            print(f"{'QuTiP mcsolve':<28}{ncpu:>6}{dt:>11.3f}{ntraj_q / dt:>11.1f}{f2:>14.3f}"
                  f"{zmax:>9.2f}")
        r1 = rows[("thermospin_mc", 1)] / rows[("qutip", 1)]
        r2 = rows[("thermospin_mc (threads)", 2)] / rows[("qutip", 2)]
        r2w = rows[("thermospin_mc (loky, warm)", 2)] / rows[("qutip", 2)]
        r2c = rows[("thermospin_mc (loky, cold)", 2)] / rows[("qutip", 2)]
        print(f"speed-up at equal ntraj: 1 core x{r1:.0f}; 2 cores x{r2:.0f} (threads, the "
              f"default), loky processes x{r2w:.0f} warm, x{r2c:.0f} cold")
    print(f"\n## N = 7 throughput at ntraj = {ntraj_big}")
    t1, mean, sem = run_ours(model, ntraj_big, 1)
    t2, mean2, sem2 = run_ours(model, ntraj_big, 2)
    f2, zmax = zstats(mean2, sem2, exact)
    print(f"1 core: {ntraj_big / t1:,.0f} traj/s; 2 cores: {ntraj_big / t2:,.0f} traj/s "
          f"(parallel efficiency x{t1 / t2:.2f}); within 2 sem {f2:.3f}, max |z| {zmax:.2f}")


def section_scaling(Ns, budget, skip_qutip):
    print("\n## Scaling, pump + loss, linear profile Delta T = 2, 81 times on [0, 20], 1 core")
    print(f"{'N':>4}{'ntraj':>8}{'ours traj/s':>13}{'QuTiP traj/s':>14}{'ratio':>8}"
          f"{'sectors (mode)':>40}")
    for N in Ns:
        model = tsm.paper_model("pump", N=N, delta_T=2.0)
        run_ours(model, 64, 1)  # build the visited sectors' data once (not timed)
        ntraj = 4000 if N <= 9 else 1000
        t0 = time.perf_counter()
        res = tsm.mcsolve(model, TIMES, ntraj=ntraj, seed=2, observables=("j", "m"),
                          cluster=tsm.Cluster(progress=False))
        ours = ntraj / (time.perf_counter() - t0)
        modes = res.metadata["sector_modes"]
        short = ",".join(f"{m}{v[0]}" for m, v in modes.items())
        q = float("nan")
        if not skip_qutip and N <= 11:
            nq = 20
            dt, _, _ = run_qutip(model, nq, 1)
            q = nq / dt
            if dt * 10 < budget and N <= 9:
                nq = max(20, int(min(400, 0.5 * budget * q)))
                dt, _, _ = run_qutip(model, nq, 1)
                q = nq / dt
        ratio = ours / q if q == q else float("nan")
        print(f"{N:>4}{ntraj:>8}{ours:>13,.0f}{q:>14.1f}{ratio:>8.0f}{short:>40}")


def section_long_chain(ntraj):
    N = 1001
    model = tsm.paper_model("loss", N=N, delta_T=2.0)
    times = np.linspace(0.0, 800.0, 161)
    print(f"\n## N = {N} single impurity, edge loss, 161 times on [0, 800], observables "
          "j, m, n, 2 cores (threads)")
    t0 = time.perf_counter()
    res = tsm.mcsolve(model, times, ntraj=ntraj, seed=3, n_jobs=2, record_jumps=True,
                      cluster=tsm.Cluster(progress=False))
    dt = time.perf_counter() - t0
    j = res.jumps
    lost = len(j) / ntraj
    # exact probability that the impurity is lost by t = 800: 1 - ||psi(800)||^2
    m_end = float(tsm.mesolve(model, [800.0], observables=("m",)).get("m")[0, 0])
    p_lost = 1.0 - (N / 2 - m_end)
    z = (lost - p_lost) / np.sqrt(p_lost * (1 - p_lost) / ntraj)
    right = float((j.channel == "loss_right").sum()) / max(len(j), 1)
    print(f"{ntraj} trajectories in {dt:.1f} s ({ntraj / dt:,.0f} traj/s), sector 1 in "
          f"{res.metadata['sector_modes']['1']} mode; lost by t = 800: {lost:.4f} "
          f"(exact {p_lost:.4f}, z = {z:.2f}); of those, {right:.3f} left on the hot side")


_EXACT_CHILD = """
import json, sys, time
import numpy as np
import thermospin_mc as tsm
N, what = int(sys.argv[1]), sys.argv[2]
model = tsm.paper_model("pump", N=N, delta_T=2.0)
t0 = time.perf_counter()
if what == "mesolve":
    tsm.mesolve(model, np.linspace(0.0, 20.0, 81), observables=("j", "m"))
else:
    tsm.steadystate(model, observables=("j", "m"))
dt = time.perf_counter() - t0
# VmHWM (peak RSS of this program since exec; ru_maxrss would include the
# benchmark's own memory inherited at fork)
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")]
print(json.dumps({"t": dt, "rss": hwm[0] if hwm else float("nan")}))
"""


def section_exact(Ns):
    import json

    print("\n## Exact block solvers, pump + loss (each in a fresh process; peak RSS)")
    print(f"{'N':>4}{'sum C(N,m)^2':>13}{'mesolve t<=20 [s]':>19}{'RSS [MB]':>10}"
          f"{'steadystate [s]':>17}{'RSS [MB]':>10}")
    from math import comb

    for N in Ns:
        out = []
        for what in ("mesolve", "steadystate"):
            p = subprocess.run([sys.executable, "-c", _EXACT_CHILD, str(N), what],
                               capture_output=True, text=True, check=True)
            out.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(f"{N:>4}{comb(2 * N, N):>13,}{out[0]['t']:>19.2f}{out[0]['rss'] / 1024:>10.0f}"
              f"{out[1]['t']:>17.2f}{out[1]['rss'] / 1024:>10.0f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    ap.add_argument("--skip-qutip", action="store_true")
    ap.add_argument("--sections", default="n7,scaling,long,exact",
                    help="comma list of n7, scaling, long, exact")
    args = ap.parse_args(argv)
    sections = set(args.sections.split(","))
    header()
    if "n7" in sections:
        section_n7(200 if args.quick else 2000, 20_000 if args.quick else 200_000,
                   args.skip_qutip)
    if "scaling" in sections:
        section_scaling([5, 7, 9] if args.quick else [5, 7, 9, 11, 13],
                        10.0 if args.quick else 60.0, args.skip_qutip)
    if "long" in sections:
        section_long_chain(1000 if args.quick else 10_000)
    if "exact" in sections:
        section_exact([5, 7, 9] if args.quick else [5, 7, 9, 11])
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n# peak RSS of this process: {ru:.0f} MB")


if __name__ == "__main__":
    main()
