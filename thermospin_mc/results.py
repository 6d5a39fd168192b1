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

from .observables import OBSERVABLES, PAIR_NAMES, observable_sites, table_rows

__all__ = ["Result", "OBSERVABLES", "expect_table", "observable_sites"]


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
    def compare(self, other: Result, atol: float = 1e-12) -> pd.DataFrame:
        """Row-by-row z-scores ``(mean - other.mean) / sqrt(sem^2 + other.sem^2 + atol^2)``.

        Rows are matched on ``(t, observable, site)``; rows present in only one
        result are dropped. ``atol`` is a round-off floor: values that vanish by
        symmetry (e.g. ``j`` at Delta T = 0) come out as ~1e-16 with standard
        errors ~1e-18, and without the floor their z-scores would measure
        rounding, not statistics. The ``sem`` column is the combined error
        without the floor. With ``atol = 0`` and both errors zero the z-score is
        0 for equal means and +-inf otherwise.
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
        den = np.sqrt(err**2 + float(atol) ** 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(den > 0, diff / den, np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
        out = {"t": merged["t"], "observable": merged["observable"], "site": merged["site"]}
        if "site2" in keys:
            out["site2"] = merged["site2"]
        out.update({"mean": merged["mean"], "mean_other": merged["mean_other"], "diff": diff,
                    "sem": err, "z": z})
        return pd.DataFrame(out)

    # ---------------------------------------------------------------- export
    def to_parquet(self, directory: str | Path, prefix: str = "") -> list[Path]:
        """Write ``expect`` (and ``jumps``) as parquet files with the metadata embedded."""
        from .io import write_table

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        out = [write_table(self.expect, directory / f"{prefix}expect.parquet", self.metadata)]
        if self.jumps is not None:
            out.append(write_table(self.jumps, directory / f"{prefix}jumps.parquet",
                                   self.metadata))
        return out

    def to_csv(self, directory: str | Path, prefix: str = "") -> list[Path]:
        """Write ``expect`` (and ``jumps``) as CSV files with ``# key: value`` metadata lines."""
        from .io import write_table

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        out = [write_table(self.expect, directory / f"{prefix}expect.csv", self.metadata)]
        if self.jumps is not None:
            out.append(write_table(self.jumps, directory / f"{prefix}jumps.csv", self.metadata))
        return out

    def metadata_json(self) -> str:
        return json.dumps(self.metadata, sort_keys=True, default=_json_default)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
