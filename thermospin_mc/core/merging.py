"""Pooling trajectory statistics: the per-row accumulators ``(count, mean, m2)``,
Chan's pairwise merge of them, and the parts of a merged result.

:func:`chan_merge` is the one pooling formula of the package: the trajectory
reducer folds its statistics blocks with it, and :func:`thermospin_mc.core.results.merge`
(also ``res_a + res_b``) pools finished results with it, so that a merge equals, up
to rounding, one run over the union of the trajectories. :func:`merged_parts`
checks and pools the parts of such a merge (tables, metadata, jump records, kept
trajectories, trajectory groups, states) through the public attributes of the
results.
"""

from __future__ import annotations

import hashlib
import json
from typing import NamedTuple

import numpy as np
import pandas as pd

from .blockstate import BlockState

__all__ = ["chan_merge", "sem_from_m2", "Accumulators", "merged_parts"]


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


def merged_parts(results) -> dict:
    """The pooled parts of trajectory results (checked by the caller to be
    :class:`~thermospin_mc.core.results.Result` objects of ``mcsolve``): the arguments
    ``expect, metadata, jumps, trajectories, m2, groups, states`` of the merged result.

    Raises ``ValueError`` where the parts cannot be merged (see
    :func:`thermospin_mc.core.results.merge`).
    """
    first = results[0]
    keys = ["t", "observable", "site"]
    if "site2" in first.expect.columns:  # two-point rows (pairs)
        keys.append("site2")
    frames = _check_parts(results, keys)
    out, m2 = _pooled_table(frames)
    metas = [r.metadata for r in results]
    meta, offsets = _merged_metadata(metas, len(results))
    return {"expect": out, "metadata": meta, "jumps": _merged_jumps(results, offsets),
            "trajectories": _merged_trajectories(results), "m2": m2,
            "groups": _merged_groups(results, frames),
            "states": _pool_states(results, metas)}


def _ordered(r, keys: list) -> pd.DataFrame:
    """The rows of ``r`` with their ``m2`` (column ``_m2``), sorted by ``keys``."""
    return r.expect.assign(_m2=r.accumulators.m2).sort_values(keys, kind="stable")


def _check_parts(results, keys: list) -> list[pd.DataFrame]:
    """Check that the parts can be merged (distinct seeds, same model, ``max_magnons``,
    output times and rows); return each part's rows in the :func:`_ordered` order."""
    fm0 = results[0].metadata
    fp = _fingerprint(fm0)
    base = _ordered(results[0], keys)
    frames = [base]
    seen = {}
    for i, r in enumerate(results):
        meta = r.metadata
        for s in _seeds(meta):
            tag = json.dumps(s)
            if s is None or tag in seen:
                raise ValueError(
                    f"results {seen.get(tag, i)} and {i} share the seed {s!r}: their "
                    "trajectories overlap, merging would count them twice; merge only runs "
                    "with different seeds")
            seen[tag] = i
        if i == 0:
            continue
        if _fingerprint(meta) != fp:
            fm, om = fm0.get("model", {}), meta.get("model", {})
            diff = sorted(k for k in set(fm) | set(om) if fm.get(k) != om.get(k))
            raise ValueError(f"cannot merge results of different models (result 0 and {i} "
                             f"differ in {', '.join(diff) or 'model fingerprint'})")
        if meta.get("max_magnons") != fm0.get("max_magnons"):
            raise ValueError(f"cannot merge results with different max_magnons "
                             f"({fm0.get('max_magnons')} and {meta.get('max_magnons')})")
        other = _ordered(r, keys)
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
        frames.append(other)
    return frames


def _pooled_table(frames: list) -> tuple[pd.DataFrame, np.ndarray]:
    """The pooled ``expect`` table (the first part's row order) and its ``m2``, from the
    parts' :func:`_ordered` rows."""
    base = frames[0]
    n = base["ntraj"].to_numpy().astype(np.float64)
    mean = np.where(n > 0, base["mean"].to_numpy().astype(np.float64), 0.0)
    m2 = base["_m2"].to_numpy()
    for o in frames[1:]:
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
    return out, m2


def _merged_metadata(metas: list, count: int) -> tuple[dict, list]:
    """The merged result's metadata (the first part's, without its run details) and the
    trajectory offsets of the parts."""
    total = int(sum(m.get("ntraj", 0) for m in metas))
    meta = dict(metas[0])
    for k in ("stopped_by", "checkpoint", "resumed_ntraj", "achieved_sem", "n_jobs",
              "backend", "time_limit", "compile_s", "run_s", "traj_per_s"):
        meta.pop(k, None)
    offsets = np.cumsum([0] + [int(m.get("ntraj", 0)) for m in metas[:-1]]).tolist()
    modes = {}
    for m in metas:
        modes.update(m.get("sector_modes", {}))
    meta.update({
        "seed": None, "seeds": [s for m in metas for s in _seeds(m)], "ntraj": total,
        "merged_from": count, "traj_offsets": offsets,
        "model_fingerprint": _fingerprint(metas[0]),
        "truncated_fraction": sum(m.get("truncated_fraction", 0.0) * m.get("ntraj", 0)
                                  for m in metas) / max(total, 1),
        "elapsed_s": float(sum(m.get("elapsed_s", 0.0) for m in metas)),
        "sector_modes": dict(sorted(modes.items())),
        "version": sorted({str(m.get("version")) for m in metas})[-1],
    })
    return meta, offsets


def _merged_jumps(results, offsets: list) -> pd.DataFrame | None:
    """Jump records of the parts, trajectory indices shifted by ``offsets`` (``None``
    unless every part has them)."""
    if not all(r.jumps is not None for r in results):
        return None
    parts = []
    for off, r in zip(offsets, results, strict=True):
        j = r.jumps.copy()
        j.attrs = {}
        j["traj"] = j["traj"] + off
        parts.append(j)
    return pd.concat(parts, ignore_index=True)


def _merged_trajectories(results) -> dict | None:
    """Kept trajectories of the parts, concatenated (``None`` unless every part kept
    them, with the same columns)."""
    if not all(r.trajectories is not None for r in results):
        return None
    cols0 = results[0].trajectories["columns"]
    if all(r.trajectories["columns"] == cols0 for r in results):
        return {"rows": np.concatenate([r.trajectories["rows"] for r in results]),
                "columns": cols0}
    return None


def _merged_groups(results, frames: list) -> dict | None:
    """Each part's trajectory groups, columns moved to the first result's row order
    (``None`` unless every part has groups)."""
    if not all(r.groups is not None for r in results):
        return None
    at = frames[0].index.to_numpy()
    counts, means = [], []
    for r, o in zip(results, frames, strict=True):
        src = o.index.to_numpy()
        groups = r.groups
        for key, dest in (("count", counts), ("mean", means)):
            arr = np.zeros((groups[key].shape[0], len(at)), dtype=groups[key].dtype)
            arr[:, at] = groups[key][:, src]
            dest.append(arr)
    return {"count": np.concatenate(counts), "mean": np.concatenate(means)}


def _seeds(meta: dict) -> list:
    if "seeds" in meta:
        return list(meta["seeds"])
    return [meta.get("seed")]


def _fingerprint(meta: dict) -> str:
    if meta.get("model_fingerprint"):
        return meta["model_fingerprint"]
    blob = json.dumps(meta.get("model"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _pool_states(results, metas) -> list | None:
    """Trajectory-averaged block density matrices of the parts, pooled: each part's
    state weighted by its trajectories (``None`` unless every part has states)."""
    if not all(r.states is not None for r in results):
        return None
    weights = np.array([float(meta.get("ntraj", 0)) for meta in metas])
    weights = weights / weights.sum()
    pooled = []
    for per_time in zip(*(r.states for r in results), strict=True):
        blocks: dict = {}
        for w, st in zip(weights, per_time, strict=True):
            for sector, B in st.blocks.items():
                blocks[sector] = blocks.get(sector, 0) + w * np.asarray(B)
        pooled.append(BlockState(per_time[0].N, blocks))
    return pooled
