"""Command line: ``thermospin-mc run ...``.

Bad input never shows a traceback: it prints one line ``thermospin-mc: error: ...``
and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

import numpy as np

__all__ = ["main", "build_model", "parse_times"]

_SCENARIOS = ("pump", "loss", "closed")
_PROFILES = ("linear", "step", "uniform")


class CliError(ValueError):
    pass


def parse_times(spec: str) -> np.ndarray:
    """``"start:stop:num"`` (inclusive linspace) or a comma list ``"0,1,2.5"``."""
    try:
        if ":" in spec:
            start, stop, num = spec.split(":")
            num = int(num)
            if num < 1:
                raise CliError(f"--times: number of points must be >= 1, got {num}")
            return np.linspace(float(start), float(stop), num)
        return np.array([float(x) for x in spec.split(",") if x.strip()])
    except (TypeError, ValueError) as exc:
        if isinstance(exc, CliError):
            raise
        raise CliError(f"--times must be 'start:stop:num' or a comma list, got {spec!r}") \
            from exc


def _parse_sites(spec) -> tuple[int, ...] | str:
    if spec in (None, "", "all_up"):
        return "all_up"
    if isinstance(spec, (list, tuple)):
        return tuple(int(s) for s in spec)
    try:
        return tuple(int(s) for s in str(spec).split(",") if s.strip())
    except ValueError as exc:
        raise CliError(f"--initial must be 'all_up' or comma-separated sites, got {spec!r}") \
            from exc


def build_model(cfg: dict):
    """A ChainModel from a flat config dict (CLI flags or a TOML ``[model]`` table)."""
    import thermospin_mc as tsm

    scenario = cfg.get("scenario", "pump")
    if scenario not in _SCENARIOS:
        raise CliError(f"scenario must be one of {_SCENARIOS}, got {scenario!r}")
    N = cfg.get("N", 7)
    delta_T = cfg.get("delta_T", 2.0)
    base = tsm.paper_model(scenario, N=N, delta_T=delta_T,
                           gamma=cfg.get("gamma", tsm.model.PAPER_GAMMA),
                           gamma_pump=cfg.get("gamma_pump", tsm.model.PAPER_GAMMA_PUMP),
                           alpha_method=cfg.get("alpha_method", "canonical"))
    changes = {}
    if "profile" in cfg:
        kind = cfg["profile"]
        T1 = cfg.get("T1", 0.0)
        T2 = cfg.get("T2", T1 + delta_T)
        if kind == "linear":
            changes["profile"] = tsm.LinearProfile(T1, T2)
        elif kind == "step":
            changes["profile"] = tsm.StepProfile(T1, T2)
        elif kind == "uniform":
            changes["profile"] = tsm.UniformProfile(cfg.get("T", T1))
        else:
            raise CliError(f"profile must be one of {_PROFILES}, got {kind!r}")
    if "couplings" in cfg:
        changes["profile"] = tsm.BondCouplings(tuple(cfg["couplings"]))
    if "bond_temperatures" in cfg:
        changes["profile"] = tsm.BondTemperatures(tuple(cfg["bond_temperatures"]))
    if scenario == "closed":
        for k in ("gamma", "gamma_pump"):
            if k in cfg:
                changes[k] = cfg[k]
    if "pump_site" in cfg:
        changes["pump_site"] = cfg["pump_site"]
    if "initial" in cfg:
        changes["initial"] = _parse_sites(cfg["initial"])
    if "anisotropy" in cfg:
        changes["anisotropy"] = cfg["anisotropy"]
    return base.with_(**changes) if changes else base


def _add_run(sub):
    p = sub.add_parser("run", help="run trajectories (or an exact solver) of one model",
                       description="Run a quantum-jump ensemble (default) or an exact solver "
                       "and write tidy tables. Defaults: the paper's pump + loss scenario "
                       "(N = 7, linear profile T1 = 0, T2 = 2 eps0, gamma = 3.102, "
                       "gamma_I = 0.620), 20,000 trajectories, 81 times on [0, 20].")
    p.add_argument("--config", type=Path, help="TOML file with [model] and [run] tables")
    p.add_argument("--scenario", choices=_SCENARIOS)
    p.add_argument("--N", type=int)
    p.add_argument("--delta-T", dest="delta_T", type=float, help="T2 - T1 in eps0 (T1 = 0)")
    p.add_argument("--profile", choices=_PROFILES)
    p.add_argument("--T1", type=float)
    p.add_argument("--T2", type=float)
    p.add_argument("--T", type=float, help="uniform temperature")
    p.add_argument("--gamma", type=float, help="edge-loss rate (J0)")
    p.add_argument("--gamma-pump", dest="gamma_pump", type=float, help="pump rate (J0)")
    p.add_argument("--pump-site", dest="pump_site", type=int)
    p.add_argument("--initial", help="'all_up' or comma-separated magnon sites (1-based)")
    p.add_argument("--alpha-method", dest="alpha_method",
                   choices=("canonical", "thermodynamic", "sommerfeld"))
    p.add_argument("--times", help="'start:stop:num' or comma list (default 0:20:81)")
    p.add_argument("--solver", choices=("mc", "exact", "steady"),
                   help="mc (trajectories, default), exact (mesolve), steady (steadystate)")
    p.add_argument("--ntraj", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--n-jobs", dest="n_jobs", type=int, help="worker processes (-1: all)")
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--observables", help="comma list of j,j_bond,flow,m,n")
    p.add_argument("--record-jumps", dest="record_jumps", action="store_true", default=None)
    p.add_argument("--max-magnons", dest="max_magnons", type=int)
    p.add_argument("--out", type=Path, help="output directory (default ./out)")
    p.add_argument("--format", choices=("parquet", "csv", "both"))
    p.add_argument("--no-compare", dest="compare", action="store_false", default=None,
                   help="skip the exact reference printed next to trajectory results")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    g = p.add_argument_group("long runs (checkpoints, accuracy targets, clusters)")
    g.add_argument("--checkpoint", type=Path,
                   help="checkpoint file (.npz): written atomically every --checkpoint-every "
                        "seconds and on Ctrl-C; re-running the same command resumes from it")
    g.add_argument("--resume", action="store_true", default=None,
                   help="require an existing --checkpoint to resume (error if missing)")
    g.add_argument("--checkpoint-every", dest="checkpoint_every", type=float,
                   help="seconds between checkpoint writes (default 60; 0 = every batch)")
    g.add_argument("--target-sem", dest="target_sem",
                   help="stop once the largest standard error (t > 0) is below this value; "
                        "a trailing %% makes it relative to |mean| (e.g. 1%%); --ntraj is then "
                        "the minimum number of trajectories")
    g.add_argument("--target-observables", dest="target_observables",
                   help="comma list of observables the target applies to (default: all)")
    g.add_argument("--max-ntraj", dest="max_ntraj", type=int,
                   help="cap on trajectories of a --target-sem run (default 10^8)")
    g.add_argument("--time-limit", dest="time_limit", type=float,
                   help="stop after this many seconds at the last finished block")
    g.add_argument("--backend", choices=("serial", "threads", "loky", "dask"),
                   help="where batches run (default: threads, or dask with --scheduler)")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on an existing Dask scheduler, e.g. tcp://10.0.0.1:8786")


_MODEL_KEYS = ("scenario", "N", "delta_T", "profile", "T1", "T2", "T", "gamma", "gamma_pump",
               "pump_site", "initial", "alpha_method", "couplings", "bond_temperatures",
               "anisotropy")
_RUN_KEYS = ("times", "solver", "ntraj", "seed", "n_jobs", "batch_size", "observables",
             "record_jumps", "max_magnons", "out", "format", "compare", "progress",
             "checkpoint", "resume", "checkpoint_every", "target_sem", "target_observables",
             "max_ntraj", "time_limit", "backend", "scheduler")


def _load_config(path: Path | None) -> tuple[dict, dict]:
    if path is None:
        return {}, {}
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise CliError(f"config file not found: {str(path)!r}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
    model, run = dict(data.get("model", {})), dict(data.get("run", {}))
    for k in model:
        if k not in _MODEL_KEYS:
            raise CliError(f"unknown key [model].{k} in {str(path)!r}; allowed: {_MODEL_KEYS}")
    for k in run:
        if k not in _RUN_KEYS:
            raise CliError(f"unknown key [run].{k} in {str(path)!r}; allowed: {_RUN_KEYS}")
    return model, run


def _cmd_run(args) -> int:
    import thermospin_mc as tsm

    mcfg, rcfg = _load_config(args.config)
    for k in _MODEL_KEYS:
        val = getattr(args, k, None)
        if val is not None:
            mcfg[k] = val
    for k in _RUN_KEYS:
        val = getattr(args, k, None)
        if val is not None:
            rcfg[k] = val
    model = build_model(mcfg)
    times = rcfg.get("times", "0:20:81")
    times = parse_times(times) if isinstance(times, str) else np.asarray(times, dtype=float)
    solver = rcfg.get("solver", "mc")
    obs = rcfg.get("observables")
    if isinstance(obs, str):
        obs = tuple(o.strip() for o in obs.split(",") if o.strip())
    out = Path(rcfg.get("out", "out"))
    fmt = rcfg.get("format", "both")
    ref = None
    if solver == "mc":
        long_run = _long_run_options(rcfg)
        try:
            res = tsm.mcsolve(model, times, ntraj=rcfg.get("ntraj", 20_000),
                              seed=rcfg.get("seed", 1), n_jobs=rcfg.get("n_jobs", -1),
                              batch_size=rcfg.get("batch_size"), observables=obs,
                              record_jumps=bool(rcfg.get("record_jumps", False)),
                              max_magnons=rcfg.get("max_magnons"),
                              progress=rcfg.get("progress"), **long_run)
        except KeyboardInterrupt:
            ck = long_run.get("checkpoint")
            tail = (f"; checkpoint written to {str(ck)!r}, run the same command to resume"
                    if ck is not None else "")
            print(f"thermospin-mc: interrupted{tail}", file=sys.stderr)
            return 130
        if rcfg.get("compare", True) and _small_enough(model):
            ref = tsm.mesolve(model, times, observables=("j", "m"))
    elif solver == "exact":
        res = tsm.mesolve(model, times, observables=obs)
    else:
        res = tsm.steadystate(model, observables=obs)
    written = []
    if fmt in ("parquet", "both"):
        written += res.to_parquet(out)
    if fmt in ("csv", "both"):
        written += res.to_csv(out)
    _print_summary(model, res, ref)
    for p in written:
        print(f"wrote {p}")
    return 0


def _long_run_options(rcfg: dict) -> dict:
    """Checkpoint, accuracy-target and cluster keywords of ``mcsolve`` from the config."""
    kw = {}
    for k in ("checkpoint", "checkpoint_every", "max_ntraj", "time_limit", "backend",
              "scheduler"):
        if rcfg.get(k) is not None:
            kw[k] = rcfg[k]
    if "checkpoint" in kw:
        kw["checkpoint"] = Path(kw["checkpoint"])
    if rcfg.get("resume"):
        if "checkpoint" not in kw:
            raise CliError("--resume needs --checkpoint PATH")
        kw["resume"] = True
    target = rcfg.get("target_sem")
    if target is not None:
        text = str(target).strip()
        relative = text.endswith("%")
        try:
            value = float(text[:-1]) / 100 if relative else float(text)
        except ValueError as exc:
            raise CliError(f"--target-sem must be a number or a percentage like '1%', got "
                           f"{target!r}") from exc
        kw.update(target_sem=value, relative=relative)
    tobs = rcfg.get("target_observables")
    if tobs is not None:
        if isinstance(tobs, str):
            tobs = tuple(o.strip() for o in tobs.split(",") if o.strip())
        kw["target_observables"] = tuple(tobs)
    return kw


def _small_enough(model) -> bool:
    from math import comb

    secs = model.reachable_sectors()
    return sum(comb(model.N, m) ** 2 for m in secs) <= 100_000


def _print_summary(model, res, ref) -> None:
    meta = res.metadata
    print(f"thermospin-mc {meta.get('version')}  solver={meta['solver']}  N={model.N}  "
          f"profile={model.profile.to_dict()}  gamma={model.gamma}  "
          f"gamma_pump={model.gamma_pump}  a(T)={model.alpha_method}")
    print("couplings a_l = " + ", ".join(f"{x:.5f}" for x in model.couplings))
    if meta["solver"] == "mcsolve":
        print(f"ntraj={meta['ntraj']}  seed={meta['seed']}  elapsed={meta['elapsed_s']:.2f} s  "
              f"({meta['ntraj'] / max(meta['elapsed_s'], 1e-9):.0f} traj/s, "
              f"n_jobs={meta['n_jobs']})")
        if meta.get("stopped_by") not in (None, "ntraj"):
            line = f"stopped by {meta['stopped_by']}"
            if meta.get("target_sem") is not None:
                kind = "relative" if meta.get("relative") else "absolute"
                line += (f" (target sem {meta['target_sem']:.3g} {kind}, reached "
                         f"{meta['achieved_sem']:.3g})")
            print(line)
        if meta.get("resumed_ntraj"):
            print(f"resumed from checkpoint with {meta['resumed_ntraj']} trajectories")
        if meta.get("truncated_fraction"):
            print(f"truncated fraction (max_magnons): {meta['truncated_fraction']:.4g}")
    df = res.expect
    times = np.unique(df["t"])
    show = times if times.size <= 6 else times[np.linspace(0, times.size - 1, 6).astype(int)]
    header = f"{'t':>8} {'observable':>10} {'mean':>12} {'sem':>10}"
    if ref is not None:
        header += f" {'exact':>12} {'z':>7}"
    print(header)
    for name in ("j", "m"):
        sub = df[(df.observable == name) & (df.site == 0)]
        for t in show:
            row = sub[sub.t == t]
            if row.empty:
                continue
            mu, se = float(row["mean"].iloc[0]), float(row["sem"].iloc[0])
            line = f"{t:8.3f} {name:>10} {mu:12.6f} {se:10.2e}"
            if ref is not None:
                e = ref.expect
                ex = e[(e.observable == name) & (e.t == t)]["mean"]
                if not ex.empty:
                    exv = float(ex.iloc[0])
                    z = (mu - exv) / se if se > 0 else 0.0
                    line += f" {exv:12.6f} {z:7.2f}"
            print(line)


def _add_reproduce(sub):
    p = sub.add_parser(
        "reproduce", help="reproduce the source paper's figures (tables and PNGs)",
        description="Compute the data of the paper's Figs. 2-6 with the exact solvers (and "
                    "trajectories for Figs. 5 and 6a), write tidy tables (parquet and CSV, "
                    "with metadata) and one PNG per panel. Defaults: the paper's sizes "
                    "(N = 7), 20,000 trajectories per curve; minutes on 2 cores.")
    p.add_argument("figure", nargs="+", choices=("fig2", "fig3", "fig4", "fig5", "fig6", "all"),
                   help="figure(s) to reproduce")
    p.add_argument("--out", type=Path, default=Path("reproduced"),
                   help="output directory (default ./reproduced)")
    p.add_argument("--ntraj", type=int, help="trajectories per curve (default 20000)")
    p.add_argument("--n-jobs", dest="n_jobs", type=int, help="worker processes (-1: all)")
    p.add_argument("--seed", type=int, help="root seed (default 2021)")
    p.add_argument("--N", type=int, help="chain length of Figs. 3-6 (default 7)")
    p.add_argument("--n-times", dest="n_times", type=int, help="output times (default 201)")
    p.add_argument("--delta-T", dest="delta_T", help="comma list for Figs. 5 and 6a")
    p.add_argument("--gamma-pumps", dest="gamma_pumps", help="comma list for Fig. 6b")
    p.add_argument("--format", choices=("parquet", "csv", "both"), default="both")
    p.add_argument("--no-plots", dest="plots", action="store_false")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.set_defaults(func=_cmd_reproduce)


def _float_list(name: str, spec: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in spec.split(",") if x.strip())
    except ValueError as exc:
        raise CliError(f"--{name} must be a comma list of numbers, got {spec!r}") from exc
    if not vals:
        raise CliError(f"--{name} must list at least one number")
    return vals


def _cmd_reproduce(args) -> int:
    from .reproduce import Settings, reproduce

    kw = {k: getattr(args, k) for k in ("ntraj", "n_jobs", "seed", "N", "n_times", "progress")
          if getattr(args, k) is not None}
    if args.delta_T:
        kw["delta_T"] = _float_list("delta-T", args.delta_T)
    if args.gamma_pumps:
        kw["gamma_pumps"] = _float_list("gamma-pumps", args.gamma_pumps)
    settings = Settings(**kw)
    formats = ("parquet", "csv") if args.format == "both" else (args.format,)
    reproduce(args.figure, args.out, settings, formats=formats, plots=args.plots)
    return 0


def _add_stats(sub):
    p = sub.add_parser(
        "stats", help="statistics of a recorded jump table",
        description="Analyse a jump table written by 'thermospin-mc run --record-jumps' "
                    "(jumps.parquet or jumps.csv): exit side of the first loss, waiting times "
                    "per channel, counting statistics in a time window and the jump rates "
                    "after burn-in (with the exact steady-state rates when the model allows).")
    p.add_argument("jumps", type=Path, help="jump table (.parquet or .csv)")
    p.add_argument("--ntraj", type=int, help="number of trajectories (default: table metadata)")
    p.add_argument("--window", type=float, nargs=2, metavar=("A", "B"),
                   help="counting window A <= t < B (default: burn-in to the run's last time)")
    p.add_argument("--burn", type=float, default=0.0,
                   help="burn-in time: waiting times and the default window start here "
                        "(default 0)")
    p.add_argument("--hot", choices=("right", "left"), default="right",
                   help="hot edge for the net transfer (default right)")
    p.set_defaults(func=_cmd_stats)


def _stats_t_end(path: Path, meta: dict) -> float | None:
    """Last output time of the run that wrote a jump table, if it can be known."""
    from .io import read_table

    for key in ("t_end", "t_max"):
        if isinstance(meta.get(key), (int, float)):
            return float(meta[key])
    if meta.get("times"):
        return float(np.max(meta["times"]))
    # the expect table written next to the jump table by the same run
    if "jumps" not in path.name:
        return None
    head, _, tail = path.name.rpartition("jumps")
    for suffix in (path.suffix, ".parquet", ".csv"):
        cand = path.with_name(head + "expect" + tail).with_suffix(suffix)
        if not cand.exists():
            continue
        try:
            df, m2 = read_table(cand)
        except (ValueError, OSError):
            continue
        same = all(m2.get(k) == meta.get(k) for k in ("seed", "ntraj", "model"))
        if same and "t" in df and len(df):
            return float(df["t"].max())
    return None


def _stats_model(meta: dict):
    """The run's ChainModel rebuilt from table metadata (None if impossible)."""
    import thermospin_mc as tsm

    d = meta.get("model")
    if not isinstance(d, dict):
        return None
    try:
        ini = d.get("initial", {})
        if ini.get("kind") == "state_vector":
            initial = tsm.StateVector(ini["m"], tuple(np.asarray(ini["re"]) + 1j *
                                                      np.asarray(ini["im"])))
        else:
            initial = tsm.Magnons(tuple(ini.get("sites", ())))
        model = tsm.ChainModel(N=d["N"], profile=tsm.BondCouplings(tuple(d["couplings"])),
                               gamma=d["gamma"], gamma_pump=d["gamma_pump"],
                               pump_site=d.get("pump_site"), initial=initial,
                               anisotropy=d.get("anisotropy", 1.0))
    except (KeyError, TypeError, ValueError):
        return None
    return model if model.gamma_pump > 0 and _small_enough(model) else None


def _cmd_stats(args) -> int:
    import pandas as pd

    from . import _validate as v
    from . import analysis
    from .io import read_table

    jumps, meta = read_table(args.jumps)
    ntraj = args.ntraj if args.ntraj is not None else meta.get("ntraj")
    if ntraj is None:
        raise CliError(f"--ntraj is needed: {str(args.jumps)!r} has no ntraj metadata")
    ntraj = v.integer("--ntraj", ntraj, lo=1)
    burn = v.real("--burn", args.burn, lo=0.0)
    t_end = _stats_t_end(args.jumps, meta)
    if args.window is not None:
        window = tuple(args.window)
        if t_end is not None and window[1] > t_end * (1 + 1e-12):
            raise CliError(f"--window end must be <= the run's last output time {t_end}, "
                           f"got {window[1]}")
    elif t_end is not None and t_end > burn:
        window = (burn, t_end)
    else:
        window = None
    exits = analysis.exit_sides(jumps, ntraj)  # validates the table and ntraj first
    waits = analysis.waiting_times(jumps, t0=burn)
    counts = analysis.counting_statistics(jumps, ntraj, window, hot=args.hot) \
        if window is not None else None

    print(f"thermospin-mc stats  {args.jumps}  ntraj={ntraj}  jumps={len(jumps)}"
          + (f"  last output time={t_end:g}" if t_end is not None else ""))
    if meta.get("truncated_fraction"):
        print(f"warning: {meta['truncated_fraction']:.4g} of the trajectories were stopped by "
              "max_magnons; counts are biased low")
    fmt = {"float_format": lambda x: f"{x:.6g}"}
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("\nexit sides (first loss of each trajectory; Wilson 95% interval)")
        print(exits.to_string(**fmt))
        print(f"\nwaiting times between jumps of each channel (t0 = {burn:g})")
        print(waits.summary.to_string(index=False, **fmt))
        if counts is None:
            print("\ncounting statistics: pass --window A B (the run's last output time is "
                  "neither in the metadata nor in a matching expect table)")
            return 0
        print(f"\ncounting statistics in [{window[0]:g}, {window[1]:g}), hot = {args.hot} "
              "(errors of var and fano: bootstrap over trajectories)")
        print(counts.drop(columns=["ntraj", "t_a", "t_b"]).to_string(**fmt))
        known = _stats_model(meta)
        if known is not None:
            net = {f"loss_{args.hot}": 1, f"loss_{'left' if args.hot == 'right' else 'right'}": -1}
            cmp = analysis.compare_counting_statistics(jumps, ntraj, known, net, window)
            print(f"\nnet spin to the hot side in [{window[0]:g}, {window[1]:g}): trajectories vs "
                  "exact cumulants of the count (from the exact state at the window start)")
            print(cmp.cumulants.to_string(**fmt))
            print(f"waiting time between losses vs exact: chi2 = {cmp.chi2:.4g} over "
                  f"{cmp.dof} bins (thermospin-mc fcs --jumps shows the bins)")
        # the exact steady state is a fair reference only after a burn-in
        model = _stats_model(meta) if window[0] > 0 else None
        rates = analysis.steady_state_from_jumps(jumps, ntraj, *window, model=model)
        print(f"\nrates per unit time in [{window[0]:g}, {window[1]:g})"
              + ("; exact: steady state of the run's model" if "exact" in rates else ""))
        print(rates.drop(columns=["ntraj"]).to_string(**fmt))
        if model is None and window[0] == 0 and _stats_model(meta) is not None:
            print("(pass --burn T, a time after which the run has relaxed, to compare the "
                  "rates with the exact steady state)")
    return 0


def _add_fcs(sub):
    p = sub.add_parser(
        "fcs", help="exact counting statistics of jumps (cumulants, waiting times)",
        description="Exact cumulants of a weighted jump count of a paper model, in the "
                    "magnon-block form: long-time cumulant rates (default) or the cumulants "
                    "of the count in [t0, t0 + t). With --jumps, a recorded jump table of the "
                    "same model is compared with them (z-scores) in --window.")
    p.add_argument("--scenario", choices=("pump", "loss"), default="pump",
                   help="paper scenario (default pump)")
    p.add_argument("--N", type=int, default=7, help="chain length (default 7)")
    p.add_argument("--delta-T", dest="delta_T", type=float, default=2.0,
                   help="temperature difference in eps0 (default 2)")
    p.add_argument("--gamma", type=float, default=3.102, help="edge-loss rate (default 3.102)")
    p.add_argument("--gamma-pump", dest="gamma_pump", type=float, default=0.62,
                   help="pump rate (default 0.62)")
    p.add_argument("--counts", default="loss_right=1,loss_left=-1",
                   help="channel=weight list (default: net spin to the right)")
    p.add_argument("--order", type=int, default=4, help="highest cumulant (default 4)")
    p.add_argument("--t", type=float, help="finite counting time (default: long-time rates)")
    p.add_argument("--t0", type=float, default=0.0, help="start of the counting window")
    p.add_argument("--jumps", type=Path, help="jump table to compare (needs --window)")
    p.add_argument("--ntraj", type=int, help="trajectories of the jump table")
    p.add_argument("--window", type=float, nargs=2, metavar=("A", "B"),
                   help="counting window of the comparison")
    p.add_argument("--out", type=Path, help="write the table (.csv or .parquet)")
    p.set_defaults(func=_cmd_fcs)


def _parse_counts(spec: str) -> dict:
    out = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        name, sep, w = item.partition("=")
        try:
            weight = int(w)
        except ValueError:
            weight = None
        if not sep or weight is None:
            raise CliError(f"--counts must be a list channel=integer, got {item.strip()!r}")
        out[name.strip()] = weight
    if not out:
        raise CliError("--counts must name at least one channel")
    return out


def _cmd_fcs(args) -> int:
    import pandas as pd

    from . import analysis
    from .fcs import exact_counting_statistics
    from .io import read_table, write_table
    from .model import paper_model

    model = paper_model(args.scenario, N=args.N, delta_T=args.delta_T, gamma=args.gamma,
                        gamma_pump=args.gamma_pump)
    counts = _parse_counts(args.counts)
    fmt = {"float_format": lambda x: f"{x:.10g}"}
    if args.jumps is not None:
        if args.window is None:
            raise CliError("--window A B is needed with --jumps")
        jumps, meta = read_table(args.jumps)
        ntraj = args.ntraj if args.ntraj is not None else meta.get("ntraj")
        if ntraj is None:
            raise CliError(f"--ntraj is needed: {str(args.jumps)!r} has no ntraj metadata")
        recorded = _stats_model(meta)
        if recorded is not None and recorded != model:
            print("(using the model recorded in the jump table's metadata)")
            model = recorded
        cmp = analysis.compare_counting_statistics(jumps, ntraj, model, counts,
                                                   tuple(args.window),
                                                   order=min(3, max(2, args.order)))
        print(f"thermospin-mc fcs  {args.jumps}  counts={cmp.counts}  window="
              f"[{cmp.window[0]:g}, {cmp.window[1]:g})  ntraj={ntraj}")
        print("\ncumulants of the count in the window: trajectories vs exact")
        print(cmp.cumulants.to_string(**fmt))
        print(f"\nwaiting time to the next counted jump (chi2 = {cmp.chi2:.4g}, "
              f"{cmp.dof} bins)")
        print(cmp.waiting.to_string(index=False, **fmt))
        table = cmp.cumulants.reset_index()
    else:
        df = exact_counting_statistics(model, counts, order=args.order, t=args.t, t0=args.t0)
        what = ("long-time cumulant rates" if args.t is None else
                f"cumulants of the count in [{args.t0:g}, {args.t0 + args.t:g})")
        print(f"thermospin-mc fcs  {args.scenario} N={model.N} delta_T={args.delta_T:g} "
              f"counts={df.attrs['counts']}: {what}")
        with pd.option_context("display.width", 200):
            print(df.to_string(index=False, **fmt))
        if len(df) >= 2 and df["cumulant"].iloc[0] != 0:
            print(f"Fano factor c2/c1 = {df['cumulant'].iloc[1] / df['cumulant'].iloc[0]:.10g}")
        table = df
    if args.out is not None:
        write_table(table, args.out, {"command": "fcs", "model": model.to_dict(),
                                      "counts": counts, "t": args.t, "t0": args.t0})
        print(f"wrote {args.out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="thermospin-mc",
        description="Quantum-jump trajectories and exact solvers for open Heisenberg chains "
                    "with temperature-set couplings.")
    sub = parser.add_subparsers(dest="command")
    _add_run(sub)
    _add_reproduce(sub)
    _add_stats(sub)
    _add_fcs(sub)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args) if hasattr(args, "func") else _cmd_run(args)
    except KeyboardInterrupt:
        print("thermospin-mc: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"thermospin-mc: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
