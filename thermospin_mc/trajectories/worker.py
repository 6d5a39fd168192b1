"""What runs on a worker process: the batch job, worker preparation, code identity.

Light on purpose (no pandas, no orchestration): a Dask or loky worker
unpickles a :class:`Job` and calls :func:`run_job`; :func:`prepare_worker`
gets it ready for a run before its first batch (kernels, sector pack, initial
path); :func:`dask_setup` is a Dask preload hook that loads the package and
the kernels when a worker starts::

    dask worker tcp://scheduler:8786 --preload thermospin_mc.trajectories.worker
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from . import batches as B
from . import kernels as K
from .layouts import kernel_layout

__all__ = ["Job", "run_job", "prepare_worker", "code_identity", "source_digest",
           "PRESENTATION", "dask_setup"]

#: Modules left out of the code identity: the command-line front end. Nothing of the
#: library imports them (tests/test_identity.py checks it, lazy imports included); they
#: reach a run's numbers only through the arguments they pass to the API (model, times,
#: seed, observables, run options), which a checkpoint records and compares by value.
#: ``progress.py`` and ``plotting.py`` show nothing but are imported by the library
#: (``driver``, ``reproduce``), so they count.
PRESENTATION = ("cli.py", "app/cli.py", "app/cli_args.py", "app/cli_jumps.py",
                "app/cli_counts.py", "app/cli_stats.py", "app/cli_fcs.py", "app/cli_rare.py")
#: What the strings of a message (exception, ``print``, ``warnings.warn``) become.
_MESSAGE = repr("<message>")


def _is_docstring(node) -> bool:
    """A bare string statement (a docstring or a string used as a comment)."""
    return (type(node) is ast.Expr and type(node.value) is ast.Constant
            and type(node.value.value) is str)


def _is_message_call(func) -> bool:
    """``print(...)``, ``warn(...)`` or ``warnings.warn(...)``."""
    return ((type(func) is ast.Name and func.id in ("print", "warn"))
            or (type(func) is ast.Attribute and func.attr == "warn"
                and type(func.value) is ast.Name and func.value.id == "warnings"))


def _message_argument(node, out: list) -> None:
    """An argument of a message call: a placeholder if it holds a string."""
    if any(type(n) is ast.JoinedStr or (type(n) is ast.Constant and type(n.value) is str)
           for n in ast.walk(node)):
        out.append(_MESSAGE)
    else:
        _canonical(node, out)


def _canonical(node, out: list, message: bool = False) -> None:
    """Append a normalised serialisation of a syntax tree to ``out``.

    Like ``ast.dump`` without positions, minus what cannot change a number:
    docstrings and other bare string statements are left out, and every
    argument of ``raise X(...)``, ``print(...)`` and ``warnings.warn(...)`` that
    holds a string (f-strings and concatenations included) becomes one
    placeholder. Empty fields (``None``, ``[]``) are left out too, so that
    fields newer Pythons add empty (``type_params``) do not change the text.
    ``message``: ``node`` is the exception of a ``raise``.
    """
    kind = type(node)
    if kind is list:
        out.append("[")
        for item in node:
            if not _is_docstring(item):
                _canonical(item, out)
                out.append(",")
        out.append("]")
        return
    if not isinstance(node, ast.AST):
        out.append(repr(node))
        return
    if kind is ast.Call and (message or _is_message_call(node.func)):
        out.append("Call(func=")
        _canonical(node.func, out)
        out.append(",args=[")
        for arg in node.args:
            _message_argument(arg, out)
            out.append(",")
        out.append("],keywords=[")
        for kw in node.keywords:
            out.append(f"keyword({kw.arg!r},")
            _message_argument(kw.value, out)
            out.append("),")
        out.append("])")
        return
    out.append(kind.__name__)
    out.append("(")
    for name, value in ast.iter_fields(node):
        if value is None or (type(value) is list and not value):
            continue
        out.append(name)
        out.append("=")
        _canonical(value, out, message=kind is ast.Raise and name == "exc")
        out.append(",")
    out.append(")")


def source_digest(package_dir: str | Path | None = None) -> str:
    """SHA-256 (hex) of the normalised sources of a package directory.

    Every ``*.py`` file under ``package_dir`` (found by walking it, so new
    modules count without a list to maintain; ``__pycache__`` and hidden
    directories skipped) except
    :data:`PRESENTATION` is parsed with :mod:`ast` and normalised by dropping
    docstrings and message strings (see :func:`_canonical`); comments and
    layout are not in the tree. The digest covers each file's relative path and
    its normalised tree, so any other change (a constant, an operator, a string
    used as a key, a new module) changes it. A file that does not parse is
    hashed as raw bytes. Costs about 0.3 s for the whole package (mostly parsing).

    Parameters
    ----------
    package_dir : str or Path, optional
        The package directory (default: this package's).

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    root = Path(__file__).resolve().parents[1] if package_dir is None else Path(package_dir)
    files = sorted(rel.as_posix() for rel in (p.relative_to(root) for p in root.rglob("*.py"))
                   if not any(part == "__pycache__" or part.startswith(".")
                              for part in rel.parts))
    if not files:
        raise ValueError(f"no Python sources in {str(root)!r} to derive the code identity from")
    h = hashlib.sha256()
    for rel in files:
        if rel in PRESENTATION:
            continue
        data = (root / rel).read_bytes()
        h.update(rel.encode() + b"\0")
        try:
            tree = ast.parse(data, filename=rel)
        except SyntaxError:
            h.update(b"raw\0" + data)
            continue
        out: list = []
        _canonical(tree, out)
        h.update("".join(out).encode())
        h.update(b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_identity() -> dict:
    """What the numbers of a run depend on besides its inputs.

    Returns
    -------
    dict
        ``thermospin_mc`` (package version), ``source_sha256`` (the first 16
        digits of :func:`source_digest`: every module but the command line,
        messages and docstrings left out), ``numpy`` and ``numba`` (versions).
    """
    import numba

    return {"thermospin_mc": __version__, "source_sha256": source_digest()[:16],
            "numpy": np.__version__, "numba": numba.__version__}


@dataclass(frozen=True)
class Job:
    """One run's batch work: everything :func:`batches.run_batch` needs besides block ids."""

    model: Any
    times: np.ndarray
    key: np.ndarray
    #: the run's trajectory cap: ``ntraj``, or ``max_ntraj`` with an accuracy target
    cap: int
    names: tuple
    record_jumps: bool
    keep: bool
    max_magnons: int
    dense_max: int
    pairs: Any = None
    #: user operators (``operators.Operator``, offset 0), evaluated in the kernels
    operators: tuple = ()
    #: accumulate the trajectory-averaged block density matrices
    states: bool = False

    def run(self, ids) -> tuple:
        """``(ids, blocks, modes)`` of the blocks ``ids``."""
        blocks, modes = B.run_batch(self.model, self.times, self.key, block_ids=ids,
                                    ntraj=self.cap, names=self.names,
                                    record_jumps=self.record_jumps, keep=self.keep,
                                    max_magnons=self.max_magnons, dense_max=self.dense_max,
                                    pairs=self.pairs, operators=self.operators,
                                    states=self.states)
        return ids, blocks, modes


def run_job(job: Job, ids) -> tuple:
    """``job.run(ids)`` as a plain function (what process backends send)."""
    _quiet_worker()
    return job.run(ids)


@functools.lru_cache(maxsize=1)
def _quiet_worker() -> None:
    """In a worker process (loky), ignore SIGINT: Ctrl-C reaches the whole process
    group, and the parent alone decides how the run stops (its deferral finishes
    the batch and writes the checkpoint); a worker would only print its own
    ``KeyboardInterrupt`` traceback. Nothing to do in the parent process."""
    import multiprocessing
    import signal

    if multiprocessing.parent_process() is None:
        return
    with contextlib.suppress(ValueError):  # not the worker's main thread
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def prepare_worker(job: Job) -> dict:
    """Get a worker process ready for ``job``: kernels loaded, the run's pack and
    initial path built (run once per worker, before its first batch); returns the
    worker's :func:`code_identity`."""
    B.warm_kernels()
    pk = B.get_pack(job.model, job.times, job.dense_max, job.pairs, job.operators)
    kind, m0, psi0, *_ = B.initial_draw(job.model, pk.space)
    pk.ensure(m0)
    if kind == K.INIT_PURE:  # the shared no-jump path
        flags, _, ncomp = kernel_layout(job.model.N, job.names, len(pk.pairs),
                                        len(job.model.channels), job.operators, job.states)
        pk.initial_path(m0, psi0, flags, ncomp)
    return code_identity()




def dask_setup(worker=None) -> None:
    """Dask preload hook: load the package and compile (or load) the kernels at worker start."""
    B.warm_kernels()
