"""Command line: ``thermospin-mc run | reproduce | stats``.

Bad input never shows a traceback: it prints one line ``thermospin-mc: error: ...``
and exits with status 2. Flags and TOML keys follow one rule (``config``): each
changes the run or is refused. The output location is checked before any
computation; a write that fails anyway rescues the tables to a fallback
directory (exit status 1, the message says where).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from . import config as _config
from .config import ConfigError, parse_times
from .io import OutputError, check_output_dir, check_output_file, describe_os_error
from .observables import resolve as resolve_observables

__all__ = ["main", "build_model", "parse_times"]

CliError = ConfigError


def build_model(cfg: dict):
    """A ChainModel from a flat config dict (CLI flags or a TOML ``[model]`` table).

    See :func:`thermospin_mc.config.resolve_model` for the rules.
    """
    return _config.resolve_model(cfg)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``thermospin-mc: error: ...; see --help``)."""

    def error(self, message):
        self.exit(2, f"thermospin-mc: error: {message.splitlines()[0]}; see "
                     f"'{self.prog} --help'\n")


def _d(text: str, default) -> str:
    return f"{text} (default: {default})"


def _add_model_args(p) -> None:
    """--config and the model flags (shared by ``run`` and ``fcs``)."""
    p.add_argument("--config", type=Path, help="TOML file with [model] and [run] tables")
    m = p.add_argument_group("model (temperatures in eps0, rates in J0)")
    m.add_argument("--scenario", choices=_config.SCENARIOS,
                   help=_d("preset: pump (all up, edge loss + central pump), loss "
                           "(centre magnon, edge loss), closed (centre magnon, step profile), "
                           "boundary (all up, pump at site 1, loss at site N, uniform T = 0)",
                           "pump"))
    m.add_argument("--N", type=int, help=_d("number of sites", 7))
    m.add_argument("--profile", choices=_config.PROFILES,
                   help=_d("temperature profile", "step for closed, linear otherwise; "
                           "--T implies uniform"))
    m.add_argument("--T1", type=float, help=_d("cold-end temperature", 0))
    m.add_argument("--T2", type=float, help=_d("hot-end temperature", "T1 + delta-T"))
    m.add_argument("--delta-T", dest="delta_T", type=float,
                   help=_d("T2 - T1 (give at most two of --T1, --T2, --delta-T)", 2))
    m.add_argument("--T", type=float, help="uniform temperature of every bond (implies "
                   "--profile uniform)")
    m.add_argument("--couplings", help="comma list of the N-1 bond couplings a_l (J0); "
                   "replaces the temperature profile")
    m.add_argument("--bond-temperatures", dest="bond_temperatures",
                   help="comma list of the N-1 bond temperatures (eps0)")
    m.add_argument("--gamma", type=float, help=_d("edge-loss rate", "3.102; 0 for closed"))
    m.add_argument("--gamma-pump", dest="gamma_pump", type=float,
                   help=_d("pump rate", "0.62 for pump, else 0"))
    m.add_argument("--pump-site", dest="pump_site", type=int,
                   help=_d("1-based pump site (required for even N)", "(N+1)/2 for odd N"))
    m.add_argument("--initial", help=_d("'all_up' or comma-separated magnon sites (1-based)",
                                        "all_up for pump, the site (N+1)//2 otherwise"))
    m.add_argument("--alpha-method", dest="alpha_method",
                   choices=("canonical", "thermodynamic", "sommerfeld"),
                   help=_d("a(T) curve", "canonical"))
    m.add_argument("--anisotropy",
                   help=_d("XXZ anisotropy Delta: one number or N-1 comma-separated values",
                           1))
    m.add_argument("--fields", help=_d("comma list of the N site fields h_i "
                                       "(H += sum_i (h_i/2) sigma^z_i)", "0"))
    m.add_argument("--channel", action="append",
                   help="KIND:SITE:RATE[:NAME] with KIND loss, pump or dephasing (1-based "
                        "site); repeat for several; replaces the scenario's channels "
                        "(TOML: [[channel]] tables)")
    m.add_argument("--rate-in", dest="rate_in", type=float,
                   help=_d("pump rate at site 1 of --scenario boundary", 1))
    m.add_argument("--rate-out", dest="rate_out", type=float,
                   help=_d("loss rate at site N of --scenario boundary", 1))
    m.add_argument("--dephasing", type=float,
                   help="add dephasing sqrt(rate) sigma^z at --dephasing-sites (default "
                        "every site) to the model")
    m.add_argument("--dephasing-sites", dest="dephasing_sites",
                   help=_d("comma list of 1-based sites for --dephasing", "every site"))
    m.add_argument("--initial-p", dest="initial_p",
                   help="product mixture: comma list of the N probabilities that site i "
                        "is down (instead of --initial)")
    m.add_argument("--initial-mixture", dest="initial_mixture",
                   help="site-diagonal mixture 'SITES:WEIGHT; ...', e.g. '3:0.5; 2,4:0.5' "
                        "(empty SITES = all up; TOML: [{sites = [3], weight = 0.5}, ...])")


def _add_run(sub):
    p = sub.add_parser("run", help="run trajectories (or an exact solver) of one model",
                       description="Run a quantum-jump ensemble (default) or an exact solver "
                       "and write tidy tables. Defaults: the paper's pump + loss scenario "
                       "(N = 7, linear profile T1 = 0, T2 = 2 eps0, gamma = 3.102, "
                       "gamma_I = 0.620), 20,000 trajectories, 81 times on [0, 20]. Every "
                       "flag --some-key is also the TOML key some_key ([model] or [run] "
                       "table of --config); flags override the file. A flag that would "
                       "not change the run is refused.")
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="validate everything, print the resolved model and run as JSON, "
                        "compute nothing")
    _add_model_args(p)
    r = p.add_argument_group("run")
    r.add_argument("--times", help=_d("output times: 'start:stop:num' or a comma list",
                                      "0:20:81"))
    r.add_argument("--solver", choices=_config.SOLVERS,
                   help=_d("mc (trajectories), exact (block mesolve), steady (steady state)",
                           "mc"))
    r.add_argument("--observables",
                   help=_d("comma list of j,j_bond,flow,m,n,nn,pm,pm_re,pm_im,count (exact "
                           "solvers also norm; nn and pm need --pairs)",
                           "j,j_bond,flow,m,n, plus nn,pm with --pairs"))
    r.add_argument("--pairs", help="site pairs of the two-point observables nn and pm, "
                   "e.g. 1-3,2-5")
    r.add_argument("--n-jobs", dest="n_jobs", type=int,
                   help=_d("cores: trajectory workers, or BLAS threads of the exact "
                           "solvers; -1 = all", -1))
    r.add_argument("--out", type=Path, help=_d("output directory", "./out"))
    r.add_argument("--format", choices=_config.FORMATS, help=_d("table format", "both"))
    t = p.add_argument_group("trajectories (--solver mc only)")
    t.add_argument("--ntraj", type=int, help=_d("number of trajectories", 20000))
    t.add_argument("--seed", type=int, help=_d("root seed", 1))
    t.add_argument("--batch-size", dest="batch_size", type=int,
                   help=_d("trajectories per task (never changes the result)", "automatic"))
    t.add_argument("--record-jumps", dest="record_jumps", action="store_true", default=None,
                   help="write the jump table (jumps.parquet/.csv)")
    t.add_argument("--max-magnons", dest="max_magnons", type=int,
                   help=_d("stop trajectories that would exceed this magnon number", "N"))
    t.add_argument("--no-compare", dest="compare", action="store_false", default=None,
                   help="skip the exact reference printed next to the trajectory results")
    t.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar or progress records")
    g = p.add_argument_group("long runs (--solver mc only: checkpoints, accuracy targets, "
                             "clusters)")
    g.add_argument("--checkpoint", type=Path,
                   help="checkpoint file (.npz): written atomically every --checkpoint-every "
                        "seconds and on Ctrl-C; re-running the same command resumes from it")
    g.add_argument("--resume", action="store_true", default=None,
                   help="require an existing --checkpoint to resume (error if missing)")
    g.add_argument("--checkpoint-every", dest="checkpoint_every", type=float,
                   help=_d("seconds between checkpoint writes (0 = every batch)", 60))
    g.add_argument("--target-sem", dest="target_sem",
                   help="stop once the largest standard error (t > 0) is below this value; "
                        "a trailing %% makes it relative to |mean| (e.g. 1%%); --ntraj is then "
                        "the minimum number of trajectories")
    g.add_argument("--target-observables", dest="target_observables",
                   help=_d("comma list of observables the target applies to", "all but flow"))
    g.add_argument("--rel-floor", dest="rel_floor", type=float,
                   help=_d("a relative target ignores rows whose |mean| is below this "
                           "fraction of the observable's largest |mean|", 0.25))
    g.add_argument("--max-ntraj", dest="max_ntraj", type=int,
                   help=_d("cap on trajectories of a --target-sem run", "10^8"))
    g.add_argument("--time-limit", dest="time_limit", type=float,
                   help=_d("stop after this many seconds at the last finished block", "none"))
    g.add_argument("--backend", choices=("serial", "threads", "loky", "dask"),
                   help=_d("where batches run", "threads, or dask with --scheduler"))
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on an existing Dask scheduler, e.g. tcp://10.0.0.1:8786")


def _check_observables(spec, N: int) -> None:
    """Observable names and pairs as the chosen solver will check them (also in dry runs)."""
    from . import observables as obs

    allowed = {"mc": obs.TRAJECTORY, "exact": obs.OBSERVABLES,
               "steady": tuple(o for o in obs.OBSERVABLES if o != "count")}[spec.solver]
    try:
        resolve_observables(spec.observables, spec.pairs, N, allowed=allowed)
    except ValueError as exc:
        raise CliError(f"{exc} (with --solver {spec.solver})") from exc


def _gather(args, run_keys: bool = True) -> tuple[dict, dict]:
    """Merge the TOML tables and the flags given on the command line (flags win)."""
    mcfg, rcfg = _config.load_toml(args.config) if args.config is not None else ({}, {})
    tables = [(_config.MODEL_KEYS, mcfg)] + ([(_config.RUN_KEYS, rcfg)] if run_keys else [])
    for keys, cfg in tables:
        for k in keys:
            val = getattr(args, k, None)
            if val is not None:
                cfg[k] = val
    return mcfg, rcfg


def _cmd_run(args) -> int:
    import thermospin_mc as tsm

    from . import io as _io

    mcfg, rcfg = _gather(args)
    model = _config.resolve_model(mcfg)
    spec = _config.resolve_run(rcfg)
    _check_observables(spec, model.N)
    if "checkpoint" in spec.mc:
        _io.check_output_file(spec.mc["checkpoint"], create=not args.dry_run)
    _io.check_output_dir(spec.out, create=not args.dry_run)
    if args.dry_run:
        print(json.dumps({"model": model.to_dict(), "run": spec.to_dict()}, sort_keys=True,
                         default=_io.jsonable))
        return 0
    ref = None
    if spec.solver == "mc":
        kw = dict(spec.mc)
        try:
            res = tsm.mcsolve(model, spec.times, observables=spec.observables,
                              pairs=spec.pairs, **kw)
        except KeyboardInterrupt:
            ck = kw.get("checkpoint")
            tail = (f"; checkpoint written to {str(ck)!r}, run the same command to resume"
                    if ck is not None else "")
            print(f"thermospin-mc: interrupted{tail}", file=sys.stderr)
            return 130
        if spec.compare and _small_enough(model):
            ref = tsm.mesolve(model, spec.times, observables=("j", "m"), n_jobs=spec.n_jobs)
    elif spec.solver == "exact":
        res = tsm.mesolve(model, spec.times, observables=spec.observables, pairs=spec.pairs,
                          n_jobs=spec.n_jobs)
    else:
        res = tsm.steadystate(model, observables=spec.observables, pairs=spec.pairs,
                              n_jobs=spec.n_jobs)
    try:
        written = res.save(spec.out, spec.formats)
    except _io.OutputError as exc:
        print(f"thermospin-mc: error: {exc}", file=sys.stderr)
        return 1
    _print_summary(model, res, ref)
    for p in written:
        print(f"wrote {p}")
    return 0


def _small_enough(model) -> bool:
    from math import comb

    secs = model.reachable_sectors()
    return sum(comb(model.N, m) ** 2 for m in secs) <= 100_000


def _print_summary(model, res, ref) -> None:
    meta = res.metadata
    chans = ", ".join(f"{c.name} ({c.kind} at {c.site + 1}, rate {c.rate:g})"
                      for c in model.channels) or "none (closed chain)"
    print(f"thermospin-mc {meta.get('version')}  solver={meta['solver']}  N={model.N}  "
          f"profile={model.profile.to_dict()}  a(T)={model.alpha_method}")
    print(f"channels: {chans}")
    print("couplings a_l = " + ", ".join(f"{x:.5f}" for x in model.couplings))
    if meta["solver"] == "mcsolve":
        run_s = meta.get("run_s", meta["elapsed_s"])
        done = meta["ntraj"] - (meta.get("resumed_ntraj") or 0)
        rate = meta.get("traj_per_s", done / max(run_s, 1e-9))
        print(f"ntraj={meta['ntraj']}  seed={meta['seed']}  run time={run_s:.2f} s  "
              f"({rate:.0f} traj/s, n_jobs={meta['n_jobs']})  "
              f"kernel compile/load={meta.get('compile_s', 0.0):.2f} s")
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
    zs = None
    if ref is not None:
        header += f" {'exact':>12} {'z':>7}"
        # z with the effective sem of results.effective_sem (sem = 0 rows included)
        zs = res.compare(ref)
    print(header)
    for name in ("j", "m"):
        sub = df[(df.observable == name) & (df.site == 0)]
        for t in show:
            row = sub[sub.t == t]
            if row.empty:
                continue
            mu, se = float(row["mean"].iloc[0]), float(row["sem"].iloc[0])
            line = f"{t:8.3f} {name:>10} {mu:12.6f} {se:10.2e}"
            if zs is not None:
                zr = zs[(zs.observable == name) & (zs.site == 0) & (zs.t == t)]
                if not zr.empty:
                    line += f" {float(zr['mean_other'].iloc[0]):12.6f} " \
                            f"{float(zr['z'].iloc[0]):7.2f}"
            print(line)


def _add_reproduce(sub):
    p = sub.add_parser(
        "reproduce", help="reproduce the source paper's figures (tables and PNGs)",
        description="Compute the data of the paper's Figs. 2-6 with the exact solvers (and "
                    "trajectories for Figs. 5 and 6a), write tidy tables (parquet and CSV, "
                    "with metadata) and one PNG per panel. Defaults: the paper's sizes "
                    "(N = 7), 20,000 trajectories per curve; minutes on 2 cores.")
    p.add_argument("figure", nargs="+",
                   choices=("fig2", "fig3", "fig4", "fig5", "fig6", "fcs", "all"),
                   help="figure(s) to reproduce; all = fig2-fig6; fcs (exact counting "
                        "statistics) is extra")
    p.add_argument("--out", type=Path, default=Path("reproduced"),
                   help="output directory (default ./reproduced)")
    p.add_argument("--ntraj", type=int, help="trajectories per curve (default 20000)")
    p.add_argument("--n-jobs", dest="n_jobs", type=int,
                   help="trajectory workers (-1: all; default -1)")
    p.add_argument("--seed", type=int, help="root seed (default 2021)")
    p.add_argument("--N", type=int, help="chain length of Figs. 3-6 (default 7)")
    p.add_argument("--n-times", dest="n_times", type=int, help="output times (default 201)")
    p.add_argument("--delta-T", dest="delta_T",
                   help="comma list for Figs. 5 and 6a (default 0,1,2,3)")
    p.add_argument("--gamma-pumps", dest="gamma_pumps",
                   help="comma list for Fig. 6b (default 0.155,0.62,1.551)")
    p.add_argument("--format", choices=("parquet", "csv", "both"), default="both",
                   help="table format (default both)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="tables only")
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
    from .config import flag
    from .reproduce import FIGURES, USES, Settings, reproduce

    kw = {k: getattr(args, k) for k in ("ntraj", "n_jobs", "seed", "N", "n_times", "progress")
          if getattr(args, k) is not None}
    if args.delta_T:
        kw["delta_T"] = _float_list("delta-T", args.delta_T)
    if args.gamma_pumps:
        kw["gamma_pumps"] = _float_list("gamma-pumps", args.gamma_pumps)
    figures = tuple(dict.fromkeys(
        f for name in args.figure for f in (FIGURES if name == "all" else (name,))))
    used = {k for f in figures for k in USES[f]}
    for k in kw:
        if k not in used:
            raise CliError(f"{flag(k)} does nothing for {', '.join(figures)} (used by "
                           + (", ".join(f for f in FIGURES if k in USES[f]) or "none")
                           + ")")
    settings = Settings(**kw)
    formats = ("parquet", "csv") if args.format == "both" else (args.format,)
    check_output_dir(args.out)
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


def _recorded_model(meta: dict):
    """The run's ChainModel rebuilt from table metadata (None if impossible)."""
    from .model import ChainModel

    d = meta.get("model")
    if not isinstance(d, dict):
        return None
    try:
        return ChainModel.from_dict(d)
    except (KeyError, TypeError, ValueError):
        return None


def _stats_model(meta: dict):
    """The recorded model when the exact steady-state rates apply (paper pump model)."""
    model = _recorded_model(meta)
    return model if model is not None and model.gamma_pump > 0 and _small_enough(model) \
        else None


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
    general = bool(set(jumps["channel"].astype(str)) - set(analysis.CHANNELS))
    if general:
        return _stats_general(args, jumps, ntraj, window, waits, burn)
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


def _stats_general(args, jumps, ntraj, window, waits, burn) -> int:
    """``stats`` for a general chain's jump table (channels other than the paper's)."""
    import pandas as pd

    from . import analysis

    fmt = {"float_format": lambda x: f"{x:.6g}"}
    print(f"thermospin-mc stats  {args.jumps}  ntraj={ntraj}  jumps={len(jumps)}")
    print("(channels other than the paper's: exit sides and the net spin to the hot side are "
          "defined for loss_left/loss_right only; per-channel statistics below, exact "
          "cumulants with 'thermospin-mc fcs --jumps')")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"\nwaiting times between jumps of each channel (t0 = {burn:g})")
        print(waits.summary.to_string(index=False, **fmt))
        if window is None:
            print("\ncounts per channel: pass --window A B")
            return 0
        counts = analysis.jump_counts(jumps, ntraj, window)
        n = counts.to_numpy(dtype=float)
        table = pd.DataFrame({"mean": n.mean(axis=0),
                              "sem": n.std(axis=0, ddof=1) / np.sqrt(ntraj) if ntraj > 1
                              else np.nan,
                              "var": n.var(axis=0, ddof=1) if ntraj > 1 else np.nan},
                             index=pd.Index(counts.columns, name="channel"))
        print(f"\njumps per trajectory in [{window[0]:g}, {window[1]:g})")
        print(table.to_string(**fmt))
    return 0


def _add_fcs(sub):
    p = sub.add_parser(
        "fcs", help="exact counting statistics of jumps (cumulants, waiting times)",
        description="Exact cumulants of a weighted jump count, in the magnon-block form: "
                    "long-time cumulant rates (default) or the cumulants of the count in "
                    "[t0, t0 + t). The model is given as for 'run' (the same flags and "
                    "[model] keys; default the paper's pump + loss chain). With --jumps, a "
                    "recorded jump table is compared with the exact values (z-scores) in "
                    "--window, for the model recorded in the table.")
    _add_model_args(p)
    f = p.add_argument_group("counting")
    f.add_argument("--counts", help=_d("channel=weight list", "loss_right=1,loss_left=-1, "
                                       "the net spin to the right"))
    f.add_argument("--order", type=int, help=_d("highest cumulant", 4))
    f.add_argument("--t", type=float, help=_d("finite counting time", "long-time rates"))
    f.add_argument("--t0", type=float, help=_d("start of the finite counting window", 0))
    f.add_argument("--jumps", type=Path, help="jump table to compare (needs --window)")
    f.add_argument("--ntraj", type=int, help=_d("trajectories of the jump table",
                                                "its metadata"))
    f.add_argument("--window", type=float, nargs=2, metavar=("A", "B"),
                   help="counting window A <= t < B of the comparison (with --jumps)")
    f.add_argument("--out", type=Path, help="write the table (.csv or .parquet)")
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

    mcfg, rcfg = _gather(args, run_keys=False)
    if rcfg:
        raise CliError("fcs reads only the [model] table of --config; found [run] keys "
                       + ", ".join(sorted(rcfg)))
    model = _config.resolve_model(mcfg)
    counts = _parse_counts(args.counts or "loss_right=1,loss_left=-1")
    order = 4 if args.order is None else args.order
    t0 = 0.0 if args.t0 is None else args.t0
    if args.jumps is None:
        for flag_, val in (("--window", args.window), ("--ntraj", args.ntraj)):
            if val is not None:
                raise CliError(f"{flag_} only acts with --jumps (a recorded jump table)")
        if args.t0 is not None and args.t is None:
            raise CliError("--t0 only acts with --t (a finite counting window)")
    if args.out is not None:
        check_output_file(args.out)
    fmt = {"float_format": lambda x: f"{x:.10g}"}
    if args.jumps is not None:
        if args.window is None:
            raise CliError("--window A B is needed with --jumps")
        for flag_, val in (("--t", args.t), ("--t0", args.t0)):
            if val is not None:
                raise CliError(f"{flag_} does nothing with --jumps (the comparison uses "
                               "--window)")
        jumps, meta = read_table(args.jumps)
        ntraj = args.ntraj if args.ntraj is not None else meta.get("ntraj")
        if ntraj is None:
            raise CliError(f"--ntraj is needed: {str(args.jumps)!r} has no ntraj metadata")
        recorded = _recorded_model(meta)
        if recorded is not None and recorded != model:
            if mcfg:
                raise CliError(f"the jump table {str(args.jumps)!r} was recorded with another "
                               "model than the model flags give; drop the model flags to use "
                               "the recorded one")
            model = recorded
        cmp = analysis.compare_counting_statistics(jumps, ntraj, model, counts,
                                                   tuple(args.window),
                                                   order=min(3, max(2, order)))
        print(f"thermospin-mc fcs  {args.jumps}  counts={cmp.counts}  window="
              f"[{cmp.window[0]:g}, {cmp.window[1]:g})  ntraj={ntraj}")
        print("\ncumulants of the count in the window: trajectories vs exact")
        print(cmp.cumulants.to_string(**fmt))
        print(f"\nwaiting time to the next counted jump (chi2 = {cmp.chi2:.4g}, "
              f"{cmp.dof} bins)")
        print(cmp.waiting.to_string(index=False, **fmt))
        table = cmp.cumulants.reset_index()
    else:
        df = exact_counting_statistics(model, counts, order=order, t=args.t, t0=t0)
        what = ("long-time cumulant rates" if args.t is None else
                f"cumulants of the count in [{t0:g}, {t0 + args.t:g})")
        print(f"thermospin-mc fcs  N={model.N}  profile={model.profile.to_dict()}  "
              f"counts={df.attrs['counts']}: {what}")
        with pd.option_context("display.width", 200):
            print(df.to_string(index=False, **fmt))
        if len(df) >= 2:
            c1, c2 = float(df["cumulant"].iloc[0]), float(df["cumulant"].iloc[1])
            # c1 at the round-off level (e.g. the net spin at Delta T = 0): no Fano factor
            if abs(c1) > 1e-10 * max(abs(c2), 1e-300):
                print(f"Fano factor c2/c1 = {c2 / c1:.10g}")
            else:
                print("Fano factor c2/c1: undefined (c1 vanishes to round-off)")
        table = df
    if args.out is not None:
        write_table(table, args.out, {"command": "fcs", "model": model.to_dict(),
                                      "counts": counts, "t": args.t, "t0": t0})
        print(f"wrote {args.out}")
    return 0


def main(argv=None) -> int:
    from ._version import __version__

    parser = _Parser(
        prog="thermospin-mc",
        description="Quantum-jump trajectories and exact solvers for open Heisenberg chains "
                    "with temperature-set couplings.")
    parser.add_argument("--version", action="version", version=f"thermospin-mc {__version__}")
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
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): end quietly; files are already written
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except (ValueError, OSError) as exc:
        print(f"thermospin-mc: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    """An exception as one line; OS errors as 'path: reason in words'."""
    if isinstance(exc, OSError) and not isinstance(exc, OutputError) and exc.errno:
        where = exc.filename if exc.filename is not None else ""
        text = f"{str(where)!r}: {describe_os_error(exc)}" if where else describe_os_error(exc)
    else:
        text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
