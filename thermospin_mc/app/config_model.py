"""From ``[model]`` keys (and the matching flags) to a validated :class:`ChainModel`.

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

The model itself is built by the public API (:class:`ChainModel`), so the
command line refuses exactly what the API refuses, with the same messages.
"""

from __future__ import annotations

import numpy as np

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
from .config_flags import ConfigError, flag

__all__ = ["MODEL_KEYS", "SCENARIOS", "PROFILES", "DEFAULT_DELTA_T", "resolve_model"]

SCENARIOS = ("pump", "loss", "closed", "boundary")
PROFILES = ("linear", "step", "uniform")

#: Keys of the ``[model]`` table (and the matching flags).
MODEL_KEYS = ("scenario", "N", "delta_T", "profile", "T1", "T2", "T", "gamma", "gamma_pump",
              "pump_site", "initial", "alpha_method", "couplings", "bond_temperatures",
              "anisotropy", "fields", "channel", "rate_in", "rate_out", "dephasing",
              "dephasing_sites", "initial_p", "initial_mixture")
#: Default temperature difference ``T2 - T1`` of a two-temperature profile.
DEFAULT_DELTA_T = 2.0


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
