"""The source paper's Figs. 2-6 as tidy tables: ``figN(settings)`` returns
``{table_name: DataFrame}``. The exact solvers give every curve; the
open-system figures (5 and 6a) are also computed with trajectories, whose
tables carry ``sem`` and a z-score against the exact value.

Conventions (docs/model.md section 8): N = 7, rho = 1, T1 = 0, the exact canonical
a(T) of the chain's own N; gamma = 3.102, gamma_I = 0.620. The Bessel law of
Fig. 4 is ``J_1(2 a t)^2`` with ``a = a(T1)`` and ``a = a(T2)`` (the paper
prints ``J(J0 t)``; see docs/model.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from ..exact.solvers import mesolve, sesolve
from ..exact.steady import exit_probabilities, steadystate
from ..physics.model import paper_model
from ..physics.thermal import alpha_ratio
from ..trajectories.driver import Cluster, mcsolve
from .figure_settings import Settings

__all__ = ["fig2", "fig3", "fig4", "fig5", "fig6", "quadratic_fit"]


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
                     n_jobs=settings.n_jobs, observables=("j", "m"),
                     cluster=Cluster(progress=settings.progress))
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
                     cluster=Cluster(progress=settings.progress))
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
