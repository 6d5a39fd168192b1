"""Liouvillian spectrum and relaxation time on block-diagonal operators (docs/model.md 13).

Every state the engine produces is block diagonal in the magnon number, so the
generator ``L`` of docs/model.md section 6 is taken on the stacked blocks of the
sectors the model's dynamics reaches from its initial state
(:class:`~thermospin_mc.blocks.BlockLayout`, ``sum_m C(N, m)^2`` unknowns; the
coherences between sectors are not part of this spectrum). ``L`` maps Hermitian
blocks to Hermitian blocks, so it is a real operator on their real packing
(:class:`~thermospin_mc.blocksolve.HermitianPacking`) with the same spectrum:
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
  :func:`~thermospin_mc._blockops.triangular_solve`; single precision for the
  large, well-conditioned blocks) shifted by a complex ``sigma``. First the
  seeds are explored (:meth:`Davidson._explore`: three corrections each, one
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
  frequencies are cut into :data:`ATTEMPTS` bands (``[0, omega_max]``,
  ``omega_max`` the largest no-jump frequency): the slowest no-jump mode of
  every band seeds the basis and is explored too, the rightmost Ritz pair of
  every band survives each restart, and once the wanted values have converged
  the iteration verifies every band (:meth:`Davidson._unclear`): a band is
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

Length: the Davidson iteration (basis and its images, Ritz extraction, seeds and
their exploration, restarts) is one algorithm with its three drivers (closed
form, dense, Davidson) on the same real packing and round-off thresholds.
"""

from __future__ import annotations

import functools
import os
from numbers import Integral

import numpy as np
import pandas as pd
import scipy.linalg as sla
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController

from .. import _threads
from .._threads import blas_threads
from ..core.sectors import SectorSpace
from ..physics.model import ChainModel
from ._blockops import BlockGenerator, triangular_solve
from .blocks import BlockLayout, check_model, feed_generator, nojump_generator
from .blocksolve import HermitianPacking, NoJumpInverse

__all__ = ["liouvillian_spectrum", "relaxation_time", "spectral_scale", "DENSE_LIMIT",
           "RESIDUAL_TOL", "ZERO_TOL"]

#: Problems with at most this many real unknowns are solved densely (every eigenvalue).
DENSE_LIMIT = 4_000

#: Memory budget of ``method="dense"`` (the matrix and LAPACK's copy): 8 GB, at
#: most a quarter of the machine's memory.
try:
    _PHYS = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
    _PHYS = 16 * 2**30
DENSE_BYTES = min(8e9, 0.25 * _PHYS)

#: Davidson convergence: ``||L u - theta u|| <= RESIDUAL_TOL * scale`` for unit ``u``.
RESIDUAL_TOL = 1e-10

#: Real (imaginary) parts within ``ZERO_TOL * scale`` of 0 are round-off of 0.
ZERO_TOL = 1e-8

#: Ritz values converged beyond the ``k`` asked for (counting conjugates) ...
EXTRA = 2

#: ... to this looser tolerance (they guard the ``k``-th against being overtaken).
GUARD_TOL = 1e-6

#: The band check (:meth:`Davidson._unclear`) clears a Ritz pair ``(theta, r)`` only
#: when ``Re theta + REACH ||r||`` lies left of the last wanted value.
REACH = 1.0

#: Davidson attempts ``(frequency bands, steps)``: a clustered spectrum can stall the
#: iteration while many bands hold their place in the basis (1 of 800 random chains
#: at N = 4-6, ``scripts/check_davidson.py``); the second attempt, with fewer bands
#: and so more room for the refinement, converged there.
ATTEMPTS = ((12, 3000), (4, 6000))

#: Blocks from this dimension on are preconditioned in single precision.
SINGLE_DIM = 48

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
def _order(lam: np.ndarray) -> np.ndarray:
    """Indices sorting by real part descending, then ``|im|``, then ``im``."""
    return np.lexsort((lam.imag, np.abs(lam.imag), -lam.real))


def _pair(theta: complex, y: np.ndarray, imtol: float) -> tuple[complex, np.ndarray, bool]:
    """A Ritz pair made exact where it should be: a value within ``imtol`` of the
    real axis is real, and so is its vector (rotated by the phase of its largest
    entry; the imaginary part dropped, normalised again)."""
    theta = complex(theta)
    if abs(theta.imag) > imtol:
        return theta, y, False
    y = (y * np.exp(-1j * np.angle(y[np.argmax(np.abs(y))]))).real
    return complex(theta.real), (y / np.linalg.norm(y)).astype(complex), True


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
            lam, used = _closed_form(space, group[0], k, thr), "closed"
        elif method == "dense" or (method == "auto" and layout.size <= DENSE_LIMIT):
            lam, used = _dense_cached(model, tuple(group)), "dense"
        else:
            lam, its = _davidson(layout, model.channels, min(k, layout.size), scale)
            used = "davidson"
            iterations.append(its)
        complete = complete and lam.size == layout.size
        parts.append(lam)
        methods.append(used)
    lam = _snap(np.concatenate(parts), thr)
    lam = lam[_order(lam)][:k]
    info = {"method": methods[0] if len(set(methods)) == 1 else methods,
            "sectors": list(sectors), "size": int(sum(space.dim(m) ** 2 for m in sectors)),
            "scale": scale, "zero_tol": thr, "complete": complete}
    if iterations:
        info["iterations"] = iterations if len(iterations) > 1 else iterations[0]
    return lam, info


# ---------------------------------------------------------------------------- closed form
def _closed_form(space: SectorSpace, m: int, k: int, thr: float) -> np.ndarray:
    """The rightmost eigenvalues of ``X -> -i (H X - X H^+)`` on sector ``m``, at
    least ``k``: ``-i (lambda_a - conj(lambda_b))`` with real part ``Im lambda_a +
    Im lambda_b``, over the ``lambda`` among the ``k`` of largest imaginary part
    (and every one tied with the ``k``-th to ``thr``: the order of equal real
    parts goes by ``|im|``), which holds the ``k`` largest sums."""
    sec = space.sector(m)
    if not np.any(sec.decay):  # Hermitian: real energies, real parts exactly 0
        lam = np.linalg.eigvalsh(sec.h_sparse(space.a).toarray()).astype(complex)
    else:
        lam = np.linalg.eigvals(sec.heff_sparse(space.a).toarray())
    if lam.size > k:
        lam = lam[lam.imag >= np.sort(lam.imag)[::-1][k - 1] - thr]
    re = lam.imag[:, None] + lam.imag[None, :]
    im = -(lam.real[:, None] - lam.real[None, :])
    return (re + 1j * im).ravel()


# ---------------------------------------------------------------------------- dense
def _packing_maps(layout: BlockLayout):
    """``(U, diag, up, low)``: the sparse complex ``U`` with ``unpack(r) = U r`` and
    the packed positions of the diagonal, of ``X_ij`` (``i < j``, its real part)
    and of its imaginary part (:class:`~thermospin_mc.blocksolve.HermitianPacking`)."""
    diag, up, low = [], [], []
    for m in layout.sectors:
        d, o = layout.dims[m], layout.offsets[m]
        i, j = np.triu_indices(d, 1)
        diag.append(o + np.arange(d) * (d + 1))
        up.append(o + i * d + j)
        low.append(o + j * d + i)
    diag, up, low = (np.concatenate(x).astype(np.int64) for x in (diag, up, low))
    s = 1.0 / np.sqrt(2.0)
    # r[up] = sqrt2 Re X_ij, r[low] = sqrt2 Im X_ij: X_ij = (r_up + i r_low) / sqrt2
    rows = np.concatenate([diag, up, low, up, low])
    cols = np.concatenate([diag, up, up, low, low])
    vals = np.concatenate([np.ones(diag.size), np.full(up.size, s), np.full(up.size, s),
                           np.full(up.size, 1j * s), np.full(up.size, -1j * s)])
    n = layout.size
    U = sp.csr_matrix((vals.astype(complex), (rows, cols)), shape=(n, n))
    return U, diag, up, low


@functools.lru_cache(maxsize=4)
def _dense_cached(model: ChainModel, group: tuple) -> np.ndarray:
    """:func:`_dense` of the model's blocks ``group``, kept for the last few models
    (``relaxation_time`` after ``liouvillian_spectrum`` costs nothing more)."""
    lam = _dense(BlockLayout(SectorSpace(model), list(group)))
    lam.flags.writeable = False
    return lam


def _dense(layout: BlockLayout) -> np.ndarray:
    """Every eigenvalue of the assembled real packed generator (``8 n^2`` bytes and
    LAPACK's workspace; refused above :data:`DENSE_BYTES`)."""
    n = layout.size
    need = 16.0 * n * n
    if need > DENSE_BYTES:
        raise ValueError(f"method='dense' needs about {need / 1e9:.1f} GB for {n} unknowns "
                         f"(budget {DENSE_BYTES / 1e9:.1f} GB); use method='davidson'")
    L = (nojump_generator(layout) + feed_generator(layout)).tocsr()
    U, diag, up, low = _packing_maps(layout)
    Y = (L @ U).tocsr()  # columns: L of the unpacked unit vectors (Hermitian blocks)
    M = np.empty((n, n))
    M[diag] = Y[diag].real.toarray()
    M[up] = np.sqrt(2.0) * Y[up].real.toarray()
    M[low] = np.sqrt(2.0) * Y[up].imag.toarray()
    return np.linalg.eigvals(M)


# ---------------------------------------------------------------------------- Davidson
def _davidson(layout: BlockLayout, channels, k: int, scale: float) -> tuple[np.ndarray, int]:
    """The rightmost ``k`` eigenvalues (at least; conjugates included) by
    :class:`Davidson`, and its iteration count."""
    want = min(k + EXTRA, layout.size)
    keep = max(30, 2 * want)
    used = 0
    for bins, max_iter in ATTEMPTS:
        solver = Davidson(layout, channels, scale, max_basis=2 * keep, keep=keep, nseed=want,
                          bins=bins, max_iter=max_iter)
        try:
            lam = solver.run(want, want - min(k, layout.size))
        except RuntimeError:
            used += solver.iterations
            continue
        return lam, used + solver.iterations
    raise RuntimeError(f"the Davidson iteration for the Liouvillian spectrum did not converge "
                       f"({used} steps in {len(ATTEMPTS)} attempts: "
                       f"{', '.join(str(b) for b, _ in ATTEMPTS)} frequency bands); "
                       f"method='dense' is complete where it fits in memory")


class Davidson:
    """Generalised Davidson iteration for the rightmost eigenvalues of ``L``.

    Works in the real packing of Hermitian blocks (``n`` real unknowns), where
    ``L`` is real. The basis holds at most ``max_basis`` vectors (restarted to
    the Schur vectors of about ``keep`` Ritz values, :meth:`_restart`), and up
    to ``2 * bins + 2`` more while a block of corrections is added, together
    with their images under ``L`` and the projected matrix ``H = V^T L V``.

    Parameters
    ----------
    layout : BlockLayout
        The sectors (all coupled ones, or one sector).
    channels : sequence of Channel
        The model's channels (they choose the direction of the preconditioner's
        sweep).
    scale : float
        A bound of ``|lambda|`` (:func:`spectral_scale`); tolerances are relative to it.
    max_basis, keep : int
        Basis size before a restart, and the Ritz vectors a restart keeps.
    block : int
        Unconverged Ritz pairs corrected per step.
    nseed : int
        Slowest no-jump modes seeding the basis (and explored), besides the
        slowest of every frequency band.
    bins : int
        Frequency bands: ``[0, omega_max]`` (``omega_max`` the largest no-jump
        frequency ``|E_a - E_b|``) cut in ``bins`` equal parts, each seeded,
        kept through restarts and verified (:meth:`_unclear`).
    rounds : tuple of {"axis", "track"}
        The exploration rounds (:meth:`_explore`).
    max_iter : int
        Steps before giving up (``RuntimeError``).
    """

    def __init__(self, layout: BlockLayout, channels, scale: float, max_basis: int = 60,
                 keep: int = 30, block: int = 1, nseed: int = 8, bins: int = 12,
                 rounds: tuple = ("axis", "track", "track"), max_iter: int = 6000):
        self.layout = layout
        self.scale = scale
        self.gen = BlockGenerator(layout)
        try:
            self.inv = NoJumpInverse(layout)
        except ValueError as exc:
            raise ValueError("the Davidson spectrum needs every no-jump mode to decay (its "
                             "preconditioner inverts the no-jump part); this model has a "
                             "dark state: use method='dense' (small N)") from exc
        self.pack = HermitianPacking(layout)
        self.fast = self._single()
        self.threads = _threads.current()
        self.blas = ThreadpoolController()
        rate = {kind: sum(ch.rate for ch in channels if ch.kind == kind)
                for kind in ("loss", "pump")}
        # the sweep handles the weaker direction (BorderedSolver's rule)
        if rate["loss"] > 0 and (rate["pump"] == 0 or rate["loss"] <= rate["pump"]):
            self.dm = -1
        else:
            self.dm = 1
        self.max_basis = max_basis
        self.keep = keep
        self.block = block
        self.nseed = nseed
        self.bins = max(1, int(bins))
        self.rounds = rounds
        self.max_iter = max_iter
        self.iterations = 0
        self.verifications = 0  # corrections of the verification (:meth:`_unclear`)
        self.n = layout.size
        self.omega_max = 1.0  # set by :meth:`seeds`
        # corrections are added at most this many at a time (:meth:`_insert`)
        self.piece = 2 * max(block, self.bins)

    # ------------------------------------------------------------ operators
    def apply(self, r: np.ndarray) -> np.ndarray:
        """``L`` in the real packing."""
        return self.pack.pack(self.gen.apply(self.pack.unpack(r), hermitian=True))

    def _single(self) -> dict:
        """Single-precision copies ``(V, W, W^+, V^+, den)`` of the eigen-decompositions
        of the blocks with at least ``SINGLE_DIM`` rows and a well-conditioned
        eigenbasis (``||V||_F ||V^-1||_F <= 1e4``)."""
        fast = {}
        for m, (kind, V, W, den) in self.inv.data.items():
            if kind != "eig" or V.shape[0] < SINGLE_DIM:
                continue
            if np.linalg.norm(V) * np.linalg.norm(W) > 1e4:
                continue
            c = np.complex64
            fast[m] = (V.astype(c), W.astype(c), np.ascontiguousarray(W.conj().T, dtype=c),
                       np.ascontiguousarray(V.conj().T, dtype=c), den.astype(c))
        return fast

    def _block_solve(self, theta: complex):
        """``block_solve(m, Y, out, hermitian)`` of the shifted no-jump part
        (:func:`~thermospin_mc._blockops.triangular_solve`): single precision where
        :meth:`_single` allows it (a preconditioner need not be exact: the Ritz
        pairs and residuals are double), :class:`NoJumpInverse` elsewhere."""
        th32 = np.complex64(theta)

        def solve(m, Y, out, hermitian):
            if m in self.fast:
                V, W, WH, VH, den = self.fast[m]
                Z = W @ Y.astype(np.complex64) @ WH
                Z /= den - th32
                out[...] = V @ Z @ VH
            else:
                self.inv.solve_block(m, Y, theta if not hermitian else float(np.real(theta)),
                                     out=out, hermitian=hermitian)
        return solve

    def precondition(self, re: np.ndarray, im: np.ndarray | None, theta: complex) -> list:
        """``K(theta)^-1 (re + i im)`` as real packed vectors (its real and imaginary
        parts; one vector for a real ``theta`` and ``im=None``). The block solves
        run on the caller's ``n_jobs`` BLAS threads; everything else of the
        iteration (matrix-vector products with the basis, small dense problems)
        on one: on a shared machine, BLAS threads waking for thousands of small
        calls stalled whole runs (N = 9: 51 s instead of 2.5 s, 2 threads)."""
        with self.blas.limit(limits=self.threads):
            return self._precondition(re, im, theta)

    def _precondition(self, re, im, theta) -> list:
        if im is None:
            y = triangular_solve(self.gen, self._block_solve(float(np.real(theta))),
                                 self.pack.unpack(re), self.dm, True)
            return [self.pack.pack(y)]
        z = self.pack.unpack(re) + 1j * self.pack.unpack(im)
        y = triangular_solve(self.gen, self._block_solve(complex(theta)), z, self.dm, False)
        lay = self.layout
        c, s = np.empty_like(y), np.empty_like(y)
        for m in lay.sectors:
            d, o = lay.dims[m], lay.offsets[m]
            B = y[o:o + d * d].reshape(d, d)
            BH = B.conj().T
            c[o:o + d * d] = (0.5 * (B + BH)).ravel()
            s[o:o + d * d] = (-0.5j * (B - BH)).ravel()
        return [self.pack.pack(c), self.pack.pack(s)]

    def seeds(self, count: int) -> tuple[list, list, list]:
        """No-jump modes ``v_a v_b^+`` (``a <= b``) as the Hermitian and anti-Hermitian
        parts of each: the ``count`` slowest (by ``-(Gamma_a + Gamma_b) / 2``
        descending), then the slowest other one of every frequency band
        (:meth:`_band`), and the no-jump values ``-i (lambda_a - conj(lambda_b))``
        of the latter. Sets ``omega_max``."""
        lay, space = self.layout, self.layout.space
        cand = []
        vecs = {}
        for m in lay.sectors:
            kind, A, _B, den = self.inv.data[m]
            if kind == "eig":
                vecs[m] = A
            else:
                lam, vecs[m] = np.linalg.eig(space.sector(m).heff_sparse(space.a).toarray())
                den = -1j * (lam[:, None] - lam.conj()[None, :])
            a, b = np.triu_indices(lay.dims[m])
            cand.append((den[a, b], np.full(a.size, m), a, b))
        den = np.concatenate([c[0] for c in cand])
        ms, aa, bb = (np.concatenate([c[i] for c in cand]) for i in (1, 2, 3))
        self.omega_max = max(float(np.abs(den.imag).max()), 1e-3)
        order = np.lexsort((np.abs(den.imag), -den.real))
        band = self._band(den.imag)
        first = {}
        for q in order[count:]:  # slowest first: the first of each band
            first.setdefault(int(band[q]), q)
        bands = [first[b] for b in sorted(first)]

        def parts(take):
            out = []
            for q in take:
                m, a, b = int(ms[q]), int(aa[q]), int(bb[q])
                d, o = lay.dims[m], lay.offsets[m]
                X = np.outer(vecs[m][:, a], vecs[m][:, b].conj())
                XH = X.conj().T
                for part in (0.5 * (X + XH), -0.5j * (X - XH)):
                    x = np.zeros(self.n, dtype=complex)
                    x[o:o + d * d] = part.ravel()
                    out.append(self.pack.pack(x))
            return out

        return parts(order[:count]), parts(bands), [complex(den[q]) for q in bands]

    def _centre(self, im: float) -> float:
        """The centre of the frequency band of ``im``."""
        return (float(self._band(np.array([im]))[0]) + 0.5) * self.omega_max / self.bins

    def _band(self, im: np.ndarray) -> np.ndarray:
        """The frequency band (``0 .. bins - 1``) of each frequency ``im``: equal
        parts of ``[0, omega_max]``, the last one open above."""
        b = (np.abs(np.asarray(im, dtype=float)) * (self.bins / self.omega_max)).astype(int)
        return np.minimum(b, self.bins - 1)

    # ------------------------------------------------------------ Ritz pairs
    @staticmethod
    def ritz(H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues and unit eigenvectors of the small real ``H`` from its complex
        Schur form by back substitution (no balancing)."""
        T, Z = sla.schur(H, output="complex")
        p = T.shape[0]
        lam = np.diag(T).copy()
        X = np.zeros((p, p), dtype=complex)
        tiny = 1e-14 * max(1.0, float(np.abs(lam).max(initial=0.0)))
        for j in range(p):
            X[j, j] = 1.0
            if j:
                A = T[:j, :j] - lam[j] * np.eye(j)
                dg = np.diagonal(A).copy()
                dg[np.abs(dg) < tiny] = tiny  # a repeated Ritz value: any vector of the pair
                A[np.diag_indices(j)] = dg
                X[:j, j] = sla.solve_triangular(A, -T[:j, j])
        Y = Z @ X
        return lam, Y / np.linalg.norm(Y, axis=0)

    # ------------------------------------------------------------ iteration
    def _add(self, vectors: list) -> None:
        """Orthonormalise ``vectors`` against the basis and each other, append them
        with their images and extend ``H`` and ``G``.

        Block classical Gram-Schmidt: all of ``vectors`` are projected off the
        basis together (two passes over it per sweep, a second sweep where the
        first cancelled more than 30% of a vector), then against each other; ``H``
        and ``G`` grow by one pass over ``V`` and one over ``W`` for the whole
        block. The long arrays are streamed once per block instead of once per
        vector, on every core the run has: at N = 11 (705,432 unknowns) the basis
        is 0.3 GB, and adding vectors was most of the iteration's time."""
        p = self.p
        room = self.Vt.shape[0] - p
        rows = [np.array(v, dtype=float) for v in vectors if np.all(np.isfinite(v))][:room]
        if not rows:
            return
        with self.blas.limit(limits=self.threads):
            keep = self._orthonormal(np.array(rows))
            if not keep:
                return
            q = p + len(keep)
            Q = self.Vt[p:q]
            Q[:] = keep
            for i in range(len(keep)):
                self.Wt[p + i] = self.apply(Q[i])
            WQ = self.Wt[p:q]
            self.H[:q, p:q] = self.Vt[:q] @ WQ.T
            both = self.Wt[:q] @ np.concatenate([Q, WQ]).T  # one pass over W
        b = q - p
        self.H[p:q, :p] = both[:p, :b].T
        self.G[:q, p:q] = both[:, b:]
        self.G[p:q, :p] = both[:p, b:].T
        self.p = q

    def _orthonormal(self, T: np.ndarray) -> list:
        """The rows of ``T`` projected off the basis and orthonormalised among
        themselves (:meth:`_add`); rows that cancel to ``1e-10`` of their norm are
        dropped."""
        size = np.linalg.norm(T, axis=1)
        n0 = size.copy()
        V = self.Vt[:self.p]
        for _ in range(2):
            if self.p == 0:
                break
            T -= (T @ V.T) @ V
            n1 = np.linalg.norm(T, axis=1)
            if np.all(n1 >= 0.7 * n0):
                break
            n0 = n1
        keep = []
        for t, n_orig in zip(T, size, strict=True):
            nt0 = np.linalg.norm(t)
            for _ in range(2):
                for u in keep:
                    t -= (u @ t) * u
                nt = np.linalg.norm(t)
                if nt >= 0.7 * nt0 or nt == 0.0:
                    break
                nt0 = nt
            if nt > 1e-10 * n_orig:
                keep.append(t / nt)
        return keep

    def _insert(self, vectors: list, follow=()) -> None:
        """:meth:`_add` ``vectors``, at most ``piece`` at a time, each piece after a
        restart when it would overflow ``max_basis``; ``follow``: Ritz values whose
        nearest Ritz vectors every such restart keeps (the pairs being explored)."""
        for start in range(0, len(vectors), self.piece):
            part = vectors[start:start + self.piece]
            if self.p + len(part) > self.max_basis:
                lam = np.linalg.eigvals(self.H[:self.p, :self.p])
                self._restart(lam, follow, room=len(part))
            self._add(part)

    def _explore(self, rounds, track=None) -> None:
        """Look for the slowest mode at the frequency of every seed before the
        rightmost values are resolved. The ``nseed + 1`` rightmost Ritz values of
        the seeded basis are followed through ``rounds``: in an ``"axis"`` round the
        Ritz pair nearest to ``i Im(theta)`` is corrected with the preconditioner
        shifted to ``i Im(theta)`` (real part 0, the right edge of the spectrum:
        toward the rightmost eigenvalue at that frequency), in a ``"track"`` round
        the pair nearest to the value followed is corrected at its own Ritz value
        (and followed on). The jumps feed coherences back and can move a mode far
        to the right of the no-jump mode it grows from (measured: from -0.25 to
        -0.02 at frequency 2.45); a slow mode at a large frequency that no
        correction reaches is never found. Measured on the paper's pump model at
        N = 9, where the pair -0.3549 +- 5.294i is the fifth slowest: two track
        rounds found -0.3812 +- 3.514i instead, axis then two track rounds find it
        (and on 80 random chains at N = 4-6 missed 2 slow pairs, against 6 with
        two track rounds)."""
        imtol = ZERO_TOL * self.scale
        track = None if track is None else list(track)
        for mode in rounds:
            p = self.p
            lam, Y = self.ritz(self.H[:p, :p])
            rep = np.flatnonzero(lam.imag >= -imtol)
            if track is None:
                track = list(lam[rep][_order(lam[rep])][:self.nseed + 1])
            used, pairs = [], []
            for s_, old in enumerate(track):
                free = [j for j in rep if j not in used]
                if not free:
                    break
                aim = 1j * old.imag if mode == "axis" else old
                j = min(free, key=lambda q: abs(lam[q] - aim))
                used.append(j)
                if mode != "axis":
                    track[s_] = complex(lam[j])
                pairs.append(_pair(lam[j], Y[:, j], imtol))
            if not pairs:
                break
            R = self._residuals(np.array([q[1] for q in pairs]).T, np.array([q[0] for q in pairs]))
            new = []
            for (th, _y, real), r in zip(pairs, R, strict=True):
                shift = th if mode != "axis" else (0.0 if real else 1j * th.imag)
                if np.linalg.norm(r) > RESIDUAL_TOL * self.scale:
                    new += self.precondition(r.real, None if real else r.imag, shift)
            self._insert(new, [lam[j] for j in used])

    def _residual_norms(self, Y: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """``||L u - theta u||`` for the columns ``y`` of ``Y`` (``u = V y``) from the
        small matrices: ``y^+ G y - 2 Re(theta y^+ H^T y) + |theta|^2 ||y||^2``
        (``G = W W^T``, ``W V^T = H^T``); rounding leaves about ``1e-8 |theta|``."""
        p = self.p
        G, H = self.G[:p, :p], self.H[:p, :p]
        a = np.einsum("ij,ij->j", Y.conj(), G @ Y).real
        b = np.einsum("ij,ij->j", Y.conj(), H.T @ Y)
        c = np.einsum("ij,ij->j", Y.conj(), Y).real
        return np.sqrt(np.maximum(a - 2.0 * (theta * b).real + np.abs(theta) ** 2 * c, 0.0))

    def _residuals(self, Y: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Rows ``L u - theta u`` for the columns ``y`` of ``Y`` (``u = V y``); four
        and more at a time by matrix products over the basis (eight columns each);
        on every core the run has."""
        with self.blas.limit(limits=self.threads):
            return self._residual_rows(Y, theta)

    def _residual_rows(self, Y: np.ndarray, theta: np.ndarray) -> np.ndarray:
        V, W = self.Vt[:self.p], self.Wt[:self.p]
        out = np.empty((Y.shape[1], self.n), dtype=complex)
        if Y.shape[1] >= 4:
            for s in range(0, Y.shape[1], 8):
                Ys, th = Y[:, s:s + 8], theta[s:s + 8, None]
                c = Ys.shape[1]
                B = np.ascontiguousarray(np.concatenate([Ys.real, Ys.imag], axis=1).T)
                U, LU = B @ V, B @ W
                out[s:s + c].real = LU[:c] - th.real * U[:c] + th.imag * U[c:]
                out[s:s + c].imag = LU[c:] - th.real * U[c:] - th.imag * U[:c]
            return out
        for i in range(Y.shape[1]):
            yr, yi = Y[:, i].real, Y[:, i].imag
            tr, ti = theta[i].real, theta[i].imag
            ur = V.T @ yr
            if not np.any(yi) and ti == 0.0:
                out[i] = W.T @ yr - tr * ur
                continue
            ui = V.T @ yi
            out[i].real = W.T @ yr - tr * ur + ti * ui
            out[i].imag = W.T @ yi - tr * ui - ti * ur
        return out

    def _band_pairs(self, lam, Y, done: list, match: float) -> list:
        """``(theta, y, real)`` of the rightmost Ritz pair of every frequency band
        among those not converged before (``done``)."""
        imtol = ZERO_TOL * self.scale
        rep = [j for j in np.flatnonzero(lam.imag >= -imtol)
               if not any(abs(c - lam[j]) <= match for c in done)]
        if not rep:
            return []
        rep = np.array(rep)
        band = self._band(lam[rep].imag)
        picks = []
        for b in np.unique(band):
            sel = rep[band == b]
            j = sel[np.argmax(lam[sel].real)]
            picks.append(_pair(lam[j], Y[:, j], imtol))
        return picks

    def _unclear(self, lam, Y, done: list, rho: float, match: float):
        """The band check, once the wanted values have converged (``rho``: the real
        part of the last of them), on the rightmost pair of every frequency band
        not converged before (:meth:`_band_pairs`): converged now (residual ``<=
        GUARD_TOL * scale``), it joins ``done`` and, right of ``rho``, ends the check
        (``None``: a value was missing); its reach ``Re theta + ||r||`` right of
        ``rho`` (for a normal ``L``, the eigenvalue a pair approximates lies within
        ``||r||`` of ``theta``), it is returned as ``(theta, r, real)`` to be
        corrected; else its band is clear. The residual norms come from the small
        matrices (:meth:`_residual_norms`), the residuals themselves only where
        they decide. An empty list: every band is clear."""
        picks = self._band_pairs(lam, Y, done, match)
        if not picks:
            return []
        th = np.array([q[0] for q in picks])
        est = self._residual_norms(np.array([q[1] for q in picks]).T, th)
        look = [i for i in range(len(picks))
                if est[i] <= 10 * GUARD_TOL * self.scale
                or th[i].real + 1.01 * REACH * est[i] >= rho]
        if not look:
            return []
        R = self._residuals(np.array([picks[i][1] for i in look]).T, th[look])
        out = []
        for i, r in zip(look, R, strict=True):
            nr = float(np.linalg.norm(r))
            if nr <= GUARD_TOL * self.scale:
                done.append(picks[i][0])
                if th[i].real > rho:
                    return None
            elif th[i].real + REACH * nr >= rho:
                out.append((picks[i][0], r, picks[i][2]))
        return out

    def run(self, want: int, extra: int = 0) -> np.ndarray:
        """The ``want`` rightmost eigenvalues (:meth:`iterate`), one BLAS thread
        outside the preconditioner."""
        with self.blas.limit(limits=1):
            return self.iterate(want, extra)

    def iterate(self, want: int, extra: int = 0) -> np.ndarray:
        """The ``want`` rightmost eigenvalues (conjugates counted; a pair cut at the
        end is completed), sorted.

        Ritz values up to the ``want - extra``-th converge to ``RESIDUAL_TOL``, the
        ``extra`` guards beyond them to ``GUARD_TOL`` (they only need to be found, so
        that the last asked-for value is not one about to be overtaken). Each step
        corrects up to ``block`` unconverged pairs, rightmost first. When they have
        all converged, the verification (:meth:`_unclear`) corrects the unresolved
        pair of every frequency band, each at its own Ritz value, until every band
        is clear; a value it finds right of the last one starts the wanted values
        over.
        """
        n, cap = self.n, self.max_basis + self.piece + 2
        self.Vt = np.empty((cap, n))
        self.Wt = np.empty((cap, n))
        self.H = np.zeros((cap, cap))
        self.G = np.zeros((cap, cap))  # W W^T: residual norms without the long vectors
        self.p = 0
        scale = self.scale
        imtol = ZERO_TOL * scale
        match = 1e-7 * scale
        slow, bands, values = self.seeds(self.nseed)
        self._insert([self.pack.pack(self.layout.trace())] + slow)
        self._explore(self.rounds)
        self._insert(bands)
        self._explore(self.rounds, [complex(z.real, abs(z.imag)) for z in values])
        done: list[complex] = []  # converged Ritz values (one per conjugate pair)
        axis = None  # the converged values when the bands were last corrected toward the axis
        while True:
            p = self.p
            lam, Y = self.ritz(self.H[:p, :p])
            rep = np.flatnonzero(lam.imag >= -imtol)
            rep = rep[_order(lam[rep])]
            free = list(done)
            count, found, pending = 0, [], []
            for j in rep:
                th = complex(lam[j])
                real = abs(th.imag) <= imtol
                tol = (RESIDUAL_TOL if count < want - extra else GUARD_TOL) * scale
                count += 1 if real else 2
                near = [c for c in free if abs(c - th) <= match]
                if near:  # converged before (each converged value covers one Ritz value)
                    free.remove(near[0])
                    found.append(complex(th.real) if real else th)
                else:
                    pending.append((*_pair(lam[j], Y[:, j], imtol)[:2], real, tol))
                if count >= want:
                    break
            targets = []
            for start in range(0, len(pending), self.block):
                batch = pending[start:start + self.block]
                R = self._residuals(np.array([b[1] for b in batch]).T,
                                    np.array([b[0] for b in batch]))
                for (th, _y, real, tol), r in zip(batch, R, strict=True):
                    if np.linalg.norm(r) <= tol:
                        done.append(th)
                        found.append(th)
                    else:
                        targets.append((th, r, real))
                if targets:
                    break
            targets = [(th, r, real, th) for th, r, real in targets]
            follow = ()
            if not targets and count >= want:
                unclear = self._unclear(lam, Y, done, min(z.real for z in found), match)
                if unclear == []:  # every band clear: done, or first toward the axis
                    key = np.sort_complex(np.round(np.array(found) / match))
                    if axis is not None and np.array_equal(key, axis):
                        out = np.array(found, dtype=complex)
                        out = np.concatenate([out, out[np.abs(out.imag) > 0].conj()])
                        return out[_order(out)]
                    axis = key
                    picks = self._band_pairs(lam, Y, done, match)
                    R = self._residuals(np.array([q[1] for q in picks]).T,
                                        np.array([q[0] for q in picks])) if picks else []
                    unclear = [(th, r, False, 1j * self._centre(th.imag))
                               for (th, _y, real), r in zip(picks, R, strict=True)]
                else:  # None: a value joined the wanted ones, look again
                    unclear = [(th, r, real, th) for th, r, real in unclear or []]
                targets = unclear
                follow = [t[0] for t in targets]
                self.verifications += len(targets)
            self.iterations += 1
            if self.iterations > self.max_iter:
                raise RuntimeError(f"the Davidson iteration for the Liouvillian spectrum did not "
                                   f"converge in {self.max_iter} steps")
            if count >= want and not targets:
                continue
            if not targets:  # fewer Ritz values than wanted: widen the basis
                new = [np.random.default_rng(self.iterations).standard_normal(n)]
            else:
                new = []
                for _th, r, real, shift in targets:
                    new += self.precondition(r.real, None if real else r.imag, shift)
            self._insert(new, follow)

    def _restart(self, lam: np.ndarray, follow=(), room: int = 0) -> None:
        """Keep the Schur vectors of chosen Ritz values, in this order while they fit
        ``max_basis - room`` (a conjugate pair takes two): the rightmost up to
        ``keep / 2`` vectors (the wanted values and their guards), the nearest to
        each of ``follow``, the rightmost of every frequency band, the rightmost up
        to ``keep``."""
        p = self.p
        imtol = ZERO_TOL * self.scale
        rep = np.flatnonzero(lam.imag >= -imtol)
        vals = lam[rep]
        size = np.where(np.abs(vals.imag) > imtol, 2, 1)
        right = np.argsort(-vals.real, kind="stable")
        limit = max(self.max_basis - room, 1)
        chosen = np.zeros(vals.size, dtype=bool)
        used = 0

        def take(j, upto):
            nonlocal used
            if not chosen[j] and used + size[j] <= upto:
                chosen[j] = True
                used += size[j]

        for j in right:
            if used >= self.keep // 2:
                break
            take(j, limit)
        for z in follow:
            take(int(np.argmin(np.abs(vals - complex(z.real, abs(z.imag))))), limit)
        band = self._band(vals.imag)
        for b in np.unique(band):
            sel = np.flatnonzero(band == b)
            take(sel[np.argmax(vals[sel].real)], limit)
        for j in right:
            take(j, min(self.keep, limit))
        kept = vals[chosen]
        tol = 1e-8 * self.scale

        def select(x, y):
            return bool(np.any(np.abs(kept.real - x) + np.abs(np.abs(kept.imag) - abs(y)) <= tol))

        T, Z, q = sla.schur(self.H[:p, :p], output="real", sort=select)
        Zq = Z[:, :q]
        with self.blas.limit(limits=self.threads):  # one large product each
            self.Vt[:q] = Zq.T @ self.Vt[:p]
            self.Wt[:q] = Zq.T @ self.Wt[:p]
        self.H[:q, :q] = T[:q, :q]
        self.G[:q, :q] = Zq.T @ self.G[:p, :p] @ Zq
        self.p = q
