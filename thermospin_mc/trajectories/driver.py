"""``mcsolve``: the one driver of trajectory runs.

Flow of a run (see ``docs/architecture.md``)::

    mcsolve(model, times, ntraj, seed, n_jobs, what to compute, option records)
      -> runrecord.plan_run: one RunRecord (Job, checkpoint identity, column
         layout, resolved Target), validated once
      -> backend.map(block-id batches) -> Job.run on the workers
         (kernels.run_block per block)
      -> stats.Reducer (in block order; Target tested after every block;
         snapshot.dump every ``Checkpointing.every`` seconds)
      -> assemble.assemble: Result (table, per-row accumulators, metadata)

Reproducibility: trajectory ``k`` always draws from the random stream derived
from ``(seed, k)``; trajectories are folded into Welford accumulators in
fixed blocks of ``BLOCK`` consecutive indices, and blocks are merged (Chan's
formula) strictly in block order. Neither ``n_jobs``, nor ``batch_size``, nor
the backend changes a single bit of the result. The same holds for the
trajectory-averaged states of ``states=True`` (per-block sums added in block
order), whose memory is estimated and checked against a budget before a run
(:func:`assemble.states_memory`, :func:`blockstate.states_budget`).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time

from ..core.errorbars import operator_floors, target_value
from ..core.results import Result
from ..io import check_output_file
from ..physics.model import ChainModel
from ..signals import RunTerminated, StopWaiting, deferred_signals
from .assemble import assemble, check_states_memory, states_memory
from .backends import BACKENDS, Cluster
from .batches import BLOCK, warm_kernels
from .checkpoint import Checkpointing, CheckpointLock, resume, write_checkpoint
from .progress import Progress, want_progress
from .runrecord import RunRecord, plan_run
from .snapshot import dump
from .stats import Reducer, Target

__all__ = ["mcsolve", "execute", "Cluster", "Checkpointing", "Target", "BLOCK",
           "RunTerminated", "states_memory"]


def mcsolve(model: ChainModel, times, ntraj: int = 1000, seed=None, n_jobs: int = 1, *,
            observables=None, pairs=None, record_jumps: bool = False, states: bool = False,
            target: Target | None = None, checkpoint: Checkpointing | None = None,
            cluster: Cluster | None = None, **keywords) -> Result:
    """Quantum-jump (Monte Carlo wave function) unravelling of the Lindblad equation.

    Trajectory ``k`` always uses the random stream of ``(seed, k)`` and
    statistics are merged in fixed blocks of ``BLOCK`` trajectories in index
    order: the result is bit-identical for any ``n_jobs``, ``batch_size`` and
    backend, and a resumed run equals an uninterrupted one.

    Parameters
    ----------
    model : ChainModel, Schedule or DoobProcess
        The initial pure state is prepared at ``t = 0``. A :func:`~thermospin_mc.exact.doob`
        process runs its transformed unravelling (docs/model.md 15; dense sector
        generators and jump matrices, the jump tables in the original channel
        names); its initial state is ``l^(1/2) psi0``, normalised. A
        :class:`~thermospin_mc.physics.schedule.Schedule` runs its stages in turn
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
        Number of trajectories (``>= 1``). With a ``target.sem`` it is the
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
    observables : sequence of str and Operator, optional
        Subset of ``j, j_bond, flow, m, n, nn, pm_re, pm_im, count`` (``pm`` is
        both parts of ``<s+_i s-_k>``); default ``j, j_bond, flow, m, n``, plus
        ``nn, pm_re, pm_im`` when ``pairs`` are given. ``count`` is the mean
        number of jumps of each channel up to ``t`` (table observables
        ``count:<channel name>``). See :mod:`thermospin_mc.core.observables`.
        Entries may also be :class:`~thermospin_mc.core.operators.Operator` objects
        of offset 0 (any other offset is refused with one line): the estimate
        of ``<O>`` is the mean over trajectories of ``<psi|O|psi> /
        <psi|psi>`` with its standard error (docs/model.md section 13), evaluated
        inside the kernels from each sector's matrix (built once per run,
        sparse). Rows come after the built-in ones, site 0: observable
        ``op.name`` for a Hermitian operator, ``op.name + "_re"`` and
        ``op.name + "_im"`` otherwise. Given operators only, only their rows
        are computed. ``target_observables`` names an operator by ``op.name``
        (a non-Hermitian one also by one part, ``op.name + "_re"`` or ``"_im"``).
    pairs : sequence of (i, k), optional
        1-based site pairs of the two-point observables ``nn`` and ``pm``
        (table rows carry ``site = i``, ``site2 = k``).
    record_jumps : bool
        Keep every jump: ``result.jumps`` has ``traj, t, channel, site, m_before``.
    states : bool
        Also estimate the density matrix: ``result.states[k]`` is the
        trajectory-averaged block density matrix at ``times[k]``, a
        :class:`~thermospin_mc.core.blockstate.BlockState` with
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
    target : Target, optional
        When the run stops (default: after ``ntraj`` trajectories), a
        :class:`~thermospin_mc.trajectories.stats.Target` record with the fields:
        sem : float, optional
            Accuracy target: keep adding blocks (at least ``ntraj`` trajectories)
            until the largest standard error of ``target_observables`` over all
            rows with ``t > 0`` is ``<= target_sem`` (absolute), or every row's
            standard error is ``<= target_sem * |mean|`` (``relative=True``; rows
            below the ``rel_floor`` are left out), or ``max_ntraj`` /
            ``time_limit`` is hit. Standard errors are the effective ones of
            :func:`thermospin_mc.core.results.effective_sem` (never below the
            one-event floor ``delta / n``, so rows where every trajectory agrees
            do not count as converged after a handful of trajectories). The rule is
            tested after every block, so the result equals a plain run with the
            final ``ntraj``.
            ``metadata["stopped_by"]`` says what stopped the run
            (``"target_sem"``, ``"max_ntraj"``, ``"time_limit"``, or ``"ntraj"``
            for a plain run that completed).
        observables : sequence of str, optional
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
        max_magnons : int, optional
            Cap on the magnon number. A trajectory whose next jump would exceed it
            stops contributing from that time on; the discarded fraction is reported
            in ``metadata["truncated_fraction"]`` and the ``ntraj`` column.
    checkpoint : Checkpointing, optional
        What the run keeps, a :class:`~thermospin_mc.trajectories.checkpoint.Checkpointing`
        record (default: no checkpoint, no kept rows) with the fields:
        path : str or path, optional
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
        every : float
            Seconds between checkpoint writes (``>= 0``; ``0`` writes after every batch).
        keep_trajectories : bool
            Keep each trajectory's rows in ``result.trajectories`` (memory grows as ntraj).
    cluster : Cluster, optional
        How the work is carried out, a :class:`~thermospin_mc.trajectories.backends.Cluster`
        record (default: ``Cluster(n_jobs=n_jobs)``) with the fields (none
        changes the result; ``dense_max`` only in round-off):
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
        batch_size : int, optional
            Trajectories per parallel task (rounded up to a multiple of ``BLOCK``).
            Does not change the result.
        progress : bool, optional
            Progress reports on stderr: a bar when stderr is a terminal, else a
            one-line record at least every ``progress.PROGRESS_EVERY`` seconds
            (10) and one at the end: trajectories done, total (or, with
            ``target_sem``, the achieved and target sem), traj/s, elapsed
            seconds and ETA. Default (``None``): on for runs of at least 2000
            trajectories (``ntraj``).
        dense_max : int
            Largest sector diagonalised densely (default ``sectorpack.DENSE_MAX`` = 100);
            larger sectors use the sparse Chebyshev propagator.
    **keywords
        The keywords of earlier releases, one per record field (``target_sem``,
        ``relative``, ``rel_floor``, ``max_ntraj``, ``time_limit``,
        ``target_observables``, ``max_magnons``; ``checkpoint`` as a path,
        ``resume``, ``checkpoint_every``, ``keep_trajectories``; ``backend``,
        ``client``, ``scheduler``, ``batch_size``, ``progress``, ``dense_max``:
        :data:`runrecord.KEYWORDS`), still accepted for one release with a
        ``DeprecationWarning`` that names the record to use. A keyword beside its
        own record is refused with one line.

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
    run = plan_run(model, times, ntraj, seed, n_jobs, observables=observables, pairs=pairs,
                   record_jumps=record_jumps, states=states, target=target,
                   checkpoint=checkpoint, cluster=cluster, legacy=keywords)
    return execute(run)


def execute(run: RunRecord) -> Result:
    """Run (or resume) the ensemble of ``run`` and assemble its ``Result`` (see
    :func:`mcsolve`)."""
    job, target, cluster, ckpt = run.job, run.target, run.cluster, run.checkpoint
    times, goal, path = job.times, target.sem, ckpt.path
    per = run.per_batch(cluster.n_jobs)
    if job.states:
        check_states_memory(run.layout, times.size, cluster.backend, cluster.n_jobs, per)
    red = Reducer(times.size, run.ncomp, job.cap, job.record_jumps, job.keep,
                  state_size=times.size * run.layout.stride if job.states else 0)
    achieved = {"sem": math.inf}
    floors = operator_floors(job.operators) if job.operators else None

    def sem_now() -> float:
        acc = red.acc
        return target_value(acc.cnt, acc.mean, acc.sem(), run.cols, run.target_names, times,
                            job.model.couplings, target.relative, target.rel_floor,
                            extra=floors)

    def reason():
        if goal is not None:
            achieved["sem"] = sem_now()
            if red.ntraj >= run.ntraj and achieved["sem"] <= goal:
                return "target_sem"
        if red.next_block >= red.nblocks:
            return "max_ntraj" if goal is not None else "ntraj"
        return None

    runner = BACKENDS[cluster.backend](cluster, job)
    elapsed_before = 0.0
    with contextlib.ExitStack() as stack:
        save = None
        if path is not None:
            check_output_file(path)  # directory created and writable, else one clear line
            stack.enter_context(CheckpointLock(path))
            elapsed_before = resume(path, ckpt.resume, run.identity, red)

            def save():
                state, arrays = dump(red, elapsed_before + time.monotonic() - start)
                return write_checkpoint(path, run.identity, state, arrays)

        resumed, first = red.restored, red.ntraj
        stopped_by = reason()  # a finished checkpoint: nothing to run, nothing to write
        if resumed:
            _announce_resume(path, resumed, first, stopped_by, red.cap, goal)
        compile_s = warm_kernels() if stopped_by is None and runner.warm_here else 0.0
        start = time.monotonic()
        if stopped_by is None:
            stack.enter_context(runner)  # before the progress thread (see backends.Dask)
            bar = None
            if want_progress(cluster.progress, red.cap if goal is None else run.ntraj):
                bar = Progress(red, start, first, red.cap, goal, target.relative, run.ntraj)
                stack.callback(bar.close)
            workers = runner.workers
            per = run.per_batch(workers)
            if job.states and workers > cluster.n_jobs:  # a Dask cluster larger than n_jobs
                check_states_memory(run.layout, times.size, cluster.backend, workers, per)
            results = runner.map(red.todo(per))
            sig = stack.enter_context(deferred_signals())
            with contextlib.closing(results):
                stopped_by = _consume(results, red, reason, target, cluster.backend, save,
                                      ckpt.every, sig, bar, start, lambda: achieved["sem"])
            written = save() if save is not None else None
            if sig.signum is not None:  # a signal during the last merge or the final write
                raise sig.stopped(checkpoint=written, written=written is not None,
                                  ntraj=red.ntraj, total=red.cap)
    run_s = time.monotonic() - start
    extra = {"backend": cluster.backend, "stopped_by": stopped_by,
             "max_magnons": job.max_magnons,
             "model_fingerprint": run.identity["model_fingerprint"],
             "checkpoint": None if path is None else str(path), "resumed_ntraj": resumed,
             "compile_s": compile_s, "run_s": run_s,
             "traj_per_s": (red.ntraj - first) / run_s if run_s > 0 else 0.0}
    if goal is not None:
        extra.update(target_sem=goal, relative=target.relative, rel_floor=target.rel_floor,
                     target_observables=list(run.target_names), max_ntraj=red.cap,
                     achieved_sem=sem_now())
    if target.time_limit is not None:
        extra["time_limit"] = target.time_limit
    return assemble(run, red, elapsed_before + run_s, runner.workers, extra)


def _announce_resume(path, resumed: int, first: int, stopped_by, cap: int, goal) -> None:
    """One line on stderr: what a resumed run found and what it runs next."""
    more = ("nothing left to run" if stopped_by is not None
            else f"running on to {'ntraj ' + str(cap) if goal is None else 'target'}")
    if first < resumed:
        more = f"its short last block of {resumed - first} is run again in full; " + more
    print(f"thermospin_mc: resuming from {resumed} trajectories (checkpoint "
          f"{str(path)!r}); {more}", file=sys.stderr, flush=True)


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
