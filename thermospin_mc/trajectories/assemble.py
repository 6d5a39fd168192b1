"""Result assembly of a trajectory run, and the memory estimate of its states.

:func:`assemble` turns a finished :class:`~thermospin_mc.trajectories.stats.Reducer` into the
run's :class:`~thermospin_mc.core.results.Result` (the table, per-row second
moments, trajectory groups, jump table, kept rows, states, metadata), reading
the column layout of the run's :class:`~thermospin_mc.trajectories.runrecord.RunRecord`.
:func:`states_memory` estimates what ``states=True`` holds at once, and
:func:`check_states_memory` refuses a run above the one budget of states.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core import observables as OBS
from ..core.blockstate import BlockState, states_budget
from ..core.results import Result
from ..core.tables import expect_table, metadata, table_values
from ..physics.schedule import is_schedule, stage_of
from .batches import BLOCK
from .layouts import StateLayout, state_blocks
from .runrecord import RunRecord
from .stats import Reducer

__all__ = ["assemble", "states_memory", "check_states_memory"]


def states_memory(layout: StateLayout, nt: int, backend: str, workers: int,
                  per: int) -> tuple[int, int]:
    """``(bytes, copies)``: the memory estimate of ``mcsolve(states=True)``.

    The kernels accumulate the states as packed upper triangles:
    ``sum_m C(N, m) (C(N, m) + 1) / 2`` complex numbers per output time over the
    sectors the run can visit (:class:`layouts.StateLayout`), one copy. Copies
    held at once: the reducer's sum and one per statistics block in flight or
    waiting to be merged in block order (``per`` blocks per batch; one batch
    at a time on the serial backend, otherwise up to ``2 x workers`` batches
    in flight, Dask at least 4, and as many finished early); besides, the
    result's full blocks, ``sum_m C(N, m)^2`` complex numbers per output time.
    ``copies`` counts the packed copies.
    """
    if backend == "serial":
        blocks = per
    else:
        window = max(4, 2 * workers) if backend == "dask" else 2 * workers
        blocks = 2 * window * per
    copies = 1 + blocks
    return layout.nbytes(nt) * copies + layout.result_nbytes(nt), copies


def check_states_memory(layout: StateLayout, nt: int, backend: str, workers: int,
                         per: int) -> None:
    """Refuse (one line) a ``states=True`` run whose estimate exceeds the one budget of
    states, :func:`blockstate.states_budget` (``min(2 GiB, RAM / 4)``)."""
    need, copies = states_memory(layout, nt, backend, workers, per)
    budget = states_budget()
    if need > budget:
        gib = 2.0**30
        raise ValueError(
            f"states=True of mcsolve needs about {need / gib:.3g} GiB ({nt} times x "
            f"({copies} packed copies of {layout.stride // 2} complex numbers, the upper "
            f"triangles of sectors {list(layout.sectors)}, with {workers} {backend} "
            f"worker(s), and the result's full blocks)), above the budget of "
            f"{budget / gib:.3g} GiB (min(2 GiB, RAM/4)); use fewer output times, a smaller "
            "max_magnons, fewer n_jobs or a smaller batch_size")


def _jump_table(red: Reducer, model) -> pd.DataFrame:
    """The run's jumps ``traj, t, channel, site, m_before`` (and ``stage``)."""
    arr = np.concatenate(red.jumps) if red.jumps else np.zeros((0, 4))
    chans = model.channels
    names_ = np.array([c.name for c in chans] or ["none"])
    sites_ = np.array([c.site + 1 for c in chans] or [0])
    ch_idx = arr[:, 2].astype(np.int64)
    jt = pd.DataFrame({
        "traj": arr[:, 0].astype(np.int64), "t": arr[:, 1],
        "channel": names_[ch_idx] if arr.size else np.array([], dtype=str),
        "site": sites_[ch_idx] if arr.size else np.array([], dtype=np.int64),
        "m_before": arr[:, 3].astype(np.int64),
    })
    if is_schedule(model):  # the stage whose propagator reached the jump (t_k < t)
        jt["stage"] = np.asarray(stage_of(model.times, arr[:, 1], side="left"),
                                 dtype=np.int64)
    jt["channel"] = jt["channel"].astype(str)
    return jt


def _columns(name_cols: dict, names, ops, values: np.ndarray, half_a) -> dict:
    """``{table observable: (nt, ncomp) values}`` of the computed observables and the
    operators' rows from ``values`` ``(nt, kernel columns)`` (``flow``: ``half_a``
    times its ``j_bond`` columns; ``half_a`` squared for second moments is the
    caller's)."""
    out = {}
    for name in names:
        mu = values[:, name_cols[OBS.source(name)]]
        out[name] = mu * half_a if name == "flow" else mu
    for op in ops:
        sl = name_cols[op.name]
        for i, row in enumerate(OBS.operator_rows(op)):
            out[row] = values[:, sl.start + i:sl.start + i + 1]
    return out


def assemble(run: RunRecord, red: Reducer, elapsed: float, n_jobs: int,
             extra: dict) -> Result:
    """The run's :class:`Result`: table, per-row ``m2``, jumps, kept rows, states, metadata."""
    job = run.job
    model, times, names, cols, pairs = job.model, job.times, job.names, run.cols, job.pairs
    entropy, layout, ops = run.entropy, run.layout, tuple(job.operators)
    acc, ntraj = red.acc, red.ntraj
    sem = acc.sem()
    half_a = OBS.flow_factors(model, times)
    means = _columns(cols, names, ops, acc.mean, half_a)
    sems = _columns(cols, names, ops, sem, half_a)
    m2s = _columns(cols, names, ops, acc.m2, half_a * half_a)
    for name, mu in means.items():  # no trajectory left (max_magnons)
        means[name] = np.where(acc.cnt[:, None] > 0, mu, np.nan)
    df = expect_table(times, model.N, means, sems, ntraj=ntraj, pairs=pairs,
                      channels=model.channels, operators=ops)
    # per-row count of contributing trajectories (differs only under max_magnons)
    # (expect_table lays rows out as one block of all times per component, so the
    # counts repeat by position; times may repeat, so never match them by label)
    if np.any(acc.cnt != ntraj):
        df["ntraj"] = np.tile(acc.cnt, len(df) // times.size).astype(np.int64)
    meta = metadata(
        "mcsolve", model, seed=entropy if isinstance(entropy, int) else list(entropy),
        ntraj=ntraj, block=BLOCK,
        sector_modes={str(k): val for k, val in sorted(red.modes.items())},
        truncated_fraction=red.ntrunc / ntraj, elapsed_s=elapsed, n_jobs=n_jobs,
        t_end=float(times[-1]), n_times=int(times.size))
    if pairs is not None and len(pairs):
        meta["pairs"] = np.asarray(pairs).tolist()
    if ops:
        meta["operators"] = [op.to_dict() for op in ops]
    if layout is not None:
        meta["state_sectors"] = list(layout.sectors)
    meta.update(extra)
    jt = _jump_table(red, model) if job.record_jumps else None
    traj = None
    if red.kept:
        traj = {"rows": np.concatenate(red.kept)[:ntraj],
                "columns": {k: (s.start, s.stop) for k, s in cols.items()}}
    m2 = table_values(times, model.N, m2s, pairs, model.channels, operators=ops)
    states = None
    if layout is not None:
        states = [BlockState(model.N, blocks)
                  for blocks in state_blocks(red.rho, layout, times.size, ntraj)]
    return Result(df, meta, jumps=jt, trajectories=traj, m2=m2,
                  groups=_group_table(red, model, times, names, cols, pairs, ops),
                  states=states)


def _group_table(red: Reducer, model, times, names, cols, pairs, operators=()) -> dict:
    """The run's trajectory groups in ``expect`` row order: ``count``, ``mean`` ``(G, rows)``."""
    grp = red.groups
    half_a = OBS.flow_factors(model, times)
    counts, means = [], []
    for g in range(grp.cnt.shape[0]):
        vals = _columns(cols, names, operators, grp.mean[g], half_a)
        cnts = {k: np.broadcast_to(grp.cnt[g][:, None], mu.shape) for k, mu in vals.items()}
        means.append(table_values(times, model.N, vals, pairs, model.channels,
                                  operators=operators))
        counts.append(table_values(times, model.N, cnts, pairs, model.channels,
                                   operators=operators))
    return {"count": np.array(counts).astype(np.int64), "mean": np.array(means)}
