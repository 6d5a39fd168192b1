"""The regression system of a two-time correlation (docs/model.md 13).

``X = B rho`` on its magnon blocks (square for a conserving ``B``, the coherence
blocks ``(m + 1, m)`` or ``(m - 1, m)`` for offsets +1 and -1), the generator
there, the trace functional of ``A`` (:class:`RegressionSystem`), and the
checked inputs shared by :func:`~thermospin_mc.exact.correlations.correlation`
and :func:`~thermospin_mc.exact.correlation_spectrum.spectrum`: the operator pair
(:func:`pair_operators`) and the state's blocks (:func:`state_blocks`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .. import _threads
from .. import _validate as v
from ..core.operators import Operator
from ..core.sectors import SectorSpace
from ..physics.model import ChainModel
from .blocks import CoherenceLayout, evolve_grid, feed_generator, nojump_generator
from .chebyshev import chebyshev_evolve
from .chebyshev_steps import BlockGenerator
from .solvers import mesolve
from .steady import steadystate

__all__ = ["RegressionSystem", "pair_operators", "state_blocks", "trace_vector", "EXPM_LIMIT",
           "PAIRS"]

#: Above this many stored numbers the correlation switches from ``expm_multiply``
#: to the Chebyshev propagator (both exact to round-off; a measured crossover).
EXPM_LIMIT = 2_000

#: Offsets ``(A, B)`` that pair: ``A`` undoes the magnon change of ``B``.
PAIRS = ((0, 0), (-1, 1), (1, -1))


# --------------------------------------------------------------------------- input
def _operator(op, N: int, what: str) -> Operator:
    """``op`` as an :class:`Operator` of ``N`` sites (a string is parsed as words)."""
    if isinstance(op, str):
        try:
            return Operator.parse(op, N, name=what)
        except ValueError as exc:
            msg = str(exc)
            raise ValueError(f"{what}: {msg[6:] if msg.startswith('text: ') else msg}") from None
    if not isinstance(op, Operator):
        raise ValueError(f"{what} must be a tsm.Operator or operator words like '+3' or 'n2', "
                         f"got {type(op).__name__}")
    if op.N != N:
        raise ValueError(f"{what} acts on N = {op.N} sites, the model has N = {N}")
    return op


def pair_operators(model: ChainModel, A, B) -> tuple[Operator, Operator]:
    """``A`` and ``B`` as operators of the model's sites, refused unless their
    offsets pair (:data:`PAIRS`)."""
    A, B = _operator(A, model.N, "A"), _operator(B, model.N, "B")
    if (A.offset, B.offset) not in PAIRS:
        raise ValueError(f"A and B cannot pair: A {A.name!r} has offset {A.offset:+d} and B "
                         f"{B.name!r} offset {B.offset:+d}; correlations need offsets 0 and 0, "
                         "-1 and +1, or +1 and -1")
    return A, B


def state_blocks(model: ChainModel, t0) -> dict:
    """Blocks ``{m: rho_m}`` of the steady state (``t0=None``) or of ``rho(t0)`` (every
    reachable sector, zero blocks included: a set the dynamics never leaves)."""
    n_jobs = _threads.current()
    if t0 is None:
        return steadystate(model, observables=["norm"], n_jobs=n_jobs).blocks
    t0 = v.real("t0", t0, lo=0.0)
    st = mesolve(model, [t0], observables=["norm"], states=True, n_jobs=n_jobs).states[0]
    space = SectorSpace(model)
    return {m: st.blocks[m] if m in st.blocks else np.zeros((space.dim(m),) * 2, dtype=complex)
            for m in model.reachable_sectors()}


def trace_vector(layout: CoherenceLayout) -> np.ndarray:
    """The trace functional of a layout of square blocks: ``Tr X = t @ x`` for stacked
    ``x`` (the identity's blocks, stacked)."""
    t = np.zeros(layout.size, dtype=complex)
    for m in layout.sectors:
        np.fill_diagonal(layout.block(t, m), 1.0)
    return t


# --------------------------------------------------------------------------- the system
class RegressionSystem:
    """``X = B rho`` on its blocks, the generator there and the trace functional of ``A``.

    Parameters
    ----------
    model : ChainModel
    A, B : Operator
        Offsets that pair (``A.offset == -B.offset``, checked by the callers).
    rho : dict
        Blocks ``{m: rho_m}`` of a state on a set of sectors the dynamics
        never leaves (the steady sectors, or the reachable ones).

    Attributes
    ----------
    layout : CoherenceLayout
        Blocks ``(m + B.offset, m)`` for the sectors ``m`` of ``rho``.
    L, F : scipy.sparse.csr_matrix
        The generator on ``layout`` and its jump part.
    x0 : ndarray
        ``B rho`` stacked.
    a : ndarray
        ``Tr(A X) = a @ x`` for stacked ``x``.
    """

    def __init__(self, model: ChainModel, A: Operator, B: Operator, rho: dict):
        space = SectorSpace(model)
        self.space = space
        self.layout = lay = CoherenceLayout(space, sorted(rho), B.offset)
        self.F = feed_generator(lay) if lay.size else sp.csr_matrix((0, 0), dtype=complex)
        self.L = (nojump_generator(lay) + self.F).tocsr() if lay.size else self.F
        self.x0 = np.zeros(lay.size, dtype=complex)
        self.a = np.zeros(lay.size, dtype=complex)
        for m in lay.sectors:
            lay.block(self.x0, m)[...] = B.sector_matrix(space, m) @ np.asarray(rho[m])
            lay.block(self.a, m)[...] = A.sector_matrix(space, m + lay.shift).T.toarray()

    def trace(self) -> np.ndarray:
        """The trace functional (square blocks, offset 0 only)."""
        return trace_vector(self.layout)

    def evolve(self, taus: np.ndarray, method: str = "auto") -> np.ndarray:
        """``Tr[A exp(L tau) x0]`` at each of ``taus`` (``auto``: ``expm`` up to
        ``EXPM_LIMIT`` stored numbers, ``chebyshev`` above, on the block-wise
        generator :class:`BlockGenerator`)."""
        if self.layout.size == 0:
            return np.zeros(taus.size, dtype=complex)
        if method == "auto":
            method = "expm" if self.layout.size <= EXPM_LIMIT else "chebyshev"
        if method == "expm":
            return np.array([self.a @ x for x in evolve_grid(self.L, self.x0, taus)])
        a = self.a

        def observe(x):
            z = a @ x
            return np.array([z.real, z.imag])

        vals, _, _ = chebyshev_evolve(BlockGenerator(self.layout, self.F), self.x0, taus,
                                      observe)
        return vals[:, 0] + 1j * vals[:, 1]

