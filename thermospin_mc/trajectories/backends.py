"""Where batches of trajectories run: serial, threads, loky, Dask, behind one protocol.

A backend is a class registered in :data:`BACKENDS` (name -> class) with

- ``Backend(cluster, job)``: a :class:`Cluster` (validated options) and the
  :class:`worker.Job` every batch runs (picklable: model, times, run key,
  options);
- a context manager (``with backend:``) that starts and stops its workers;
- ``workers``: the number of batches it runs at once (known once entered);
- ``warm_here``: whether the kernels run in this process (the driver then
  compiles or loads them before the run's clock starts);
- ``map(tasks)``: takes an iterator of block-id lists and yields
  ``(ids, blocks, modes)`` = :meth:`worker.Job.run` of each, in any order, or
  ``None`` as a heartbeat while it waits (so that the driver can honour
  Ctrl-C and time limits). Closing the generator cancels the work in flight.

Results may arrive in completion order: :class:`stats.Reducer` restores block
order, so every backend gives bit-identical results. Adding a backend is one
class decorated with :func:`register` (``Cluster(backend=name)`` then accepts
it); :data:`NAMES` lists the built-in ones.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

from .. import _validate as v
from .sectorpack import DENSE_MAX
from .worker import Job, code_identity, prepare_worker, run_job

__all__ = ["BACKENDS", "NAMES", "Cluster", "register", "fork_method", "DASK_RETRIES"]

#: Backend names accepted by ``Cluster(backend=...)``.
NAMES = ("serial", "threads", "loky", "dask")
#: Dask task retries after an exception in the task (lost workers are handled
#: by the scheduler itself, up to ``distributed.scheduler.allowed-failures``).
DASK_RETRIES = 2

#: name -> backend class (see the module docstring for the protocol).
BACKENDS: dict[str, type] = {}


def register(name: str):
    """Class decorator: make a backend available as ``Cluster(backend=name)``."""
    def deco(cls):
        cls.name = name
        BACKENDS[name] = cls
        return cls
    return deco


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Cluster:
    """How a run's work is carried out (validated on construction). None of these
    fields changes a result beyond round-off (``dense_max``) or at all (the rest).

    Parameters
    ----------
    backend : str, optional
        A name registered in :data:`BACKENDS`, or ``None``: ``"serial"`` for
        ``n_jobs=1``, ``"threads"`` otherwise, ``"dask"`` when ``client`` or
        ``scheduler`` is given.
    n_jobs : int
        Threads / loky processes / local Dask workers (``-1``: every core).
        ``mcsolve``'s own ``n_jobs`` fills it when this is left at 1.
    client : dask.distributed.Client, optional
        Run on this client's cluster (left open).
    scheduler : str, optional
        Address of a running Dask scheduler.
    batch_size : int, optional
        Trajectories per parallel task, rounded up to a multiple of ``BLOCK``
        (default: sized from ``ntraj`` and the workers).
    progress : bool, optional
        Progress reports on stderr (default ``None``: on for runs of at least 2000
        trajectories).
    dense_max : int
        Largest sector propagated by its eigen-decomposition; larger sectors use
        the Chebyshev propagator (both exact; they differ in round-off, so this
        field is part of a checkpoint's identity).
    """

    backend: str | None = None
    n_jobs: int = 1
    client: Any = None
    scheduler: str | None = None
    batch_size: int | None = None
    progress: bool | None = None
    dense_max: int = DENSE_MAX
    #: the backend was left to the default rule (recomputed by :meth:`with_n_jobs`)
    auto_backend: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "dense_max", v.integer("dense_max", self.dense_max, lo=1))
        if self.batch_size is not None:
            set_(self, "batch_size", v.integer("batch_size", self.batch_size, lo=1))
        set_(self, "n_jobs", v.n_jobs(self.n_jobs))
        if self.progress is not None:
            set_(self, "progress", v.flag("progress", self.progress))
        set_(self, "auto_backend", self.backend is None)
        backend, client, scheduler = self.backend, self.client, self.scheduler
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {backend!r}")
        if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
            raise ValueError("scheduler must be the address of a Dask scheduler, e.g. "
                             f"'tcp://10.0.0.1:8786', got {scheduler!r}")
        if client is not None:
            try:
                from distributed import Client
            except ImportError as exc:  # pragma: no cover - dependency
                raise ValueError("client= needs dask.distributed installed") from exc
            if not isinstance(client, Client):
                raise ValueError(f"client must be a dask.distributed.Client, got "
                                 f"{type(client).__name__}")
            if scheduler is not None:
                raise ValueError("give either client or scheduler, not both")
        if client is not None or scheduler is not None:
            if backend not in (None, "dask"):
                raise ValueError(f"backend must be 'dask' (or omitted) when a client or "
                                 f"scheduler is given, got {backend!r}")
            backend = "dask"
        if backend is None:
            backend = "serial" if self.n_jobs == 1 else "threads"
        set_(self, "backend", backend)

    def with_n_jobs(self, n_jobs: int) -> Cluster:
        """This record with another ``n_jobs`` (a default backend is chosen again)."""
        return replace(self, backend=None if self.auto_backend else self.backend,
                       n_jobs=n_jobs)


class _Base:
    name = ""
    warm_here = True

    def __init__(self, cluster: Cluster, job: Job):
        self.cluster, self.job = cluster, job
        self.workers = cluster.n_jobs

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------- backends
@register("serial")
class Serial(_Base):
    """Batches one after the other in this process."""

    def __init__(self, cluster: Cluster, job: Job):
        super().__init__(cluster, job)
        self.workers = 1

    def map(self, tasks):
        for ids in tasks:
            yield self.job.run(ids)


@register("threads")
class Threads(_Base):
    """Batches on ``n_jobs`` threads of this process, at most 2 per thread in flight.

    The kernels release the GIL (``nogil``), so threads run them in parallel
    with no process start-up, pickling or per-worker sector build; sectors are
    built once, under the pack's lock. Results arrive in completion order.
    """

    def map(self, tasks):
        import concurrent.futures as cf

        n = self.workers
        pool = cf.ThreadPoolExecutor(max_workers=n, thread_name_prefix="thermospin_mc")
        todo = iter(tasks)
        pending: set = set()
        try:
            while True:
                while len(pending) < 2 * n:
                    ids = next(todo, None)
                    if ids is None:
                        break
                    pending.add(pool.submit(self.job.run, ids))
                if not pending:
                    return
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for f in done:
                    yield f.result()
        finally:
            # stopping early (target, time limit, Ctrl-C): queued batches are dropped,
            # running ones finish their current batch in the background
            pool.shutdown(wait=False, cancel_futures=True)


@register("loky")
class Loky(_Base):
    """Batches on ``n_jobs`` loky worker processes (joblib's reusable pool)."""

    warm_here = False

    def map(self, tasks):
        from joblib import Parallel, delayed

        # our tasks are batches already: no joblib auto-batching, at most 2 per worker
        # in flight, so that a run stopped by its target wastes little work
        opts = dict(n_jobs=self.workers, backend="loky", batch_size=1,
                    pre_dispatch="2*n_jobs")
        try:
            par = Parallel(return_as="generator_unordered", **opts)
        except ValueError:  # joblib < 1.4: in-order generator (the reducer accepts either)
            par = Parallel(return_as="generator", **opts)
        gen = par(delayed(run_job)(self.job, ids) for ids in tasks)
        try:
            for item in gen:  # noqa: UP028 - not `yield from`: closing must run below
                yield item
        finally:
            with warnings.catch_warnings():
                # stopping early (target reached, time limit) cancels the tasks in flight
                warnings.filterwarnings("ignore",
                                        message=".*still being processed by the workers")
                gen.close()


@register("dask")
class Dask(_Base):
    """Batches on a Dask cluster: a given client, a scheduler address, or a local
    cluster of ``n_jobs`` single-threaded worker processes started for the run
    (forked from this process on Linux when it runs no other thread, so they
    start with the package and kernels loaded).

    On entry the job is scattered to every worker once and each worker is
    prepared in parallel (:func:`worker.prepare_worker`: kernels loaded, sector pack
    and initial path built, code identity checked), so the first batches
    start computing at once. A worker that dies takes its running and held
    tasks with it; the scheduler reruns them elsewhere and, as trajectories
    are pure functions of ``(model, times, seed, k)``, the rerun gives the same
    blocks.
    """

    warm_here = False

    def __init__(self, cluster: Cluster, job: Job):
        super().__init__(cluster, job)
        self._stack = contextlib.ExitStack()
        self.client = None
        self._job = None
        #: seconds: cluster start / connection, and worker preparation
        self.timings: dict = {}

    def __enter__(self):
        try:
            t0 = time.perf_counter()
            self.client = self._stack.enter_context(_dask_client(
                self.cluster.client, self.cluster.scheduler, self.cluster.n_jobs))
            t1 = time.perf_counter()
            self.workers = _check_workers(self.client, self.job)
            self._job = self.client.scatter(self.job, broadcast=True, hash=False)
            self.timings = {"cluster_s": t1 - t0, "prepare_s": time.perf_counter() - t1}
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc):
        self._stack.close()
        return False

    def map(self, tasks):
        """Submit batches (at most ``2 * workers`` in flight); yield them as they finish."""
        from distributed import as_completed

        client, window = self.client, max(4, 2 * self.workers)
        tasks = iter(tasks)
        live: set = set()
        ac = as_completed()

        def submit() -> None:
            ids = next(tasks, None)
            if ids is not None:
                fut = client.submit(run_job, self._job, ids, pure=False, retries=DASK_RETRIES)
                live.add(fut)
                ac.add(fut)

        for _ in range(window):
            submit()
        try:
            while live:
                if not ac.has_ready():
                    time.sleep(0.02)
                    yield None
                    continue
                fut = next(ac)
                out = fut.result()
                live.discard(fut)
                fut.release()
                submit()
                yield out
        finally:
            if live:
                with contextlib.suppress(Exception):
                    client.cancel(list(live))


def fork_method() -> str:
    """``"fork"`` where the platform forks safely (Linux), else dask's configured method."""
    import multiprocessing
    import sys

    import dask

    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return dask.config.get("distributed.worker.multiprocessing-method")


#: Seconds to wait for a Dask scheduler to answer (``scheduler=`` address): a wrong
#: address fails after this long with one line, instead of distributed's 30 s.
DASK_CONNECT_TIMEOUT = 5.0
#: Environment variable that turns on the dashboard of a local Dask cluster, e.g.
#: ``THERMOSPIN_MC_DASHBOARD=:8787`` (off by default: no port taken, nothing printed).
DASHBOARD_ENV = "THERMOSPIN_MC_DASHBOARD"


@contextlib.contextmanager
def _dask_client(client, scheduler, n_jobs):
    """A Dask client: the given one, one connected to ``scheduler`` (at most
    :data:`DASK_CONNECT_TIMEOUT` seconds to connect), or a local cluster of ``n_jobs``
    single-threaded worker processes, closed on exit."""
    if client is not None:
        yield client
        return
    from distributed import Client

    if scheduler is not None:
        try:
            c = Client(scheduler, timeout=DASK_CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise OSError(f"could not connect to the Dask scheduler at {scheduler!r} within "
                          f"{DASK_CONNECT_TIMEOUT:g} s (is it running, and is the address "
                          "right?)") from exc
        try:
            yield c
        finally:
            c.close()
        return
    cluster = _local_cluster(n_jobs)
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def _local_cluster(n_jobs: int):
    """A local cluster of ``n_jobs`` single-threaded worker processes, quiet.

    No dashboard unless :data:`DASHBOARD_ENV` asks for one; the scheduler's
    HTTP endpoints then take a free port of the loopback interface instead of
    8787, so another cluster on 8787 makes no "port in use" warning (nor does
    an asked-for dashboard address that is taken: distributed picks a free
    port and the link says which).
    """
    import os

    import dask
    from distributed import LocalCluster

    # Fork the workers when this process runs no other thread: they inherit the
    # loaded package and compiled kernels and are up in a fraction of a second
    # (spawned workers import dask, numba and the package first: seconds).
    # Workers the cluster restarts later (a lost worker) are spawned as usual.
    method = (fork_method() if threading.active_count() == 1
              else dask.config.get("distributed.worker.multiprocessing-method"))
    # spawned workers load the package and the kernels while they start
    preload = [] if method == "fork" else ["thermospin_mc.trajectories.worker"]
    dashboard = os.environ.get(DASHBOARD_ENV, "").strip() or None
    http = {} if dashboard else {"scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"}}
    with dask.config.set({"distributed.worker.multiprocessing-method": method}), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s)Port \d+ is already in use")
        cluster = LocalCluster(n_workers=n_jobs, threads_per_worker=1, processes=True,
                               dashboard_address=dashboard, preload=preload, **http)
    if dashboard:
        import sys

        print(f"thermospin-mc: Dask dashboard at {cluster.dashboard_link}", file=sys.stderr)
    return cluster


def _check_workers(client, job: Job) -> int:
    """Prepare every worker for ``job`` (in parallel); refuses workers that run
    different code. Returns the number of worker threads."""
    here = code_identity()
    try:
        theirs = client.run(prepare_worker, job)
    except Exception as exc:  # noqa: BLE001 - a remote import error of any kind
        raise ValueError(f"the Dask workers cannot run thermospin_mc: {exc}") from exc
    for addr, ident in theirs.items():
        if ident != here:
            raise ValueError(f"Dask worker {addr} runs different code ({ident}) from this "
                             f"process ({here}); results would not be reproducible")
    return max(1, sum(client.nthreads().values()))
