"""Time-dependent protocols: piecewise-constant schedules of models (docs/model.md 14).

A :class:`Schedule` is a list of stages ``(t_k, model_k)`` with ``t_0 = 0 <
t_1 < ...``: between ``t_k`` and ``t_{k+1}`` the generator is ``model_k``'s
(from ``t_k`` on, the last stage's for ever). All stages have the same ``N``;
the initial state is the first stage's (the others' ``initial`` is ignored).
Channels are matched by name: a channel missing from a stage has rate 0
there, and a name may not change its kind or site between stages (the jump
tables keep one name, one site). Stages are numbered from 0, the index the
jump tables' ``stage`` column carries.

Which stage holds at a boundary: the state is continuous, so expectation values
of state observables are the same either side; quantities that carry the
model's parameters (``flow``, which multiplies by the couplings) take the
stage that starts there (``t_k <= t``). A jump exactly at a boundary (measure
zero) belongs to the stage that ends there, whose propagator brought the norm
down to the threshold.

Solvers see the schedule through :meth:`Schedule.dynamic_stages`: consecutive
stages whose generators are equal (models equal up to their initial state)
are merged and stages from the last output time on dropped, so a schedule
whose stages are all one model runs exactly as that model, bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from numbers import Integral, Real

import numpy as np

from .model import ChainModel

__all__ = ["Schedule", "is_schedule", "check_model_or_schedule", "stage_of", "dynamics_key"]


def dynamics_key(model: ChainModel) -> str:
    """What a model's generator depends on: its parameters without the initial state."""
    d = model.to_dict()
    d.pop("initial", None)
    return json.dumps(d, sort_keys=True)


class Schedule:
    """A piecewise-constant protocol: stages ``(t_k, model_k)``, ``t_0 = 0``.

    Parameters
    ----------
    stages : sequence of (float, ChainModel)
        Start times (strictly increasing, the first ``0``) and the model that
        holds from each on. At least one stage; equal ``N``; a channel name
        keeps its kind and site in every stage that has it.

    Raises
    ------
    ValueError
        One line naming the stage (0-based) and what is wrong with it.

    Examples
    --------
    >>> a = tsm.paper_model("pump", N=7, delta_T=0.0)
    >>> sched = tsm.Schedule([(0.0, a), (4.0, a.with_(profile=...)), (10.0, a)])
    >>> tsm.mcsolve(sched, times, 1000)
    """

    __slots__ = ("_stages", "_channels", "_fp")

    def __init__(self, stages):
        if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence):
            raise ValueError("stages must be a sequence of (t, model) pairs, got "
                             f"{type(stages).__name__}")
        if len(stages) == 0:
            raise ValueError("stages: a schedule needs at least one stage, got none")
        out = []
        for k, item in enumerate(stages):
            if (isinstance(item, (str, bytes)) or not isinstance(item, Sequence)
                    or len(item) != 2):
                raise ValueError(f"stage {k}: must be a (t, model) pair, got {item!r}")
            t, model = item
            if isinstance(t, bool) or not isinstance(t, Real) or not math.isfinite(float(t)):
                raise ValueError(f"stage {k}: t must be a finite real number, got {t!r}")
            t = float(t)
            if not isinstance(model, ChainModel):
                raise ValueError(f"stage {k}: model must be a ChainModel, got "
                                 f"{type(model).__name__}")
            if t < 0:
                raise ValueError(f"stage {k}: t = {t!r} is negative (stages start at t >= 0)")
            if k == 0 and t != 0.0:
                raise ValueError(f"stage 0: the first stage must start at t = 0, got t = {t!r}")
            if k > 0 and t <= out[-1][0]:
                raise ValueError(f"stage {k}: t = {t!r} is not after stage {k - 1}'s "
                                 f"t = {out[-1][0]!r} (start times must increase strictly)")
            if k > 0 and model.N != out[0][1].N:
                raise ValueError(f"stage {k}: N = {model.N} differs from stage 0's "
                                 f"N = {out[0][1].N} (every stage has the same sites)")
            out.append((t, model))
        self._stages = tuple(out)
        self._channels = self._union_channels()
        self._fp = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def ramp(cls, model_at: Callable[[float], ChainModel], t_start: float, t_stop: float,
             steps: int) -> Schedule:
        """A staircase approximation of the smooth protocol ``model_at(t)``.

        From ``t = 0`` to ``t_start`` the model is ``model_at(t_start)``; then
        ``steps`` equal stages cover ``[t_start, t_stop)``, each the model at its
        midpoint; from ``t_stop`` on, ``model_at(t_stop)``. The midpoint rule
        makes the error of any observable ``O(delta^2)`` in the step length
        ``delta = (t_stop - t_start) / steps`` (docs/model.md 14); the staircase is
        exact for itself.

        Parameters
        ----------
        model_at : callable
            ``t -> ChainModel``.
        t_start, t_stop : float
            ``0 <= t_start < t_stop``, finite.
        steps : int
            Number of steps, ``>= 1``.

        Raises
        ------
        ValueError
            Bad times or steps, or a ``model_at`` that raises or returns
            something other than a ``ChainModel`` (one line naming the time).
        """
        if not callable(model_at):
            raise ValueError(f"model_at must be callable (t -> ChainModel), got "
                             f"{type(model_at).__name__}")
        for name, x in (("t_start", t_start), ("t_stop", t_stop)):
            if isinstance(x, bool) or not isinstance(x, Real) or not math.isfinite(float(x)):
                raise ValueError(f"{name} must be a finite real number, got {x!r}")
        t_start, t_stop = float(t_start), float(t_stop)
        if t_start < 0:
            raise ValueError(f"t_start must be >= 0, got {t_start!r}")
        if t_stop <= t_start:
            raise ValueError(f"t_stop must be > t_start = {t_start!r}, got {t_stop!r}")
        if isinstance(steps, bool) or not isinstance(steps, Integral) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        steps = int(steps)

        def at(t: float) -> ChainModel:
            try:
                m = model_at(t)
            except Exception as exc:  # noqa: BLE001 - reported in one line
                raise ValueError(f"model_at({t!r}) raised {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
            if not isinstance(m, ChainModel):
                raise ValueError(f"model_at({t!r}) returned {type(m).__name__}, "
                                 "expected a ChainModel")
            return m

        delta = (t_stop - t_start) / steps
        stages = []
        if t_start > 0:
            stages.append((0.0, at(t_start)))
        for i in range(steps):
            t0 = t_start + i * delta
            stages.append((t0, at(t0 + 0.5 * delta)))
        stages.append((t_stop, at(t_stop)))
        return cls(stages)

    # ------------------------------------------------------------------ views
    @property
    def stages(self) -> tuple:
        """``((t_0, model_0), (t_1, model_1), ...)``."""
        return self._stages

    @property
    def times(self) -> np.ndarray:
        """Start times of the stages (a new array)."""
        return np.array([t for t, _ in self._stages])

    @property
    def models(self) -> tuple:
        return tuple(m for _, m in self._stages)

    def __len__(self) -> int:
        return len(self._stages)

    @property
    def N(self) -> int:
        return self._stages[0][1].N

    @property
    def first(self) -> ChainModel:
        """Stage 0's model (it holds the initial state)."""
        return self._stages[0][1]

    @property
    def initial(self):
        return self.first.initial

    @property
    def initial_sectors(self) -> list[int]:
        return self.first.initial_sectors

    @property
    def initial_sector(self) -> int:
        return self.first.initial_sector

    @property
    def is_mixed(self) -> bool:
        return self.first.is_mixed

    @property
    def alpha_method(self) -> str:
        return self.first.alpha_method

    @property
    def channels(self) -> tuple:
        """Every channel name of the schedule once, in order of first appearance
        (the record of the first stage that has it: its rate is that stage's)."""
        return self._channels

    @property
    def couplings(self) -> np.ndarray:
        """The largest coupling of each bond over the stages (the scale of the
        ``flow`` rows' one-event floor); the couplings at time ``t`` are
        ``model_at(t).couplings``."""
        return np.max([np.abs(m.couplings) for m in self.models], axis=0)

    def has_kind(self, kind: str) -> bool:
        return any(m.has_kind(kind) for m in self.models)

    def reachable_sectors(self) -> list[int]:
        """Magnon numbers the dynamics can visit (over every stage)."""
        secs = self.initial_sectors
        lo = 0 if self.has_kind("loss") else secs[0]
        hi = self.N if self.has_kind("pump") else secs[-1]
        return list(range(lo, hi + 1))

    def model_at(self, t: float) -> ChainModel:
        """The model whose generator holds at time ``t`` (stage ``k`` with ``t_k <= t``)."""
        return self._stages[stage_of(self.times, t, side="right")][1]

    def rates(self, t: float) -> dict:
        """``{channel name: rate}`` at time ``t`` (0 for a channel the stage lacks)."""
        m = self.model_at(t)
        own = {c.name: c.rate for c in m.channels}
        return {c.name: own.get(c.name, 0.0) for c in self._channels}

    def dynamic_stages(self, t_end: float | None = None) -> tuple:
        """The stages a solver runs: ``((t, model), ...)`` with consecutive stages of
        equal generators merged and, given ``t_end``, stages from ``t_end`` on dropped
        (they act on nothing before it). The first model is stage 0's (initial state)."""
        out = [self._stages[0]]
        for t, m in self._stages[1:]:
            if t_end is not None and t >= t_end:
                break
            if dynamics_key(m) != dynamics_key(out[-1][1]):
                out.append((t, m))
        return tuple(out)

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict:
        """JSON-serialisable record of every stage (``N`` and the floor's ``couplings``
        at the top level, as a model's)."""
        return {"N": self.N, "couplings": self.couplings.tolist(),
                "schedule": [{"t": t, "model": m.to_dict()} for t, m in self._stages]}

    @classmethod
    def from_dict(cls, d: dict) -> Schedule:
        """Rebuild from :meth:`to_dict` output (a result's metadata)."""
        if not isinstance(d, dict) or not isinstance(d.get("schedule"), list):
            raise ValueError("schedule metadata must be a dict with a 'schedule' list")
        return cls([(s["t"], ChainModel.from_dict(s["model"])) for s in d["schedule"]])

    def fingerprint(self) -> str:
        """Stable hash of the schedule (checkpoints, merging)."""
        if self._fp is None:
            blob = json.dumps(self.to_dict(), sort_keys=True).encode()
            self._fp = hashlib.sha256(blob).hexdigest()[:16]
        return self._fp

    def __eq__(self, other):
        return isinstance(other, Schedule) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(self.fingerprint())

    def __repr__(self):
        lines = [f"Schedule(N={self.N}, {len(self)} stage{'s' if len(self) != 1 else ''}:"]
        for k, (t, m) in enumerate(self._stages):
            lines.append(f"  stage {k} from t = {t:g}: {m!r}")
        return "\n".join(lines) + ")"

    # ------------------------------------------------------------------ internals
    def _union_channels(self) -> tuple:
        seen = {}
        for k, (_, m) in enumerate(self._stages):
            for ch in m.channels:
                prev = seen.get(ch.name)
                if prev is None:
                    seen[ch.name] = (k, ch)
                elif (prev[1].kind, prev[1].site) != (ch.kind, ch.site):
                    raise ValueError(
                        f"stage {k}: channel {ch.name!r} is {ch.kind} at site {ch.site + 1}, "
                        f"but {prev[1].kind} at site {prev[1].site + 1} in stage {prev[0]} "
                        "(a channel name keeps its kind and site)")
        return tuple(ch for _, ch in seen.values())


def is_schedule(obj) -> bool:
    return isinstance(obj, Schedule)


def check_model_or_schedule(model, what: str = "model"):
    """``model`` if it is a ``ChainModel`` or a ``Schedule``, else a one-line ``ValueError``."""
    if not isinstance(model, (ChainModel, Schedule)):
        raise ValueError(f"{what} must be a ChainModel or a Schedule, got {type(model).__name__}")
    return model


def stage_of(stage_t, t, side: str = "right"):
    """Stage index of time(s) ``t`` for stage start times ``stage_t``:
    ``side="right"``: the stage with ``t_k <= t`` (parameters at ``t``);
    ``side="left"``: ``t_k < t`` (the stage whose propagator reaches ``t``: jumps)."""
    idx = np.searchsorted(np.asarray(stage_t, dtype=float), t, side=side) - 1
    return np.maximum(idx, 0) if np.ndim(idx) else max(int(idx), 0)
