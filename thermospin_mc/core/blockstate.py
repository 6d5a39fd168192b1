"""Block density matrices: the states the engine produces, as objects (docs/model.md section 13).

Every density matrix of this package is block diagonal in the magnon number
``m`` (the number of down spins): ``rho = sum_m rho_m`` with ``rho_m`` a
``C(N, m) x C(N, m)`` block in the sector basis (colexicographic order of the
down-site sets, :meth:`BlockState.basis`). A :class:`BlockState` holds those
blocks (sectors without weight are simply absent) and computes what a user of
density-matrix code asks for: expectations of :class:`~thermospin_mc.core.operators.Operator`
objects, the trace, the purity, the von Neumann entropy and trace distances,
all block by block, and the full ``2^N`` matrix (``N <= 14``) or a QuTiP
object for a cross-check.
"""

from __future__ import annotations

import os
from math import comb

import numpy as np

from . import observables as OBS
from .basis import SectorBasis, full_indices
from .operators import MAX_DENSE_N, Operator, require_qutip

__all__ = ["BlockState", "STATES_BUDGET_BYTES", "states_budget", "check_states_memory",
           "LayoutRows", "pure_rows"]

#: Most memory the states of one run (``states=True``) may take: 2 GiB, or a quarter of
#: the machine's memory if that is less (:func:`states_budget`).
STATES_BUDGET_BYTES = 2 * 1024 ** 3


def states_budget() -> int:
    """Bytes the states of one run may take: ``min(STATES_BUDGET_BYTES, RAM / 4)``."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        ram = 4 * STATES_BUDGET_BYTES
    return int(min(STATES_BUDGET_BYTES, ram // 4))


def check_states_memory(N: int, sectors, ntimes: int, solver: str) -> int:
    """Refuse ``states=True`` when the blocks of every output time would exceed
    :func:`states_budget`: ``16 * ntimes * sum_m C(N, m)^2`` bytes over ``sectors``.
    Returns the estimate in bytes."""
    need = 16 * int(ntimes) * sum(comb(N, m) ** 2 for m in sectors)
    budget = states_budget()
    if need > budget:
        raise ValueError(f"states=True of {solver} would keep {need / 2**30:.3g} GiB of block "
                         f"density matrices ({ntimes} times x sum_m C({N}, m)^2 numbers), "
                         f"above the budget of {budget / 2**30:.3g} GiB; ask for fewer times")
    return need


def _hermitian(B: np.ndarray) -> bool:
    scale = max(float(np.abs(B).max()), 1e-300) if B.size else 1.0
    return bool(np.abs(B - B.conj().T).max() <= 1e-12 * scale) if B.size else True


class BlockState:
    """A block-diagonal density matrix ``rho = sum_m rho_m`` (immutable).

    Parameters
    ----------
    N : int
        Number of sites.
    blocks : dict of int to array_like
        ``m -> rho_m``, each ``C(N, m) x C(N, m)`` in the sector basis order of
        :meth:`basis`; missing sectors are zero blocks.

    Attributes
    ----------
    N : int
        Number of sites.
    blocks : dict of int to numpy.ndarray
        ``m -> rho_m`` (complex, read-only views), ascending ``m``.

    Notes
    -----
    The state is used as stored: :meth:`purity`, :meth:`entropy` and
    :meth:`trace_distance` do not renormalise it (the solvers' states have unit
    trace up to round-off; :meth:`trace` says by how much).
    """

    __slots__ = ("N", "_blocks", "_space")

    def __init__(self, N: int, blocks: dict):
        if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
            raise ValueError(f"N must be an integer >= 1, got {N!r}")
        N = int(N)
        if not isinstance(blocks, dict):
            raise ValueError(f"blocks must be a dict {{m: C(N, m) x C(N, m) array}}, got "
                             f"{type(blocks).__name__}")
        out = {}
        for m in sorted(blocks):
            if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 0 <= m <= N:
                raise ValueError(f"blocks: keys must be magnon numbers in 0..{N}, got {m!r}")
            d = comb(N, int(m))
            B = np.array(blocks[m], dtype=complex)
            if B.shape != (d, d):
                raise ValueError(f"blocks: block m = {m} must be {d} x {d} (C({N}, {m})), got "
                                 f"shape {B.shape}")
            if not np.all(np.isfinite(B)):
                raise ValueError(f"blocks: block m = {m} must contain only finite values")
            B.flags.writeable = False
            out[int(m)] = B
        object.__setattr__(self, "N", N)
        object.__setattr__(self, "_blocks", out)
        object.__setattr__(self, "_space", SectorBasis(N))

    def __setattr__(self, key, value):
        raise AttributeError("BlockState is immutable")

    def __reduce__(self):
        return (BlockState, (self.N, dict(self._blocks)))

    def __repr__(self):
        return (f"BlockState(N={self.N}, sectors={list(self._blocks)}, "
                f"trace={self.trace():.12g})")

    # ------------------------------------------------------------------ structure
    @property
    def blocks(self) -> dict:
        return dict(self._blocks)

    @property
    def sectors(self) -> list[int]:
        """Magnon numbers of the stored blocks (ascending)."""
        return list(self._blocks)

    def basis(self, m: int) -> list[tuple[int, ...]]:
        """The 1-based down sites of each basis state of sector ``m``, in the row order
        of ``blocks[m]`` (colexicographic order of the site sets)."""
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 0 <= m <= self.N:
            raise ValueError(f"m must be an integer in 0..{self.N}, got {m!r}")
        return [tuple(int(s) for s in row) for row in self._space.basis(int(m))]

    def populations(self) -> dict:
        """``{m: Tr rho_m}``: the probability of each magnon number."""
        return {m: float(np.trace(B).real) for m, B in self._blocks.items()}

    # ------------------------------------------------------------------ numbers
    def trace(self) -> float:
        """``Tr rho`` (real part; 1 up to round-off for the solvers' states)."""
        return float(sum(np.trace(B).real for B in self._blocks.values()))

    def purity(self) -> float:
        """``Tr rho^2 = sum_m Tr rho_m^2``."""
        return float(sum(np.sum(B * B.T).real for B in self._blocks.values()))

    def entropy(self) -> float:
        """Von Neumann entropy ``-Tr rho ln rho`` (natural log) from the eigenvalues
        of each block's Hermitian part. Eigenvalues below zero (round-off of a
        positive state, at the 1e-15 level) are clipped to 0, and ``0 ln 0 = 0``."""
        total = 0.0
        for B in self._blocks.values():
            lam = np.linalg.eigvalsh(0.5 * (B + B.conj().T))
            lam = lam[lam > 0]
            total -= float(np.sum(lam * np.log(lam)))
        return total

    def expect(self, op: Operator):
        """``<O> = sum_m Tr(O_m rho_m)`` of a magnon-conserving operator.

        Returns a real float for a Hermitian operator, a complex number otherwise.
        """
        if not isinstance(op, Operator):
            raise ValueError(f"op must be a thermospin_mc.Operator, got {type(op).__name__}")
        if op.N != self.N:
            raise ValueError(f"op is for N = {op.N} sites, the state has N = {self.N}")
        if op.offset != 0:
            raise ValueError(f"op changes the magnon number by {op.offset:+d}; its expectation "
                             "on a block-diagonal state is 0 (only offset-0 operators)")
        val = 0j
        for m, B in self._blocks.items():
            O = op.sector_matrix(self._space, m).tocoo()
            val += np.sum(O.data * B[O.col, O.row])
        return float(val.real) if op.hermitian else complex(val)

    def trace_distance(self, other: BlockState) -> float:
        """``(1/2) ||rho - sigma||_1``, block by block (sum of the singular values of
        each block difference; eigenvalues when the difference is Hermitian)."""
        if not isinstance(other, BlockState):
            raise ValueError(f"other must be a BlockState, got {type(other).__name__}")
        if other.N != self.N:
            raise ValueError(f"other has N = {other.N} sites, this state N = {self.N}")
        total = 0.0
        for m in sorted(set(self._blocks) | set(other._blocks)):
            d = comb(self.N, m)
            D = (self._blocks.get(m, np.zeros((d, d)))
                 - other._blocks.get(m, np.zeros((d, d))))
            if _hermitian(D):
                total += float(np.abs(np.linalg.eigvalsh(0.5 * (D + D.conj().T))).sum())
            else:
                total += float(np.linalg.svd(D, compute_uv=False).sum())
        return 0.5 * total

    # ------------------------------------------------------------------ full space
    def to_dense(self) -> np.ndarray:
        """The ``2^N x 2^N`` density matrix in the full-space order of docs/model.md section 13
        (site 1 the leftmost factor; index 0 up, 1 down), ``N <= 14``."""
        if self.N > MAX_DENSE_N:
            raise ValueError(f"to_dense: N = {self.N} is above {MAX_DENSE_N} (a 4^N matrix); "
                             "the blocks stay available as .blocks")
        size = 1 << self.N
        rho = np.zeros((size, size), dtype=complex)
        for m, B in self._blocks.items():
            idx = full_indices(self.N, m)
            rho[np.ix_(idx, idx)] = B
        return rho

    def to_qutip(self):
        """The density matrix as a QuTiP ``Qobj`` with dims ``[[2]*N, [2]*N]`` (N <= 14)."""
        qutip = require_qutip()
        if self.N > MAX_DENSE_N:
            raise ValueError(f"to_qutip: N = {self.N} is above {MAX_DENSE_N} (a 4^N matrix); "
                             "the blocks stay available as .blocks")
        return qutip.Qobj(self.to_dense(), dims=[[2] * self.N, [2] * self.N])


# ---------------------------------------------------------------------------- solvers' side
class LayoutRows:
    """Operator rows and states of stacked block density matrices ``x`` of a solver's
    ``layout`` (``blocks.BlockLayout``: ``sectors``, ``block(x, m)``, ``N`` and what
    :func:`~thermospin_mc.core.observables.operator_weights` reads)."""

    def __init__(self, layout, ops):
        self.layout, self.ops = layout, ops
        self.weights = [OBS.operator_weights(op, layout) for op in ops]

    def values(self, x: np.ndarray) -> dict:
        out = {}
        for op, (idx, w) in zip(self.ops, self.weights, strict=True):
            out.update(OBS.operator_values(op, w @ x[idx]))
        return out

    def linear(self, x: np.ndarray) -> np.ndarray:
        """Real and imaginary parts of every operator (real-linear in ``x``)."""
        vals = np.array([w @ x[idx] for idx, w in self.weights], dtype=complex)
        return np.concatenate([vals.real, vals.imag])

    def from_linear(self, v: np.ndarray) -> dict:
        k = len(self.ops)
        out = {}
        for q, op in enumerate(self.ops):
            out.update(OBS.operator_values(op, complex(v[q], v[k + q])))
        return out

    def state(self, x: np.ndarray) -> BlockState:
        lay = self.layout
        return BlockState(lay.N, {m: lay.block(x, m) for m in lay.sectors})


def pure_rows(space, ops, m0: int, lost_to):
    """``(values, state)`` functions of a pure (unnormalised) ``psi`` in sector ``m0``
    whose missing weight ``1 - ||psi||^2`` sits in sector ``lost_to`` (the all-up
    state; ``None``: no missing weight): the operator rows ``{row: value}`` and the
    :class:`BlockState`."""
    mats = [op.sector_matrix(space, m0) for op in ops]
    low = ([op.sector_matrix(space, lost_to)[0, 0] for op in ops] if lost_to is not None
           else [0.0] * len(ops))

    def values(psi):
        lost = 1.0 - np.vdot(psi, psi).real if lost_to is not None else 0.0
        out = {}
        for op, M, o0 in zip(ops, mats, low, strict=True):
            out.update(OBS.operator_values(op, np.vdot(psi, M @ psi) + lost * o0))
        return out

    def state(psi):
        blocks = {m0: np.outer(psi, psi.conj())}
        if lost_to is not None:
            blocks[lost_to] = np.array([[1.0 - np.vdot(psi, psi).real]])
        return BlockState(space.N, blocks)

    return values, state
