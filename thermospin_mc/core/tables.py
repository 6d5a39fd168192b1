"""The tidy ``expect`` table of a result: its row layout, and the metadata builder.

``Result.expect`` is a tidy table with columns ``t, observable, site, mean, sem,
ntraj`` (``site2`` with two-point observables). Observables (docs/model.md
section 7; defined in :mod:`thermospin_mc.core.observables`):

- ``j``: total spin current of Eq. 9 (site 0);
- ``j_bond``: the terms of Eq. 9 per bond (site = bond index 1..N-1);
- ``flow``: physical magnon flow ``F_l = (a_l / 2) j_l`` per bond;
- ``m``: magnetisation ``N/2 - <number of magnons>`` (site 0);
- ``n``: occupation ``<n_i>`` of down spins per site (1..N);
- ``norm``: trace of the density matrix (exact solvers only).

The rows of user operators follow the built-in ones. Exact results have ``sem = 0``
and ``ntraj = 0``. :func:`expect_table` builds the table from per-observable arrays,
:func:`table_values` flattens arrays in its row order, and :func:`metadata` is the
one metadata builder of results and tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._version import __version__
from .observables import OBSERVABLES, PAIR_NAMES, operator_rows, table_rows

__all__ = ["metadata", "expect_table", "table_values"]


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

    Rows and labels come from :mod:`thermospin_mc.core.observables`; a ``site2``
    column is added when two-point observables (``pairs``) are present. The
    rows of user ``operators`` (:class:`~thermospin_mc.core.operators.Operator`)
    follow the built-in ones, in the order given: ``means[row]`` of shape
    ``(nt,)`` or ``(nt, 1)`` for each of their row names
    (:func:`~thermospin_mc.core.observables.operator_rows`), site 0.
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
