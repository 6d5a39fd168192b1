"""Statistics of jump tables: exit sides, waiting times, jump counts and their
full counting statistics (docs/model.md sections 7 and 8).

A jump table is ``Result.jumps`` (or ``jumps.parquet``/``jumps.csv`` written by
``thermospin-mc run --record-jumps``) with columns ``traj, t, channel, site,
m_before``; ``traj`` is the 0-based trajectory index and the paper's channels
are ``loss_left``, ``loss_right`` and ``pump``. Nothing here solves physics:
the comparisons with the exact solvers are in :mod:`thermospin_mc.analysis.jumpcompare`.

Error bars. Trajectories are independent, so any per-trajectory quantity (the
number of jumps in a window, the first waiting time) is one independent sample
and its standard error over trajectories is exact in the large-sample sense,
however strongly correlated the events inside one trajectory are.

A jump table contains only the jumps up to the last output time of the run; a
trajectory without any jump in it has no row at all. That is why functions that
count trajectories take ``ntraj`` explicitly (it is in the table's metadata,
``table.attrs["thermospin_mc"]["ntraj"]``, but a filtered table keeps stale
metadata, so it is never read silently).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import _validate as v

__all__ = [
    "CHANNELS", "LOSSES", "exit_sides", "waiting_times", "WaitingTimes", "jump_counts",
    "counting_statistics", "check_jumps", "check_ntraj", "check_window",
]

#: Jump channel names of the paper's chain, in table order (docs/model.md section 7).
CHANNELS = ("loss_left", "loss_right", "pump")
#: The two edge-loss channels of the paper's chain.
LOSSES = ("loss_left", "loss_right")
#: Two-sided 95% normal quantile (Wilson and Wald intervals).
_Z95 = 1.959963984540054


# --------------------------------------------------------------------------- validation
def check_jumps(jumps) -> pd.DataFrame:
    """A clean ``traj, t, channel`` copy of a jump table, sorted by ``(traj, t)``."""
    need = ("traj", "t", "channel")
    if not isinstance(jumps, pd.DataFrame):
        raise ValueError("jumps must be a pandas DataFrame with columns traj, t, channel "
                         f"(a Result.jumps table), got {type(jumps).__name__}")
    missing = [c for c in need if c not in jumps.columns]
    if missing:
        raise ValueError(f"jumps is missing required column(s) {missing}; a jump table has "
                         f"columns traj, t, channel, site, m_before, got {list(jumps.columns)}")
    traj = jumps["traj"].to_numpy()
    if traj.size and not np.issubdtype(traj.dtype, np.integer):
        try:
            tf = traj.astype(float)
        except (TypeError, ValueError) as exc:
            raise ValueError("jumps.traj must hold integer trajectory indices >= 0, got "
                             f"dtype {traj.dtype}") from exc
        if not (np.all(np.isfinite(tf)) and np.all(tf == np.round(tf))):
            raise ValueError("jumps.traj must hold integer trajectory indices >= 0, got "
                             "non-integer values")
        traj = tf
    traj = traj.astype(np.int64)
    if traj.size and traj.min() < 0:
        raise ValueError(f"jumps.traj must be >= 0 (0-based trajectory index), got minimum "
                         f"{int(traj.min())}")
    try:
        t = jumps["t"].to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError("jumps.t must hold real jump times >= 0") from exc
    if t.size and not np.all(np.isfinite(t)):
        raise ValueError("jumps.t must hold finite jump times, got NaN or inf")
    if t.size and t.min() < 0:
        raise ValueError(f"jumps.t must be >= 0, got minimum {t.min()}")
    channel = jumps["channel"].to_numpy()
    bad = sorted({repr(c) for c in np.unique(channel.astype(object))
                  if not isinstance(c, str) or not c.strip()})
    if bad:
        raise ValueError(f"jumps.channel must hold channel names (the paper's {CHANNELS} or "
                         f"a model's own, e.g. 'loss@1'), got {', '.join(bad)}")
    channel = channel.astype(str)
    out = pd.DataFrame({"traj": traj, "t": t, "channel": channel})
    return out.sort_values(["traj", "t"], kind="stable", ignore_index=True)


def check_ntraj(ntraj, df: pd.DataFrame) -> int:
    ntraj = v.integer("ntraj", ntraj, lo=1)
    if len(df) and int(df["traj"].max()) >= ntraj:
        raise ValueError(f"ntraj must be > the largest trajectory index in jumps (traj is "
                         f"0-based), got ntraj = {ntraj} with traj up to {int(df['traj'].max())}")
    return ntraj


def check_window(name: str, window) -> tuple[float, float]:
    try:
        t_a, t_b = window
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a pair (t_a, t_b) with 0 <= t_a < t_b, "
                         f"got {window!r}") from exc
    t_a = v.real(f"{name}[0]", t_a, lo=0.0)
    t_b = v.real(f"{name}[1]", t_b, lo=0.0)
    if not t_b > t_a:
        raise ValueError(f"{name} must satisfy t_a < t_b, got ({t_a}, {t_b})")
    return t_a, t_b


# --------------------------------------------------------------------------- exit sides
def _wilson(k: np.ndarray, n: int, z: float = _Z95) -> tuple[np.ndarray, np.ndarray]:
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = np.where(k == 0, 0.0, np.clip(centre - half, 0.0, 1.0))  # exact ends (no round-off)
    hi = np.where(k == n, 1.0, np.clip(centre + half, 0.0, 1.0))
    return lo, hi


def exit_sides(jumps: pd.DataFrame, ntraj: int) -> pd.DataFrame:
    """Side through which a single impurity leaves the chain (first loss).

    Parameters
    ----------
    jumps : pandas.DataFrame
        Jump table with at least the columns ``traj, t, channel``.
    ntraj : int
        Number of trajectories of the run (``>= 1`` and larger than every
        ``traj`` index). Trajectories without any loss in the table count as
        ``none``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``outcome``: ``loss_right``, ``loss_left``, ``none`` (no loss
        recorded before the end of the run) and ``right_minus_left``. Columns
        ``count``, ``p`` (fraction of trajectories), ``sem`` (binomial standard
        error ``sqrt(p (1 - p) / ntraj)``), ``ci_low``/``ci_high`` (Wilson 95%
        score interval, which stays sensible at ``p = 0`` or ``1`` where the
        binomial error vanishes) and ``ntraj``. ``right_minus_left`` is
        ``P(right) - P(left)``, the spin transferred to the right per impurity
        (docs/model.md section 8), with the multinomial error
        ``sqrt((p_R + p_L - (p_R - p_L)^2) / ntraj)`` and a Wald 95% interval.

    Notes
    -----
    Only the FIRST loss of each trajectory counts, so the table also makes sense
    with a pump (then it is the side of the first loss). Without a pump and with
    one initial magnon it converges to :func:`thermospin_mc.exit_probabilities`
    when the run is long enough for ``none`` to be negligible.
    """
    df = check_jumps(jumps)
    ntraj = check_ntraj(ntraj, df)
    loss = df[df["channel"].isin(LOSSES)].drop_duplicates("traj", keep="first")
    k_right = int((loss["channel"] == "loss_right").sum())
    k_left = int((loss["channel"] == "loss_left").sum())
    k = np.array([k_right, k_left, ntraj - k_right - k_left], dtype=np.int64)
    p = k / ntraj
    sem = np.sqrt(p * (1 - p) / ntraj)
    lo, hi = _wilson(k.astype(float), ntraj)
    diff = p[0] - p[1]
    sd = math.sqrt(max(p[0] + p[1] - diff * diff, 0.0) / ntraj)
    out = pd.DataFrame({
        "count": np.append(k, k_right - k_left),
        "p": np.append(p, diff),
        "sem": np.append(sem, sd),
        "ci_low": np.append(lo, diff - _Z95 * sd),
        "ci_high": np.append(hi, diff + _Z95 * sd),
        "ntraj": np.int64(ntraj),
    }, index=pd.Index(["loss_right", "loss_left", "none", "right_minus_left"], name="outcome"))
    return out


# --------------------------------------------------------------------------- waiting times
@dataclass(frozen=True)
class WaitingTimes:
    """Waiting times per channel (see :func:`waiting_times`).

    Attributes
    ----------
    summary : pandas.DataFrame
        One row per ``(channel, which)``; ``which`` is ``all`` (every waiting
        time) or ``first`` (the first waiting time of each trajectory, measured
        from ``t0``). Columns ``count, ntraj_with, mean, sem, std, median``.
    samples : dict of str to numpy.ndarray
        Every waiting time of each channel, in ``(traj, t)`` order.
    first : dict of str to numpy.ndarray
        The first waiting time of each trajectory that has a jump of the channel.
    t0 : float
        Origin of the first waiting times.
    """

    summary: pd.DataFrame
    samples: dict
    first: dict
    t0: float


def _channel_names(df: pd.DataFrame) -> tuple[str, ...]:
    """The paper's channels for a paper table; otherwise the names present in the table."""
    present = set(df["channel"].unique())
    if present <= set(CHANNELS):
        return CHANNELS
    return tuple(c for c in CHANNELS if c in present) + tuple(sorted(present - set(CHANNELS)))


def _check_channels(channel, present: tuple[str, ...] = CHANNELS) -> tuple[str, ...]:
    allowed = tuple(present) + ("any",)
    if channel is None:
        return allowed
    names = (channel,) if isinstance(channel, str) else tuple(channel)
    if not names:
        raise ValueError(f"channel must name at least one of {allowed}, got an empty list")
    for c in names:
        if c not in allowed:
            raise ValueError(f"channel must be one of {allowed}, got {c!r}")
    return tuple(dict.fromkeys(names))


def _taus(traj: np.ndarray, t: np.ndarray, t0: float) -> tuple[np.ndarray, np.ndarray]:
    """Waiting times of sorted jumps and the mask of each trajectory's first one."""
    if t.size == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    new = np.ones(t.size, dtype=bool)
    new[1:] = traj[1:] != traj[:-1]
    prev = np.empty_like(t)
    prev[0] = t0
    prev[1:] = t[:-1]
    prev[new] = t0
    return t - prev, new


def waiting_times(jumps: pd.DataFrame, channel=None, t0: float = 0.0) -> WaitingTimes:
    """Waiting times between consecutive jumps of each trajectory, per channel.

    Parameters
    ----------
    jumps : pandas.DataFrame
        Jump table with at least the columns ``traj, t, channel``.
    channel : str or sequence of str, optional
        Channels to analyse: any of ``loss_left, loss_right, pump`` and ``any``
        (every jump, whatever its channel). Default: all four.
    t0 : float
        Only jumps at ``t >= t0`` are used, and each trajectory's first waiting
        time is measured from ``t0`` (``>= 0``; default 0, the preparation
        time).

    Returns
    -------
    WaitingTimes
        For channel ``c`` the waiting times are the intervals between
        consecutive ``c`` jumps of one trajectory (for ``any``: between
        consecutive jumps of any channel), the first one from ``t0``.

    Notes
    -----
    ``sem`` of the ``first`` rows is ``std / sqrt(count)`` (one independent
    sample per trajectory). For the ``all`` rows successive waiting times of one
    trajectory can be correlated (the state after a jump remembers the past), so
    ``sem`` is the cluster-robust (delta-method) error of the ratio
    ``sum(tau) / count`` with trajectories as independent clusters.

    Only completed waiting times are recorded: the interval still open at the
    end of the run is censored, which biases the statistics towards short
    times unless the run is much longer than the mean waiting time.
    """
    df = check_jumps(jumps)
    names = _check_channels(channel, _channel_names(df))
    t0 = v.real("t0", t0, lo=0.0)
    df = df[df["t"] >= t0]
    rows, samples, first = [], {}, {}
    for name in names:
        sub = df if name == "any" else df[df["channel"] == name]
        traj = sub["traj"].to_numpy()
        tau, new = _taus(traj, sub["t"].to_numpy(), t0)
        samples[name], first[name] = tau, tau[new]
        for which, x in (("all", tau), ("first", tau[new])):
            n = x.size
            row = {"channel": name, "which": which, "count": n,
                   "ntraj_with": int(new.sum()), "mean": np.nan, "sem": np.nan,
                   "std": np.nan, "median": np.nan}
            if n:
                row["mean"] = float(x.mean())
                row["median"] = float(np.median(x))
            if n > 1:
                row["std"] = float(x.std(ddof=1))
                row["sem"] = row["std"] / math.sqrt(n)
            if which == "all" and new.sum() > 1:
                row["sem"] = _ratio_sem(traj, x, row["mean"])
            rows.append(row)
    summary = pd.DataFrame(rows, columns=["channel", "which", "count", "ntraj_with", "mean",
                                          "sem", "std", "median"])
    return WaitingTimes(summary=summary, samples=samples, first=first, t0=t0)


def _ratio_sem(traj: np.ndarray, x: np.ndarray, ratio: float) -> float:
    """Cluster-robust error of ``sum(x) / len(x)`` with trajectories as clusters."""
    _, inv = np.unique(traj, return_inverse=True)
    k = inv.max() + 1
    s = np.bincount(inv, weights=x - ratio, minlength=k)  # sum_i (S_i - r n_i)
    return float(math.sqrt(k / (k - 1) * np.sum(s * s)) / x.size)


# --------------------------------------------------------------------------- counting
def jump_counts(jumps: pd.DataFrame, ntraj: int, t_window) -> pd.DataFrame:
    """Number of jumps of each channel per trajectory in ``t_a <= t < t_b``.

    Parameters
    ----------
    jumps : pandas.DataFrame
        Jump table with at least the columns ``traj, t, channel``.
    ntraj : int
        Number of trajectories of the run (rows ``0 .. ntraj - 1`` of the
        output; trajectories without jumps get zeros).
    t_window : (float, float)
        ``(t_a, t_b)`` with ``0 <= t_a < t_b``; ``t_b`` must not exceed the last
        output time of the run (the table holds no jumps after it).

    Returns
    -------
    pandas.DataFrame
        Index ``traj``, integer columns ``loss_left, loss_right, pump``; for a
        general chain's table (other channel names, e.g. ``loss@1``) one column
        per channel name present.
    """
    df = check_jumps(jumps)
    ntraj = check_ntraj(ntraj, df)
    t_a, t_b = check_window("t_window", t_window)
    sel = df[(df["t"] >= t_a) & (df["t"] < t_b)]
    out = {}
    for name in _channel_names(df):
        tr = sel.loc[sel["channel"] == name, "traj"].to_numpy()
        out[name] = np.bincount(tr, minlength=ntraj).astype(np.int64)
    return pd.DataFrame(out, index=pd.RangeIndex(ntraj, name="traj"))


def _bootstrap_var_fano(x: np.ndarray, n_boot: int, rng) -> tuple[float, float]:
    """Bootstrap errors of the sample variance and Fano factor of integer counts.

    Resampling trajectories with replacement is a multinomial draw over the
    distinct values of ``x``, so each replicate costs O(#distinct values).
    """
    n = x.size
    vals, cnt = np.unique(x, return_counts=True)
    c = vals - x.mean()  # centred values: no cancellation in the variance
    draws = rng.multinomial(n, cnt / n, size=n_boot).astype(float)
    m1 = draws @ c / n
    var = (draws @ (c * c) / n - m1 * m1) * n / (n - 1)
    mean = m1 + x.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        fano = var / np.abs(mean)
    fano = fano[np.isfinite(fano)]
    var_err = float(var.std(ddof=1))
    fano_err = float(fano.std(ddof=1)) if fano.size > 1 else np.nan
    return var_err, fano_err


def counting_statistics(jumps: pd.DataFrame, ntraj: int, t_window, hot: str = "right", *,
                        n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Full counting statistics of the jumps in a time window.

    Parameters
    ----------
    jumps : pandas.DataFrame
        Jump table with at least the columns ``traj, t, channel``.
    ntraj : int
        Number of trajectories of the run (trajectories without jumps in the
        window count as zero).
    t_window : (float, float)
        ``(t_a, t_b)``, ``0 <= t_a < t_b <=`` last output time of the run;
        jumps with ``t_a <= t < t_b`` are counted.
    hot : {"right", "left"}
        The hot edge. The net spin transferred to the hot side by one
        trajectory is ``Q = #loss_hot - #loss_cold`` (docs/model.md section 7: its
        steady rate is ``gamma (<n_N> - <n_1>)`` for ``hot = "right"``).
    n_boot : int
        Bootstrap replicates for the errors of variance and Fano factor.
    seed : int
        Seed of the bootstrap (results are reproducible for a fixed seed).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``quantity``: ``net_to_hot`` (Q), ``loss_total`` (both
        edges), ``loss_left``, ``loss_right``, ``pump``. Columns:

        - ``mean``, ``mean_sem``: mean count per trajectory and its standard
          error (sample std over trajectories / sqrt(ntraj));
        - ``var``, ``var_err``: unbiased sample variance over trajectories and
          its bootstrap error;
        - ``fano``, ``fano_err``: ``var / |mean|`` (NaN when the mean is 0) and
          its bootstrap error;
        - ``rate``, ``rate_sem``: ``mean / (t_b - t_a)`` and its error;
        - ``ntraj``, ``t_a``, ``t_b``.

    Notes
    -----
    Each trajectory gives one independent sample of the counts, so these error
    bars need no assumption about correlations between jumps. The errors of
    variance and Fano factor come from a nonparametric bootstrap over
    trajectories (``n_boot`` replicates, ``numpy.random.default_rng([seed,
    row])``), implemented as multinomial draws over the distinct count values.
    """
    if hot not in ("right", "left"):
        raise ValueError(f"hot must be 'right' or 'left', got {hot!r}")
    n_boot = v.integer("n_boot", n_boot, lo=2)
    seed = v.integer("seed", seed, lo=0)
    counts = jump_counts(jumps, ntraj, t_window)
    t_a, t_b = check_window("t_window", t_window)
    ntraj = len(counts)
    cold = "loss_left" if hot == "right" else "loss_right"
    series = {
        "net_to_hot": counts[f"loss_{hot}"] - counts[cold],
        "loss_total": counts["loss_left"] + counts["loss_right"],
        "loss_left": counts["loss_left"], "loss_right": counts["loss_right"],
        "pump": counts["pump"],
    }
    span = t_b - t_a
    rows = []
    for i, s in enumerate(series.values()):
        x = s.to_numpy()
        mean = float(x.mean())
        row = {"mean": mean, "mean_sem": np.nan, "var": np.nan, "var_err": np.nan,
               "fano": np.nan, "fano_err": np.nan}
        if ntraj > 1:
            var = float(x.var(ddof=1))
            row.update(mean_sem=math.sqrt(var / ntraj), var=var,
                       fano=var / abs(mean) if mean != 0 else np.nan)
            rng = np.random.default_rng([seed, i])
            row["var_err"], row["fano_err"] = _bootstrap_var_fano(x, n_boot, rng)
            if mean == 0:
                row["fano_err"] = np.nan
        row["rate"] = mean / span
        row["rate_sem"] = row["mean_sem"] / span
        rows.append(row)
    out = pd.DataFrame(rows, index=pd.Index(list(series), name="quantity"))
    out["ntraj"] = np.int64(ntraj)
    out["t_a"], out["t_b"] = t_a, t_b
    return out
