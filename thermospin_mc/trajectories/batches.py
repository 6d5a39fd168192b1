"""Batch runs: the trajectory engine's worker side.

:func:`run_batch` runs whole statistics blocks of ``BLOCK`` trajectories on one
:class:`~thermospin_mc.trajectories.sectorpack.SectorPack` with
:func:`kernels.run_block` and returns their accumulators; with ``states=True``
every block also returns its sum of normalised states in the layout of
:func:`~thermospin_mc.trajectories.layouts.state_layout`. Every worker (thread,
loky process, Dask worker) keeps its packs in a small cache keyed by the run
(:func:`get_pack`), so a pack is built once per run and worker.
:func:`initial_draw` puts the initial state in the kernels' form and
:func:`warm_kernels` compiles the kernels.

This module is what the old path ``thermospin_mc.pack`` names: it re-exports the
public names of the sector packs, the Chebyshev parameters and the layouts.
"""

from __future__ import annotations

import threading
import time
from math import comb

import numpy as np

from ..core.sectors import SectorSpace
from ..physics.model import ChainModel
from . import kernels as K
from .chebyshev_params import (  # re-export
    CHEB_BH,
    CHEB_BH_OPT,
    CHEB_BYTES,
    CHEB_KMAX,
    CHEB_KMIN,
    CHEB_KOPT,
    cheb_params,
)
from .layouts import StateLayout, kernel_layout, state_blocks, state_layout
from .sectorpack import (  # re-export
    COND_LIMIT,
    DENSE_MAX,
    DOOB_DENSE_MAX,
    LARGE_MODES,
    PATH_BYTES,
    SectorPack,
    is_doob,
    operator_digest,
    operator_entries,
    run_spec,
)

__all__ = ["run_batch", "get_pack", "initial_draw", "warm_kernels", "BLOCK",
           # re-exported: the other public names of the old ``pack`` module
           "SectorPack", "run_spec", "operator_entries", "operator_digest", "is_doob",
           "DENSE_MAX", "LARGE_MODES", "COND_LIMIT", "PATH_BYTES", "DOOB_DENSE_MAX",
           "cheb_params", "CHEB_BYTES", "CHEB_KMIN", "CHEB_KMAX", "CHEB_BH", "CHEB_KOPT",
           "CHEB_BH_OPT", "kernel_layout", "StateLayout", "state_layout", "state_blocks"]

#: Trajectories per statistics block (the unit of the fixed reduction order).
BLOCK = 64


_PACKS: dict = {}
_PACKS_LOCK = threading.Lock()


def get_pack(model: ChainModel, times: np.ndarray, dense_max: int = DENSE_MAX,
             pairs=None, operators=()) -> SectorPack:
    """This process's pack of a run (built on first use, then shared by its threads).

    Keyed by the model fingerprint, the output times, ``dense_max``, the
    pairs and the operators (:func:`operator_digest`); at most four runs are kept.
    """
    pairs = np.zeros((0, 2), dtype=np.int64) if pairs is None else np.asarray(
        pairs, dtype=np.int64).reshape(-1, 2)
    key = (model.fingerprint(), times.tobytes(), dense_max, pairs.tobytes(),
           tuple(operator_digest(op) for op in operators))
    with _PACKS_LOCK:
        pack = _PACKS.get(key)
        if pack is None:
            if len(_PACKS) >= 4:
                _PACKS.clear()
            pack = SectorPack(model, times, dense_max, pairs, operators=operators)
            _PACKS[key] = pack
        return pack


def initial_draw(model: ChainModel, space: SectorSpace):
    """Kernel form of the initial state: ``(kind, m0, psi0, init_p, init_cfg, binom)``."""
    from ..physics.model import ProductMixture

    N = model.N
    binom = np.zeros((1, 1), dtype=np.int64)
    init_cfg = np.zeros((1, 2), dtype=np.int64)
    if is_doob(model):  # l^(1/2) psi0, normalised (tsm.doob)
        m0, psi0 = model.initial_state()
        return K.INIT_PURE, m0, np.asarray(psi0, dtype=complex), np.zeros(1), init_cfg, binom
    if not model.is_mixed:
        m0, psi0 = space.initial_state()
        return K.INIT_PURE, m0, psi0, np.zeros(1), init_cfg, binom
    m0 = model.initial_sectors[0]
    psi0 = np.zeros(1, dtype=complex)
    if isinstance(model.initial, ProductMixture):
        binom = np.array([[comb(n, k) for k in range(N + 2)] for n in range(N + 1)],
                         dtype=np.int64)
        return K.INIT_PRODUCT, m0, psi0, np.asarray(model.initial.p, dtype=float), \
            init_cfg, binom
    rows, w = [], []
    for m, wm in space.initial_mixture():
        for idx in np.flatnonzero(wm > 0):
            rows.append((m, idx))
            w.append(wm[idx])
    cum = np.cumsum(w)
    cum /= cum[-1]
    cum[-1] = 1.0
    return K.INIT_TABLE, m0, psi0, cum, np.array(rows, dtype=np.int64), binom


def run_batch(model: ChainModel, times: np.ndarray, key: np.ndarray, block_ids, ntraj: int,
              names: tuple, record_jumps: bool, keep: bool, max_magnons: int,
              dense_max: int = DENSE_MAX, pairs=None, pack: SectorPack | None = None,
              operators=(), states: bool = False):
    """Run whole statistics blocks; returns ``(blocks, sector modes)``.

    Block ``b`` holds trajectories ``b * BLOCK`` to ``min((b + 1) * BLOCK, ntraj) - 1``;
    each entry of ``blocks`` is a dict ``cnt, mean, m2`` (its Welford
    accumulators), ``ntrunc``, ``jumps``, ``kept`` and ``rho`` (the block's sum
    of normalised states in the :func:`state_layout` of the run, with
    ``states``) (or ``None``).
    """
    if pack is None:
        pack = get_pack(model, times, dense_max, pairs, operators)
    space = pack.space
    init_kind, m0, psi0, init_p, init_cfg, binom = initial_draw(model, space)
    pack.ensure(m0)
    flags, _, ncomp = kernel_layout(model.N, names, len(pack.pairs), len(model.channels),
                                    pack.operators, states)
    layout = state_layout(model, max_magnons) if states else None
    spec = run_spec(pack, key, flags, ncomp, max_magnons=max_magnons,
                    record_jumps=record_jumps, keep=keep, layout=layout)
    nt = times.size
    nrho = nt * layout.stride if states else 1
    if init_kind != K.INIT_PURE:
        # each trajectory starts from its own configuration: no shared path
        path = (np.zeros(0), np.arange(nt, dtype=np.int64),
                np.zeros((0, 1), dtype=np.complex128), np.zeros(0), np.zeros(0),
                np.zeros((nt, ncomp)), np.zeros((1, 1), dtype=np.complex128))
    out = []
    jump_cap = 4096
    for b in block_ids:
        t0 = b * BLOCK
        nb = min(BLOCK, ntraj - t0)
        buf = None
        while True:
            if init_kind == K.INIT_PURE:  # (builds the initial sector of every stage)
                path = pack.initial_path(m0, psi0, flags, ncomp)
            tables = pack.tables()
            start = K.Start(int(m0), psi0, int(init_kind), init_p, init_cfg, binom, *path)
            if buf is None:  # a fresh block
                buf = K.BlockOut(cnt=np.zeros(nt, dtype=np.int64), mean=np.zeros((nt, ncomp)),
                                 m2=np.zeros((nt, ncomp)),
                                 jump_buf=np.zeros((jump_cap if record_jumps else 1, 4)),
                                 kept=np.zeros((nb if keep else 1, nt, ncomp)),
                                 rho=np.zeros(nrho))
                done = nj = ntrunc = 0
            status, nj, trunc_call, need, done = K.run_block(tables, start, spec, t0, nb, buf,
                                                          done, nj)
            ntrunc += trunc_call
            if status == K.STATUS_NEED_SECTOR:
                # resume at the trajectory that needs the sector (the block's
                # first `done` trajectories are folded and stay); with states, the
                # stopped trajectory has added some already: run the block again
                pack.ensure(int(need))
                if flags[K.FLAG_STATE]:
                    buf = None
                continue
            if status == K.STATUS_JUMP_BUFFER_FULL:
                jump_cap *= 4
                buf = None
                continue
            break
        out.append({"cnt": buf.cnt, "mean": buf.mean, "m2": buf.m2, "ntrunc": int(ntrunc),
                    "jumps": buf.jump_buf[:nj].copy() if record_jumps else None,
                    "kept": buf.kept if keep else None, "rho": buf.rho if states else None})
    return out, pack.modes_copy()


# --------------------------------------------------------------------------- warm-up
_WARM = {"done": False}
_WARM_LOCK = threading.Lock()


def warm_kernels() -> float:
    """Compile (or load from numba's cache) the trajectory kernels; returns seconds.

    Runs one trajectory of a 3-site pump-and-loss chain, which calls every
    kernel entry point with the argument types of a real run, so that the
    compile time is paid (and measured) here rather than inside a run's clock.
    Returns 0 once the kernels are loaded in this process.
    """
    with _WARM_LOCK:
        if _WARM["done"]:
            return 0.0
        from ..physics.model import BondCouplings

        t0 = time.perf_counter()
        model = ChainModel(3, profile=BondCouplings((1.0, 1.25)), gamma=1.0, gamma_pump=0.5)
        times = np.linspace(0.0, 1.0, 3)
        key = np.random.SeedSequence(0).generate_state(4, dtype=np.uint64)
        pack = SectorPack(model, times)  # not cached: keeps the cache for real runs
        run_batch(model, times, key, [0], 1, ("j", "j_bond", "m", "n"), True, True, 3,
                  pack=pack)
        _WARM["done"] = True
        return time.perf_counter() - t0

