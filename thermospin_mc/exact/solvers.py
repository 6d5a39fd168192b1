"""Exact solvers in sector-block form: closed evolution, Lindblad evolution,
steady state and exit-side probabilities.

The density matrix started in one magnon sector stays block diagonal in the
magnon number (docs/model.md section 6), so only the blocks ``rho_m`` of the sectors
the dynamics can reach are stored: ``sum_m C(N, m)^2`` numbers, never ``4^N``.
Block ``m`` obeys

    d rho_m / dt = -i (H_m rho_m - rho_m H_m^+) + sum_k r_k P_k rho_{m'} P_k^T,

with ``H_m`` the non-Hermitian ``H_eff`` of the sector, ``m' = m + 1`` for a
loss channel and ``m - 1`` for the pump, and ``P_k`` the 0/1 index map of the
channel. Blocks are stored row-major and stacked in increasing ``m``.

- ``sesolve``: closed system, pure state, exact via ``eigh`` of the sector ``h``.
- ``mesolve``: small problems assemble the block Liouvillian as a sparse matrix
  and take its exact action ``expm(L t) v`` (scipy's ``expm_multiply``,
  truncation to double precision); above ``CHEBYSHEV_MIN_SIZE`` stored numbers
  the generator is applied matrix-free and ``exp(L t)`` expanded in Chebyshev
  polynomials with a-posteriori truncation (:mod:`._blockops`, memory a few
  copies of the blocks, all output times from one expansion); a pump-free
  model started with at most one magnon only needs the no-jump path of its
  one-magnon sector (the rest is the lost population), which runs for chains
  of any length.
- ``steadystate``: ``L x = 0`` with unit trace, either by a sparse direct solve
  (small problems) or by GMRES on the matrix-free generator, left-preconditioned
  with the exact inverse of the block no-jump part plus the jumps of the
  weaker direction (block triangular in ``m``: one sweep of exact block solves
  ``-i(H X - X H^+) = Y`` in the eigenbasis of ``H``, Schur-based fallback when
  that basis is ill-conditioned).
- ``exit_probabilities``: expected number of losses on each edge, integrated to
  infinite time (for one magnon: the probability to leave left or right).

Every solver also evaluates a user's magnon-conserving operators (rows after the
built-in observables) and keeps the block density matrices on request
(``states=True``, :class:`~thermospin_mc.blockstate.BlockState`) on each of its paths.

``mesolve`` and ``sesolve`` also take a :class:`~thermospin_mc.schedule.Schedule`
(docs/model.md 14): the stages' exact propagators chained on the same three paths
(``_mesolve_schedule``); a schedule of one generator runs the plain solver.
The solvers of one generator (steady state, exit sides) refuse a schedule
(:func:`~thermospin_mc.blocks.check_model`).

Length: about 760 lines, above the ~500 guideline: the solvers share the
resolution of observables, operators and states, and each of mesolve's three
paths (closed, no-jump, block generator) carries them through, for one model
and, stage by stage, for a schedule; splitting the schedule paths off would
move those shared helpers into a module of their own for one caller.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .. import _validate as v
from .._threads import blas_threads
from ..core import observables as OBS
from ..core.blockstate import LayoutRows, check_states_memory, pure_rows
from ..core.observables import OBSERVABLES
from ..core.results import Result, expect_table
from ..core.results import metadata as result_metadata
from ..core.sectors import SectorSpace
from ..physics.model import ChainModel
from ..physics.schedule import Schedule, stage_of
from ._blockops import BlockGenerator, chebyshev_evolve
from .blocks import (
    BlockLayout,
    PureLayout,
    check_model,
    evolve_grid,
    feed_generator,
    liouvillian,
    nojump_generator,
    refuse_trapped,
    solve_in_block,
    stack,
)
from .blocksolve import BorderedSolver, NoJumpInverse

__all__ = ["sesolve", "mesolve", "steadystate", "exit_probabilities", "BlockLayout", "liouvillian"]

#: Above this many stored numbers the steady state switches from a sparse
#: direct solve to preconditioned GMRES (fill-in of the direct solve grows fast).
DIRECT_STEADY_LIMIT = 1_000

#: Above this many stored numbers mesolve switches from ``expm_multiply`` of the
#: assembled generator to the matrix-free Chebyshev propagator (both exact to
#: round-off; the crossover is a measured timing).
CHEBYSHEV_MIN_SIZE = 20_000


def _metadata(model: ChainModel, solver: str, **extra) -> dict:
    return result_metadata(solver, model, ntraj=0, **extra)


def _check_observables(observables, pairs=None, N: int = 2, count: bool = True,
                       solver: str = ""):
    """``(names, pairs, operators)`` by the one resolver
    :func:`thermospin_mc.observables.resolve` after
    :func:`~thermospin_mc.observables.split_operators` (``pairs`` stays None when
    none are given; ``names`` is empty when only operators are asked for)."""
    plain, ops = OBS.split_operators(observables, N)
    allowed = OBSERVABLES if count else tuple(o for o in OBSERVABLES if o != "count")
    if plain == () and ops:
        checked = OBS.check_pairs(pairs, N)
        return (), (None if pairs is None else checked), ops
    names, checked = OBS.resolve(plain, pairs, N, allowed=allowed,
                                 default=OBS.DEFAULT + ("norm",), solver=solver)
    return names, (None if pairs is None else checked), ops


def _check_states(states) -> bool:
    if not isinstance(states, (bool, np.bool_)):
        raise ValueError(f"states must be True or False, got {states!r}")
    return bool(states)


def _operator_extra(ops) -> dict:
    """Metadata of operator rows (``meta["operators"]``, read by the error-bar floors)."""
    return {"operators": [op.to_dict() for op in ops]} if ops else {}


def _op_rows(ops) -> list[str]:
    return [row for op in ops for row in OBS.operator_rows(op)]


# ---------------------------------------------------------------------------- sesolve
def sesolve(model: ChainModel, times, observables=None, states: bool = False) -> Result:
    """Exact evolution of the closed chain (channels ignored) from the initial state.

    Parameters
    ----------
    model : ChainModel
        Its ``initial`` state is prepared at ``t = 0``; jump channels are ignored.
    times : array_like
        Non-decreasing output times ``>= 0``. The initial state is the state
        at ``t = 0`` whatever ``times[0]`` is (QuTiP takes it at ``times[0]``):
        ``times = [5, 10]`` reports the state evolved from ``t = 0`` to 5 and
        10 (docs/model.md section 6, "Time origin").
    observables : sequence of str and Operator, optional
        Subset of ``j, j_bond, flow, m, n, norm`` (default: all) and
        magnon-conserving :class:`~thermospin_mc.operators.Operator` objects (rows
        ``name``, or ``name_re`` and ``name_im``, site 0, after the others).
    states : bool
        Keep the state of every output time as a
        :class:`~thermospin_mc.blockstate.BlockState` (``Result.states``).

    Returns
    -------
    Result
        ``.expect`` with ``sem = 0``, ``ntraj = 0``.

    Notes
    -----
    A :class:`~thermospin_mc.schedule.Schedule` evolves with each stage's
    Hamiltonian in turn (channels ignored), by :func:`mesolve`'s pure-state
    path; a schedule of one Hamiltonian gives this function's own result.
    """
    if isinstance(model, Schedule):
        return _sesolve_schedule(model, times, observables, states)
    model = check_model(model, "sesolve")
    times = v.times(times)
    names, _, ops = _check_observables(observables, None, model.N, count=False,
                                       solver="sesolve")
    states = _check_states(states)
    if model.is_mixed:
        raise ValueError("sesolve needs a pure initial state, got a mixture; use mesolve")
    closed = model.with_(gamma=0.0, gamma_pump=0.0) if model.channels else model
    space = SectorSpace(closed)
    m0, psi0 = space.initial_state()
    if states:
        check_states_memory(model.N, [m0], times.size, "sesolve")
    layout = PureLayout(space, m0)
    op_values, op_state = pure_rows(space, ops, m0, None)
    E, V = np.linalg.eigh(space.sector(m0).h_sparse(space.a).toarray())
    c0 = V.conj().T @ psi0
    series, kept = [], []
    for t in times:
        psi = V @ (np.exp(-1j * E * t) * c0)
        series.append({**layout.observables(psi, names), **op_values(psi)})
        if states:
            kept.append(op_state(psi))
    means = stack(series, [*names, *_op_rows(ops)])
    return Result(expect_table(times, model.N, means, operators=ops),
                  _metadata(model, "sesolve", **_operator_extra(ops)),
                  states=kept if states else None)


# ---------------------------------------------------------------------------- mesolve
@blas_threads
def mesolve(model: ChainModel, times, observables=None, pairs=None,
            method: str = "auto", states: bool = False) -> Result:
    """Exact Lindblad evolution of the block density matrix.

    Parameters
    ----------
    model : ChainModel
        The initial state (pure, or a site-diagonal mixture spanning several
        sectors) is prepared at ``t = 0``.
    times : array_like
        Non-decreasing output times ``>= 0``. The initial state is the state
        at ``t = 0`` whatever ``times[0]`` is (QuTiP takes it at ``times[0]``):
        ``times = [5, 10]`` reports the state evolved from ``t = 0`` to 5 and
        10 (docs/model.md section 6, "Time origin").
    observables : sequence of str and Operator, optional
        Subset of ``j, j_bond, flow, m, n, norm, nn, pm_re, pm_im, count``
        (``pm`` for both parts; default ``j, j_bond, flow, m, n, norm``, plus the
        two-point ones when ``pairs`` are given). ``count``: expected number of
        jumps of each channel in ``[0, t]``, ``int_0^t rate_k Tr(L_k^+ L_k rho)``,
        integrated exactly with the state (table rows ``count:<channel name>``).
        Magnon-conserving :class:`~thermospin_mc.operators.Operator` objects give
        the rows ``name`` (Hermitian) or ``name_re`` and ``name_im``, site 0,
        after the built-in ones, ``sum_m Tr(O_m rho_m)``; with operators only, only
        their rows.
    pairs : sequence of (i, k), optional
        1-based site pairs of ``nn`` and ``pm``.
    method : {"auto", "expm", "chebyshev"}
        ``expm``: the assembled sparse block Liouvillian and scipy's
        ``expm_multiply``; ``chebyshev``: the matrix-free generator and a
        Chebyshev expansion of ``exp(L t)`` with a-posteriori truncation
        (:mod:`thermospin_mc._blockops`). ``auto``: ``expm`` up to
        ``CHEBYSHEV_MIN_SIZE`` stored numbers, ``chebyshev`` above.
    states : bool
        Keep the block density matrix of every output time as a
        :class:`~thermospin_mc.blockstate.BlockState` (``Result.states``).
        Refused (one line) when they would take more than
        :func:`~thermospin_mc.blockstate.states_budget` (2 GiB or a quarter of
        the memory): ``16 * len(times) * sum_m C(N, m)^2`` bytes.

    Returns
    -------
    Result
        ``.expect`` with ``sem = 0`` and ``ntraj = 0``.

    Notes
    -----
    Memory is ``sum_m C(N, m)^2`` complex numbers over the reachable sectors
    (``chebyshev``: about six copies of them; ``expm``: plus the sparse
    generator, about 2N nonzeros per stored number); a
    model with loss channels only, started with at most one magnon, costs
    ``O(N^2)`` and runs for N in the thousands.

    ``model`` may be a :class:`~thermospin_mc.schedule.Schedule` (docs/model.md 14):
    ``rho(t) = exp(L_k (t - t_k)) ... exp(L_0 t_1) rho0``, stage by stage on
    the same paths (every option above works). ``flow`` takes the couplings
    of the stage holding at each output time (``schedule.model_at(t)``);
    ``count`` has a row for every channel of the schedule (rate 0 where a
    stage lacks it); the metadata records every stage. A schedule whose
    stages before ``times[-1]`` are one model gives that model's result bit
    for bit.
    """
    if isinstance(model, Schedule):
        return _mesolve_schedule(model, times, observables, pairs, method, states)
    model = check_model(model, "mesolve")
    times = v.times(times)
    names, pairs, ops = _check_observables(observables, pairs, model.N, solver="mesolve")
    states = _check_states(states)
    if method not in ("auto", "expm", "chebyshev"):
        raise ValueError(f"method must be 'auto', 'expm' or 'chebyshev', got {method!r}")
    extra = {} if pairs is None else {"pairs": np.asarray(pairs).tolist()}
    extra.update(_operator_extra(ops))
    simple = pairs is None and "count" not in names and not model.is_mixed
    if model.is_closed and simple:
        res = sesolve(model, times, [*names, *ops], states=states)
        return res.replace(metadata={**res.metadata, "solver": "mesolve"})
    space = SectorSpace(model)
    only_loss = all(ch.kind == "loss" for ch in model.channels)
    kept = []
    if simple and only_loss and model.initial_sector <= 1:
        # rho_1(t) = psi~ psi~^+ (no-jump path), the rest sits in the all-up state
        m0, psi0 = space.initial_state()
        lost_to = 0 if m0 == 1 else None
        if states:
            check_states_memory(model.N, [m0] + ([] if lost_to is None else [lost_to]),
                                times.size, "mesolve")
        layout = PureLayout(space, m0, lost_to=lost_to)
        op_values, op_state = pure_rows(space, ops, m0, lost_to)
        gen = -1j * space.sector(m0).heff_sparse(space.a)
        series = []
        for psi in evolve_grid(gen, psi0, times):
            series.append({**layout.observables(psi, names), **op_values(psi)})
            if states:
                kept.append(op_state(psi))
    else:
        layout = BlockLayout(space, model.reachable_sectors())
        if states:
            check_states_memory(model.N, layout.sectors, times.size, "mesolve")
        if method == "auto":
            method = "expm" if layout.size <= CHEBYSHEV_MIN_SIZE else "chebyshev"
        extra["method"] = method
        extras = LayoutRows(layout, ops)
        if method == "chebyshev":
            series = _mesolve_chebyshev(model, layout, times, names, pairs, extra, extras,
                                        kept if states else None)
        else:
            series = _mesolve_expm(model, layout, times, names, pairs, extras,
                                   kept if states else None)
    means = stack(series, [*names, *_op_rows(ops)])
    return Result(expect_table(times, model.N, means, pairs=pairs, channels=model.channels,
                               operators=ops),
                  _metadata(model, "mesolve", **extra), states=kept if states else None)


def _mesolve_expm(model, layout, times, names, pairs, extras: LayoutRows,
                  kept: list | None) -> list[dict]:
    """Observables at ``times`` by ``expm_multiply`` of the assembled generator
    (operator rows and, into ``kept``, the states by ``extras``)."""
    L = (nojump_generator(layout) + feed_generator(layout)).tocsr()
    x0 = layout.initial(model)
    nch = len(model.channels) if "count" in names else 0
    if nch:
        # augmented generator: d c_k / dt = rate_k Tr(L_k^+ L_k rho), c_k(0) = 0
        R = sp.csr_matrix(OBS.count_rates(layout, model.channels).astype(complex))
        L = sp.bmat([[L, None], [R, sp.csr_matrix((nch, nch), dtype=complex)]],
                    format="csr")
        x0 = np.concatenate([x0, np.zeros(nch, dtype=complex)])
    series = []
    for x in evolve_grid(L, x0, times):
        rho = x[:layout.size]
        obs = layout.observables(rho, names, pairs)
        obs.update(extras.values(rho))
        if nch:
            obs["count"] = x[layout.size:].real.copy()
        if kept is not None:
            kept.append(extras.state(rho))
        series.append(obs)
    return series


def _mesolve_chebyshev(model, layout, times, names, pairs, info: dict, extras: LayoutRows,
                       kept: list | None) -> list[dict]:
    """Observables at ``times`` by the matrix-free Chebyshev propagator (operator rows
    and, into ``kept``, the states by ``extras``)."""
    gen = BlockGenerator(layout)
    lin = [n for n in names if n != "count"]
    if pairs is not None:  # observe runs once per term: build the pair maps once
        import functools

        layout.space.pair_maps = functools.lru_cache(maxsize=None)(layout.space.pair_maps)
    shapes = {}
    N = model.N

    def observe(x):
        obs = layout.observables(x, lin, pairs)
        if "m" in obs:  # N/2 - sum_m m p_m is affine: keep its linear part
            obs["m"] = obs["m"] - N / 2
        for n in lin:
            shapes[n] = obs[n].size
        parts = [obs[n] for n in lin] + [extras.linear(x)]
        return np.concatenate(parts)

    R = None
    if "count" in names:
        R = sp.csr_matrix(OBS.count_rates(layout, model.channels))
    states = {}
    on_state = None if kept is None else (lambda j, x: states.__setitem__(j, extras.state(x)))
    vals, counts, run = chebyshev_evolve(gen, layout.initial(model), times, observe, R,
                                         on_state=on_state)
    info.update(run)
    series = []
    for i in range(times.size):
        obs, pos = {}, 0
        for n in lin:
            obs[n] = vals[i, pos:pos + shapes[n]].copy()
            pos += shapes[n]
        if "m" in obs:
            obs["m"] = obs["m"] + N / 2
        obs.update(extras.from_linear(vals[i, pos:]))
        if R is not None:
            obs["count"] = counts[i].copy()
        series.append(obs)
    if kept is not None:
        kept.extend(states[i] for i in range(times.size))
    return series


# ---------------------------------------------------------------------------- schedules
def _sesolve_schedule(schedule: Schedule, times, observables, states) -> Result:
    """``sesolve`` of a schedule: each stage's Hamiltonian in turn (channels ignored)."""
    names, _, ops = _check_observables(observables, None, schedule.N, count=False,
                                       solver="sesolve")
    if schedule.is_mixed:
        raise ValueError("sesolve needs a pure initial state, got a mixture; use mesolve")
    closed = Schedule([(t, m.with_(gamma=0.0, gamma_pump=0.0) if m.channels else m)
                       for t, m in schedule.stages])
    res = _mesolve_schedule(closed, times, [*names, *ops], None, "auto", states)
    return res.replace(metadata={**res.metadata, "solver": "sesolve",
                                 "model": schedule.to_dict()})


def _mesolve_schedule(schedule: Schedule, times, observables, pairs, method,
                      states) -> Result:
    """``mesolve`` of a schedule (docs/model.md 14): the stages' exact propagators in turn,
    on the paths of the plain solver (pure no-jump state, ``expm``, Chebyshev)."""
    N = schedule.N
    times = v.times(times)
    names, pairs, ops = _check_observables(observables, pairs, N, solver="mesolve")
    states = _check_states(states)
    if method not in ("auto", "expm", "chebyshev"):
        raise ValueError(f"method must be 'auto', 'expm' or 'chebyshev', got {method!r}")
    dyn = schedule.dynamic_stages(float(times[-1]))
    first = dyn[0][1]
    held = {int(k) for k in np.atleast_1d(stage_of(schedule.times, times))}
    same_flow = all(np.array_equal(schedule.stages[k][1].couplings, first.couplings)
                    for k in held)
    same_channels = [c.name for c in schedule.channels] == [c.name for c in first.channels]
    if (len(dyn) == 1 and ("flow" not in names or same_flow)
            and ("count" not in names or same_channels)):
        # one generator up to the last output: the plain solver, bit for bit
        res = mesolve.__wrapped__(first, times, observables, pairs, method, states)
        return res.replace(metadata={**res.metadata, "model": schedule.to_dict(),
                                     "alpha_method": schedule.alpha_method})
    extra = {} if pairs is None else {"pairs": np.asarray(pairs).tolist()}
    extra.update(_operator_extra(ops))
    # flow is (a_l / 2) j_l with the couplings of the stage holding at t: compute j_bond
    inner = list(dict.fromkeys("j_bond" if n == "flow" else n for n in names))
    windows = _stage_windows(dyn, times)
    kept = [None] * times.size if states else None
    simple = pairs is None and "count" not in names and not schedule.is_mixed
    only_loss = all(ch.kind == "loss" for _, m in dyn for ch in m.channels)
    if simple and (all(m.is_closed for _, m in dyn)
                   or (only_loss and first.initial_sector <= 1)):
        series = _schedule_pure(dyn, windows, times, inner, ops, kept)
    else:
        secs = first.initial_sectors
        lo = 0 if any(m.has_kind("loss") for _, m in dyn) else secs[0]
        hi = N if any(m.has_kind("pump") for _, m in dyn) else secs[-1]
        layouts = [BlockLayout(SectorSpace(m), list(range(lo, hi + 1))) for _, m in dyn]
        if states:
            check_states_memory(N, layouts[0].sectors, times.size, "mesolve")
        if method == "auto":
            method = "expm" if layouts[0].size <= CHEBYSHEV_MIN_SIZE else "chebyshev"
        extra["method"] = method
        count = schedule.channels if "count" in names else ()
        run = (_schedule_chebyshev if method == "chebyshev" else _schedule_expm)
        series = run(dyn, layouts, windows, times, inner, pairs, LayoutRows(layouts[0], ops),
                     kept, count, extra)
    if "flow" in names:
        k_of = np.atleast_1d(stage_of(schedule.times, times))
        for obs, k in zip(series, k_of, strict=True):
            obs["flow"] = OBS.flow_factor(schedule.stages[int(k)][1].couplings) * obs["j_bond"]
    means = stack(series, [*names, *_op_rows(ops)])
    return Result(expect_table(times, N, means, pairs=pairs, channels=schedule.channels,
                               operators=ops),
                  _metadata(schedule, "mesolve", **extra), states=kept)


def _stage_windows(dyn, times: np.ndarray) -> list[tuple]:
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


def _schedule_pure(dyn, windows, times, names, ops, kept) -> list[dict]:
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


def _schedule_expm(dyn, layouts, windows, times, names, pairs, extras: LayoutRows, kept,
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


def _schedule_chebyshev(dyn, layouts, windows, times, names, pairs, extras: LayoutRows, kept,
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


# ---------------------------------------------------------------------------- steady state
@blas_threads
def steadystate(model: ChainModel, observables=None, method: str = "auto",
                tol: float = 1e-13, pairs=None, states: bool = False) -> Result:
    """Exact steady state of the Lindblad equation.

    Parameters
    ----------
    model : ChainModel
        Must have a loss or a pump channel (dephasing alone conserves the
        magnon number, so the steady state is not unique). With losses only
        the steady state is the all-up state, with pumps only the all-down
        state (after checking that no magnons stay trapped); with both, the
        sectors ``0..N`` are solved.
    observables : sequence of str and Operator, optional
        Subset of ``j, j_bond, flow, m, n, norm, nn, pm_re, pm_im`` (``pm`` for
        both parts; default ``j, j_bond, flow, m, n, norm``, plus the two-point
        ones when ``pairs`` are given), and magnon-conserving
        :class:`~thermospin_mc.operators.Operator` objects (rows ``name``, or
        ``name_re`` and ``name_im``, site 0, after the built-in ones).
    method : {"auto", "direct", "gmres"}
        ``direct``: sparse LU of the bordered Liouvillian; ``gmres``: GMRES left-
        preconditioned with the exact inverse of the no-jump part plus the
        jumps of the weaker direction (:class:`~thermospin_mc.blocksolve.BorderedSolver`;
        its Krylov basis holds at most ``blocksolve.GMRES_BASIS_BYTES``). ``auto``
        picks direct below ``DIRECT_STEADY_LIMIT`` stored numbers.
    tol : float
        Relative residual target of the iterative solve.

    pairs : sequence of (i, k), optional
        1-based site pairs of ``nn`` and ``pm``.
    states : bool
        Also return the steady state as a
        :class:`~thermospin_mc.blockstate.BlockState` (``Result.states[0]``; the
        same blocks as ``Result.blocks``).

    Returns
    -------
    Result
        ``.expect`` at ``t = inf`` with ``sem = 0``.
    """
    model = check_model(model, "steadystate")
    names, pairs, ops = _check_observables(observables, pairs, model.N, count=False,
                                           solver="steadystate")
    states = _check_states(states)
    if method not in ("auto", "direct", "gmres"):
        raise ValueError(f"method must be 'auto', 'direct' or 'gmres', got {method!r}")
    tol = v.real("tol", tol, lo=0.0, lo_open=True, hi=1e-3)
    if model.is_closed:
        raise ValueError("steadystate needs jump channels (gamma > 0 or gamma_pump > 0); "
                         "a closed chain has no unique steady state")
    has_loss, has_pump = model.has_kind("loss"), model.has_kind("pump")
    if not (has_loss or has_pump):
        raise ValueError("steadystate needs a loss or a pump channel: with dephasing only the "
                         "magnon number is conserved and the steady state is not unique")
    space = SectorSpace(model)
    secs0 = model.initial_sectors
    if not has_pump:
        # loss only: magnons only leave, so everything ends all up unless a sector
        # holds a state that never loses its magnons
        refuse_trapped(space, range(max(secs0[-1], 1), 0, -1), model, max_dim=2000)
        sectors = [0]
    elif not has_loss:
        # pump only: magnons are never removed, so everything ends all down unless a
        # lower sector holds a state that the pumps never leave
        refuse_trapped(space, range(secs0[0], model.N), model)
        sectors = [model.N]
    else:
        sectors = list(range(model.N + 1))
    layout = BlockLayout(space, sectors)
    info = {}
    if len(sectors) == 1:
        x = layout.pure(sectors[0], np.ones(1, dtype=complex))
    else:
        if method == "auto":
            method = "direct" if layout.size <= DIRECT_STEADY_LIMIT else "gmres"
        trace = layout.trace()
        gen = None
        if method == "direct":
            e = np.zeros(layout.size, dtype=complex)
            e[layout.offsets[sectors[0]]] = 1.0  # the (0, 0) element of the lowest block
            L = (nojump_generator(layout) + feed_generator(layout)).tocsr()
            # bordered system L x + e (t.x) = e has the unique solution x_ss
            Lb = (L + sp.csr_matrix(np.outer(e, trace)) if layout.size < 2000
                  else L + sp.csr_matrix(e[:, None]) @ sp.csr_matrix(trace[None, :]))
            x = spla.spsolve(Lb.tocsc(), e)
            if not np.all(np.isfinite(x)):
                raise ValueError("the steady state is not unique for this model (singular "
                                 "Liouvillian: a dark state or a conserved quantity)")
        else:
            solver = BorderedSolver(layout, model.channels, tol)
            gen = solver.gen
            x = solver.steady_state()  # its own border: the sweep's first block
            info["gmres_iterations"] = solver.iterations[0]
        x = x / (trace @ x)
        for m in sectors:  # enforce Hermiticity (removes round-off only)
            B = layout.block(x, m)
            B[...] = 0.5 * (B + B.conj().T)
        info["method"] = method
        r = (gen or BlockGenerator(layout)).apply(x)
        info["residual"] = float(np.linalg.norm(r) / max(np.linalg.norm(x), 1e-300))
    extras = LayoutRows(layout, ops)
    obs = layout.observables(x, names, pairs)
    obs.update(extras.values(x))
    means = {k: np.atleast_1d(val)[None, :] for k, val in obs.items()}
    if pairs is not None:
        info["pairs"] = np.asarray(pairs).tolist()
    info.update(_operator_extra(ops))
    return Result(expect_table(np.array([np.inf]), model.N, means, pairs=pairs, operators=ops),
                  _metadata(model, "steadystate", **info),
                  blocks={m: layout.block(x, m).copy() for m in sectors},
                  states=[extras.state(x)] if states else None)


# ---------------------------------------------------------------------------- exit sides
@blas_threads
def exit_probabilities(model: ChainModel) -> pd.Series:
    """Expected number of jumps of each loss channel, integrated to infinite time.

    For a pump-free model started with one magnon every trajectory ends with
    exactly one loss, so the values are the probabilities that the magnon
    leaves through each loss channel (``loss_left`` / ``loss_right`` for the
    paper's edge loss); they sum to 1. With ``m`` initial magnons they sum to
    ``m`` (for a mixture: to the mean initial magnon number).

    Computed exactly: ``X = int_0^inf rho(t) dt`` solves ``L X = -rho(0)`` on the
    sectors ``m >= 1``, which (without a pump) is block triangular, solved from
    the top sector down: with the exact no-jump inverse, or, with dephasing
    (whose jumps stay inside a block), with the in-block generator.

    Returns
    -------
    pandas.Series
        Indexed by the loss channel names, in channel order.
    """
    model = check_model(model, "exit_probabilities")
    if model.has_kind("pump"):
        raise ValueError(f"exit_probabilities needs gamma_pump = 0 (a pump never lets the "
                         f"chain empty), got gamma_pump = {model.gamma_pump}"
                         if not model.explicit_channels else
                         "exit_probabilities needs a model without pump channels (a pump "
                         "never lets the chain empty)")
    losses = [ch for ch in model.channels if ch.kind == "loss"]
    if not losses:
        raise ValueError(f"exit_probabilities needs edge loss gamma > 0, got {model.gamma}"
                         if not model.explicit_channels else
                         "exit_probabilities needs at least one loss channel")
    space = SectorSpace(model)
    out = {ch.name: 0.0 for ch in losses}
    top = model.initial_sectors[-1]
    if top == 0:
        return pd.Series(out, name="expected_losses")
    sectors = list(range(1, top + 1))
    layout = BlockLayout(space, sectors)
    F = feed_generator(layout)
    rho0 = layout.initial(model, drop=(0,))  # all up: nothing left to lose
    dephasing = model.has_kind("dephasing")
    Ainv = None if dephasing else NoJumpInverse(layout)
    x = np.zeros(layout.size, dtype=complex)
    carry = np.zeros(layout.size, dtype=complex)
    # triangular sweep: L_m X_m = -(rho0_m + feed from X_{m+1}), from the top down
    for m in range(top, 0, -1):
        d, o = layout.dims[m], layout.offsets[m]
        keep = np.zeros(layout.size, dtype=bool)
        keep[o:o + d * d] = True
        src = -(rho0[o:o + d * d] + carry[o:o + d * d])  # Hermitian, as is the solution
        xm = np.zeros(layout.size, dtype=complex)
        if Ainv is not None:
            Ainv.solve_block(m, src.reshape(d, d), out=xm[o:o + d * d].reshape(d, d),
                             hermitian=True)
        else:
            xm[o:o + d * d] = solve_in_block(layout, m, src)
        x += xm
        carry = F @ xm
        carry[keep] = 0.0  # the in-block (dephasing) part is already in the block solve
    for ch in losses:
        tot = 0.0
        for m in sectors:
            occ = (space.sector(m).sites == ch.site).any(axis=1)
            tot += ch.rate * layout.block(x, m).diagonal().real[occ].sum()
        out[ch.name] = tot
    return pd.Series(out, name="expected_losses")
