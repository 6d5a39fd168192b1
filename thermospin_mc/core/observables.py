"""Observables: names, labels, table rows, and how the solvers evaluate them.

The single source of truth for what an observable is (docs/model.md section 7 and
docs/general_chain.md). The trajectory kernels and the exact solvers both evaluate observables
from the same sector data (:class:`~thermospin_mc.sectors.Sector` hops and
occupations, :meth:`~thermospin_mc.core.sectors.SectorSpace.pair_maps`); this module
names them, fixes their table rows, and evaluates them on the exact solvers'
block density matrices (the trajectory kernels' column layout is
``layouts.kernel_layout``; this module imports nothing of the trajectory engine).

Names (table column ``observable``), with ``site`` / ``site2`` of their rows:

=========  =============================================================  ==============
name       meaning                                                        rows
=========  =============================================================  ==============
``j``      total spin current, Eq. 9: ``sum_l j_l``                       site 0
``j_bond`` ``j_l = <sy_l sx_l+1 - sx_l sy_l+1> = 4 Im <s+_l s-_l+1>``     bond 1..N-1
``flow``   magnon flow ``F_l = (a_l / 2) j_l`` (continuity:               bond 1..N-1
           ``d<n_i>/dt = F_{i-1} - F_i`` + jump terms)
``m``      magnetisation ``N/2 - <number of magnons>``                    site 0
``n``      ``<n_i>``, down-spin occupation                                site 1..N
``norm``   trace of the density matrix (exact solvers only)               site 0
``nn``     ``<n_i n_k>`` for each requested pair                          site i, site2 k
``pm_re``  ``Re <s+_i s-_k>`` (``s+_i s-_k`` moves a magnon from ``i``     site i, site2 k
           to ``k``; for ``i == k`` it is ``1 - n_i``)
``pm_im``  ``Im <s+_i s-_k>``                                             site i, site2 k
``count``  expected number of jumps of each channel in ``[0, t]``; one    channel site
           table observable ``count:<channel name>`` per channel
=========  =============================================================  ==============

The hopping part of the XXZ Hamiltonian does not depend on the anisotropy or
the fields, so the current operators are the same for every member of the
family; only the couplings ``a_l`` enter the flow.

Tables get a ``site2`` column (0 for one-site rows) only when they hold
two-point rows, so tables of the paper's observables keep their columns.

A user's magnon-conserving :class:`~thermospin_mc.core.operators.Operator` is an
observable too (:func:`split_operators` checks it for every solver): its rows
follow the built-in ones, named ``name`` (Hermitian) or ``name_re`` and
``name_im`` (:func:`operator_rows`), site 0; on block density matrices it is
``sum_m Tr(O_m rho_m)`` (:func:`operator_weights`).
"""

from __future__ import annotations

import numpy as np

from ..physics.schedule import is_schedule
from .operators import Operator

__all__ = ["OBSERVABLES", "LABELS", "DEFAULT", "PAIR_NAMES", "TRAJECTORY",
           "flow_factor", "flow_factors", "source", "resolve", "assemble", "check_pairs",
           "observable_sites",
           "table_rows", "evaluate_blocks", "count_rates", "split_operators", "operator_rows",
           "operator_weights", "operator_values"]

#: Observable names, in table order.
OBSERVABLES = ("j", "j_bond", "flow", "m", "n", "norm", "nn", "pm_re", "pm_im", "count")
#: Default set (the paper's observables); two-point ones are added when pairs are given.
DEFAULT = ("j", "j_bond", "flow", "m", "n")
#: Two-point observables (need ``pairs``).
PAIR_NAMES = ("nn", "pm_re", "pm_im")
#: What trajectories can estimate (``norm`` is 1 on every trajectory).
TRAJECTORY = tuple(o for o in OBSERVABLES if o != "norm")

#: One event's worth of each observable (the error-bar floor) lives with the other
#: error-bar rules in :mod:`thermospin_mc.core.errorbars`.


def flow_factor(couplings) -> np.ndarray:
    """``a_l / 2`` per bond: the flow is ``F_l = (a_l / 2) j_l`` (the one definition).

    Every solver and statistic derives ``flow`` rows (means, standard errors,
    sums of squared deviations, one-event floors) from the ``j_bond`` ones by
    this factor (squared for second moments).
    """
    return np.asarray(couplings, dtype=float) / 2


def flow_factors(model, times) -> np.ndarray:
    """:func:`flow_factor` of a model, ``(N - 1,)``, or of a schedule at each of
    ``times``, ``(nt, N - 1)``: the couplings of the stage holding at ``t``
    (``t_k <= t``, docs/model.md 14). Broadcasts against ``(nt, N - 1)`` values."""
    if is_schedule(model):
        return np.array([flow_factor(model.model_at(float(t)).couplings)
                         for t in np.asarray(times, dtype=float)]).reshape(-1, model.N - 1)
    return flow_factor(model.couplings)


def source(name: str) -> str:
    """The computed observable a table observable is derived from (``flow`` -> ``j_bond``)."""
    return "j_bond" if name == "flow" else name


LABELS = {
    "j": "total spin current j (Eq. 9)",
    "j_bond": "bond current j_l",
    "flow": "magnon flow F_l = (a_l/2) j_l",
    "m": "magnetisation m",
    "n": "occupation <n_i>",
    "norm": "trace of rho",
    "nn": "<n_i n_k>",
    "pm_re": "Re <s+_i s-_k>",
    "pm_im": "Im <s+_i s-_k>",
    "count": "expected jumps of a channel in [0, t]",
}


def check_pairs(pairs, N: int) -> np.ndarray:
    """Validate 1-based site pairs; returns an ``(npair, 2)`` int64 array (1-based)."""
    if pairs is None:
        return np.zeros((0, 2), dtype=np.int64)
    try:
        arr = np.array([tuple(p) for p in pairs], dtype=object)
    except TypeError as exc:
        raise ValueError(f"pairs must be a list of (i, k) site pairs, got {pairs!r}") from exc
    out = []
    for p in arr:
        if len(p) != 2:
            raise ValueError(f"pairs must be a list of (i, k) site pairs, got {tuple(p)!r}")
        for s in p:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 1 <= s <= N:
                raise ValueError(f"pair sites must be integers in 1..{N}, got {tuple(p)!r}")
        out.append((int(p[0]), int(p[1])))
    if len(set(out)) != len(out):
        raise ValueError(f"pairs must be distinct, got {out}")
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def resolve(observables, pairs, N: int, *, allowed=OBSERVABLES, default=DEFAULT,
            solver: str = "") -> tuple[tuple[str, ...], np.ndarray]:
    """Validate requested observables and pairs: the one resolver of every solver.

    ``mcsolve`` calls it with ``allowed=TRAJECTORY``, the exact solvers with
    their own ``allowed`` and ``default``, the command line with the chosen
    solver's ``allowed`` (to refuse bad names before any work). Only these
    differ; the rules (``"pm"``, defaults, pairs, order) are the same for all.

    Parameters
    ----------
    observables : str, sequence of str or None
        Names among ``allowed``; ``"pm"`` stands for ``pm_re`` and ``pm_im``.
        ``None``: ``default``, plus :data:`PAIR_NAMES` when ``pairs`` are given.
    pairs : sequence of (int, int) or None
        1-based site pairs of the two-point observables (see :func:`check_pairs`).
    N : int
        Number of sites.
    allowed : tuple of str
        What the calling solver computes.
    default : tuple of str
        The names used without ``observables``.
    solver : str
        The calling solver's name, shown in the refusal of an unknown name.

    Returns
    -------
    names : tuple of str
        Each name once, in table order (:data:`OBSERVABLES`): every solver's
        table lists its rows in that order whatever the order asked for (and a
        checkpoint records the sorted names), so the caller's order is not kept.
    pairs : numpy.ndarray
        ``(npair, 2)`` int64 1-based pairs (empty without ``pairs``).

    Raises
    ------
    ValueError
        One line naming the argument, the allowed values and the value given.
    """
    pairs = check_pairs(pairs, N)
    if observables is None:
        names = tuple(default) + (PAIR_NAMES if len(pairs) else ())
    else:
        if isinstance(observables, str):
            observables = (observables,)
        try:
            asked = tuple(observables)
        except TypeError:
            raise ValueError(f"observables must be a name or a sequence of names, got "
                             f"{observables!r}") from None
        names = []
        for o in asked:
            names.extend(("pm_re", "pm_im") if o == "pm" else (o,))
        for o in names:
            if o not in allowed:
                pm = " or pm (pm_re and pm_im)" if "pm_re" in allowed else ""
                raise ValueError(f"observables{' of ' + solver if solver else ''}: each "
                                 f"observable must be one of {', '.join(allowed)}{pm}, "
                                 f"got {o!r}")
        if not names:
            raise ValueError("observables must name at least one observable")
    if any(o in PAIR_NAMES for o in names) and not len(pairs):
        raise ValueError("observables nn, pm_re, pm_im need pairs=[(i, k), ...] (1-based "
                         "sites), got no pairs")
    return tuple(o for o in OBSERVABLES if o in names), pairs


def observable_sites(name: str, N: int) -> np.ndarray:
    """1-based site/bond labels of a one-site observable (0 for whole-chain ones)."""
    if name == "n":
        return np.arange(1, N + 1)
    if name in ("j_bond", "flow"):
        return np.arange(1, N)
    if name in ("j", "m", "norm"):
        return np.zeros(1, dtype=int)
    raise ValueError(f"unknown observable {name!r}; allowed: {OBSERVABLES}")


def table_rows(name: str, N: int, pairs=None, channels=()) -> tuple[list, np.ndarray,
                                                                     np.ndarray]:
    """Per component of ``name``: table observable names, ``site`` and ``site2``."""
    if name in PAIR_NAMES:
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        return [name] * len(pairs), pairs[:, 0].copy(), pairs[:, 1].copy()
    if name == "count":
        return ([f"count:{c.name}" for c in channels],
                np.array([c.site + 1 for c in channels], dtype=np.int64),
                np.zeros(len(channels), dtype=np.int64))
    sites = observable_sites(name, N)
    return [name] * sites.size, sites, np.zeros(sites.size, dtype=np.int64)


# ---------------------------------------------------------------------------- exact side
def evaluate_blocks(layout, x: np.ndarray, names, pairs=None) -> dict:
    """Observables of one stacked block density matrix ``x`` (``exact.BlockLayout``).

    ``count`` is not a function of ``rho(t)`` (it is its time integral, see
    :func:`count_rates`) and is filled in by the solver.
    """
    space = layout.space
    N, a = layout.N, space.a
    n = np.zeros(N)
    jb = np.zeros(N - 1)
    pops = {}
    pairs0 = np.asarray(pairs if pairs is not None else np.zeros((0, 2)),
                        dtype=np.int64).reshape(-1, 2) - 1
    want_pairs = any(o in names for o in PAIR_NAMES)
    nn = np.zeros(len(pairs0))
    pm = np.zeros(len(pairs0), dtype=complex)
    for m in layout.sectors:
        diag = x[layout.diag_idx[m]].real
        pops[m] = diag.sum()
        if m:
            n += layout.occ[m].T @ diag
            if layout.hop_idx[m].size:
                # <j_l> = -4 Im rho[from, to] summed over the hops of bond l
                jb += np.bincount(layout.hop_bond[m], -4.0 * x[layout.hop_idx[m]].imag,
                                  minlength=N - 1)
        if want_pairs:
            B = layout.block(x, m)
            for p, (i, k) in enumerate(pairs0):
                both, src, dst = space.pair_maps(int(i), int(k), m)
                nn[p] += B[both, both].real.sum()
                pm[p] += B[src, dst].sum()
    return assemble(names, N, a, n=n, jb=jb, magnons=sum(m * p for m, p in pops.items()),
                    norm=sum(pops.values()), nn=nn, pm=pm)


def assemble(names, N: int, a, *, n, jb, magnons: float, norm: float, nn=None,
             pm=None) -> dict:
    """Observables from their primitives (the one place that defines each name):
    occupations ``n``, bond currents ``jb`` (``j_l``), the mean magnon number,
    the trace, and the two-point sums ``nn`` and ``pm``."""
    out = {}
    for name in names:
        if name == "n":
            out[name] = n
        elif name == "j_bond":
            out[name] = jb
        elif name == "flow":
            out[name] = flow_factor(a) * jb
        elif name == "j":
            out[name] = np.array([jb.sum()])
        elif name == "m":
            out[name] = np.array([N / 2 - magnons])
        elif name == "norm":
            out[name] = np.array([norm])
        elif name == "nn":
            out[name] = nn
        elif name == "pm_re":
            out[name] = pm.real.copy()
        elif name == "pm_im":
            out[name] = pm.imag.copy()
    return out


def count_rates(layout, channels) -> np.ndarray:
    """``(nch, size)`` real matrix ``R`` with ``R @ x`` = the jump rates
    ``rate_k Tr(L_k^+ L_k rho)`` of a stacked block density matrix ``x``
    (``L^+ L`` is diagonal: ``n_i`` for loss, ``1 - n_i`` for pump, 1 for dephasing)."""
    space = layout.space
    R = np.zeros((len(channels), layout.size))
    for c, ch in enumerate(channels):
        for m in layout.sectors:
            idx = layout.diag_idx[m]
            if ch.kind == "dephasing":
                R[c, idx] = ch.rate
                continue
            occ = (space.sector(m).sites == ch.site).any(axis=1)
            R[c, idx] = ch.rate * (occ if ch.kind == "loss" else ~occ)
    return R


# ---------------------------------------------------------------------------- user operators
def operator_rows(op) -> tuple[str, ...]:
    """Table observable names of an operator: ``name`` (Hermitian) or ``name_re``,
    ``name_im``; each row has site 0."""
    return (op.name,) if op.hermitian else (f"{op.name}_re", f"{op.name}_im")


def split_operators(observables, N: int) -> tuple:
    """Split requested observables into built-in names and user operators.

    The one check of operator observables, used by every solver: each
    :class:`~thermospin_mc.core.operators.Operator` must be for ``N`` sites and
    conserve the magnon number (offset 0: any other has expectation 0 on every
    state the engine produces), and its table rows (:func:`operator_rows`)
    must not clash with a built-in name or another operator's rows.

    Parameters
    ----------
    observables : str, sequence of str and Operator, or None
        What the caller asked for.
    N : int
        Number of sites of the model.

    Returns
    -------
    names : None, str or tuple of str
        ``observables`` without the operators, for :func:`resolve`: ``None`` when
        ``observables`` is ``None`` (defaults), an empty tuple when only operators
        were asked for (then only their rows are computed).
    operators : tuple of Operator
        In the order given (their rows come after the built-in ones, in this order).

    Raises
    ------
    ValueError
        One line naming ``observables``.
    """
    if observables is None or isinstance(observables, str):
        return observables, ()
    if isinstance(observables, Operator):
        observables = (observables,)
    try:
        items = tuple(observables)
    except TypeError:
        raise ValueError(f"observables must be a name or a sequence of names (and "
                         f"Operators), got {observables!r}") from None
    if not items:
        raise ValueError("observables must name at least one observable")
    names, ops = [], []
    for o in items:
        if isinstance(o, str):
            names.append(o)
        elif isinstance(o, Operator):
            ops.append(o)
        else:
            raise ValueError(f"observables: each entry must be a name or a "
                             f"thermospin_mc.Operator, got {type(o).__name__}")
    taken = set(OBSERVABLES) | {"pm"}
    for op in ops:
        if op.N != N:
            raise ValueError(f"observables: operator {op.name!r} is for N = {op.N} sites, the "
                             f"model has N = {N}")
        if op.offset != 0:
            raise ValueError(f"observables: operator {op.name!r} changes the magnon number by "
                             f"{op.offset:+d}; its expectation is 0 on every state here, only "
                             "offset-0 operators are observables")
        for row in operator_rows(op):
            if row in taken or row.startswith("count:"):
                raise ValueError(f"observables: operator name {op.name!r} clashes with "
                                 f"{'a built-in observable' if row in OBSERVABLES else 'another'}"
                                 f" table row {row!r}; rename it (Operator.rename)")
            taken.add(row)
        taken.add(op.name)
    if ops and len({op.name for op in ops}) != len(ops):
        raise ValueError("observables: two operators have the same name")
    return tuple(names), tuple(ops)


def operator_weights(op, layout) -> tuple[np.ndarray, np.ndarray]:
    """``(idx, w)`` with ``<O> = w @ x[idx]`` for a stacked block density matrix ``x``
    of ``layout`` (``exact.BlockLayout``): ``Tr(O_m rho_m) = sum_ij O[i, j] rho[j, i]``
    summed over the layout's sectors (rows of ``rho_m`` are stored row-major)."""
    idx, w = [], []
    for m in layout.sectors:
        B = op.sector_matrix(layout.space, m).tocoo()
        d, o = layout.dims[m], layout.offsets[m]
        idx.append(o + B.col.astype(np.int64) * d + B.row)
        w.append(B.data.astype(complex))
    if not idx:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=complex)
    return np.concatenate(idx), np.concatenate(w)


def operator_values(op, value: complex) -> dict:
    """``{row name: value}`` of ``op`` from its complex expectation ``value``: the real
    part (Hermitian), or the real and imaginary parts (rows ``_re``, ``_im``)."""
    rows = operator_rows(op)
    if op.hermitian:
        return {rows[0]: float(np.real(value))}
    return {rows[0]: float(np.real(value)), rows[1]: float(np.imag(value))}
