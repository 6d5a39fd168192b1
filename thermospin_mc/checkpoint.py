"""Checkpoint files of trajectory runs: format, atomic writes, verification.

A checkpoint is one uncompressed ``.npz`` archive (no pickled objects) with

- ``identity``: UTF-8 JSON naming what the numbers belong to: format name and
  schema version, model fingerprint (and the model itself, for messages), a
  hash of the output times, observables, seed entropy, code identity (package
  version, a hash of the numerical sources, numpy and numba versions), the
  statistics block size and every option that changes a trajectory's numbers;
- ``state``: UTF-8 JSON counters (finished prefix of blocks, trajectories,
  truncations, sector modes, elapsed time);
- plain numeric arrays: the merged accumulator of the contiguous finished
  prefix of blocks, the per-block accumulators of blocks finished out of
  order, and the jump/trajectory rows recorded so far.

Files are written to ``<name>.tmp``, flushed, fsync'ed and renamed over the
old file (``os.replace``), so a kill at any moment leaves either the old or
the new checkpoint, never a mixture. Reading verifies the archive's CRCs,
shapes and the identity; any problem is a ``ValueError`` and the file is never
modified by a failed read.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["FORMAT", "SCHEMA", "code_identity", "read_checkpoint", "write_checkpoint",
           "check_identity", "CheckpointLock"]

FORMAT = "thermospin_mc.checkpoint"
SCHEMA = 1

#: Sources whose change can alter a trajectory's numbers or their reduction.
_SOURCES = ("kernels.py", "sectors.py", "ensemble.py", "model.py", "thermal.py",
            "scaleout.py", "checkpoint.py")

#: Identity fields in the order they are checked, with their names in messages.
_FIELDS = (
    ("model_fingerprint", "model"),
    ("seed", "seed (SeedSequence entropy)"),
    ("code", "code version"),
    ("times_sha256", "output times"),
    ("observables", "observables"),
    ("block", "statistics block size"),
    ("max_magnons", "max_magnons"),
    ("dense_max", "dense_max"),
    ("record_jumps", "record_jumps setting"),
    ("keep_trajectories", "keep_trajectories setting"),
)


@functools.lru_cache(maxsize=1)
def code_identity() -> dict:
    """Package version, hash of the numerical sources, numpy and numba versions."""
    import numba

    from . import __version__

    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update(name.encode())
        h.update((here / name).read_bytes())
    return {"thermospin_mc": __version__, "source_sha256": h.hexdigest()[:16],
            "numpy": np.__version__, "numba": numba.__version__}


def times_hash(times: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(times, dtype=np.float64).tobytes()).hexdigest()


def times_summary(times: np.ndarray) -> str:
    """Human-readable description of an output grid (for error messages)."""
    return (f"{times.size} times on [{times[0]:.6g}, {times[-1]:.6g}] "
            f"(hash {times_hash(times)[:12]})")


def _json_array(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, sort_keys=True).encode(), dtype=np.uint8)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_checkpoint(path: str | Path, identity: dict, state: dict,
                     arrays: dict[str, np.ndarray]) -> Path:
    """Write a checkpoint atomically (temporary file, fsync, ``os.replace``)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    payload = {"identity": _json_array(identity), "state": _json_array(state)}
    for k, arr in arrays.items():
        payload["a_" + k] = np.ascontiguousarray(arr)
    with open(tmp, "wb") as fh:
        np.savez(fh, **payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _corrupt(path: Path, detail: str) -> ValueError:
    return ValueError(
        f"checkpoint {str(path)!r} is corrupted or not a thermospin-mc checkpoint ({detail}); "
        "it was left untouched: delete it or choose another checkpoint path to start afresh")


def read_checkpoint(path: str | Path) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """Read and integrity-check a checkpoint; returns ``(identity, state, arrays)``.

    Raises
    ------
    ValueError
        If the file is unreadable, truncated, fails its CRC checks, is not a
        checkpoint or has an unknown schema version.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            if "identity" not in files or "state" not in files:
                raise _corrupt(path, "identity or state record missing")
            # reading every member checks its CRC-32
            data = {k: z[k] for k in z.files}
    except ValueError as exc:
        if str(exc).startswith("checkpoint "):
            raise
        raise _corrupt(path, f"{type(exc).__name__}: {exc}") from exc
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, RuntimeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise ValueError(f"checkpoint {str(path)!r} does not exist") from exc
        raise _corrupt(path, f"{type(exc).__name__}: {exc}") from exc
    try:
        identity = json.loads(data.pop("identity").tobytes().decode())
        state = json.loads(data.pop("state").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"unreadable header: {exc}") from exc
    if not isinstance(identity, dict) or identity.get("format") != FORMAT:
        raise _corrupt(path, "format tag missing")
    if identity.get("schema") != SCHEMA:
        raise ValueError(f"checkpoint {str(path)!r} has schema version "
                         f"{identity.get('schema')!r}, this code reads version {SCHEMA}; "
                         "it was left untouched")
    if not isinstance(state, dict):
        raise _corrupt(path, "state record is not a table")
    arrays = {k[2:]: v for k, v in data.items() if k.startswith("a_")}
    return identity, state, arrays


def check_identity(path: str | Path, found: dict, expected: dict) -> None:
    """Refuse (``ValueError``) a checkpoint whose identity differs from this run's."""
    for key, label in _FIELDS:
        a, b = found.get(key), expected.get(key)
        if a != b:
            if key == "model_fingerprint":
                fm, em = found.get("model", {}), expected.get("model", {})
                keys = sorted(k for k in set(fm) | set(em) if fm.get(k) != em.get(k))
                shown = ", ".join(f"{k}: {fm.get(k)!r} there, {em.get(k)!r} here"
                                  for k in keys[:3])
                detail = f"fingerprint {a} there, {b} here ({shown})"
            elif key == "times_sha256":
                detail = (f"{found.get('times_summary', 'other times')} there, "
                          f"{expected.get('times_summary')} here")
            else:
                detail = f"{a!r} there, {b!r} here"
            raise ValueError(
                f"checkpoint {str(path)!r} belongs to a different {label}: {detail}; "
                "refusing to mix runs (the file was left untouched; use another checkpoint "
                "path, or delete the file to start afresh)")


class CheckpointLock:
    """Exclusive lock next to a checkpoint (two runs must not share one).

    The lock is an ``flock`` on ``<name>.lock``, a small file that records the
    holder's process id and host. The file is removed when the lock is
    released, on every exit path of the run (normal end, exception, Ctrl-C).
    A process killed outright (SIGKILL, power loss) cannot remove it, but the
    kernel drops its ``flock``: the next run then finds the file unlocked,
    takes it over and says so on stderr. A lock held by a live process is
    refused with a ``ValueError`` naming that process.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).with_name(Path(path).name + ".lock")
        self._fh = None

    def _holder(self, fh) -> str:
        with contextlib.suppress(OSError, ValueError):
            fh.seek(0)
            text = fh.read(200).decode(errors="replace").strip()
            if text:
                return text
        return "unknown process"

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            return self
        for _ in range(100):
            fh = open(self.path, "a+b")  # noqa: SIM115 - held for the run's lifetime
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = self._holder(fh)
                fh.close()
                raise ValueError(f"checkpoint {str(self.path)[:-5]!r} is in use by another "
                                 f"running process ({holder}; lock file "
                                 f"{str(self.path)!r})") from exc
            # the previous holder may have removed the file between our open and
            # our flock: then we hold a lock on a deleted file; start over
            try:
                same = os.fstat(fh.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                fh.close()
                continue
            previous = self._holder(fh)
            if previous != "unknown process":
                import sys

                print(f"thermospin_mc: taking over the stale lock {str(self.path)!r} left by "
                      f"a process that is no longer running ({previous})", file=sys.stderr)
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {_hostname()}\n".encode())
            fh.flush()
            self._fh = fh
            return self
        raise ValueError(f"could not lock {str(self.path)!r}: it keeps being replaced by "
                         "other processes")

    def __exit__(self, *exc):
        if self._fh is not None:
            # unlink while still holding the lock: a run waiting on this inode
            # sees it was removed (inode check above) and takes a new file
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self._fh.close()
            self._fh = None
        return False


def _hostname() -> str:
    import socket

    try:
        return socket.gethostname()
    except OSError:  # pragma: no cover
        return "unknown host"
