"""Streaming statistics of a trajectory run: accumulators, the in-order reducer, the stop rule.

Reproducibility rule: trajectory ``k`` draws from the stream of ``(seed, k)``,
trajectories are folded into statistics blocks of ``batches.BLOCK`` consecutive
indices, and blocks are merged (:func:`merging.chan_merge`) strictly in block
order. Batches may finish in any order on any backend; the :class:`Reducer`
holds blocks that arrive early until the prefix before them is complete. Hence
any ``n_jobs``, batch size or backend gives bit-identical results, and with a
:class:`Target` the rule is tested after every merged block, so a run stops at
the smallest whole number of blocks that meets it (its result equals a plain
run with that ``ntraj``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import _validate as v
from ..core.errorbars import GROUPS
from ..core.merging import chan_merge, sem_from_m2
from .batches import BLOCK

__all__ = ["Accumulator", "GroupMeans", "Reducer", "Target", "DEFAULT_MAX_NTRAJ"]

#: Cap on the trajectories of a ``target_sem`` run when ``max_ntraj`` is not given.
DEFAULT_MAX_NTRAJ = 10**8


class Accumulator:
    """Per-(time, component) count, mean and sum of squared deviations.

    Merging is Chan's pairwise formula (:func:`merging.chan_merge`); merging in
    a fixed order gives bit-identical results however the blocks were computed.
    """

    def __init__(self, nt: int, ncomp: int):
        self.cnt = np.zeros(nt, dtype=np.int64)
        self.mean = np.zeros((nt, ncomp))
        self.m2 = np.zeros((nt, ncomp))

    def merge(self, cnt, mean, m2) -> None:
        self.mean, self.m2 = chan_merge(self.cnt[:, None], self.mean, self.m2, cnt[:, None],
                                        mean, m2)
        self.cnt = self.cnt + cnt

    def sem(self) -> np.ndarray:
        return sem_from_m2(self.cnt[:, None], self.m2)

    def state(self) -> dict:
        return {"cnt": self.cnt.copy(), "mean": self.mean.copy(), "m2": self.m2.copy()}

    def load(self, cnt, mean, m2) -> None:
        self.cnt = np.asarray(cnt).astype(np.int64)
        self.mean = np.asarray(mean).astype(np.float64)
        self.m2 = np.asarray(m2).astype(np.float64)


class GroupMeans:
    """Per-group trajectory counts and means of every (time, component).

    Block ``b`` joins group ``b mod GROUPS`` (:data:`errorbars.GROUPS`), in block
    order, so the groups are bit-identical for any backend, ``n_jobs`` or
    resume. The groups are independent samples of the same process: what the
    global goodness of fit (``Result.goodness_of_fit``) estimates the
    covariance between rows from.
    """

    def __init__(self, nt: int, ncomp: int, groups: int = GROUPS):
        self.cnt = np.zeros((groups, nt), dtype=np.int64)
        self.mean = np.zeros((groups, nt, ncomp))

    def merge(self, g: int, cnt, mean) -> None:
        na = self.cnt[g][:, None].astype(float)
        nb = np.asarray(cnt)[:, None].astype(float)
        n = na + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            self.mean[g] = self.mean[g] + (mean - self.mean[g]) * np.where(n > 0, nb / n, 0.0)
        self.cnt[g] = self.cnt[g] + cnt

    def load(self, cnt, mean) -> None:
        cnt, mean = np.asarray(cnt).astype(np.int64), np.asarray(mean).astype(np.float64)
        if cnt.shape != self.cnt.shape or mean.shape != self.mean.shape:
            raise ValueError(f"group statistics of shape {cnt.shape}, {mean.shape}, expected "
                             f"{self.cnt.shape}, {self.mean.shape}")
        self.cnt, self.mean = cnt, mean


class Reducer:
    """Merges blocks in block order; holds blocks that finish early.

    ``busy`` is true only while a merge is half done: an emergency checkpoint
    is written only from a consistent state. ``base`` is the state just
    before a short last block was merged (see :meth:`merge_next`); its
    on-disk form is owned by :mod:`thermospin_mc.trajectories.checkpoint`. With
    ``state_size > 0`` (``mcsolve(states=True)``), ``rho`` is the running sum
    of the blocks' sums of normalised states (``layouts.state_layout``), added in
    block order like the accumulators.
    """

    def __init__(self, nt: int, ncomp: int, cap: int, record_jumps: bool, keep: bool,
                 state_size: int = 0):
        self.nt, self.ncomp, self.cap = nt, ncomp, cap
        self.state_size = int(state_size)
        self.rho = np.zeros(self.state_size) if self.state_size else None
        self.nblocks = math.ceil(cap / BLOCK)
        self.record_jumps, self.keep = record_jumps, keep
        self.acc = Accumulator(nt, ncomp)
        self.groups = GroupMeans(nt, ncomp)
        self.next_block = 0
        self.ntraj = 0
        self.ntrunc = 0
        self.jumps: list = []
        self.kept: list = []
        self.pending: dict = {}
        self.modes: dict = {}
        self.busy = False
        self.base: dict | None = None
        self.restored = 0  # trajectories a loaded checkpoint held

    def block_size(self, b: int) -> int:
        return min(BLOCK, self.cap - b * BLOCK)

    def todo(self, per: int):
        """Unfinished block ids in index order, in lists of ``per`` (lazily)."""
        batch = []
        for b in range(self.next_block, self.nblocks):
            if b in self.pending:
                continue
            batch.append(b)
            if len(batch) == per:
                yield batch
                batch = []
        if batch:
            yield batch

    def offer(self, ids, blocks, modes) -> None:
        """Take a finished batch (any order; blocks already merged are ignored)."""
        self.modes.update(modes)
        for b, blk in zip(ids, blocks, strict=True):
            if b >= self.next_block and b not in self.pending and b < self.nblocks:
                blk["nb"] = self.block_size(b)
                self.pending[b] = blk

    def merge_next(self) -> int:
        """Merge the next block of the prefix (it must be pending); returns its size."""
        blk = self.pending[self.next_block]
        self.busy = True
        if blk["nb"] < BLOCK:
            # a short last block: keep the state before it, so that a later call
            # asking for more trajectories can drop it and run the block in full,
            # exactly as a plain run of the larger ntraj reduces it
            g = self.next_block % self.groups.cnt.shape[0]
            self.base = {**self.acc.state(), "ntrunc": self.ntrunc,
                         "njumps": sum(len(j) for j in self.jumps) if self.record_jumps
                         else 0,
                         "g_cnt": self.groups.cnt[g].copy(), "g_mean": self.groups.mean[g].copy(),
                         "rho": None if self.rho is None else self.rho.copy()}
        self.acc.merge(blk["cnt"], blk["mean"], blk["m2"])
        if self.rho is not None:
            self.rho += blk["rho"]
        self.groups.merge(self.next_block % self.groups.cnt.shape[0], blk["cnt"], blk["mean"])
        self.ntrunc += blk["ntrunc"]
        if self.record_jumps:
            self.jumps.append(blk["jumps"])
        if self.keep:
            self.kept.append(blk["kept"])
        self.ntraj += blk["nb"]
        del self.pending[self.next_block]
        self.next_block += 1
        self.busy = False
        return blk["nb"]

    def compact(self) -> None:
        """Join the recorded jump and trajectory rows into one array each."""
        if len(self.jumps) > 1:
            self.jumps = [np.concatenate(self.jumps)]
        if len(self.kept) > 1:
            self.kept = [np.concatenate(self.kept)]


# --------------------------------------------------------------------------- stopping
@dataclass(frozen=True)
class Target:
    """When a run stops: an accuracy target, a trajectory cap, a time limit, and
    (``max_magnons``) when a trajectory stops counting.

    ``sem=None`` is a plain run of ``ntraj`` trajectories (``time_limit`` may
    still end it early). With ``sem``, blocks are added (at least ``ntraj``
    trajectories) until the worst effective standard error of ``observables``
    over the rows with ``t > 0`` is ``<= sem`` (absolute), or every such row's
    is ``<= sem * |mean|`` (``relative``; rows below ``rel_floor`` times the
    observable's largest ``|mean|`` are left out), or ``max_ntraj`` is
    reached. ``max_magnons`` caps the magnon number: a trajectory whose next
    jump would exceed it stops contributing from that time on (default: the
    chain length, no cap). See ``mcsolve`` for the meaning of each field.
    Fields are validated on construction; :meth:`resolve` checks them against
    a run's observables and ``ntraj``, and the run checks ``max_magnons``
    against its model.
    """

    sem: float | None = None
    observables: tuple | None = None
    relative: bool = False
    rel_floor: float = 0.25
    max_ntraj: int | None = None
    time_limit: float | None = None
    max_magnons: int | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        if self.max_magnons is not None:
            set_(self, "max_magnons", v.integer("max_magnons", self.max_magnons, lo=0))
        if self.time_limit is not None:
            set_(self, "time_limit", v.real("time_limit", self.time_limit, lo=0.0,
                                            lo_open=True))
        if not isinstance(self.relative, (bool, np.bool_)):
            raise ValueError(f"relative must be True or False, got {self.relative!r}")
        set_(self, "relative", bool(self.relative))
        rel_floor = v.real("rel_floor", self.rel_floor, lo=0.0)
        if rel_floor >= 1.0:
            raise ValueError(f"rel_floor must be in [0, 1), got {rel_floor}")
        set_(self, "rel_floor", rel_floor)
        if self.sem is None:
            if self.observables is not None:
                raise ValueError("target_observables needs target_sem")
            if self.max_ntraj is not None:
                raise ValueError("max_ntraj only applies with target_sem (ntraj is the "
                                 "number of trajectories of a plain run)")
            if self.relative:
                raise ValueError("relative=True needs target_sem")
            return
        set_(self, "sem", v.real("target_sem", self.sem, lo=0.0, lo_open=True))
        if self.observables is not None:
            tn = ((self.observables,) if isinstance(self.observables, str)
                  else tuple(self.observables))
            if not tn:
                raise ValueError("target_observables must name at least one observable")
            set_(self, "observables", tn)
        if self.max_ntraj is not None:
            set_(self, "max_ntraj", v.integer("max_ntraj", self.max_ntraj, lo=1))

    def resolve(self, names: tuple, ntraj: int, operators=()) -> tuple[tuple, int]:
        """``(target observables, trajectory cap)`` of a run computing ``names`` and
        the user ``operators`` (named by ``op.name``; the ``_re``/``_im`` rows of a
        non-Hermitian one may be named too, but are not targeted by default: their
        operator is)."""
        names = tuple(names) + tuple(op.name for op in operators)
        parts = tuple(f"{op.name}_{p}" for op in operators if not op.hermitian
                      for p in ("re", "im"))
        if self.sem is None:
            return (), ntraj
        if self.observables is None:
            tn = tuple(n for n in names if n != "flow") or names
        else:
            for o in self.observables:
                if o not in names and o not in parts:
                    raise ValueError(f"target_observables must be among the computed "
                                     f"observables {names + tuple(parts)}, got {o!r}")
            tn = self.observables
        if self.max_ntraj is None:
            cap = DEFAULT_MAX_NTRAJ
        else:
            cap = v.integer("max_ntraj", self.max_ntraj, lo=ntraj)
        return tn, max(cap, ntraj)
