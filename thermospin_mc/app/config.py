"""From flags and TOML keys to a validated model and run: one rule for every input.

The command line and TOML files share one vocabulary: every flag ``--some-key``
is the TOML key ``some_key`` (``[model]`` or ``[run]`` table). Each key either
changes the model or the run, or is refused with one line naming the key and
the reason. The model itself is built by the public API (:class:`ChainModel`),
so the CLI refuses exactly what the API refuses, with the same messages.

Rules for temperatures (``--scenario`` picks the two-temperature profile:
``step`` for ``closed``, ``linear`` for ``loss`` and ``pump``):

- ``--T`` sets a uniform profile; it cannot be combined with ``--T1``, ``--T2``,
  ``--delta-T`` or another ``--profile``;
- ``--T1``, ``--T2``, ``--delta-T`` set the two-temperature profile; defaults
  ``T1 = 0`` and ``T2 = T1 + delta_T`` with ``delta_T = 2``; at most two of the
  three may be given;
- ``--profile uniform`` needs ``--T``;
- ``couplings`` / ``bond_temperatures`` fix every bond and exclude all of the
  above (and ``alpha_method`` for ``couplings``).

Run keys that do nothing for the chosen solver (trajectory options with
``--solver exact``/``steady``, ``--times`` with ``steady``) are refused.

A time-dependent protocol (docs/model.md 14) is written as top-level ``[[stage]]``
tables, each with its start time ``t > 0`` and any ``[model]`` keys, which
override ``[model]`` from ``t`` on (:func:`resolve_schedule`).

Length: one vocabulary for the model, its stages and the run; the three
(``resolve_model``, ``resolve_schedule``, ``resolve_run``) share the key
tables, ``flag`` and the refusal rule, so they are read and changed together.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import _validate as _v
from ..core.operators import Operator
from ..physics import model as _model
from ..physics.model import (
    BondCouplings,
    BondTemperatures,
    ChainModel,
    LinearProfile,
    StepProfile,
    UniformProfile,
    channel_from_dict,
)
from ..physics.schedule import Schedule

__all__ = ["MODEL_KEYS", "RUN_KEYS", "SCENARIOS", "PROFILES", "SOLVERS", "FORMATS",
           "ConfigError", "load_toml", "load_config", "resolve_model", "resolve_schedule",
           "resolve_run", "resolved", "RunConfig",
           "parse_times", "flag", "build_operators"]

SCENARIOS = ("pump", "loss", "closed", "boundary")
PROFILES = ("linear", "step", "uniform")
SOLVERS = ("mc", "exact", "steady")
FORMATS = ("parquet", "csv", "both")

#: Keys of the ``[model]`` table (and the matching flags).
MODEL_KEYS = ("scenario", "N", "delta_T", "profile", "T1", "T2", "T", "gamma", "gamma_pump",
              "pump_site", "initial", "alpha_method", "couplings", "bond_temperatures",
              "anisotropy", "fields", "channel", "rate_in", "rate_out", "dephasing",
              "dephasing_sites", "initial_p", "initial_mixture")
#: Keys of the ``[run]`` table (and the matching flags).
RUN_KEYS = ("times", "solver", "ntraj", "seed", "n_jobs", "batch_size", "observables", "pairs",
            "record_jumps", "max_magnons", "out", "format", "compare", "progress",
            "checkpoint", "resume", "checkpoint_every", "target_sem", "target_observables",
            "rel_floor", "max_ntraj", "time_limit", "backend", "scheduler", "operator",
            "states")
#: Run keys that only act on trajectories.
MC_ONLY = ("ntraj", "seed", "batch_size", "record_jumps", "max_magnons", "compare", "progress",
           "checkpoint", "resume", "checkpoint_every", "target_sem", "target_observables",
           "rel_floor", "max_ntraj", "time_limit", "backend", "scheduler")

#: Defaults of the run (the README's main job). ``n_jobs`` depends on the solver:
#: trajectory workers default to every core (:data:`MC_N_JOBS`), the BLAS threads of
#: the exact solvers to 1 (:data:`EXACT_N_JOBS`; more threads than free cores make
#: the dense solves many times slower on a shared machine).
RUN_DEFAULTS = {"times": "0:20:81", "solver": "mc", "ntraj": 20_000, "seed": 1,
                "out": "out", "format": "both", "compare": True}
MC_N_JOBS = -1
EXACT_N_JOBS = 1
DEFAULT_DELTA_T = 2.0


class ConfigError(ValueError):
    """Bad command-line flag or TOML key (one line, exit status 2)."""


def flag(key: str) -> str:
    """The command-line spelling of a key (``delta_T`` -> ``--delta-T``)."""
    if key == "compare":
        return "--no-compare"
    if key == "progress":
        return "--no-progress"
    return "--" + key.replace("_", "-")


# --------------------------------------------------------------------------- TOML
def load_toml(path: str | Path) -> tuple[dict, dict]:
    """Read a TOML run file without stages; returns ``(model_table, run_table)``.

    The rules are :func:`load_config`'s; ``[[stage]]`` tables (a protocol) are
    refused here: only ``thermospin-mc run`` reads them.
    """
    model, run, stages = load_config(path)
    if stages:
        raise ConfigError(f"[[stage]] tables in {str(path)!r} (a time-dependent protocol) are "
                          "read by 'thermospin-mc run' only")
    return model, run


def load_config(path: str | Path) -> tuple[dict, dict, list[dict]]:
    """Read a TOML run file; returns ``(model_table, run_table, stage_tables)``.

    One rule: every key belongs to the ``[model]`` or the ``[run]`` table, and
    only their own keys are read. Keys whose value is a list of tables are
    written with the table's name in front, e.g. ``[[model.channel]]`` (kind,
    site, rate, optional name; one such table per channel). Anything outside
    the two tables (a top-level ``N = 5``, a top-level ``[[channel]]``, another
    table) and any unknown key is refused with one line that says where it
    belongs. The one exception is a protocol (docs/model.md 14): top-level
    ``[[stage]]`` tables, each with ``t`` and any ``[model]`` keys (checked by
    :func:`resolve_schedule`); ``[model]`` is stage 0, the ``[[stage]]``
    tables are stages 1, 2, ... in file order.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {str(path)!r}") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"config file {str(path)!r} is a directory") from exc
    except PermissionError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: permission denied") \
            from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text") from exc
    for k, val in data.items():
        if k in ("model", "run"):
            if not isinstance(val, dict):
                raise ConfigError(f"{k!r} in {str(path)!r} must be a table ([{k}]), "
                                  f"got {type(val).__name__}")
            continue
        if k == "stage":
            if not (isinstance(val, list) and all(isinstance(x, dict) for x in val)):
                got = "a [stage] table" if isinstance(val, dict) else type(val).__name__
                raise ConfigError(f"'stage' in {str(path)!r} must be [[stage]] tables (one per "
                                  f"stage, each with t and [model] keys), got {got}")
            continue
        where = "model" if k in MODEL_KEYS else "run" if k in RUN_KEYS else None
        if where is None:
            raise ConfigError(f"unknown top-level key {k!r} in {str(path)!r}; allowed "
                              "tables: [model], [run], [[stage]]")
        if isinstance(val, list) and val and all(isinstance(x, dict) for x in val):
            raise ConfigError(f"top-level [[{k}]] tables in {str(path)!r} are not read; "
                              f"write them as [[{where}.{k}]] (every key belongs to "
                              "[model] or [run])")
        raise ConfigError(f"unknown top-level key {k!r} in {str(path)!r}; put it under the "
                          f"[{where}] table")
    model, run = dict(data.get("model", {})), dict(data.get("run", {}))
    for table, keys, name in ((model, MODEL_KEYS, "model"), (run, RUN_KEYS, "run")):
        for k in table:
            if k == "stage":
                raise ConfigError(f"[{name}].stage in {str(path)!r} is not read; write the "
                                  "stages as top-level [[stage]] tables")
            if k not in keys:
                other = "run" if name == "model" else "model"
                hint = (f" (it belongs to [{other}])" if k in (RUN_KEYS if name == "model"
                                                               else MODEL_KEYS) else "")
                raise ConfigError(f"unknown key [{name}].{k} in {str(path)!r}{hint}; allowed: "
                                  + ", ".join(keys))
    stages = [dict(st) for st in data.get("stage", [])]
    for n, st in enumerate(stages, 1):
        for k in st:
            if k != "t" and k not in MODEL_KEYS:
                hint = (" (it belongs to [run], which is one for all stages)" if k in RUN_KEYS
                        else "")
                raise ConfigError(f"unknown key {k!r} in [[stage]] {n} of {str(path)!r}{hint}; "
                                  "allowed: t and the [model] keys " + ", ".join(MODEL_KEYS))
    return model, run, stages


# --------------------------------------------------------------------------- model
def _float_seq(key: str, value) -> tuple[float, ...]:
    if isinstance(value, str):
        parts = [p for p in value.split(",") if p.strip()]
        try:
            return tuple(float(p) for p in parts)
        except ValueError as exc:
            raise ConfigError(f"{flag(key)} must be a comma list of numbers, got {value!r}") \
                from exc
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(value)
    raise ConfigError(f"{flag(key)} must be a list of numbers, got {value!r}")


def _initial(value):
    if value in ("", "all_up"):
        return "all_up"
    if isinstance(value, bool):
        raise ConfigError(f"{flag('initial')} must be 'all_up' or magnon sites, got {value!r}")
    if isinstance(value, int):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(value, str):
        try:
            return tuple(int(s) for s in value.split(",") if s.strip())
        except ValueError as exc:
            raise ConfigError(f"{flag('initial')} must be 'all_up' or comma-separated magnon "
                              f"sites (1-based), got {value!r}") from exc
    raise ConfigError(f"{flag('initial')} must be 'all_up' or magnon sites, got {value!r}")


def _profile(cfg: dict, scenario: str):
    temps = [k for k in ("T1", "T2", "delta_T") if k in cfg]
    fixed = [k for k in ("couplings", "bond_temperatures") if k in cfg]
    if fixed:
        if len(fixed) == 2:
            raise ConfigError("give at most one of couplings and bond_temperatures")
        clash = [k for k in ("profile", "T", *temps) if k in cfg]
        if fixed[0] == "couplings" and "alpha_method" in cfg:
            clash.append("alpha_method")
        if clash:
            raise ConfigError(f"{flag(clash[0])} cannot be combined with {flag(fixed[0])}, "
                              "which fixes every bond")
        values = _float_seq(fixed[0], cfg[fixed[0]])
        return BondCouplings(values) if fixed[0] == "couplings" else BondTemperatures(values)
    kind = cfg.get("profile")
    if kind is not None and kind not in PROFILES:
        raise ConfigError(f"{flag('profile')} must be one of {', '.join(PROFILES)}, "
                          f"got {kind!r}")
    if "T" in cfg:
        if kind not in (None, "uniform"):
            raise ConfigError(f"--T sets a uniform profile; it cannot be combined with "
                              f"--profile {kind} (use --T1/--T2 there)")
        if temps:
            raise ConfigError(f"--T (uniform temperature) cannot be combined with "
                              f"{flag(temps[0])}")
        return UniformProfile(cfg["T"])
    if kind == "uniform":
        raise ConfigError("--profile uniform needs --T (the temperature of every bond)")
    if len(temps) == 3:
        raise ConfigError("give at most two of --T1, --T2, --delta-T (T2 = T1 + delta-T)")
    T1, T2, dT = cfg.get("T1"), cfg.get("T2"), cfg.get("delta_T")
    if T2 is None:
        T1 = 0.0 if T1 is None else T1
        T2 = _add(T1, DEFAULT_DELTA_T if dT is None else dT)
    elif T1 is None:
        T1 = 0.0 if dT is None else _sub(T2, dT)
    kind = kind or ("step" if scenario == "closed" else "linear")
    return StepProfile(T1, T2) if kind == "step" else LinearProfile(T1, T2)


def _add(a, b):
    try:
        return a + b
    except TypeError:  # let the profile's own validation name the bad value
        return a if not isinstance(a, (int, float)) else b


def _sub(a, b):
    try:
        return a - b
    except TypeError:
        return a if not isinstance(a, (int, float)) else b


def _channels(value) -> list:
    """``[[model.channel]]`` tables, or ``--channel kind:site:rate[:name]`` strings."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if isinstance(item, str):
            parts = item.split(":")
            if len(parts) not in (3, 4):
                raise ConfigError(f"--channel must be KIND:SITE:RATE[:NAME], got {item!r}")
            try:
                d = {"kind": parts[0], "site": int(parts[1]), "rate": float(parts[2])}
            except ValueError as exc:
                raise ConfigError(f"--channel must be KIND:SITE:RATE[:NAME] with an integer "
                                  f"site and a numeric rate, got {item!r}") from exc
            if len(parts) == 4:
                d["name"] = parts[3]
            item = d
        out.append(channel_from_dict(item))
    return out


def _mixture(value):
    """``"1,3:0.5; :0.5"`` (sites:weight items; empty sites = all up) or TOML
    ``[{sites = [1, 3], weight = 0.5}, ...]`` -> a site-diagonal :func:`mixture`."""
    bad = ConfigError(f"{flag('initial_mixture')} must be 'SITES:WEIGHT; ...' (e.g. "
                      f"'1,3:0.5; :0.5') or a list of {{sites, weight}} tables, got {value!r}")
    items = []
    if isinstance(value, str):
        for part in value.split(";"):
            if not part.strip():
                continue
            sites, sep, w = part.rpartition(":")
            if not sep:
                raise bad
            try:
                items.append((tuple(int(x) for x in sites.split(",") if x.strip()), float(w)))
            except ValueError as exc:
                raise bad from exc
    elif isinstance(value, list):
        for d in value:
            if not isinstance(d, dict) or set(d) != {"sites", "weight"}:
                raise bad
            items.append((tuple(d["sites"]), d["weight"]))
    else:
        raise bad
    if not items:
        raise bad
    return _model.mixture(items)


def _scalar_or_seq(key: str, value):
    if isinstance(value, str):
        vals = _float_seq(key, value)
        return vals[0] if len(vals) == 1 else vals
    return value


def resolve_model(cfg: dict) -> ChainModel:
    """A validated :class:`ChainModel` from a flat dict of ``[model]`` keys.

    ``scenario`` (default ``pump``) chooses the preset the other keys modify:
    ``closed`` (step profile, one magnon at site ``(N+1)//2``, no channels),
    ``loss`` (linear profile, that magnon, edge loss ``gamma``), ``pump``
    (linear profile, all up, edge loss and central pump) or ``boundary``
    (uniform T = 0 unless temperatures are given, all up, pump ``rate_in`` at
    site 1 and loss ``rate_out`` at site N, both 1 by default). ``channel``
    replaces the scenario's channels; ``dephasing`` adds dephasing on top.
    """
    unknown = [k for k in cfg if k not in MODEL_KEYS]
    if unknown:
        raise ConfigError(f"unknown model key {unknown[0]!r}; allowed: {', '.join(MODEL_KEYS)}")
    scenario = cfg.get("scenario", "pump")
    if scenario not in SCENARIOS:
        raise ConfigError(f"{flag('scenario')} must be one of {', '.join(SCENARIOS)}, "
                          f"got {scenario!r}")
    N = cfg.get("N", 7)
    shorthand = [k for k in ("gamma", "gamma_pump", "pump_site") if k in cfg]
    if scenario == "boundary":
        for k in shorthand:
            raise ConfigError(f"{flag(k)} belongs to the paper's scenarios; the boundary "
                              "scenario uses --rate-in and --rate-out")
    else:
        for k in ("rate_in", "rate_out"):
            if k in cfg:
                raise ConfigError(f"{flag(k)} only applies to --scenario boundary")
    if "channel" in cfg:
        clash = shorthand + [k for k in ("rate_in", "rate_out") if k in cfg]
        if clash:
            raise ConfigError(f"{flag(clash[0])} cannot be combined with channel tables "
                              "(--channel), which replace the scenario's channels")
    if "dephasing_sites" in cfg and "dephasing" not in cfg:
        raise ConfigError("--dephasing-sites needs --dephasing RATE")
    given = [k for k in ("initial", "initial_p", "initial_mixture") if k in cfg]
    if len(given) > 1:
        raise ConfigError(f"give one initial state: {flag(given[0])} and {flag(given[1])} "
                          "both set it")
    if scenario == "boundary" and not any(k in cfg for k in (
            "profile", "T", "T1", "T2", "delta_T", "couplings", "bond_temperatures")):
        profile = UniformProfile(0.0)
    else:
        profile = _profile(cfg, scenario)
    if "initial_p" in cfg:
        initial = _model.product_mixture(_float_seq("initial_p", cfg["initial_p"]))
    elif "initial_mixture" in cfg:
        initial = _mixture(cfg["initial_mixture"])
    elif "initial" in cfg:
        initial = _initial(cfg["initial"])
    elif scenario in ("pump", "boundary"):
        initial = "all_up"
    else:
        try:
            initial = ((int(N) + 1) // 2,)
        except (TypeError, ValueError):
            initial = "all_up"  # ChainModel reports the bad N
    kw = dict(N=N, profile=profile, initial=initial)
    for k in ("alpha_method",):
        if k in cfg:
            kw[k] = cfg[k]
    for k in ("anisotropy", "fields"):
        if k in cfg:
            kw[k] = _scalar_or_seq(k, cfg[k]) if k == "anisotropy" else \
                _float_seq(k, cfg[k])
    if "channel" in cfg:
        kw["channels"] = _channels(cfg["channel"])
    elif scenario == "boundary":
        try:
            n_sites = int(N)
        except (TypeError, ValueError):
            n_sites = 2  # ChainModel reports the bad N
        kw["channels"] = [_model.Pump(site=1, rate=cfg.get("rate_in", 1.0)),
                          _model.Loss(site=n_sites, rate=cfg.get("rate_out", 1.0))]
    else:
        gamma = cfg.get("gamma", 0.0 if scenario == "closed" else _model.PAPER_GAMMA)
        gamma_pump = cfg.get("gamma_pump",
                             _model.PAPER_GAMMA_PUMP if scenario == "pump" else 0.0)
        if "pump_site" in cfg and (isinstance(gamma_pump, (int, float)) and gamma_pump == 0):
            raise ConfigError("--pump-site does nothing without a pump (gamma_pump = 0); set "
                              "--gamma-pump or use --scenario pump")
        kw.update(gamma=gamma, gamma_pump=gamma_pump, pump_site=cfg.get("pump_site"))
    model = ChainModel(**kw)
    if "dephasing" in cfg:
        sites = cfg.get("dephasing_sites")
        if isinstance(sites, str):
            try:
                sites = [int(x) for x in sites.split(",") if x.strip()]
            except ValueError as exc:
                raise ConfigError(f"--dephasing-sites must be a comma list of sites, got "
                                  f"{sites!r}") from exc
        model = _model.with_dephasing(model, cfg["dephasing"], sites)
    return model


#: [model] keys a [[stage]] table refuses: the initial state is stage 0's ([model]).
STAGE_REFUSED = ("initial", "initial_p", "initial_mixture")


def resolve_schedule(cfg: dict, stages) -> ChainModel | Schedule:
    """The model of ``[model]`` (``cfg``), or with ``[[stage]]`` tables the protocol
    (:class:`~thermospin_mc.schedule.Schedule`, docs/model.md 14).

    Stage 0 is ``[model]`` from ``t = 0``; ``[[stage]]`` table ``k`` (in file
    order, counted from 1) is stage ``k``: the model of ``[model]``'s keys plus
    its own (stages do not inherit each other's keys), from its ``t`` on.
    ``t`` must be a number ``> 0`` (``t = 0`` would replace ``[model]``: put
    those keys there), larger than the previous stage's. Every key obeys the
    one input rule of :func:`resolve_model` (the message names the stage); the
    initial state is stage 0's, so ``initial``, ``initial_p`` and
    ``initial_mixture`` in a stage are refused, and so is another ``N``.
    """
    base = resolve_model(cfg)
    if not stages:
        return base
    out, prev = [(0.0, base)], 0.0
    for k, st in enumerate(stages, 1):
        where = f"[[stage]] {k}"
        if "t" not in st:
            raise ConfigError(f"{where} has no t: every [[stage]] table needs its start time "
                              "t > 0 ([model] is stage 0 from t = 0)")
        t = st["t"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not np.isfinite(t):
            raise ConfigError(f"{where}: t must be a finite number, got {t!r}")
        t = float(t)
        if t < 0:
            raise ConfigError(f"{where}: t = {t:g} is negative; stage start times are > 0 "
                              "([model] is stage 0 from t = 0)")
        if t == 0:
            raise ConfigError(f"{where}: t = 0 would replace [model], which is stage 0 from "
                              "t = 0; put these keys in [model]")
        if t <= prev:
            raise ConfigError(f"{where}: t = {t:g} is not after stage {k - 1}'s t = {prev:g}; "
                              "[[stage]] tables are stages 1, 2, ... in file order, with "
                              "increasing t")
        keys = {key: val for key, val in st.items() if key != "t"}
        for key in STAGE_REFUSED:
            if key in keys:
                raise ConfigError(f"{where} (t = {t:g}): {key} does nothing in a stage (the "
                                  "initial state is [model]'s, stage 0); put it in [model]")
        if "N" in keys and keys["N"] != base.N:
            raise ConfigError(f"{where} (t = {t:g}): N = {keys['N']!r} differs from [model]'s "
                              f"N = {base.N} (every stage has the same sites)")
        try:
            model = resolve_model({**cfg, **keys})
        except ValueError as exc:
            raise ConfigError(f"{where} (t = {t:g}): {exc}") from exc
        out.append((t, model))
        prev = t
    try:
        return Schedule(out)
    except ValueError as exc:  # a channel name that changes its kind or site
        raise ConfigError(f"{exc} (stage 0 is [model], stage k the k-th [[stage]] table)") \
            from exc


# --------------------------------------------------------------------------- run
def parse_times(spec) -> np.ndarray:
    """``"start:stop:num"`` (inclusive linspace), a comma list ``"0,1,2.5"``, or a list."""
    if isinstance(spec, (list, tuple, np.ndarray)):
        try:
            return np.asarray(spec, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"--times must be a list of numbers, got {spec!r}") from exc
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return np.array([float(spec)])
    if not isinstance(spec, str):
        raise ConfigError(f"--times must be 'start:stop:num' or a comma list, got {spec!r}")
    try:
        if ":" in spec:
            start, stop, num = spec.split(":")
            num = int(num)
            if num < 1:
                raise ConfigError(f"--times: number of points must be >= 1, got {num}")
            return np.linspace(float(start), float(stop), num)
        return np.array([float(x) for x in spec.split(",") if x.strip()])
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"--times must be 'start:stop:num' or a comma list, got {spec!r}") \
            from exc


def _names(key: str, value) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(o.strip() for o in value.split(",") if o.strip())
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise ConfigError(f"{flag(key)} must be a comma list of names, got {value!r}")


def _pairs(value) -> tuple:
    """``"1-3,2-5"`` or ``[[1, 3], [2, 5]]`` -> ``((1, 3), (2, 5))`` (checked by the API)."""
    if isinstance(value, str):
        out = []
        for part in value.split(","):
            if not part.strip():
                continue
            ends = part.split("-")
            try:
                if len(ends) != 2:
                    raise ValueError
                out.append((int(ends[0]), int(ends[1])))
            except ValueError as exc:
                raise ConfigError(f"--pairs must be a comma list of site pairs like "
                                  f"'1-3,2-5', got {value!r}") from exc
        return tuple(out)
    if isinstance(value, (list, tuple)):
        return tuple(tuple(p) if isinstance(p, (list, tuple)) else p for p in value)
    raise ConfigError(f"--pairs must be a list of site pairs, got {value!r}")


def _target(value) -> tuple[float, bool]:
    text = str(value).strip()
    relative = text.endswith("%")
    try:
        number = float(text[:-1]) / 100 if relative else float(text)
    except ValueError as exc:
        raise ConfigError(f"--target-sem must be a number or a percentage like '1%', got "
                          f"{value!r}") from exc
    return number, relative


@dataclass(frozen=True)
class RunConfig:
    """A validated run: what to compute and where to write it."""

    solver: str
    times: np.ndarray | None
    out: Path
    formats: tuple[str, ...]
    observables: tuple[str, ...] | None
    #: trajectory workers (``solver="mc"``) or BLAS threads of the exact solver
    n_jobs: int
    pairs: tuple | None = None
    compare: bool = True
    #: keyword arguments of :func:`thermospin_mc.mcsolve` (trajectories only)
    mc: dict = field(default_factory=dict)
    #: BLAS threads of the exact solvers of this run (the solver itself, or the
    #: exact reference next to trajectories): ``n_jobs`` when given, else 1
    exact_n_jobs: int = EXACT_N_JOBS
    #: user operators ``(name, text or {word: coefficient})``, built for the model's N
    #: by :func:`build_operators`
    operators: tuple = ()
    #: keep the block density matrices (``states.npz`` in the output directory)
    states: bool = False

    def to_dict(self) -> dict:
        return {"solver": self.solver,
                "times": None if self.times is None else self.times.tolist(),
                "out": str(self.out), "formats": list(self.formats),
                "observables": None if self.observables is None else list(self.observables),
                "pairs": None if self.pairs is None else [list(p) for p in self.pairs],
                "n_jobs": self.n_jobs, "exact_n_jobs": self.exact_n_jobs,
                "compare": self.compare, "states": self.states,
                "operators": [{"name": n, "terms": t} for n, t in self.operators],
                "mc": {k: (str(v) if isinstance(v, Path) else v) for k, v in self.mc.items()}}


def resolve_run(rcfg: dict, model=None) -> RunConfig:
    """A validated :class:`RunConfig` from a flat dict of ``[run]`` keys (``model``: the
    run's model or protocol, if known: a protocol refuses ``--solver steady``)."""
    unknown = [k for k in rcfg if k not in RUN_KEYS]
    if unknown:
        raise ConfigError(f"unknown run key {unknown[0]!r}; allowed: {', '.join(RUN_KEYS)}")
    cfg = {**RUN_DEFAULTS, **rcfg}
    solver = cfg["solver"]
    if solver not in SOLVERS:
        raise ConfigError(f"--solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if solver == "steady" and isinstance(model, Schedule):
        raise ConfigError("--solver steady: the [[stage]] tables make a time-dependent "
                          "protocol, which has no single generator and no steady state; use "
                          "--solver mc or exact, or remove the stages")
    if solver != "mc":
        for k in MC_ONLY:
            if k in rcfg:
                raise ConfigError(f"{flag(k)} does nothing with --solver {solver} (it is a "
                                  "trajectory option); remove it")
    if solver == "steady" and "times" in rcfg:
        raise ConfigError("--times does nothing with --solver steady (the steady state is "
                          "the t -> infinity limit); remove it")
    fmt = cfg["format"]
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    formats = ("parquet", "csv") if fmt == "both" else (fmt,)
    out = cfg["out"]
    if not isinstance(out, (str, Path)) or str(out) == "":
        raise ConfigError(f"--out must be a directory path, got {out!r}")
    times = None if solver == "steady" else _api_check("times", _v.times,
                                                        parse_times(cfg["times"]))
    obs = None if cfg.get("observables") is None else _names("observables",
                                                             cfg["observables"])
    pairs = None if "pairs" not in rcfg else _pairs(rcfg["pairs"])
    if pairs is not None and obs is not None and not set(obs) & {"nn", "pm", "pm_re", "pm_im"}:
        raise ConfigError("--pairs does nothing without a two-point observable (nn, pm, "
                          "pm_re, pm_im) in --observables")
    # trajectory workers default to every core, BLAS threads of exact solvers to 1
    n_jobs = rcfg.get("n_jobs", MC_N_JOBS if solver == "mc" else EXACT_N_JOBS)
    _api_check("n_jobs", _v.n_jobs, n_jobs)  # the API's own check, naming --n-jobs
    operators = _operator_specs(rcfg["operator"]) if "operator" in rcfg else ()
    states = rcfg.get("states", False)
    if not isinstance(states, bool):
        raise ConfigError(f"--states must be true or false, got {states!r}")
    mc = {}
    if solver == "mc":
        mc = _mc_options(rcfg, {**cfg, "n_jobs": n_jobs})
        if states:
            mc["states"] = True
    return RunConfig(solver=solver, times=times, out=Path(out), formats=formats,
                   observables=obs, n_jobs=n_jobs, pairs=pairs, compare=bool(cfg["compare"]),
                   mc=mc, exact_n_jobs=rcfg.get("n_jobs", EXACT_N_JOBS),
                   operators=operators, states=states)


def resolved(model, spec: RunConfig) -> dict:
    """What ``run --dry-run`` prints: the model (``[model]``, stage 0), for a protocol
    every stage as resolved (``stages``: ``stage``, ``t``, ``model``), and the run."""
    out = {"model": model.to_dict(), "run": spec.to_dict()}
    if isinstance(model, Schedule):
        out["model"] = model.first.to_dict()
        out["stages"] = [{"stage": k, "t": t, "model": m.to_dict()}
                         for k, (t, m) in enumerate(model.stages)]
    return out


def _operator_specs(value) -> tuple:
    """``--operator NAME=TEXT`` strings (repeatable) or ``[[run.operator]]`` tables with
    ``name`` and ``terms`` (word -> coefficient, a number or ``[re, im]``) ->
    ``((name, text or {word: complex}), ...)``; names are checked here, the words
    against N by :func:`build_operators`."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if isinstance(item, str):
            name, eq, text = item.partition("=")
            if not eq or not name.strip() or not text.strip():
                raise ConfigError(f"--operator must be NAME=TERMS like 'mine=x1 x3 + 0.5*z2', "
                                  f"got {item!r}")
            out.append((name.strip(), text.strip()))
        elif isinstance(item, dict):
            extra = sorted(set(item) - {"name", "terms"})
            if extra or "name" not in item or "terms" not in item:
                raise ConfigError(f"[[run.operator]] tables need exactly the keys name and "
                                  f"terms, got {sorted(item)}")
            terms = item["terms"]
            if not isinstance(terms, dict) or not terms:
                raise ConfigError(f"[[run.operator]] {item['name']!r}: terms must be a table "
                                  f"of word = coefficient, got {terms!r}")
            out.append((item["name"], {str(w): _coefficient(item["name"], w, c)
                                       for w, c in terms.items()}))
        else:
            raise ConfigError(f"--operator must be NAME=TERMS or a [[run.operator]] table, got "
                              f"{item!r}")
    names = [n for n, _ in out]
    for n in names:
        if not isinstance(n, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n):
            raise ConfigError(f"--operator name must be a letter followed by letters, digits "
                              f"or '_', got {n!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--operator names must be distinct, got {names}")
    return tuple(out)


def _coefficient(name, word, c) -> complex:
    if isinstance(c, (int, float)) and not isinstance(c, bool):
        return complex(c)
    if (isinstance(c, (list, tuple)) and len(c) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in c)):
        return complex(c[0], c[1])
    raise ConfigError(f"[[run.operator]] {name!r}: the coefficient of {word!r} must be a "
                      f"number or [re, im], got {c!r}")


def build_operators(specs, N: int) -> tuple:
    """The :class:`~thermospin_mc.operators.Operator` objects of a run's operator specs
    for a chain of ``N`` sites (one-line refusals name ``--operator``)."""
    out = []
    for name, terms in specs:
        try:
            op = (Operator.parse(terms, N, name) if isinstance(terms, str)
                  else Operator.from_terms(terms, N, name))
        except ValueError as exc:
            raise ConfigError(f"--operator {name}: {exc}") from exc
        out.append(op)
    return tuple(out)


def _api_check(key: str, check, value):
    """``check(value)`` (one of the API's own checks in :mod:`thermospin_mc._validate`),
    with the flag named in its message (``times must be ...`` -> ``--times must be ...``)."""
    try:
        return check(value)
    except ValueError as exc:
        text = str(exc)
        text = text[len(key):] if text.startswith(key + " ") else f": {text}"
        raise ConfigError(f"{flag(key)}{text}") from exc


def _seed(value):
    """A root seed as ``mcsolve`` takes it: an integer >= 0, or a list of them (TOML)."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError("--seed must be an integer >= 0 or a non-empty list of them, "
                              "got []")
        out = [_api_check("seed", lambda x: _v.integer("seed", x, lo=0), x) for x in value]
    else:
        out = _api_check("seed", lambda x: _v.integer("seed", x, lo=0), value)
    try:  # what mcsolve does with it
        np.random.SeedSequence(out)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--seed must be an integer >= 0, got {value!r} ({exc})") from exc
    return out


def _mc_options(rcfg: dict, cfg: dict) -> dict:
    kw = {"ntraj": _api_check("ntraj", lambda x: _v.integer("ntraj", x, lo=1), cfg["ntraj"]),
          "seed": _seed(cfg["seed"]), "n_jobs": cfg["n_jobs"]}
    for k in ("batch_size", "max_magnons", "progress", "checkpoint_every", "max_ntraj",
              "time_limit", "backend", "scheduler"):
        if k in rcfg:
            kw[k] = rcfg[k]
    if "record_jumps" in rcfg:
        if not isinstance(rcfg["record_jumps"], bool):
            raise ConfigError(f"--record-jumps must be true or false, got "
                              f"{rcfg['record_jumps']!r}")
        kw["record_jumps"] = rcfg["record_jumps"]
    if "checkpoint" in rcfg:
        kw["checkpoint"] = Path(rcfg["checkpoint"])
    for k in ("resume", "checkpoint_every"):
        if k in rcfg and "checkpoint" not in rcfg:
            raise ConfigError(f"{flag(k)} needs --checkpoint PATH")
    if "resume" in rcfg:
        kw["resume"] = rcfg["resume"]
    if "target_sem" in rcfg:
        kw["target_sem"], kw["relative"] = _target(rcfg["target_sem"])
    if "rel_floor" in rcfg:
        if not kw.get("relative"):
            raise ConfigError("--rel-floor only acts with a relative --target-sem (e.g. 1%)")
        kw["rel_floor"] = rcfg["rel_floor"]
    if "target_observables" in rcfg:
        kw["target_observables"] = _names("target_observables", rcfg["target_observables"])
    # everything else (ranges, combinations such as max_ntraj without a target) is
    # checked by mcsolve itself, before it computes anything
    return kw
