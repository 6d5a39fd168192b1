"""``mcsolve``: the one driver of trajectory runs.

Flow of a run (see ``docs/architecture.md``)::

    mcsolve(keywords) -> options: Cluster, Checkpointing, Target (validated records)
      -> Job (model, times, run key, ...) -> backend.map(block-id batches)
      -> pack.run_batch on the workers (kernels.run_block per block)
      -> stats.Reducer (in block order; Target tested after every block;
         checkpoint.dump every ``checkpoint.every`` seconds)
      -> Result (results.py: table, per-row accumulators, metadata)

Reproducibility: trajectory ``k`` always draws from the random stream derived
from ``(seed, k)``; trajectories are folded into Welford accumulators in
fixed blocks of ``BLOCK`` consecutive indices, and blocks are merged (Chan's
formula) strictly in block order. Neither ``n_jobs``, nor ``batch_size``, nor
the backend changes a single bit of the result. The same holds for the
trajectory-averaged states of ``states=True`` (per-block sums added in block
order), whose memory is estimated and checked against a budget before a run
(:func:`states_memory`, :func:`blockstate.states_budget`).

Length: about 600 lines, above the ~500 guideline: ``mcsolve``'s docstring is
the reference of every run option (a third of the module), and the run loop,
the states' memory check and the result assembly share the run's column
layout and option records.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time

import numpy as np
import pandas as pd

from .. import _validate as v
from ..core import observables as OBS
from ..core.blockstate import BlockState, states_budget
from ..core.errorbars import operator_floors, target_value
from ..core.results import Result, expect_table, metadata, table_values
from ..io import check_output_file
from ..physics.model import ChainModel
from ..physics.schedule import check_model_or_schedule, is_schedule, stage_of
from ..signals import RunTerminated, StopWaiting, deferred_signals
from .backends import BACKENDS, Cluster
from .checkpoint import (
    Checkpointing,
    CheckpointLock,
    dump,
    identity,
    resolve_seed,
    resume,
    write_checkpoint,
)
from .pack import (
    BLOCK,
    DENSE_MAX,
    StateLayout,
    is_doob,
    kernel_layout,
    state_blocks,
    state_layout,
    warm_kernels,
)
from .progress import Progress, want_progress
from .stats import Reducer, Target
from .worker import Job

__all__ = ["mcsolve", "Cluster", "Checkpointing", "Target", "BLOCK", "RunTerminated",
           "states_memory"]

def states_memory(layout: StateLayout, nt: int, backend: str, workers: int,
                  per: int) -> tuple[int, int]:
    """``(bytes, copies)``: the memory estimate of ``mcsolve(states=True)``.

    The kernels accumulate the states as packed upper triangles:
    ``sum_m C(N, m) (C(N, m) + 1) / 2`` complex numbers per output time over the
    sectors the run can visit (:class:`pack.StateLayout`), one copy. Copies
    held at once: the reducer's sum and one per statistics block in flight or
    waiting to be merged in block order (``per`` blocks per batch; one batch
    at a time on the serial backend, otherwise up to ``2 x workers`` batches
    in flight, Dask at least 4, and as many finished early); besides, the
    result's full blocks, ``sum_m C(N, m)^2`` complex numbers per output time.
    ``copies`` counts the packed copies.
    """
    if backend == "serial":
        blocks = per
    else:
        window = max(4, 2 * workers) if backend == "dask" else 2 * workers
        blocks = 2 * window * per
    copies = 1 + blocks
    return layout.nbytes(nt) * copies + layout.result_nbytes(nt), copies


def _check_states_memory(layout: StateLayout, nt: int, backend: str, workers: int,
                         per: int) -> None:
    """Refuse (one line) a ``states=True`` run whose estimate exceeds the one budget of
    states, :func:`blockstate.states_budget` (``min(2 GiB, RAM / 4)``)."""
    need, copies = states_memory(layout, nt, backend, workers, per)
    budget = states_budget()
    if need > budget:
        gib = 2.0**30
        raise ValueError(
            f"states=True of mcsolve needs about {need / gib:.3g} GiB ({nt} times x "
            f"({copies} packed copies of {layout.stride // 2} complex numbers, the upper "
            f"triangles of sectors {list(layout.sectors)}, with {workers} {backend} "
            f"worker(s), and the result's full blocks)), above the budget of "
            f"{budget / gib:.3g} GiB (min(2 GiB, RAM/4)); use fewer output times, a smaller "
            "max_magnons, fewer n_jobs or a smaller batch_size")


def mcsolve(model: ChainModel, times, ntraj: int = 1000, seed=None, n_jobs: int = 1, *,
            batch_size: int | None = None, observables=None, record_jumps: bool = False,
            keep_trajectories: bool = False, max_magnons: int | None = None,
            progress: bool | None = None, dense_max: int = DENSE_MAX,
            backend: str | None = None, client=None, scheduler: str | None = None,
            checkpoint=None, resume: bool | None = None, checkpoint_every: float = 60.0,
            target_sem: float | None = None, target_observables=None, relative: bool = False,
            rel_floor: float = 0.25, max_ntraj: int | None = None,
            time_limit: float | None = None, pairs=None, states: bool = False) -> Result:
    """Quantum-jump (Monte Carlo wave function) unravelling of the Lindblad equation.

    Trajectory ``k`` always uses the random stream of ``(seed, k)`` and
    statistics are merged in fixed blocks of ``BLOCK`` trajectories in index
    order: the result is bit-identical for any ``n_jobs``, ``batch_size`` and
    backend, and a resumed run equals an uninterrupted one.

    Parameters
    ----------
    model : ChainModel, Schedule or DoobProcess
        The initial pure state is prepared at ``t = 0``. A :func:`~thermospin_mc.doob`
        process runs its transformed unravelling (docs/model.md 15; dense sector
        generators and jump matrices, the jump tables in the original channel
        names); its initial state is ``l^(1/2) psi0``, normalised. A
        :class:`~thermospin_mc.schedule.Schedule` runs its stages in turn
        (docs/model.md 14): the propagation is exact inside a stage, a stage boundary
        is probed like an output time, and the unnormalised state and the jump
        threshold run on across it (one random stream per trajectory); every
        option works. The jump table then has a ``stage`` column (0-based, the
        stage whose propagator reached the jump), ``flow`` rows take the
        couplings of the stage holding at each output time, and the metadata's
        ``model`` records every stage (``Schedule.to_dict``).
    times : array_like
        Non-decreasing output times ``>= 0``. The initial state is the state
        at ``t = 0`` whatever ``times[0]`` is (QuTiP takes it at ``times[0]``):
        ``times = [5, 10]`` reports the state evolved from ``t = 0`` to 5 and
        10 (docs/model.md section 6, "Time origin").
    ntraj : int
        Number of trajectories (``>= 1``). With ``target_sem`` it is the
        minimum number run before the target is first tested.
    seed : int, sequence of int or None
        Root seed (``numpy.random.SeedSequence`` entropy); ``None`` draws fresh
        entropy, which is stored in ``result.metadata["seed"]`` (or, when an
        existing checkpoint is resumed, continues the checkpoint's seed).
    n_jobs : int
        Parallel workers (threads of this process by default, or loky worker
        processes); ``-1`` uses every core, ``1`` runs here.
        With ``backend="dask"`` and neither ``client`` nor ``scheduler``, the
        number of workers of a temporary local Dask cluster.
    batch_size : int, optional
        Trajectories per parallel task (rounded up to a multiple of ``BLOCK``).
        Does not change the result.
    observables : sequence of str and Operator, optional
        Subset of ``j, j_bond, flow, m, n, nn, pm_re, pm_im, count`` (``pm`` is
        both parts of ``<s+_i s-_k>``); default ``j, j_bond, flow, m, n``, plus
        ``nn, pm_re, pm_im`` when ``pairs`` are given. ``count`` is the mean
        number of jumps of each channel up to ``t`` (table observables
        ``count:<channel name>``). See :mod:`thermospin_mc.observables`.
        Entries may also be :class:`~thermospin_mc.operators.Operator` objects
        of offset 0 (any other offset is refused with one line): the estimate
        of ``<O>`` is the mean over trajectories of ``<psi|O|psi> /
        <psi|psi>`` with its standard error (docs/model.md section 13), evaluated
        inside the kernels from each sector's matrix (built once per run,
        sparse). Rows come after the built-in ones, site 0: observable
        ``op.name`` for a Hermitian operator, ``op.name + "_re"`` and
        ``op.name + "_im"`` otherwise. Given operators only, only their rows
        are computed. ``target_observables`` names an operator by ``op.name``
        (a non-Hermitian one also by one part, ``op.name + "_re"`` or ``"_im"``).
    record_jumps : bool
        Keep every jump: ``result.jumps`` has ``traj, t, channel, site, m_before``.
    keep_trajectories : bool
        Keep each trajectory's rows in ``result.trajectories`` (memory grows as ntraj).
    max_magnons : int, optional
        Cap on the magnon number. A trajectory whose next jump would exceed it
        stops contributing from that time on; the discarded fraction is reported
        in ``metadata["truncated_fraction"]`` and the ``ntraj`` column.
    progress : bool, optional
        Progress reports on stderr: a bar when stderr is a terminal, else a
        one-line record at least every ``progress.PROGRESS_EVERY`` seconds
        (10) and one at the end: trajectories done, total (or, with
        ``target_sem``, the achieved and target sem), traj/s, elapsed
        seconds and ETA. Default (``None``): on for runs of at least 2000
        trajectories (``ntraj``).
    dense_max : int
        Largest sector diagonalised densely (default ``pack.DENSE_MAX`` = 100);
        larger sectors use the sparse Chebyshev propagator.
    backend : {"serial", "threads", "loky", "dask"}, optional
        Where batches run: this process, ``n_jobs`` threads of this process
        (the kernels release the GIL; no start-up cost), local loky worker
        processes, or a Dask distributed cluster. Default: ``"serial"`` for
        ``n_jobs=1``, ``"threads"`` otherwise, ``"dask"`` when ``client`` or
        ``scheduler`` is given.
    client : dask.distributed.Client, optional
        Run on this Dask client's cluster (it is left open).
    scheduler : str, optional
        Address of a running Dask scheduler, e.g. ``"tcp://10.0.0.1:8786"``.
        Without ``client``/``scheduler``, ``backend="dask"`` starts a local
        cluster of ``n_jobs`` single-threaded worker processes for this run.
        A lost worker only costs a re-run of its batches.
    checkpoint : str or path, optional
        Checkpoint file (``.npz``). Merged statistics and finished blocks are
        written to it atomically every ``checkpoint_every`` seconds, at the end,
        and when the run is stopped (SIGINT, SIGTERM or an error). If the file
        exists, the run resumes from it (see ``resume``); a checkpoint of a
        different model, seed, output times, observables, run options or code
        version is refused with a ``ValueError`` and left untouched. A
        finished checkpoint extends to any larger ``ntraj`` (a short last
        block is run again in full), bit-identical to a plain run of that
        ``ntraj``. Resuming is announced on stderr at the start. The file
        ``<checkpoint>.lock`` guards against two runs on one checkpoint; it
        is removed on every exit, and one left by a killed process is taken
        over (with a message).
    resume : bool, optional
        ``None`` (default): resume if the checkpoint exists, else start afresh.
        ``True``: the checkpoint must exist. ``False``: refuse an existing file.
    checkpoint_every : float
        Seconds between checkpoint writes (``>= 0``; ``0`` writes after every batch).
    target_sem : float, optional
        Accuracy target: keep adding blocks (at least ``ntraj`` trajectories)
        until the largest standard error of ``target_observables`` over all
        rows with ``t > 0`` is ``<= target_sem`` (absolute), or every row's
        standard error is ``<= target_sem * |mean|`` (``relative=True``; rows
        below the ``rel_floor`` are left out), or ``max_ntraj`` /
        ``time_limit`` is hit. Standard errors are the effective ones of
        :func:`thermospin_mc.results.effective_sem` (never below the
        one-event floor ``delta / n``, so rows where every trajectory agrees
        do not count as converged after a handful of trajectories). The rule is tested after every
        block, so the result equals a plain run with the final ``ntraj``.
        ``metadata["stopped_by"]`` says what stopped the run
        (``"target_sem"``, ``"max_ntraj"``, ``"time_limit"``, or ``"ntraj"``
        for a plain run that completed).
    target_observables : sequence of str, optional
        Observables the target applies to (default: every computed one except
        ``flow``, the operators included); an operator by its ``op.name``
        (both parts of a non-Hermitian one) or one part of a non-Hermitian
        one by ``op.name + "_re"`` or ``op.name + "_im"``. An operator's one-event floor is
        ``2 * op.norm_bound`` (:func:`errorbars.operator_floors`).
    relative : bool
        Whether ``target_sem`` is relative to ``|mean|``.
    rel_floor : float
        With ``relative=True``: rows whose ``|mean|`` is below ``rel_floor``
        times the largest ``|mean|`` of the same observable (over its sites and
        the times ``t > 0``) are ignored by the target, since a relative error
        of a value crossing zero never converges. In ``[0, 1)``; default 0.25.
    max_ntraj : int, optional
        Upper limit of trajectories of a ``target_sem`` run (``>= ntraj``;
        default ``10**8``).
    time_limit : float, optional
        Wall-clock seconds (``> 0``) after which this call stops at the last
        finished block (the checkpoint, if any, lets a later call continue).
    pairs : sequence of (i, k), optional
        1-based site pairs of the two-point observables ``nn`` and ``pm``
        (table rows carry ``site = i``, ``site2 = k``).
    states : bool
        Also estimate the density matrix: ``result.states[k]`` is the
        trajectory-averaged block density matrix at ``times[k]``, a
        :class:`~thermospin_mc.blockstate.BlockState` with
        ``rho_bar = (1/n) sum_traj |psi><psi| / <psi|psi>`` in every sector
        the run can visit (docs/model.md section 13; it converges to the exact
        ``rho(t)`` as ``1/sqrt(n)``). Accumulated inside the kernels per
        statistics block and merged in block order, so it is bit-identical
        for any ``n_jobs``, ``batch_size``, backend and resume (checkpoints
        hold it). Under ``max_magnons``, ``n`` is the run's ``ntraj`` and a
        truncated trajectory stops contributing from the output time its row
        stops (as in the table): the trace of ``states[k]`` is then the
        fraction of trajectories still counted at ``times[k]``, the row's
        ``ntraj`` divided by ``metadata["ntraj"]``. Memory: the kernels sum
        the upper triangles, ``sum over those sectors of C(N, m) (C(N, m) +
        1) / 2`` complex numbers per output time, and the run holds ``1 + b``
        such copies, ``b`` the statistics blocks in flight or waiting
        (serial: one batch of blocks; otherwise ``4 x n_jobs`` batches, Dask
        at least 8; one block per batch by default), besides the result's
        full blocks (``C(N, m)^2`` each). A run whose estimate
        (:func:`states_memory`) exceeds
        ``min(2 GiB, RAM / 4)`` (``blockstate.states_budget``, the budget of
        every solver's states) is refused with one line before it starts.

    Returns
    -------
    Result
        ``expect`` rows carry the mean, its standard error over trajectories
        and the number of contributing trajectories; ``states`` the
        trajectory-averaged density matrices (``states=True``; else
        ``None``); ``metadata["operators"]`` the records of the operators
        (``Operator.to_dict``). Timing metadata:
        ``compile_s`` (kernel compile or numba-cache load in this process,
        measured on a tiny problem before the clock starts; 0 once loaded;
        loky and Dask workers load theirs inside the run), ``run_s`` (this
        call's wall time), ``elapsed_s`` (run time summed over the calls
        that built a checkpoint, compile excluded) and ``traj_per_s``
        (trajectories this call ran / ``run_s``).

    Raises
    ------
    ValueError
        Bad arguments (the message names the field, its value and the allowed
        range), a corrupted or mismatched checkpoint.
    KeyboardInterrupt
        On SIGINT (Ctrl-C), raised once the current batch finished and the
        final checkpoint of every merged block is on disk (fsync'ed; a second
        signal stops waiting for worker threads or processes, never the
        write). Its ``checkpoint``, ``written``, ``ntraj``, ``total`` and
        ``error`` tell what was saved (:func:`signals.stop_exception`).
    RunTerminated
        On SIGTERM (SLURM, Kubernetes, ``timeout``): the same stop, then this
        ``SystemExit(143)``: uncaught, the script exits quietly with status 143;
        ``except Exception`` does not swallow it. Signals are caught in the
        main thread, when their handler is Python's default; the first decides.
    """
    if not is_doob(model):
        model = check_model_or_schedule(model)
    times = v.times(times)
    ntraj = v.integer("ntraj", ntraj, lo=1)
    n_jobs = v.n_jobs(n_jobs)
    N = model.N
    plain, ops = OBS.split_operators(observables, N)
    names = () if plain == () else _check_names(plain, pairs, N)
    if plain == () and pairs is not None:
        OBS.check_pairs(pairs, N)
    pairs = OBS.check_pairs(pairs, N) if any(o in OBS.PAIR_NAMES for o in names) else None
    if not isinstance(states, (bool, np.bool_)):
        raise ValueError(f"states must be True or False, got {states!r}")
    max_magnons = N if max_magnons is None else v.integer("max_magnons", max_magnons,
                                                          lo=model.initial_sector, hi=N)
    dense_max = v.integer("dense_max", dense_max, lo=1)
    if batch_size is not None:
        batch_size = v.integer("batch_size", batch_size, lo=1)
    cluster = Cluster(backend=backend, n_jobs=n_jobs, client=client, scheduler=scheduler)
    ckpt = Checkpointing(path=checkpoint, resume=resume, every=checkpoint_every)
    target = Target(sem=target_sem, observables=target_observables, relative=relative,
                    rel_floor=rel_floor, max_ntraj=max_ntraj, time_limit=time_limit)
    key, entropy = _root_key(resolve_seed(seed, ckpt.path))
    return execute(model, times, names=names, key=key, entropy=entropy, ntraj=ntraj,
                   batch_size=batch_size, record_jumps=record_jumps, keep=keep_trajectories,
                   max_magnons=max_magnons, dense_max=dense_max, progress=progress,
                   cluster=cluster, checkpointing=ckpt, target=target, pairs=pairs,
                   operators=ops, states=bool(states))


def _root_key(seed) -> tuple[np.ndarray, list]:
    ss = np.random.SeedSequence(seed)
    return ss.generate_state(4, dtype=np.uint64), ss.entropy


def _check_names(observables, pairs=None, N: int = 2) -> tuple[str, ...]:
    """Observables a trajectory run can estimate (``norm`` is 1 on every trajectory),
    by the one resolver :func:`thermospin_mc.observables.resolve`."""
    return OBS.resolve(observables, pairs, N, allowed=OBS.TRAJECTORY, solver="mcsolve")[0]


def _consume(results, red: Reducer, reason, target: Target, backend: str, save, every: float,
             sig, bar, start: float, current_sem=None) -> str | None:
    """Feed finished batches to the reducer until a stop reason appears.

    Checkpoints every ``every`` seconds. After SIGINT or SIGTERM (recorded by
    ``sig``, a :class:`signals.Deferral`) it stops at the next finished batch;
    a second signal stops the wait at once where this process only waits for
    workers (threads, loky, Dask). On any exception it writes a last checkpoint
    from a consistent state (signals cannot abort the write) and re-raises; after
    a signal, or on a ``KeyboardInterrupt``, it raises ``sig.stopped()`` instead.
    """
    stopped_by = None
    last_save = start
    results = iter(results)
    try:
        while True:
            if sig.signum is not None:
                raise StopWaiting
            with sig.waiting(backend in ("threads", "loky", "dask")):
                item = next(results, results)
            if item is results:
                raise RuntimeError(f"the {backend} backend ended after {red.ntraj} "
                                   f"trajectories without delivering block {red.next_block}")
            if item is not None:
                red.offer(*item)
                while stopped_by is None and red.next_block in red.pending:
                    nb = red.merge_next()
                    stopped_by = reason()
                    if bar is not None:
                        bar.update(nb, None if current_sem is None else current_sem())
            if stopped_by is not None:
                return stopped_by
            now = time.monotonic()
            if (target.time_limit is not None and red.ntraj > 0
                    and now - start >= target.time_limit):
                return "time_limit"
            if save is not None and item is not None and now - last_save >= every:
                save()
                last_save = time.monotonic()
    except BaseException as exc:
        sig.abortable = False  # nothing may abort the write below
        note = {"ntraj": red.ntraj, "total": red.cap}
        if save is not None and not red.busy:
            try:
                note.update(checkpoint=save(), written=True)
            except Exception as err:  # noqa: BLE001 - reported with the stop, or lost to exc
                note["error"] = f"{type(err).__name__}: {err}"
        if sig.signum is not None or isinstance(exc, KeyboardInterrupt):
            raise sig.stopped(**note) from (None if isinstance(exc, StopWaiting) else exc)
        raise


def execute(model: ChainModel, times: np.ndarray, *, names: tuple, key: np.ndarray, entropy,
            ntraj: int, batch_size: int | None, record_jumps: bool, keep: bool,
            max_magnons: int, dense_max: int, progress, cluster: Cluster,
            checkpointing: Checkpointing, target: Target, pairs=None, operators=(),
            states: bool = False) -> Result:
    """Run (or resume) an ensemble and assemble its ``Result`` (see :func:`mcsolve`)."""
    npair = 0 if pairs is None else len(pairs)
    ops = tuple(operators)
    _, cols, ncomp = kernel_layout(model.N, names, npair, len(model.channels), ops, states)
    target_names, cap = target.resolve(names, ntraj, ops)
    goal, path = target.sem, checkpointing.path
    if goal is not None and not np.any(times > 0):
        raise ValueError("target_sem needs at least one output time > 0, got times "
                         f"{times.tolist()}")
    layout = state_layout(model, max_magnons) if states else None
    if batch_size is None:  # sized on ntraj, where a target is first tested
        per = (1 if states else
               max(1, min(64, math.ceil(ntraj / BLOCK) // max(1, 4 * cluster.n_jobs))))
    else:
        per = math.ceil(batch_size / BLOCK)
    if states:
        _check_states_memory(layout, times.size, cluster.backend, cluster.n_jobs, per)
    ident = identity(model, times, names, entropy, max_magnons, dense_max, record_jumps, keep,
                     pairs, operators=ops, states=states)
    red = Reducer(times.size, ncomp, cap, record_jumps, keep,
                  state_size=times.size * layout.stride if states else 0)
    achieved = {"sem": math.inf}
    floors = operator_floors(ops) if ops else None

    def sem_now() -> float:
        acc = red.acc
        return target_value(acc.cnt, acc.mean, acc.sem(), cols, target_names, times,
                            model.couplings, target.relative, target.rel_floor, extra=floors)

    def reason():
        if goal is not None:
            achieved["sem"] = sem_now()
            if red.ntraj >= ntraj and achieved["sem"] <= goal:
                return "target_sem"
        if red.next_block >= red.nblocks:
            return "max_ntraj" if goal is not None else "ntraj"
        return None

    job = Job(model, times, key, cap, names, bool(record_jumps), bool(keep), max_magnons,
              dense_max, pairs, operators=ops, states=bool(states))
    runner = BACKENDS[cluster.backend](cluster, job)
    elapsed_before = 0.0
    with contextlib.ExitStack() as stack:
        save = None
        if path is not None:
            check_output_file(path)  # directory created and writable, else one clear line
            stack.enter_context(CheckpointLock(path))
            elapsed_before = resume(path, checkpointing.resume, ident, red)

            def save():
                state, arrays = dump(red, elapsed_before + time.monotonic() - start)
                return write_checkpoint(path, ident, state, arrays)

        resumed, first = red.restored, red.ntraj
        stopped_by = reason()  # a finished checkpoint: nothing to run, nothing to write
        if resumed:
            more = ("nothing left to run" if stopped_by is not None
                    else f"running on to {'ntraj ' + str(cap) if goal is None else 'target'}")
            if first < resumed:
                more = (f"its short last block of {resumed - first} is run again in full; "
                        + more)
            print(f"thermospin_mc: resuming from {resumed} trajectories (checkpoint "
                  f"{str(path)!r}); {more}", file=sys.stderr, flush=True)
        compile_s = warm_kernels() if stopped_by is None and runner.warm_here else 0.0
        start = time.monotonic()
        if stopped_by is None:
            stack.enter_context(runner)  # before the progress thread (see backends.Dask)
            bar = None
            if want_progress(progress, cap if goal is None else ntraj):
                bar = Progress(red, start, first, cap, goal, target.relative, ntraj)
                stack.callback(bar.close)
            workers = runner.workers
            if batch_size is None and not states:  # sized on ntraj, where a target is tested
                per = max(1, min(64, math.ceil(ntraj / BLOCK) // max(1, 4 * workers)))
            if states and workers > cluster.n_jobs:  # a Dask cluster larger than n_jobs
                _check_states_memory(layout, times.size, cluster.backend, workers, per)
            results = runner.map(red.todo(per))
            sig = stack.enter_context(deferred_signals())
            with contextlib.closing(results):
                stopped_by = _consume(results, red, reason, target, cluster.backend, save,
                                      checkpointing.every, sig, bar, start,
                                      lambda: achieved["sem"])
            written = save() if save is not None else None
            if sig.signum is not None:  # a signal during the last merge or the final write
                raise sig.stopped(checkpoint=written, written=written is not None,
                                  ntraj=red.ntraj, total=red.cap)
    run_s = time.monotonic() - start
    extra = {"backend": cluster.backend, "stopped_by": stopped_by, "max_magnons": max_magnons,
             "model_fingerprint": ident["model_fingerprint"],
             "checkpoint": None if path is None else str(path), "resumed_ntraj": resumed,
             "compile_s": compile_s, "run_s": run_s,
             "traj_per_s": (red.ntraj - first) / run_s if run_s > 0 else 0.0}
    if goal is not None:
        extra.update(target_sem=goal, relative=target.relative, rel_floor=target.rel_floor,
                     target_observables=list(target_names), max_ntraj=cap,
                     achieved_sem=sem_now())
    if target.time_limit is not None:
        extra["time_limit"] = target.time_limit
    return _assemble(model, times, names, cols, red, entropy, elapsed_before + run_s,
                     runner.workers, record_jumps, extra, pairs=pairs, operators=ops,
                     layout=layout)


def _columns(name_cols: dict, names, ops, values: np.ndarray, half_a) -> dict:
    """``{table observable: (nt, ncomp) values}`` of the computed observables and the
    operators' rows from ``values`` ``(nt, kernel columns)`` (``flow``: ``half_a``
    times its ``j_bond`` columns; ``half_a`` squared for second moments is the
    caller's)."""
    out = {}
    for name in names:
        mu = values[:, name_cols[OBS.source(name)]]
        out[name] = mu * half_a if name == "flow" else mu
    for op in ops:
        sl = name_cols[op.name]
        for i, row in enumerate(OBS.operator_rows(op)):
            out[row] = values[:, sl.start + i:sl.start + i + 1]
    return out


def _assemble(model, times, names, cols, red: Reducer, entropy, elapsed, n_jobs,
              record_jumps, extra: dict, pairs=None, operators=(),
              layout: StateLayout | None = None) -> Result:
    """The run's :class:`Result`: table, per-row ``m2``, jumps, kept rows, states, metadata."""
    acc, ntraj = red.acc, red.ntraj
    sem = acc.sem()
    half_a = OBS.flow_factors(model, times)
    ops = tuple(operators)
    means = _columns(cols, names, ops, acc.mean, half_a)
    sems = _columns(cols, names, ops, sem, half_a)
    m2s = _columns(cols, names, ops, acc.m2, half_a * half_a)
    for name, mu in means.items():  # no trajectory left (max_magnons)
        means[name] = np.where(acc.cnt[:, None] > 0, mu, np.nan)
    df = expect_table(times, model.N, means, sems, ntraj=ntraj, pairs=pairs,
                      channels=model.channels, operators=ops)
    # per-row count of contributing trajectories (differs only under max_magnons)
    # (expect_table lays rows out as one block of all times per component, so the
    # counts repeat by position; times may repeat, so never match them by label)
    if np.any(acc.cnt != ntraj):
        df["ntraj"] = np.tile(acc.cnt, len(df) // times.size).astype(np.int64)
    meta = metadata(
        "mcsolve", model, seed=entropy if isinstance(entropy, int) else list(entropy),
        ntraj=ntraj, block=BLOCK,
        sector_modes={str(k): val for k, val in sorted(red.modes.items())},
        truncated_fraction=red.ntrunc / ntraj, elapsed_s=elapsed, n_jobs=n_jobs,
        t_end=float(times[-1]), n_times=int(times.size))
    if pairs is not None and len(pairs):
        meta["pairs"] = np.asarray(pairs).tolist()
    if ops:
        meta["operators"] = [op.to_dict() for op in ops]
    if layout is not None:
        meta["state_sectors"] = list(layout.sectors)
    meta.update(extra)
    jt = None
    if record_jumps:
        arr = np.concatenate(red.jumps) if red.jumps else np.zeros((0, 4))
        chans = model.channels
        names_ = np.array([c.name for c in chans] or ["none"])
        sites_ = np.array([c.site + 1 for c in chans] or [0])
        ch_idx = arr[:, 2].astype(np.int64)
        jt = pd.DataFrame({
            "traj": arr[:, 0].astype(np.int64), "t": arr[:, 1],
            "channel": names_[ch_idx] if arr.size else np.array([], dtype=str),
            "site": sites_[ch_idx] if arr.size else np.array([], dtype=np.int64),
            "m_before": arr[:, 3].astype(np.int64),
        })
        if is_schedule(model):  # the stage whose propagator reached the jump (t_k < t)
            jt["stage"] = np.asarray(stage_of(model.times, arr[:, 1], side="left"),
                                     dtype=np.int64)
        jt["channel"] = jt["channel"].astype(str)
    traj = None
    if red.kept:
        traj = {"rows": np.concatenate(red.kept)[:ntraj],
                "columns": {k: (s.start, s.stop) for k, s in cols.items()}}
    m2 = table_values(times, model.N, m2s, pairs, model.channels, operators=ops)
    states = None
    if layout is not None:
        states = [BlockState(model.N, blocks)
                  for blocks in state_blocks(red.rho, layout, times.size, ntraj)]
    return Result(df, meta, jumps=jt, trajectories=traj, m2=m2,
                  groups=_group_table(red, model, times, names, cols, pairs, ops),
                  states=states)


def _group_table(red: Reducer, model, times, names, cols, pairs, operators=()) -> dict:
    """The run's trajectory groups in ``expect`` row order: ``count``, ``mean`` ``(G, rows)``."""
    grp = red.groups
    half_a = OBS.flow_factors(model, times)
    counts, means = [], []
    for g in range(grp.cnt.shape[0]):
        vals = _columns(cols, names, operators, grp.mean[g], half_a)
        cnts = {k: np.broadcast_to(grp.cnt[g][:, None], mu.shape) for k, mu in vals.items()}
        means.append(table_values(times, model.N, vals, pairs, model.channels,
                                  operators=operators))
        counts.append(table_values(times, model.N, cnts, pairs, model.channels,
                                   operators=operators))
    return {"count": np.array(counts).astype(np.int64), "mean": np.array(means)}
