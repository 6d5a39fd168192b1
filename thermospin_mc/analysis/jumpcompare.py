"""Jump statistics beside the exact solvers: steady-state jump rates and the
counting statistics and waiting times of a run compared with
:mod:`thermospin_mc.exact` and :mod:`thermospin_mc.exact.fcs` (docs/statistics.md
and docs/model.md section 11).

The trajectory side is computed from the jump table alone (as in
:mod:`thermospin_mc.analysis.jumpstats`); the exact side from the model. Every table
carries ``z = (trajectory - exact) / error``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import _validate as v
from ..exact.fcs import exact_counting_statistics, waiting_time_bins
from ..exact.solvers import mesolve
from ..exact.steady import steadystate
from ..physics.model import ChainModel
from .jumpstats import check_jumps, check_ntraj, check_window, jump_counts

__all__ = ["steady_state_from_jumps", "compare_counting_statistics", "CountingComparison"]


def steady_state_from_jumps(jumps: pd.DataFrame, ntraj: int, t_burn: float, t_end: float,
                            model=None, *, reference: str = "steady") -> pd.DataFrame:
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
        The run's model. If given, exact rates are added as columns ``exact``
        and ``z = (rate - exact) / sem`` (see ``reference``).
    reference : {"steady", "window"}
        Which exact rates: ``"steady"``, the steady state of ``model``
        (:func:`thermospin_mc.steadystate`; a fair reference only once the
        run has relaxed by ``t_burn``), or ``"window"``, the mean rate over
        the same window ``[t_burn, t_end]`` of the exact evolution from the
        model's initial state (the expected jump counts ``count`` of
        :func:`thermospin_mc.mesolve` at the two ends, their difference
        divided by ``t_end - t_burn``): exact for any window, relaxed or not.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``quantity``:

        - ``loss_left``, ``loss_right``: edge loss rates (exact: ``gamma <n_1>``,
          ``gamma <n_N>``);
        - ``pump``: pump rate (exact: ``gamma_pump (1 - <n_c>)``; 0 without a pump);
        - ``loss_total``: both edges;
        - ``net_right``: ``loss_right - loss_left``, the net spin transfer to the
          right (exact: ``gamma (<n_N> - <n_1>)``);
        - ``pump_minus_loss``: the balance (0 in a steady state; with
          ``reference="window"`` the exact mean change of the magnon number
          per unit time). Its error is that of the per-trajectory difference,
          which is bounded by the change of magnon number, so it is a sharp
          test.

        Columns ``rate`` (mean count / (t_end - t_burn)), ``sem`` (standard
        error over trajectories), ``ntraj``, and with ``model`` ``exact``, ``z``.
    """
    t_burn = v.real("t_burn", t_burn, lo=0.0)
    t_end = v.real("t_end", t_end, lo=0.0)
    if not t_end > t_burn:
        raise ValueError(f"t_end must be > t_burn = {t_burn}, got {t_end}")
    if reference not in ("steady", "window"):
        raise ValueError(f"reference must be 'steady' or 'window', got {reference!r}")
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
        exact = (_exact_rates(model) if reference == "steady"
                 else _window_rates(model, t_burn, t_end))
        out["exact"] = [exact[k] for k in series]
        with np.errstate(divide="ignore", invalid="ignore"):
            out["z"] = (out["rate"] - out["exact"]) / out["sem"]
    return out


def _exact_rates(model) -> dict:
    if not isinstance(model, ChainModel):
        raise ValueError(f"model must be a ChainModel, got {type(model).__name__}")
    n = steadystate(model, observables=("n",)).get("n")[0]
    left = model.gamma * n[0]
    right = model.gamma * n[-1]
    pump = model.gamma_pump * (1.0 - n[model.pump_site - 1]) if model.gamma_pump > 0 else 0.0
    return {"loss_left": left, "loss_right": right, "pump": pump, "loss_total": left + right,
            "net_right": right - left, "pump_minus_loss": 0.0}


def _window_rates(model, t_a: float, t_b: float) -> dict:
    """Exact mean jump rates over ``[t_a, t_b]`` of the evolution from ``model.initial``:
    ``(<N_k(t_b)> - <N_k(t_a)>) / (t_b - t_a)`` from the expected counts of ``mesolve``."""
    if not isinstance(model, ChainModel):
        raise ValueError(f"model must be a ChainModel, got {type(model).__name__}")
    res = mesolve(model, [t_a, t_b], observables=("count",))
    df = res.expect
    rate = {}
    for name in ("loss_left", "loss_right", "pump"):
        c = df.loc[df["observable"] == f"count:{name}", "mean"].to_numpy(dtype=float)
        rate[name] = float(c[-1] - c[0]) / (t_b - t_a) if c.size == 2 else 0.0
    loss = rate["loss_left"] + rate["loss_right"]
    return {**rate, "loss_total": loss, "net_right": rate["loss_right"] - rate["loss_left"],
            "pump_minus_loss": rate["pump"] - loss}


# --------------------------------------------------------------------------- counting statistics
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
                                n_boot: int = 2000, seed: int = 0,
                                n_jobs: int = 1) -> CountingComparison:
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
    n_jobs : int
        BLAS threads of the exact solvers (``-1``: every core; default 1).

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
    df = check_jumps(jumps)
    ntraj = check_ntraj(ntraj, df)
    t_a, t_b = check_window("window", window)
    order = v.integer("order", order, lo=2, hi=3)
    bins = v.integer("bins", bins, lo=1)
    n_boot = v.integer("n_boot", n_boot, lo=2)
    seed = v.integer("seed", seed, lo=0)
    tau_max = (t_b - t_a) / 4 if tau_max is None else v.real("tau_max", tau_max, lo=0.0,
                                                             lo_open=True)
    if not t_b - tau_max > t_a:
        raise ValueError(f"tau_max must be < t_b - t_a = {t_b - t_a}, got {tau_max}")
    # ---- exact cumulants; fcs validates model and counts and returns the weights
    # (``{channel: non-zero int}`` in the model's channel order) in ``attrs``
    ecs = exact_counting_statistics(model, counts, order=order, t=t_b - t_a, t0=t_a,
                                    n_jobs=n_jobs)
    weights = dict(ecs.attrs["counts"])
    exact = ecs["cumulant"].to_numpy()
    # ---- cumulants of the weighted count
    sel = df[(df["t"] >= t_a) & (df["t"] < t_b)]
    x = np.zeros(ntraj)
    for name, w in weights.items():
        tr = sel.loc[sel["channel"] == name, "traj"].to_numpy()
        x += w * np.bincount(tr, minlength=ntraj)
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
    p_exact = waiting_time_bins(model, list(weights), edges, window=(t_a, t_b - tau_max),
                                n_jobs=n_jobs)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p - p_exact) / sem
    wait = pd.DataFrame({"tau_lo": edges[:-1], "tau_hi": edges[1:], "p_traj": p, "sem": sem,
                         "p_exact": p_exact, "z": z})
    good = np.isfinite(z)
    return CountingComparison(cumulants=cum, waiting=wait, chi2=float(np.sum(z[good] ** 2)),
                              dof=int(good.sum()), counts=dict(weights), window=(t_a, t_b))
