"""Command-line pieces shared by the subcommands of :mod:`thermospin_mc.cli`: the
model flags (``run``, ``fcs`` and ``spectrum``), merging flags into the TOML tables,
and the size limit of the exact reference; and the small ``spectrum`` subcommand
(the slowest Liouvillian eigenvalues and the relaxation time of the model the
flags describe). Flags and TOML keys follow one rule (:mod:`thermospin_mc.app.config`):
each changes the run or is refused.
"""

from __future__ import annotations

from math import comb
from pathlib import Path

from .. import _validate as v
from ..core.tables import metadata
from ..exact.relaxation import METHODS, liouvillian_spectrum, relaxation_time
from ..io import check_output_file, write_table
from ..physics.schedule import Schedule
from . import config as _config
from .config_flags import ConfigError

__all__ = ["CliError", "help_default", "add_model_args", "gather", "gather_stages",
           "describe_model", "exact_affordable", "add_spectrum"]

#: Errors of bad command-line input (one line, exit status 2).
CliError = ConfigError


def help_default(text: str, default) -> str:
    """``text (default: default)`` for an argparse help string."""
    return f"{text} (default: {default})"


_d = help_default


def add_model_args(p) -> None:
    """--config and the model flags (shared by ``run`` and ``fcs``)."""
    p.add_argument("--config", type=Path,
                   help="TOML file with a [model] and a [run] table; every key belongs to "
                        "one of them, lists of tables too ([[model.channel]]); anything "
                        "else is refused")
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
                        "(TOML: one [[model.channel]] table per channel, with kind, site, "
                        "rate, name)")
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


def gather(args, run_keys: bool = True) -> tuple[dict, dict]:
    """Merge the TOML tables and the flags given on the command line (flags win).

    ``[[stage]]`` tables (a protocol) are refused with one line naming the
    command: only ``run`` reads them (:func:`gather_stages`).
    """
    mcfg, rcfg, stages = _read_config(args)
    if stages:
        command = getattr(args, "command", None) or "this command"
        raise CliError(f"{command} needs one time-independent model: the [[stage]] tables of "
                       f"{str(args.config)!r} (a time-dependent protocol) are read by "
                       "'thermospin-mc run' only")
    return _merge_flags(args, mcfg, rcfg, run_keys)


def gather_stages(args) -> tuple[dict, dict, list[dict]]:
    """:func:`gather` for ``run``: also the ``[[stage]]`` tables, in file order (the flags
    change ``[model]``, which every stage starts from)."""
    mcfg, rcfg, stages = _read_config(args)
    mcfg, rcfg = _merge_flags(args, mcfg, rcfg, True)
    return mcfg, rcfg, stages


def _read_config(args) -> tuple[dict, dict, list[dict]]:
    return _config.load_config(args.config) if args.config is not None else ({}, {}, [])


def _merge_flags(args, mcfg: dict, rcfg: dict, run_keys: bool) -> tuple[dict, dict]:
    tables = [(_config.MODEL_KEYS, mcfg)] + ([(_config.RUN_KEYS, rcfg)] if run_keys else [])
    for keys, cfg in tables:
        for k in keys:
            val = getattr(args, k, None)
            if val is not None:
                cfg[k] = val
    return mcfg, rcfg


def describe_model(model) -> tuple[str, list[str]]:
    """What a run prints about its model: a head (profile and a(T), or the number of
    stages of a ``Schedule``) and lines of channels and couplings (per stage)."""
    if isinstance(model, Schedule):
        lines = []
        for k, (t, m) in enumerate(model.stages):
            lines += [f"stage {k} from t = {t:g}: profile={m.profile.to_dict()}",
                      *("  " + line for line in describe_model(m)[1])]
        return f"protocol of {len(model)} stages  a(T)={model.alpha_method}", lines
    chans = ", ".join(f"{c.name} ({c.kind} at {c.site + 1}, rate {c.rate:g})"
                      for c in model.channels) or "none (closed chain)"
    return (f"profile={model.profile.to_dict()}  a(T)={model.alpha_method}",
            [f"channels: {chans}",
             "couplings a_l = " + ", ".join(f"{x:.5f}" for x in model.couplings)])


def exact_affordable(model) -> bool:
    """Whether the exact block solver is cheap enough to print as a reference
    (at most 10^5 density-matrix entries over the reachable sectors; a
    ``Schedule``: over every stage's)."""
    secs = model.reachable_sectors()
    return sum(comb(model.N, m) ** 2 for m in secs) <= 100_000


# ---------------------------------------------------------------------------- spectrum
def add_spectrum(sub):
    """The ``spectrum`` subcommand: model flags as for ``run``, plus ``--k``."""
    p = sub.add_parser(
        "spectrum", help="slowest Liouvillian eigenvalues and the relaxation time",
        description="The k slowest eigenvalues of the Lindblad generator on block-diagonal "
                    "operators (largest real parts; 0 is the steady state) and the "
                    "relaxation time 1/g, g = -(largest real part below 0). The model is "
                    "given as for 'run' (the same flags and [model] keys; default the "
                    "paper's pump + loss chain).")
    add_model_args(p)
    s = p.add_argument_group("spectrum")
    s.add_argument("--k", type=int, help=_d("number of eigenvalues", 6))
    s.add_argument("--method", choices=METHODS,
                   help=_d("dense (every eigenvalue) or davidson (iterative); auto: dense up "
                           "to 4,000 real unknowns (N = 7)", "auto"))
    s.add_argument("--out", type=Path, help="write the table (.csv or .parquet)")
    s.add_argument("--n-jobs", dest="n_jobs", type=int,
                   help=_d("BLAS threads of the exact solver (-1 = all cores)", 1))
    p.set_defaults(func=cmd_spectrum)


def cmd_spectrum(args) -> int:
    """Print the slowest rates (``re``, ``im``) and the relaxation time."""
    mcfg, rcfg = gather(args, run_keys=False)
    if rcfg:
        raise CliError("spectrum reads only the [model] table of --config; found [run] keys "
                       + ", ".join(sorted(rcfg)))
    model = _config.resolve_model(mcfg)
    k = 6 if args.k is None else args.k
    if k < 1:
        raise CliError(f"--k must be an integer >= 1, got {k}")
    n_jobs = 1 if args.n_jobs is None else args.n_jobs
    try:
        v.n_jobs(n_jobs)
    except ValueError as exc:
        raise CliError(f"--{str(exc).replace('n_jobs', 'n-jobs', 1)}") from exc
    if args.out is not None:
        check_output_file(args.out)
    method = args.method or "auto"
    df = liouvillian_spectrum(model, k=k, method=method, n_jobs=n_jobs)
    rates = df["re"].to_numpy()
    below = rates[rates < -df.attrs["zero_tol"]]
    # the table holds the k rightmost eigenvalues: any rate below 0 in it is the gap
    tau = (float(1.0 / -below.max()) if below.size
           else relaxation_time(model, method=method, n_jobs=n_jobs))
    size = df.attrs["size"]
    print(f"thermospin-mc spectrum  N={model.N}  profile={model.profile.to_dict()}  "
          f"sectors {df.attrs['sectors'][0]}..{df.attrs['sectors'][-1]} ({size} unknowns)  "
          f"method={df.attrs['method']}")
    chans = ", ".join(f"{c.name} ({c.kind} at {c.site + 1}, rate {c.rate:g})"
                      for c in model.channels) or "none (closed chain)"
    print(f"channels: {chans}")
    print(f"{len(df)} slowest eigenvalues of L on block-diagonal operators (units of J0; "
          f"|re| <= {df.attrs['zero_tol']:.2g} is 0):")
    print(f"{'':>4} {'re':>16} {'im':>16}")
    for i, (re, im) in enumerate(zip(df["re"], df["im"], strict=True)):
        print(f"{i:>4} {re:16.10g} {im:16.10g}")
    if tau == float("inf"):
        print("relaxation time: inf (no eigenvalue has a real part below 0: nothing relaxes)")
    else:
        print(f"relaxation time 1/g = {tau:.10g}  (g = {1.0 / tau:.10g})")
    if args.out is not None:
        write_table(df.reset_index(drop=True), args.out,
                    metadata("spectrum", model, command="spectrum", k=k,
                             method=df.attrs["method"], relaxation_time=tau,
                             zero_tol=df.attrs["zero_tol"]))
        print(f"wrote {args.out}")
    return 0
