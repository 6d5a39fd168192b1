"""A block stopped for a missing sector resumes where it stopped (issue 25).

The kernel reports a sector it has not got (``STATUS_NEED_SECTOR``) with the
number of trajectories of the block already folded; ``run_batch`` builds the
sector and resumes the block from the trajectory that stopped, instead of
running the whole block again (at N = 21 that discarded about a quarter of
the kernel time). A pack built on demand (many stops) must give the same bits
as a pack with every sector built beforehand (no stop): means, second
moments, counts, truncations, jump tables, kept rows and summed states.
"""

from __future__ import annotations

import numpy as np
import pytest

import thermospin_mc as tsm
from thermospin_mc.trajectories import kernels as K
from thermospin_mc.trajectories.batches import run_batch
from thermospin_mc.trajectories.sectorpack import SectorPack

TIMES = np.linspace(0.0, 6.0, 25)


def _chain(N=7):
    return tsm.ChainModel(N=N, profile=tsm.LinearProfile(T1=0.0, T2=2.0), anisotropy=0.7,
                          fields=np.linspace(0.0, 0.4, N),
                          channels=[tsm.Loss(site=1, rate=1.2), tsm.Pump(site=4, rate=0.9),
                                    tsm.Pump(site=N, rate=0.6), tsm.Dephasing(site=3, rate=0.3)],
                          initial=tsm.product_mixture([0.0, 0.5, 0.0, 0.7, 0.0, 0.3, 0.0]))


def _schedule():
    a = _chain()
    b = tsm.ChainModel(N=7, profile=tsm.BondCouplings((0.6, 1.4, 1.0, 1.1, 0.9, 1.2)),
                       channels=[tsm.Pump(site=4, rate=1.5), tsm.Loss(site=7, rate=0.8)],
                       initial=a.initial)
    return tsm.Schedule([(0.0, a), (2.2, b)])


CASES = {
    "paper_chebyshev": (lambda: tsm.paper_model("pump", N=7, delta_T=2.0), 1, {}),
    "paper_eigen": (lambda: tsm.paper_model("pump", N=7, delta_T=2.0), 100, {}),
    "product_start": (_chain, 2, {}),
    "magnon_cap": (lambda: tsm.paper_model("pump", N=7, delta_T=2.0), 1, {"max_magnons": 2}),
    "states": (lambda: tsm.paper_model("pump", N=7, delta_T=2.0), 1, {"states": True}),
    "schedule": (_schedule, 2, {}),
}


def _run(model, dense_max, prebuilt, max_magnons=7, states=False):
    pack = SectorPack(model, TIMES, dense_max=dense_max)
    if prebuilt:
        for row in range(len(pack.models) * (model.N + 1)):
            pack.ensure(row)
    stops = []
    real = K.run_block

    def counting(*args):
        res = real(*args)
        stops.append(res[0] == K.STATUS_NEED_SECTOR)
        return res

    key = np.random.SeedSequence(11).generate_state(4, dtype=np.uint64)
    K.run_block = counting
    try:
        blocks, _ = run_batch(model, TIMES, key, [0, 1], 150, ("j", "m", "n"), True, True,
                              max_magnons, dense_max=dense_max, pack=pack, states=states)
    finally:
        K.run_block = real
    return blocks, sum(stops)


@pytest.mark.parametrize("case", sorted(CASES))
def test_resumed_blocks_have_the_bits_of_uninterrupted_ones(case):
    make, dense_max, extra = CASES[case]
    model = make()
    got, stops = _run(model, dense_max, False, **extra)
    ref, none = _run(model, dense_max, True, **extra)
    assert stops >= 2 and none == 0  # the on-demand pack stopped (and resumed) blocks
    for a, b in zip(got, ref, strict=True):
        for key in ("cnt", "mean", "m2", "jumps", "kept", "rho"):
            if b[key] is None:
                assert a[key] is None
            else:
                assert np.array_equal(a[key], b[key], equal_nan=True), key
        assert a["ntrunc"] == b["ntrunc"]
    assert sum(b["jumps"].shape[0] for b in ref) > 200
    if "max_magnons" in extra:
        assert sum(b["ntrunc"] for b in ref) > 5
    if extra.get("states"):
        assert np.abs(ref[0]["rho"]).max() > 0
