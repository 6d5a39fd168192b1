"""Reading a TOML run file: the ``[model]`` and ``[run]`` tables and the
``[[stage]]`` tables of a protocol, every other key refused with one line."""

from __future__ import annotations

import tomllib
from pathlib import Path

from .config_flags import ConfigError
from .config_model import MODEL_KEYS
from .config_run import RUN_KEYS

__all__ = ["load_toml", "load_config"]


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
