"""The result type shared by the exact solvers and the trajectory engine.

``Result.expect`` is a tidy table with columns ``t, observable, site, mean, sem,
ntraj``. Observables (docs/model.md section 7; defined in
:mod:`thermospin_mc.observables`):

- ``j``: total spin current of Eq. 9 (site 0);
- ``j_bond``: the terms of Eq. 9 per bond (site = bond index 1..N-1);
- ``flow``: physical magnon flow ``F_l = (a_l / 2) j_l`` per bond;
- ``m``: magnetisation ``N/2 - <number of magnons>`` (site 0);
- ``n``: occupation ``<n_i>`` of down spins per site (1..N);
- ``norm``: trace of the density matrix (exact solvers only).

Exact results have ``sem = 0`` and ``ntraj = 0``.

A :class:`Result` is immutable and owns its per-row accumulators (count =
``ntraj``, mean, sum of squared deviations ``m2``), so that :func:`merge`
(also ``res_a + res_b``) pools trajectory results exactly, with
:func:`chan_merge`, the one pooling formula of the package (the trajectory
reducer uses it too). :func:`metadata` is the one metadata builder. This
module holds no trajectory machinery: the exact solvers build complete
results here without reaching the trajectory engine.

Length: about 830 lines, above the package's ~500 guideline on purpose: the
result type, its table layout (:func:`expect_table`, :func:`table_values`),
its row matching (:meth:`Result.compare`, :meth:`Result.goodness_of_fit`; the
error-bar rules themselves live in :mod:`thermospin_mc.errorbars`) and its
exact merge of accumulators and trajectory groups depend on one another's row
conventions; split apart they would share private details (issue 26 re-cuts it).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
import pandas as pd

from .. import io as _io
from .._version import __version__
from .blockstate import BlockState
from .errorbars import (
    GOF_FLIPS,
    ONE_EVENT,
    effective_sem,
    one_event,
    operator_floors,
    signflip_fit,
)
from .observables import (
    OBSERVABLES,
    PAIR_NAMES,
    observable_sites,
    operator_rows,
    table_rows,
)

__all__ = ["Result", "OBSERVABLES", "ONE_EVENT", "expect_table", "table_values",
           "observable_sites", "effective_sem", "one_event", "read_result", "merge",
           "chan_merge", "sem_from_m2", "Accumulators", "metadata"]


def metadata(solver: str, model=None, **extra) -> dict:
    """The metadata of a result or table: the one builder every writer uses.

    Stamps ``solver`` (the producing solver or command), the model
    (``model.to_dict()``) and its a(T) method when there is one model, and the
    package version; ``extra`` adds (or overrides) specific entries
    (``ntraj``, ``seed``, timings, figure settings, ...).
    """
    meta = {"solver": solver}
    if model is not None:
        meta.update(model=model.to_dict(), alpha_method=model.alpha_method)
    meta["version"] = __version__
    meta.update(extra)
    return meta


def chan_merge(na, mean_a, m2a, nb, mean_b, m2b):
    """Pool two samples' ``(count, mean, m2)`` (Chan, Golub and LeVeque's pairwise formula).

    The one merge of the package: the trajectory reducer folds statistics
    blocks with it and :func:`merge` pools finished results with it. Counts
    broadcast against the means (``(nt, 1)`` against ``(nt, ncomp)``, or one
    per row); a side with count 0 contributes nothing provided its mean is
    finite. Returns ``(mean, m2)``; the pooled count is ``na + nb``.
    """
    na = np.asarray(na, dtype=float)
    nb = np.asarray(nb, dtype=float)
    n = na + nb
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = mean_b - mean_a
        fb = np.where(n > 0, nb / n, 0.0)
        mean = mean_a + delta * fb
        m2 = m2a + m2b + delta * delta * na * fb
    return mean, m2


def sem_from_m2(n, m2) -> np.ndarray:
    """Standard error of the mean, ``sqrt(m2 / (n - 1) / n)`` (NaN for ``n < 2``)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(n > 1, m2 / np.maximum(n - 1, 1), np.nan)
        return np.sqrt(var / n)


class Accumulators(NamedTuple):
    """Per-row statistics of a result, in ``expect`` row order.

    ``count`` is the number of trajectories behind each row (0 for exact
    results), ``mean`` the row's mean (NaN where a trajectory row has count
    0), ``m2`` the sum of squared deviations from the mean (0 for exact rows).
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray


def _operator_names(operators) -> list[str]:
    return [row for op in operators for row in operator_rows(op)]


def table_values(times: np.ndarray, N: int, values: dict, pairs=None,
                 channels=(), operators=()) -> np.ndarray:
    """``{name: (nt, ncomp)}`` arrays flattened in the row order of :func:`expect_table`
    (the rows of ``operators`` after the built-in ones)."""
    out = []
    times = np.asarray(times, dtype=float)
    for name in OBSERVABLES:
        if name not in values:
            continue
        _, sites, _ = table_rows(name, N, pairs, channels)
        if sites.size == 0:
            continue
        out.append(np.asarray(values[name], dtype=float).reshape(times.size, -1).T.ravel())
    for name in _operator_names(operators):
        out.append(np.asarray(values[name], dtype=float).reshape(times.size))
    return np.concatenate(out) if out else np.zeros(0)


def expect_table(times: np.ndarray, N: int, means: dict, sems: dict | None = None,
                 ntraj: int = 0, pairs=None, channels=(), operators=()) -> pd.DataFrame:
    """Assemble the tidy ``expect`` table from ``{name: (nt, ncomp)}`` arrays.

    Rows and labels come from :mod:`thermospin_mc.observables`; a ``site2``
    column is added when two-point observables (``pairs``) are present. The
    rows of user ``operators`` (:class:`~thermospin_mc.operators.Operator`)
    follow the built-in ones, in the order given: ``means[row]`` of shape
    ``(nt,)`` or ``(nt, 1)`` for each of their row names
    (:func:`~thermospin_mc.observables.operator_rows`), site 0.
    """
    frames = []
    times = np.asarray(times, dtype=float)
    two_point = any(name in PAIR_NAMES for name in means)
    for name in [*OBSERVABLES, *_operator_names(operators)]:
        if name not in means:
            if name not in OBSERVABLES:
                raise ValueError(f"means must hold the operator row {name!r}")
            continue
        mean = np.asarray(means[name], dtype=float).reshape(times.size, -1)
        sem = (np.zeros_like(mean) if sems is None or name not in sems
               else np.asarray(sems[name], dtype=float).reshape(mean.shape))
        if name in OBSERVABLES:
            obs, sites, sites2 = table_rows(name, N, pairs, channels)
        else:
            obs, sites, sites2 = [name], np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
        ncomp = sites.size
        if ncomp == 0:
            continue
        cols = {
            "t": np.tile(times, ncomp),
            "observable": np.repeat(np.array(obs, dtype=object), times.size),
            "site": np.repeat(sites, times.size),
        }
        if two_point:
            cols["site2"] = np.repeat(sites2, times.size)
        cols.update({"mean": mean.T.ravel(), "sem": sem.T.ravel(), "ntraj": np.int64(ntraj)})
        frames.append(pd.DataFrame(cols))
    df = pd.concat(frames, ignore_index=True)
    df["observable"] = df["observable"].astype(str)
    return df


def _readonly(arr):
    view = np.asarray(arr).view()
    view.flags.writeable = False
    return view


def _rebuild(expect, metadata, jumps, trajectories, m2, blocks, groups=None, states=None):
    return Result(expect, metadata, jumps, trajectories, m2=m2, blocks=blocks, groups=groups,
                  states=states)


def _check_groups(groups, nrows: int) -> dict | None:
    """Validated, read-only trajectory groups ``{"count", "mean"}`` ``(G, nrows)``;
    groups without trajectories are dropped."""
    if groups is None:
        return None
    try:
        count = np.array(groups["count"], dtype=np.int64)
        mean = np.array(groups["mean"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"groups must be {{'count': (G, rows), 'mean': (G, rows)}} arrays: "
                         f"{exc}") from exc
    if count.ndim != 2 or count.shape != mean.shape or count.shape[1] != nrows:
        raise ValueError(f"groups must hold (G, {nrows}) count and mean arrays, got "
                         f"{count.shape} and {mean.shape}")
    keep = count.any(axis=1)
    return {"count": _readonly(count[keep]), "mean": _readonly(mean[keep])}


def _encode(arr: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(arr, dtype=dtype).tobytes()).decode("ascii")


def _decode_groups(blob, nrows: int) -> dict | None:
    """Groups stored by :meth:`Result._hidden`; ``None`` if absent or not of this table."""
    try:
        g, n = (int(x) for x in blob["shape"])
        count = np.frombuffer(base64.b64decode(blob["count"]), dtype="<i8").reshape(g, n)
        mean = np.frombuffer(base64.b64decode(blob["mean"]), dtype="<f8").reshape(g, n)
    except (KeyError, TypeError, ValueError):
        return None
    return {"count": count, "mean": mean} if n == nrows else None


class Result:
    """Expectation values (and optionally jump records) of one run; immutable.

    No attribute can be set after construction, and what the attributes hand
    out are copies or read-only views: a result cannot change after the fact
    (:meth:`replace` makes a changed copy).

    Parameters
    ----------
    expect : pandas.DataFrame
        Columns ``t, observable, site, mean, sem, ntraj`` (``site2`` with pairs).
    metadata : dict
        See :func:`metadata`.
    jumps : pandas.DataFrame, optional
        Jump records.
    trajectories : dict, optional
        ``{"rows": (ntraj, nt, ncomp) array, "columns": {name: (lo, hi)}}``.
    m2 : array_like, optional
        Per-row sums of squared deviations, in ``expect`` row order
        (trajectory results). Without it, trajectory rows get
        ``sem^2 n (n - 1)`` (tables written by another program or an older
        version: exact up to the rounding of the stored standard errors).
    blocks : dict, optional
        Steady-state density-matrix blocks ``{m: array}`` (``steadystate``).
    groups : dict, optional
        Independent trajectory groups of a trajectory result, ``{"count": (G,
        rows) int, "mean": (G, rows) float}`` in ``expect`` row order (what
        :meth:`goodness_of_fit` needs; ``mcsolve`` fills it in).
    states : sequence, optional
        Block density matrices, one per output time (``states=True`` of the
        solvers; ``steadystate``: one).

    Attributes
    ----------
    expect : pandas.DataFrame
        Columns ``t, observable, site, mean, sem, ntraj``.
    jumps : pandas.DataFrame or None
        Columns ``traj, t, channel, site, m_before`` when jumps were recorded.
    metadata : dict
        Model parameters, couplings, a(T) method, solver, seed, ntraj, version.
    accumulators : Accumulators
        Per-row ``(count, mean, m2)``: what :func:`merge` pools.
    """

    __slots__ = ("_expect", "_jumps", "_metadata", "_trajectories", "_m2", "_blocks", "_groups",
                 "_states")

    def __init__(self, expect: pd.DataFrame, metadata: dict, jumps: pd.DataFrame | None = None,
                 trajectories: dict | None = None, *, m2=None, blocks: dict | None = None,
                 groups: dict | None = None, states=None):
        meta = copy.deepcopy(dict(metadata))
        expect = expect.copy()
        expect.attrs = {"thermospin_mc": meta}
        if jumps is not None:
            jumps = jumps.copy()
            jumps.attrs = {"thermospin_mc": meta}
        if m2 is None:
            n = expect["ntraj"].to_numpy().astype(np.float64)
            sem = expect["sem"].to_numpy().astype(np.float64)
            with np.errstate(invalid="ignore"):
                m2 = np.where(n > 1, sem * sem * n * (n - 1), 0.0)
        m2 = np.array(m2, dtype=np.float64).ravel()
        if m2.size != len(expect):
            raise ValueError(f"m2 must have one value per expect row ({len(expect)}), got "
                             f"{m2.size}")
        if trajectories is not None:
            trajectories = MappingProxyType({
                "rows": _readonly(np.array(trajectories["rows"])),
                "columns": MappingProxyType({k: tuple(val) for k, val in
                                             dict(trajectories["columns"]).items()})})
        if blocks is not None:
            blocks = MappingProxyType({k: _readonly(np.array(b)) for k, b in blocks.items()})
        for name, val in (("_expect", expect), ("_jumps", jumps), ("_metadata", meta),
                          ("_trajectories", trajectories), ("_m2", _readonly(m2)),
                          ("_blocks", blocks), ("_groups", _check_groups(groups, len(expect))),
                          ("_states", None if states is None else tuple(states))):
            object.__setattr__(self, name, val)

    def __setattr__(self, name, value):
        raise AttributeError(f"Result is immutable (cannot set {name!r}); use "
                             "Result.replace(...) for a changed copy")

    def __delattr__(self, name):
        raise AttributeError(f"Result is immutable (cannot delete {name!r})")

    def __reduce__(self):
        # pickle / copy through the constructor (attributes cannot be set afterwards)
        return (_rebuild, (self._expect, self._metadata, self._jumps, self.trajectories,
                           np.array(self._m2), self.blocks, self.groups, self._states))

    def replace(self, **changes) -> Result:
        """A copy with some of ``expect, metadata, jumps, trajectories, m2, blocks, groups``
        replaced.

        A new ``expect`` without a new ``m2`` drops the stored ``m2`` (it is
        rebuilt from the new table's standard errors), and without new
        ``groups`` drops the groups.
        """
        allowed = ("expect", "metadata", "jumps", "trajectories", "m2", "blocks", "groups",
                   "states")
        for k in changes:
            if k not in allowed:
                raise ValueError(f"replace takes {', '.join(allowed)}; got {k!r}")
        args = {"expect": self._expect, "metadata": self._metadata, "jumps": self._jumps,
                "trajectories": self.trajectories, "blocks": self._blocks,
                "m2": None if "expect" in changes else self._m2,
                "groups": None if "expect" in changes else self.groups,
                "states": self._states}
        args.update(changes)
        return Result(args.pop("expect"), args.pop("metadata"), args.pop("jumps"),
                      args.pop("trajectories"), **args)

    # ---------------------------------------------------------------- access
    @property
    def expect(self) -> pd.DataFrame:
        """The tidy table (a copy: changing it leaves the result as it is)."""
        return self._expect.copy(deep=False)

    @property
    def jumps(self) -> pd.DataFrame | None:
        """Jump records (a copy), or ``None``."""
        return None if self._jumps is None else self._jumps.copy(deep=False)

    @property
    def metadata(self) -> dict:
        """Run description (a copy)."""
        return copy.deepcopy(self._metadata)

    @property
    def trajectories(self) -> dict | None:
        """``{"rows": read-only array, "columns": {name: (lo, hi)}}`` if trajectories were kept."""
        if self._trajectories is None:
            return None
        return {"rows": self._trajectories["rows"],
                "columns": dict(self._trajectories["columns"])}

    @property
    def blocks(self) -> dict | None:
        """Steady-state density-matrix blocks ``{m: read-only array}`` (``steadystate``)."""
        return None if self._blocks is None else dict(self._blocks)

    @property
    def states(self) -> list | None:
        """Block density matrices (``tsm.BlockState``), one per output time, when the
        solver was asked for them (``states=True``), else ``None``."""
        return None if self._states is None else list(self._states)

    @property
    def groups(self) -> dict | None:
        """Independent trajectory groups ``{"count", "mean"}``, ``(G, rows)`` read-only
        arrays in ``expect`` row order, or ``None`` (exact results, old files)."""
        return None if self._groups is None else dict(self._groups)

    @property
    def accumulators(self) -> Accumulators:
        """Per-row ``(count, mean, m2)`` in ``expect`` row order (copies)."""
        e = self._expect
        return Accumulators(e["ntraj"].to_numpy().astype(np.int64),
                            e["mean"].to_numpy().astype(np.float64), np.array(self._m2))

    @property
    def times(self) -> np.ndarray:
        """Output times in order (repeated times appear repeatedly)."""
        e = self._expect
        first = e.iloc[0]
        sub = e[(e["observable"] == first["observable"]) & (e["site"] == first["site"])]
        return sub["t"].to_numpy()

    def get(self, observable: str, stat: str = "mean") -> np.ndarray:
        """``(nt, ncomp)`` array of one observable (``stat`` is ``mean`` or ``sem``)."""
        e = self._expect
        sub = e[e["observable"] == observable]
        if sub.empty:
            raise ValueError(f"observable {observable!r} not in this result; have "
                             f"{sorted(e['observable'].unique())}")
        # rows of one site are in time order (times may repeat): reshape by position;
        # components keep the table's order (pairs in the order they were given)
        key = ["site", "site2"] if "site2" in sub.columns else ["site"]
        ncomp = len(sub.drop_duplicates(key))
        if observable in PAIR_NAMES:
            return sub[stat].to_numpy().reshape(ncomp, -1).T
        sub = sub.sort_values("site", kind="stable")
        return sub[stat].to_numpy().reshape(ncomp, -1).T

    def __repr__(self):
        meta = self._metadata
        return (f"Result(solver={meta.get('solver')!r}, N={meta.get('model', {}).get('N')}, "
                f"ntraj={meta.get('ntraj')}, rows={len(self._expect)})")

    # ---------------------------------------------------------------- merging
    def __add__(self, other):
        """``res_a + res_b``: pooled trajectory results (see :func:`merge`)."""
        if not isinstance(other, Result):
            return NotImplemented
        return merge(self, other)

    def __radd__(self, other):
        # lets sum([res_a, res_b, ...]) start from 0
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    # ---------------------------------------------------------------- comparison
    def effective_sem(self) -> np.ndarray:
        """The rows' effective standard errors (:func:`effective_sem`), in row order."""
        e = self._expect
        return effective_sem(e["observable"].to_numpy(), e["site"].to_numpy(),
                             e["sem"].to_numpy(), e["ntraj"].to_numpy(),
                             self._metadata.get("model", {}).get("couplings"),
                             operator_floors(self._metadata.get("operators")))

    def compare(self, other: Result, atol: float = 1e-12) -> pd.DataFrame:
        """Row-by-row z-scores ``diff / sqrt(sem_eff^2 + other.sem_eff^2 + atol^2)``.

        ``diff = mean - other.mean``; ``sem_eff`` are the effective standard
        errors of :func:`effective_sem`: ``max(sem, delta / ntraj)`` for
        trajectory rows, where ``delta`` is one event's worth of the
        observable, so a row where every trajectory agreed (``sem = 0``) and
        the other value differs by less than one trajectory's worth has
        ``|z| < 1``, never a huge or infinite z. Exact rows (``ntraj = 0``)
        keep ``sem = 0``.

        Rows are matched on ``(t, observable, site)``; rows present in only one
        result are dropped. ``atol`` is a round-off floor: values that vanish by
        symmetry (e.g. ``j`` at Delta T = 0) come out as ~1e-16 with standard
        errors ~1e-18, and without the floor their z-scores would measure
        rounding, not statistics. Exact against exact (both ``ntraj = 0``):
        ``z = diff / atol``, a difference in units of the round-off floor; with
        ``atol = 0`` and both errors zero, z is 0 for equal means and +-inf
        otherwise. Rows without trajectories left (``mean`` NaN) give NaN.

        Returns
        -------
        pandas.DataFrame
            ``t, observable, site, mean, mean_other, diff, sem, sem_eff, z``:
            ``sem`` is the combined raw error ``sqrt(sem^2 + other.sem^2)``,
            ``sem_eff`` the combined effective error used in ``z`` (without
            ``atol``).
        """
        merged, keys = self._matched(other)
        diff = merged["mean"] - merged["mean_other"]
        err = np.sqrt(merged["sem"] ** 2 + merged["sem_other"] ** 2)
        obs, site = merged["observable"].to_numpy(), merged["site"].to_numpy()
        eff_a = effective_sem(obs, site, merged["sem"].to_numpy(), merged["ntraj"].to_numpy(),
                              self._metadata.get("model", {}).get("couplings"),
                              operator_floors(self._metadata.get("operators")))
        eff_b = effective_sem(obs, site, merged["sem_other"].to_numpy(),
                              merged["ntraj_other"].to_numpy(),
                              other._metadata.get("model", {}).get("couplings"),
                              operator_floors(other._metadata.get("operators")))
        eff = np.sqrt(eff_a**2 + eff_b**2)
        den = np.sqrt(eff**2 + float(atol) ** 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(den > 0, diff / den, np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
        out = {"t": merged["t"], "observable": merged["observable"], "site": merged["site"]}
        if "site2" in keys:
            out["site2"] = merged["site2"]
        out.update({"mean": merged["mean"], "mean_other": merged["mean_other"], "diff": diff,
                    "sem": err, "sem_eff": eff, "z": z})
        return pd.DataFrame(out)

    def _matched(self, other: Result) -> tuple[pd.DataFrame, list]:
        """Rows of both results matched on ``(t, observable, site[, site2])``, with each
        side's row position (``_row``, ``_row_other``); and the match keys."""
        if not isinstance(other, Result):
            raise ValueError(f"can only compare with a Result, got {type(other).__name__}")
        # the k-th occurrence of (t, observable, site) matches the k-th (repeated times)
        keys = ["t", "observable", "site", "_occurrence"]
        if "site2" in self._expect.columns and "site2" in other._expect.columns:
            keys.insert(3, "site2")

        def tag(df):
            return df.assign(_occurrence=df.groupby(keys[:-1]).cumcount(),
                             _row=np.arange(len(df)))

        merged = tag(self._expect).merge(tag(other._expect), on=keys, suffixes=("", "_other"))
        if merged.empty:
            raise ValueError("the two results have no (t, observable, site) rows in common")
        return merged, keys

    def goodness_of_fit(self, other: Result, flips: int = GOF_FLIPS) -> pd.Series:
        """One test for the whole comparison with ``other``, calibrated despite
        correlated rows.

        Rows of one trajectory run are strongly correlated (neighbouring times,
        sites, observables share trajectories), so the per-row z-scores of
        :meth:`compare` are not independent, and a run of ``|z| > 3`` on a
        correct run can be one fluctuation seen many times. This test takes
        the correlations into account without modelling them: the run's
        independent trajectory groups (blocks of 64 trajectories dealt
        round-robin into up to 64 groups) each give a deviation from the
        reference, and the statistic ``chi2 = sum over rows of z^2`` is held
        against its distribution under random sign flips of the groups'
        deviations (:func:`thermospin_mc.errorbars.signflip_fit`,
        ``docs/statistics.md``). Under the null hypothesis (both results
        estimate the same values) ``p_value`` is uniform on [0, 1].

        Parameters
        ----------
        other : Result
            The reference: an exact result (``mesolve``, ``steadystate``), or
            another trajectory run of the same model and output times with an
            independent seed (its groups are paired with this run's in order;
            unpaired groups are left out).
        flips : int
            Random sign patterns (default ``GOF_FLIPS`` = 19999; all ``2^G``
            patterns when there are fewer). The p-value is never below
            ``1 / (flips + 1)``.

        Returns
        -------
        pandas.Series
            ``chi2`` (sum of the rows' squared z, each with the group-based
            spread floored at one event), ``dof`` (effective number of
            independent rows: ``2 E[chi2]^2 / Var[chi2]`` under the null),
            ``p_value``, ``rows`` (rows tested: matched, finite, holding
            every trajectory, with a nonzero spread), ``groups`` (independent
            groups or pairs), ``flips`` (sign patterns compared). ``p_value``
            is NaN when no tested row varies.

        Raises
        ------
        ValueError
            ``self`` (or a trajectory ``other``) has no trajectory groups
            (exact results; files written before this version), fewer than
            6 groups (at least 6 blocks of 64 trajectories), or no matched
            row holds every trajectory (``max_magnons`` truncation everywhere).
        """
        flips = int(flips)
        if flips < 1:
            raise ValueError(f"flips must be >= 1, got {flips}")
        merged, _ = self._matched(other)
        sides = [(self, "_row", "ntraj")]
        if (merged["ntraj_other"].to_numpy() > 0).any():
            sides.append((other, "_row_other", "ntraj_other"))
        use = np.isfinite(merged["mean"].to_numpy()) & np.isfinite(
            merged["mean_other"].to_numpy())
        for res, _, ncol in sides:
            if res._groups is None:
                raise ValueError("goodness_of_fit needs the trajectory groups of a trajectory "
                                 "result (mcsolve of this version; exact results and older "
                                 "files have none)")
            total = int(res._groups["count"].sum(axis=0).max())
            use &= merged[ncol].to_numpy() == total
        if not use.any():
            raise ValueError("goodness_of_fit: no matched row holds every trajectory (rows "
                             "truncated by max_magnons are not tested)")
        merged = merged[use]
        parts = []
        for res, col, _ in sides:
            idx = merged[col].to_numpy()
            parts.append((res._groups["count"][:, idx].max(axis=1).astype(float),
                          res._groups["mean"][:, idx]))
        (wa, xa) = parts[0]
        if len(parts) == 1:
            dev, weight = xa - merged["mean_other"].to_numpy(), wa
        else:
            (wb, xb) = parts[1]
            k = min(len(wa), len(wb))
            dev, weight = xa[:k] - xb[:k], 1.0 / (1.0 / wa[:k] + 1.0 / wb[:k])
        floor = one_event(merged["observable"].to_numpy(), merged["site"].to_numpy(),
                          self._metadata.get("model", {}).get("couplings"),
                          operator_floors(self._metadata.get("operators"))) / np.sqrt(wa.sum())
        out = signflip_fit(dev, weight, floor, flips)
        return pd.Series(out, dtype=object).rename("goodness_of_fit")

    # ---------------------------------------------------------------- export
    def to_parquet(self, directory: str | Path, prefix: str = "") -> list[Path]:
        """Write ``expect`` (and ``jumps``) as parquet files with the metadata embedded."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        out = [_io.write_table(self._expect, directory / f"{prefix}expect.parquet",
                               self._metadata, self._hidden())]
        if self._jumps is not None:
            out.append(_io.write_table(self._jumps, directory / f"{prefix}jumps.parquet",
                                       self._metadata))
        return out

    def to_csv(self, directory: str | Path, prefix: str = "") -> list[Path]:
        """Write ``expect`` (and ``jumps``) as plain CSV files.

        ``pandas.read_csv`` reads them as they are; the metadata goes to the
        sidecar files ``<prefix>expect.meta.json`` (and ``jumps.meta.json``).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        out = [_io.write_table(self._expect, directory / f"{prefix}expect.csv", self._metadata,
                               self._hidden())]
        if self._jumps is not None:
            out.append(_io.write_table(self._jumps, directory / f"{prefix}jumps.csv",
                                       self._metadata))
        return out

    def save(self, directory: str | Path, formats=("parquet", "csv"),
             prefix: str = "") -> list[Path]:
        """Write the tables in each of ``formats`` (``"parquet"``, ``"csv"``).

        The directory is checked (created, writable) first. If writing fails
        anyway, the tables are rescued to a new directory under the system's
        temporary directory and :class:`thermospin_mc.io.OutputError` says
        where: nothing computed is lost. Returns the written paths.
        """
        for fmt in formats:
            if fmt not in ("parquet", "csv"):
                raise ValueError(f"formats must be 'parquet' and/or 'csv', got {fmt!r}")
        return _io.save_result(self, directory, tuple(formats), prefix)

    def metadata_json(self) -> str:
        return _io.dumps(self._metadata)

    def _hidden(self) -> dict | None:
        """What the files keep besides the columns: the exact per-row ``m2`` and the
        trajectory groups (base64 of little-endian int64 / float64)."""
        if not (self._expect["ntraj"].to_numpy() > 0).any():
            return None
        out = {"m2": [float(x) for x in self._m2]}
        if self._groups is not None:
            g = self._groups
            out["groups"] = {"shape": list(g["count"].shape),
                             "count": _encode(g["count"], "<i8"),
                             "mean": _encode(g["mean"], "<f8")}
        return out


def _find(directory: Path, prefix: str, name: str) -> Path | None:
    for suffix in (".parquet", ".csv"):
        cand = directory / f"{prefix}{name}{suffix}"
        if cand.exists():
            return cand
    return None


def read_result(path: str | Path, prefix: str = ""):
    """Load a result written by ``Result.save``/``to_parquet``/``to_csv``.

    Parameters
    ----------
    path : str or Path
        The output directory (``expect.parquet`` is preferred over
        ``expect.csv``; ``prefix`` selects ``<prefix>expect.*``), or one table
        file (``.../expect.csv``, ``.../b_expect.parquet``); the jump table of
        the same run next to it is loaded too.

    Returns
    -------
    Result
        With ``expect``, ``jumps`` (``None`` when none were recorded),
        ``metadata`` and ``states`` (the block density matrices of
        ``<prefix>states.npz`` next to the table, ``states=True`` runs; else ``None``).
    """
    path = Path(path)
    if path.is_dir():
        exp = _find(path, prefix, "expect")
        if exp is None:
            raise ValueError(f"no {prefix}expect.parquet or {prefix}expect.csv in "
                             f"{str(path)!r}")
    else:
        exp = path
        if not exp.exists():
            raise ValueError(f"result file does not exist: {str(exp)!r}")
        if "expect" not in exp.stem:
            raise ValueError(f"expected an expect table (…expect.parquet/.csv), got "
                             f"{str(exp)!r}")
    expect, meta, hidden = _io.read_table(exp, hidden=True)
    head, _, tail = exp.stem.rpartition("expect")
    jpath = exp.with_name(f"{head}jumps{tail}{exp.suffix}")
    jumps = _io.read_table(jpath)[0] if jpath.exists() else None
    m2 = hidden.get("m2")
    if m2 is not None and len(m2) != len(expect):
        m2 = None  # a table edited by hand: fall back to its standard errors
    groups = _decode_groups(hidden["groups"], len(expect)) if "groups" in hidden else None
    spath = exp.with_name(f"{head}{_io.STATES_FILE}")
    states = None
    if spath.exists():
        N, blocks = _io.read_states(spath)
        states = [BlockState(N, b) for b in blocks]
    return Result(expect, meta, jumps, m2=m2, groups=groups, states=states)


# --------------------------------------------------------------------------- merging
def _seeds(meta: dict) -> list:
    if "seeds" in meta:
        return list(meta["seeds"])
    return [meta.get("seed")]


def _fingerprint(meta: dict) -> str:
    if meta.get("model_fingerprint"):
        return meta["model_fingerprint"]
    blob = json.dumps(meta.get("model"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def merge(*results: Result) -> Result:
    """Pool trajectory results of the same model and times from independent seeds.

    Means and standard errors are exact pooled values: each result owns its
    per-row accumulators (count, mean, sum of squared deviations ``m2``,
    :attr:`Result.accumulators`), pooled by :func:`chan_merge`, the formula
    that reduces the blocks of one run. The merged result equals, up to
    rounding, one run over the union of the trajectories.

    Parameters
    ----------
    *results : Result
        Trajectory results (``mcsolve``, earlier merges, or results read back
        with :func:`read_result`), or one list of them.

    Returns
    -------
    Result
        ``metadata["seeds"]`` lists the seeds of the parts, ``ntraj`` their sum.
        Jump records are concatenated with trajectory indices shifted by the
        number of trajectories of the preceding parts (``traj_offsets``).

    Raises
    ------
    ValueError
        If the parts differ in model, output times, observables or
        ``max_magnons``, are not trajectory results (exact results have
        ``ntraj = 0``: nothing to pool), or share a seed (their random streams
        would overlap).
    """
    if len(results) == 1 and isinstance(results[0], (list, tuple)):
        results = tuple(results[0])
    if not results:
        raise ValueError("merge needs at least one result")
    for i, r in enumerate(results):
        if not isinstance(r, Result):
            raise ValueError(f"merge takes Result objects, got {type(r).__name__} at "
                             f"position {i}")
        if r._metadata.get("solver") != "mcsolve":
            raise ValueError(f"only trajectory results (mcsolve) can be merged; result {i} "
                             f"comes from {r._metadata.get('solver')!r}")
    first = results[0]
    fm0 = first._metadata
    fp = _fingerprint(fm0)
    keys = ["t", "observable", "site"]
    if "site2" in first._expect.columns:  # two-point rows (pairs)
        keys.append("site2")

    def ordered(r):
        return r._expect.assign(_m2=r._m2).sort_values(keys, kind="stable")

    base = ordered(first)
    seen = {}
    for i, r in enumerate(results):
        for s in _seeds(r._metadata):
            tag = json.dumps(s)
            if s is None or tag in seen:
                raise ValueError(
                    f"results {seen.get(tag, i)} and {i} share the seed {s!r}: their "
                    "trajectories overlap, merging would count them twice; merge only runs "
                    "with different seeds")
            seen[tag] = i
        if i == 0:
            continue
        meta = r._metadata
        if _fingerprint(meta) != fp:
            fm, om = fm0.get("model", {}), meta.get("model", {})
            diff = sorted(k for k in set(fm) | set(om) if fm.get(k) != om.get(k))
            raise ValueError(f"cannot merge results of different models (result 0 and {i} "
                             f"differ in {', '.join(diff) or 'model fingerprint'})")
        if meta.get("max_magnons") != fm0.get("max_magnons"):
            raise ValueError(f"cannot merge results with different max_magnons "
                             f"({fm0.get('max_magnons')} and {meta.get('max_magnons')})")
        other = ordered(r)
        if not np.array_equal(np.unique(other["t"]), np.unique(base["t"])):
            raise ValueError(f"cannot merge results with different output times (result 0 "
                             f"and {i})")
        if len(other) != len(base) or not (
                other["observable"].equals(base["observable"])
                and np.array_equal(other["site"].to_numpy(), base["site"].to_numpy())
                and ("site2" not in keys or ("site2" in other.columns and np.array_equal(
                    other["site2"].to_numpy(), base["site2"].to_numpy())))
                and np.array_equal(other["t"].to_numpy(), base["t"].to_numpy())):
            raise ValueError(f"cannot merge results with different observables (result 0 "
                             f"has {sorted(base['observable'].unique())}, result {i} has "
                             f"{sorted(other['observable'].unique())})")
    n = base["ntraj"].to_numpy().astype(np.float64)
    mean = np.where(n > 0, base["mean"].to_numpy().astype(np.float64), 0.0)
    m2 = base["_m2"].to_numpy()
    for r in results[1:]:
        o = ordered(r)
        nb = o["ntraj"].to_numpy().astype(np.float64)
        mb = np.where(nb > 0, o["mean"].to_numpy().astype(np.float64), 0.0)
        mean, m2 = chan_merge(n, mean, m2, nb, mb, o["_m2"].to_numpy())
        n = n + nb
    out = base.drop(columns="_m2")
    out["mean"] = np.where(n > 0, mean, np.nan)
    out["sem"] = sem_from_m2(n, m2)
    out["ntraj"] = n.astype(np.int64)
    out["_m2"] = m2
    out = out.sort_index().reset_index(drop=True)  # back to the first result's row order
    m2 = out.pop("_m2").to_numpy()
    out.attrs = {}
    metas = [r._metadata for r in results]
    total = int(sum(m.get("ntraj", 0) for m in metas))
    meta = dict(fm0)
    for k in ("stopped_by", "checkpoint", "resumed_ntraj", "achieved_sem", "n_jobs",
              "backend", "time_limit", "compile_s", "run_s", "traj_per_s"):
        meta.pop(k, None)
    offsets = np.cumsum([0] + [int(m.get("ntraj", 0)) for m in metas[:-1]]).tolist()
    modes = {}
    for m in metas:
        modes.update(m.get("sector_modes", {}))
    meta.update({
        "seed": None, "seeds": [s for m in metas for s in _seeds(m)], "ntraj": total,
        "merged_from": len(results), "traj_offsets": offsets,
        "model_fingerprint": fp,
        "truncated_fraction": sum(m.get("truncated_fraction", 0.0) * m.get("ntraj", 0)
                                  for m in metas) / max(total, 1),
        "elapsed_s": float(sum(m.get("elapsed_s", 0.0) for m in metas)),
        "sector_modes": dict(sorted(modes.items())),
        "version": sorted({str(m.get("version")) for m in metas})[-1],
    })
    jumps = None
    if all(r._jumps is not None for r in results):
        parts = []
        for off, r in zip(offsets, results, strict=True):
            j = r._jumps.copy()
            j.attrs = {}
            j["traj"] = j["traj"] + off
            parts.append(j)
        jumps = pd.concat(parts, ignore_index=True)
    traj = None
    if all(r._trajectories is not None for r in results):
        cols0 = first.trajectories["columns"]
        if all(r.trajectories["columns"] == cols0 for r in results):
            traj = {"rows": np.concatenate([r._trajectories["rows"] for r in results]),
                    "columns": cols0}
    groups = None
    if all(r._groups is not None for r in results):
        # each part's groups, columns moved to the first result's row order
        at = base.index.to_numpy()
        counts, means = [], []
        for r in results:
            src = ordered(r).index.to_numpy()
            for key, dest in (("count", counts), ("mean", means)):
                arr = np.zeros((r._groups[key].shape[0], len(at)), dtype=r._groups[key].dtype)
                arr[:, at] = r._groups[key][:, src]
                dest.append(arr)
        groups = {"count": np.concatenate(counts), "mean": np.concatenate(means)}
    return Result(out, meta, jumps=jumps, trajectories=traj, m2=m2, groups=groups,
                  states=_pool_states(results, metas))


def _pool_states(results, metas) -> list | None:
    """Trajectory-averaged block density matrices of the parts, pooled: each part's
    state weighted by its trajectories (``None`` unless every part has states)."""
    if not all(r._states is not None for r in results):
        return None
    weights = np.array([float(m.get("ntraj", 0)) for m in metas])
    weights = weights / weights.sum()
    pooled = []
    for per_time in zip(*(r._states for r in results), strict=True):
        blocks: dict = {}
        for w, st in zip(weights, per_time, strict=True):
            for m, B in st.blocks.items():
                blocks[m] = blocks.get(m, 0) + w * np.asarray(B)
        pooled.append(BlockState(per_time[0].N, blocks))
    return pooled
