"""Benchmark: the cost of user operators and states in trajectory runs (issue 22).

Runs the paper's pump + loss chain (``paper_model("pump", N, delta_T=2)``, serial)
with the observables ``j, m`` alone, with ``n`` added, and with each operator of
``--operators`` added (``tsm.Operator.parse`` syntax), in alternation over
``--rounds`` rounds inside one process, and prints per configuration the best
and median CPU seconds and the extra cost over ``j, m`` per trajectory and
output time (best against best). CPU time (``time.process_time``) rather than
wall time, so that other load on a shared machine disturbs it less; still, run
it on a quiet machine and compare the medians too. With ``--states`` it also
times ``states=True`` against the same run without.

    python scripts/bench_operators.py                       # N = 7, 4000 traj, 401 times
    python scripts/bench_operators.py --N 9 --operators "z4" "x1 x3 + 0.5*z2" --states

Figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Cost of operators and states in mcsolve.")
    ap.add_argument("--N", type=int, default=7, help="chain length (default: 7)")
    ap.add_argument("--ntraj", type=int, default=4000, help="trajectories per run (4000)")
    ap.add_argument("--nt", type=int, default=401,
                    help="output times on [0, 20] (default: 401; many, so that the "
                         "per-output-time cost shows)")
    ap.add_argument("--rounds", type=int, default=10, help="alternation rounds (10)")
    ap.add_argument("--operators", nargs="+", default=["x1 x3 + 0.5*z2", "z4", "n3 n5"],
                    help="operators to time, one configuration each")
    ap.add_argument("--states", action="store_true", help="also time states=True")
    args = ap.parse_args(argv)

    import thermospin_mc as tsm

    N = args.N
    times = np.linspace(0.0, 20.0, args.nt)
    model = tsm.paper_model("pump", N=N, delta_T=2.0)
    configs = {"j, m": (["j", "m"], False), "j, m, n": (["j", "m", "n"], False)}
    for i, text in enumerate(args.operators):
        configs[f"j, m, '{text}'"] = (["j", "m", tsm.Operator.parse(text, N=N, name=f"op{i}")],
                                      False)
    if args.states:
        configs["j, m, states=True"] = (["j", "m"], True)
    for obs, states in configs.values():  # compile / load kernels, build packs
        tsm.mcsolve(model, times, ntraj=64, seed=1, observables=obs, states=states,
                    cluster=tsm.Cluster(progress=False))
    spent = {k: [] for k in configs}
    for r in range(args.rounds):
        for key, (obs, states) in configs.items():
            t0 = time.process_time()
            tsm.mcsolve(model, times, ntraj=args.ntraj, seed=r, observables=obs, states=states,
                        cluster=tsm.Cluster(progress=False))
            spent[key].append(time.process_time() - t0)
    base = min(spent["j, m"])
    print(f"N = {N}, {args.ntraj} trajectories, {args.nt} output times, {args.rounds} rounds "
          "(CPU seconds)")
    for key, vals in spent.items():
        extra = (min(vals) - base) / (args.ntraj * args.nt) * 1e9
        print(f"  {key:28s} best {min(vals):7.3f}  median {np.median(vals):7.3f}  "
              f"extra over 'j, m': {extra:7.1f} ns per trajectory and output time")


if __name__ == "__main__":
    main()
