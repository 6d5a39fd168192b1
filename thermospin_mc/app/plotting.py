"""PNG panels of the reproduced figures (matplotlib, no screen needed). No physics here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write

__all__ = ["plot_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, dpi=110, format="png"))
    _plt().close(fig)
    return path


def plot_figure(name: str, tables: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    """Draw the panels of figure ``name`` into ``out``; returns the PNG paths."""
    return {"fig2": _fig2, "fig3": _fig3, "fig4": _fig4, "fig5": _fig5,
            "fig6": _fig6, "fcs": _fcs, "rare": _rare}[name](tables, Path(out))


def _fig2(tables, out):
    plt = _plt()
    df = tables["alpha"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    styles = {5: ":", 7: "--", 9: "-"}
    for N, sub in df[df.curve == "canonical"].groupby("N"):
        ax.plot(sub["T"], sub["a"], styles.get(N, "-"), label=f"N = {N} (exact canonical)")
    for curve, st in (("sommerfeld", "k-."), ("thermodynamic", "0.5")):
        sub = df[df.curve == curve]
        ax.plot(sub["T"], sub["a"], st, label={"sommerfeld": "Eq. 5 (Sommerfeld)",
                                               "thermodynamic": "N -> inf"}[curve])
    ax.set_xlabel(r"$k_B T / \epsilon_0$")
    ax.set_ylabel(r"$\alpha(T) / \alpha_1$")
    ax.set_ylim(0.95, max(2.2, float(df[df.curve == "canonical"]["a"].max()) + 0.1))
    ax.legend(fontsize=8)
    paths = [_save(fig, out / "fig2_alpha.png")]
    conv = tables["convergence"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for (N, M), sub in conv.groupby(["N", "n_manifolds"]):
        ax.plot(sub["T"], np.abs(sub["difference"]) + 1e-17,
                "-" if M == 10**6 else ":", label=f"N = {N}, {M:.0e} manifolds")
    ax.set_yscale("log")
    ax.set_xlabel(r"$k_B T / \epsilon_0$")
    ax.set_ylabel("|enumerated - exact|")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "fig2_convergence.png"))
    return paths


def _fig3(tables, out):
    plt = _plt()
    df = tables["occupation"]
    paths = []
    for panel, (dT, sub) in zip("ab", df.groupby("delta_T"), strict=False):
        grid = sub.pivot(index="t", columns="site", values="n")
        fig, ax = plt.subplots(figsize=(5, 3.6))
        im = ax.pcolormesh(grid.columns.to_numpy(), grid.index.to_numpy(), grid.to_numpy(),
                           shading="nearest", cmap="coolwarm", vmin=0, vmax=1)
        fig.colorbar(im, ax=ax, label=r"$\langle n_i(t)\rangle$")
        ax.set_xlabel("site i")
        ax.set_ylabel(r"$J_0 t$")
        ax.set_title(rf"$\Delta T = {dT:g}\,\epsilon_0$")
        paths.append(_save(fig, out / f"fig3{panel}.png"))
    return paths


def _fig4(tables, out):
    plt = _plt()
    df = tables["sites"]
    cols = [c for c in df.columns if c.startswith("n_")]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(df["t"], df[cols[1]], "r-", label=f"<{cols[1]}> (hot side)")
    ax.plot(df["t"], df[cols[0]], "b:", label=f"<{cols[0]}> (cold side)")
    ax.plot(df["t"], df["bessel_a_T1"], "--", color="0.5", label=r"$J_1(2a(T_1)t)^2$")
    ax.plot(df["t"], df["bessel_a_T2"], "k-.", label=r"$J_1(2a(T_2)t)^2$")
    ax.set_xlabel(r"$J_0 t$")
    ax.set_ylabel("occupation")
    ax.legend(fontsize=8)
    return [_save(fig, out / "fig4.png")]


def _series_plot(df, observable, ax):
    for dT, sub in df[df.observable == observable].groupby("delta_T"):
        ex = sub[sub.solver == "exact"]
        mc = sub[sub.solver == "mcsolve"]
        (line,) = ax.plot(ex["t"], ex["mean"], "-", lw=1.2,
                          label=rf"$\Delta T = {dT:g}\,\epsilon_0$")
        if not mc.empty:
            ax.fill_between(mc["t"], mc["mean"] - 2 * mc["sem"], mc["mean"] + 2 * mc["sem"],
                            color=line.get_color(), alpha=0.3, lw=0)
    ax.set_xlabel(r"$J_0 t$")


def _fig5(tables, out):
    plt = _plt()
    df = tables["series"]
    paths = []
    for panel, obs, label in (("a", "j", "total spin current j"),
                              ("b", "m", "magnetisation m")):
        fig, ax = plt.subplots(figsize=(5, 3.6))
        _series_plot(df, obs, ax)
        ax.set_ylabel(label)
        ax.set_title("lines: exact; bands: trajectories (2 sem)", fontsize=8)
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / f"fig5{panel}.png"))
    return paths


def _fig6(tables, out):
    plt = _plt()
    df = tables["series"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    _series_plot(df, "j", ax)
    ax.set_ylabel("total spin current j")
    ax.set_title("lines: exact; bands: trajectories (2 sem)", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    ins = ax.inset_axes([0.58, 0.55, 0.38, 0.3])
    _series_plot(df, "m", ins)
    ins.set_xlabel("")
    ins.set_ylabel("m", fontsize=7)
    ins.tick_params(labelsize=6)
    paths = [_save(fig, out / "fig6a.png")]
    steady, fit = tables["steady"], tables["fit"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for gp, sub in steady.groupby("gamma_pump"):
        (line,) = ax.plot(sub["delta_T"], sub["j"], "o-", ms=3,
                          label=rf"$\gamma_I = {gp:g}$")
        row = fit[fit.gamma_pump == gp]
        if not row.empty and np.isfinite(row["c"].iloc[0]):
            x = np.linspace(0, float(sub["delta_T"].max()), 100)
            ax.plot(x, row["c"].iloc[0] * x**2, "--", color=line.get_color(), lw=0.8)
    ax.set_xlabel(r"$k_B \Delta T / \epsilon_0$")
    ax.set_ylabel(r"steady-state $j$")
    ax.set_title(r"dashed: $c\,\Delta T^2$ fitted on $\Delta T < \epsilon_0$", fontsize=8)
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "fig6b.png"))
    return paths


def _fcs(tables, out):
    plt = _plt()
    paths = []
    rates = tables["rates"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for gp, sub in rates.groupby("gamma_pump"):
        lab = rf"$\gamma_I = {gp:g}$"
        axes[0].plot(sub["delta_T"], sub["c1"], "o-", ms=3, label=lab)
        axes[1].plot(sub["delta_T"], sub["c2"], "o-", ms=3, label=lab)
        axes[2].plot(sub["delta_T"], sub["fano"], "o-", ms=3, label=lab)
    for ax, lab in zip(axes, (r"current $c_1$", r"noise $c_2$", r"Fano factor $c_2/c_1$"),
                       strict=True):
        ax.set_xlabel(r"$k_B \Delta T / \epsilon_0$")
        ax.set_ylabel(lab)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle("net spin to the hot side: exact cumulant rates", fontsize=9)
    paths.append(_save(fig, out / "fcs_rates.png"))
    sc = tables["scgf"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    axes[0].plot(sc["s"], sc["theta"], "-")
    axes[0].axhline(0, color="k", lw=0.5)
    axes[0].set_xlabel("s")
    axes[0].set_ylabel(r"$\theta(s)$")
    axes[1].plot(sc["x"], sc["I"], "-")
    axes[1].set_xlabel("current x = K/t")
    axes[1].set_ylabel("rate function I(x)")
    paths.append(_save(fig, out / "fcs_scgf.png"))
    w, we = tables["waiting"], tables["waiting_exact"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    mid = 0.5 * (w["tau_lo"] + w["tau_hi"])
    ax.errorbar(mid, w["density_traj"], yerr=2 * w["density_sem"], fmt="o", ms=3,
                label="trajectories (2 sem)")
    ax.step(w["tau_hi"], w["density_exact"], where="pre", lw=0.8,
            label="exact, same window (bin average)")
    ax.plot(we["tau"], we["w_loss"], "--", lw=0.8, label="exact steady state")
    ax.set_xlabel(r"waiting time $\tau$ between edge losses")
    ax.set_ylabel(r"$w(\tau)$")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "fcs_waiting.png"))
    return paths


def _rare(tables, out):
    """``rare.png``: theta(s) and theta'(s) (cloning and Doob trajectories beside the exact
    curves), the Doob steady profiles, and one Doob history per field as a heat map
    (time across, sites up) with its jumps marked."""
    plt = _plt()
    clo, ex, dob = tables["cloning"], tables["scgf"], tables["doob"]
    prof, hist, hj = tables["profile"], tables["history"], tables["history_jumps"]
    fields = sorted(hist["s"].unique())
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.4), layout="constrained")
    ax = axes[0, 0]
    ax.plot(ex["s"], ex["theta"], "k-", lw=1, label=r"exact (tsm.scgf)")
    ax.errorbar(clo["s"], clo["theta"], yerr=2 * clo["theta_sem"], fmt="o", ms=3, capsize=2,
                label=f"cloning ({int(clo['clones'].iloc[0])} clones, t = "
                      f"{clo['t'].iloc[0]:g}; 2 sem)")
    ax.axhline(0, color="0.6", lw=0.5)
    ax.set_xlabel("s")
    ax.set_ylabel(r"$\theta(s)$")
    ax.set_title("(a) scaled cumulant generating function", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    ax.plot(ex["s"], ex["current"], "k-", lw=1, label=r"exact $\theta'(s)$")
    ax.errorbar(clo["s"], clo["current"], yerr=2 * clo["current_sem"], fmt="o", ms=3,
                capsize=2, label="cloning (lineages)")
    ax.errorbar(dob["s"], dob["current"], yerr=2 * dob["current_sem"], fmt="s", ms=4,
                capsize=2, mfc="none", label=f"Doob trajectories ({int(dob['ntraj'].iloc[0])})")
    ax.axhline(0, color="0.6", lw=0.5)
    ax.set_xlabel("s")
    ax.set_ylabel("net spin current to the hot side")
    ax.set_title("(b) tilted current", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[0, 2]
    for sv, sub in prof.groupby("s"):
        (line,) = ax.plot(sub["site"], sub["n_exact"], "-", lw=1,
                          label=f"s = {sv:g}" + (" (typical)" if sv == 0 else ""))
        ax.errorbar(sub["site"], sub["n"], yerr=2 * sub["sem"], fmt="o", ms=3,
                    color=line.get_color())
    ax.set_xlabel("site i (cold 1 ... hot N)")
    ax.set_ylabel(r"$\langle n_i \rangle$")
    ax.set_title("(c) Doob steady state: lines exact, dots trajectories", fontsize=9)
    ax.legend(fontsize=7)
    styles = {"loss_left": ("v", "w"), "loss_right": ("^", "w"), "pump": ("o", "r")}
    for ax, sv in zip(axes[1], [fields[0], *fields[1:-1][:1], fields[-1]], strict=False):
        sub = hist[hist.s == sv]
        grid = sub.pivot(index="site", columns="t", values="n")
        im = ax.pcolormesh(grid.columns.to_numpy(), grid.index.to_numpy(), grid.to_numpy(),
                           shading="nearest", cmap="viridis", vmin=0, vmax=1)
        for ch, jsub in hj[hj.s == sv].groupby("channel"):
            mk, col = styles.get(ch, ("x", "w"))
            ax.plot(jsub["t"], jsub["site"], mk, color=col, mec="k", mew=0.4, ms=4,
                    label=ch, ls="none")
        ax.set_xlabel(r"$J_0 t$")
        ax.set_ylabel("site i")
        kind = "typical history" if sv == 0 else "rare history (Doob)"
        ax.set_title(f"s = {sv:g}: {kind}", fontsize=9)
        ax.legend(fontsize=6, loc="upper right", framealpha=0.6)
    fig.colorbar(im, ax=axes[1].tolist(), label=r"$\langle n_i(t)\rangle$ in the trajectory",
                 shrink=0.9)
    out_path = out / "rare.png"
    atomic_write(out_path, lambda fh: fig.savefig(fh, dpi=110, format="png"))
    _plt().close(fig)
    return [out_path]
