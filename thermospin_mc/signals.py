"""SIGINT and SIGTERM during a run: stop at a consistent state, checkpoint, report.

:func:`deferred_signals` installs one handler for both signals (main thread
only, and only where Python's default disposition is in force). Inside a run
(``driver.execute``) it only records a signal: the run finishes its current
batch, writes its final checkpoint (no signal can abort that write) and then
raises :func:`stop_exception` of the first signal: a plain
``KeyboardInterrupt`` for SIGINT, :class:`RunTerminated` (``SystemExit(143)``)
for SIGTERM, both telling what is on disk. A second signal while the run only
waits for worker threads or processes stops that wait at once. The command
line keeps an outer block in ``"raise"`` mode: a signal outside a run stops at
once, later signals are ignored while :func:`report_stop` prints the one-line
report, and :func:`exit_now` ends the process with status 130 / 143
(:data:`STOP_SIGNALS`); after a finished command, :func:`exit_on_signals`.

The first signal decides the exception and the status. Python runs handlers
between bytecodes of the main thread, so signals that arrive while it is busy
in compiled code (a serial batch) are taken together, SIGINT before SIGTERM.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

__all__ = ["STOP_SIGNALS", "RunTerminated", "StopWaiting", "Deferral", "stop_exception",
           "deferred_signals", "exit_on_signals", "report_stop", "exit_now"]

#: Signals that stop a run at a consistent state, and the exit status of each.
STOP_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}
_DEFAULT = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
_ACTIVE: list = []  # deferrals in force (main thread), innermost last


class RunTerminated(SystemExit):
    """SIGTERM stopped a run: ``SystemExit(143)``, raised once the final checkpoint
    is on disk. Uncaught, the interpreter exits quietly with status 143;
    ``except Exception`` does not catch it. Attributes: see :func:`stop_exception`.
    """

    def __init__(self, text: str = "SIGTERM"):
        super().__init__(143)
        self.text = text

    def __str__(self) -> str:
        return self.text


class StopWaiting(BaseException):
    """Raised by the handler into a wait for workers on a second signal."""


def stop_exception(signum: int, checkpoint=None, written: bool = False, ntraj=None,
                   total=None, error=None) -> BaseException:
    """The exception a run stopped by ``signum`` raises.

    SIGINT: a plain ``KeyboardInterrupt`` (uncaught, Python then ends as
    killed by SIGINT, as shells expect); SIGTERM: :class:`RunTerminated`.
    Both carry ``signum``, ``status`` (130 / 143), ``checkpoint`` (the run's
    checkpoint path, ``None``: none), ``written`` (the final checkpoint was
    written there, fsync'ed and renamed, before raising), ``ntraj`` of
    ``total`` (trajectories it holds) and ``error`` (why the final write
    failed, if it did); the message says the same in words.
    """
    name = signal.Signals(signum).name
    if written:
        text = (f"{name}: checkpoint written to {str(checkpoint)!r} ({ntraj} of {total} "
                "trajectories)")
    elif error:
        text = f"{name}: the final checkpoint could not be written ({error})"
    else:
        text = f"{name}: no checkpoint written"
    exc = RunTerminated(text) if signum == signal.SIGTERM else KeyboardInterrupt(text)
    exc.signum, exc.status, exc.checkpoint, exc.written = (signum, STOP_SIGNALS[signum],
                                                           checkpoint, written)
    exc.ntraj, exc.total, exc.error = ntraj, total, error
    return exc


class Deferral:
    """SIGINT and SIGTERM received while :func:`deferred_signals` is in force.

    ``mode``: ``"defer"`` records signals; ``"raise"`` raises the first one at
    once (:func:`stop_exception`) and then holds; ``"hold"`` records and
    ignores; ``"exit"`` ends the process at once with the signal's status (a
    program whose work is done). Inside :meth:`waiting` a second signal raises
    :class:`StopWaiting` (the caller only waits for workers there). ``keep``:
    leave the handler in force after the block.
    """

    def __init__(self, mode: str = "defer"):
        self.mode, self.received, self.abortable, self.keep = mode, [], False, False
        self.pid = os.getpid()

    @property
    def signum(self) -> int | None:
        """The first signal received (``None``: none)."""
        return self.received[0] if self.received else None

    def stopped(self, **note) -> BaseException:
        """:func:`stop_exception` of the first signal (SIGINT if none was received)."""
        return stop_exception(self.signum or signal.SIGINT, **note)

    @contextlib.contextmanager
    def waiting(self, abortable: bool = True):
        """A wait for workers, which a second signal may abort (``abortable``)."""
        self.abortable = abortable
        try:
            yield
        finally:
            self.abortable = False


def _handle(signum, frame):
    if not _ACTIVE or _ACTIVE[-1].pid != os.getpid():
        # a process forked during a run (a local Dask worker) inherits the handler: it
        # ignores the signal, the run's own process stops the run and closes its workers
        return
    d = _ACTIVE[-1]
    d.received.append(signum)
    if d.mode == "exit":
        exit_now(STOP_SIGNALS[signum])
    if d.mode == "raise":
        d.mode = "hold"
        raise stop_exception(signum)
    if d.abortable and len(d.received) > 1:
        d.abortable = False
        raise StopWaiting


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def exit_now(status: int) -> None:
    """End the process at once (after flushing stdout and stderr): no wait for
    worker threads still finishing a batch of a stopped run, no exit hooks that
    a late signal could interrupt."""
    _flush()
    os._exit(status)


@contextlib.contextmanager
def deferred_signals(mode: str = "defer"):
    """Catch SIGINT and SIGTERM in a block; yields its :class:`Deferral`.

    The handler only records a signal (``mode="defer"``), so a run stops at its
    own pace: the current batch finishes, a final checkpoint is written (a
    second signal never aborts the write), then the run raises
    ``deferral.stopped()``. A signal whose handler is not Python's default
    (e.g. ignored, as in a background job) is left alone, and so are threads
    other than the main one (the block then catches nothing); processes forked
    meanwhile (local Dask workers) ignore both signals. Nested blocks
    share the handler: an inner block that caught a signal leaves the outer one
    holding (later signals are ignored while the stop is reported). On exit
    the previous handlers are put back (unless ``keep``).
    """
    d = Deferral(mode)
    installed: dict = {}
    if threading.current_thread() is threading.main_thread():
        outermost = not _ACTIVE
        _ACTIVE.append(d)  # before the handler: no signal finds it without a deferral
        if outermost:
            for s, default in _DEFAULT.items():
                if signal.getsignal(s) is default:
                    installed[s] = signal.signal(s, _handle)
            if not installed:
                _ACTIVE.remove(d)
    try:
        yield d
    finally:
        if not d.keep:
            for s, old in installed.items():
                signal.signal(s, old)
            if d in _ACTIVE:
                i = _ACTIVE.index(d)
                if i > 0 and d.received:  # the outer block holds while the stop propagates
                    _ACTIVE[i - 1].received.extend(d.received)
                    _ACTIVE[i - 1].mode = "hold"
                _ACTIVE.remove(d)


def exit_on_signals(d: Deferral) -> None:
    """For a program whose work is done: keep ``d``'s handler past its block, and
    make a signal end the process at once with status 130 / 143 (no traceback
    while worker threads are joined). From the exit hooks on, the signals are
    ignored: late in its shutdown Python puts back the default dispositions,
    and a signal would then kill the finished program."""
    d.keep = True
    d.mode = "exit"
    atexit.register(_ignore_signals)


def _ignore_signals() -> None:
    for s in STOP_SIGNALS:
        if signal.getsignal(s) is _handle:
            signal.signal(s, signal.SIG_IGN)


def report_stop(exc: BaseException, prog: str = "thermospin-mc") -> int:
    """One line on stderr about a stop by SIGINT or SIGTERM; returns the exit status.

    It says ``checkpoint written to ...`` only for a final checkpoint that is
    on disk (written, fsync'ed and renamed before ``exc`` was raised).
    """
    ck = getattr(exc, "checkpoint", None)
    if getattr(exc, "written", False):
        tail = (f"checkpoint written to {str(ck)!r} ({exc.ntraj} of {exc.total} "
                "trajectories); run the same command to resume")
    else:
        err = getattr(exc, "error", None)
        tail = ("no checkpoint written" if err is None
                else f"the final checkpoint could not be written ({err})")
        if ck is not None and Path(ck).exists():
            tail += f"; {str(ck)!r} holds the last one written: run the same command to resume"
    what = "terminated by SIGTERM" if isinstance(exc, RunTerminated) else "interrupted by SIGINT"
    print(f"{prog}: {what}; {tail}", file=sys.stderr, flush=True)
    return getattr(exc, "status", STOP_SIGNALS[signal.SIGINT])
