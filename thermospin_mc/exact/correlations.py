"""Two-time correlations and their spectra by the quantum regression theorem (docs/model.md 13).

For ``tau >= 0``, ``<A(t0 + tau) B(t0)> = Tr[A exp(L tau) X]`` with ``X = B rho(t0)``
(``t0 = None``: the steady state). ``rho`` is block diagonal in the magnon
number, so ``X`` has one block per sector ``m`` of ``rho``: square for a
conserving ``B`` (offset 0), the coherence block ``(m + 1, m)`` for ``B`` of
offset +1 (``s-_i``), ``(m - 1, m)`` for offset -1 (``s+_i``). The generator
maps the blocks of one offset among themselves,

    d X_m / dt = -i (H_{m + d} X_m - X_m H_m^+) + sum_k r_k P_k X_{m'} P_k^T,

so ``X`` evolves on them alone (:class:`~thermospin_mc.exact.blocks.CoherenceLayout`
and the block generator of :mod:`.blocks`); ``A`` must undo the offset, or the
trace vanishes on every block (such a pair is refused).

- Time evolution: exact action of ``exp(L tau)``, by ``expm_multiply`` on the
  assembled sparse generator (:func:`~thermospin_mc.exact.blocks.evolve_grid`) up to
  ``EXPM_LIMIT`` stored numbers, above it by the package's Chebyshev propagator
  (:func:`~thermospin_mc.exact.chebyshev.chebyshev_evolve`, all ``taus`` from one
  expansion) on the generator applied block by block (:class:`BlockGenerator`).

The steady-state spectrum and the solvers behind it live in
:mod:`.correlation_spectrum` (re-exported here, with the public names of
:mod:`.regression`, :mod:`.chebyshev_steps`, :mod:`.shifted_solver`,
:mod:`.spectrum_head` and :mod:`.reduced_resolvent`).
"""

from __future__ import annotations

import numpy as np

from .. import _validate as v
from .._threads import blas_threads
from ..physics.model import ChainModel
from .blocks import check_model
from .chebyshev_steps import STEP_CHUNKS, BlockGenerator, SparseChebyshev  # re-export
from .correlation_spectrum import (  # re-export
    DIRECT_LIMIT,
    HEAD_MATVECS,
    HEAD_MIN_MATVECS,
    SPECTRUM_TOL,
    spectrum,
)
from .reduced_resolvent import ReducedResolvent  # re-export
from .regression import (  # re-export
    EXPM_LIMIT,
    PAIRS,
    RegressionSystem,
    pair_operators,
    state_blocks,
)
from .shifted_solver import FGMRES_MAXITER, PICKS, ShiftedSolver  # re-export
from .spectrum_head import (  # re-export
    HEAD_GROWTH,
    HEAD_ROUND_TOL,
    HEAD_TERMS,
    HEAD_TOL,
    chebyshev_head,
)

__all__ = ["correlation", "spectrum", "RegressionSystem", "SparseChebyshev", "BlockGenerator",
           "ShiftedSolver", "ReducedResolvent", "chebyshev_head", "EXPM_LIMIT", "DIRECT_LIMIT",
           "STEP_CHUNKS", "SPECTRUM_TOL", "PAIRS", "HEAD_MATVECS", "HEAD_MIN_MATVECS",
           "HEAD_TERMS", "HEAD_TOL", "HEAD_ROUND_TOL", "HEAD_GROWTH", "PICKS", "FGMRES_MAXITER"]


def _taus(taus) -> np.ndarray:
    arr = v.real_array("taus", np.atleast_1d(taus), lo=0.0)
    if arr.size == 0:
        raise ValueError("taus must contain at least one delay, got an empty array")
    if np.any(np.diff(arr) < 0):
        raise ValueError("taus must be non-decreasing, got a decreasing step at index "
                         f"{int(np.argmax(np.diff(arr) < 0)) + 1}")
    return arr


@blas_threads
def correlation(model: ChainModel, taus, A, B, t0=None) -> np.ndarray:
    """Two-time correlation ``<A(t0 + tau) B(t0)>`` by the quantum regression theorem.

    ``Tr[A exp(L tau)(B rho(t0))]`` evolved exactly on the magnon blocks
    (docs/model.md 13): square blocks for operators of offset 0, the coherence
    blocks ``(m + 1, m)`` for ``B`` of offset +1 (``s-_i``, with ``A`` of offset
    -1, e.g. ``s+_j``) and ``(m - 1, m)`` for the reverse.

    Parameters
    ----------
    model : ChainModel
    taus : array_like
        Non-decreasing delays ``tau >= 0``.
    A, B : Operator or str
        Operators of ``model.N`` sites; a string is read as operator words
        (:meth:`~thermospin_mc.core.operators.Operator.parse`, e.g. ``"+3"``,
        ``"-2"``, ``"n1 n4"``, ``"z1 + z2"``). Offsets must pair: both 0, or
        ``-1`` and ``+1`` either way round.
    t0 : float, optional
        ``None`` (default): the steady state (needs a unique one, as
        :func:`~thermospin_mc.exact.steadystate`). A time ``>= 0``: the state
        evolved exactly from the model's initial state (prepared at ``t = 0``).

    Returns
    -------
    numpy.ndarray
        Complex, one value per delay in ``taus``.

    Raises
    ------
    ValueError
        One line naming ``A``/``B`` (unknown words, wrong ``N``, offsets that
        cannot pair), ``taus`` or ``t0``.
    """
    model = check_model(model)
    taus = _taus(taus)
    A, B = pair_operators(model, A, B)
    return RegressionSystem(model, A, B, state_blocks(model, t0)).evolve(taus)
