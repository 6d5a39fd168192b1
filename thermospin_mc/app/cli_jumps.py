"""The jump-count subcommands of :mod:`thermospin_mc.cli`: ``stats`` (statistics of
a recorded jump table), ``fcs`` (exact counting statistics, optionally beside a
jump table) and ``rare`` (theta(s) and the tilted current by cloning, optionally
beside the exact values). :func:`add_stats`, :func:`add_fcs` and :func:`add_rare`
register them on the parser.

Length: the three subcommands share the ``--counts`` syntax, its default
(:func:`default_counts`) and the refusal messages naming ``--counts``; kept in
one module so that the count a user writes means the same in all three.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import _validate as v
from .. import analysis
from ..analysis.jumpstats import check_window
from ..core.results import metadata
from ..exact.counting import check_counts, steady_sectors
from ..exact.fcs import exact_counting_statistics, scgf
from ..io import (
    OutputError,
    check_output_dir,
    check_output_file,
    describe_os_error,
    jsonable,
    read_table,
    write_table,
)
from ..physics.model import ChainModel
from ..physics.schedule import Schedule
from ..trajectories.cloning import cloning
from . import config as _config
from .cli_args import CliError, add_model_args, exact_affordable, gather
from .cli_args import help_default as _d

__all__ = ["add_stats", "add_fcs", "add_rare", "default_counts", "NET_SPIN"]


def add_stats(sub):
    p = sub.add_parser(
        "stats", help="statistics of a recorded jump table",
        description="Analyse a jump table written by 'thermospin-mc run --record-jumps' "
                    "(jumps.parquet or jumps.csv): exit side of the first loss, waiting times "
                    "per channel, counting statistics in a time window and the jump rates "
                    "in it; for the paper's pump model (when small enough for the exact "
                    "solver), both beside their exact values for the same window (exact "
                    "evolution from the initial state, relaxed or not).")
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
    d = meta.get("model")
    if not isinstance(d, dict):
        return None
    try:
        return Schedule.from_dict(d) if "schedule" in d else ChainModel.from_dict(d)
    except (KeyError, TypeError, ValueError):
        return None


def _stats_model(meta: dict):
    """The recorded model when the exact reference is affordable and the counts are not
    trivial (the paper's pump model: without a pump every magnon is lost in the end)."""
    model = _recorded_model(meta)
    if not isinstance(model, ChainModel):  # none, or a schedule (no stationary reference)
        return None
    return model if model.gamma_pump > 0 and exact_affordable(model) else None


def _cmd_stats(args) -> int:
    jumps, meta = read_table(args.jumps)
    ntraj = args.ntraj if args.ntraj is not None else meta.get("ntraj")
    if ntraj is None:
        raise CliError(f"--ntraj is needed: {str(args.jumps)!r} has no ntraj metadata")
    ntraj = v.integer("--ntraj", ntraj, lo=1)
    burn = v.real("--burn", args.burn, lo=0.0)
    if args.window is not None:
        check_window("--window", args.window)
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
        # the reference of the same window as the cumulants above: exact mean rates over
        # [window start, window end] from the exact state, so a window that starts before
        # the run has relaxed is compared with what it should be, not with the steady state
        rates = analysis.steady_state_from_jumps(jumps, ntraj, *window, model=known,
                                                 reference="window")
        print(f"\nrates per unit time in [{window[0]:g}, {window[1]:g})"
              + ("; exact: mean rates over the same window (exact evolution from the "
                 "initial state)" if "exact" in rates else ""))
        print(rates.drop(columns=["ntraj"]).to_string(**fmt))
    return 0


def _stats_general(args, jumps, ntraj, window, waits, burn) -> int:
    """``stats`` for a general chain's jump table (channels other than the paper's)."""
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


def add_fcs(sub):
    p = sub.add_parser(
        "fcs", help="exact counting statistics of jumps (cumulants, waiting times)",
        description="Exact cumulants of a weighted jump count, in the magnon-block form: "
                    "long-time cumulant rates (default) or the cumulants of the count in "
                    "[t0, t0 + t). The model is given as for 'run' (the same flags and "
                    "[model] keys; default the paper's pump + loss chain). With --jumps, a "
                    "recorded jump table is compared with the exact values (z-scores) in "
                    "--window, for the model recorded in the table.")
    add_model_args(p)
    f = p.add_argument_group("counting")
    f.add_argument("--counts", help=_d(
        "channel=weight list (integer weights; names as in the jump tables)",
        "the net spin to the right: loss_right=1,loss_left=-1 for the paper's scenarios; "
        "loss@N=1 for --scenario boundary (the magnons carried through the chain into the "
        "right reservoir; in the long run the same statistics as pump@1); other channel "
        "sets need --counts"))
    f.add_argument("--order", type=int, help=_d("highest cumulant", "4; 3 with --jumps"))
    f.add_argument("--t", type=float, help=_d("finite counting time", "long-time rates"))
    f.add_argument("--t0", type=float, help=_d("start of the finite counting window", 0))
    f.add_argument("--jumps", type=Path, help="jump table to compare (needs --window)")
    f.add_argument("--ntraj", type=int, help=_d("trajectories of the jump table",
                                                "its metadata"))
    f.add_argument("--window", type=float, nargs=2, metavar=("A", "B"),
                   help="counting window A <= t < B of the comparison (with --jumps)")
    f.add_argument("--out", type=Path, help="write the table (.csv or .parquet)")
    f.add_argument("--n-jobs", dest="n_jobs", type=int,
                   help=_d("BLAS threads of the exact solvers (-1 = all cores)", 1))
    p.set_defaults(func=_cmd_fcs)


#: The paper's net spin to the right (hot) edge.
NET_SPIN = {"loss_right": 1, "loss_left": -1}


def default_counts(model) -> dict:
    """The count ``fcs`` uses without ``--counts``: the net spin to the right.

    The paper's scenarios (channels ``loss_left``, ``loss_right``):
    ``loss_right - loss_left``. A boundary drive (apart from dephasing, one pump
    at site 1 and one loss at site N, e.g. ``--scenario boundary``): the losses
    at site N, the magnons carried through the chain into the right reservoir
    (``pump@1 - loss@N`` is the change of the magnon number, which is bounded,
    so counting the pump instead gives the same long-time cumulants). Any other
    channel set has no default (``CliError`` naming the channels).
    """
    names = [ch.name for ch in model.channels]
    if set(NET_SPIN) <= set(names):
        return dict(NET_SPIN)
    moving = [ch for ch in model.channels if ch.kind != "dephasing"]
    if (len(moving) == 2 and moving[0].kind == "pump" and moving[0].site == 0
            and moving[1].kind == "loss" and moving[1].site == model.N - 1):
        return {moving[1].name: 1}
    if not names:
        raise CliError("the model has no jump channels (a closed chain): nothing to count")
    raise CliError("--counts is needed: no default count for the channels "
                   + ", ".join(names) + " (e.g. --counts " + names[0] + "=1)")


def _check_counts(model, counts) -> dict:
    """``check_counts`` of the API, with ``--counts`` named in its messages."""
    try:
        return check_counts(model, counts)
    except ValueError as exc:
        text = str(exc)
        raise CliError(f"--{text}" if text.startswith("counts") else f"--counts: {text}") \
            from exc


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
    mcfg, rcfg = gather(args, run_keys=False)
    if rcfg:
        raise CliError("fcs reads only the [model] table of --config; found [run] keys "
                       + ", ".join(sorted(rcfg)))
    model = _config.resolve_model(mcfg)
    counts = None if args.counts is None else _parse_counts(args.counts)
    n_jobs = 1 if args.n_jobs is None else args.n_jobs
    try:
        v.n_jobs(n_jobs)
    except ValueError as exc:
        raise CliError(f"--{str(exc).replace('n_jobs', 'n-jobs', 1)}") from exc
    if args.order is not None:
        v.integer("--order", args.order, lo=1)
    if args.t is not None:
        v.real("--t", args.t, lo=0.0)
    if args.t0 is not None:
        v.real("--t0", args.t0, lo=0.0)
    if args.window is not None:
        check_window("--window", args.window)
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
        if args.order is not None and args.order not in (2, 3):
            raise CliError(f"--order must be 2 or 3 with --jumps (the cumulants compared with "
                           f"the trajectories), got {args.order}")
        order = 3 if args.order is None else args.order
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
        counts = _check_counts(model, default_counts(model) if counts is None else counts)
        cmp = analysis.compare_counting_statistics(jumps, ntraj, model, counts,
                                                   tuple(args.window), order=order,
                                                   n_jobs=n_jobs)
        print(f"thermospin-mc fcs  {args.jumps}  counts={cmp.counts}  window="
              f"[{cmp.window[0]:g}, {cmp.window[1]:g})  ntraj={ntraj}")
        print("\ncumulants of the count in the window: trajectories vs exact")
        print(cmp.cumulants.to_string(**fmt))
        print(f"\nwaiting time to the next counted jump (chi2 = {cmp.chi2:.4g}, "
              f"{cmp.dof} bins)")
        print(cmp.waiting.to_string(index=False, **fmt))
        table = cmp.cumulants.reset_index()
    else:
        counts = _check_counts(model, default_counts(model) if counts is None else counts)
        df = exact_counting_statistics(model, counts, order=order, t=args.t, t0=t0,
                                       n_jobs=n_jobs)
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
        write_table(table, args.out, metadata("fcs", model, command="fcs", counts=counts,
                                              t=args.t, t0=t0))
        print(f"wrote {args.out}")
    return 0


# ---------------------------------------------------------------------------- rare
#: Step of the central difference that gives the exact ``theta'(s)`` beside cloning.
SLOPE_STEP = 1e-4


def add_rare(sub):
    """The ``rare`` subcommand: model flags as for ``run``, the count, the fields and
    the cloning options (:func:`thermospin_mc.cloning`)."""
    p = sub.add_parser(
        "rare", help="theta(s) and the tilted current of a jump count by cloning",
        description="The scaled cumulant generating function theta(s) of a weighted jump "
                    "count and the tilted ensemble's typical current theta'(s), estimated "
                    "by population dynamics (cloning, tsm.cloning; docs/model.md section "
                    "15), with error bars from independent populations. The model is given "
                    "as for 'run' (the same flags and [model] keys; default the paper's "
                    "pump + loss chain). With --exact, the exact theta(s) and theta'(s) "
                    "(tsm.scgf) are printed beside them with z-scores. Writes the table "
                    "(parquet and CSV with metadata) to --out.")
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="validate everything, print the resolved model and run as JSON, "
                        "compute nothing")
    add_model_args(p)
    r = p.add_argument_group("cloning")
    r.add_argument("--counts", help=_d(
        "channel=weight list (integer weights; names as in the jump tables), as for 'fcs'",
        "as for 'fcs': the net spin to the right, loss_right=1,loss_left=-1 for the "
        "paper's scenarios"))
    r.add_argument("--s", help=_d("comma list of counting fields, e.g. -1,-0.5,0.5,1",
                                  "-1,-0.5,0.5,1"))
    r.add_argument("--clones", type=int, help=_d("clones per population (>= 2)", 1000))
    r.add_argument("--t", type=float, help=_d("length of each population's history (> 0)",
                                              50))
    r.add_argument("--populations", type=int,
                   help=_d("independent populations per s (>= 2): the error bars", 8))
    r.add_argument("--interval", type=float,
                   help=_d("resampling interval (0 < interval <= t)",
                           "min(1, 1 / sum of the channel rates)"))
    r.add_argument("--burn", type=float,
                   help=_d("fraction of t in [0, 0.5) run before the estimators start "
                           "(and, for the current, after they stop)", 0.25))
    r.add_argument("--extrapolate", action="store_true", default=None,
                   help="also run clones/2 and clones/4 and extrapolate theta linearly in "
                        "1/clones (the bias column: raw minus extrapolated)")
    r.add_argument("--seed", type=int, help=_d("root seed (>= 0)", 1))
    r.add_argument("--n-jobs", dest="n_jobs", type=int,
                   help=_d("populations run in parallel (-1 = all cores; never changes the "
                           "numbers)", -1))
    r.add_argument("--exact", action="store_true", default=None,
                   help="also print (and write) the exact theta(s) and theta'(s) with "
                        "z-scores; needs a model within the exact solvers' reach (at most "
                        "10^5 density-matrix entries)")
    r.add_argument("--out", type=Path, help=_d(
        "output directory (rare.parquet, rare.csv and rare.meta.json), or one table file "
        "ending in .parquet or .csv", "./out"))
    p.set_defaults(func=_cmd_rare)


def _s_list(spec: str) -> np.ndarray:
    """``--s`` as a float array: a comma list of finite numbers."""
    try:
        vals = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError as exc:
        raise CliError(f"--s must be a comma list of numbers, got {spec!r}") from exc
    if not vals:
        raise CliError(f"--s must list at least one number, got {spec!r}")
    bad = [x for x in vals if not math.isfinite(x)]
    if bad:
        raise CliError(f"--s must be finite, got {bad[0]}")
    return np.array(vals)


def _rare_spec(args, model) -> dict:
    """The cloning arguments of ``rare`` checked as :func:`cloning` checks them (same
    bounds), with the flags named; ``interval`` stays ``None`` when not given."""
    try:
        n_jobs = -1 if args.n_jobs is None else args.n_jobs
        v.n_jobs(n_jobs)
    except ValueError as exc:
        raise CliError(f"--{str(exc).replace('n_jobs', 'n-jobs', 1)}") from exc
    t = 50.0 if args.t is None else v.real("--t", args.t, lo=0.0, lo_open=True)
    spec = {
        "counts": _check_counts(model, default_counts(model) if args.counts is None
                                else _parse_counts(args.counts)),
        "s": _s_list("-1,-0.5,0.5,1" if args.s is None else args.s),
        "t": t,
        "clones": 1000 if args.clones is None else v.integer("--clones", args.clones, lo=2),
        "populations": 8 if args.populations is None else v.integer(
            "--populations", args.populations, lo=2),
        "interval": None,
        "burn": 0.25 if args.burn is None else v.real("--burn", args.burn, lo=0.0),
        "extrapolate": bool(args.extrapolate),
        "seed": 1 if args.seed is None else v.integer("--seed", args.seed, lo=0),
        "n_jobs": n_jobs,
    }
    if not spec["burn"] < 0.5:
        raise CliError(f"--burn must be a fraction in [0, 0.5), got {spec['burn']}")
    if args.interval is not None:
        dt = v.real("--interval", args.interval, lo=0.0, lo_open=True)
        if dt > t:
            raise CliError(f"--interval must be in (0, t = {t:g}], got {dt}")
        spec["interval"] = dt
    return spec


def _rare_outputs(out: Path | None, create: bool) -> list[Path]:
    """The table files of ``rare``: ``--out`` itself when it ends in .parquet or .csv,
    else ``rare.parquet`` and ``rare.csv`` in that directory (default ``./out``);
    checked (and the directory created unless ``create`` is false) before computing."""
    out = Path("out") if out is None else Path(out)
    if out.suffix in (".parquet", ".csv"):
        check_output_file(out, create=create)
        return [out]
    check_output_dir(out, create=create)
    return [out / "rare.parquet", out / "rare.csv"]


def _rare_exact(model, counts: dict, s: np.ndarray) -> pd.DataFrame:
    """Exact ``theta(s)`` (:func:`scgf`) and ``theta'(s)`` (central difference, step
    :data:`SLOPE_STEP`) at the fields ``s``."""
    h = SLOPE_STEP
    th = scgf(model, counts, np.concatenate([s, s + h, s - h]))
    n = s.size
    return pd.DataFrame({"theta_exact": th[:n],
                         "current_exact": (th[n:2 * n] - th[2 * n:]) / (2 * h)})


def _write_rare(df: pd.DataFrame, paths: list[Path], meta: dict) -> list[Path]:
    """Write the table; if that fails, rescue it to a new temporary directory (one-line
    :class:`OutputError` saying where)."""
    try:
        return [write_table(df, p, meta) for p in paths]
    except OSError as exc:
        reason = str(exc) if isinstance(exc, OutputError) else (
            f"cannot write {str(getattr(exc, 'filename', None) or paths[0])!r}: "
            f"{describe_os_error(exc)}")
        try:
            rescue = Path(tempfile.mkdtemp(prefix="thermospin_mc_rescue_rare_"))
            for suffix in ("parquet", "csv"):
                write_table(df, rescue / f"rare.{suffix}", meta)
        except OSError:
            raise OutputError(f"{reason}; no fallback location was writable either") \
                from exc
        raise OutputError(f"{reason}; the table was saved to {str(rescue)!r} instead") \
            from exc


def _cmd_rare(args) -> int:
    mcfg, rcfg = gather(args, run_keys=False)
    if rcfg:
        raise CliError("rare reads only the [model] table of --config; found [run] keys "
                       + ", ".join(sorted(rcfg)))
    model = _config.resolve_model(mcfg)
    spec = _rare_spec(args, model)
    if args.exact:
        if not exact_affordable(model):
            raise CliError(f"--exact: the model (N = {model.N}) is beyond the exact solvers' "
                           "reach (more than 10^5 density-matrix entries); drop --exact")
        try:  # what scgf refuses first (no unique steady state)
            steady_sectors(model)
        except ValueError as exc:
            raise CliError(f"--exact: {exc}") from exc
    paths = _rare_outputs(args.out, create=not args.dry_run)
    dt = spec["interval"]
    if dt is None:  # cloning's default, for the record
        dt = min(1.0, 1.0 / sum(ch.rate for ch in model.channels))
    run = {**spec, "s": spec["s"].tolist(), "interval": dt, "exact": bool(args.exact),
           "out": [str(p) for p in paths]}
    if args.dry_run:
        print(json.dumps({"model": model.to_dict(), "rare": run}, sort_keys=True,
                         default=jsonable))
        return 0
    t0 = time.perf_counter()
    # the exact side first: cheap, and any refusal comes before the long run
    exact = _rare_exact(model, spec["counts"], spec["s"]) if args.exact else None
    df = cloning(model, spec["counts"], spec["s"], t=spec["t"], clones=spec["clones"],
                 seed=spec["seed"], n_jobs=spec["n_jobs"], populations=spec["populations"],
                 interval=spec["interval"], burn=spec["burn"],
                 extrapolate=spec["extrapolate"])
    if exact is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            df["theta_exact"] = exact["theta_exact"].to_numpy()
            df["theta_z"] = np.where(df["theta_sem"] > 0, (df["theta"] - df["theta_exact"])
                                     / df["theta_sem"], np.nan)
            df["current_exact"] = exact["current_exact"].to_numpy()
            df["current_z"] = np.where(df["current_sem"] > 0,
                                       (df["current"] - df["current_exact"])
                                       / df["current_sem"], np.nan)
    elapsed = time.perf_counter() - t0
    meta = metadata("rare", model, command="rare", elapsed_s=elapsed,
                    **{k: val for k, val in run.items() if k != "out"})
    try:
        written = _write_rare(df, paths, meta)
    except OutputError as exc:  # the table is safe elsewhere: say where, status 1
        print(f"thermospin-mc: error: {exc}", file=sys.stderr)
        return 1
    print(f"thermospin-mc rare  N={model.N}  profile={model.profile.to_dict()}  "
          f"counts={spec['counts']}")
    print(f"cloning: clones={spec['clones']}  t={spec['t']:g}  populations="
          f"{spec['populations']}  interval={dt:.4g}  burn={spec['burn']:g}  seed="
          f"{spec['seed']}" + ("  extrapolated in 1/clones" if spec["extrapolate"] else "")
          + f"  ({elapsed:.1f} s)")
    print("theta(s) = lim (1/t) ln E[exp(s K_t)]; current = the tilted ensemble's typical "
          "current theta'(s); sem over the populations"
          + ("; z = (cloning - exact) / sem" if exact is not None else ""))
    cols = ["s", "theta", "theta_sem"] + (["bias"] if spec["extrapolate"] else [])
    cols += ["theta_exact", "theta_z"] if exact is not None else []
    cols += ["current", "current_sem"]
    cols += ["current_exact", "current_z"] if exact is not None else []
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df[cols].to_string(index=False, float_format=lambda x: f"{x:.6g}"))
    for path in written:
        print(f"wrote {path}")
    return 0
