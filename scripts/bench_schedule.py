"""Benchmark: the cost of stage boundaries in trajectory runs (issue 23, docs/model.md 14).

Runs the paper's pump + loss chain (``paper_model("pump", N, delta_T=2)``, serial,
t in [0, 20], 81 output times, observables ``j, m``) three ways, in alternation
over ``--rounds`` rounds inside one process:

- ``one stage``: the plain model;
- ``two stages``: ``Schedule([(0, a), (10, a')])``;
- ``ramp 50``: ``Schedule.ramp(model_at, 0, 20, 50)`` (50 stages of 0.4).

``a'`` and the ramp's models are the model with every coupling multiplied by
``1 + 1e-12 (1 + t)``: generators distinct for the engine (nothing is merged:
every stage has its own sector data and every trajectory crosses every
boundary), physically the same chain to 1e-12, so the jumps are the same and
the difference in cost is what the boundaries cost. Prints the best and median
CPU seconds per configuration and the ratios to one stage (best against best,
median against median). CPU time (``time.process_time``), so that other load
on a shared machine disturbs it less; run it on a quiet machine anyway.

    python scripts/bench_schedule.py                  # N = 7 and 11
    python scripts/bench_schedule.py --N 7 --ntraj 20000 --rounds 7

Targets of the issue: two stages at most 10% above one stage (N = 7, 11), the
50-step ramp at most 2x (N = 7). Figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def configs(N: int):
    import thermospin_mc as tsm

    a = tsm.paper_model("pump", N=N, delta_T=2.0)

    def scaled(t: float):
        return a.with_(profile=tsm.BondCouplings(tuple(a.couplings * (1.0 + 1e-12 * (1.0 + t)))))

    return {
        "one stage": a,
        "two stages": tsm.Schedule([(0.0, a), (10.0, scaled(10.0))]),
        "ramp 50": tsm.Schedule.ramp(scaled, 0.0, 20.0, 50),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Cost of stage boundaries in mcsolve.")
    ap.add_argument("--N", type=int, nargs="+", default=[7, 11], help="chain lengths (7 11)")
    ap.add_argument("--ntraj", type=int, nargs="+", default=None,
                    help="trajectories per run, one per N (default: 20000 at N <= 7, "
                         "2000 at N <= 11, else 200)")
    ap.add_argument("--rounds", type=int, default=5, help="alternation rounds (5)")
    args = ap.parse_args(argv)

    import thermospin_mc as tsm

    times = np.linspace(0.0, 20.0, 81)
    for i, N in enumerate(args.N):
        ntraj = (args.ntraj[min(i, len(args.ntraj) - 1)] if args.ntraj
                 else 20000 if N <= 7 else 2000 if N <= 11 else 200)
        runs = configs(N)
        for model in runs.values():  # compile / load kernels, build every stage's sectors
            tsm.mcsolve(model, times, ntraj=256, seed=0, observables=["j", "m"],
                        cluster=tsm.Cluster(progress=False))
        spent = {k: [] for k in runs}
        for r in range(args.rounds):
            for key, model in runs.items():
                t0 = time.process_time()
                tsm.mcsolve(model, times, ntraj=ntraj, seed=r + 1, observables=["j", "m"],
                            cluster=tsm.Cluster(progress=False))
                spent[key].append(time.process_time() - t0)
        base = spent["one stage"]
        print(f"N = {N}, {ntraj} trajectories, {args.rounds} rounds, serial (CPU seconds)")
        for key, s in spent.items():
            print(f"  {key:11s} best {min(s):8.3f}  median {np.median(s):8.3f}  "
                  f"ratio best {min(s) / min(base):5.3f}  median "
                  f"{np.median(s) / np.median(base):5.3f}  "
                  f"({ntraj / min(s):,.0f} traj/s best)")


if __name__ == "__main__":
    main()
