"""A time-dependent protocol (docs/model.md 14): ``[[stage]]`` tables, each with
its start time ``t > 0`` and any ``[model]`` keys, which override ``[model]``
from ``t`` on (:func:`resolve_schedule`)."""

from __future__ import annotations

import numpy as np

from ..physics.model import ChainModel
from ..physics.schedule import Schedule
from .config_flags import ConfigError
from .config_model import resolve_model

__all__ = ["STAGE_REFUSED", "resolve_schedule"]

#: [model] keys a [[stage]] table refuses: the initial state is stage 0's ([model]).
STAGE_REFUSED = ("initial", "initial_p", "initial_mixture")


def resolve_schedule(cfg: dict, stages) -> ChainModel | Schedule:
    """The model of ``[model]`` (``cfg``), or with ``[[stage]]`` tables the protocol
    (:class:`~thermospin_mc.physics.schedule.Schedule`, docs/model.md 14).

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
