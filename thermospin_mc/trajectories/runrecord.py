"""One trajectory run as one record, built once from ``mcsolve``'s arguments.

A run is described by three public option records and the arguments that say
what is computed:

- :class:`~thermospin_mc.trajectories.stats.Target` (``target=``): when the run stops, and
  when a trajectory stops counting (``max_magnons``);
- :class:`~thermospin_mc.trajectories.checkpoint.Checkpointing` (``checkpoint=``): what the
  run keeps (the checkpoint file, every trajectory's rows);
- :class:`~thermospin_mc.trajectories.backends.Cluster` (``cluster=``): how the work is
  carried out (backend, workers, batch size, progress, dense sector limit).

:func:`plan_run` validates everything once and returns a :class:`RunRecord`:
the worker :class:`~thermospin_mc.trajectories.worker.Job` (what every trajectory computes),
the checkpoint identity (derived from the job and the seed), the kernel column
layout and the resolved target. Every later stage (the run loop, the backends,
the checkpoint, the result's metadata) reads this record.

:data:`KEYWORDS` maps each option's keyword (the ``mcsolve`` keyword of earlier
releases, also the command line's flag and the TOML ``[run]`` key) to its
record and field. ``mcsolve`` still takes those keywords, for one release,
with a ``DeprecationWarning`` naming the record to use (:func:`option_records`).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, replace

import numpy as np

from .. import _validate as v
from ..core import observables as OBS
from ..physics.schedule import check_model_or_schedule
from .backends import Cluster
from .batches import BLOCK
from .checkpoint import Checkpointing, identity, resolve_seed
from .layouts import StateLayout, kernel_layout, state_layout
from .sectorpack import is_doob
from .stats import Target
from .worker import Job

__all__ = ["KEYWORDS", "RECORDS", "RunRecord", "from_keywords", "option_records", "plan_run",
           "root_key"]

#: The option records, by ``mcsolve`` argument name (built in this order, which is
#: the order their fields were checked in before the records existed).
RECORDS = {"cluster": Cluster, "checkpoint": Checkpointing, "target": Target}
#: Yes/no keywords that earlier releases took as any truth value.
TRUTH_KEYWORDS = ("progress", "keep_trajectories")
#: keyword (earlier ``mcsolve`` keyword = CLI flag = TOML ``[run]`` key) ->
#: (``mcsolve`` argument of its record, field of the record).
KEYWORDS = {
    "target_sem": ("target", "sem"),
    "target_observables": ("target", "observables"),
    "relative": ("target", "relative"),
    "rel_floor": ("target", "rel_floor"),
    "max_ntraj": ("target", "max_ntraj"),
    "time_limit": ("target", "time_limit"),
    "max_magnons": ("target", "max_magnons"),
    "checkpoint": ("checkpoint", "path"),
    "resume": ("checkpoint", "resume"),
    "checkpoint_every": ("checkpoint", "every"),
    "keep_trajectories": ("checkpoint", "keep_trajectories"),
    "backend": ("cluster", "backend"),
    "client": ("cluster", "client"),
    "scheduler": ("cluster", "scheduler"),
    "batch_size": ("cluster", "batch_size"),
    "progress": ("cluster", "progress"),
    "dense_max": ("cluster", "dense_max"),
}


def from_keywords(keywords: dict) -> dict:
    """``{"target": Target, "checkpoint": Checkpointing, "cluster": Cluster}`` from
    option keywords (:data:`KEYWORDS`: the command line's and the TOML file's run
    keys); keywords of no record are refused with one line."""
    for key in keywords:
        if key not in KEYWORDS:
            raise ValueError(f"{key!r} is not an option of a run record; options: "
                             f"{', '.join(KEYWORDS)}")
    fields = _fields(keywords)
    return {name: cls(**fields[name]) for name, cls in RECORDS.items()}


def _fields(keywords: dict) -> dict[str, dict]:
    """``{record: {field: value}}`` of option keywords (all in :data:`KEYWORDS`)."""
    fields: dict[str, dict] = {name: {} for name in RECORDS}
    for key, value in keywords.items():
        record, field = KEYWORDS[key]
        fields[record][field] = value
    return fields


def option_records(target, checkpoint, cluster, n_jobs: int, legacy: dict,
                   caller: str = "mcsolve", stacklevel: int = 4,
                   warn: bool = True) -> tuple[Target, Checkpointing, Cluster]:
    """The run's ``(Target, Checkpointing, Cluster)``.

    ``target``, ``checkpoint`` and ``cluster`` are records or ``None`` (defaults);
    ``checkpoint`` may still be a path (earlier releases). ``legacy`` holds the
    earlier keywords (:data:`KEYWORDS`): each is put in its record's field, with one
    ``DeprecationWarning`` naming the records to use. A keyword given beside its
    record, or an unknown keyword, is refused with one line. ``n_jobs`` fills the
    cluster's when that is left at 1; two different worker counts are refused.
    ``stacklevel`` points the warning at the user's call (``mcsolve`` -> ``plan_run``
    -> here); ``warn=False`` for the command line, whose run keys are these keywords.
    """
    unknown = [k for k in legacy if k not in KEYWORDS]
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    given = {"target": target, "checkpoint": checkpoint, "cluster": cluster}
    if checkpoint is not None and not isinstance(checkpoint, Checkpointing):
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise ValueError(f"checkpoint must be a Checkpointing record (or a file path), "
                             f"got {type(checkpoint).__name__}")
        legacy = {"checkpoint": checkpoint, **legacy}
        given["checkpoint"] = None
    for key in legacy:
        record, field = KEYWORDS[key]
        if given[record] is not None:
            raise ValueError(f"give {key} inside {record}=tsm.{RECORDS[record].__name__}"
                             f"(..., {field}=...), not beside it")
    fields = _fields({k: bool(x) if k in TRUTH_KEYWORDS and x is not None else x
                      for k, x in legacy.items()})
    if legacy and warn:
        warnings.warn(_deprecation(caller, fields), DeprecationWarning, stacklevel=stacklevel)
    built = {name: given[name] if given[name] is not None else cls(**fields[name])
             for name, cls in RECORDS.items()}
    for name, cls in RECORDS.items():
        if not isinstance(built[name], cls):
            raise ValueError(f"{name} must be a tsm.{cls.__name__}(...) record, got "
                             f"{type(built[name]).__name__}")
    clus = built["cluster"]
    if n_jobs != clus.n_jobs:
        if clus.n_jobs != 1 and n_jobs != 1:
            raise ValueError(f"n_jobs={n_jobs} and cluster=Cluster(n_jobs={clus.n_jobs}) "
                             "disagree: give the worker count once")
        if clus.n_jobs == 1:
            clus = clus.with_n_jobs(n_jobs)
    return built["target"], built["checkpoint"], clus


def _deprecation(caller: str, fields: dict) -> str:
    parts = []
    for record, values in fields.items():
        if values:
            keys = [(k, f) for k, (r, f) in KEYWORDS.items() if r == record and f in values]
            inner = ", ".join(f"{f}=..." for _, f in keys)
            old = ", ".join(k for k, _ in keys)
            parts.append(f"{old} -> {record}=tsm.{RECORDS[record].__name__}({inner})")
    return (f"{caller}() keywords outside the option records are deprecated and will be "
            f"removed in the next release: " + "; ".join(parts))


def root_key(seed) -> tuple[np.ndarray, list]:
    """``(run key of 4 uint64, entropy)`` of a root seed (``SeedSequence``)."""
    ss = np.random.SeedSequence(seed)
    return ss.generate_state(4, dtype=np.uint64), ss.entropy


@dataclass(frozen=True)
class RunRecord:
    """One validated trajectory run, derived once (see the module docstring).

    ``job`` is what every worker computes (model, times, run key, trajectory cap,
    observables, options); ``identity`` what its checkpoint belongs to; ``cols``
    and ``ncomp`` the kernel column layout; ``layout`` the state layout
    (``states=True``); ``target_names`` the observables the target applies to.
    """

    job: Job
    entropy: object
    ntraj: int
    target: Target
    checkpoint: Checkpointing
    cluster: Cluster
    target_names: tuple
    cols: dict
    ncomp: int
    layout: StateLayout | None
    identity: dict

    def per_batch(self, workers: int) -> int:
        """Statistics blocks per task: ``cluster.batch_size``, else sized on ``ntraj``
        (where a target is first tested) and the workers (one with ``states``)."""
        if self.cluster.batch_size is not None:
            return math.ceil(self.cluster.batch_size / BLOCK)
        if self.job.states:
            return 1
        return max(1, min(64, math.ceil(self.ntraj / BLOCK) // max(1, 4 * workers)))


def plan_run(model, times, ntraj, seed, n_jobs, *, observables, pairs, record_jumps, states,
             target, checkpoint, cluster, legacy: dict, warn: bool = True) -> RunRecord:
    """Validate ``mcsolve``'s arguments once and derive the :class:`RunRecord`.

    The checks run in the order they always had: model, times, ``ntraj``,
    ``n_jobs``, observables and pairs, ``states``, ``max_magnons``, then the
    option records (cluster, checkpoint, target), so that an input with several
    faults gets the same message as before the records.
    """
    if not is_doob(model):
        model = check_model_or_schedule(model)
    times = v.times(times)
    ntraj = v.integer("ntraj", ntraj, lo=1)
    n_jobs = v.n_jobs(n_jobs)
    N = model.N
    plain, ops = OBS.split_operators(observables, N)
    names = () if plain == () else OBS.resolve(plain, pairs, N, allowed=OBS.TRAJECTORY,
                                               solver="mcsolve")[0]
    if plain == () and pairs is not None:
        OBS.check_pairs(pairs, N)
    pairs = OBS.check_pairs(pairs, N) if any(o in OBS.PAIR_NAMES for o in names) else None
    if not isinstance(states, (bool, np.bool_)):
        raise ValueError(f"states must be True or False, got {states!r}")
    if legacy.get("max_magnons") is not None:
        v.integer("max_magnons", legacy["max_magnons"], lo=model.initial_sector, hi=N)
    target, ckpt, clus = option_records(target, checkpoint, cluster, n_jobs, legacy,
                                        warn=warn)
    max_magnons = N if target.max_magnons is None else v.integer(
        "max_magnons", target.max_magnons, lo=model.initial_sector, hi=N)
    target = replace(target, max_magnons=max_magnons)
    key, entropy = root_key(resolve_seed(seed, ckpt.path))
    npair = 0 if pairs is None else len(pairs)
    _, cols, ncomp = kernel_layout(N, names, npair, len(model.channels), ops, bool(states))
    target_names, cap = target.resolve(names, ntraj, ops)
    if target.sem is not None and not np.any(times > 0):
        raise ValueError("target_sem needs at least one output time > 0, got times "
                         f"{times.tolist()}")
    job = Job(model, times, key, cap, names, bool(record_jumps), ckpt.keep_trajectories,
              max_magnons, clus.dense_max, pairs, operators=ops, states=bool(states))
    return RunRecord(job=job, entropy=entropy, ntraj=ntraj, target=target, checkpoint=ckpt,
                     cluster=clus, target_names=target_names, cols=cols, ncomp=ncomp,
                     layout=state_layout(model, max_magnons) if states else None,
                     identity=identity(job, entropy))
