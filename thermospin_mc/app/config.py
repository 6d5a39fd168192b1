"""From flags and TOML keys to a validated model and run: one rule for every input.

The command line and TOML files share one vocabulary: every flag ``--some-key``
is the TOML key ``some_key`` (``[model]`` or ``[run]`` table). Each key either
changes the model or the run, or is refused with one line naming the key and
the reason. The model itself is built by the public API (:class:`ChainModel`),
so the CLI refuses exactly what the API refuses, with the same messages.

The rules for temperatures (``--T``, ``--T1``/``--T2``/``--delta-T``,
``--profile``, ``couplings``/``bond_temperatures``) are in :mod:`.config_model`.

Run keys that do nothing for the chosen solver (trajectory options with
``--solver exact``/``steady``, ``--times`` with ``steady``) are refused.

A time-dependent protocol (docs/model.md 14) is written as top-level ``[[stage]]``
tables, each with its start time ``t > 0`` and any ``[model]`` keys, which
override ``[model]`` from ``t`` on (:func:`resolve_schedule`).

Where each part lives: :mod:`.config_flags` (:class:`ConfigError`, :func:`flag`),
:mod:`.config_toml` (the TOML file), :mod:`.config_model` (``[model]``),
:mod:`.config_schedule` (``[[stage]]``) and :mod:`.config_run` (``[run]``: every
run option, the trajectory options passed to ``mcsolve`` among them). This module
gathers them under one name.
"""

from __future__ import annotations

from .config_flags import ConfigError, flag  # re-export
from .config_model import (  # re-export
    DEFAULT_DELTA_T,
    MODEL_KEYS,
    PROFILES,
    SCENARIOS,
    resolve_model,
)
from .config_run import (  # re-export
    EXACT_N_JOBS,
    FORMATS,
    MC_N_JOBS,
    MC_ONLY,
    RUN_DEFAULTS,
    RUN_KEYS,
    SOLVERS,
    RunConfig,
    build_operators,
    parse_times,
    resolve_run,
    resolved,
)
from .config_schedule import STAGE_REFUSED, resolve_schedule  # re-export
from .config_toml import load_config, load_toml  # re-export

__all__ = ["MODEL_KEYS", "RUN_KEYS", "SCENARIOS", "PROFILES", "SOLVERS", "FORMATS",
           "ConfigError", "load_toml", "load_config", "resolve_model", "resolve_schedule",
           "resolve_run", "resolved", "RunConfig",
           "parse_times", "flag", "build_operators",
           "MC_ONLY", "RUN_DEFAULTS", "MC_N_JOBS", "EXACT_N_JOBS", "DEFAULT_DELTA_T",
           "STAGE_REFUSED"]
