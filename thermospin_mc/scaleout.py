"""Runs that scale out and survive: backends, checkpoints, accuracy targets, merging.

Everything here keeps the engine's one reproducibility rule: trajectory ``k``
draws from the stream of ``(seed, k)``, trajectories are folded into statistics
blocks of ``BLOCK`` consecutive indices, and blocks are merged strictly in
block order. Batches may finish in any order on any backend (this process,
loky workers, a Dask cluster); a :class:`_Reducer` holds blocks that arrive
early until the prefix before them is complete. Hence

- the serial, loky and Dask backends give bit-identical results;
- a worker lost mid-run only costs a re-run of its batches (Dask reschedules
  them; the blocks they produce are the same);
- a checkpoint stores the merged accumulator of the finished prefix and the
  blocks finished beyond it, so a resumed run ends bit-identical to an
  uninterrupted one; when the prefix ends with a short block (ntraj not a
  multiple of ``BLOCK``), the accumulator before that block is stored too, so
  that a later, larger run drops the short block and runs it in full, exactly
  as a plain run of the larger ntraj reduces it;
- with ``target_sem`` the stopping rule is evaluated after every merged
  block, so the run stops at the smallest whole number of blocks that meets
  the target, and its result equals a plain run with that ``ntraj``.

:func:`merge` pools finished results of independent seeds (Chan's formula).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from . import _validate as v
from .checkpoint import (
    FORMAT,
    SCHEMA,
    CheckpointLock,
    _corrupt,
    check_identity,
    code_identity,
    read_checkpoint,
    times_hash,
    times_summary,
    write_checkpoint,
)
from .ensemble import (
    BLOCK,
    Accumulator,
    _assemble,
    _layout,
    _want_progress,
    run_batch,
    warm_kernels,
)
from .io import check_output_file
from .model import ChainModel
from .results import ONE_EVENT, Result

__all__ = ["merge", "BACKENDS", "DEFAULT_MAX_NTRAJ"]

BACKENDS = ("serial", "threads", "loky", "dask")
#: Cap on the trajectories of a ``target_sem`` run when ``max_ntraj`` is not given.
DEFAULT_MAX_NTRAJ = 10**8
#: Dask task retries after an exception in the task (lost workers are handled
#: by the scheduler itself, up to ``distributed.scheduler.allowed-failures``).
DASK_RETRIES = 2
#: Seconds between two progress records when stderr is not a terminal.
PROGRESS_EVERY = 10.0


# --------------------------------------------------------------------------- validation
def _entropy_json(entropy):
    if isinstance(entropy, (int, np.integer)):
        return int(entropy)
    return [int(x) for x in entropy]


def _options(names, ntraj, n_jobs, backend, client, scheduler, checkpoint, resume,
             checkpoint_every, target_sem, target_observables, relative, max_ntraj,
             time_limit, rel_floor=0.25) -> dict:
    """Validate the scale-out keyword arguments of ``mcsolve``."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
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
            raise ValueError(f"backend must be 'dask' (or omitted) when a client or scheduler "
                             f"is given, got {backend!r}")
        backend = "dask"
    if backend is None:
        backend = "serial" if n_jobs == 1 else "threads"
    if resume is not None and not isinstance(resume, bool):
        raise ValueError(f"resume must be True, False or None, got {resume!r}")
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, Path)) or not str(checkpoint).strip():
            raise ValueError(f"checkpoint must be a file path, got {checkpoint!r}")
        checkpoint = Path(checkpoint)
        if checkpoint.is_dir():
            raise ValueError(f"checkpoint must be a file path, got the directory "
                             f"{str(checkpoint)!r}")
    elif resume:
        raise ValueError("resume=True needs a checkpoint path (checkpoint=...)")
    checkpoint_every = v.real("checkpoint_every", checkpoint_every, lo=0.0)
    if time_limit is not None:
        time_limit = v.real("time_limit", time_limit, lo=0.0, lo_open=True)
    if not isinstance(relative, (bool, np.bool_)):
        raise ValueError(f"relative must be True or False, got {relative!r}")
    rel_floor = v.real("rel_floor", rel_floor, lo=0.0)
    if rel_floor >= 1.0:
        raise ValueError(f"rel_floor must be in [0, 1), got {rel_floor}")
    target_names = ()
    if target_sem is None:
        if target_observables is not None:
            raise ValueError("target_observables needs target_sem")
        if max_ntraj is not None:
            raise ValueError("max_ntraj only applies with target_sem (ntraj is the number "
                             "of trajectories of a plain run)")
        if relative:
            raise ValueError("relative=True needs target_sem")
        cap = ntraj
    else:
        target_sem = v.real("target_sem", target_sem, lo=0.0, lo_open=True)
        if target_observables is None:
            target_names = tuple(n for n in names if n != "flow") or names
        else:
            tn = (target_observables,) if isinstance(target_observables, str) \
                else tuple(target_observables)
            if not tn:
                raise ValueError("target_observables must name at least one observable")
            for o in tn:
                if o not in names:
                    raise ValueError(f"target_observables must be among the computed "
                                     f"observables {names}, got {o!r}")
            target_names = tn
        cap = DEFAULT_MAX_NTRAJ if max_ntraj is None else v.integer(
            "max_ntraj", max_ntraj, lo=ntraj)
        cap = max(cap, ntraj)
    return dict(backend=backend, client=client, scheduler=scheduler, checkpoint=checkpoint,
                resume=resume, checkpoint_every=checkpoint_every, target=target_sem,
                target_names=target_names, relative=bool(relative), rel_floor=rel_floor,
                cap=cap,
                max_ntraj=max_ntraj, time_limit=time_limit)


# --------------------------------------------------------------------------- reduction
class _Reducer:
    """Merges blocks in block order; holds blocks that finish early.

    ``busy`` is true only while a merge is half done; an emergency checkpoint
    is written only from a consistent state.
    """

    def __init__(self, nt: int, ncomp: int, cap: int, record_jumps: bool, keep: bool):
        self.nt, self.ncomp, self.cap = nt, ncomp, cap
        self.nblocks = math.ceil(cap / BLOCK)
        self.record_jumps, self.keep = record_jumps, keep
        self.acc = Accumulator(nt, ncomp)
        self.next_block = 0
        self.ntraj = 0
        self.ntrunc = 0
        self.jumps: list = []
        self.kept: list = []
        self.pending: dict = {}
        self.modes: dict = {}
        self.busy = False
        # the state just before a short last block was merged (see merge_next)
        self.base: dict | None = None
        self.restored = 0  # trajectories a loaded checkpoint held

    def block_size(self, b: int) -> int:
        return min(BLOCK, self.cap - b * BLOCK)

    def todo(self, per: int):
        """Unfinished block ids in index order, in lists of ``per`` (lazily)."""
        batch = []
        for b in range(self.next_block, self.nblocks):
            if b in self.pending:
                continue
            batch.append(b)
            if len(batch) == per:
                yield batch
                batch = []
        if batch:
            yield batch

    def offer(self, ids, blocks, modes) -> None:
        self.modes.update(modes)
        for b, blk in zip(ids, blocks, strict=True):
            if b >= self.next_block and b not in self.pending and b < self.nblocks:
                blk["nb"] = self.block_size(b)
                self.pending[b] = blk

    def merge_next(self) -> int:
        """Merge the next block of the prefix (it must be pending); returns its size."""
        blk = self.pending[self.next_block]
        self.busy = True
        if blk["nb"] < BLOCK:
            # a short last block: keep the state before it, so that a later call
            # asking for more trajectories can drop it and run the block in full,
            # exactly as a plain run of the larger ntraj reduces it
            self.base = {"cnt": self.acc.cnt.copy(), "mean": self.acc.mean.copy(),
                         "m2": self.acc.m2.copy(), "ntrunc": self.ntrunc,
                         "njumps": sum(len(j) for j in self.jumps) if self.record_jumps
                         else 0}
        self.acc.merge(blk["cnt"], blk["mean"], blk["m2"])
        self.ntrunc += blk["ntrunc"]
        if self.record_jumps:
            self.jumps.append(blk["jumps"])
        if self.keep:
            self.kept.append(blk["kept"])
        self.ntraj += blk["nb"]
        del self.pending[self.next_block]
        self.next_block += 1
        self.busy = False
        return blk["nb"]

    # ------------------------------------------------------------ checkpoint form
    def to_checkpoint(self, elapsed: float) -> tuple[dict, dict]:
        nt, nc = self.nt, self.ncomp
        if len(self.jumps) > 1:
            self.jumps = [np.concatenate(self.jumps)]
        if len(self.kept) > 1:
            self.kept = [np.concatenate(self.kept)]
        pend = sorted(self.pending)
        blks = [self.pending[b] for b in pend]
        state = {"prefix_blocks": self.next_block, "prefix_ntraj": self.ntraj,
                 "ntrunc": self.ntrunc, "elapsed_s": elapsed, "cap": self.cap,
                 "modes": {str(k): m for k, m in sorted(self.modes.items())}}
        if self.base is not None:
            state["base"] = {"ntrunc": self.base["ntrunc"], "njumps": self.base["njumps"]}
        arrays = {
            "acc_cnt": self.acc.cnt, "acc_mean": self.acc.mean, "acc_m2": self.acc.m2,
            "jumps": self.jumps[0] if self.jumps else np.zeros((0, 4)),
            "kept": self.kept[0] if self.kept else np.zeros((0, nt, nc)),
            "p_ids": np.array(pend, dtype=np.int64),
            "p_nb": np.array([k["nb"] for k in blks], dtype=np.int64),
            "p_ntrunc": np.array([k["ntrunc"] for k in blks], dtype=np.int64),
            "p_cnt": np.stack([k["cnt"] for k in blks]) if blks
            else np.zeros((0, nt), dtype=np.int64),
            "p_mean": np.stack([k["mean"] for k in blks]) if blks else np.zeros((0, nt, nc)),
            "p_m2": np.stack([k["m2"] for k in blks]) if blks else np.zeros((0, nt, nc)),
            "p_njumps": np.array([len(k["jumps"]) if self.record_jumps else 0 for k in blks],
                                 dtype=np.int64),
            "p_jumps": np.concatenate([k["jumps"] for k in blks])
            if blks and self.record_jumps else np.zeros((0, 4)),
            "p_kept": np.concatenate([k["kept"] for k in blks])
            if blks and self.keep else np.zeros((0, nt, nc)),
        }
        if self.base is not None:
            arrays.update(base_cnt=self.base["cnt"], base_mean=self.base["mean"],
                          base_m2=self.base["m2"])
        return state, arrays

    def restore(self, path, state: dict, arrays: dict) -> None:
        """Load a verified checkpoint's state (shape errors mean a corrupted file)."""
        nt, nc = self.nt, self.ncomp
        try:
            a = {k: arrays[k] for k in ("acc_cnt", "acc_mean", "acc_m2", "jumps", "kept",
                                         "p_ids", "p_nb", "p_ntrunc", "p_cnt", "p_mean",
                                         "p_m2", "p_njumps", "p_jumps", "p_kept")}
            pb, pn = int(state["prefix_blocks"]), int(state["prefix_ntraj"])
            ntrunc = int(state["ntrunc"])
            modes = {int(k): str(m) for k, m in dict(state["modes"]).items()}
            k = a["p_ids"].shape[0]
            ok = (a["acc_cnt"].shape == (nt,) and a["acc_mean"].shape == (nt, nc)
                  and a["acc_m2"].shape == (nt, nc) and a["jumps"].ndim == 2
                  and a["jumps"].shape[1] == 4 and a["kept"].shape[1:] == (nt, nc)
                  and a["p_nb"].shape == (k,) and a["p_ntrunc"].shape == (k,)
                  and a["p_cnt"].shape == (k, nt) and a["p_mean"].shape == (k, nt, nc)
                  and a["p_m2"].shape == (k, nt, nc) and a["p_njumps"].shape == (k,)
                  and a["p_jumps"].shape == (int(a["p_njumps"].sum()), 4)
                  and a["p_kept"].shape[1:] == (nt, nc)
                  and (pn == 0 if pb == 0 else (pb - 1) * BLOCK < pn <= pb * BLOCK))
            if self.keep:
                ok = ok and a["kept"].shape[0] == pn and \
                    a["p_kept"].shape[0] == int(a["p_nb"].sum())
            base = None
            if "base" in state:
                base = {"cnt": arrays["base_cnt"].astype(np.int64),
                        "mean": arrays["base_mean"].astype(np.float64),
                        "m2": arrays["base_m2"].astype(np.float64),
                        "ntrunc": int(state["base"]["ntrunc"]),
                        "njumps": int(state["base"]["njumps"])}
                ok = ok and (base["cnt"].shape == (nt,) and base["mean"].shape == (nt, nc)
                             and base["m2"].shape == (nt, nc)
                             and 0 <= base["njumps"] <= a["jumps"].shape[0]
                             and pb >= 1 and pn < pb * BLOCK)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _corrupt(Path(path), f"incomplete state: {exc}") from exc
        if not ok:
            raise _corrupt(Path(path), "inconsistent array shapes")
        if pn > self.cap:
            raise ValueError(
                f"checkpoint {str(path)!r} already holds {pn} trajectories, more than the "
                f"{self.cap} asked for (ntraj, or max_ntraj with target_sem); ask for at "
                "least that many or use another checkpoint path")
        if pn != pb * BLOCK and pn != self.cap:
            if base is None:
                raise ValueError(
                    f"checkpoint {str(path)!r} holds a finished run of {pn} trajectories "
                    f"(not a whole number of {BLOCK}-trajectory blocks) written by an "
                    f"older version; it can only be resumed with ntraj={pn}")
            # extend a run that ended with a short block: go back to the state
            # before that block; it is run again in full
            self.restored = pn
            pb -= 1
            pn = pb * BLOCK
            a["acc_cnt"], a["acc_mean"], a["acc_m2"] = base["cnt"], base["mean"], base["m2"]
            ntrunc = base["ntrunc"]
            a["jumps"] = a["jumps"][:base["njumps"]]
            a["kept"] = a["kept"][:pn]
            base = None
        self.base = base
        self.restored = max(self.restored, pn)
        self.acc.cnt = a["acc_cnt"].astype(np.int64)
        self.acc.mean = a["acc_mean"].astype(np.float64)
        self.acc.m2 = a["acc_m2"].astype(np.float64)
        self.next_block, self.ntraj, self.ntrunc, self.modes = pb, pn, ntrunc, modes
        if self.record_jumps and len(a["jumps"]):
            self.jumps = [a["jumps"]]
        if self.keep and pn:
            self.kept = [a["kept"]]
        joff = koff = 0
        for i, b in enumerate(a["p_ids"].tolist()):
            nb, nj = int(a["p_nb"][i]), int(a["p_njumps"][i])
            blk = {"cnt": a["p_cnt"][i].astype(np.int64), "mean": a["p_mean"][i],
                   "m2": a["p_m2"][i], "ntrunc": int(a["p_ntrunc"][i]), "nb": nb,
                   "jumps": a["p_jumps"][joff:joff + nj] if self.record_jumps else None,
                   "kept": a["p_kept"][koff:koff + nb] if self.keep else None}
            joff += nj
            koff += nb if self.keep else 0
            # a block finished beyond the prefix is reused only if it has the same size
            if pb <= b < self.nblocks and nb == self.block_size(b):
                self.pending[b] = blk


# --------------------------------------------------------------------------- stopping
def _target_value(red: _Reducer, cols: dict, names: tuple, times: np.ndarray,
                  half_a: np.ndarray, relative: bool, rel_floor: float = 0.25) -> float:
    """Worst effective standard error (absolute) or worst sem/|mean| (relative)
    over the chosen observables at every output time ``t > 0`` that has
    trajectories.

    Standard errors are floored at one event's worth ``delta / n``
    (``results.effective_sem``). Relative: rows with ``|mean|`` below
    ``rel_floor`` times the largest ``|mean|`` of the observable are ignored.
    """
    acc = red.acc
    rows = (times > 0) & (acc.cnt > 0)
    if not rows.any():
        return math.inf
    n = acc.cnt[rows].astype(float)[:, None]
    sem = acc.sem()[rows]
    mean = acc.mean[rows]
    worst = 0.0
    for name in names:
        src = "j_bond" if name == "flow" else name
        se, mu = sem[:, cols[src]], mean[:, cols[src]]
        delta = ONE_EVENT[src]
        if name == "flow":
            se, mu, delta = se * half_a, mu * half_a, delta * half_a
        se = np.maximum(np.where(np.isnan(se), 0.0, se), delta / n)
        if relative:
            size = np.abs(mu)
            keep = (size > 0) & (size >= rel_floor * size.max())
            if not keep.any():
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                val = np.where(keep, se / size, 0.0)
        else:
            val = se
        if np.isnan(val).any():
            return math.inf
        worst = max(worst, float(val.max()))
    return worst


# --------------------------------------------------------------------------- backends
def _task(ids, args, kw):
    blocks, modes = run_batch(*args, block_ids=ids, **kw)
    return ids, blocks, modes


def _serial(tasks, args, kw):
    for ids in tasks:
        yield _task(ids, args, kw)


def _threads(tasks, args, kw, n_jobs):
    """Batches on threads of this process, at most 2 per thread in flight.

    The kernels release the GIL (``nogil``), so threads run them in parallel
    with no process start-up, pickling or per-worker sector build; sectors are
    built once, under the pack's lock. Results arrive in completion order.
    """
    import concurrent.futures as cf

    pool = cf.ThreadPoolExecutor(max_workers=n_jobs, thread_name_prefix="thermospin_mc")
    todo = iter(tasks)
    pending: set = set()
    try:
        while True:
            while len(pending) < 2 * n_jobs:
                ids = next(todo, None)
                if ids is None:
                    break
                pending.add(pool.submit(_task, ids, args, kw))
            if not pending:
                return
            done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for f in done:
                yield f.result()
    finally:
        # stopping early (target, time limit, Ctrl-C): queued batches are dropped,
        # running ones finish their current batch in the background
        pool.shutdown(wait=False, cancel_futures=True)


def _loky(tasks, args, kw, n_jobs):
    from joblib import Parallel, delayed

    # our tasks are batches already: no joblib auto-batching, at most 2 per worker
    # in flight, so that a run stopped by its target wastes little work
    opts = dict(n_jobs=n_jobs, backend="loky", batch_size=1, pre_dispatch="2*n_jobs")
    try:
        par = Parallel(return_as="generator_unordered", **opts)
    except ValueError:  # joblib < 1.4: in-order generator (the reducer accepts either)
        par = Parallel(return_as="generator", **opts)
    gen = par(delayed(_task)(ids, args, kw) for ids in tasks)
    try:
        for item in gen:  # noqa: UP028 - not `yield from`: closing must run below
            yield item
    finally:
        with warnings.catch_warnings():
            # stopping early (target reached, time limit) cancels the tasks in flight
            warnings.filterwarnings("ignore", message=".*still being processed by the workers")
            gen.close()


def _dask(tasks, args, kw, client, window):
    """Submit batches (at most ``window`` in flight); yield them as they finish.

    Yields ``None`` as a heartbeat while waiting, so that the driver can honour
    Ctrl-C and the time limit. A worker that dies takes its running and held
    tasks with it; the scheduler reruns them elsewhere and, as trajectories are
    pure functions of ``(model, times, seed, k)``, the rerun gives the same blocks.
    """
    from distributed import as_completed

    tasks = iter(tasks)
    live: set = set()
    ac = as_completed()

    def submit() -> None:
        ids = next(tasks, None)
        if ids is not None:
            fut = client.submit(_task, ids, args, kw, pure=False, retries=DASK_RETRIES)
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


@contextlib.contextmanager
def _dask_client(client, scheduler, n_jobs):
    if client is not None:
        yield client
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            c = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise OSError(f"could not connect to the Dask scheduler at {scheduler!r}: "
                          f"{exc}") from exc
        try:
            yield c
        finally:
            c.close()
        return
    cluster = LocalCluster(n_workers=n_jobs, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def _check_workers(client) -> int:
    """Number of worker threads; refuses workers that run different code."""
    here = code_identity()
    try:
        theirs = client.run(code_identity)
    except Exception as exc:  # noqa: BLE001 - a remote import error of any kind
        raise ValueError(f"the Dask workers cannot run thermospin_mc: {exc}") from exc
    for addr, ident in theirs.items():
        if ident != here:
            raise ValueError(f"Dask worker {addr} runs different code ({ident}) from this "
                             f"process ({here}); results would not be reproducible")
    return max(1, sum(client.nthreads().values()))


@contextlib.contextmanager
def _deferred_sigint():
    """First Ctrl-C: finish the current batch, write the checkpoint, then stop.

    Yields a function telling whether Ctrl-C was pressed. A second Ctrl-C
    interrupts at once. Only active in the main thread with Python's default
    handler installed.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield lambda: False
        return
    hit: list = []

    def handler(signum, frame):
        if hit:
            raise KeyboardInterrupt
        hit.append(True)

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(hit)
    finally:
        signal.signal(signal.SIGINT, old)


# --------------------------------------------------------------------------- progress
def _clock(seconds: float) -> str:
    """``h:mm:ss`` (``?`` when unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _Progress:
    """Progress of a run on stderr: a tqdm bar on a terminal, else one-line records.

    Records are written by a daemon thread every ``PROGRESS_EVERY`` seconds
    (so also while a long batch runs; the kernels release the GIL) and once
    at the end (:meth:`close`). Format (one line, ``key=value`` fields)::

        thermospin_mc progress: done=1280 total=20000 traj_per_s=812.3 elapsed=0:00:01 eta=0:00:23
        thermospin_mc progress: done=2560 min=2000 max=100000 sem=0.0123 target=0.005 \
            relative=yes traj_per_s=812.3 elapsed=0:00:03 eta=0:01:10

    ``done`` counts merged trajectories (resumed ones included); ``traj_per_s``
    and ``elapsed`` refer to this call's run time (compile time excluded).
    With a target the ETA assumes ``sem ~ 1/sqrt(n)``.
    """

    def __init__(self, red: _Reducer, start: float, resumed: int, total: int | None,
                 target: float | None = None, relative: bool = False, minimum: int = 0,
                 stream=None):
        self.red, self.start, self.resumed = red, start, resumed
        self.total, self.target, self.relative, self.minimum = total, target, relative, minimum
        self.stream = sys.stderr if stream is None else stream
        self.sem = math.inf
        self.bar = None
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()
        if _isatty(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total if target is None else None, initial=red.ntraj,
                            unit="traj", desc="mcsolve", file=self.stream)
        else:
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name="thermospin_mc-progress")
            self._thread.start()

    def update(self, nb: int, sem: float | None = None) -> None:
        if sem is not None:
            self.sem = sem
        if self.bar is not None:
            self.bar.update(nb)
            if sem is not None and self.target is not None:
                self.bar.set_postfix_str(f"sem {sem:.3g} (target {self.target:.3g})",
                                         refresh=False)

    def record(self) -> str:
        done = self.red.ntraj
        elapsed = time.monotonic() - self.start
        rate = (done - self.resumed) / elapsed if elapsed > 0 else 0.0
        if self.target is None:
            goal = self.total
            head = f"done={done} total={self.total}"
        else:
            need = self.minimum
            if math.isfinite(self.sem) and done > 0:
                need = max(need, math.ceil(done * (self.sem / self.target) ** 2))
            goal = min(need, self.total)
            shown = f"{self.sem:.4g}" if math.isfinite(self.sem) else "nan"
            head = (f"done={done} min={self.minimum} max={self.total} sem={shown} "
                    f"target={self.target:.4g} relative={'yes' if self.relative else 'no'}")
        eta = (goal - done) / rate if rate > 0 else (0.0 if done >= goal else math.inf)
        return (f"thermospin_mc progress: {head} traj_per_s={rate:.1f} "
                f"elapsed={_clock(elapsed)} eta={_clock(max(eta, 0.0))}")

    def _emit(self) -> None:
        with self._lock:
            with contextlib.suppress(Exception):
                print(self.record(), file=self.stream, flush=True)

    def _loop(self) -> None:
        while not self._stop.wait(PROGRESS_EVERY):
            self._emit()

    def close(self, final: bool = True) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            if final:
                self._emit()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------- driver
def resolve_seed(seed, checkpoint):
    """``seed=None`` with an existing checkpoint continues the checkpoint's seed."""
    if seed is None and checkpoint is not None and Path(checkpoint).exists():
        identity, _, _ = read_checkpoint(checkpoint)
        if "seed" in identity:
            return identity["seed"]
    return seed


def _identity(model: ChainModel, times: np.ndarray, names: tuple, entropy, max_magnons: int,
              dense_max: int, record_jumps: bool, keep: bool) -> dict:
    """What a checkpoint's numbers belong to (every field must match to resume)."""
    return {
        "format": FORMAT, "schema": SCHEMA, "model_fingerprint": model.fingerprint(),
        "model": json.loads(json.dumps(model.to_dict())), "times_sha256": times_hash(times),
        "times_summary": times_summary(times), "nt": int(times.size),
        "observables": sorted(names), "seed": _entropy_json(entropy), "code": code_identity(),
        "block": BLOCK, "max_magnons": max_magnons, "dense_max": dense_max,
        "record_jumps": bool(record_jumps), "keep_trajectories": bool(keep),
    }


def _resume(path: Path, resume, identity: dict, red: _Reducer) -> float:
    """Load an existing checkpoint into ``red``; returns the elapsed time it records."""
    if not path.exists():
        if resume:
            raise ValueError(f"resume=True but there is no checkpoint at {str(path)!r}")
        return 0.0
    if resume is False:
        raise ValueError(f"checkpoint {str(path)!r} already exists; pass resume=True (or omit "
                         "resume) to continue it, or choose another path (it is never "
                         "overwritten by a new run)")
    found, state, arrays = read_checkpoint(path)
    check_identity(path, found, identity)
    red.restore(path, state, arrays)
    return float(state.get("elapsed_s", 0.0))


def _consume(results, red: _Reducer, reason, opts: dict, save, interrupted, bar,
             start: float, current_sem=None) -> str | None:
    """Feed finished batches to the reducer until a stop reason appears.

    Checkpoints every ``checkpoint_every`` seconds; on any exception (Ctrl-C
    included) writes a last checkpoint from a consistent state and re-raises.
    """
    stopped_by = None
    last_save = start
    try:
        for item in results:
            if item is not None:
                red.offer(*item)
                while stopped_by is None and red.next_block in red.pending:
                    nb = red.merge_next()
                    stopped_by = reason()
                    if bar is not None:
                        bar.update(nb, None if current_sem is None else current_sem())
            if stopped_by is not None:
                return stopped_by
            if interrupted():
                raise KeyboardInterrupt
            now = time.monotonic()
            if (opts["time_limit"] is not None and red.ntraj > 0
                    and now - start >= opts["time_limit"]):
                return "time_limit"
            if save is not None and item is not None and \
                    now - last_save >= opts["checkpoint_every"]:
                save()
                last_save = time.monotonic()
        raise RuntimeError(f"the {opts['backend']} backend ended after {red.ntraj} "
                           f"trajectories without delivering block {red.next_block}")
    except BaseException as exc:
        if save is not None and not red.busy:
            with contextlib.suppress(Exception):
                save()
        if interrupted() and not isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt from exc
        raise


def execute(model: ChainModel, times: np.ndarray, *, names: tuple, key: np.ndarray, entropy,
            ntraj: int, n_jobs: int, batch_size: int | None, record_jumps: bool, keep: bool,
            max_magnons: int, dense_max: int, progress, opts: dict, pairs=None) -> Result:
    """Run (or resume) an ensemble and assemble its ``Result`` (see ``mcsolve``)."""
    npair = 0 if pairs is None else len(pairs)
    _, cols, ncomp = _layout(model.N, names, npair, len(model.channels))
    cap, target, backend, path = opts["cap"], opts["target"], opts["backend"], \
        opts["checkpoint"]
    if target is not None and not np.any(times > 0):
        raise ValueError("target_sem needs at least one output time > 0, got times "
                         f"{times.tolist()}")
    identity = _identity(model, times, names, entropy, max_magnons, dense_max, record_jumps,
                         keep)
    if npair:
        identity["pairs"] = np.asarray(pairs).tolist()
    red = _Reducer(times.size, ncomp, cap, record_jumps, keep)
    half_a = np.asarray(model.couplings) / 2
    achieved = {"sem": math.inf}

    def reason():
        if target is not None:
            achieved["sem"] = _target_value(red, cols, opts["target_names"], times, half_a,
                                            opts["relative"], opts["rel_floor"])
            if red.ntraj >= ntraj and achieved["sem"] <= target:
                return "target_sem"
        if red.next_block >= red.nblocks:
            return "max_ntraj" if target is not None else "ntraj"
        return None

    elapsed_before, workers = 0.0, (1 if backend == "serial" else n_jobs)
    with contextlib.ExitStack() as stack:
        save = None
        if path is not None:
            check_output_file(path)  # directory created and writable, else one clear line
            stack.enter_context(CheckpointLock(path))
            elapsed_before = _resume(path, opts["resume"], identity, red)

            def save():
                state, arrays = red.to_checkpoint(elapsed_before + time.monotonic() - start)
                write_checkpoint(path, identity, state, arrays)

        resumed, first = red.restored, red.ntraj
        stopped_by = reason()  # a finished checkpoint: nothing to run, nothing to write
        if resumed:
            more = ("nothing left to run" if stopped_by is not None
                    else f"running on to {'ntraj ' + str(cap) if target is None else 'target'}")
            if first < resumed:
                more = (f"its short last block of {resumed - first} is run again in full; "
                        + more)
            print(f"thermospin_mc: resuming from {resumed} trajectories (checkpoint "
                  f"{str(path)!r}); {more}", file=sys.stderr, flush=True)
        compile_s = warm_kernels() if stopped_by is None and backend in (
            "serial", "threads") else 0.0
        start = time.monotonic()
        if stopped_by is None:
            bar = None
            if _want_progress(progress, cap if target is None else ntraj):
                bar = _Progress(red, start, first, cap, target, opts["relative"], ntraj)
                stack.callback(bar.close)
            args = (model, times, key)
            kw = dict(ntraj=cap, names=names, record_jumps=record_jumps, keep=keep,
                      max_magnons=max_magnons, dense_max=dense_max)
            if npair:
                kw["pairs"] = pairs
            if backend == "dask":
                client = stack.enter_context(_dask_client(opts["client"], opts["scheduler"],
                                                          n_jobs))
                workers = _check_workers(client)
            if batch_size is None:  # sized on ntraj, where a target is first tested
                per = max(1, min(64, math.ceil(ntraj / BLOCK) // max(1, 4 * workers)))
            else:
                per = math.ceil(batch_size / BLOCK)
            tasks = red.todo(per)
            if backend == "serial":
                results = _serial(tasks, args, kw)
            elif backend == "threads":
                results = _threads(tasks, args, kw, n_jobs)
            elif backend == "loky":
                results = _loky(tasks, args, kw, n_jobs)
            else:
                results = _dask(tasks, args, kw, client, window=max(4, 2 * workers))
            interrupted = stack.enter_context(_deferred_sigint())
            with contextlib.closing(results):
                stopped_by = _consume(results, red, reason, opts, save, interrupted, bar,
                                      start, lambda: achieved["sem"])
            if save is not None:
                save()
    run_s = time.monotonic() - start
    elapsed = elapsed_before + run_s
    extra = {"backend": backend, "stopped_by": stopped_by, "max_magnons": max_magnons,
             "model_fingerprint": identity["model_fingerprint"],
             "checkpoint": None if path is None else str(path), "resumed_ntraj": resumed,
             "compile_s": compile_s, "run_s": run_s,
             "traj_per_s": (red.ntraj - first) / run_s if run_s > 0 else 0.0}
    if target is not None:
        extra.update(target_sem=target, relative=opts["relative"],
                     rel_floor=opts["rel_floor"],
                     target_observables=list(opts["target_names"]), max_ntraj=cap,
                     achieved_sem=_target_value(red, cols, opts["target_names"], times,
                                                half_a, opts["relative"], opts["rel_floor"]))
    if opts["time_limit"] is not None:
        extra["time_limit"] = opts["time_limit"]
    return _assemble(model, times, names, cols, red.acc, red.jumps, red.kept, red.ntrunc,
                     red.ntraj, entropy, red.modes, elapsed, workers, record_jumps, extra,
                     pairs=pairs)


# --------------------------------------------------------------------------- merging
def _seeds(meta: dict) -> list:
    if "seeds" in meta:
        return list(meta["seeds"])
    return [meta.get("seed")]


def _fingerprint(meta: dict) -> str:
    import hashlib

    if meta.get("model_fingerprint"):
        return meta["model_fingerprint"]
    blob = json.dumps(meta.get("model"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def merge(*results: Result) -> Result:
    """Pool trajectory results of the same model and times from independent seeds.

    Means and standard errors are exact pooled values (Chan's parallel formula
    on per-row counts, means and sums of squared deviations, the latter
    recovered as ``sem^2 n (n - 1)``): the merged result equals, up to
    rounding, one run over the union of the trajectories.

    Parameters
    ----------
    *results : Result
        Trajectory results (``mcsolve`` or earlier merges), or one list of them.

    Returns
    -------
    Result
        ``metadata["seeds"]`` lists the seeds of the parts, ``ntraj`` their sum.
        Jump records are concatenated with trajectory indices shifted by the
        number of trajectories of the preceding parts (``traj_offsets``).

    Raises
    ------
    ValueError
        If the parts differ in model, output times, observables or
        ``max_magnons``, are not trajectory results, or share a seed (their
        random streams would overlap).
    """
    if len(results) == 1 and isinstance(results[0], (list, tuple)):
        results = tuple(results[0])
    if not results:
        raise ValueError("merge needs at least one result")
    for i, r in enumerate(results):
        if not isinstance(r, Result):
            raise ValueError(f"merge takes Result objects, got {type(r).__name__} at "
                             f"position {i}")
        if r.metadata.get("solver") != "mcsolve":
            raise ValueError(f"only trajectory results (mcsolve) can be merged; result {i} "
                             f"comes from {r.metadata.get('solver')!r}")
    first = results[0]
    fp = _fingerprint(first.metadata)
    keys = ["t", "observable", "site"]
    if "site2" in first.expect.columns:  # two-point rows (pairs)
        keys.append("site2")

    def ordered(df):
        return df.sort_values(keys, kind="stable")

    base = ordered(first.expect)
    seen = {}
    for i, r in enumerate(results):
        for s in _seeds(r.metadata):
            tag = json.dumps(s)
            if s is None or tag in seen:
                raise ValueError(
                    f"results {seen.get(tag, i)} and {i} share the seed {s!r}: their "
                    "trajectories overlap, merging would count them twice; merge only runs "
                    "with different seeds")
            seen[tag] = i
        if i == 0:
            continue
        if _fingerprint(r.metadata) != fp:
            fm, om = first.metadata.get("model", {}), r.metadata.get("model", {})
            diff = sorted(k for k in set(fm) | set(om) if fm.get(k) != om.get(k))
            raise ValueError(f"cannot merge results of different models (result 0 and {i} "
                             f"differ in {', '.join(diff) or 'model fingerprint'})")
        if r.metadata.get("max_magnons") != first.metadata.get("max_magnons"):
            raise ValueError(f"cannot merge results with different max_magnons "
                             f"({first.metadata.get('max_magnons')} and "
                             f"{r.metadata.get('max_magnons')})")
        other = ordered(r.expect)
        if not np.array_equal(np.unique(other["t"]), np.unique(base["t"])):
            raise ValueError(f"cannot merge results with different output times (result 0 "
                             f"and {i})")
        if len(other) != len(base) or not (
                other["observable"].equals(base["observable"])
                and np.array_equal(other["site"].to_numpy(), base["site"].to_numpy())
                and ("site2" not in keys or ("site2" in other.columns and np.array_equal(
                    other["site2"].to_numpy(), base["site2"].to_numpy())))
                and np.array_equal(other["t"].to_numpy(), base["t"].to_numpy())):
            raise ValueError(f"cannot merge results with different observables (result 0 "
                             f"has {sorted(base['observable'].unique())}, result {i} has "
                             f"{sorted(other['observable'].unique())})")
    n = base["ntraj"].to_numpy().astype(np.float64)
    mean = base["mean"].to_numpy().astype(np.float64)
    m2 = _m2(n, base["sem"].to_numpy())
    for r in results[1:]:
        o = ordered(r.expect)
        nb = o["ntraj"].to_numpy().astype(np.float64)
        mb = o["mean"].to_numpy().astype(np.float64)
        m2b = _m2(nb, o["sem"].to_numpy())
        tot = n + nb
        ma = np.where(n > 0, mean, 0.0)
        mb0 = np.where(nb > 0, mb, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mb0 - ma
            fb = np.where(tot > 0, nb / tot, 0.0)
            mean = ma + delta * fb
            m2 = m2 + m2b + delta * delta * n * fb
        n = tot
    with np.errstate(invalid="ignore", divide="ignore"):
        sem = np.where(n > 1, np.sqrt(m2 / np.maximum(n - 1, 1) / n), np.nan)
    out = base.copy()
    out["mean"] = np.where(n > 0, mean, np.nan)
    out["sem"] = sem
    out["ntraj"] = n.astype(np.int64)
    out = out.sort_index().reset_index(drop=True)  # back to the first result's row order
    out.attrs = {}
    metas = [r.metadata for r in results]
    total = int(sum(m.get("ntraj", 0) for m in metas))
    meta = dict(first.metadata)
    for k in ("stopped_by", "checkpoint", "resumed_ntraj", "achieved_sem", "n_jobs",
              "backend", "time_limit", "compile_s", "run_s", "traj_per_s"):
        meta.pop(k, None)
    offsets = np.cumsum([0] + [int(m.get("ntraj", 0)) for m in metas[:-1]]).tolist()
    modes = {}
    for m in metas:
        modes.update(m.get("sector_modes", {}))
    meta.update({
        "seed": None, "seeds": [s for m in metas for s in _seeds(m)], "ntraj": total,
        "merged_from": len(results), "traj_offsets": offsets,
        "model_fingerprint": fp,
        "truncated_fraction": sum(m.get("truncated_fraction", 0.0) * m.get("ntraj", 0)
                                  for m in metas) / max(total, 1),
        "elapsed_s": float(sum(m.get("elapsed_s", 0.0) for m in metas)),
        "sector_modes": dict(sorted(modes.items())),
        "version": sorted({str(m.get("version")) for m in metas})[-1],
    })
    jumps = None
    if all(r.jumps is not None for r in results):
        import pandas as pd

        parts = []
        for off, r in zip(offsets, results, strict=True):
            j = r.jumps.copy()
            j.attrs = {}
            j["traj"] = j["traj"] + off
            parts.append(j)
        jumps = pd.concat(parts, ignore_index=True)
    traj = None
    if all(r.trajectories is not None for r in results):
        cols0 = first.trajectories["columns"]
        if all(r.trajectories["columns"] == cols0 for r in results):
            traj = {"rows": np.concatenate([r.trajectories["rows"] for r in results]),
                    "columns": cols0}
    return Result(out, meta, jumps=jumps, trajectories=traj)


def _m2(n: np.ndarray, sem: np.ndarray) -> np.ndarray:
    """Sum of squared deviations from the standard error: ``sem^2 n (n - 1)``."""
    sem = np.asarray(sem, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(n > 1, sem * sem * n * (n - 1), 0.0)
