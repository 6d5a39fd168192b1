"""Liouvillian spectrum and relaxation time on block-diagonal operators (docs/model.md 13).

Every state the engine produces is block diagonal in the magnon number, so the
generator ``L`` of docs/model.md section 6 is taken on the stacked blocks of the
sectors the model's dynamics reaches from its initial state
(:class:`~thermospin_mc.exact.blocks.BlockLayout`, ``sum_m C(N, m)^2`` unknowns; the
coherences between sectors are not part of this spectrum). ``L`` maps Hermitian
blocks to Hermitian blocks, so it is a real operator on their real packing
(:class:`~thermospin_mc.exact.blocksolve.HermitianPacking`) with the same spectrum:
every eigenvalue comes with its exact complex conjugate.

The method, by structure first and then by size:

- **Closed form** (sectors not coupled, no dephasing). Without both a loss and
  a pump, ``L`` is block triangular in ``m`` (jumps go one way) or block
  diagonal, so its spectrum is the union of the in-sector spectra; without
  dephasing the in-sector generator is ``X -> -i (H X - X H^+)`` (``H`` the
  sector's ``H_eff``), whose eigenvalues are ``-i (lambda_a - conj(lambda_b))``
  over the eigenvalue pairs of ``H``: one ``C(N, m)``-sized eigenproblem per
  sector, every eigenvalue (closed chains, loss only, pump only). With
  dephasing each sector is one problem of the next two kinds.
- **Dense** (at most :data:`DENSE_LIMIT` = 4,000 real unknowns: N <= 7 for pump +
  loss chains): the real packed generator is assembled and all its eigenvalues
  computed (LAPACK ``dgeev``: 0.7 s at N = 6, 15-20 s at N = 7 on one core);
  kept for the last few models, so ``relaxation_time`` after
  ``liouvillian_spectrum`` is free.
- **Davidson** (above): a generalised Davidson iteration in the real packing
  for the eigenvalues of largest real part. The basis starts with the identity
  (the steady state's direction) and the Hermitian and anti-Hermitian parts of
  the ``k + 2`` slowest no-jump modes ``v_a v_b^+`` (eigenvectors of ``H_eff``
  with the largest ``-(Gamma_a + Gamma_b) / 2``, of any frequency ``E_a - E_b``);
  it grows by ``K(sigma)^-1 r``: the residual ``r`` of a Ritz pair through the
  steady state's block-triangular preconditioner (the exact no-jump inverse plus
  the jumps of the weaker direction,
  :func:`~thermospin_mc.exact._blockops.triangular_solve`; single precision for the
  large, well-conditioned blocks) shifted by a complex ``sigma``. First the
  seeds are explored (:meth:`~.davidson.Davidson._explore`: three corrections each, one
  shifted to the imaginary axis at the seed's frequency, two to its own Ritz
  value), because the jumps can move a slow mode far to the right of the
  no-jump mode it grows from, at any frequency; then the rightmost Ritz pairs
  are refined, each shifted to its Ritz value. The Ritz pairs come from the
  complex Schur form of the projected matrix by back substitution (``eig``
  balances, and the projected row that the trace functional makes zero to
  round-off cost it eight digits of the eigenvectors). A pair is converged when
  ``||L u - theta u|| <= RESIDUAL_TOL * scale`` (unit ``u``); the iteration
  stops when the ``k`` rightmost Ritz values (counting conjugates) have
  converged and two more have reached ``GUARD_TOL * scale``, so that the
  ``k``-th is not a value about to be overtaken. Cost: about 15 preconditioner
  sweeps per eigenvalue (a pair counts once) and 3 per seed; memory: the basis
  and its images, 2 x 86 real vectors (60, and room for the corrections of
  every frequency band at once); at N = 11 the run peaked at 1.9 GB.

  The seeds and the exploration of the slowest modes alone can miss a slow
  pair at a large frequency, behind the ones found (forced on random pump +
  loss chains at N = 4-6 with k = 6 they missed a slow pair in 16 of 400). So the
  frequencies are cut into :data:`~.davidson.ATTEMPTS` bands (``[0, omega_max]``,
  ``omega_max`` the largest no-jump frequency): the slowest no-jump mode of
  every band seeds the basis and is explored too, the rightmost Ritz pair of
  every band survives each restart, and once the wanted values have converged
  the iteration verifies every band (:meth:`~.davidson.Davidson._unclear`): a band is
  clear when its rightmost unconverged pair, within its residual, cannot reach
  the last wanted value; otherwise that pair is corrected until it converges
  or moves away, and the bands are corrected once more toward the imaginary
  axis before the result is accepted. A stalled first attempt (a clustered
  spectrum, many bands holding their place in the basis) is repeated with
  fewer bands; if that stalls too, a ``RuntimeError`` says so. On 800 random
  chains (``scripts/check_davidson.py``, seeds 0-799, N = 4-6, k = 6) every
  value agreed with the complete spectrum to 2e-10 of the spectral bound,
  one chain through the second attempt; the paper's chains at N = 5-7 agree
  with the dense spectrum
  (N = 7, k = 10: every digit printed). With
  ``method="dense"`` the spectrum is complete (memory ``8 n^2`` bytes for
  ``n`` real unknowns).

``scale`` bounds ``|lambda|`` (:func:`spectral_scale`). A real or imaginary
part within ``ZERO_TOL * scale`` (1e-8 of the bound) of 0 is round-off of 0 and
reported as exactly 0: the Davidson residuals stop a hundred times below it, and
the dense and closed-form eigenvalues are good to about ``1e-13 scale``. The
relaxation rate is ``g = -max{Re lambda : Re lambda < -ZERO_TOL * scale}``, past
every steady state (several with trapped states, one per sector with dephasing
only) and every non-decaying oscillation; when nothing lies below (a closed
chain, only decoherence-free blocks) the relaxation time ``1 / g`` is ``inf``.

The modules: the public functions and their driver here; the closed form and
the dense spectrum in :mod:`.spectrum_dense`; the Davidson iteration in
:mod:`.davidson` (its operator and preconditioner in :mod:`.davidson_operator`,
its basis, Ritz pairs and restarts in :mod:`.davidson_basis`); the scale and
round-off conventions in :mod:`.spectrum_tolerances`.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import pandas as pd

from .._threads import blas_threads
from ..core.sectors import SectorSpace
from ..physics.model import ChainModel
from .blocks import BlockLayout, check_model
from .davidson import ATTEMPTS, EXTRA, GUARD_TOL, REACH, Davidson, davidson_spectrum
from .davidson_operator import SINGLE_DIM
from .spectrum_dense import DENSE_BYTES, closed_form, dense_cached
from .spectrum_tolerances import RESIDUAL_TOL, ZERO_TOL, spectral_scale, spectrum_order

# besides the two functions and DENSE_LIMIT, METHODS: the names that lived here, re-exported
__all__ = ["liouvillian_spectrum", "relaxation_time", "spectral_scale", "DENSE_LIMIT",
           "RESIDUAL_TOL", "ZERO_TOL", "METHODS", "DENSE_BYTES", "ATTEMPTS", "EXTRA",
           "GUARD_TOL", "REACH", "SINGLE_DIM", "Davidson"]

#: Problems with at most this many real unknowns are solved densely (every eigenvalue).
DENSE_LIMIT = 4_000

METHODS = ("auto", "dense", "davidson")


# ---------------------------------------------------------------------------- public
@blas_threads
def liouvillian_spectrum(model: ChainModel, k: int = 6, method: str = "auto") -> pd.DataFrame:
    """The ``k`` slowest eigenvalues of the Lindblad generator on block-diagonal operators.

    Parameters
    ----------
    model : ChainModel
        The generator of docs/model.md section 6, restricted to the blocks of the
        sectors its dynamics reaches from its initial state
        (``model.reachable_sectors()``: all of ``0..N`` with both losses and
        pumps).
    k : int
        How many eigenvalues (``>= 1``); all of them when the block space has
        fewer.
    method : {"auto", "dense", "davidson"}
        For the sectors that are coupled (or dephased); ``auto``: dense up to
        ``DENSE_LIMIT`` real unknowns, Davidson above (module docstring).
        Uncoupled sectors without dephasing always use the closed form.

    Returns
    -------
    pandas.DataFrame
        Columns ``re``, ``im`` (units of J0), sorted by ``re`` descending, ties
        by ``|im|`` and then ``im``: the steady state's 0 first (every one of
        them when there are several, e.g. trapped or absorbing states), both
        members of each conjugate pair (a pair cut by ``k`` shows its member
        with negative ``im``). Parts within ``zero_tol`` of 0 are exactly 0.
        ``attrs``: ``method`` (``closed``, ``dense`` or ``davidson``; a list
        when the sectors are solved one by one with different methods),
        ``sectors``, ``size`` (real unknowns), ``scale`` (a bound of
        ``|lambda|``), ``zero_tol`` (``ZERO_TOL * scale``), ``complete``
        (every eigenvalue was computed) and, for Davidson, ``iterations``.
    """
    model = check_model(model)
    k = _check_k(k)
    method = _check_method(method)
    lam, info = _slowest(model, k, method)
    df = pd.DataFrame({"re": lam.real.copy(), "im": lam.imag.copy()})
    df.attrs.update(info)
    return df


@blas_threads
def relaxation_time(model: ChainModel, method: str = "auto") -> float:
    """Relaxation time ``1 / g`` of the model's block-diagonal dynamics (docs/model.md 13).

    Parameters
    ----------
    model : ChainModel
        As for :func:`liouvillian_spectrum`.
    method : {"auto", "dense", "davidson"}
        As for :func:`liouvillian_spectrum`.

    Returns
    -------
    float
        ``1 / g`` with ``g`` minus the largest real part of an eigenvalue below
        ``-ZERO_TOL * scale`` (every eigenvalue closer to 0 is a steady state or
        a non-decaying oscillation); ``inf`` when there is none (a closed chain,
        or only decoherence-free blocks).

    Notes
    -----
    Computes the two rightmost eigenvalues first, and more (four times as
    many each time, or all of them where they cost no more) while every one
    found is 0 to round-off: several steady states, or imaginary ones.
    """
    model = check_model(model)
    method = _check_method(method)
    k = 2
    while True:
        lam, info = _slowest(model, k, method)
        neg = lam.real[lam.real < -info["zero_tol"]]
        if neg.size:  # the k rightmost hold every value above it
            return float(1.0 / -neg.max())
        if lam.size < k or k >= info["size"]:  # every eigenvalue seen
            return float("inf")
        # more zeros (or imaginary values) than k: all at once when they are computed
        # anyway (closed form, dense), else four times as many
        k = info["size"] if info["complete"] else min(4 * k, info["size"])


# ---------------------------------------------------------------------------- checks
def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, Integral):
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}")
    return int(k)


def _check_method(method) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    return method


# ---------------------------------------------------------------------------- driver
def _snap(lam: np.ndarray, thr: float) -> np.ndarray:
    """Real and imaginary parts within ``thr`` of 0 set to 0."""
    re = np.where(np.abs(lam.real) <= thr, 0.0, lam.real)
    im = np.where(np.abs(lam.imag) <= thr, 0.0, lam.imag)
    return re + 1j * im


def _slowest(model: ChainModel, k: int, method: str) -> tuple[np.ndarray, dict]:
    """The ``k`` rightmost eigenvalues (sorted, snapped) and the run's facts."""
    space = SectorSpace(model)
    sectors = model.reachable_sectors()
    scale = spectral_scale(space, sectors)
    thr = ZERO_TOL * scale
    coupled = model.has_kind("loss") and model.has_kind("pump")
    dephased = model.has_kind("dephasing")
    groups = [sectors] if coupled else [[m] for m in sectors]
    parts, methods, iterations, complete = [], [], [], True
    for group in groups:
        layout = BlockLayout(space, group)
        if not coupled and not dephased:
            lam, used = closed_form(space, group[0], k, thr), "closed"
        elif method == "dense" or (method == "auto" and layout.size <= DENSE_LIMIT):
            lam, used = dense_cached(model, tuple(group)), "dense"
        else:
            lam, its = davidson_spectrum(layout, model.channels, min(k, layout.size), scale)
            used = "davidson"
            iterations.append(its)
        complete = complete and lam.size == layout.size
        parts.append(lam)
        methods.append(used)
    lam = _snap(np.concatenate(parts), thr)
    lam = lam[spectrum_order(lam)][:k]
    info = {"method": methods[0] if len(set(methods)) == 1 else methods,
            "sectors": list(sectors), "size": int(sum(space.dim(m) ** 2 for m in sectors)),
            "scale": scale, "zero_tol": thr, "complete": complete}
    if iterations:
        info["iterations"] = iterations if len(iterations) > 1 else iterations[0]
    return lam, info

