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

__all__ = ["Result", "OBSERVABLES", "expect_table", "observable_sites", "read_result"]

#: Observable names, in table order.
OBSERVABLES = ("j", "j_bond", "flow", "m", "n", "norm")


def observable_sites(name: str, N: int) -> np.ndarray:
    """1-based site/bond labels of an observable (0 for whole-chain observables)."""
    if name == "n":
        return np.arange(1, N + 1)
    if name in ("j_bond", "flow"):
        return np.arange(1, N)
    if name in ("j", "m", "norm"):
        return np.zeros(1, dtype=int)
    raise ValueError(f"unknown observable {name!r}; allowed: {OBSERVABLES}")


def expect_table(times: np.ndarray, N: int, means: dict, sems: dict | None = None,
                 ntraj: int = 0) -> pd.DataFrame:
    """Assemble the tidy ``expect`` table from ``{name: (nt, ncomp)}`` arrays."""
    frames = []
    times = np.asarray(times, dtype=float)
    for name in OBSERVABLES:
        if name not in means:
            continue
        mean = np.asarray(means[name], dtype=float).reshape(times.size, -1)
        sem = (np.zeros_like(mean) if sems is None or name not in sems
               else np.asarray(sems[name], dtype=float).reshape(mean.shape))
        sites = observable_sites(name, N)
        ncomp = sites.size
        frames.append(pd.DataFrame({
            "t": np.tile(times, ncomp),
            "observable": name,
            "site": np.repeat(sites, times.size),
            "mean": mean.T.ravel(),
            "sem": sem.T.ravel(),
            "ntraj": np.int64(ntraj),
        }))
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
        # rows of one site are in time order (times may repeat): reshape by position
        sub = sub.sort_values("site", kind="stable")
        nsite = sub["site"].nunique()
        return sub[stat].to_numpy().reshape(nsite, -1).T

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

        def tag(df):
            return df.assign(_occurrence=df.groupby(keys[:3]).cumcount())

        merged = tag(self.expect).merge(tag(other.expect), on=keys, suffixes=("", "_other"))
        if merged.empty:
            raise ValueError("the two results have no (t, observable, site) rows in common")
        diff = merged["mean"] - merged["mean_other"]
        err = np.sqrt(merged["sem"] ** 2 + merged["sem_other"] ** 2)
        den = np.sqrt(err**2 + float(atol) ** 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(den > 0, diff / den, np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
        return pd.DataFrame({
            "t": merged["t"], "observable": merged["observable"], "site": merged["site"],
            "mean": merged["mean"], "mean_other": merged["mean_other"], "diff": diff,
            "sem": err, "z": z,
        })

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
