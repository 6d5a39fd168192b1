"""Benchmark: the Dask backend's start-up cost and parallel efficiency.

Problem: the paper's N = 7 pump chain (``paper_model("pump", N=7)``), 81
output times on [0, 20], observables j and m. For each ntraj (10^5 and 10^6;
``--quick``: 10^5 only) it prints

- the serial time (``backend="serial"``, this process, kernels loaded);
- a cold Dask run: ``mcsolve(n_jobs=W, cluster=Cluster(backend="dask"))`` in a fresh
  interpreter (kernels loaded), which starts a local cluster of W
  single-threaded worker processes for the run; and the Dask start-up split
  into cluster start (processes, scheduler, client), worker preparation
  (imports, kernel load, sector pack and initial path, code identity check,
  in parallel on every worker) and the delay to the first finished batch;
- a warm Dask run on a cluster that is already up (``client=``);
- efficiency = serial time / (W x Dask time) for both, and, as a control of
  what the machine offers at that moment, the efficiency of the threads
  backend (``n_jobs=W``, no processes, no start-up): on a machine shared with
  other work it bounds what any backend can reach.

Every Dask result is checked bit-identical to the serial one (the cold run's
by checksums of its table). Figures are printed; nothing is asserted. The
machine's other load shows up in them: run it on an idle machine for
publishable numbers.

    python scripts/bench_dask.py            # 10^5 and 10^6 (a few minutes)
    python scripts/bench_dask.py --quick    # 10^5 only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

import thermospin_mc as tsm
from thermospin_mc.trajectories import backends
from thermospin_mc.trajectories.batches import warm_kernels
from thermospin_mc.trajectories.worker import Job

TIMES = np.linspace(0.0, 20.0, 81)
OBS = ("j", "m")


def startup(model, workers: int) -> dict:
    """Start-up of the Dask backend, phase by phase (a run of 4 blocks)."""
    key = np.random.SeedSequence(1).generate_state(4, dtype=np.uint64)
    job = Job(model, TIMES, key, 256, OBS, False, False, model.N, 400)
    runner = backends.BACKENDS["dask"](backends.Cluster(backend="dask", n_jobs=workers), job)
    t0 = time.perf_counter()
    with runner:
        up = time.perf_counter()
        gen = runner.map(iter([[0], [1], [2], [3]]))
        first = None
        for item in gen:
            if item is not None and first is None:
                first = time.perf_counter() - up
        gen.close()
    return {"total_s": up - t0 + first, **runner.timings, "first_batch_s": first}


def cold_run(n: int, workers: int) -> None:
    """Child process: a Dask run on a local cluster started for it (as a user's first
    ``mcsolve(cluster=Cluster(backend="dask"))`` in a fresh interpreter, kernels
    already loaded); prints its wall time and the table's checksum."""
    model = tsm.paper_model("pump", N=7)
    warm_kernels()
    t0 = time.perf_counter()
    res = tsm.mcsolve(model, TIMES, ntraj=n, n_jobs=workers, seed=7, observables=OBS,
                      cluster=tsm.Cluster(backend="dask", progress=False))
    dt = time.perf_counter() - t0
    print(f"COLD {dt!r} {float(np.nansum(res.expect['mean'])).hex()} "
          f"{float(np.nansum(res.expect['sem'])).hex()}")


def same(a, b) -> bool:
    return all(np.array_equal(a.expect[c].to_numpy(), b.expect[c].to_numpy(), equal_nan=True)
               for c in ("mean", "sem", "ntraj"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10^5 trajectories only")
    ap.add_argument("--workers", type=int, default=2, help="Dask workers (default 2)")
    ap.add_argument("--cold", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cold:
        cold_run(args.cold, args.workers)
        return
    import distributed

    W = args.workers
    model = tsm.paper_model("pump", N=7)
    sizes = [10**5] if args.quick else [10**5, 10**6]
    print(f"# thermospin_mc {tsm.__version__}, dask.distributed {distributed.__version__}, "
          f"{os.cpu_count()} cores, {W} workers; N = 7 pump, {TIMES.size} times, j and m")
    compile_s = warm_kernels()
    print(f"# kernels loaded in this process in {compile_s:.2f} s (not counted below)")
    s = startup(model, W)
    print(f"\nDask start-up (local cluster, {W} workers): cluster {s['cluster_s']:.2f} s, "
          f"worker preparation {s['prepare_s']:.2f} s, first batch back after "
          f"{s['first_batch_s']:.2f} s more; total {s['total_s']:.2f} s")
    print("  (cluster up = scheduler and workers running; preparation = imports, kernel load, "
          "sector pack, initial path, code check)")
    kw = dict(seed=7, observables=OBS)
    print(f"\n{'ntraj':>9} {'serial s':>9} {'dask cold s':>12} {'eff cold':>9} "
          f"{'dask warm s':>12} {'eff warm':>9} {'eff threads':>12}  identical")
    cluster = distributed.LocalCluster(n_workers=W, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    client = distributed.Client(cluster)
    try:
        for n in sizes:
            t0 = time.perf_counter()
            ref = tsm.mcsolve(model, TIMES, ntraj=n, **kw, cluster=tsm.Cluster(backend="serial",
                                                                               progress=False))
            t_ser = time.perf_counter() - t0
            out = subprocess.run([sys.executable, __file__, "--cold", str(n), "--workers",
                                  str(W)], capture_output=True, text=True, check=True).stdout
            t_cold, smean, ssem = out.split("COLD ")[1].split()[:3]
            t_cold = float(t_cold)
            cold_ok = (smean == float(np.nansum(ref.expect["mean"])).hex()
                       and ssem == float(np.nansum(ref.expect["sem"])).hex())
            t0 = time.perf_counter()
            warm = tsm.mcsolve(model, TIMES, ntraj=n, **kw, cluster=tsm.Cluster(client=client,
                                                                                progress=False))
            t_warm = time.perf_counter() - t0
            t0 = time.perf_counter()
            thr = tsm.mcsolve(model, TIMES, ntraj=n, n_jobs=W, **kw,
                              cluster=tsm.Cluster(backend="threads", progress=False))
            t_thr = time.perf_counter() - t0
            ok = cold_ok and same(ref, warm) and same(ref, thr)
            print(f"{n:>9} {t_ser:>9.2f} {t_cold:>12.2f} {t_ser / (W * t_cold):>9.2f} "
                  f"{t_warm:>12.2f} {t_ser / (W * t_warm):>9.2f} {t_ser / (W * t_thr):>12.2f}"
                  f"  {'yes' if ok else 'NO'}", flush=True)
    finally:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
