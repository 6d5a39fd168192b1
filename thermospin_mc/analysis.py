"""Statistics of jump records and steady states (MODEL.md sections 7 and 9).

Everything here works on the tidy tables of a run (no physics of its own):

- jump tables (``Result.jumps``, or ``jumps.parquet``/``jumps.csv`` written by
  ``thermospin-mc run --record-jumps``) with columns ``traj, t, channel, site,
  m_before``; ``traj`` is the 0-based trajectory index and channels are
  ``loss_left``, ``loss_right`` and ``pump``;
- kept trajectory rows (``mcsolve(..., keep_trajectories=True)``).

Error bars. Trajectories are independent, so any per-trajectory quantity (the
number of jumps in a window, a trajectory's time average) is one independent
sample and its standard error over trajectories is exact in the large-sample
sense, however strongly correlated the events inside one trajectory are. For a
single long trajectory :func:`batch_means` estimates the error of a time average
from non-overlapping batches whose length is chosen from the integrated
autocorrelation time.

A jump table contains only the jumps up to the last output time of the run; a
trajectory without any jump in it has no row at all. That is why functions that
count trajectories take ``ntraj`` explicitly (it is in the table's metadata,
``table.attrs["thermospin_mc"]["ntraj"]``, but a filtered table keeps stale
metadata, so it is never read silently).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import _validate as v

__all__ = [
    "CHANNELS", "exit_sides", "waiting_times", "WaitingTimes", "jump_counts",
    "counting_statistics", "steady_state_from_jumps", "time_average", "batch_means",
    "BatchMeans", "integrated_autocorr_time", "compare_counting_statistics",
    "CountingComparison",
]

#: Jump channel names, in table order (DESIGN.md).
CHANNELS = ("loss_left", "loss_right", "pump")
_LOSSES = ("loss_left", "loss_right")
#: Two-sided 95% normal quantile (Wilson and Wald intervals).
_Z95 = 1.959963984540054


# --------------------------------------------------------------------------- validation
def _check_jumps(jumps) -> pd.DataFrame:
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


def _check_ntraj(ntraj, df: pd.DataFrame) -> int:
    ntraj = v.integer("ntraj", ntraj, lo=1)
    if len(df) and int(df["traj"].max()) >= ntraj:
        raise ValueError(f"ntraj must be > the largest trajectory index in jumps (traj is "
                         f"0-based), got ntraj = {ntraj} with traj up to {int(df['traj'].max())}")
    return ntraj


def _check_window(name: str, window) -> tuple[float, float]:
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
        (MODEL.md section 8), with the multinomial error
        ``sqrt((p_R + p_L - (p_R - p_L)^2) / ntraj)`` and a Wald 95% interval.

    Notes
    -----
    Only the FIRST loss of each trajectory counts, so the table also makes sense
    with a pump (then it is the side of the first loss). Without a pump and with
    one initial magnon it converges to :func:`thermospin_mc.exit_probabilities`
    when the run is long enough for ``none`` to be negligible.
    """
    df = _check_jumps(jumps)
    ntraj = _check_ntraj(ntraj, df)
    loss = df[df["channel"].isin(_LOSSES)].drop_duplicates("traj", keep="first")
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
    df = _check_jumps(jumps)
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
    df = _check_jumps(jumps)
    ntraj = _check_ntraj(ntraj, df)
    t_a, t_b = _check_window("t_window", t_window)
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
        trajectory is ``Q = #loss_hot - #loss_cold`` (MODEL.md section 7: its
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
    t_a, t_b = _check_window("t_window", t_window)
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


def steady_state_from_jumps(jumps: pd.DataFrame, ntraj: int, t_burn: float, t_end: float,
                            model=None) -> pd.DataFrame:
    """Jump rates per unit time after a burn-in, with error bars.

    Parameters
    ----------
    jumps : pandas.DataFrame
        Jump table with at least the columns ``traj, t, channel``.
    ntraj : int
        Number of trajectories of the run.
    t_burn : float
        Start of the averaging window (``>= 0``); the system should have
        relaxed by then (check with :func:`thermospin_mc.mesolve`).
    t_end : float
        End of the window (``> t_burn``, at most the last output time of the
        run).
    model : ChainModel, optional
        If given, the exact steady-state rates from
        :func:`thermospin_mc.steadystate` are added as columns ``exact`` and
        ``z = (rate - exact) / sem``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``quantity``:

        - ``loss_left``, ``loss_right``: edge loss rates (exact: ``gamma <n_1>``,
          ``gamma <n_N>``);
        - ``pump``: pump rate (exact: ``gamma_pump (1 - <n_c>)``);
        - ``loss_total``: both edges;
        - ``net_right``: ``loss_right - loss_left``, the net spin transfer to the
          right (exact: ``gamma (<n_N> - <n_1>)``);
        - ``pump_minus_loss``: the balance (0 in a steady state). Its error is
          that of the per-trajectory difference, which is bounded by the change
          of magnon number, so it is a sharp test.

        Columns ``rate`` (mean count / (t_end - t_burn)), ``sem`` (standard
        error over trajectories), ``ntraj``, and with ``model`` ``exact``, ``z``.
    """
    t_burn = v.real("t_burn", t_burn, lo=0.0)
    t_end = v.real("t_end", t_end, lo=0.0)
    if not t_end > t_burn:
        raise ValueError(f"t_end must be > t_burn = {t_burn}, got {t_end}")
    counts = jump_counts(jumps, ntraj, (t_burn, t_end))
    ntraj = len(counts)
    loss = counts["loss_left"] + counts["loss_right"]
    series = {
        "loss_left": counts["loss_left"], "loss_right": counts["loss_right"],
        "pump": counts["pump"], "loss_total": loss,
        "net_right": counts["loss_right"] - counts["loss_left"],
        "pump_minus_loss": counts["pump"] - loss,
    }
    span = t_end - t_burn
    rate = [float(s.mean()) / span for s in series.values()]
    sem = [float(s.std(ddof=1)) / math.sqrt(ntraj) / span if ntraj > 1 else np.nan
           for s in series.values()]
    out = pd.DataFrame({"rate": rate, "sem": sem, "ntraj": np.int64(ntraj)},
                       index=pd.Index(list(series), name="quantity"))
    if model is not None:
        exact = _exact_rates(model)
        out["exact"] = [exact[k] for k in series]
        with np.errstate(divide="ignore", invalid="ignore"):
            out["z"] = (out["rate"] - out["exact"]) / out["sem"]
    return out


def _exact_rates(model) -> dict:
    from .exact import steadystate
    from .model import ChainModel

    if not isinstance(model, ChainModel):
        raise ValueError(f"model must be a ChainModel, got {type(model).__name__}")
    n = steadystate(model, observables=("n",)).get("n")[0]
    left = model.gamma * n[0]
    right = model.gamma * n[-1]
    pump = model.gamma_pump * (1.0 - n[model.pump_site - 1]) if model.gamma_pump > 0 else 0.0
    return {"loss_left": left, "loss_right": right, "pump": pump, "loss_total": left + right,
            "net_right": right - left, "pump_minus_loss": 0.0}


# --------------------------------------------------------------------------- time averages
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
    from .results import Result

    if isinstance(obj, Result):
        if obj.trajectories is None:
            raise ValueError("result has no trajectories; run mcsolve(..., "
                             "keep_trajectories=True)")
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
        keep_trajectories=True)``, its ``trajectories`` dict (``{"rows": (ntraj,
        nt, ncomp), "columns": {name: (start, stop)}}``) or a plain array
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
            out[name] = jb * (a / 2.0)
        else:
            out[name] = col(name)
    return out


# --------------------------------------------------------------------------- exact FCS comparison
@dataclass(frozen=True)
class CountingComparison:
    """Trajectory counting statistics beside their exact values
    (see :func:`compare_counting_statistics`).

    Attributes
    ----------
    cumulants : pandas.DataFrame
        Indexed by ``quantity``: ``mean``, ``var``, ``fano`` (``var / mean``)
        and, for ``order >= 3``, ``k3`` (third cumulant) of the weighted count
        in the window. Columns ``trajectory``, ``err``, ``exact``, ``z``.
    waiting : pandas.DataFrame
        One row per waiting-time bin: ``tau_lo``, ``tau_hi``, ``p_traj``
        (fraction of interval starts whose next counted jump falls in the bin),
        ``sem``, ``p_exact``, ``z``.
    chi2, dof : float, int
        ``sum z^2`` over the waiting-time bins and the number of bins.
    counts : dict
        The channel weights.
    window : (float, float)
        The counting window.
    """

    cumulants: pd.DataFrame
    waiting: pd.DataFrame
    chi2: float
    dof: int
    counts: dict
    window: tuple


def _k3(x: np.ndarray) -> float:
    n = x.size
    c = x - x.mean()
    return float(n * np.sum(c ** 3) / ((n - 1) * (n - 2)))


def _bootstrap_cumulants(x: np.ndarray, n_boot: int, rng) -> dict:
    """Bootstrap errors of variance, Fano factor and k3 (multinomial over values)."""
    n = x.size
    vals, cnt = np.unique(x, return_counts=True)
    c = vals - x.mean()
    w = rng.multinomial(n, cnt / n, size=n_boot).astype(float) / n
    m1 = w @ c
    m2 = w @ c ** 2 - m1 ** 2
    m3 = w @ c ** 3 - 3 * m1 * (w @ c ** 2) + 2 * m1 ** 3
    var = m2 * n / (n - 1)
    k3 = m3 * n * n / ((n - 1) * (n - 2))
    mean = m1 + x.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        fano = var / mean
    fano = fano[np.isfinite(fano)]
    return {"var": float(var.std(ddof=1)), "k3": float(k3.std(ddof=1)),
            "fano": float(fano.std(ddof=1)) if fano.size > 1 else np.nan}


def compare_counting_statistics(jumps: pd.DataFrame, ntraj: int, model, counts, window, *,
                                order: int = 3, bins: int = 20, tau_max: float | None = None,
                                n_boot: int = 2000, seed: int = 0) -> CountingComparison:
    """Counting statistics and waiting times of a run beside the exact values.

    Parameters
    ----------
    jumps : pandas.DataFrame
        Jump table of the run (columns ``traj, t, channel``).
    ntraj : int
        Number of trajectories of the run.
    model : ChainModel
        The run's model (its ``initial`` state is prepared at ``t = 0``).
    counts : dict
        ``{channel name: integer weight}``, e.g. ``{"loss_right": 1,
        "loss_left": -1}`` for the net spin to the right.
    window : (float, float)
        ``(t_a, t_b)``: jumps with ``t_a <= t < t_b`` are counted; ``t_b`` at
        most the run's last output time.
    order : int
        2 or 3: compare mean and variance (and Fano factor), and with 3 the
        third cumulant too (meaningful only when the run is long enough).
    bins : int
        Waiting-time bins on ``[0, tau_max)``.
    tau_max : float, optional
        Longest waiting time histogrammed (default ``(t_b - t_a) / 4``). The
        intervals start at the counted jumps in ``[t_a, t_b - tau_max)``, so
        every interval shorter than ``tau_max`` is complete (no censoring).
    n_boot, seed : int
        Bootstrap replicates and seed for the errors of variance, Fano factor
        and third cumulant.

    Returns
    -------
    CountingComparison

    Notes
    -----
    Exact values: the cumulants of the count in the window from the exact
    state at ``t_a`` (:func:`thermospin_mc.exact_counting_statistics` with
    ``t = t_b - t_a, t0 = t_a``), and the waiting-time bin probabilities for
    interval starts weighted by their exact rate over the start window
    (:func:`thermospin_mc.waiting_time_bins` with ``window``), so no
    steady-state assumption is needed. The waiting time is the delay from a
    counted jump to the next counted jump of the same trajectory. Errors:
    standard error over trajectories for the mean, bootstrap over trajectories
    for variance, Fano factor and ``k3``, and the cluster-robust error of a
    ratio (trajectories as clusters) for the bin fractions.
    """
    from .fcs import _check_counts, exact_counting_statistics, waiting_time_bins

    df = _check_jumps(jumps)
    ntraj = _check_ntraj(ntraj, df)
    t_a, t_b = _check_window("window", window)
    weights = _check_counts(model, counts)
    order = v.integer("order", order, lo=2, hi=3)
    bins = v.integer("bins", bins, lo=1)
    n_boot = v.integer("n_boot", n_boot, lo=2)
    seed = v.integer("seed", seed, lo=0)
    tau_max = (t_b - t_a) / 4 if tau_max is None else v.real("tau_max", tau_max, lo=0.0,
                                                             lo_open=True)
    if not t_b - tau_max > t_a:
        raise ValueError(f"tau_max must be < t_b - t_a = {t_b - t_a}, got {tau_max}")
    # ---- cumulants of the weighted count
    sel = df[(df["t"] >= t_a) & (df["t"] < t_b)]
    x = np.zeros(ntraj)
    for name, w in weights.items():
        tr = sel.loc[sel["channel"] == name, "traj"].to_numpy()
        x += w * np.bincount(tr, minlength=ntraj)
    exact = exact_counting_statistics(model, weights, order=order, t=t_b - t_a,
                                      t0=t_a)["cumulant"].to_numpy()
    mean = float(x.mean())
    var = float(x.var(ddof=1))
    boot = _bootstrap_cumulants(x, n_boot, np.random.default_rng(seed))
    rows = {"mean": (mean, math.sqrt(var / ntraj), exact[0]),
            "var": (var, boot["var"], exact[1]),
            "fano": (var / mean if mean != 0 else np.nan, boot["fano"],
                     exact[1] / exact[0] if exact[0] != 0 else np.nan)}
    if order >= 3:
        rows["k3"] = (_k3(x), boot["k3"], exact[2])
    cum = pd.DataFrame.from_dict(rows, orient="index", columns=["trajectory", "err", "exact"])
    cum.index.name = "quantity"
    with np.errstate(divide="ignore", invalid="ignore"):
        cum["z"] = (cum["trajectory"] - cum["exact"]) / cum["err"]
    # ---- waiting times between counted jumps
    cj = df[df["channel"].isin(list(weights))]
    traj, t = cj["traj"].to_numpy(), cj["t"].to_numpy()
    start = (t >= t_a) & (t < t_b - tau_max)
    has_next = np.zeros(t.size, dtype=bool)
    has_next[:-1] = traj[1:] == traj[:-1]
    tau = np.full(t.size, np.inf)
    tau[:-1] = np.where(has_next[:-1], t[1:] - t[:-1], np.inf)
    edges = np.linspace(0.0, tau_max, bins + 1)
    b = np.searchsorted(edges, tau[start], side="right") - 1
    ts = traj[start]
    n_start = start.sum()
    per_start = np.bincount(ts, minlength=ntraj).astype(float)
    p = np.full(bins, np.nan)
    sem = np.full(bins, np.nan)
    if n_start:
        ok = (b >= 0) & (b < bins)
        for k in range(bins):
            nk = np.bincount(ts[ok & (b == k)], minlength=ntraj).astype(float)
            p[k] = nk.sum() / n_start
            resid = nk - p[k] * per_start
            sem[k] = math.sqrt(ntraj / (ntraj - 1) * np.sum(resid ** 2)) / n_start
    p_exact = waiting_time_bins(model, list(weights), edges, window=(t_a, t_b - tau_max))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p - p_exact) / sem
    wait = pd.DataFrame({"tau_lo": edges[:-1], "tau_hi": edges[1:], "p_traj": p, "sem": sem,
                         "p_exact": p_exact, "z": z})
    good = np.isfinite(z)
    return CountingComparison(cumulants=cum, waiting=wait, chi2=float(np.sum(z[good] ** 2)),
                              dof=int(good.sum()), counts=dict(weights), window=(t_a, t_b))
