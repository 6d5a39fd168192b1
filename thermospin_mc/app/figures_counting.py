"""Two extra figure sets on the statistics of the net spin to the hot side (not
part of ``"all"``): exact full counting statistics (:func:`fcs`) and rare
currents by cloning and the Doob process (:func:`rare`). Each returns
``{table_name: DataFrame}`` as the paper's figures do."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..analysis import compare_counting_statistics
from ..core.blockstate import BlockState
from ..core.operators import Operator
from ..exact.doob import doob
from ..exact.fcs import NET_SPIN, exact_counting_statistics, rate_function, scgf
from ..exact.fcs import waiting_time_distribution as wtd
from ..physics.model import paper_model
from ..trajectories.cloning import cloning
from ..trajectories.driver import Checkpointing, Cluster, mcsolve
from .figure_settings import Settings

__all__ = ["fcs", "rare", "rare_cloning", "rare_doob", "RARE"]


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
                  cluster=Cluster(progress=settings.progress))
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
                      checkpoint=Checkpointing(keep_trajectories=True),
                      cluster=Cluster(progress=settings.progress))
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
