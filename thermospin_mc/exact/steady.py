"""Exact solvers of one generator at infinite time: steady state and exit sides.

- ``steadystate``: ``L x = 0`` with unit trace, either by a sparse direct solve
  (small problems) or by GMRES on the matrix-free generator, left-preconditioned
  with the exact inverse of the block no-jump part plus the jumps of the
  weaker direction (block triangular in ``m``: one sweep of exact block solves
  ``-i(H X - X H^+) = Y`` in the eigenbasis of ``H``, Schur-based fallback when
  that basis is ill-conditioned).
- ``exit_probabilities``: expected number of losses on each edge, integrated to
  infinite time (for one magnon: the probability to leave left or right).

Both refuse a :class:`~thermospin_mc.physics.schedule.Schedule`
(:func:`~thermospin_mc.exact.blocks.check_model`). They are re-exported by
:mod:`.solvers`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .. import _validate as v
from .._threads import blas_threads
from ..core.blockstate import LayoutRows
from ..core.results import Result
from ..core.sectors import SectorSpace
from ..core.tables import expect_table
from ..physics.model import ChainModel
from ._blockops import BlockGenerator
from .blocks import (
    BlockLayout,
    check_model,
    feed_generator,
    nojump_generator,
    refuse_trapped,
    solve_in_block,
)
from .blocksolve import BorderedSolver, NoJumpInverse
from .solver_inputs import check_observables, check_states, operator_metadata, solver_metadata

__all__ = ["steadystate", "exit_probabilities", "DIRECT_STEADY_LIMIT"]

#: Above this many stored numbers the steady state switches from a sparse
#: direct solve to preconditioned GMRES (fill-in of the direct solve grows fast).
DIRECT_STEADY_LIMIT = 1_000


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
        :class:`~thermospin_mc.core.operators.Operator` objects (rows ``name``, or
        ``name_re`` and ``name_im``, site 0, after the built-in ones).
    method : {"auto", "direct", "gmres"}
        ``direct``: sparse LU of the bordered Liouvillian; ``gmres``: GMRES left-
        preconditioned with the exact inverse of the no-jump part plus the
        jumps of the weaker direction (:class:`~thermospin_mc.exact.blocksolve.BorderedSolver`;
        its Krylov basis holds at most ``blocksolve.GMRES_BASIS_BYTES``). ``auto``
        picks direct below ``DIRECT_STEADY_LIMIT`` stored numbers.
    tol : float
        Relative residual target of the iterative solve.

    pairs : sequence of (i, k), optional
        1-based site pairs of ``nn`` and ``pm``.
    states : bool
        Also return the steady state as a
        :class:`~thermospin_mc.core.blockstate.BlockState` (``Result.states[0]``; the
        same blocks as ``Result.blocks``).

    Returns
    -------
    Result
        ``.expect`` at ``t = inf`` with ``sem = 0``.
    """
    model = check_model(model, "steadystate")
    names, pairs, ops = check_observables(observables, pairs, model.N, count=False,
                                          solver="steadystate")
    states = check_states(states)
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
    info.update(operator_metadata(ops))
    return Result(expect_table(np.array([np.inf]), model.N, means, pairs=pairs, operators=ops),
                  solver_metadata(model, "steadystate", **info),
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
