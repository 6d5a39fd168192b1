"""The result type shared by the exact solvers and the trajectory engine.

A :class:`Result` holds the tidy ``expect`` table (columns ``t, observable, site,
mean, sem, ntraj``; layout and observables in :mod:`thermospin_mc.core.tables`),
the run's metadata (:func:`metadata`), and optionally jump records, kept
trajectories, steady-state blocks, block density matrices and the independent
trajectory groups. Exact results have ``sem = 0`` and ``ntraj = 0``.

A :class:`Result` is immutable and owns its per-row accumulators (count =
``ntraj``, mean, sum of squared deviations ``m2``), so that :func:`merge`
(also ``res_a + res_b``) pools trajectory results exactly, with
:func:`chan_merge`, the one pooling formula of the package (the trajectory
reducer uses it too; :mod:`thermospin_mc.core.merging`). Its row matching
(:meth:`Result.compare`, :meth:`Result.goodness_of_fit`) lives in
:mod:`thermospin_mc.core.comparison`. This module holds the type, its files
(:meth:`Result.save`, :func:`read_result`) and :func:`merge`, and no trajectory
machinery: the exact solvers build complete results here without reaching the
trajectory engine.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from .. import io as _io
from .blockstate import BlockState
from .comparison import ResultComparison
from .errorbars import ONE_EVENT, effective_sem, one_event  # re-export
from .merging import Accumulators, chan_merge, merged_parts, sem_from_m2
from .observables import OBSERVABLES, PAIR_NAMES, observable_sites
from .tables import expect_table, metadata, table_values  # re-export

__all__ = ["Result", "OBSERVABLES", "ONE_EVENT", "expect_table", "table_values",
           "observable_sites", "effective_sem", "one_event", "read_result", "merge",
           "chan_merge", "sem_from_m2", "Accumulators", "metadata"]


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


class Result(ResultComparison):
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
    parts = merged_parts(results)
    return Result(parts.pop("expect"), parts.pop("metadata"), **parts)
