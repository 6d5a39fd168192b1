"""What runs on a worker process: the batch job, worker preparation, code identity.

Light on purpose (no pandas, no orchestration): a Dask or loky worker
unpickles a :class:`Job` and calls :func:`run_job`; :func:`prepare_worker`
gets it ready for a run before its first batch (kernels, sector pack, initial
path); :func:`dask_setup` is a Dask preload hook that loads the package and
the kernels when a worker starts::

    dask worker tcp://scheduler:8786 --preload thermospin_mc.worker
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import kernels as K
from . import pack as P
from ._version import __version__

__all__ = ["Job", "run_job", "prepare_worker", "code_identity", "dask_setup"]

#: Sources whose change can alter a trajectory's numbers or their reduction.
_SOURCES = ("kernels.py", "sectors.py", "pack.py", "stats.py", "model.py", "thermal.py",
            "driver.py", "checkpoint.py", "worker.py")


@functools.lru_cache(maxsize=1)
def code_identity() -> dict:
    """Package version, hash of the numerical sources, numpy and numba versions."""
    import numba

    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update(name.encode())
        h.update((here / name).read_bytes())
    return {"thermospin_mc": __version__, "source_sha256": h.hexdigest()[:16],
            "numpy": np.__version__, "numba": numba.__version__}


@dataclass(frozen=True)
class Job:
    """One run's batch work: everything :func:`pack.run_batch` needs besides block ids."""

    model: Any
    times: np.ndarray
    key: np.ndarray
    ntraj: int
    names: tuple
    record_jumps: bool
    keep: bool
    max_magnons: int
    dense_max: int
    pairs: Any = None

    def run(self, ids) -> tuple:
        """``(ids, blocks, modes)`` of the blocks ``ids``."""
        blocks, modes = P.run_batch(self.model, self.times, self.key, block_ids=ids,
                                    ntraj=self.ntraj, names=self.names,
                                    record_jumps=self.record_jumps, keep=self.keep,
                                    max_magnons=self.max_magnons, dense_max=self.dense_max,
                                    pairs=self.pairs)
        return ids, blocks, modes


def run_job(job: Job, ids) -> tuple:
    """``job.run(ids)`` as a plain function (what process backends send)."""
    return job.run(ids)


def prepare_worker(job: Job) -> dict:
    """Get a worker process ready for ``job``: kernels loaded, the run's pack and
    initial path built (run once per worker, before its first batch); returns the
    worker's :func:`code_identity`."""
    P.warm_kernels()
    pk = P.get_pack(job.model, job.times, job.dense_max, job.pairs)
    kind, m0, psi0, *_ = P.initial_draw(job.model, pk.space)
    pk.ensure(m0)
    if kind == K.INIT_PURE:  # the shared no-jump path
        flags, _, ncomp = P.kernel_layout(job.model.N, job.names, len(pk.pairs),
                                        len(job.model.channels))
        pk.initial_path(m0, psi0, flags, ncomp)
    return code_identity()




def dask_setup(worker=None) -> None:
    """Dask preload hook: load the package and compile (or load) the kernels at worker start."""
    P.warm_kernels()
