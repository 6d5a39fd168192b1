"""Memory and throughput probe of a long streamed trajectory run.

Runs ``ntraj`` trajectories (default 10^6) of the paper's pump + loss scenario
(N = 7, 81 output times on [0, 20]) with streamed statistics (no jump records,
no kept trajectories) and prints the throughput and the peak resident memory
of this process and of every worker process (loky or a local Dask cluster).

    python scripts/probe_memory.py                       # 10^6 trajectories, all cores
    python scripts/probe_memory.py --ntraj 100000 --n-jobs 2
    python scripts/probe_memory.py --backend dask --n-jobs 2 --json

Peak RSS (per process) is the kernel's high-water mark (``VmHWM`` in ``/proc/<pid>/status``)
where available, otherwise the largest value seen by a 0.1 s sampler (psutil).
With ``--json`` the last line is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import numpy as np
import psutil

MB = 2**20


def _hwm(pid: int) -> int | None:
    """Peak resident set size of ``pid`` in bytes (Linux), else None."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    """Track the peak RSS of this process and of each descendant, and the peak of
    their summed PSS (RSS double-counts the shared libraries of every process)."""

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        self.interval = interval
        self.me = psutil.Process()
        self.peak: dict[int, int] = {}
        self.first: dict[int, int] = {}
        self.peak_total = 0
        self._halt = threading.Event()

    def sample(self) -> None:
        total = 0
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                rss = proc.memory_info().rss
                # proportional set size: shared library pages split between processes
                pss = getattr(proc.memory_full_info(), "pss", rss)
            except psutil.Error:
                continue
            hwm = _hwm(proc.pid) or 0
            self.first.setdefault(proc.pid, rss)
            self.peak[proc.pid] = max(self.peak.get(proc.pid, 0), rss, hwm)
            total += pss
        self.peak_total = max(self.peak_total, total)

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self.sample()
        self._halt.set()
        self.join()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ntraj", type=int, default=1_000_000)
    p.add_argument("--n-jobs", type=int, default=-1)
    p.add_argument("--N", type=int, default=7)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--backend", choices=("serial", "threads", "loky", "dask"), default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--checkpoint", default=None, help="also checkpoint to this file")
    p.add_argument("--json", action="store_true", help="print the figures as JSON last")
    args = p.parse_args(argv)

    import thermospin_mc as tsm

    model = tsm.paper_model("pump", N=args.N, delta_T=2.0)
    times = np.linspace(0.0, 20.0, 81)
    # compile/load kernels
    tsm.mcsolve(model, times, ntraj=64, seed=0, cluster=tsm.Cluster(progress=False))
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    res = tsm.mcsolve(model, times, ntraj=args.ntraj, seed=args.seed, n_jobs=args.n_jobs,
                      checkpoint=tsm.Checkpointing(path=args.checkpoint),
                      cluster=tsm.Cluster(backend=args.backend,
                                                    batch_size=args.batch_size, progress=False))
    wall = time.perf_counter() - t0
    sampler.stop()
    me = os.getpid()
    workers = {pid: b for pid, b in sampler.peak.items() if pid != me}
    fig = {
        "ntraj": res.metadata["ntraj"], "N": args.N, "backend": res.metadata["backend"],
        "n_jobs": res.metadata["n_jobs"], "wall_s": wall,
        "traj_per_s": res.metadata["ntraj"] / wall,
        "peak_rss_parent_mb": sampler.peak.get(me, 0) / MB,
        "peak_rss_worker_max_mb": max(workers.values(), default=0) / MB,
        "peak_pss_total_mb": sampler.peak_total / MB, "n_child_processes": len(workers),
        "parent_growth_mb": (sampler.peak.get(me, 0) - sampler.first.get(me, 0)) / MB,
    }
    print(f"thermospin_mc {tsm.__version__}: {fig['ntraj']} trajectories, N = {args.N}, "
          f"backend {fig['backend']} with {fig['n_jobs']} workers")
    print(f"  wall time        {wall:10.2f} s")
    print(f"  throughput       {fig['traj_per_s']:10.0f} trajectories/s")
    print(f"  peak RSS parent  {fig['peak_rss_parent_mb']:10.1f} MB")
    print(f"  peak RSS worker  {fig['peak_rss_worker_max_mb']:10.1f} MB (largest of "
          f"{len(workers)} child processes)")
    print(f"  peak PSS total   {fig['peak_pss_total_mb']:10.1f} MB (sampled sum over all "
          "processes, shared pages split)")
    print(f"  parent growth    {fig['parent_growth_mb']:10.1f} MB (peak RSS - RSS at start "
          "of the run: the streamed statistics do not grow with ntraj)")
    if args.json:
        print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
