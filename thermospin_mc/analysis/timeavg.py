"""Steady-state values from time averages of kept trajectory rows
(``mcsolve(..., checkpoint=Checkpointing(keep_trajectories=True))``), and the error
of the mean of one correlated series (docs/statistics.md).

Error bars. Each trajectory's time average is one independent sample, so the
standard error over trajectories accounts for any autocorrelation inside a
trajectory exactly. For a single long trajectory :func:`batch_means` estimates
the error of a time average from non-overlapping batches whose length is chosen
from the integrated autocorrelation time.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import _validate as v
from ..core import observables as OBS
from ..core.results import Result

__all__ = ["time_average", "batch_means", "BatchMeans", "integrated_autocorr_time"]


def integrated_autocorr_time(x, c: float = 5.0) -> float:
    """Integrated autocorrelation time of a series, in samples.

    ``tau = 1 + 2 sum_{k=1}^{M} rho_k`` with Sokal's automatic window: the
    smallest ``M`` with ``M >= c tau(M)``. ``tau = 1`` for uncorrelated samples;
    the variance of the mean of ``n`` samples is ``tau var(x) / n``.

    Parameters
    ----------
    x : array_like
        1-D finite series (at least 2 values).
    c : float
        Window constant (``> 0``; 5 is the usual choice).
    """
    x = v.real_array("x", x)
    c = v.real("c", c, lo=0.0, lo_open=True)
    n = x.size
    if n < 2:
        raise ValueError(f"x must have at least 2 values, got {n}")
    d = x - x.mean()
    var0 = float(d @ d)
    if var0 == 0.0:
        return 1.0
    nfft = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(d, nfft)
    acf = np.fft.irfft(f * np.conj(f), nfft)[:n] / var0
    taus = 2.0 * np.cumsum(acf) - 1.0
    ok = np.arange(n) >= c * taus
    m = int(np.argmax(ok)) if ok.any() else n - 1
    return float(max(taus[m], 1.0))


@dataclass(frozen=True)
class BatchMeans:
    """Result of :func:`batch_means`: ``mean``, ``sem``, ``batch_length``,
    ``n_batches`` and the integrated autocorrelation time ``tau_int`` (samples)."""

    mean: float
    sem: float
    batch_length: int
    n_batches: int
    tau_int: float


def batch_means(x, batch_length: int | None = None) -> BatchMeans:
    """Mean of one correlated series and its error from non-overlapping batch means.

    Parameters
    ----------
    x : array_like
        1-D finite series, e.g. one long trajectory's observable on a uniform
        time grid after burn-in (at least 4 values).
    batch_length : int, optional
        Samples per batch. Default: ``max(ceil(sqrt(n)), ceil(10 tau_int))``
        capped at ``n // 4``. ``sqrt(n)`` is the usual consistent choice
        (batches and their number both grow with ``n``); ``10 tau_int`` keeps
        the bias of the batch variance (~ ``-tau_int / batch_length``) near
        10% or less when the correlation time is long.

    Returns
    -------
    BatchMeans
        ``mean`` is the mean of all samples; ``sem = std(batch means) /
        sqrt(n_batches)`` from the last ``n_batches * batch_length`` samples.

    Warns
    -----
    RuntimeWarning
        When fewer than 10 batches fit (the error estimate is then itself
        uncertain by > 25%; run a longer trajectory).
    """
    x = v.real_array("x", x)
    n = x.size
    if n < 4:
        raise ValueError(f"x must have at least 4 values for batch means, got {n}")
    tau = integrated_autocorr_time(x)
    if batch_length is None:
        b = max(math.ceil(math.sqrt(n)), math.ceil(10.0 * tau))
        b = min(b, n // 4)
    else:
        b = v.integer("batch_length", batch_length, lo=1, hi=n // 2)
    a = n // b
    if a < 10:
        warnings.warn(f"only {a} batches of {b} samples fit in {n} samples (tau_int = "
                      f"{tau:.1f}); the batch-means error is itself uncertain",
                      RuntimeWarning, stacklevel=2)
    batches = x[n - a * b:].reshape(a, b).mean(axis=1)
    sem = float(batches.std(ddof=1) / math.sqrt(a))
    return BatchMeans(mean=float(x.mean()), sem=sem, batch_length=int(b), n_batches=int(a),
                      tau_int=tau)


def _trajectory_source(obj, times, couplings):
    """``(rows, columns, times, couplings)`` from a Result, a trajectories dict or an array."""
    if isinstance(obj, Result):
        if obj.trajectories is None:
            raise ValueError("result has no trajectories; run mcsolve(..., checkpoint="
                             "tsm.Checkpointing(keep_trajectories=True))")
        if couplings is None:
            couplings = obj.metadata.get("model", {}).get("couplings")
        traj = obj.trajectories
        if times is None:
            times = obj.times
    elif isinstance(obj, dict):
        traj = obj
    elif isinstance(obj, np.ndarray):
        arr = obj[:, :, None] if obj.ndim == 2 else obj
        traj = {"rows": arr, "columns": {"x": (0, arr.shape[2] if arr.ndim == 3 else 1)}}
    else:
        raise ValueError("result_or_rows must be a Result with trajectories, the "
                         "result.trajectories dict or an array (ntraj, nt[, ncomp]); got "
                         f"{type(obj).__name__}")
    if "rows" not in traj or "columns" not in traj:
        raise ValueError("trajectories dict must have keys 'rows' and 'columns', got "
                         f"{sorted(traj)}")
    rows = np.asarray(traj["rows"], dtype=float)
    if rows.ndim != 3:
        raise ValueError(f"trajectory rows must have shape (ntraj, nt, ncomp), got {rows.shape}")
    if times is None:
        raise ValueError("times must be given (the output times of the rows)")
    times = v.times(times)
    if times.size != rows.shape[1]:
        raise ValueError(f"times must have one entry per row time: {rows.shape[1]} expected, "
                         f"got {times.size}")
    return rows, dict(traj["columns"]), times, couplings


def time_average(result_or_rows, times=None, t_burn: float = 0.0, observables=None, *,
                 method: str = "auto", couplings=None,
                 batch_length: int | None = None) -> pd.DataFrame:
    """Steady-state value of observables from the time average of trajectories.

    Parameters
    ----------
    result_or_rows : Result, dict or numpy.ndarray
        A :class:`~thermospin_mc.Result` from ``mcsolve(...,
        checkpoint=Checkpointing(keep_trajectories=True))``, its ``trajectories``
        dict (``{"rows": (ntraj, nt, ncomp), "columns": {name: (start, stop)}}``) or a plain array
        ``(ntraj, nt)`` / ``(ntraj, nt, ncomp)`` (observable name ``x``).
    times : array_like, optional
        Output times of the rows (default: ``result.times``).
    t_burn : float
        Only times ``t >= t_burn`` are averaged (``>= 0`` and at most the last
        time); choose it after relaxation (compare with ``mesolve``).
    observables : sequence of str, optional
        Subset of ``j, j_bond, flow, m, n`` (default: every one the rows allow).
        ``j`` is taken from its column or summed from ``j_bond``; ``flow`` is
        ``(a_l / 2) j_bond`` and needs the couplings (from the Result metadata,
        or ``couplings=``).
    method : {"auto", "trajectories", "batch_means"}
        ``trajectories``: each trajectory's time average is one independent
        sample; mean and standard error over trajectories (needs ntraj >= 2).
        This accounts for any autocorrelation inside a trajectory exactly.
        ``batch_means``: each trajectory's error from :func:`batch_means`
        (automatic batch length), combined as ``sqrt(sum sem_i^2) / ntraj``;
        meant for a single long trajectory. ``auto``: ``trajectories`` if
        ntraj >= 2, else ``batch_means``.
    couplings : array_like, optional
        Bond couplings ``a_l`` for ``flow`` when not in the metadata.
    batch_length : int, optional
        Fixed batch length for ``batch_means``.

    Returns
    -------
    pandas.DataFrame
        Columns ``observable, site, mean, sem, ntraj, npoints, method,
        batch_length, n_batches`` (the last two only for batch means; the
        largest batch length and smallest batch count over trajectories).
        ``npoints`` is the number of output times averaged.

    Notes
    -----
    Every output time after ``t_burn`` gets the same weight, so the estimate is
    unbiased for a stationary process on any grid. Trajectories stopped by
    ``max_magnons`` (NaN rows) contribute their times before the stop.
    """
    rows, columns, times, couplings = _trajectory_source(result_or_rows, times, couplings)
    t_burn = v.real("t_burn", t_burn, lo=0.0, hi=float(times[-1]))
    if method not in ("auto", "trajectories", "batch_means"):
        raise ValueError(f"method must be 'auto', 'trajectories' or 'batch_means', "
                         f"got {method!r}")
    ntraj = rows.shape[0]
    if ntraj < 1:
        raise ValueError("trajectory rows must hold at least one trajectory, got 0")
    if method == "auto":
        method = "trajectories" if ntraj >= 2 else "batch_means"
    if method == "trajectories" and ntraj < 2:
        raise ValueError("method='trajectories' needs ntraj >= 2, got 1; use "
                         "method='batch_means' for a single long trajectory")
    sel = times >= t_burn
    data = rows[:, sel, :]
    blocks = _observable_blocks(data, columns, observables, couplings)
    out = []
    for name, block in blocks.items():
        ncomp = block.shape[2]
        sites = (np.arange(1, ncomp + 1) if name in ("n", "j_bond", "flow")
                 or (name == "x" and ncomp > 1) else np.zeros(1, dtype=int))
        for c in range(ncomp):
            series = block[:, :, c]
            row = {"observable": name, "site": int(sites[c]), "npoints": int(sel.sum()),
                   "method": method, "batch_length": np.nan, "n_batches": np.nan}
            if method == "trajectories":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    per = np.nanmean(series, axis=1)
                per = per[np.isfinite(per)]
                row.update(mean=float(per.mean()), ntraj=int(per.size),
                           sem=float(per.std(ddof=1) / math.sqrt(per.size))
                           if per.size > 1 else np.nan)
            else:
                means, var, bl, nb = [], 0.0, [], []
                for s in series:
                    bad = np.flatnonzero(~np.isfinite(s))
                    s = s[:bad[0]] if bad.size else s
                    if s.size < 4:
                        continue
                    bm = batch_means(s, batch_length)
                    means.append(bm.mean)
                    var += bm.sem ** 2
                    bl.append(bm.batch_length)
                    nb.append(bm.n_batches)
                if not means:
                    raise ValueError("batch means need at least 4 times t >= t_burn in a "
                                     f"trajectory, got {int(sel.sum())}")
                k = len(means)
                row.update(mean=float(np.mean(means)), sem=math.sqrt(var) / k, ntraj=k,
                           batch_length=max(bl), n_batches=min(nb))
            out.append(row)
    return pd.DataFrame(out, columns=["observable", "site", "mean", "sem", "ntraj", "npoints",
                                      "method", "batch_length", "n_batches"])


def _observable_blocks(data, columns, observables, couplings) -> dict:
    """``{name: (ntraj, nt, ncomp)}`` arrays of the requested observables."""
    def col(name):
        start, stop = columns[name]
        return data[:, :, int(start):int(stop)]

    avail = []
    if "j" in columns or "j_bond" in columns:
        avail.append("j")
    if "j_bond" in columns:
        avail.append("j_bond")
        if couplings is not None:
            avail.append("flow")
    avail += [name for name in ("m", "n", "x") if name in columns]
    if observables is None:
        names = tuple(avail)
    else:
        names = (observables,) if isinstance(observables, str) else tuple(observables)
        if not names:
            raise ValueError("observables must name at least one observable")
        for name in names:
            if name not in avail:
                hint = (" (flow needs couplings=)" if name == "flow" and "j_bond" in columns
                        else "")
                raise ValueError(f"observable must be one of {tuple(avail)} for these rows, "
                                 f"got {name!r}{hint}")
    out = {}
    for name in names:
        if name == "j":
            out[name] = col("j") if "j" in columns else col("j_bond").sum(axis=2,
                                                                         keepdims=True)
        elif name == "flow":
            a = v.real_array("couplings", couplings)
            jb = col("j_bond")
            if a.size != jb.shape[2]:
                raise ValueError(f"couplings must have N - 1 = {jb.shape[2]} values, "
                                 f"got {a.size}")
            out[name] = jb * OBS.flow_factor(a)
        else:
            out[name] = col(name)
    return out
