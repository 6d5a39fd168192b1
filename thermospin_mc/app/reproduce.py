"""The source paper's Figs. 2-6 as tidy tables (and PNGs via :mod:`plotting`), and
two extra figure sets: exact counting statistics (``fcs``) and rare currents by
cloning and the Doob process (``rare``).

Each ``figN(settings)`` returns ``{table_name: DataFrame}``; :func:`reproduce`
computes the requested figures, writes every table as parquet and CSV with
metadata, and draws one PNG per panel. The exact solvers give every curve; the
open-system figures (5 and 6a) are also computed with trajectories, whose
tables carry ``sem`` and a z-score against the exact value.

Conventions (docs/model.md section 8): N = 7, rho = 1, T1 = 0, the exact canonical
a(T) of the chain's own N; gamma = 3.102, gamma_I = 0.620. The Bessel law of
Fig. 4 is ``J_1(2 a t)^2`` with ``a = a(T1)`` and ``a = a(T2)`` (the paper
prints ``J(J0 t)``; see docs/model.md).

Length: one function per figure set (each a few dozen lines of physics and
table layout) sharing :class:`Settings`, the metadata and the writer; split
per figure they would only re-import each other.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

from .. import _validate as v
from ..analysis import compare_counting_statistics
from ..core.blockstate import BlockState
from ..core.operators import Operator
from ..core.results import metadata
from ..exact.doob import doob
from ..exact.fcs import NET_SPIN, exact_counting_statistics, rate_function, scgf
from ..exact.fcs import waiting_time_distribution as wtd
from ..exact.solvers import exit_probabilities, mesolve, sesolve, steadystate
from ..io import write_table
from ..physics.model import paper_model
from ..physics.thermal import alpha_ratio
from ..trajectories.cloning import cloning
from ..trajectories.driver import mcsolve
from .plotting import plot_figure

__all__ = ["FIGURES", "EXTRA_FIGURES", "Settings", "reproduce", "quadratic_fit", "fig2", "fig3",
           "fig4", "fig5", "fig6", "fcs", "rare", "rare_cloning", "rare_doob", "RARE"]

FIGURES = ("fig2", "fig3", "fig4", "fig5", "fig6")

_TRAJ = ("N", "n_times", "delta_T", "ntraj", "seed", "n_jobs", "progress")
#: Which :class:`Settings` fields each figure uses (the CLI refuses a flag that
#: none of the requested figures would use).
USES = {"fig2": ("alpha_N",), "fig3": ("N", "n_times"), "fig4": ("N", "n_times"),
        "fig5": _TRAJ, "fig6": (*_TRAJ, "gamma_pumps"),
        "fcs": ("N", "ntraj", "seed", "n_jobs", "progress", "gamma_pumps"),
        "rare": ("N", "ntraj", "seed", "n_jobs", "progress")}


@dataclass(frozen=True)
class Settings:
    """Sizes of the reproduction (defaults: the paper's, minutes on 2 cores).

    Parameters
    ----------
    N : int
        Chain length of Figs. 3-6 (the paper: 7).
    ntraj : int
        Trajectories per curve of Figs. 5 and 6a.
    n_jobs : int
        Worker processes for the trajectories (-1: all cores).
    seed : int
        Root seed; curve ``i`` of a figure uses ``seed + i``.
    n_times : int
        Output times per time series.
    t_closed, t_open : float
        End times of the closed (Figs. 3-4) and open (Figs. 5-6) evolutions.
    delta_T : tuple of float
        Temperature differences (eps0) of Figs. 5 and 6a.
    gamma_pumps : tuple of float
        Pump rates of Fig. 6b.
    steady_delta_T : tuple of float
        Temperature differences of Fig. 6b.
    fit_max : float
        Fig. 6b's quadratic fit uses ``0 < Delta T < fit_max``.
    alpha_N : tuple of int
        Particle numbers of Fig. 2.
    progress : bool or None
        Progress bars of the trajectory runs.
    """

    N: int = 7
    ntraj: int = 20_000
    n_jobs: int = -1
    seed: int = 2021
    n_times: int = 201
    t_closed: float = 10.0
    t_open: float = 20.0
    delta_T: tuple = (0.0, 1.0, 2.0, 3.0)
    gamma_pumps: tuple = (0.155, 0.620, 1.551)
    steady_delta_T: tuple = field(default_factory=lambda: tuple(np.round(
        np.linspace(0.0, 3.0, 31), 10)))
    fit_max: float = 1.0
    alpha_N: tuple = (5, 7, 9)
    progress: bool | None = None

    def __post_init__(self):
        v.integer("N", self.N, lo=3)
        v.integer("ntraj", self.ntraj, lo=2)
        v.integer("n_times", self.n_times, lo=2)
        v.real("t_closed", self.t_closed, lo=0.0, lo_open=True)
        v.real("t_open", self.t_open, lo=0.0, lo_open=True)
        v.real("fit_max", self.fit_max, lo=0.0, lo_open=True)
        for name in ("delta_T", "steady_delta_T", "gamma_pumps"):
            vals = getattr(self, name)
            if len(vals) == 0:
                raise ValueError(f"{name} must list at least one value")
            for x in vals:
                v.real(name, x, lo=0.0)
        if self.N % 2 == 0:
            raise ValueError(f"N must be odd (the pump sits at the centre), got {self.N}")


def _meta(settings: Settings, figure: str, **extra) -> dict:
    return metadata("reproduce", None, figure=figure, settings=asdict(settings), **extra)


# --------------------------------------------------------------------------- Fig. 2
def fig2(settings: Settings) -> dict[str, pd.DataFrame]:
    """a(T)/alpha_1 for each N (exact canonical), Eq. 5, the thermodynamic limit,
    and the manifold-count convergence (10^4 and 10^6 lowest manifolds vs exact)."""
    T = np.round(np.linspace(0.0, 5.0, 101), 10)
    rows = []
    for N in settings.alpha_N:
        rows.append(pd.DataFrame({"T": T, "curve": "canonical", "N": N,
                                  "a": alpha_ratio(T, N=N)}))
    rows.append(pd.DataFrame({"T": T, "curve": "sommerfeld", "N": 0,
                              "a": alpha_ratio(T, method="sommerfeld")}))
    rows.append(pd.DataFrame({"T": T, "curve": "thermodynamic", "N": 0,
                              "a": alpha_ratio(T, method="thermodynamic")}))
    conv = []
    for N in settings.alpha_N:
        exact = alpha_ratio(T, N=N)
        for M in (10**4, 10**6):
            aM = alpha_ratio(T, N=N, method="enumerate", n_manifolds=M)
            conv.append(pd.DataFrame({"T": T, "N": N, "n_manifolds": M, "a_enumerated": aM,
                                      "a_exact": exact, "difference": aM - exact}))
    return {"alpha": pd.concat(rows, ignore_index=True),
            "convergence": pd.concat(conv, ignore_index=True)}


# --------------------------------------------------------------------------- Figs. 3-4
def _closed(settings: Settings, delta_T: float):
    model = paper_model("closed", N=settings.N, delta_T=delta_T)
    times = np.linspace(0.0, settings.t_closed, settings.n_times)
    return model, times, sesolve(model, times, observables=("n", "j"))


def fig3(settings: Settings) -> dict[str, pd.DataFrame]:
    """Closed chain, step profile, impurity at the centre: <n_i(t)> for every site
    at Delta T = 0 (panel a) and 2 eps0 (panel b), exact."""
    frames = []
    for dT in (0.0, 2.0):
        model, times, res = _closed(settings, dT)
        n = res.get("n")
        frames.append(pd.DataFrame({
            "delta_T": dT, "t": np.repeat(times, model.N),
            "site": np.tile(np.arange(1, model.N + 1), times.size), "n": n.ravel()}))
    return {"occupation": pd.concat(frames, ignore_index=True)}


def fig4(settings: Settings) -> dict[str, pd.DataFrame]:
    """Sites next to the centre (i = c -+ 1) at Delta T = 2 eps0 against the Bessel
    law ``J_1(2 a t)^2`` with ``a(T1)`` and ``a(T2)``, and the left/right asymmetry."""
    model, times, res = _closed(settings, 2.0)
    c = (model.N + 1) // 2
    n = res.get("n")
    a = np.asarray(model.couplings)
    a_cold, a_hot = float(a[0]), float(a[-1])
    table = pd.DataFrame({
        "t": times,
        f"n_{c - 1}": n[:, c - 2], f"n_{c + 1}": n[:, c],
        "bessel_a_T1": special.jv(1, 2 * a_cold * times) ** 2,
        "bessel_a_T2": special.jv(1, 2 * a_hot * times) ** 2,
        "asymmetry": n[:, c] - n[:, c - 2],
    })
    table.attrs["a_T1"], table.attrs["a_T2"] = a_cold, a_hot
    return {"sites": table}


# --------------------------------------------------------------------------- Figs. 5-6a
def _series(settings: Settings, scenario: str, offset: int, **kw) -> pd.DataFrame:
    times = np.linspace(0.0, settings.t_open, settings.n_times)
    frames = []
    for i, dT in enumerate(settings.delta_T):
        model = paper_model(scenario, N=settings.N, delta_T=dT, **kw)
        ref = mesolve(model, times, observables=("j", "m"))
        mc = mcsolve(model, times, ntraj=settings.ntraj, seed=settings.seed + offset + i,
                     n_jobs=settings.n_jobs, observables=("j", "m"), progress=settings.progress)
        # rows where every trajectory gave the same value (e.g. no loss yet at
        # early times) are scored against the one-event floor (results.effective_sem)
        z = mc.compare(ref)[["t", "observable", "z"]]
        ex = ref.expect[["t", "observable", "mean"]].assign(solver="exact", sem=0.0,
                                                             ntraj=0, z=np.nan)
        tr = mc.expect[["t", "observable", "mean", "sem", "ntraj"]].merge(
            z, on=["t", "observable"], how="left").assign(solver="mcsolve")
        frames.append(pd.concat([ex, tr], ignore_index=True).assign(delta_T=dT))
    df = pd.concat(frames, ignore_index=True)
    return df[["delta_T", "solver", "t", "observable", "mean", "sem", "ntraj", "z"]]


def fig5(settings: Settings) -> dict[str, pd.DataFrame]:
    """Edge loss, impurity at the centre, linear profile: j(t) and m(t) for each
    Delta T (exact and trajectories), and the exit-side probabilities: exact at
    t -> inf, and the fraction of trajectories whose impurity leaves on the right,
    run to a time where the exact survival probability is below 1e-6."""
    series = _series(settings, "loss", 0)
    rows = []
    for i, dT in enumerate(settings.delta_T):
        model = paper_model("loss", N=settings.N, delta_T=dT)
        p = exit_probabilities(model)
        # run the jump records long enough for every impurity to have left
        t_end = _loss_time(model)
        mc = mcsolve(model, [0.0, t_end], ntraj=settings.ntraj, seed=settings.seed + 100 + i,
                     n_jobs=settings.n_jobs, observables=("m",), record_jumps=True,
                     progress=settings.progress)
        right = int((mc.jumps["channel"] == "loss_right").sum())
        left = int((mc.jumps["channel"] == "loss_left").sum())
        n = settings.ntraj
        pr = right / n
        rows.append({"delta_T": dT, "p_right_exact": float(p["loss_right"]),
                     "p_left_exact": float(p["loss_left"]), "p_right_mc": pr,
                     "p_right_sem": float(np.sqrt(max(pr * (1 - pr), 1.0 / n) / n)),
                     "p_left_mc": left / n, "not_lost": (n - right - left) / n,
                     "t_end": t_end, "ntraj": n})
    ex = pd.DataFrame(rows)
    ex["z"] = (ex["p_right_mc"] - ex["p_right_exact"]) / ex["p_right_sem"]
    return {"series": series, "exit": ex}


def _loss_time(model, tail: float = 1e-6) -> float:
    """A time by which the impurity is lost with probability >= 1 - tail (exact)."""
    t = 20.0
    for _ in range(20):
        m = float(mesolve(model, [t], observables=("m",)).get("m")[0, 0])
        if model.N / 2 - m < tail:
            return t
        t *= 2
    return t


def fig6(settings: Settings) -> dict[str, pd.DataFrame]:
    """Pump + edge loss from all up: j(t) and m(t) for each Delta T (exact and
    trajectories; panel a and inset), the steady-state j against Delta T for each
    gamma_I (panel b), and the quadratic fit ``j = c Delta T^2`` on
    ``0 < Delta T < fit_max`` with the standard error of ``c`` and the fit's
    relative rms residual (a measure of how quadratic the curve really is)."""
    series = _series(settings, "pump", 200)
    rows = []
    for gp in settings.gamma_pumps:
        for dT in settings.steady_delta_T:
            model = paper_model("pump", N=settings.N, delta_T=dT, gamma_pump=gp)
            ss = steadystate(model, observables=("j", "m"))
            rows.append({"gamma_pump": gp, "delta_T": float(dT),
                         "j": float(ss.get("j")[0, 0]), "m": float(ss.get("m")[0, 0])})
    steady = pd.DataFrame(rows)
    return {"series": series, "steady": steady, "fit": quadratic_fit(steady, settings.fit_max)}


def quadratic_fit(steady: pd.DataFrame, fit_max: float) -> pd.DataFrame:
    """Least-squares ``j = c Delta T^2`` per gamma_I on ``0 < Delta T < fit_max``.

    ``c_sem`` is the standard error of ``c`` from the residuals (the data are
    exact, so it measures the lack of fit, not noise); ``rel_rms`` is the rms
    residual over the rms of ``j``; ``local_exponent`` is the slope of
    ``log j`` against ``log Delta T`` between the two smallest positive Delta T
    (2 for a quadratic law).
    """
    out = []
    for gp, sub in steady.groupby("gamma_pump", sort=True):
        s = sub[(sub.delta_T > 0) & (sub.delta_T < fit_max)].sort_values("delta_T")
        x, y = s["delta_T"].to_numpy() ** 2, s["j"].to_numpy()
        if x.size < 2:
            out.append({"gamma_pump": gp, "c": np.nan, "c_sem": np.nan, "rel_rms": np.nan,
                        "local_exponent": np.nan, "n_points": int(x.size)})
            continue
        c = float(x @ y / (x @ x))
        res = y - c * x
        c_sem = float(np.sqrt(res @ res / (x.size - 1) / (x @ x)))
        rel = float(np.sqrt(np.mean(res**2)) / np.sqrt(np.mean(y**2)))
        d = s["delta_T"].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = float(np.log(y[1] / y[0]) / np.log(d[1] / d[0])) if y[0] > 0 else np.nan
        out.append({"gamma_pump": gp, "c": c, "c_sem": c_sem, "rel_rms": rel,
                    "local_exponent": slope, "n_points": int(x.size)})
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- FCS (extra)
def fcs(settings: Settings) -> dict[str, pd.DataFrame]:
    """Exact full counting statistics of the net spin to the hot (right) side
    (docs/model.md 11), an extra figure set (not part of ``"all"``):

    - ``rates``: cumulant rates c1..c4 and the Fano factor c2/c1 against
      Delta T for each gamma_I (pump scenario, N = settings.N);
    - ``scgf``: theta(s) and the rate function I(x) of the current (Legendre
      transform) at Delta T = 2 eps0, gamma_I = 0.62;
    - ``waiting``/``waiting_exact``: the waiting time between edge losses,
      trajectory histogram (run with record_jumps, at most 1000 trajectories,
      intervals starting in [10, 34)) beside the exact bin probabilities of
      the same window, and the exact steady-state densities ``w(tau)`` of the
      losses and of the pump.
    """
    dTs = np.round(np.linspace(0.0, 3.0, 13), 10)
    rows = []
    for gp in settings.gamma_pumps:
        for dT in dTs:
            model = paper_model("pump", N=settings.N, delta_T=dT, gamma_pump=gp)
            c = exact_counting_statistics(model, NET_SPIN, order=4)["cumulant"].to_numpy()
            rows.append({"gamma_pump": gp, "delta_T": float(dT), "c1": c[0], "c2": c[1],
                         "c3": c[2], "c4": c[3],
                         "fano": c[1] / c[0] if abs(c[0]) > 1e-12 else np.nan})
    rates = pd.DataFrame(rows)
    model = paper_model("pump", N=settings.N, delta_T=2.0)
    s = np.round(np.linspace(-2.0, 2.0, 41), 10)
    th = scgf(model, NET_SPIN, s)
    rf = rate_function(s, th)
    scg = pd.DataFrame({"s": s, "theta": th, "x": rf["x"], "I": rf["I"]})
    ntraj = min(settings.ntraj, 1000)
    res = mcsolve(model, np.linspace(0.0, 40.0, 3), ntraj=ntraj, seed=settings.seed,
                  n_jobs=settings.n_jobs, record_jumps=True, observables=("m",),
                  progress=settings.progress)
    cmp = compare_counting_statistics(res.jumps, ntraj, model, NET_SPIN, (10.0, 40.0),
                                      bins=30, tau_max=6.0)
    wait = cmp.waiting.copy()
    width = wait["tau_hi"] - wait["tau_lo"]
    wait["density_traj"] = wait["p_traj"] / width
    wait["density_sem"] = wait["sem"] / width
    wait["density_exact"] = wait["p_exact"] / width
    wait.attrs["chi2"], wait.attrs["dof"] = cmp.chi2, cmp.dof
    tau = np.linspace(0.0, 6.0, 241)
    wexact = pd.DataFrame({"tau": tau,
                           "w_loss": wtd(model, ["loss_left", "loss_right"], tau),
                           "w_pump": wtd(model, "pump", tau)})
    return {"rates": rates, "scgf": scg, "waiting": wait, "waiting_exact": wexact,
            "window_cumulants": cmp.cumulants.reset_index()}


# --------------------------------------------------------------------------- rare (extra)
#: Sizes of the ``rare`` figure set (the chain and the seeds come from :class:`Settings`):
#: the count (the net spin to the hot side), the cloning fields and run, the fine
#: grid of the exact curve, and the Doob fields, times and trajectory cap.
RARE = {"counts": dict(NET_SPIN), "s": tuple(np.round(np.linspace(-1.0, 1.0, 9), 10)),
        "clones": 200, "t": 30.0, "populations": 12,
        "s_fine": tuple(np.round(np.linspace(-1.25, 1.25, 61), 10)),
        "doob_s": (-1.0, 0.0, 1.0), "t_doob": 40.0, "n_times": 321, "burn": 10.0,
        "ntraj": 400, "slope_step": 1e-4}


def _theta_and_slope(model, counts, s) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``theta(s)`` and ``theta'(s)`` (central difference, ``RARE["slope_step"]``)."""
    s = np.asarray(s, dtype=float)
    h = RARE["slope_step"]
    th = scgf(model, counts, np.concatenate([s, s + h, s - h]))
    n = s.size
    return th[:n], (th[n:2 * n] - th[2 * n:]) / (2 * h)


def rare(settings: Settings, sizes: dict | None = None) -> dict[str, pd.DataFrame]:
    """Rare currents of the net spin to the hot side (docs/model.md 15), an extra figure set
    (not part of ``"all"``), on the pump chain (N = settings.N, Delta T = 2 eps0):

    - ``cloning``: ``theta(s)`` and the tilted current ``theta'(s)`` by cloning
      (200 clones, t = 30, 12 populations, s in [-1, 1]) beside the exact values
      (``tsm.scgf``, a central difference for the slope) with z-scores;
    - ``scgf``: the exact ``theta(s)`` on a fine grid, and its slope from
      second-order differences of that grid (for drawing);
    - ``doob``: Doob trajectories (``tsm.doob``, at most 400 per field, s = -1, 0,
      1; s = 0 is the chain itself) on [0, 40]: the counted current after
      t = 10 (mean and sem over trajectories) beside the exact ``theta'(s)``
      (the Doob steady state's rate);
    - ``profile``: the occupations ``<n_i>`` averaged over trajectories and over
      t >= 10 beside the exact Doob steady state ``l^(1/2) r_s l^(1/2)``;
    - ``history``/``history_jumps``: one Doob trajectory per field (its first),
      ``<n_i(t)>`` in its state and its jumps: a typical rare history.

    ``sizes`` overrides entries of :data:`RARE` (tests run it small).
    """
    sizes = {**RARE, **(sizes or {})}
    return {**rare_cloning(settings, sizes), **rare_doob(settings, sizes)}


def rare_cloning(settings: Settings, sizes: dict | None = None) -> dict[str, pd.DataFrame]:
    """The ``cloning`` and ``scgf`` tables of :func:`rare`."""
    sizes = {**RARE, **(sizes or {})}
    model = paper_model("pump", N=settings.N)
    counts = sizes["counts"]
    s = np.array(sizes["s"], dtype=float)
    clo = cloning(model, counts, s, t=sizes["t"], clones=sizes["clones"], seed=settings.seed,
                  n_jobs=settings.n_jobs, populations=sizes["populations"])
    th, slope = _theta_and_slope(model, counts, s)
    clo["theta_exact"], clo["current_exact"] = th, slope
    with np.errstate(divide="ignore", invalid="ignore"):
        clo["theta_z"] = np.where(clo["theta_sem"] > 0,
                                  (clo["theta"] - th) / clo["theta_sem"], np.nan)
        clo["current_z"] = np.where(clo["current_sem"] > 0,
                                    (clo["current"] - slope) / clo["current_sem"], np.nan)
    clo.attrs["counts"] = dict(counts)
    fine = np.array(sizes["s_fine"], dtype=float)
    th_f = scgf(model, counts, fine)
    # the curve's slope for drawing: second-order differences of the fine grid (error
    # ~ h^2 |theta'''| / 6, below 1e-3 here); the cloning table has the sharp slope
    slope_f = np.gradient(th_f, fine, edge_order=2)
    return {"cloning": clo, "scgf": pd.DataFrame({"s": fine, "theta": th_f,
                                                  "current": slope_f})}


def rare_doob(settings: Settings, sizes: dict | None = None) -> dict[str, pd.DataFrame]:
    """The ``doob``, ``profile``, ``history`` and ``history_jumps`` tables of :func:`rare`."""
    sizes = {**RARE, **(sizes or {})}
    model = paper_model("pump", N=settings.N)
    counts = sizes["counts"]
    t_end, burn = float(sizes["t_doob"]), float(sizes["burn"])
    times = np.linspace(0.0, t_end, sizes["n_times"])
    late = times >= burn
    ntraj = min(settings.ntraj, sizes["ntraj"])
    N = model.N
    n_ops = [Operator({f"n{i}": 1.0}, N) for i in range(1, N + 1)]
    rows, prof, hist, hjumps = [], [], [], []
    for i, sd in enumerate(sizes["doob_s"]):
        proc = doob(model, counts, sd)
        res = mcsolve(proc, times, ntraj=ntraj, seed=settings.seed + 300 + i,
                      n_jobs=settings.n_jobs, observables=("n",), record_jumps=True,
                      keep_trajectories=True, progress=settings.progress)
        jumps = res.jumps
        nu = (jumps["channel"].astype(str).map(counts).fillna(0.0).to_numpy(dtype=float)
              * (jumps["t"].to_numpy() >= burn))
        per = np.bincount(jumps["traj"].to_numpy(), weights=nu, minlength=ntraj)
        per = per / (t_end - burn)
        rate = proc.count_rate()
        mean, sem = float(per.mean()), float(per.std(ddof=1) / np.sqrt(ntraj))
        rows.append({"s": float(sd), "theta": proc.theta, "current": mean,
                     "current_sem": sem, "current_exact": rate,
                     "z": (mean - rate) / sem if sem > 0 else np.nan,
                     "ntraj": ntraj, "t_a": burn, "t_b": t_end})
        traj = res.trajectories
        lo, hi = traj["columns"]["n"]
        n_traj = traj["rows"][:, :, lo:hi]                        # (ntraj, nt, N)
        avg = n_traj[:, late].mean(axis=1)                         # each trajectory's average
        rho_d = BlockState(N, proc.steady_state())
        prof.append(pd.DataFrame({
            "s": float(sd), "site": np.arange(1, N + 1), "n": avg.mean(axis=0),
            "sem": avg.std(axis=0, ddof=1) / np.sqrt(ntraj),
            "n_exact": [float(np.real(rho_d.expect(op))) for op in n_ops]}))
        hist.append(pd.DataFrame({"s": float(sd), "t": np.repeat(times, N),
                                  "site": np.tile(np.arange(1, N + 1), times.size),
                                  "n": n_traj[0].ravel()}))
        first = jumps[jumps["traj"] == 0]
        hjumps.append(pd.DataFrame({"s": float(sd), "t": first["t"].to_numpy(),
                                    "channel": first["channel"].astype(str).to_numpy(),
                                    "site": first["site"].to_numpy()}))
    return {"doob": pd.DataFrame(rows), "profile": pd.concat(prof, ignore_index=True),
            "history": pd.concat(hist, ignore_index=True),
            "history_jumps": pd.concat(hjumps, ignore_index=True)}

_FUNCS = {"fig2": fig2, "fig3": fig3, "fig4": fig4, "fig5": fig5, "fig6": fig6, "fcs": fcs,
          "rare": rare}
#: Extra figure sets (requested by name, not part of "all").
EXTRA_FIGURES = ("fcs", "rare")


def reproduce(figures, out, settings: Settings | None = None, formats=("parquet", "csv"),
              plots: bool = True, log=print) -> dict[str, dict[str, pd.DataFrame]]:
    """Compute ``figures`` (names from :data:`FIGURES` or ``"all"``) and write
    ``out/<fig>_<table>.{parquet,csv}`` and ``out/<fig>*.png``.

    Returns ``{figure: {table: DataFrame}}``.
    """
    settings = settings or Settings()
    if isinstance(figures, str):
        figures = [figures]
    names = []
    for f in figures:
        if f == "all":
            names.extend(FIGURES)
        elif f in _FUNCS:
            names.append(f)
        else:
            raise ValueError(f"figure must be one of {FIGURES + EXTRA_FIGURES + ('all',)}, "
                             f"got {f!r}")
    for fmt in formats:
        if fmt not in ("parquet", "csv"):
            raise ValueError(f"formats must be parquet and/or csv, got {fmt!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in dict.fromkeys(names):
        t0 = time.perf_counter()
        tables = _FUNCS[name](settings)
        meta = _meta(settings, name, elapsed_s=time.perf_counter() - t0)
        for tname, df in tables.items():
            tmeta = dict(meta, table=tname, **{k: v_ for k, v_ in df.attrs.items()})
            for fmt in formats:
                write_table(df, out / f"{name}_{tname}.{fmt}", tmeta)
        if plots:
            for path in plot_figure(name, tables, out):
                log(f"wrote {path}")
        log(f"{name}: {', '.join(tables)} in {time.perf_counter() - t0:.1f} s")
        results[name] = tables
    return results

