"""The ``stats`` subcommand of :mod:`thermospin_mc.cli`: statistics of a recorded
jump table (exit sides, waiting times, counting statistics and rates in a
window), beside their exact values when the recorded model allows;
:func:`add_stats` registers it on the parser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import _validate as v
from .. import analysis
from ..analysis.jumpstats import check_window
from ..io import read_table
from ..physics.model import ChainModel
from ..physics.schedule import Schedule
from .cli_args import CliError, exact_affordable

__all__ = ["add_stats", "recorded_model"]


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


def recorded_model(meta: dict):
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
    model = recorded_model(meta)
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
