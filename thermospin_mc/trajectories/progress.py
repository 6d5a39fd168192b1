"""Progress reports of a trajectory run on stderr (a bar on a terminal, else one-line records)."""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time

from .stats import Reducer

__all__ = ["Progress", "want_progress", "PROGRESS_EVERY", "PROGRESS_MIN_NTRAJ"]

#: Seconds between two progress records when stderr is not a terminal.
PROGRESS_EVERY = 10.0
#: ``progress=None`` turns progress reports on for runs of at least this many
#: trajectories (``ntraj``; for a ``target_sem`` run, its minimum ``ntraj``).
PROGRESS_MIN_NTRAJ = 2000


def want_progress(progress, ntraj) -> bool:
    """Whether a run reports progress on stderr.

    ``progress=True``/``False`` decide; ``None`` (the default) means on for
    runs of at least ``PROGRESS_MIN_NTRAJ`` trajectories, whether or not
    stderr is a terminal (a bar on a terminal, one-line records otherwise,
    see ``PROGRESS_EVERY``).
    """
    if progress is not None:
        return bool(progress)
    return ntraj >= PROGRESS_MIN_NTRAJ



def clock(seconds: float) -> str:
    """``h:mm:ss`` (``?`` when unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
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

    def __init__(self, red: Reducer, start: float, resumed: int, total: int | None,
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
                f"elapsed={clock(elapsed)} eta={clock(max(eta, 0.0))}")

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
