"""The scale and round-off conventions of the Liouvillian spectrum (docs/model.md 13).

Every tolerance of :mod:`.relaxation` is relative to ``scale``, a bound of
``|lambda|`` (:func:`spectral_scale`): real or imaginary parts within
``ZERO_TOL * scale`` of 0 are round-off of 0, a Davidson pair has converged at
``||L u - theta u|| <= RESIDUAL_TOL * scale``. Eigenvalues are listed in one
order everywhere (:func:`spectrum_order`).
"""

from __future__ import annotations

import numpy as np

from ..core.sectors import SectorSpace

__all__ = ["spectral_scale", "spectrum_order", "RESIDUAL_TOL", "ZERO_TOL"]

#: Davidson convergence: ``||L u - theta u|| <= RESIDUAL_TOL * scale`` for unit ``u``.
RESIDUAL_TOL = 1e-10

#: Real (imaginary) parts within ``ZERO_TOL * scale`` of 0 are round-off of 0.
ZERO_TOL = 1e-8


def spectral_scale(space: SectorSpace, sectors) -> float:
    """A bound of ``|lambda|`` for the generator on the blocks of ``sectors`` (at
    least 1): twice the largest absolute row sum of a sector's ``h``, plus its
    largest decay rate, plus every channel's rate."""
    worst = 0.0
    for m in sectors:
        sec = space.sector(m)
        h = sec.h_sparse(space.a)
        rows = np.asarray(abs(h).sum(axis=1)).ravel() if h.shape[0] else np.zeros(1)
        worst = max(worst, 2.0 * float(rows.max()) + float(sec.decay.max(initial=0.0)))
    return max(1.0, worst + sum(ch.rate for ch in space.channels))


def spectrum_order(lam: np.ndarray) -> np.ndarray:
    """Indices sorting by real part descending, then ``|im|``, then ``im``."""
    return np.lexsort((lam.imag, np.abs(lam.imag), -lam.real))
