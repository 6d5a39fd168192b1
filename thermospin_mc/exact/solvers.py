"""Exact time evolution in sector-block form: closed evolution and Lindblad evolution.

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
  polynomials with a-posteriori truncation (:mod:`.chebyshev`, memory a few
  copies of the blocks, all output times from one expansion); a pump-free
  model started with at most one magnon only needs the no-jump path of its
  one-magnon sector (the rest is the lost population), which runs for chains
  of any length.

The solvers at infinite time, ``steadystate`` and ``exit_probabilities``
(:mod:`.steady`), are re-exported here, with ``BlockLayout`` and
``liouvillian`` (:mod:`.blocks`).

Every solver also evaluates a user's magnon-conserving operators (rows after the
built-in observables) and keeps the block density matrices on request
(``states=True``, :class:`~thermospin_mc.core.blockstate.BlockState`) on each of its paths;
the arguments are resolved alike by :mod:`.solver_inputs`.

``mesolve`` and ``sesolve`` also take a :class:`~thermospin_mc.physics.schedule.Schedule`
(docs/model.md 14): the stages' exact propagators chained on the same three paths
(``_mesolve_schedule``, the paths in :mod:`.schedule_paths`); a schedule of one
generator runs the plain solver.
The solvers of one generator (steady state, exit sides) refuse a schedule
(:func:`~thermospin_mc.exact.blocks.check_model`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .. import _validate as v
from .._threads import blas_threads
from ..core import observables as OBS
from ..core.blockstate import LayoutRows, check_states_memory, pure_rows
from ..core.results import Result
from ..core.sectors import SectorSpace
from ..core.tables import expect_table
from ..physics.model import ChainModel
from ..physics.schedule import Schedule, stage_of
from ._blockops import BlockGenerator
from .blocks import (
    BlockLayout,
    PureLayout,
    check_model,
    evolve_grid,
    feed_generator,
    liouvillian,  # re-export
    nojump_generator,
    stack,
)
from .chebyshev import chebyshev_evolve
from .schedule_paths import schedule_chebyshev, schedule_expm, schedule_pure, stage_windows
from .solver_inputs import (
    check_observables,
    check_states,
    operator_metadata,
    operator_row_names,
    solver_metadata,
)
from .steady import DIRECT_STEADY_LIMIT, exit_probabilities, steadystate  # re-export

__all__ = ["sesolve", "mesolve", "steadystate", "exit_probabilities", "BlockLayout", "liouvillian",
           "DIRECT_STEADY_LIMIT"]

#: Above this many stored numbers mesolve switches from ``expm_multiply`` of the
#: assembled generator to the matrix-free Chebyshev propagator (both exact to
#: round-off; the crossover is a measured timing).
CHEBYSHEV_MIN_SIZE = 20_000


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
        magnon-conserving :class:`~thermospin_mc.core.operators.Operator` objects (rows
        ``name``, or ``name_re`` and ``name_im``, site 0, after the others).
    states : bool
        Keep the state of every output time as a
        :class:`~thermospin_mc.core.blockstate.BlockState` (``Result.states``).

    Returns
    -------
    Result
        ``.expect`` with ``sem = 0``, ``ntraj = 0``.

    Notes
    -----
    A :class:`~thermospin_mc.physics.schedule.Schedule` evolves with each stage's
    Hamiltonian in turn (channels ignored), by :func:`mesolve`'s pure-state
    path; a schedule of one Hamiltonian gives this function's own result.
    """
    if isinstance(model, Schedule):
        return _sesolve_schedule(model, times, observables, states)
    model = check_model(model, "sesolve")
    times = v.times(times)
    names, _, ops = check_observables(observables, None, model.N, count=False,
                                      solver="sesolve")
    states = check_states(states)
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
    means = stack(series, [*names, *operator_row_names(ops)])
    return Result(expect_table(times, model.N, means, operators=ops),
                  solver_metadata(model, "sesolve", **operator_metadata(ops)),
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
        Magnon-conserving :class:`~thermospin_mc.core.operators.Operator` objects give
        the rows ``name`` (Hermitian) or ``name_re`` and ``name_im``, site 0,
        after the built-in ones, ``sum_m Tr(O_m rho_m)``; with operators only, only
        their rows.
    pairs : sequence of (i, k), optional
        1-based site pairs of ``nn`` and ``pm``.
    method : {"auto", "expm", "chebyshev"}
        ``expm``: the assembled sparse block Liouvillian and scipy's
        ``expm_multiply``; ``chebyshev``: the matrix-free generator and a
        Chebyshev expansion of ``exp(L t)`` with a-posteriori truncation
        (:mod:`thermospin_mc.exact._blockops`). ``auto``: ``expm`` up to
        ``CHEBYSHEV_MIN_SIZE`` stored numbers, ``chebyshev`` above.
    states : bool
        Keep the block density matrix of every output time as a
        :class:`~thermospin_mc.core.blockstate.BlockState` (``Result.states``).
        Refused (one line) when they would take more than
        :func:`~thermospin_mc.core.blockstate.states_budget` (2 GiB or a quarter of
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

    ``model`` may be a :class:`~thermospin_mc.physics.schedule.Schedule` (docs/model.md 14):
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
    names, pairs, ops = check_observables(observables, pairs, model.N, solver="mesolve")
    states = check_states(states)
    if method not in ("auto", "expm", "chebyshev"):
        raise ValueError(f"method must be 'auto', 'expm' or 'chebyshev', got {method!r}")
    extra = {} if pairs is None else {"pairs": np.asarray(pairs).tolist()}
    extra.update(operator_metadata(ops))
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
    means = stack(series, [*names, *operator_row_names(ops)])
    return Result(expect_table(times, model.N, means, pairs=pairs, channels=model.channels,
                               operators=ops),
                  solver_metadata(model, "mesolve", **extra), states=kept if states else None)


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
    names, _, ops = check_observables(observables, None, schedule.N, count=False,
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
    names, pairs, ops = check_observables(observables, pairs, N, solver="mesolve")
    states = check_states(states)
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
    extra.update(operator_metadata(ops))
    # flow is (a_l / 2) j_l with the couplings of the stage holding at t: compute j_bond
    inner = list(dict.fromkeys("j_bond" if n == "flow" else n for n in names))
    windows = stage_windows(dyn, times)
    kept = [None] * times.size if states else None
    simple = pairs is None and "count" not in names and not schedule.is_mixed
    only_loss = all(ch.kind == "loss" for _, m in dyn for ch in m.channels)
    if simple and (all(m.is_closed for _, m in dyn)
                   or (only_loss and first.initial_sector <= 1)):
        series = schedule_pure(dyn, windows, times, inner, ops, kept)
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
        run = (schedule_chebyshev if method == "chebyshev" else schedule_expm)
        series = run(dyn, layouts, windows, times, inner, pairs, LayoutRows(layouts[0], ops),
                     kept, count, extra)
    if "flow" in names:
        k_of = np.atleast_1d(stage_of(schedule.times, times))
        for obs, k in zip(series, k_of, strict=True):
            obs["flow"] = OBS.flow_factor(schedule.stages[int(k)][1].couplings) * obs["j_bond"]
    means = stack(series, [*names, *operator_row_names(ops)])
    return Result(expect_table(times, N, means, pairs=pairs, channels=schedule.channels,
                               operators=ops),
                  solver_metadata(schedule, "mesolve", **extra), states=kept)
