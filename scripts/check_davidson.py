"""Check the Davidson Liouvillian spectrum against the dense one on random chains.

Each chain is a random pump + loss chain (the builder of
``tests/test_relaxation.py``: couplings uniform in [0.3, 1.7], XXZ anisotropies
in [0, 2], fields in [-1, 1], one loss and one pump channel at random sites and
up to two more loss, pump or dephasing channels, rates in [0.2, 3]); chain
``seed`` has ``N = Ns[seed % len(Ns)]``. For each, ``liouvillian_spectrum(model,
k, method="davidson")`` is compared with ``method="dense"`` (every eigenvalue):
the real parts in order and the values as a multiset (a tie at the ``k``-th
value may be cut differently), each to ``tol * scale`` (``scale`` the spectral
bound, ``attrs["scale"]``), and the relaxation times to ``tol`` relative.

    python scripts/check_davidson.py                          # seeds 0-399, N = 4, 5, 6
    python scripts/check_davidson.py --seeds 1000 1008 --N 7  # a few at N = 7
    python scripts/check_davidson.py --list 17 203 --N 4 5 6  # given seeds only

Prints the count of disagreements, the worst cases and the Davidson cost;
exits 1 when any chain disagrees.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

# the random chains of the tests themselves (same builder, same draws): seeds found
# here can go straight into tests/test_relaxation.py
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from test_relaxation import random_model  # noqa: E402


def compare(lam: np.ndarray, ref: np.ndarray, tol: float) -> tuple[float, list]:
    """Largest error (in units of ``tol``'s base) of ``lam`` against the sorted
    ``ref`` (real parts in order; values matched as a multiset within ``ref[:k + 4]``)
    and the reference values among the first ``k`` that nothing matched."""
    k = lam.size
    err_re = float(np.abs(lam.real - ref[:k].real).max())
    pool = ref[:k + 4]
    C = np.abs(lam[:, None] - pool[None, :])
    rows, cols = linear_sum_assignment(C)
    err = max(err_re, float(C[rows, cols].max()))
    missed = [complex(ref[j]) for j in range(k) if j not in set(cols[C[rows, cols] <= tol])]
    return err, missed


def one(args) -> dict:
    seed, N, k, tol = args
    import thermospin_mc as tsm

    model = random_model(seed, N)
    dense = tsm.liouvillian_spectrum(model, k=k, method="dense")
    t0 = time.perf_counter()
    try:
        dav = tsm.liouvillian_spectrum(model, k=k, method="davidson")
        t1 = time.perf_counter()
        tau_d = tsm.relaxation_time(model, method="davidson")
    except RuntimeError as exc:  # no convergence: a disagreement, reported as such
        return {"seed": seed, "N": N, "err": np.inf, "missed": [], "tau_err": np.inf,
                "time": time.perf_counter() - t0, "iterations": -1, "size": 0,
                "found": np.zeros(0, complex), "ref": dense["re"].to_numpy()[:0],
                "error": str(exc)}
    tau_ref = tsm.relaxation_time(model, method="dense")
    scale = dense.attrs["scale"]
    full = tsm.liouvillian_spectrum(model, k=dense.attrs["size"], method="dense")
    ref = full["re"].to_numpy() + 1j * full["im"].to_numpy()
    lam = dav["re"].to_numpy() + 1j * dav["im"].to_numpy()
    err, missed = compare(lam, ref, tol * scale)
    tau_err = abs(tau_d - tau_ref) / tau_ref if np.isfinite(tau_ref) else abs(tau_d - tau_ref)
    return {"seed": seed, "N": N, "err": err / scale, "missed": missed, "tau_err": tau_err,
            "time": t1 - t0, "iterations": dav.attrs.get("iterations"), "size": dav.attrs["size"],
            "found": lam, "ref": ref[:k + 2]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs=2, default=[0, 400], metavar=("FIRST", "STOP"))
    ap.add_argument("--list", type=int, nargs="+", help="these seeds instead of a range")
    ap.add_argument("--N", type=int, nargs="+", default=[4, 5, 6])
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--worst", type=int, default=5)
    args = ap.parse_args()
    seeds = args.list if args.list else range(*args.seeds)
    jobs = [(s, args.N[s % len(args.N)], args.k, args.tol) for s in seeds]
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(args.procs) as pool:
        res = pool.map(one, jobs, chunksize=1)
    wall = time.perf_counter() - t0
    bad = [r for r in res if r["err"] > args.tol or r["tau_err"] > args.tol]
    print(f"{len(res)} chains (seeds {jobs[0][0]}..{jobs[-1][0]}, N = "
          f"{', '.join(map(str, args.N))}, k = {args.k}): {len(bad)} disagree with dense "
          f"beyond {args.tol:g} (scale); wall {wall:.0f} s on {args.procs} processes")
    for N in sorted(set(r["N"] for r in res)):
        t = np.array([r["time"] for r in res if r["N"] == N])
        its = np.array([r["iterations"] for r in res if r["N"] == N])
        print(f"  N = {N}: {t.size} chains, Davidson {t.mean():.2f} s mean, {t.max():.2f} s max;"
              f" iterations {its.mean():.0f} mean, {its.max()} max")
    print("  worst agreement among the others: "
          f"{max((r['err'] for r in res if r not in bad), default=0.0):.1e} (scale)")
    if bad:
        print("  disagreeing seeds: " + " ".join(str(r["seed"]) for r in bad))
    for r in res:
        if "error" in r:
            print(f"  seed {r['seed']} N = {r['N']}: {r['error']} ({r['time']:.0f} s)")
    worst = sorted(res, key=lambda r: -r["err"])[:args.worst]
    print("worst cases:")
    for r in worst:
        print(f"  seed {r['seed']:4d} N = {r['N']}: error {r['err']:.1e} (scale), 1/g rel "
              f"{r['tau_err']:.1e}, missed " +
              (", ".join(f"{z.real:.5f}{z.imag:+.5f}j" for z in r["missed"]) or "nothing"))
        if r["missed"]:
            print("      davidson: " + ", ".join(f"{z.real:.5f}{z.imag:+.5f}j" for z in r["found"]))
            print("      dense:    " + ", ".join(f"{z.real:.5f}{z.imag:+.5f}j" for z in r["ref"]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
