"""Example: a temperature pulse on the paper's pump + loss chain (docs/model.md 14).

The chain of Fig. 6 (N = 7, edge loss gamma = 3.102 at both ends, central pump
gamma_I = 0.620, initially all up) starts with a uniform temperature (Delta T =
0: no current); from t = 4 to t = 10 the right end is heated (linear profile,
Delta T = 2 eps0), then the chain is uniform again. As a protocol:

    tsm.Schedule([(0, cold), (4, hot), (10, cold)])

The total spin current j(t) and the magnetisation m(t) from quantum-jump
trajectories (``tsm.mcsolve(schedule, ...)``, mean +- 2 standard errors)
beside the exact solution (``tsm.mesolve(schedule, ...)``, the stages' exact
propagators chained). The dotted line is the same pulse switched smoothly
(sin^2 edges of length 1, ``Schedule.ramp`` with 40 steps per edge):
the staircase of a smooth protocol is accurate to O(step^2).

Writes ``data/protocol_example.png`` and prints the wall times and the largest
|z| of the trajectories against the exact solution. About 10 s on 2 cores
(plus the kernels' one-off compilation).

    python scripts/example_protocol.py                     # 20,000 trajectories
    python scripts/example_protocol.py --ntraj 5000 --out /tmp
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import thermospin_mc as tsm

ROOT = Path(__file__).resolve().parents[1]
T_ON, T_OFF, DT, RISE = 4.0, 10.0, 2.0, 1.0


def smooth_pulse(N: int, per_edge: int) -> tsm.Schedule:
    """The pulse with sin^2 edges of length ``RISE``, as one ramp over
    ``[T_ON, T_OFF + RISE]`` with ``per_edge`` steps per edge (the stages of the
    plateau are one model: the solvers merge them)."""
    def at(t):
        up = np.sin(0.5 * np.pi * np.clip((t - T_ON) / RISE, 0.0, 1.0)) ** 2
        down = np.cos(0.5 * np.pi * np.clip((t - T_OFF) / RISE, 0.0, 1.0)) ** 2
        return tsm.paper_model("pump", N=N, delta_T=DT * float(min(up, down)))

    steps = round(per_edge * (T_OFF + RISE - T_ON) / RISE)
    return tsm.Schedule.ramp(at, T_ON, T_OFF + RISE, steps)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=7, help="chain length (odd: central pump)")
    ap.add_argument("--ntraj", type=int, default=20_000, help="trajectories")
    ap.add_argument("--seed", type=int, default=2021, help="root seed")
    ap.add_argument("--n-jobs", type=int, default=-1, help="trajectory workers (-1: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "data", help="output directory")
    args = ap.parse_args(argv)

    cold = tsm.paper_model("pump", N=args.N, delta_T=0.0)
    hot = tsm.paper_model("pump", N=args.N, delta_T=DT)
    pulse = tsm.Schedule([(0.0, cold), (T_ON, hot), (T_OFF, cold)])
    times = np.linspace(0.0, 20.0, 81)

    t0 = time.perf_counter()
    traj = tsm.mcsolve(pulse, times, args.ntraj, seed=args.seed, n_jobs=args.n_jobs,
                       observables=["j", "m"], cluster=tsm.Cluster(progress=False))
    t_mc = time.perf_counter() - t0
    t0 = time.perf_counter()
    exact = tsm.mesolve(pulse, times, observables=["j", "m"])
    smooth = tsm.mesolve(smooth_pulse(args.N, 40), times, observables=["j", "m"])
    t_ex = time.perf_counter() - t0
    z = traj.compare(exact)["z"].abs().max()
    print(f"mcsolve: {args.ntraj} trajectories in {t_mc:.1f} s "
          f"(kernel compile/load {traj.metadata.get('compile_s', 0.0):.1f} s); "
          f"mesolve (both pulses): {t_ex:.2f} s; largest |z| = {z:.2f}")

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), sharex=True)
    for ax, name, label in zip(axes, ("j", "m"), ("total spin current $j$",
                                                  "magnetisation $m$"), strict=True):
        ax.axvspan(T_ON, T_OFF, color="C3", alpha=0.08, lw=0)
        mean, sem = traj.get(name)[:, 0], traj.get(name, "sem")[:, 0]
        ax.fill_between(times, mean - 2 * sem, mean + 2 * sem, color="C0", alpha=0.3, lw=0,
                        label=f"trajectories ({args.ntraj:,}), $\\pm 2$ s.e.")
        ax.plot(times, mean, "C0-", lw=1)
        ax.plot(times, exact.get(name)[:, 0], "k--", lw=1.2, label="exact (mesolve)")
        ax.plot(times, smooth.get(name)[:, 0], "C3:", lw=1.2,
                label="exact, smooth edges (ramp)")
        ax.set_xlabel(r"$t$ [$1/J_0$]")
        ax.set_title(label, fontsize=10)
    axes[1].legend(fontsize=7.5, loc="upper right")
    axes[0].text(0.5 * (T_ON + T_OFF), axes[0].get_ylim()[0], rf"$\Delta T = {DT:g}\,\epsilon_0$",
                 ha="center", va="bottom", fontsize=8, color="C3")
    fig.suptitle(f"temperature pulse on the pump + loss chain, N = {args.N}", fontsize=10)
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "protocol_example.png"
    fig.savefig(png, dpi=130)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
