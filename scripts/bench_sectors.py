"""Benchmark: building the magnon sectors of long chains (the set-up of large-N runs).

For the paper's pump chain (linear profile Delta T = 2 eps0) it prints, per
sector ``m`` of chain length ``N``:

- ``basis`` and ``H_eff``: the sector's basis and its sparse ``H_eff`` as the
  package builds them (compiled colex enumeration, one-pass CSR assembly:
  ``thermospin_mc.core.sector_build``) against the general constructions of
  the same arrays measured in the same run (``itertools.combinations`` with a
  sort by colex rank; scipy's COO -> CSR conversion and the sparse difference
  ``h - (i/2) diag(decay)``), best of ``--repeat``; the arrays are checked
  equal, entry for entry;
- ``pack``: the whole sector set-up of the trajectory engine
  (``SectorPack.ensure``: the above, the Chebyshev range, parameters, packed
  operator, jump maps), in one pack that builds ``m = 0 .. M`` in order, as a
  run meets them (sectors ``m > N / 2`` read the range of ``N - m``).

    python scripts/bench_sectors.py                  # N = 21, m = 5 .. 11
    python scripts/bench_sectors.py --N 19 --m 4 5 6 7 8 9 --repeat 3

Figures are printed; nothing is asserted beyond the equality of the arrays.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from math import comb

import numpy as np
import scipy.sparse as sp


def _general_basis(space, m: int) -> np.ndarray:
    """The basis of sector ``m`` by ``itertools`` and a sort by colex rank."""
    N = space.N
    sites = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(N), m)),
                        dtype=np.int64, count=comb(N, m) * m).reshape(comb(N, m), m)
    return sites[np.argsort(space.rank(sites), kind="stable")]


def _general_heff(space, sec):
    """``H_eff`` of a sector by scipy's COO -> CSR conversion and sparse difference."""
    d = sec.dim
    rows = np.concatenate([np.arange(d), sec.hop_to, sec.hop_from])
    cols = np.concatenate([np.arange(d), sec.hop_from, sec.hop_to])
    vals = space.a[sec.hop_bond]
    h = sp.csr_matrix((np.concatenate([sec.diag, vals, vals]), (rows, cols)), shape=(d, d))
    return (h - 0.5j * sp.diags(sec.decay)).tocsr()


def _best(repeat: int, f, *a) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f(*a)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Sector set-up time of long chains.")
    ap.add_argument("--N", type=int, default=21, help="chain length (default: 21)")
    ap.add_argument("--m", type=int, nargs="+", default=list(range(5, 12)),
                    help="magnon numbers (default: 5 .. 11)")
    ap.add_argument("--repeat", type=int, default=2, help="best of (default: 2)")
    args = ap.parse_args(argv)
    import thermospin_mc as tsm
    from thermospin_mc.core.sector_build import colex_subsets
    from thermospin_mc.trajectories.sectorpack import SectorPack

    model = tsm.paper_model("pump", N=args.N, delta_T=2.0)
    colex_subsets(5, 2, 10)  # compile or load the kernels
    tsm.SectorSpace(tsm.paper_model("pump", N=5)).sector(2).heff_sparse(np.ones(4))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"N = {args.N}, paper pump chain; cores: {os.cpu_count()}, load average {load:.2f}")
    print(f"{'m':>3} {'dim':>9} {'nnz':>10} {'basis [s]':>10} {'general':>9} "
          f"{'H_eff [s]':>10} {'general':>9} {'pack [s]':>9}")
    pack = SectorPack(model, np.linspace(0.0, 20.0, 81))
    t_all = 0.0
    for m in range(0, max(args.m) + 1):
        t0 = time.perf_counter()
        pack.ensure(m)
        t_pack = time.perf_counter() - t0
        t_all += t_pack
        if m not in args.m:
            continue
        space = tsm.SectorSpace(model)
        sec = space.sector(m)
        t_b, sites = _best(args.repeat, colex_subsets, args.N, m, sec.dim)
        t_bg, sites_g = _best(args.repeat, _general_basis, space, m)
        t_h, H = _best(args.repeat, sec.heff_sparse, space.a)
        t_hg, H_g = _best(args.repeat, _general_heff, space, sec)
        assert np.array_equal(sites, sites_g) and np.array_equal(sites, sec.sites)
        assert (np.array_equal(H.indptr, H_g.indptr) and np.array_equal(H.indices, H_g.indices)
                and H.data.tobytes() == H_g.data.tobytes())
        print(f"{m:>3} {sec.dim:>9} {H.nnz:>10} {t_b:>10.3f} {t_bg:>9.3f} "
              f"{t_h:>10.3f} {t_hg:>9.3f} {t_pack:>9.3f}")
    print(f"pack, m = 0 .. {max(args.m)} in all: {t_all:.2f} s")


if __name__ == "__main__":
    main()
