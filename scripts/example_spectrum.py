"""Example: steady-state spectra of the paper's pump model (issue 22, docs/model.md 13).

The pump + edge-loss chain (linear profile T1 = 0, T2 = 2 eps0, gamma = 3.102,
gamma_I = 0.620, N = 7) in its steady state, with QuTiP's ``spectrum()``
convention ``S(omega) = 2 Re int_0^inf exp(-i omega tau) [<A(tau) B(0)> - <A><B>]
dtau`` computed exactly on the magnon blocks (``tsm.spectrum``):

- the magnon-density noise ``A = B = n_i`` at the cold edge (i = 1), the pump
  site (i = c) and the hot edge (i = N): how the occupation fluctuates and
  relaxes where magnons enter and leave;
- the spin-flip spectrum ``A = s+_c``, ``B = s-_c`` at the pump site: the
  coherence ``<s+_c(tau) s-_c(0)>`` of a magnon created at c, which lives in
  the coherence blocks (m + 1, m).

Writes ``data/spectrum_example.csv`` (columns ``omega``, ``S_n1``, ``S_n<c>``,
``S_n<N>``, ``S_pm<c>``) and ``data/spectrum_example.png``, and prints the wall
time, the spectra at omega = 0 and, when the package has ``relaxation_time``,
the relaxation time ``1 / g`` of the model.

    python scripts/example_spectrum.py                 # N = 7, 481 frequencies
    python scripts/example_spectrum.py --N 9 --points 241 --out /tmp
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import thermospin_mc as tsm

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=7, help="chain length (odd: central pump)")
    ap.add_argument("--points", type=int, default=481, help="number of frequencies")
    ap.add_argument("--wmax", type=float, default=12.0, help="frequencies in [-wmax, wmax]")
    ap.add_argument("--n-jobs", type=int, default=1, help="threads of the exact solver")
    ap.add_argument("--out", type=Path, default=ROOT / "data", help="output directory")
    args = ap.parse_args(argv)

    N = args.N
    c = (N + 1) // 2
    model = tsm.paper_model("pump", N=N)
    omegas = np.linspace(-args.wmax, args.wmax, args.points)
    pairs = {"S_n1": ("n1", "n1"), f"S_n{c}": (f"n{c}", f"n{c}"),
             f"S_n{N}": (f"n{N}", f"n{N}"), f"S_pm{c}": (f"+{c}", f"-{c}")}
    t0 = time.perf_counter()
    table = {"omega": omegas}
    for col, (A, B) in pairs.items():
        table[col] = tsm.spectrum(model, omegas, A, B, n_jobs=args.n_jobs)
    wall = time.perf_counter() - t0
    df = pd.DataFrame(table)
    args.out.mkdir(parents=True, exist_ok=True)
    csv = args.out / "spectrum_example.csv"
    df.to_csv(csv, index=False, float_format="%.10g")

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for col, label, st in (("S_n1", "site 1 (cold edge)", "C0--"),
                           (f"S_n{c}", f"site {c} (pump)", "k-"),
                           (f"S_n{N}", f"site {N} (hot edge)", "C3-.")):
        ax1.plot(omegas, df[col], st, label=label)
    ax1.set_xlabel(r"$\omega$ [$J_0$]")
    ax1.set_ylabel(r"$S_{n_i n_i}(\omega)$")
    ax1.set_title("magnon-density noise", fontsize=10)
    ax1.legend(fontsize=8)
    ax2.plot(omegas, df[f"S_pm{c}"], "k-")
    ax2.set_xlabel(r"$\omega$ [$J_0$]")
    ax2.set_ylabel(rf"$S_{{s^+_{c} s^-_{c}}}(\omega)$")
    ax2.set_title(f"spin-flip spectrum at the pump site {c}", fontsize=10)
    fig.suptitle(f"paper pump model, N = {N}, steady state", fontsize=10)
    fig.tight_layout()
    png = args.out / "spectrum_example.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    print(f"wrote {csv} and {png}: {len(pairs)} spectra x {omegas.size} frequencies "
          f"in {wall:.1f} s (n_jobs = {args.n_jobs})")
    i0 = int(np.argmin(np.abs(omegas)))
    print(f"omega = {omegas[i0]:.3g}: " + ", ".join(f"{col} = {df[col].iloc[i0]:.4f}"
                                                   for col in pairs))
    relax = getattr(tsm, "relaxation_time", None)
    if relax is not None:
        trel = relax(model)
        print(f"relaxation time 1/g = {trel:.3f} / J0 (g = {1.0 / trel:.3f} J0, the slowest "
              "decay rate of the block-diagonal dynamics: the density correlations decay "
              "on this time scale)")


if __name__ == "__main__":
    main()
