"""The stage-by-stage paths of ``mesolve`` for a :class:`~thermospin_mc.physics.schedule.Schedule`.

A schedule (docs/model.md 14) evolves ``rho(t) = exp(L_k (t - t_k)) ... exp(L_0 t_1)
rho0``: :func:`stage_windows` cuts the output times into the stages that hold
them, and each path chains the stages' exact propagators, the state handed
from one stage to the next: :func:`schedule_pure` (one sector, the no-jump
``H_eff``), :func:`schedule_expm` (each stage's assembled generator and
``expm_multiply``) and :func:`schedule_chebyshev` (each stage's matrix-free
Chebyshev propagator). The jump counts of ``count`` are integrated across the
stages (rate 0 where a stage lacks a channel). The dispatch, checks and the
result table are :func:`~thermospin_mc.exact.solvers.mesolve`'s.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..core import observables as OBS
from ..core.blockstate import LayoutRows, check_states_memory, pure_rows
from ..core.sectors import SectorSpace
from ..physics.model import ChainModel
from ..physics.schedule import stage_of
from ._blockops import BlockGenerator
from .blocks import PureLayout, evolve_grid, feed_generator, nojump_generator
from .chebyshev import chebyshev_evolve

__all__ = ["stage_windows", "schedule_pure", "schedule_expm", "schedule_chebyshev"]


def stage_windows(dyn, times: np.ndarray) -> list[tuple]:
    """``(model_k, t_k, t_next, idx, rel)`` per dynamic stage: the output indices ``idx``
    with ``t_k <= t < t_next`` (the last stage: every later ``t``), the next stage's
    start (``None`` for the last) and the times to reach from ``t_k``: the outputs'
    and, but for the last stage, ``t_next``."""
    starts = np.array([t for t, _ in dyn])
    k_of = np.atleast_1d(stage_of(starts, times))
    out = []
    for k, (t_k, model) in enumerate(dyn):
        t_next = float(starts[k + 1]) if k + 1 < len(dyn) else None
        idx = np.nonzero(k_of == k)[0]
        rel = times[idx] - t_k
        if t_next is not None:
            rel = np.append(rel, t_next - t_k)
        out.append((model, float(t_k), t_next, idx, rel))
    return out


def schedule_pure(dyn, windows, times, names, ops, kept) -> list[dict]:
    """Pure path: one sector, ``psi' = -i H_eff psi`` stage by stage (closed stages:
    ``H_eff = h``); with losses from one magnon the missing norm is the all-up state."""
    space0 = SectorSpace(dyn[0][1])
    m0, psi = space0.initial_state()
    lost_to = 0 if m0 == 1 and any(m.has_kind("loss") for _, m in dyn) else None
    if kept is not None:
        check_states_memory(space0.N, [m0] + ([] if lost_to is None else [lost_to]),
                            times.size, "mesolve")
    layout = PureLayout(space0, m0, lost_to=lost_to)
    op_values, op_state = pure_rows(space0, ops, m0, lost_to)
    series = [None] * times.size
    for model, _t, _next, idx, rel in windows:
        space = space0 if model is dyn[0][1] else SectorSpace(model)
        gen = -1j * space.sector(m0).heff_sparse(space.a)
        for q, x in enumerate(evolve_grid(gen, psi, rel)):
            if q == idx.size:
                psi = x  # the next stage starts here
                continue
            series[idx[q]] = {**layout.observables(x, names), **op_values(x)}
            if kept is not None:
                kept[idx[q]] = op_state(x)
    return series


def _stage_rates(layout, model: ChainModel, channels) -> np.ndarray:
    """``count_rates`` of the schedule's ``channels`` in one stage (0 where it lacks one)."""
    own = {c.name: c for c in model.channels}
    R = np.zeros((len(channels), layout.size))
    for q, ch in enumerate(channels):
        if ch.name in own:
            R[q] = OBS.count_rates(layout, [own[ch.name]])[0]
    return R


def schedule_expm(dyn, layouts, windows, times, names, pairs, extras: LayoutRows, kept,
                  count, info) -> list[dict]:
    """Block path by ``expm_multiply`` of each stage's assembled generator (augmented by
    the jump rates of ``count``, integrated with the state across the stages)."""
    lay0, nch = layouts[0], len(count)
    x = np.concatenate([lay0.initial(dyn[0][1]), np.zeros(nch, dtype=complex)])
    series = [None] * times.size
    for (model, _t, _next, idx, rel), layout in zip(windows, layouts, strict=True):
        L = (nojump_generator(layout) + feed_generator(layout)).tocsr()
        if nch:
            R = sp.csr_matrix(_stage_rates(layout, model, count).astype(complex))
            L = sp.bmat([[L, None], [R, sp.csr_matrix((nch, nch), dtype=complex)]],
                        format="csr")
        for q, xa in enumerate(evolve_grid(L, x, rel)):
            if q == idx.size:
                x = xa
                continue
            rho = xa[:lay0.size]
            obs = lay0.observables(rho, names, pairs)
            obs.update(extras.values(rho))
            if nch:
                obs["count"] = xa[lay0.size:].real.copy()
            if kept is not None:
                kept[idx[q]] = extras.state(rho)
            series[idx[q]] = obs
    return series


def schedule_chebyshev(dyn, layouts, windows, times, names, pairs, extras: LayoutRows, kept,
                       count, info) -> list[dict]:
    """Block path by each stage's matrix-free Chebyshev propagator, the state handed
    from stage to stage (``chebyshev_evolve(..., on_final=...)``)."""
    lay0, nch, N = layouts[0], len(count), layouts[0].N
    lin = [n for n in names if n != "count"]
    if pairs is not None:  # observe runs once per term: build the pair maps once
        import functools

        lay0.space.pair_maps = functools.lru_cache(maxsize=None)(lay0.space.pair_maps)
    shapes = {}

    def observe(x):
        obs = lay0.observables(x, lin, pairs)
        if "m" in obs:  # N/2 - sum_m m p_m is affine: keep its linear part
            obs["m"] = obs["m"] - N / 2
        for n in lin:
            shapes[n] = obs[n].size
        return np.concatenate([obs[n] for n in lin] + [extras.linear(x)])

    x = lay0.initial(dyn[0][1])
    cnt = np.zeros(nch)
    series = [None] * times.size
    matvecs = segments = 0
    for (model, _t, t_next, idx, rel), layout in zip(windows, layouts, strict=True):
        R = sp.csr_matrix(_stage_rates(layout, model, count)) if nch else None
        end = {}
        on_state = None if kept is None else (
            lambda j, xs, idx=idx: kept.__setitem__(idx[j], extras.state(xs))
            if j < idx.size else None)
        on_final = None if t_next is None else (lambda xs, end=end: end.update(x=xs.copy()))
        vals, counts, run = chebyshev_evolve(BlockGenerator(layout), x, rel, observe, R,
                                             on_state=on_state, on_final=on_final)
        matvecs += run["matvecs"]
        segments += run["segments"]
        for q, i in enumerate(idx):
            obs, pos = {}, 0
            for n in lin:
                obs[n] = vals[q, pos:pos + shapes[n]].copy()
                pos += shapes[n]
            if "m" in obs:
                obs["m"] = obs["m"] + N / 2
            obs.update(extras.from_linear(vals[q, pos:]))
            if nch:
                obs["count"] = cnt + counts[q]
            series[i] = obs
        if t_next is not None:
            x = end["x"]
            if nch:
                cnt = cnt + counts[-1]
    info.update(matvecs=matvecs, segments=segments)
    return series
