"""Command line: ``thermospin-mc run | reproduce | stats | fcs | rare | spectrum``.

Bad input never shows a traceback: it prints one line ``thermospin-mc: error: ...``
and exits with status 2. Flags and TOML keys follow one rule (``config``): each
changes the run or is refused. The output location is checked before any
computation; a write that fails anyway rescues the tables to a fallback
directory (exit status 1, the message says where). Next to trajectories, every
observable is compared row by row with the exact solution (when affordable):
a short summary per observable is printed, the whole table written as
``compare.parquet`` / ``compare.csv``.

The ``stats``, ``fcs`` and ``rare`` subcommands are in :mod:`thermospin_mc.app.cli_jumps`,
the model flags shared by ``run``, ``fcs``, ``rare`` and ``spectrum`` (and ``spectrum``
itself) in :mod:`thermospin_mc.app.cli_args`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from .. import io as _io
from .._version import __version__
from ..core.observables import DEFAULT, OBSERVABLES, PAIR_NAMES, TRAJECTORY, split_operators
from ..core.observables import resolve as resolve_observables
from ..exact.solvers import mesolve
from ..exact.steady import steadystate
from ..io import OutputError, check_output_dir, describe_os_error
from ..signals import RunTerminated, deferred_signals, exit_now, exit_on_signals, report_stop
from ..trajectories.driver import execute
from ..trajectories.runrecord import RunRecord, plan_run
from . import config as _config
from .cli_args import (
    CliError,
    add_model_args,
    add_spectrum,
    describe_model,
    exact_affordable,
    gather_stages,
)
from .cli_args import help_default as _d
from .cli_jumps import add_fcs, add_rare, add_stats
from .config import build_operators, flag, parse_times
from .reproduce import FIGURES, USES, Settings, reproduce

__all__ = ["main", "build_model", "parse_times"]


def build_model(cfg: dict):
    """A ChainModel from a flat config dict (CLI flags or a TOML ``[model]`` table).

    See :func:`thermospin_mc.app.config.resolve_model` for the rules.
    """
    return _config.resolve_model(cfg)


#: A token that starts with ``-`` and a digit (``-1``, ``-1e-3``, ``-1:2:3``, ``-0.5,1``)
#: is a value, never an option: no option of the command line starts like that.
#: (Matches the whole token, so it works whether argparse calls match or fullmatch.)
_NEGATIVE_VALUE = re.compile(r"-\.?\d.*", re.S)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``thermospin-mc: error: ...; see --help``).

    Negative-looking values are values: ``--times -1:2:3`` and ``--T1 -1e-3``
    reach the flag's own check (which names the flag), instead of argparse
    taking them for unknown options (plain argparse only accepts ``-1`` and
    ``-0.5``). ``--times=-1:2:3`` works as well.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # argparse's own rule for "looks like a negative number" (used only while no
        # option looks like one, which holds for every parser here)
        self._negative_number_matcher = _NEGATIVE_VALUE

    def error(self, message):
        self.exit(2, f"thermospin-mc: error: {message.splitlines()[0]}; see "
                     f"'{self.prog} --help'\n")


def _add_run(sub):
    p = sub.add_parser("run", help="run trajectories (or an exact solver) of one model",
                       description="Run a quantum-jump ensemble (default) or an exact solver "
                       "and write tidy tables. Defaults: the paper's pump + loss scenario "
                       "(N = 7, linear profile T1 = 0, T2 = 2 eps0, gamma = 3.102, "
                       "gamma_I = 0.620), 20,000 trajectories, 81 times on [0, 20]. Every "
                       "flag --some-key is also the TOML key some_key ([model] or [run] "
                       "table of --config; lists of tables as [[model.channel]]); flags "
                       "override the file. A flag or key that would not change the run is "
                       "refused. Next to trajectories, every observable is compared with "
                       "the exact solution when affordable (compare.parquet/.csv).")
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="validate everything, print the resolved model and run as JSON, "
                        "compute nothing")
    add_model_args(p)
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
                   help=_d("cores (-1 = all): trajectory workers, and BLAS threads of the "
                           "exact solvers (also of the exact reference next to trajectories)",
                           "-1 for trajectory workers, 1 BLAS thread for exact solvers"))
    r.add_argument("--operator", action="append", metavar="NAME=TERMS",
                   help=_d("your own observable, repeatable: a sum of operator words, e.g. "
                           "'mine=x1 x3 + 0.5*z2' (letters x y z + - n and a 1-based site per "
                           "factor; the magnon-conserving part is kept); rows NAME, or NAME_re "
                           "and NAME_im when not Hermitian (TOML: [[run.operator]] with name "
                           "and terms)", "none"))
    r.add_argument("--states", action="store_true", default=None,
                   help="also write the block density matrix of every output time to "
                        "states.npz in --out (tsm.read_result loads it as res.states)")
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


def _check_observables(spec, N: int):
    """Observable names, pairs and ``--operator`` as the chosen solver will check them
    (also in dry runs). Returns what the solver gets as ``observables``: the names
    (``None``: its defaults), with the operators after them."""
    allowed = {"mc": TRAJECTORY, "exact": OBSERVABLES,
               "steady": tuple(o for o in OBSERVABLES if o != "count")}[spec.solver]
    default = DEFAULT if spec.solver == "mc" else DEFAULT + ("norm",)
    ops = build_operators(spec.operators, N)
    try:
        names, _ = resolve_observables(spec.observables, spec.pairs, N, allowed=allowed,
                                       default=default)
        if not ops:
            return spec.observables
        split_operators([*names, *ops], N)
    except ValueError as exc:
        raise CliError(f"{exc} (with --solver {spec.solver})") from exc
    return [*names, *ops]


def _cmd_run(args) -> int:
    mcfg, rcfg, stages = gather_stages(args)
    model = _config.resolve_schedule(mcfg, stages)  # a Schedule with [[stage]] tables
    spec = _config.resolve_run(rcfg, model)
    observables = _check_observables(spec, model.N)
    if "checkpoint" in spec.mc:
        _io.check_output_file(spec.mc["checkpoint"], create=not args.dry_run)
    _io.check_output_dir(spec.out, create=not args.dry_run)
    run = _plan(model, spec, observables) if spec.solver == "mc" else None
    if args.dry_run:
        print(json.dumps(_config.resolved(model, spec), sort_keys=True, default=_io.jsonable))
        return 0
    ref = None
    if run is not None:
        try:
            res = execute(run)
        except (KeyboardInterrupt, RunTerminated) as exc:  # reported by main
            if getattr(exc, "checkpoint", None) is None:
                exc.checkpoint = run.checkpoint.path
            raise
        if spec.compare and exact_affordable(model):
            ref = _reference(model, spec, res)
    elif spec.solver == "exact":
        res = mesolve(model, spec.times, observables=observables, pairs=spec.pairs,
                      n_jobs=spec.exact_n_jobs, states=spec.states)
    else:
        res = steadystate(model, observables=observables, pairs=spec.pairs,
                          n_jobs=spec.exact_n_jobs, states=spec.states)
    cmp = None if ref is None else res.compare(ref)
    # the comparison table goes with the result tables: same formats, same atomic
    # writes, and the same rescue directory if the output directory fails
    extra = {} if cmp is None else {"compare": (cmp, _compare_metadata(res, ref))}
    try:
        written = _io.save_result(res, spec.out, spec.formats, tables=extra)
    except _io.OutputError as exc:
        print(f"thermospin-mc: error: {exc}", file=sys.stderr)
        return 1
    _print_summary(model, res, ref, cmp)
    for p in written:
        print(f"wrote {p}")
    return 0


def _plan(model, spec, observables) -> RunRecord:
    """The trajectory run of ``spec``, validated and derived once as ``mcsolve`` does
    (so ``--dry-run`` refuses what the run would refuse, with the same message):
    the option keys are the records' keywords (``runrecord.KEYWORDS``)."""
    kw = dict(spec.mc)
    return plan_run(model, spec.times, kw.pop("ntraj"), kw.pop("seed"), kw.pop("n_jobs"),
                    observables=observables, pairs=spec.pairs,
                    record_jumps=kw.pop("record_jumps", False), states=kw.pop("states", False),
                    target=None, checkpoint=None, cluster=None, legacy=kw, warn=False)


def _reference(model, spec, res):
    """The exact solution (``mesolve``) of every observable the trajectories estimated
    (the user's operators included)."""
    names = tuple(o for o in dict.fromkeys(str(o).split(":")[0]
                                           for o in res.expect["observable"])
                  if o in OBSERVABLES)
    names += build_operators(spec.operators, model.N)
    return mesolve(model, spec.times, observables=names,
                   pairs=spec.pairs if any(o in PAIR_NAMES for o in names) else None,
                   n_jobs=spec.exact_n_jobs)


def _compare_metadata(res, ref) -> dict:
    """Metadata of ``compare.*``: the run's, plus what the other columns are."""
    return {**res.metadata, "table": "compare",
            "reference": {"solver": ref.metadata.get("solver"),
                          "method": ref.metadata.get("method")},
            "columns": {"mean": "trajectories", "mean_other": "exact reference",
                        "z": "(mean - mean_other) / sem_eff (Result.compare)"}}


def _print_summary(model, res, ref=None, cmp=None) -> None:
    """What a run prints: model and run in a few lines, a short table of the headline
    observables and, next to trajectories, their comparison with the exact solution
    ``ref`` (``cmp = res.compare(ref)``) summarised per observable."""
    meta = res.metadata
    head, lines = describe_model(model)
    print(f"thermospin-mc {meta.get('version')}  solver={meta['solver']}  N={model.N}  {head}")
    print("\n".join(lines))
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
    _print_means(res, cmp)
    if cmp is not None:
        _print_comparison(cmp)
        _print_fit(res, ref)


def _print_fit(res, ref) -> None:
    """One line: the global goodness of fit of the trajectories against ``ref``."""
    try:
        f = res.goodness_of_fit(ref)
    except ValueError as exc:
        return print(f"goodness of fit: not computed ({exc})")
    print(f"goodness of fit, whole table (rows are correlated): chi2 = {f['chi2']:.1f}, effective"
          f" dof = {f['dof']:.1f}, p = {f['p_value']:.3g} (sign-flip test over {f['groups']} "
          "trajectory groups; p is uniform on a correct run, docs/statistics.md)")


def _series_keys(df) -> list:
    """The headline series of a table: total current and magnetisation (``j``, ``m`` at
    site 0) when computed, else the table's first series."""
    keys = [(o, 0) for o in ("j", "m") if ((df["observable"] == o) & (df["site"] == 0)).any()]
    # the user's operator rows (site 0, a name that is not a built-in observable)
    keys += [(o, 0) for o in dict.fromkeys(df["observable"])
             if o.split(":")[0] not in OBSERVABLES]
    if not keys and len(df):
        keys = [(df["observable"].iloc[0], int(df["site"].iloc[0]))]
    return keys


def _print_means(res, cmp) -> None:
    """Mean and sem (and the exact value and z) of the headline series at <= 6 times."""
    df = res.expect
    times = np.unique(df["t"])
    show = times if times.size <= 6 else times[np.linspace(0, times.size - 1, 6).astype(int)]
    width = max([10] + [len(str(o)) for o, _ in _series_keys(df)])
    header = f"{'t':>8} {'observable':>{width}} {'mean':>12} {'sem':>10}"
    if cmp is not None:
        header += f" {'exact':>12} {'z':>7}"
    print(header)
    for name, site in _series_keys(df):
        sub = df[(df.observable == name) & (df.site == site)]
        zsub = None if cmp is None else cmp[(cmp.observable == name) & (cmp.site == site)]
        label = name if site == 0 else f"{name}[{site}]"
        for t in show:
            row = sub[sub.t == t]
            if row.empty:
                continue
            mu, se = float(row["mean"].iloc[0]), float(row["sem"].iloc[0])
            line = f"{t:8.3f} {label:>{width}} {mu:12.6f} {se:10.2e}"
            if zsub is not None:
                zr = zsub[zsub.t == t]
                if not zr.empty:
                    line += (f" {float(zr['mean_other'].iloc[0]):12.6f} "
                             f"{float(zr['z'].iloc[0]):7.2f}")
            print(line)


def _print_comparison(cmp) -> None:
    """Per observable (``count:<channel>`` separately): rows compared, the largest
    ``|z|`` and the rows with ``|z| > 3`` (the whole table is ``compare.*``)."""
    absz = cmp["z"].abs()
    names = list(dict.fromkeys(cmp["observable"]))
    width = max([10] + [len(str(o)) for o in names])
    print("\ntrajectories vs exact (mesolve), every row: z = (mean - exact) / sem_eff "
          "(table: compare.*)")
    print(f"{'observable':<{width}} {'rows':>6} {'max|z|':>7} {'|z|>3':>6}")

    def line(label, z):
        known = z[~np.isnan(z)]  # NaN: rows without trajectories left
        zmax = f"{known.max():7.2f}" if known.size else f"{'nan':>7}"
        return f"{label:<{width}} {z.size:6d} {zmax} {int((known > 3).sum()):6d}"

    for name in names:
        print(line(name, absz[cmp["observable"] == name].to_numpy()))
    z = absz.to_numpy()
    print(line("all", z) + f"  (independent rows: ~{0.0027 * z.size:.1f} by chance; rows "
          "share trajectories, so judge by the p-value below)")


def _add_reproduce(sub):
    p = sub.add_parser(
        "reproduce", help="reproduce the source paper's figures (tables and PNGs)",
        description="Compute the data of the paper's Figs. 2-6 with the exact solvers (and "
                    "trajectories for Figs. 5 and 6a), write tidy tables (parquet and CSV, "
                    "with metadata) and one PNG per panel. Defaults: the paper's sizes "
                    "(N = 7), 20,000 trajectories per curve; minutes on 2 cores.")
    p.add_argument("figure", nargs="+",
                   choices=("fig2", "fig3", "fig4", "fig5", "fig6", "fcs", "rare", "all"),
                   help="figure(s) to reproduce; all = fig2-fig6; fcs (exact counting "
                        "statistics) and rare (cloning and the Doob process) are extra")
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

def main(argv=None) -> int:
    parser = _Parser(
        prog="thermospin-mc",
        description="Quantum-jump trajectories and exact solvers for open Heisenberg chains "
                    "with temperature-set couplings.")
    parser.add_argument("--version", action="version", version=f"thermospin-mc {__version__}")
    sub = parser.add_subparsers(dest="command")
    _add_run(sub)
    _add_reproduce(sub)
    add_stats(sub)
    add_fcs(sub)
    add_rare(sub)
    add_spectrum(sub)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    # SIGINT/SIGTERM: a run finishes its batch and writes its checkpoint (driver);
    # elsewhere they stop at once; either way one line, status 130/143, no traceback
    with deferred_signals("raise") as sig:
        try:
            try:
                status = args.func(args) if hasattr(args, "func") else _cmd_run(args)
            except BrokenPipeError:
                # the reader went away (e.g. `| head`): end quietly; files are already written
                try:
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, sys.stdout.fileno())
                except (OSError, ValueError):
                    pass
                status = 0
            except (ValueError, OSError) as exc:
                print(f"thermospin-mc: error: {_one_line(exc)}", file=sys.stderr)
                status = 2
            if argv is None:  # the program's work is done: a late signal ends it at once
                exit_on_signals(sig)
        except (KeyboardInterrupt, RunTerminated) as exc:
            status = report_stop(exc)
            if argv is None:  # the program itself: leave now (later signals are ignored)
                exit_now(status)
    return status


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
