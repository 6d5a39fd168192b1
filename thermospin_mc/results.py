"""The result type shared by the exact solvers and the trajectory engine.

``Result.expect`` is a tidy table with columns ``t, observable, site, mean, sem,
ntraj``. Observables (MODEL.md section 7, DESIGN.md):

- ``j``: total spin current of Eq. 9 (site 0);
- ``j_bond``: the terms of Eq. 9 per bond (site = bond index 1..N-1);
- ``flow``: physical magnon flow ``F_l = (a_l / 2) j_l`` per bond;
- ``m``: magnetisation ``N/2 - <number of magnons>`` (site 0);
- ``n``: occupation ``<n_i>`` of down spins per site (1..N);
- ``norm``: trace of the density matrix (exact solvers only).

Exact results have ``sem = 0`` and ``ntraj = 0``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import io as _io
from .observables import OBSERVABLES, PAIR_NAMES, observable_sites, table_rows

__all__ = ["Result", "OBSERVABLES", "expect_table", "observable_sites", "effective_sem",
           "one_event", "read_result"]

#: One event's worth of each trajectory observable: the largest change of one
#: trajectory's value that one magnon more or less (one quantum jump) can make.
#: ``j``: one magnon's current lies in (-4, 4) (Eq. 9 in the one-magnon sector
#: is a hopping matrix with amplitudes +-2i); ``j_bond``: one bond term of one
#: magnon lies in [-2, 2]; ``m``: a jump changes the magnon number by 1;
#: ``n``: a site's occupation lies in [0, 1]; ``flow`` of bond l:
#: ``(a_l / 2) * 2 = a_l`` (taken from the couplings); two-point ``nn``,
#: ``pm_re``, ``pm_im`` lie in [-1, 1]; a jump count (``count:<channel>``)
#: changes by 1 per jump.
ONE_EVENT = {"j": 4.0, "j_bond": 2.0, "m": 1.0, "n": 1.0, "nn": 1.0, "pm_re": 1.0,
             "pm_im": 1.0}


def one_event(observable, site, couplings=None) -> np.ndarray:
    """One event's worth ``delta`` of each row (see ``ONE_EVENT``); 0 when undefined.

    ``observable`` and ``site`` are scalars or equal-length arrays; ``flow``
    needs the model's ``couplings`` (its ``delta`` is ``a_l`` of bond ``site``).
    """
    obs = np.atleast_1d(np.asarray(observable, dtype=object))
    site = np.broadcast_to(np.atleast_1d(np.asarray(site)), obs.shape)
    delta = np.array([1.0 if str(o).startswith("count:") else ONE_EVENT.get(str(o), 0.0)
                      for o in obs], dtype=float)
    flow = obs == "flow"
    if flow.any() and couplings is not None:
        a = np.asarray(couplings, dtype=float)
        idx = site[flow].astype(int) - 1
        ok = (idx >= 0) & (idx < a.size)
        delta[np.flatnonzero(flow)[ok]] = a[idx[ok]]
    return delta


def effective_sem(observable, site, sem, ntraj, couplings=None) -> np.ndarray:
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

    Returns
    -------
    numpy.ndarray
        Effective standard errors, same length as the rows.
    """
    sem = np.atleast_1d(np.asarray(sem, dtype=float))
    n = np.broadcast_to(np.atleast_1d(np.asarray(ntraj, dtype=float)), sem.shape)
    delta = np.broadcast_to(one_event(observable, site, couplings), sem.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        floor = np.where(n > 0, delta / np.where(n > 0, n, 1.0), 0.0)
    base = np.where(np.isnan(sem) & (n > 0), 0.0, sem)
    return np.where(n > 0, np.maximum(base, floor), sem)



def expect_table(times: np.ndarray, N: int, means: dict, sems: dict | None = None,
                 ntraj: int = 0, pairs=None, channels=()) -> pd.DataFrame:
    """Assemble the tidy ``expect`` table from ``{name: (nt, ncomp)}`` arrays.

    Rows and labels come from :mod:`thermospin_mc.observables`; a ``site2``
    column is added when two-point observables (``pairs``) are present.
    """
    frames = []
    times = np.asarray(times, dtype=float)
    two_point = any(name in PAIR_NAMES for name in means)
    for name in OBSERVABLES:
        if name not in means:
            continue
        mean = np.asarray(means[name], dtype=float).reshape(times.size, -1)
        sem = (np.zeros_like(mean) if sems is None or name not in sems
               else np.asarray(sems[name], dtype=float).reshape(mean.shape))
        obs, sites, sites2 = table_rows(name, N, pairs, channels)
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


class Result:
    """Expectation values (and optionally jump records) of one run.

    Attributes
    ----------
    expect : pandas.DataFrame
        Columns ``t, observable, site, mean, sem, ntraj``.
    jumps : pandas.DataFrame or None
        Columns ``traj, t, channel, site, m_before`` when jumps were recorded.
    metadata : dict
        Model parameters, couplings, a(T) method, solver, seed, ntraj, version.
    """

    def __init__(self, expect: pd.DataFrame, metadata: dict, jumps: pd.DataFrame | None = None,
                 trajectories: dict | None = None):
        self.expect = expect
        self.jumps = jumps
        self.metadata = dict(metadata)
        self.trajectories = trajectories
        self.expect.attrs = {"thermospin_mc": self.metadata}
        if self.jumps is not None:
            self.jumps.attrs = {"thermospin_mc": self.metadata}

    # ---------------------------------------------------------------- access
    @property
    def times(self) -> np.ndarray:
        """Output times in order (repeated times appear repeatedly)."""
        first = self.expect.iloc[0]
        sub = self.expect[(self.expect["observable"] == first["observable"])
                          & (self.expect["site"] == first["site"])]
        return sub["t"].to_numpy()

    def get(self, observable: str, stat: str = "mean") -> np.ndarray:
        """``(nt, ncomp)`` array of one observable (``stat`` is ``mean`` or ``sem``)."""
        sub = self.expect[self.expect["observable"] == observable]
        if sub.empty:
            raise ValueError(f"observable {observable!r} not in this result; have "
                             f"{sorted(self.expect['observable'].unique())}")
        # rows of one site are in time order (times may repeat): reshape by position;
        # components keep the table's order (pairs in the order they were given)
        key = ["site", "site2"] if "site2" in sub.columns else ["site"]
        ncomp = len(sub.drop_duplicates(key))
        if observable in PAIR_NAMES:
            return sub[stat].to_numpy().reshape(ncomp, -1).T
        sub = sub.sort_values("site", kind="stable")
        return sub[stat].to_numpy().reshape(ncomp, -1).T

    def __repr__(self):
        meta = self.metadata
        return (f"Result(solver={meta.get('solver')!r}, N={meta.get('model', {}).get('N')}, "
                f"ntraj={meta.get('ntraj')}, rows={len(self.expect)})")

    # ---------------------------------------------------------------- merging
    def __add__(self, other):
        """``res_a + res_b``: pooled trajectory results (see ``thermospin_mc.merge``)."""
        if not isinstance(other, Result):
            return NotImplemented
        from .scaleout import merge

        return merge(self, other)

    def __radd__(self, other):
        # lets sum([res_a, res_b, ...]) start from 0
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    # ---------------------------------------------------------------- comparison
    def effective_sem(self) -> np.ndarray:
        """The rows' effective standard errors (:func:`effective_sem`), in row order."""
        e = self.expect
        return effective_sem(e["observable"].to_numpy(), e["site"].to_numpy(),
                             e["sem"].to_numpy(), e["ntraj"].to_numpy(),
                             self.metadata.get("model", {}).get("couplings"))

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
        # the k-th occurrence of (t, observable, site) matches the k-th (repeated times)
        keys = ["t", "observable", "site", "_occurrence"]
        if "site2" in self.expect.columns and "site2" in other.expect.columns:
            keys.insert(3, "site2")

        def tag(df):
            return df.assign(_occurrence=df.groupby(keys[:-1]).cumcount())

        merged = tag(self.expect).merge(tag(other.expect), on=keys, suffixes=("", "_other"))
        if merged.empty:
            raise ValueError("the two results have no (t, observable, site) rows in common")
        diff = merged["mean"] - merged["mean_other"]
        err = np.sqrt(merged["sem"] ** 2 + merged["sem_other"] ** 2)
        obs, site = merged["observable"].to_numpy(), merged["site"].to_numpy()
        eff_a = effective_sem(obs, site, merged["sem"].to_numpy(), merged["ntraj"].to_numpy(),
                              self.metadata.get("model", {}).get("couplings"))
        eff_b = effective_sem(obs, site, merged["sem_other"].to_numpy(),
                              merged["ntraj_other"].to_numpy(),
                              other.metadata.get("model", {}).get("couplings"))
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

    # ---------------------------------------------------------------- export
    def to_parquet(self, directory: str | Path, prefix: str = "") -> list[Path]:
        """Write ``expect`` (and ``jumps``) as parquet files with the metadata embedded."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        out = [_io.write_table(self.expect, directory / f"{prefix}expect.parquet",
                               self.metadata)]
        if self.jumps is not None:
            out.append(_io.write_table(self.jumps, directory / f"{prefix}jumps.parquet",
                                       self.metadata))
        return out

    def to_csv(self, directory: str | Path, prefix: str = "") -> list[Path]:
        """Write ``expect`` (and ``jumps``) as plain CSV files.

        ``pandas.read_csv`` reads them as they are; the metadata goes to the
        sidecar files ``<prefix>expect.meta.json`` (and ``jumps.meta.json``).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        out = [_io.write_table(self.expect, directory / f"{prefix}expect.csv", self.metadata)]
        if self.jumps is not None:
            out.append(_io.write_table(self.jumps, directory / f"{prefix}jumps.csv",
                                       self.metadata))
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
        return json.dumps(self.metadata, sort_keys=True, default=_io.jsonable)


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
        With ``expect``, ``jumps`` (``None`` when none were recorded) and
        ``metadata``.
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
    expect, meta = _io.read_table(exp)
    head, _, tail = exp.stem.rpartition("expect")
    jpath = exp.with_name(f"{head}jumps{tail}{exp.suffix}")
    jumps = _io.read_table(jpath)[0] if jpath.exists() else None
    return Result(expect, meta, jumps)
