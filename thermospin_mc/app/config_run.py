"""From ``[run]`` keys (and the matching flags) to a validated :class:`RunConfig`:
the solver, times, outputs, observables and user operators, and the keyword
arguments of :func:`thermospin_mc.mcsolve` (all the run options are here).

Run keys that do nothing for the chosen solver (trajectory options with
``--solver exact``/``steady``, ``--times`` with ``steady``) are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import _validate as _v
from ..core.operators import Operator
from ..physics.schedule import Schedule
from ..trajectories.runrecord import KEYWORDS
from .config_flags import ConfigError, flag

__all__ = ["RUN_KEYS", "MC_ONLY", "RECORD_KEYS", "NO_FLAG", "SOLVERS", "FORMATS",
           "RUN_DEFAULTS", "MC_N_JOBS", "EXACT_N_JOBS", "RunConfig", "resolve_run", "resolved",
           "parse_times", "build_operators"]

SOLVERS = ("mc", "exact", "steady")
FORMATS = ("parquet", "csv", "both")

#: Fields of ``mcsolve``'s option records with no command-line form: ``relative`` is
#: the ``%`` of ``--target-sem``, ``client`` a Python object; kept rows and the dense
#: sector limit are Python-only.
NO_FLAG = ("relative", "client", "keep_trajectories", "dense_max")
#: Keys (and flags) of the option records: ``runrecord.KEYWORDS``, the one table of
#: record fields, less :data:`NO_FLAG`.
RECORD_KEYS = tuple(k for k in KEYWORDS if k not in NO_FLAG)
#: Keys of the ``[run]`` table (and the matching flags).
RUN_KEYS = ("times", "solver", "ntraj", "seed", "n_jobs", "observables", "pairs",
            "record_jumps", "out", "format", "compare", "operator", "states") + RECORD_KEYS
#: Run keys that only act on trajectories.
MC_ONLY = ("ntraj", "seed", "record_jumps", "compare") + RECORD_KEYS

#: Defaults of the run (the README's main job). ``n_jobs`` depends on the solver:
#: trajectory workers default to every core (:data:`MC_N_JOBS`), the BLAS threads of
#: the exact solvers to 1 (:data:`EXACT_N_JOBS`; more threads than free cores make
#: the dense solves many times slower on a shared machine).
RUN_DEFAULTS = {"times": "0:20:81", "solver": "mc", "ntraj": 20_000, "seed": 1,
                "out": "out", "format": "both", "compare": True}
MC_N_JOBS = -1
EXACT_N_JOBS = 1


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
    """The :class:`~thermospin_mc.core.operators.Operator` objects of a run's operator specs
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
    special = ("checkpoint", "resume", "target_sem", "rel_floor", "target_observables")
    for k in RECORD_KEYS:
        if k in rcfg and k not in special:
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
