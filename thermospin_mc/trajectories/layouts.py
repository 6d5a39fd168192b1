"""Kernel row and state layouts: where the kernels write what.

:func:`kernel_layout` gives the kernel flags and the column of each observable
in a kernel row; :class:`StateLayout` (:func:`state_layout`) says where the
kernels accumulate trajectory-averaged states (``states=True``), and
:func:`state_blocks` turns that sum into block density matrices.
"""

from __future__ import annotations

from math import comb
from typing import NamedTuple

import numpy as np

from ..physics.model import ChainModel
from . import kernels as K

__all__ = ["kernel_layout", "StateLayout", "state_layout", "state_blocks"]


def kernel_layout(N: int, names, npair: int = 0, nch: int = 0, operators=(),
                  states: bool = False):
    """Kernel flags and the column slice of each observable in a kernel row.

    Row layout: ``[j] [j_bond x (N-1)] m [n x N] [nn x P] [pm_re x P] [pm_im x P]
    [count x nch] [op_1] [op_2] ...``; ``flow`` is read from the ``j_bond``
    columns; each user operator (in the order given) takes one column (its
    real part: Hermitian) or two (real and imaginary parts), under
    ``op.name``. ``states`` sets ``FLAG_STATE`` (no columns).
    """
    want = set(names)
    flags = np.zeros(K.NFLAGS, dtype=np.int64)
    flags[K.FLAG_J] = "j" in want
    flags[K.FLAG_JBOND] = "j_bond" in want or "flow" in want
    flags[K.FLAG_N] = "n" in want
    flags[K.FLAG_NN] = "nn" in want
    flags[K.FLAG_PM] = "pm_re" in want or "pm_im" in want
    flags[K.FLAG_COUNT] = "count" in want
    cols, pos = {}, 0

    def take(name, size):
        nonlocal pos
        cols[name] = slice(pos, pos + size)
        pos += size

    if flags[K.FLAG_J]:
        take("j", 1)
    if flags[K.FLAG_JBOND]:
        take("j_bond", N - 1)
    take("m", 1)
    if flags[K.FLAG_N]:
        take("n", N)
    if flags[K.FLAG_NN]:
        take("nn", npair)
    if flags[K.FLAG_PM]:
        take("pm_re", npair)
        take("pm_im", npair)
    if flags[K.FLAG_COUNT]:
        take("count", nch)
    flags[K.FLAG_OP] = len(operators) > 0
    for op in operators:
        take(op.name, 1 if op.hermitian else 2)
    flags[K.FLAG_STATE] = bool(states)
    return flags, cols, pos


class StateLayout(NamedTuple):
    """Where the kernels accumulate trajectory-averaged states (``states=True``).

    One output time holds, for every sector ``m`` in ``sectors`` (the
    sectors the run can visit: ``ChainModel.reachable_sectors`` up to
    ``max_magnons``), the real parts of the upper triangle of its ``d x d``
    block (``j >= i``, packed row by row: ``T = d (d + 1) / 2`` numbers) and then
    their imaginary parts, ``2 T`` doubles from ``offsets[m]`` (-1: a sector not
    stored); ``stride`` doubles per output time.
    """

    N: int
    sectors: tuple
    dims: tuple
    offsets: np.ndarray
    stride: int

    def nbytes(self, nt: int) -> int:
        """Bytes of one copy of the accumulated states of ``nt`` output times
        (packed upper triangles: ``16 x sum_m d (d + 1) / 2`` per output time)."""
        return 8 * self.stride * int(nt)

    def result_nbytes(self, nt: int) -> int:
        """Bytes of the result's full ``d x d`` complex blocks of ``nt`` output times."""
        return 16 * sum(d * d for d in self.dims) * int(nt)


def state_layout(model: ChainModel, max_magnons: int) -> StateLayout:
    """The :class:`StateLayout` of a run of ``model`` capped at ``max_magnons`` magnons."""
    N = model.N
    sectors = tuple(m for m in model.reachable_sectors() if m <= max_magnons)
    offsets = np.full(N + 1, -1, dtype=np.int64)
    dims, pos = [], 0
    for m in sectors:
        d = comb(N, m)
        offsets[m] = pos
        dims.append(d)
        pos += d * (d + 1)
    return StateLayout(N, sectors, tuple(dims), offsets, pos)


def state_blocks(total: np.ndarray, layout: StateLayout, nt: int, ntraj: int):
    """Trajectory-averaged block density matrices from the kernels' sum of states
    (a generator: one output time's blocks at a time).

    ``total`` is the sum over trajectories (``BlockOut.rho`` merged over the
    blocks); each output time's blocks are completed from their packed upper
    triangles by Hermiticity (the diagonal taken real) and divided by
    ``ntraj``. Yields one ``{m: (d, d) complex ndarray}`` per output time,
    with every sector of ``layout`` (zero blocks for sectors no trajectory visited).
    """
    scale = 1.0 / max(int(ntraj), 1)
    upper = {d: np.triu_indices(d) for d in set(layout.dims)}
    for k in range(nt):
        blocks = {}
        for m, d in zip(layout.sectors, layout.dims, strict=True):
            b0 = k * layout.stride + int(layout.offsets[m])
            tri = d * (d + 1) // 2
            iu, ju = upper[d]
            blk = np.zeros((d, d), dtype=np.complex128)
            blk[iu, ju] = (total[b0:b0 + tri] + 1j * total[b0 + tri:b0 + 2 * tri]) * scale
            diag = blk.diagonal().real.copy()
            blk += blk.conj().T
            blk[np.diag_indices(d)] = diag
            blocks[m] = blk
        yield blocks
