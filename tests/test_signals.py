"""SIGINT, SIGTERM and SIGKILL on real ``thermospin-mc run`` processes (issue 21, item 3).

Every stop by SIGINT or SIGTERM must end with exit status 130 / 143, one line on
stderr and no traceback; the line may say ``checkpoint written to X (n of N
trajectories)`` only when X is on disk and holds those n trajectories. A
second signal never aborts the final write. SIGKILL leaves the last periodic
write. Whatever stopped it, running the same command again ends bit-identical
to an uninterrupted run with the same seed.

The runs are small (N = 5, a few seconds of batches of 64 trajectories, a
checkpoint after every batch); the signal is sent once a checkpoint was
(re)written, i.e. in the middle of the run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import thermospin_mc as tsm
from thermospin_mc.app import cli
from thermospin_mc.io import read_table
from thermospin_mc.signals import RunTerminated, StopWaiting, deferred_signals
from thermospin_mc.trajectories import batches
from thermospin_mc.trajectories.checkpoint import read_checkpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

NTRAJ = 16_000
SEED = 11
STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}
REPORT = re.compile(r"^thermospin-mc: (interrupted by SIGINT|terminated by SIGTERM); (.*)$")
WRITTEN = re.compile(r"^checkpoint written to '([^']+)' \((\d+) of (\d+) trajectories\); "
                     r"run the same command to resume$")


def _argv(ck: Path | None, out: Path, n_jobs: int = 1, ntraj: int = NTRAJ) -> list[str]:
    extra = [] if ck is None else ["--checkpoint", str(ck), "--checkpoint-every", "0"]
    return ["run", "--scenario", "pump", "--N", "5", "--times", "0:20:41", "--ntraj",
            str(ntraj), "--seed", str(SEED), "--n-jobs", str(n_jobs), "--batch-size", "64",
            *extra, "--out", str(out), "--format", "parquet", "--no-compare", "--no-progress"]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    """A child as started from a terminal: SIGINT and SIGTERM at their defaults (a test
    runner started from a non-interactive shell may have inherited SIGINT ignored)."""
    def defaults():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return subprocess.Popen(args, cwd=cwd, env={**os.environ, "CI": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=defaults)


def _cli(ck, out, cwd, n_jobs=1, ntraj=NTRAJ) -> subprocess.Popen:
    return _start([sys.executable, "-m", "thermospin_mc.cli", *_argv(ck, out, n_jobs, ntraj)],
                  cwd)


def _wait_for_write(ck: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Wait until ``ck`` is (re)written: the run is under way, and not about to end."""
    since = ck.stat().st_mtime_ns if ck.exists() else -1
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ck.exists() and ck.stat().st_mtime_ns > since:
            return
        assert proc.poll() is None, f"the run ended before the signal: {proc.stderr.read()}"
        time.sleep(0.005)
    raise AssertionError("no checkpoint was written")


def _finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=120)
    return err


def _check_report(proc: subprocess.Popen, err: str, first: int, ck: Path | None) -> int | None:
    """Status, one truthful line, no traceback; returns the trajectories of a written
    checkpoint (``None``: the line says none was written)."""
    assert proc.returncode == STATUS[first], err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    lines = [ln for ln in err.splitlines() if not ln.startswith("thermospin_mc: resuming")]
    assert len(lines) == 1, err
    m = REPORT.match(lines[0])
    assert m, err
    assert m.group(1).endswith(signal.Signals(first).name), err
    w = WRITTEN.match(m.group(2))
    if w is None:
        assert m.group(2).startswith("no checkpoint written"), err
        assert ck is None or ("holds the last one written" in err) == ck.exists(), err
        return None
    assert ck is not None and Path(w.group(1)) == ck and int(w.group(3)) == NTRAJ, err
    _, state, _ = read_checkpoint(ck)  # on disk, complete, and what the line says
    assert state["prefix_ntraj"] == int(w.group(2)), err
    assert not ck.with_name(ck.name + ".tmp").exists()
    assert not ck.with_name(ck.name + ".lock").exists()
    return int(w.group(2))


def _resume_and_compare(ck: Path, out: Path, cwd: Path, reference: tsm.Result) -> None:
    held = read_checkpoint(ck)[1]["prefix_ntraj"]
    done = subprocess.run([sys.executable, "-m", "thermospin_mc.cli", *_argv(ck, out)],
                          cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (f"resumed from checkpoint with {held} trajectories" in done.stdout) == (held > 0)
    got, _ = read_table(out / "expect.parquet")
    ref = reference.expect
    assert list(got.columns) == list(ref.columns)
    for col in ("t", "site", "ntraj"):
        assert np.array_equal(got[col].to_numpy(), ref[col].to_numpy()), col
    assert (got["observable"].to_numpy() == ref["observable"].to_numpy()).all()
    for col in ("mean", "sem"):
        assert np.array_equal(got[col].to_numpy(), ref[col].to_numpy(), equal_nan=True), col


@pytest.fixture(scope="module")
def reference() -> tsm.Result:
    model = cli.build_model({"scenario": "pump", "N": 5})
    return tsm.mcsolve(model, cli.parse_times("0:20:41"), ntraj=NTRAJ, seed=SEED,
                       cluster=tsm.Cluster(progress=False))


# --------------------------------------------------------------------------- one signal
@pytest.mark.parametrize(("sig", "n_jobs"), [(signal.SIGINT, 1), (signal.SIGTERM, 2),
                                             (signal.SIGKILL, 1)],
                         ids=["SIGINT-serial", "SIGTERM-threads", "SIGKILL"])
def test_signal_mid_run_then_resume_equals_uninterrupted(tmp_path, reference, sig, n_jobs):
    ck, out = tmp_path / "run.npz", tmp_path / "out"
    proc = _cli(ck, out, tmp_path, n_jobs)
    _wait_for_write(ck, proc)
    time.sleep(0.05)
    proc.send_signal(sig)
    err = _finish(proc)
    if sig == signal.SIGKILL:  # today's guarantee: the last periodic write survives
        assert proc.returncode == -signal.SIGKILL
        _, state, _ = read_checkpoint(ck)
        assert 0 < state["prefix_ntraj"] < NTRAJ
    else:
        n = _check_report(proc, err, sig, ck)
        assert n is not None and 0 <= n < NTRAJ, err  # threads: 0 if block 0 came late
    _resume_and_compare(ck, out, tmp_path, reference)


def test_sigterm_without_checkpoint_says_none_was_written(tmp_path):
    out = tmp_path / "out"
    proc = _cli(None, out, tmp_path, ntraj=200_000)
    # no checkpoint to watch: the output directory is made once the command runs (the
    # imports before that take a second or two, with Python's own signal handling)
    end = time.monotonic() + 60
    while not out.exists() and time.monotonic() < end and proc.poll() is None:
        time.sleep(0.005)
    time.sleep(0.5)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    err = _finish(proc)
    assert _check_report(proc, err, signal.SIGTERM, None) is None
    assert not (out / "expect.parquet").exists()


# --------------------------------------------------------------------------- two signals
def test_two_signals_50ms_apart_then_resume_equals_uninterrupted(tmp_path, reference):
    """Signal pairs on one checkpoint, each stopping a resumed run: status of the first
    signal, one truthful line, no traceback; the last resume completes the run."""
    ck, out = tmp_path / "run.npz", tmp_path / "out"
    pairs = [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGTERM),
             (signal.SIGINT, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT)]
    for k, (first, second) in enumerate(pairs):
        proc = _cli(ck, out, tmp_path, n_jobs=2)  # threads: a second signal ends the wait
        _wait_for_write(ck, proc)
        time.sleep(0.02 * k)  # vary the moment: mid-batch, mid-write
        proc.send_signal(first)
        time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(second)
        err = _finish(proc)
        n = _check_report(proc, err, first, ck)
        assert n is not None and n < NTRAJ, err
    _resume_and_compare(ck, out, tmp_path, reference)


SCRIPT = """
import os, signal, sys, time
from thermospin_mc.app import cli
from thermospin_mc.trajectories import driver

first = getattr(signal, sys.argv[1])
real = driver.write_checkpoint
calls = []

def write(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:  # a signal during a periodic write: recorded only
        os.kill(os.getpid(), first)
    elif len(calls) == 4:  # the final write: more signals, then a slow write
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
    out = real(*args, **kwargs)
    print(f"wrote {len(calls)}", flush=True)
    return out

driver.write_checkpoint = write
sys.argv = ["thermospin-mc", *sys.argv[2:]]
sys.exit(cli.main())
"""


@pytest.mark.parametrize("first", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signals_during_the_final_write_wait_for_it(tmp_path, reference, first):
    ck, out = tmp_path / "run.npz", tmp_path / "out"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SCRIPT))
    proc = _start([sys.executable, str(script), signal.Signals(first).name,
                   *_argv(ck, out)], tmp_path)
    out_text, err = proc.communicate(timeout=120)
    assert out_text.split() == ["wrote", "1", "wrote", "2", "wrote", "3", "wrote", "4"], err
    assert _check_report(proc, err, first, ck) == 3 * 64, err
    if first == signal.SIGINT:
        _resume_and_compare(ck, out, tmp_path, reference)


# --------------------------------------------------------------------------- in process
def _defaults_in_force() -> bool:
    return (signal.getsignal(signal.SIGINT) is signal.default_int_handler
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)


needs_defaults = pytest.mark.skipif(not _defaults_in_force(),
                                    reason="the test runner has its own signal handlers")


@needs_defaults
def test_deferral_records_holds_aborts_waits_and_restores():
    with deferred_signals("raise") as outer:
        with pytest.raises(RunTerminated) as info, deferred_signals() as inner:
            signal.raise_signal(signal.SIGTERM)  # recorded: the run goes on
            signal.raise_signal(signal.SIGINT)  # not in a wait: recorded too
            assert inner.received == [signal.SIGTERM, signal.SIGINT]
            raise inner.stopped(checkpoint="x.npz", written=True, ntraj=64, total=128)
        exc = info.value
        assert (exc.code, exc.status, exc.written, exc.ntraj) == (143, 143, True, 64)
        assert str(exc) == "SIGTERM: checkpoint written to 'x.npz' (64 of 128 trajectories)"
        assert outer.mode == "hold"  # later signals are ignored while the stop is reported
        signal.raise_signal(signal.SIGINT)
    assert _defaults_in_force()
    with pytest.raises(KeyboardInterrupt) as info, deferred_signals("raise"):
        signal.raise_signal(signal.SIGINT)  # outside a run: at once
    assert type(info.value) is KeyboardInterrupt and info.value.status == 130
    assert not info.value.written and "no checkpoint written" in str(info.value)
    with deferred_signals() as d:
        with pytest.raises(StopWaiting), d.waiting():
            signal.raise_signal(signal.SIGINT)  # the first: the wait goes on
            signal.raise_signal(signal.SIGINT)  # the second ends it
        assert d.signum == signal.SIGINT and not d.abortable
    assert _defaults_in_force()


@needs_defaults
def test_python_api_sigterm_raises_run_terminated_after_the_checkpoint(tmp_path, monkeypatch):
    model = cli.build_model({"scenario": "pump", "N": 5})
    times = cli.parse_times("0:20:41")
    kw = dict(ntraj=640, seed=3, cluster=tsm.Cluster(batch_size=64, progress=False))
    real, calls = batches.run_batch, []

    def run_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGTERM)  # mid-batch: the batch still finishes
        return real(*args, **kwargs)

    monkeypatch.setattr(batches, "run_batch", run_batch)
    ck = tmp_path / "ck.npz"
    with pytest.raises(tsm.RunTerminated) as info:
        tsm.mcsolve(model, times, **kw, checkpoint=tsm.Checkpointing(path=ck, every=1e9))
    exc = info.value  # the batch in flight was merged, then the checkpoint written
    assert exc.code == 143 and exc.written and exc.checkpoint == ck and exc.total == 640
    assert 0 < exc.ntraj < 640 and read_checkpoint(ck)[1]["prefix_ntraj"] == exc.ntraj
    assert _defaults_in_force()
    monkeypatch.setattr(batches, "run_batch", real)
    resumed = tsm.mcsolve(model, times, **kw, checkpoint=tsm.Checkpointing(path=ck))
    plain = tsm.mcsolve(model, times, **kw)
    assert resumed.metadata["resumed_ntraj"] == exc.ntraj
    for col in ("mean", "sem"):
        assert np.array_equal(resumed.expect[col], plain.expect[col], equal_nan=True)
