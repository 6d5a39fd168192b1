"""Tables to parquet/CSV with metadata, and back. No physics here.

Parquet files carry the metadata as JSON under the schema key
``thermospin_mc``. CSV files are plain tables (``pandas.read_csv(path)`` reads
them as they are); their metadata goes to a sidecar JSON file next to them,
``<stem>.meta.json`` (``expect.csv`` -> ``expect.meta.json``). CSV files of
earlier versions, whose first line was ``# thermospin_mc: {json}``, are still
read. Every file of the package (tables, sidecars, checkpoints) is written by
:func:`atomic_write`: a temporary name in the same directory, flushed and
fsync'ed, then renamed over the target and the directory fsync'ed, so an
interrupted write never leaves a truncated file behind.

``thermospin_mc.read_result`` (in ``results``) rebuilds a whole result from
these files; :func:`save_result` writes one, with a rescue location if the
requested one fails.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["write_table", "read_table", "sidecar_path", "check_output_dir",
           "check_output_file", "save_result", "describe_os_error",
           "OutputError", "atomic_write", "jsonable", "dumps", "write_states", "read_states",
           "STATES_FILE"]

#: File name (after the prefix) of the block density matrices of a result.
STATES_FILE = "states.npz"

_KEY = "thermospin_mc"
_OLD_CSV_PREFIX = f"# {_KEY}: "
_HIDDEN = "__hidden__"


class OutputError(OSError):
    """An output location that cannot be used (the message names path and reason)."""


def describe_os_error(exc: OSError) -> str:
    """An OS error in words (no errno numbers)."""
    words = {
        errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
        errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on device",
        errno.ENOTDIR: "a part of the path is a file, not a directory",
        errno.EISDIR: "it is a directory", errno.EEXIST: "it already exists",
        errno.ENAMETOOLONG: "the name is too long", errno.ENOENT: "no such file or directory",
        errno.EDQUOT: "disk quota exceeded", errno.EIO: "input/output error",
    }
    return words.get(exc.errno, exc.strerror or type(exc).__name__)


def jsonable(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def dumps(meta: dict) -> str:
    """Metadata as sorted JSON (numpy scalars and arrays become plain numbers/lists)."""
    return json.dumps(meta, sort_keys=True, default=jsonable)


def sidecar_path(path: str | Path) -> Path:
    """The metadata file of a CSV table: ``dir/expect.csv`` -> ``dir/expect.meta.json``."""
    path = Path(path)
    return path.with_name(path.stem + ".meta.json")


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write) -> Path:
    """Write a file atomically: ``write(fh)`` fills ``<name>.tmp``, opened ``"wb"``.

    The temporary file is flushed and fsync'ed, renamed over ``path``
    (``os.replace``) and the directory entry fsync'ed: a kill at any moment
    leaves either the old or the new file, never a mixture. On any error the
    temporary file is removed and the error re-raised. ``write`` may also be
    ``bytes`` or ``str`` (UTF-8). Returns ``path``.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(write, str):
        data = write.encode("utf-8")
        write = lambda fh: fh.write(data)  # noqa: E731
    elif isinstance(write, (bytes, bytearray)):
        data = bytes(write)
        write = lambda fh: fh.write(data)  # noqa: E731
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_table(df: pd.DataFrame, path: str | Path, metadata: dict,
                hidden: dict | None = None) -> Path:
    """Write ``df`` to ``path`` (``.parquet`` or ``.csv``) atomically with metadata.

    Parquet keeps the metadata in its schema; a CSV table gets the sidecar
    :func:`sidecar_path`. ``hidden`` holds JSON-able data that belongs to the
    table but is not a column (e.g. a result's per-row sums of squared
    deviations): parquet stores it under the schema keys
    ``thermospin_mc.<name>``, the CSV sidecar under ``"__hidden__"``;
    :func:`read_table` with ``hidden=True`` returns it. Returns ``path``.
    """
    path = Path(path)
    if path.suffix not in (".parquet", ".csv"):
        raise ValueError(f"table path must end in .parquet or .csv, got {str(path)!r}")
    plain = df.copy()
    plain.attrs = {}
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(plain, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[_KEY.encode()] = dumps(metadata).encode()
        for k, val in (hidden or {}).items():
            meta[f"{_KEY}.{k}".encode()] = json.dumps(val).encode()
        table = table.replace_schema_metadata(meta)
        return atomic_write(path, lambda fh: pq.write_table(table, fh))
    side = dumps(metadata) + "\n"
    if hidden:
        side = dumps({_HIDDEN: hidden, **metadata}) + "\n"
    atomic_write(sidecar_path(path), side)
    return atomic_write(path, lambda fh: fh.write(plain.to_csv(index=False).encode("utf-8")))


def read_table(path: str | Path, hidden: bool = False):
    """Read a table written by :func:`write_table`; returns ``(df, metadata)``
    (``(df, metadata, hidden)`` with ``hidden=True``).

    A CSV table without a sidecar (e.g. written by another program) comes back
    with empty metadata.
    """
    extra: dict = {}
    path = Path(path)
    if not path.exists():
        raise ValueError(f"table file does not exist: {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"expected a table file, got the directory {str(path)!r} "
                         "(use thermospin_mc.read_result for a result directory)")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(_KEY.encode())
        meta = json.loads(raw) if raw else {}
        prefix = f"{_KEY}.".encode()
        extra = {k[len(prefix):].decode(): json.loads(val)
                 for k, val in (table.schema.metadata or {}).items() if k.startswith(prefix)}
        df = table.to_pandas()
    elif path.suffix == ".csv":
        meta = {}
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
        if first.startswith(_OLD_CSV_PREFIX):  # format of version 0.1.0
            meta = json.loads(first[len(_OLD_CSV_PREFIX):])
            df = pd.read_csv(path, comment="#")
        else:
            side = sidecar_path(path)
            if side.exists():
                meta = json.loads(side.read_text(encoding="utf-8"))
                extra = meta.pop(_HIDDEN, {}) if isinstance(meta, dict) else {}
            df = pd.read_csv(path)
    else:
        raise ValueError(f"table path must end in .parquet or .csv, got {str(path)!r}")
    df.attrs = {_KEY: meta}
    return (df, meta, extra) if hidden else (df, meta)


# --------------------------------------------------------------------------- output safety
def check_output_dir(directory: str | Path, create: bool = True) -> Path:
    """Make sure results can be written to ``directory`` before computing them.

    The directory is created (with its parents) when ``create`` is true; it
    must not be a file, and a probe file must be writable in it (or, without
    ``create``, in its nearest existing ancestor). Raises :class:`OutputError`
    with the path and the reason in words.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"output directory {str(directory)!r} is an existing file, not a "
                          "directory")
    probe_in = directory
    if create:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output directory {str(directory)!r}: "
                              f"{describe_os_error(exc)}") from exc
    else:
        while not probe_in.exists():
            probe_in = probe_in.parent
        if not probe_in.is_dir():
            raise OutputError(f"cannot create output directory {str(directory)!r}: "
                              f"{str(probe_in)!r} is a file")
    try:
        fd, name = tempfile.mkstemp(prefix=".thermospin_mc_probe_", dir=probe_in)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        if probe_in == directory:
            raise OutputError(f"cannot write to output directory {str(directory)!r}: "
                              f"{describe_os_error(exc)}") from exc
        raise OutputError(f"cannot create output directory {str(directory)!r}: cannot write "
                          f"in {str(probe_in)!r} ({describe_os_error(exc)})") from exc
    return directory


def check_output_file(path: str | Path, create: bool = True) -> Path:
    """Check that a file (e.g. a checkpoint) can be written at ``path``.

    Its directory is created when ``create`` is true (as the checkpoint writer
    does), and must accept a probe file; ``path`` must not be a directory.
    Raises :class:`OutputError` with the path and the reason in words.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{str(path)!r} is a directory, expected a file path")
    try:
        check_output_dir(path.parent, create=create)
    except OutputError as exc:
        raise OutputError(f"cannot write {str(path)!r}: {exc}") from exc
    return path


def save_result(result, directory: str | Path, formats=("parquet", "csv"),
                prefix: str = "", tables: dict | None = None) -> list[Path]:
    """Write a result's tables; if that fails, rescue them to a fallback directory.

    ``tables`` adds tables that belong to the result, ``{name: (df, metadata)}``,
    written as ``<prefix><name>.parquet`` / ``.csv`` (with the sidecar
    ``<prefix><name>.meta.json``) by :func:`write_table`, in the same formats
    (e.g. ``compare``: the run beside its exact reference).

    On failure the tables are written to a new directory under the system's
    temporary directory (or the current directory, then the home directory)
    and an :class:`OutputError` is raised whose message names the failed path,
    the reason and where the results now are. Nothing computed is lost.
    """
    directory = Path(directory)
    tables = dict(tables or {})
    for name in tables:
        if name in ("expect", "jumps") or not str(name).isidentifier():
            raise ValueError(f"extra table name must be a plain name other than expect and "
                             f"jumps, got {name!r}")
    try:
        check_output_dir(directory)
        return _write_formats(result, directory, formats, prefix, tables)
    except OSError as exc:
        reason = str(exc) if isinstance(exc, OutputError) else (
            f"cannot write to {str(getattr(exc, 'filename', None) or directory)!r}: "
            f"{describe_os_error(exc)}")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for base in (Path(tempfile.gettempdir()), Path.cwd(), Path.home()):
            try:
                rescue = Path(tempfile.mkdtemp(prefix=f"thermospin_mc_rescue_{stamp}_",
                                               dir=base))
                _write_formats(result, rescue, ("parquet", "csv"), prefix, tables)
            except OSError:
                continue
            raise OutputError(f"{reason}; the results were saved to {str(rescue)!r} "
                              "instead") from exc
        raise OutputError(f"{reason}; no fallback location was writable either") from exc


def _write_formats(result, directory: Path, formats, prefix: str,
                   tables: dict | None = None) -> list[Path]:
    written = []
    for fmt in formats:
        written += (result.to_parquet(directory, prefix) if fmt == "parquet"
                    else result.to_csv(directory, prefix))
        for name, (df, meta) in (tables or {}).items():
            written.append(write_table(df, directory / f"{prefix}{name}.{fmt}", meta))
    states = getattr(result, "states", None)
    if states:
        written.append(write_states(directory / f"{prefix}{STATES_FILE}", states))
    return written


def write_states(path: str | Path, states) -> Path:
    """Write block density matrices atomically as an ``.npz`` file.

    ``states`` is a sequence of objects with ``N`` and ``blocks`` (``{m: square
    complex array}``, e.g. :class:`thermospin_mc.BlockState`); the file holds
    ``N``, ``count`` and one array ``s<k>_m<m>`` per state ``k`` and sector ``m``
    (row order: the sector basis). :func:`read_states` reads it back.
    """
    states = list(states)
    arrays = {"N": np.array(states[0].N if states else 0, dtype=np.int64),
              "count": np.array(len(states), dtype=np.int64)}
    for k, st in enumerate(states):
        if st.N != arrays["N"]:
            raise ValueError(f"states must all have the same N, got {st.N} and "
                             f"{int(arrays['N'])}")
        for m, B in st.blocks.items():
            arrays[f"s{k}_m{m}"] = np.asarray(B, dtype=complex)
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def read_states(path: str | Path) -> tuple[int, list[dict]]:
    """``(N, [{m: block}, ...])`` from a file of :func:`write_states`."""
    with np.load(Path(path), allow_pickle=False) as data:
        N, count = int(data["N"]), int(data["count"])
        out: list[dict] = [{} for _ in range(count)]
        for key in data.files:
            if key.startswith("s") and "_m" in key:
                k, m = key[1:].split("_m")
                out[int(k)][int(m)] = data[key]
    return N, [dict(sorted(b.items())) for b in out]
