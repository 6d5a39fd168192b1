"""The ``rare`` subcommand of :mod:`thermospin_mc.cli`: theta(s) and the tilted
current of a jump count by cloning, optionally beside the exact values;
:func:`add_rare` registers it on the parser."""

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
from ..core.tables import metadata
from ..exact.counting import steady_sectors
from ..exact.fcs import scgf
from ..io import (
    OutputError,
    check_output_dir,
    check_output_file,
    describe_os_error,
    jsonable,
    write_table,
)
from ..trajectories.cloning import cloning
from .cli_args import CliError, add_model_args, exact_affordable, gather
from .cli_args import help_default as _d
from .cli_counts import check_counts_flag, default_counts, parse_counts
from .config_model import resolve_model

__all__ = ["add_rare", "SLOPE_STEP"]

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
        "counts": check_counts_flag(model, default_counts(model) if args.counts is None
                                    else parse_counts(args.counts)),
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
    model = resolve_model(mcfg)
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
