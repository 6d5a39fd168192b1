"""The ``fcs`` subcommand of :mod:`thermospin_mc.cli`: exact counting statistics of
a weighted jump count, optionally beside a recorded jump table (z-scores);
:func:`add_fcs` registers it on the parser."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import _validate as v
from .. import analysis
from ..analysis.jumpstats import check_window
from ..core.tables import metadata
from ..exact.fcs import exact_counting_statistics
from ..io import check_output_file, read_table, write_table
from .cli_args import CliError, add_model_args, gather
from .cli_args import help_default as _d
from .cli_counts import check_counts_flag, default_counts, parse_counts
from .cli_stats import recorded_model
from .config_model import resolve_model

__all__ = ["add_fcs"]


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


def _cmd_fcs(args) -> int:
    mcfg, rcfg = gather(args, run_keys=False)
    if rcfg:
        raise CliError("fcs reads only the [model] table of --config; found [run] keys "
                       + ", ".join(sorted(rcfg)))
    model = resolve_model(mcfg)
    counts = None if args.counts is None else parse_counts(args.counts)
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
        recorded = recorded_model(meta)
        if recorded is not None and recorded != model:
            if mcfg:
                raise CliError(f"the jump table {str(args.jumps)!r} was recorded with another "
                               "model than the model flags give; drop the model flags to use "
                               "the recorded one")
            model = recorded
        counts = check_counts_flag(model, default_counts(model) if counts is None else counts)
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
        counts = check_counts_flag(model, default_counts(model) if counts is None else counts)
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
