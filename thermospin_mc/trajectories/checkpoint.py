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

This module owns that schema: :func:`identity` builds the identity record,
:func:`dump` turns a :class:`stats.Reducer` into ``(state, arrays)`` and
:func:`restore` loads them back with every shape checked; :func:`resume`
and :func:`resolve_seed` are the run-level entry points, :class:`Checkpointing`
the validated option of ``mcsolve``.

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
from .pack import BLOCK
from .stats import Reducer
from .worker import code_identity

__all__ = ["FORMAT", "SCHEMA", "code_identity", "read_checkpoint", "write_checkpoint",
           "check_identity", "CheckpointLock", "Checkpointing", "identity", "dump",
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
    """Where and how often a run writes its checkpoint (validated on construction).

    ``path``: the ``.npz`` file (``None``: no checkpoint); ``resume``: ``None``
    resumes an existing file, ``True`` requires one, ``False`` refuses one;
    ``every``: seconds between writes (``0``: after every batch).
    """

    path: Path | None = None
    resume: bool | None = None
    every: float = 60.0

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


# --------------------------------------------------------------------------- identity
def _entropy_json(entropy):
    if isinstance(entropy, (int, np.integer)):
        return int(entropy)
    return [int(x) for x in entropy]


def identity(model, times: np.ndarray, names: tuple, entropy, max_magnons: int,
             dense_max: int, record_jumps: bool, keep: bool, pairs=None, operators=(),
             states: bool = False) -> dict:
    """What a checkpoint's numbers belong to (every field of ``_FIELDS`` must match).

    User operators enter as ``[name, digest]`` pairs (``Operator.to_dict()["digest"]``,
    a SHA-256 of the kept part), so a checkpoint of another operator, or of the same
    one under another name, is refused; ``states`` only when true. Runs without
    operators and states keep the identity record they had before either existed.
    """
    out = {
        "format": FORMAT, "schema": SCHEMA, "model_fingerprint": model.fingerprint(),
        "model": json.loads(json.dumps(model.to_dict())), "times_sha256": times_hash(times),
        "times_summary": times_summary(times), "nt": int(times.size),
        "observables": sorted(names), "seed": _entropy_json(entropy), "code": code_identity(),
        "block": BLOCK, "max_magnons": max_magnons, "dense_max": dense_max,
        "record_jumps": bool(record_jumps), "keep_trajectories": bool(keep),
    }
    if pairs is not None and len(pairs):
        out["pairs"] = np.asarray(pairs).tolist()
    if operators:
        out["operators"] = [[op.name, op.to_dict()["digest"]] for op in operators]
    if states:
        out["states"] = True
    return out


def resolve_seed(seed, path):
    """``seed=None`` with an existing checkpoint continues the checkpoint's seed."""
    if seed is None and path is not None and Path(path).exists():
        found, _, _ = read_checkpoint(path)
        if "seed" in found:
            return found["seed"]
    return seed


# --------------------------------------------------------------------------- reducer state
def dump(red: Reducer, elapsed: float) -> tuple[dict, dict]:
    """A reducer's ``(state, arrays)`` in the checkpoint schema."""
    nt, nc = red.nt, red.ncomp
    red.compact()
    pend = sorted(red.pending)
    blks = [red.pending[b] for b in pend]
    state = {"prefix_blocks": red.next_block, "prefix_ntraj": red.ntraj,
             "ntrunc": red.ntrunc, "elapsed_s": elapsed, "cap": red.cap,
             "modes": {str(k): m for k, m in sorted(red.modes.items())}}
    if red.base is not None:
        state["base"] = {"ntrunc": red.base["ntrunc"], "njumps": red.base["njumps"]}
    acc = red.acc
    arrays = {
        "acc_cnt": acc.cnt, "acc_mean": acc.mean, "acc_m2": acc.m2,
        "grp_cnt": red.groups.cnt, "grp_mean": red.groups.mean,
        "jumps": red.jumps[0] if red.jumps else np.zeros((0, 4)),
        "kept": red.kept[0] if red.kept else np.zeros((0, nt, nc)),
        "p_ids": np.array(pend, dtype=np.int64),
        "p_nb": np.array([k["nb"] for k in blks], dtype=np.int64),
        "p_ntrunc": np.array([k["ntrunc"] for k in blks], dtype=np.int64),
        "p_cnt": np.stack([k["cnt"] for k in blks]) if blks
        else np.zeros((0, nt), dtype=np.int64),
        "p_mean": np.stack([k["mean"] for k in blks]) if blks else np.zeros((0, nt, nc)),
        "p_m2": np.stack([k["m2"] for k in blks]) if blks else np.zeros((0, nt, nc)),
        "p_njumps": np.array([len(k["jumps"]) if red.record_jumps else 0 for k in blks],
                             dtype=np.int64),
        "p_jumps": np.concatenate([k["jumps"] for k in blks])
        if blks and red.record_jumps else np.zeros((0, 4)),
        "p_kept": np.concatenate([k["kept"] for k in blks])
        if blks and red.keep else np.zeros((0, nt, nc)),
    }
    if red.base is not None:
        arrays.update(base_cnt=red.base["cnt"], base_mean=red.base["mean"],
                      base_m2=red.base["m2"], base_grp_cnt=red.base["g_cnt"],
                      base_grp_mean=red.base["g_mean"])
    if red.rho is not None:  # states=True: the sum of states, per pending block, before base
        arrays["st_sum"] = red.rho
        arrays["p_st"] = (np.stack([k["rho"] for k in blks]) if blks
                          else np.zeros((0, red.state_size)))
        if red.base is not None:
            arrays["base_st"] = red.base["rho"]
    return state, arrays


def restore(red: Reducer, path, state: dict, arrays: dict) -> None:
    """Load a verified checkpoint's state into ``red`` (shape errors: a corrupted file)."""
    nt, nc = red.nt, red.ncomp
    try:
        a = {k: arrays[k] for k in ("acc_cnt", "acc_mean", "acc_m2", "grp_cnt", "grp_mean",
                                     "jumps", "kept",
                                     "p_ids", "p_nb", "p_ntrunc", "p_cnt", "p_mean",
                                     "p_m2", "p_njumps", "p_jumps", "p_kept")}
        pb, pn = int(state["prefix_blocks"]), int(state["prefix_ntraj"])
        ntrunc = int(state["ntrunc"])
        # sector -> mode (a schedule's sectors: "m@t=<stage start>")
        modes = {(int(k) if str(k).isdigit() else str(k)): str(m)
                 for k, m in dict(state["modes"]).items()}
        k = a["p_ids"].shape[0]
        ok = (a["acc_cnt"].shape == (nt,) and a["acc_mean"].shape == (nt, nc)
              and a["grp_cnt"].shape == red.groups.cnt.shape
              and a["grp_mean"].shape == red.groups.mean.shape
              and a["acc_m2"].shape == (nt, nc) and a["jumps"].ndim == 2
              and a["jumps"].shape[1] == 4 and a["kept"].shape[1:] == (nt, nc)
              and a["p_nb"].shape == (k,) and a["p_ntrunc"].shape == (k,)
              and a["p_cnt"].shape == (k, nt) and a["p_mean"].shape == (k, nt, nc)
              and a["p_m2"].shape == (k, nt, nc) and a["p_njumps"].shape == (k,)
              and a["p_jumps"].shape == (int(a["p_njumps"].sum()), 4)
              and a["p_kept"].shape[1:] == (nt, nc)
              and (pn == 0 if pb == 0 else (pb - 1) * BLOCK < pn <= pb * BLOCK))
        if red.keep:
            ok = ok and a["kept"].shape[0] == pn and \
                a["p_kept"].shape[0] == int(a["p_nb"].sum())
        base = None
        if "base" in state:
            base = {"cnt": arrays["base_cnt"].astype(np.int64),
                    "mean": arrays["base_mean"].astype(np.float64),
                    "m2": arrays["base_m2"].astype(np.float64),
                    "ntrunc": int(state["base"]["ntrunc"]),
                    "njumps": int(state["base"]["njumps"])}
            base["g_cnt"] = arrays["base_grp_cnt"].astype(np.int64)
            base["g_mean"] = arrays["base_grp_mean"].astype(np.float64)
            ok = ok and (base["cnt"].shape == (nt,) and base["mean"].shape == (nt, nc)
                         and base["g_cnt"].shape == (nt,) and base["g_mean"].shape == (nt, nc)
                         and base["m2"].shape == (nt, nc)
                         and 0 <= base["njumps"] <= a["jumps"].shape[0]
                         and pb >= 1 and pn < pb * BLOCK)
        if red.rho is not None:
            ns = red.state_size
            a["st_sum"], a["p_st"] = arrays["st_sum"], arrays["p_st"]
            ok = ok and a["st_sum"].shape == (ns,) and a["p_st"].shape == (k, ns)
            if base is not None:
                base["rho"] = arrays["base_st"].astype(np.float64)
                ok = ok and base["rho"].shape == (ns,)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _corrupt(Path(path), f"incomplete state: {exc}") from exc
    if not ok:
        raise _corrupt(Path(path), "inconsistent array shapes")
    if pn > red.cap:
        raise ValueError(
            f"checkpoint {str(path)!r} already holds {pn} trajectories, more than the "
            f"{red.cap} asked for (ntraj, or max_ntraj with target_sem); ask for at "
            "least that many or use another checkpoint path")
    if pn != pb * BLOCK and pn != red.cap:
        if base is None:
            raise ValueError(
                f"checkpoint {str(path)!r} holds a finished run of {pn} trajectories "
                f"(not a whole number of {BLOCK}-trajectory blocks) written by an "
                f"older version; it can only be resumed with ntraj={pn}")
        # extend a run that ended with a short block: go back to the state
        # before that block; it is run again in full
        red.restored = pn
        pb -= 1
        pn = pb * BLOCK
        a["acc_cnt"], a["acc_mean"], a["acc_m2"] = base["cnt"], base["mean"], base["m2"]
        g = pb % a["grp_cnt"].shape[0]
        a["grp_cnt"], a["grp_mean"] = a["grp_cnt"].copy(), a["grp_mean"].copy()
        a["grp_cnt"][g], a["grp_mean"][g] = base["g_cnt"], base["g_mean"]
        ntrunc = base["ntrunc"]
        if red.rho is not None:
            a["st_sum"] = base["rho"]
        a["jumps"] = a["jumps"][:base["njumps"]]
        a["kept"] = a["kept"][:pn]
        base = None
    red.base = base
    red.restored = max(red.restored, pn)
    red.acc.load(a["acc_cnt"], a["acc_mean"], a["acc_m2"])
    red.groups.load(a["grp_cnt"], a["grp_mean"])
    if red.rho is not None:
        red.rho = np.array(a["st_sum"], dtype=np.float64)
    red.next_block, red.ntraj, red.ntrunc, red.modes = pb, pn, ntrunc, modes
    if red.record_jumps and len(a["jumps"]):
        red.jumps = [a["jumps"]]
    if red.keep and pn:
        red.kept = [a["kept"]]
    joff = koff = 0
    for i, b in enumerate(a["p_ids"].tolist()):
        nb, nj = int(a["p_nb"][i]), int(a["p_njumps"][i])
        blk = {"cnt": a["p_cnt"][i].astype(np.int64), "mean": a["p_mean"][i],
               "m2": a["p_m2"][i], "ntrunc": int(a["p_ntrunc"][i]), "nb": nb,
               "jumps": a["p_jumps"][joff:joff + nj] if red.record_jumps else None,
               "kept": a["p_kept"][koff:koff + nb] if red.keep else None,
               "rho": (np.array(a["p_st"][i], dtype=np.float64) if red.rho is not None
                       else None)}
        joff += nj
        koff += nb if red.keep else 0
        # a block finished beyond the prefix is reused only if it has the same size
        if pb <= b < red.nblocks and nb == red.block_size(b):
            red.pending[b] = blk


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
