"""Error bars: the one place that owns every rule about the uncertainty of a number.

Used by ``Result.compare`` (per-row z-scores), the command line's z column, the
``target_sem`` stop rule of ``mcsolve`` and ``Result.goodness_of_fit`` (one
test for a whole comparison). ``docs/statistics.md`` explains each rule.

- :data:`ONE_EVENT` / :func:`one_event`: one event's worth ``delta`` of a row,
  the largest change of one trajectory's value that one quantum jump makes;
- :func:`effective_sem`: ``max(sem, delta / ntraj)``, the standard error that
  never claims more precision than the sample holds;
- :func:`target_value`: what the ``target_sem`` stop rule compares with the
  target (the worst effective standard error, absolute or relative);
- :func:`signflip_fit`: the global goodness of fit, a sign-flip test on
  independent trajectory groups, calibrated despite correlated rows.
"""

from __future__ import annotations

import math

import numpy as np

from .observables import flow_factor, source

__all__ = ["ONE_EVENT", "GROUPS", "GOF_FLIPS", "one_event", "operator_floors", "kind_of",
           "effective_sem", "target_value", "signflip_fit"]

#: One event's worth of each trajectory observable kind: the largest change of
#: one trajectory's value that one magnon more or less (one quantum jump) can
#: make. ``j``: one magnon's current lies in (-4, 4) (Eq. 9 in the one-magnon
#: sector is a hopping matrix with amplitudes +-2i); ``j_bond``: one bond term
#: of one magnon lies in [-2, 2]; ``m``: a jump changes the magnon number by 1;
#: ``n``: a site's occupation lies in [0, 1]; two-point ``nn``, ``pm_re``,
#: ``pm_im`` lie in [-1, 1]; a jump count (table rows ``count:<channel>``)
#: changes by 1 per jump. ``flow`` of bond l is ``(a_l / 2) * 2 = a_l``
#: (:func:`flow_factor` times the ``j_bond`` value); it depends on the model,
#: so it is not in this table. Kinds without an entry have no floor (0).
ONE_EVENT = {"j": 4.0, "j_bond": 2.0, "m": 1.0, "n": 1.0, "nn": 1.0, "pm_re": 1.0,
             "pm_im": 1.0, "count": 1.0}

#: Trajectory groups of a run: block ``b`` (``batches.BLOCK`` trajectories) joins
#: group ``b mod GROUPS``; the groups' means are independent samples that
#: :func:`hotelling_fit` uses to estimate the covariance between rows.
GROUPS = 64
#: Random sign patterns of the goodness of fit (smallest p-value 1 / (GOF_FLIPS + 1)).
GOF_FLIPS = 19999


def kind_of(observable: str) -> str:
    """The observable kind of a table observable name (``count:<channel>`` -> ``count``)."""
    name = str(observable)
    return "count" if name.startswith("count:") else name


def _floors(kinds, sites, couplings, extra=None) -> np.ndarray:
    """``delta`` per row from its kind and site (bond of ``flow`` rows); ``extra``
    maps further kinds (a user's operators) to their ``delta``."""
    table = ONE_EVENT if not extra else {**extra, **ONE_EVENT}
    delta = np.array([table.get(k, 0.0) for k in kinds], dtype=float)
    flow = np.asarray([k == "flow" for k in kinds], dtype=bool)
    if flow.any() and couplings is not None:
        a = np.asarray(couplings, dtype=float)
        idx = np.asarray(sites)[flow].astype(int) - 1
        ok = (idx >= 0) & (idx < a.size)
        delta[np.flatnonzero(flow)[ok]] = 2.0 * flow_factor(a)[idx[ok]]
    return delta


def one_event(observable, site, couplings=None, extra=None) -> np.ndarray:
    """One event's worth ``delta`` of each row (see :data:`ONE_EVENT`); 0 when undefined.

    ``observable`` and ``site`` are scalars or equal-length arrays of table
    labels; ``flow`` needs the model's ``couplings`` (its ``delta`` is ``a_l``
    of bond ``site``); ``extra`` maps the table names of a user's operators to
    theirs (:func:`operator_floors`).
    """
    obs = np.atleast_1d(np.asarray(observable, dtype=object))
    site = np.broadcast_to(np.atleast_1d(np.asarray(site)), obs.shape)
    return _floors([kind_of(o) for o in obs], site, couplings, extra)


def operator_floors(operators) -> dict:
    """One event's worth of a user's operator rows: ``2 * norm_bound`` (``<O>`` of any
    state lies in ``[-||O||, ||O||]``, so one trajectory's value moves by at most
    twice the norm), for the row names ``name`` or ``name_re`` and ``name_im``.

    ``operators`` holds :class:`~thermospin_mc.core.operators.Operator` objects or the
    metadata records ``{"name", "hermitian", "norm_bound"}`` a result stores.
    """
    out = {}
    for op in operators or ():
        rec = op if isinstance(op, dict) else {"name": op.name, "hermitian": op.hermitian,
                                               "norm_bound": op.norm_bound}
        delta = 2.0 * float(rec["norm_bound"])
        names = ((rec["name"],) if rec["hermitian"]
                 else (f"{rec['name']}_re", f"{rec['name']}_im"))
        out.update(dict.fromkeys(names, delta))
    return out


def effective_sem(observable, site, sem, ntraj, couplings=None, extra=None) -> np.ndarray:
    """Standard errors that never claim more precision than the data hold.

    The one rule used by ``Result.compare``, the command line summary and the
    ``target_sem`` stopping test (see ``docs/statistics.md``)::

        sem_eff = max(sem, delta / ntraj)      for rows with ntraj > 0
        sem_eff = sem                          for rows with ntraj == 0 (exact)

    ``delta / ntraj`` is the standard error of a sample of ``ntraj``
    trajectories of which exactly one differs from all others by one event's
    worth ``delta`` of the observable (:func:`one_event`): one magnon more or
    less, one quantum jump. When every trajectory agrees (``sem = 0``, e.g.
    no jump has happened yet, or every magnon has left), the data cannot
    exclude an effect of order ``delta / ntraj``, and the floor says so. The
    floor is at most the sample's own error unless the per-trajectory spread
    is below ``delta / sqrt(ntraj)``, i.e. it acts only on (near-)degenerate
    rows. A NaN ``sem`` (one trajectory) becomes the floor ``delta``.

    Parameters
    ----------
    observable, site : scalar or array_like
        Row labels, as in ``Result.expect``.
    sem : array_like
        Standard errors of the rows.
    ntraj : int or array_like
        Trajectories behind each row (0 for exact solvers).
    couplings : array_like, optional
        Bond couplings ``a_l`` (needed for ``flow`` rows).
    extra : dict, optional
        One event's worth of further rows by table name (a user's operators:
        :func:`operator_floors`).

    Returns
    -------
    numpy.ndarray
        Effective standard errors, same length as the rows.
    """
    sem = np.atleast_1d(np.asarray(sem, dtype=float))
    delta = np.broadcast_to(one_event(observable, site, couplings, extra), sem.shape)
    return _floored(sem, ntraj, delta)


def _floored(sem, ntraj, delta) -> np.ndarray:
    """``max(sem, delta / n)`` where ``n > 0`` (NaN sem counts as 0); ``sem`` where ``n == 0``."""
    sem = np.asarray(sem, dtype=float)
    n = np.broadcast_to(np.asarray(ntraj, dtype=float), sem.shape)
    delta = np.broadcast_to(np.asarray(delta, dtype=float), sem.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        floor = np.where(n > 0, delta / np.where(n > 0, n, 1.0), 0.0)
    base = np.where(np.isnan(sem) & (n > 0), 0.0, sem)
    return np.where(n > 0, np.maximum(base, floor), sem)


# --------------------------------------------------------------------------- stop rule
def target_value(cnt, mean, sem, cols: dict, names: tuple, times: np.ndarray, couplings,
                 relative: bool, rel_floor: float = 0.25, extra=None) -> float:
    """What the ``target_sem`` rule holds against the target.

    The worst effective standard error (absolute) or the worst
    ``sem_eff / |mean|`` (relative) over the observables ``names`` at every
    output time ``t > 0`` that has trajectories. ``cnt`` ``(nt,)``, ``mean``
    and ``sem`` ``(nt, ncomp)`` are a run's accumulated statistics in the
    kernel's column layout ``cols`` (computed observable -> column slice).
    Standard errors are :func:`effective_sem` of the rows (the same floor as
    every z-score); relative: rows with ``|mean|`` below ``rel_floor`` times
    the largest ``|mean|`` of the observable are ignored, and so are rows
    with mean exactly 0. ``extra``: one event's worth of a user's operator rows
    (:func:`operator_floors`). A non-Hermitian operator ``name`` is named whole
    (both parts) or by one part, ``name_re`` or ``name_im``.
    """
    rows = (times > 0) & (cnt > 0)
    if not rows.any():
        return math.inf
    n = cnt[rows].astype(float)[:, None]
    sem, mean = sem[rows], mean[rows]
    worst = 0.0
    for name in names:
        src, part = source(name), None
        if src not in cols and extra and name in extra:  # one part of a non-Hermitian operator
            src, part = name[:-3], (0 if name.endswith("_re") else 1)
        sl = cols[src]
        se, mu = sem[:, sl], mean[:, sl]
        if part is not None:
            se, mu = se[:, part:part + 1], mu[:, part:part + 1]
        ncomp = se.shape[1]
        kinds = ["count" if src == "count" else name] * ncomp
        if extra and ncomp == 2 and f"{name}_re" in extra:  # a non-Hermitian operator
            kinds = [f"{name}_re", f"{name}_im"]
        delta = _floors(kinds, np.arange(1, ncomp + 1), couplings, extra)
        if name == "flow":
            half_a = flow_factor(couplings)
            se, mu = se * half_a, mu * half_a
        se = _floored(se, np.broadcast_to(n, se.shape), np.broadcast_to(delta, se.shape))
        if relative:
            size = np.abs(mu)
            keep = (size > 0) & (size >= rel_floor * size.max())
            if not keep.any():
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                val = np.where(keep, se / size, 0.0)
        else:
            val = se
        if np.isnan(val).any():
            return math.inf
        worst = max(worst, float(val.max()))
    return worst


# --------------------------------------------------------------------------- global fit
def _signs(ngroups: int, flips: int, seed: int) -> np.ndarray:
    """Sign patterns ``(B, G)``: all ``2^G`` when that is at most ``flips + 1`` (the
    first row all +1), else the all-+1 row and ``flips`` random ones (fixed seed)."""
    if 2**ngroups <= flips + 1:
        codes = np.arange(2**ngroups)[:, None] >> np.arange(ngroups)[None, :]
        return 1.0 - 2.0 * (codes & 1)
    rng = np.random.default_rng(seed)
    rand = 1.0 - 2.0 * rng.integers(0, 2, size=(flips, ngroups))
    return np.vstack([np.ones((1, ngroups)), rand])


def signflip_fit(dev: np.ndarray, weight: np.ndarray, floor: np.ndarray,
                 flips: int = GOF_FLIPS, seed: int = 0) -> dict:
    """Global goodness of fit from independent group deviations (sign-flip test).

    ``dev`` ``(G, p)``: each independent group's deviation from the reference
    over ``p`` rows (group mean minus exact value, or the difference of two
    runs' paired groups); ``weight`` ``(G,)``: each deviation's inverse variance
    per trajectory (its trajectory count; ``1 / (1/n_a + 1/n_b)`` for a pair);
    ``floor`` ``(p,)``: the one-event floor of the per-trajectory spread,
    ``delta / sqrt(ntraj)``. The method (``docs/statistics.md``):

    - ``ybar = sum_g w_g dev_g / W`` (``W = sum_g w_g``) is the weighted mean
      deviation, ``s_r = max(sqrt(sum_g w_g dev_gr^2 / G), floor_r)`` each row's
      spread per trajectory, ``z_r = ybar_r sqrt(W) / s_r``, and the statistic
      is ``chi2 = sum_r z_r^2``;
    - under the null hypothesis the deviations are independent with mean zero
      and (by the central limit theorem, each group holding at least 64
      trajectories) symmetric, so every sign pattern ``eps_g = +-1`` applied to
      them is equally likely; ``s_r`` does not change under sign flips, so the
      p-value, the fraction of patterns with ``chi2(eps) >= chi2``, is exact
      for symmetric deviations however strongly the rows are correlated;
    - ``dof`` is the effective number of independent rows, ``2 E[chi2]^2 /
      Var[chi2]`` over the patterns (correlated rows count as fewer).

    All ``2^G`` patterns are used when ``2^G <= flips + 1``; otherwise the
    observed one and ``flips`` random ones (seeded, reproducible), and the
    p-value is ``(1 + #{chi2(eps) >= chi2}) / (flips + 1)`` (never below
    ``1 / (flips + 1)``).

    Returns
    -------
    dict
        ``chi2``, ``dof``, ``p_value``, ``rows`` (rows with a nonzero spread),
        ``groups``, ``flips`` (patterns compared).

    Raises
    ------
    ValueError
        Fewer than 6 groups (the smallest p-value would exceed 1/64).
    """
    dev = np.asarray(dev, dtype=float)
    w = np.asarray(weight, dtype=float)
    ngroups = dev.shape[0]
    if ngroups < 6:
        raise ValueError(f"goodness_of_fit needs at least 6 independent trajectory groups "
                         f"(blocks of 64 trajectories), got {ngroups}: run more trajectories")
    spread = np.sqrt((w[:, None] * dev * dev).sum(axis=0) / ngroups)
    s = np.maximum(spread, np.asarray(floor, dtype=float))
    use = s > 0
    out = {"chi2": 0.0, "dof": 0.0, "p_value": math.nan, "rows": int(use.sum()),
           "groups": int(ngroups), "flips": 0}
    if not use.any():
        return out
    total = w.sum()
    scaled = (w[:, None] * dev[:, use]) / (np.sqrt(total) * s[use])  # sum over g gives z
    signs = _signs(ngroups, int(flips), seed)
    chi2 = np.concatenate([((chunk @ scaled) ** 2).sum(axis=1)
                           for chunk in np.array_split(signs, max(1, len(signs) // 1024))])
    obs = chi2[0]
    # the observed pattern counts itself (and -eps gives the same chi2 as eps);
    # patterns equal to it up to rounding count as >=
    p = int((chi2 >= obs * (1 - 1e-12)).sum()) / len(chi2)
    var = chi2.var()
    out.update(chi2=float(obs), p_value=float(p), flips=int(len(chi2)),
               dof=float(2 * chi2.mean() ** 2 / var) if var > 0 else math.inf)
    return out
