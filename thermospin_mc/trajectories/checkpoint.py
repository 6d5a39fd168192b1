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
  order, and the jump/trajectory rows recorded so far; with ``states=True``
  also the sum of states of the prefix (``st_sum``), of each pending block
  (``p_st``) and before a short last block (``base_st``). Operators enter
  the identity as ``[name, digest]`` pairs, schedules as every stage.

This module owns the file: its format, :func:`identity` (the identity
record, from the run's job and seed), reading with every check, the lock,
:class:`Checkpointing` (the option record of ``mcsolve``) and :func:`resume`,
the run's entry point (read, verify, restore).
:mod:`~thermospin_mc.trajectories.snapshot` turns a reducer into the
``state`` and arrays and back (:func:`dump`, :func:`restore`, re-exported here).

Files are written by :func:`thermospin_mc.io.atomic_write` (``<name>.tmp``,
flushed, fsync'ed, renamed over the old file): a kill at any moment leaves the
old or the new checkpoint, never a mixture. Reading verifies the CRCs, shapes
and identity; any problem is a ``ValueError``, the file never modified.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _validate as v
from ..io import atomic_write
from .batches import BLOCK
from .snapshot import corrupt, dump, restore  # dump, restore: re-exported
from .stats import Reducer
from .worker import Job, code_identity

__all__ = ["FORMAT", "SCHEMA", "code_identity", "read_checkpoint", "write_checkpoint",
           "check_identity", "corrupt", "CheckpointLock", "Checkpointing", "identity", "dump",
           "restore", "resume", "resolve_seed", "times_hash", "times_summary"]

FORMAT = "thermospin_mc.checkpoint"
SCHEMA = 1

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
    ("operators", "operators (name, digest of the kept part)"),
    ("states", "states setting"),
)


def times_hash(times: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(times, dtype=np.float64).tobytes()).hexdigest()


def times_summary(times: np.ndarray) -> str:
    """Human-readable description of an output grid (for error messages)."""
    return (f"{times.size} times on [{times[0]:.6g}, {times[-1]:.6g}] "
            f"(hash {times_hash(times)[:12]})")


def _json_array(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, sort_keys=True).encode(), dtype=np.uint8)


def write_checkpoint(path: str | Path, identity: dict, state: dict,
                     arrays: dict[str, np.ndarray]) -> Path:
    """Write a checkpoint atomically (:func:`thermospin_mc.io.atomic_write`)."""
    payload = {"identity": _json_array(identity), "state": _json_array(state)}
    for k, arr in arrays.items():
        payload["a_" + k] = np.ascontiguousarray(arr)
    return atomic_write(path, lambda fh: np.savez(fh, **payload))


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
                raise corrupt(path, "identity or state record missing")
            # reading every member checks its CRC-32
            data = {k: z[k] for k in z.files}
    except ValueError as exc:
        if str(exc).startswith("checkpoint "):
            raise
        raise corrupt(path, f"{type(exc).__name__}: {exc}") from exc
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, RuntimeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise ValueError(f"checkpoint {str(path)!r} does not exist") from exc
        raise corrupt(path, f"{type(exc).__name__}: {exc}") from exc
    try:
        identity = json.loads(data.pop("identity").tobytes().decode())
        state = json.loads(data.pop("state").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise corrupt(path, f"unreadable header: {exc}") from exc
    if not isinstance(identity, dict) or identity.get("format") != FORMAT:
        raise corrupt(path, "format tag missing")
    if identity.get("schema") != SCHEMA:
        raise ValueError(f"checkpoint {str(path)!r} has schema version "
                         f"{identity.get('schema')!r}, this code reads version {SCHEMA}; "
                         "it was left untouched")
    if not isinstance(state, dict):
        raise corrupt(path, "state record is not a table")
    arrays = {k[2:]: v for k, v in data.items() if k.startswith("a_")}
    return identity, state, arrays


def _flat_model(d) -> dict:
    """A model record; a schedule's flattened to ``stage k t`` / ``stage k <key>``
    entries (so that a refusal names the stage and the key that differ)."""
    if not isinstance(d, dict) or not isinstance(d.get("schedule"), list):
        return d if isinstance(d, dict) else {}
    out = {"stages": len(d["schedule"])}
    for k, st in enumerate(d["schedule"]):
        out.update({f"stage {k} {key}": val for key, val in
                    {"t": st.get("t"), **dict(st.get("model", {}))}.items()})
    return out


def check_identity(path: str | Path, found: dict, expected: dict) -> None:
    """Refuse (``ValueError``) a checkpoint whose identity differs from this run's."""
    for key, label in _FIELDS:
        a, b = found.get(key), expected.get(key)
        if a != b:
            if key == "model_fingerprint":
                fm, em = _flat_model(found.get("model", {})), _flat_model(
                    expected.get("model", {}))
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


# --------------------------------------------------------------------------- run options
@dataclass(frozen=True)
class Checkpointing:
    """What a run keeps: its checkpoint file and, on request, every trajectory's rows
    (validated on construction).

    Parameters
    ----------
    path : str or Path, optional
        The ``.npz`` checkpoint file (``None``: no checkpoint).
    resume : bool, optional
        ``None`` resumes an existing file, ``True`` requires one, ``False``
        refuses one.
    every : float
        Seconds between writes (``0``: after every batch).
    keep_trajectories : bool
        Keep each trajectory's rows in ``Result.trajectories`` (memory grows as
        ``ntraj``; the checkpoint holds them too, so a resumed run has them all).
    """

    path: Path | None = None
    resume: bool | None = None
    every: float = 60.0
    keep_trajectories: bool = False

    def __post_init__(self):
        if self.resume is not None and not isinstance(self.resume, bool):
            raise ValueError(f"resume must be True, False or None, got {self.resume!r}")
        path = self.path
        if path is not None:
            if not isinstance(path, (str, Path)) or not str(path).strip():
                raise ValueError(f"checkpoint must be a file path, got {path!r}")
            path = Path(path)
            if path.is_dir():
                raise ValueError(f"checkpoint must be a file path, got the directory "
                                 f"{str(path)!r}")
            object.__setattr__(self, "path", path)
        elif self.resume:
            raise ValueError("resume=True needs a checkpoint path (checkpoint=...)")
        object.__setattr__(self, "every", v.real("checkpoint_every", self.every, lo=0.0))
        object.__setattr__(self, "keep_trajectories",
                           v.flag("keep_trajectories", self.keep_trajectories))


# --------------------------------------------------------------------------- identity
def _entropy_json(entropy):
    if isinstance(entropy, (int, np.integer)):
        return int(entropy)
    return [int(x) for x in entropy]


def identity(job: Job, entropy) -> dict:
    """What a checkpoint's numbers belong to: the run's :class:`~worker.Job` (what
    every trajectory computes) and its seed (every field of ``_FIELDS`` must match).

    User operators enter as ``[name, digest]`` pairs (``Operator.to_dict()["digest"]``,
    a SHA-256 of the kept part), so a checkpoint of another operator, or of the same
    one under another name, is refused; ``states`` only when true. Runs without
    operators and states keep the identity record they had before either existed.
    """
    model, times, pairs, operators = job.model, job.times, job.pairs, job.operators
    out = {
        "format": FORMAT, "schema": SCHEMA, "model_fingerprint": model.fingerprint(),
        "model": json.loads(json.dumps(model.to_dict())), "times_sha256": times_hash(times),
        "times_summary": times_summary(times), "nt": int(times.size),
        "observables": sorted(job.names), "seed": _entropy_json(entropy),
        "code": code_identity(), "block": BLOCK, "max_magnons": job.max_magnons,
        "dense_max": job.dense_max, "record_jumps": bool(job.record_jumps),
        "keep_trajectories": bool(job.keep),
    }
    if pairs is not None and len(pairs):
        out["pairs"] = np.asarray(pairs).tolist()
    if operators:
        out["operators"] = [[op.name, op.to_dict()["digest"]] for op in operators]
    if job.states:
        out["states"] = True
    return out


def resolve_seed(seed, path):
    """``seed=None`` with an existing checkpoint continues the checkpoint's seed."""
    if seed is None and path is not None and Path(path).exists():
        found, _, _ = read_checkpoint(path)
        if "seed" in found:
            return found["seed"]
    return seed


def resume(path: Path, resume_: bool | None, expected: dict, red: Reducer) -> float:
    """Load an existing checkpoint into ``red``; returns the elapsed time it records."""
    if not path.exists():
        if resume_:
            raise ValueError(f"resume=True but there is no checkpoint at {str(path)!r}")
        return 0.0
    if resume_ is False:
        raise ValueError(f"checkpoint {str(path)!r} already exists; pass resume=True (or omit "
                         "resume) to continue it, or choose another path (it is never "
                         "overwritten by a new run)")
    found, state, arrays = read_checkpoint(path)
    check_identity(path, found, expected)
    restore(red, path, state, arrays)
    return float(state.get("elapsed_s", 0.0))
