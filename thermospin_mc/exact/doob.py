"""The Doob process of the tilted ensemble, exactly, sector by sector (docs/model.md 15).

What is computed
----------------
For a weighted count ``K`` (``counts = {channel name: nu_k}``, docs/model.md 11) and a
counting field ``s``, the tilted generator

    L_s rho = -i (H_eff rho - rho H_eff^+) + sum_k exp(s nu_k) r_k A_k rho A_k^+

(``L_k = sqrt(r_k) A_k``; ``A_k`` the 0/1 map of a loss or pump, ``sigma^z`` of a
dephasing; uncounted channels have ``nu_k = 0``) has the leading eigenvalue
``theta(s)`` (:func:`~thermospin_mc.exact.fcs.scgf`), a right eigenmatrix ``r_s`` and a
left eigenmatrix ``l_s``: ``L_s^*(l) = i (H_eff^+ l - l H_eff) + sum_k exp(s nu_k)
r_k A_k^+ l A_k = theta l``, Hermitian positive definite and block diagonal in the
magnon number ``m``. With ``G = -i H_eff`` the Doob unravelling has

    no-jump generator  G_D = l^(1/2) G l^(-1/2) - theta / 2,
                       i.e. H_D = i G_D = l^(1/2) H_eff l^(-1/2) - i theta / 2,
    jump operators     sqrt(r_k) M_k,  M_k = exp(s nu_k / 2) l^(1/2) A_k l^(-1/2),

and ``Gamma_D = i (H_D - H_D^+) = sum_k r_k M_k^+ M_k`` (trace preservation:
``d ||psi||^2 / dt = -psi^+ Gamma_D psi``). Each ``M_k`` moves sector ``m`` to
``m + dm_k``, so Doob trajectories live in the magnon sectors; its typical
histories are the rare histories of the original chain at tilt ``s``. Its
steady state is ``rho_D = l^(1/2) r_s l^(1/2)`` and its long-time rate of ``K``
is ``theta'(s)``.

Conventions
-----------
- Blocks are in the basis order of :class:`~thermospin_mc.core.sectors.SectorSpace`
  (colex rank), stacked row-major as :class:`~thermospin_mc.exact.blocks.BlockLayout`
  on the model's reachable sectors (which hold the steady state). In that
  layout ``Tr(X^+ Y) = vec(X)^H vec(Y)``, so ``L_s^*`` is the conjugate
  transpose of the sparse tilted generator and ``vec(l)`` solves
  ``L_s^H u = theta u`` (a row vector ``y^T L_s = theta y^T`` is ``y = conj(u)``).
- Normalisation (``l`` is defined up to a positive factor): ``Tr r_s = 1`` and
  ``Tr(l r_s) = sum_m Tr(l_m r_m) = 1``; then ``rho_D`` has unit trace, and at
  ``s = 0`` ``l`` is the identity.
- ``theta`` is the two-sided Rayleigh quotient ``Tr(l L_s r) / Tr(l r)`` of the
  computed pair, checked against :func:`~thermospin_mc.exact.fcs.scgf` (the pair and
  the continuation of ``scgf`` agree to ~1e-13).
- Initial state: a pure ``psi0`` of the model becomes ``l^(1/2) psi0``,
  normalised (the Doob measure then equals the tilted measure of histories
  from ``psi0`` with the final weight ``Tr(l rho_t)``). Mixtures are refused.

Refusals (one-line ``ValueError``)
----------------------------------
A model without a unique steady state (as :func:`~thermospin_mc.exact.fcs.scgf`), an
unknown channel or non-integer weight in ``counts``, a non-finite ``s``, a
mixed initial state, a layout above :data:`DOOB_LIMIT` (see there), an ``l``
that is not Hermitian positive definite to round-off (``theta(s)`` not the
leading eigenvalue on the reachable sectors), and a trace-preservation defect
of the assembled process above ``1e-8`` (:meth:`DoobProcess.check`).

Costs
-----
``theta`` by :func:`scgf` (continuation from ``s = 0``), then the two
eigenvectors by shifted inverse iteration at ``sigma = theta + 1e-6 max|L|``
(two or three steps, :mod:`.doob_eigen`): a sparse LU of ``L_s - sigma`` (both eigenvectors from
one factorisation) up to :data:`~thermospin_mc.exact.counting.DIRECT_LIMIT`
unknowns; above, GMRES left-preconditioned with the exact shifted no-jump
inverse (per block in the eigenbasis of ``H_eff``, or a triangular Sylvester
solve in its Schur form when that basis is ill-conditioned). Then
``O(sum_m d_m^3)`` dense work for ``l^(+-1/2)`` and the per-sector matrices,
cached (memory ``~ (3 + n_channels) sum_m d_m^2`` complex numbers). Measured on
the paper's pump chain (counts ``{"pump": 1}``, ``s = 1``, one thread, on a
busy two-core machine): N = 5 0.1 s, N = 7 1.3 s, N = 9 25 s, about half of it
in :func:`scgf`.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np

from .. import _threads
from .._threads import blas_threads
from ..core.sectors import SectorSpace
from ..physics.model import ChainModel
from .blocks import check_model
from .counting import CountingSystem, channel_dm, check_counts, steady_sectors
from .doob_eigen import (
    GMRES_RTOL,  # re-export
    hermitian_blocks,
    inverse_iteration,
    shifted_solvers,
)
from .fcs import scgf

__all__ = ["doob", "DoobProcess", "DOOB_LIMIT", "GMRES_RTOL"]

#: Largest stacked block layout (``sum_m C(N, m)^2`` over the reachable sectors)
#: for which ``l_s`` is computed: ``C(18, 9)``, every sector of ``N = 9`` (about half
#: a minute; ``N = 10`` has 3.8 times the unknowns and sectors twice as large).
DOOB_LIMIT = 48_620
#: ``l`` is positive definite to round-off when every eigenvalue exceeds this
#: fraction of the largest one (over all blocks).
PD_RTOL = 1e-12
#: Offset of the inverse-iteration shift above theta, relative to ``max |L|``.
SHIFT = 1e-6
#: Largest accepted trace-preservation defect of the assembled process.
CHECK_TOL = 1e-8


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------- the process
class DoobProcess:
    """The Doob process of a chain at tilt ``s`` (built by :func:`doob`; immutable).

    Attributes
    ----------
    model : ChainModel
        The original chain; ``channels``, ``N``, ``couplings``, ``alpha_method``
        are its own (jump tables keep its channel names and rates).
    counts : dict
        ``{channel name: integer weight}`` (validated, the model's channel order).
    s, theta : float
        The counting field and the exact ``theta(s)``.

    The per-sector matrices (:meth:`l`, :meth:`sector_heff`,
    :meth:`sector_gamma`, :meth:`jump_matrix`) are computed once, read-only.
    """

    __slots__ = ("model", "_counts", "s", "theta", "_sectors", "_l", "_heff", "_gamma",
                 "_jumps", "_rho", "_psi0", "_defect", "_fp")

    def __init__(self, model, counts, s):
        model = check_model(model, "doob")
        weights = check_counts(model, counts)
        if isinstance(s, bool) or not isinstance(s, (int, float, np.integer, np.floating)):
            raise ValueError(f"s must be a finite real number, got {s!r}")
        s = float(s)
        if not math.isfinite(s):
            raise ValueError(f"s must be a finite real number, got {s!r}")
        if model.is_mixed:
            raise ValueError("doob: the initial state is a mixture; the Doob process takes a "
                             "pure initial state (its long-time statistics do not depend on "
                             "it), e.g. model.with_(initial='all_up')")
        steady = steady_sectors(model)  # refuses models without a unique steady state
        sectors = sorted(set(steady) | set(model.reachable_sectors()))
        size = sum(math.comb(model.N, m) ** 2 for m in sectors)
        if size > DOOB_LIMIT:
            raise ValueError(f"doob: the block layout of N = {model.N} has {size} unknowns, "
                             f"above the limit {DOOB_LIMIT} (every sector of N = 9): l_s is "
                             "computed by shifted inverse iteration on the whole block "
                             "Liouvillian")
        set_ = object.__setattr__
        set_(self, "model", model)
        set_(self, "_counts", dict(weights))
        set_(self, "s", s)
        set_(self, "_sectors", sectors)
        set_(self, "_fp", None)
        self._build(weights)
        defect = self.check()
        if defect > CHECK_TOL:
            raise ValueError(f"doob: the assembled Doob process does not preserve the trace "
                             f"(relative defect {defect:.3g} > {CHECK_TOL:g}); l_s is too "
                             f"ill-conditioned at s = {s:g}")

    # ------------------------------------------------------------------ construction
    def _build(self, weights: dict) -> None:
        set_ = object.__setattr__
        model, s = self.model, self.s
        theta0 = float(scgf(model, weights, s, n_jobs=_threads.current()))
        sysm = CountingSystem(model, self._sectors)
        lay = sysm.layout
        Ls = sysm.tilted(weights, s)
        LsH = Ls.conj().T.tocsr()
        scale = float(max(1.0, abs(sysm.L).max())) if sysm.L.nnz else 1.0
        sigma = theta0 + SHIFT * scale
        right, left = shifted_solvers(sysm, Ls, sigma)
        ident = lay.trace()  # vec of the identity: the trace functional, and a PD start
        r = inverse_iteration(right, Ls, theta0, sigma, ident, scale, "right")
        u = inverse_iteration(left, LsH, theta0, sigma, ident, scale, "left")
        r = r / (lay.trace() @ r)  # Tr r = 1
        u = u / np.conj(np.vdot(u, r))  # Tr(l r) = vec(l)^H vec(r) = 1
        theta = complex(np.vdot(u, Ls @ r))  # two-sided Rayleigh quotient
        if abs(theta - theta0) > 1e-9 * scale:
            raise ValueError(f"doob: the eigenpair found at theta = {theta.real:.12g} is not "
                             f"scgf's theta(s) = {theta0:.12g}")
        theta = theta.real
        set_(self, "theta", theta)
        lb = hermitian_blocks(lay, u, "left")
        rb = hermitian_blocks(lay, r, "right")
        eig = {m: np.linalg.eigh(B) for m, B in lb.items()}
        wmax = max(float(w.max()) for w, _ in eig.values())
        for m, (w, _) in eig.items():
            if w.min() <= PD_RTOL * wmax:
                raise ValueError(f"doob: l_s is not positive definite to round-off: smallest "
                                 f"eigenvalue {w.min():.3g} in block m = {m} (largest "
                                 f"{wmax:.3g}); theta(s) is not the leading eigenvalue on the "
                                 f"sectors {self._sectors}")
        sq = {m: (U * np.sqrt(w)) @ U.conj().T for m, (w, U) in eig.items()}
        isq = {m: (U / np.sqrt(w)) @ U.conj().T for m, (w, U) in eig.items()}
        space = lay.space
        heff, gamma, rho, jumps = {}, {}, {}, {}
        for m in self._sectors:
            Hm = space.sector(m).heff_sparse(space.a).toarray()
            HD = sq[m] @ Hm @ isq[m] - 0.5j * theta * np.eye(lay.dims[m])
            heff[m] = _frozen(HD)
            gamma[m] = _frozen(1j * (HD - HD.conj().T))
            R = sq[m] @ rb[m] @ sq[m]
            rho[m] = _frozen(0.5 * (R + R.conj().T))
            for k, ch in enumerate(model.channels):
                t = m + channel_dm(ch)
                if t not in lay.dims:
                    continue
                src, dst = space.jump_map(ch, m)
                amp = space.jump_amplitudes(ch, m)
                f = math.exp(0.5 * s * weights.get(ch.name, 0))
                jumps[k, m] = _frozen(f * (sq[t][:, dst] * amp) @ isq[m][src, :])
        set_(self, "_l", {m: _frozen(B) for m, B in lb.items()})
        set_(self, "_heff", heff)
        set_(self, "_gamma", gamma)
        set_(self, "_rho", rho)
        set_(self, "_jumps", jumps)
        set_(self, "_defect", None)
        m0, psi0 = SectorSpace(model).initial_state()
        w, U = eig[m0]
        phi = (U * np.sqrt(w)) @ (U.conj().T @ psi0)
        set_(self, "_psi0", (m0, _frozen(phi / np.linalg.norm(phi))))

    def __reduce__(self):
        # pickles (worker processes) carry the computed matrices, not a recomputation
        return (_restore, ({k: getattr(self, k) for k in self.__slots__},))

    def __setattr__(self, name, value):
        raise AttributeError("DoobProcess is immutable; build another with tsm.doob")

    def __delattr__(self, name):
        raise AttributeError("DoobProcess is immutable")

    # ------------------------------------------------------------------ model-like data
    @property
    def counts(self) -> dict:
        """``{channel name: integer weight}`` (a copy)."""
        return dict(self._counts)

    @property
    def N(self) -> int:
        return self.model.N

    @property
    def channels(self) -> tuple:
        """The original model's Channel records (names and rates of the jump tables)."""
        return self.model.channels

    @property
    def couplings(self) -> np.ndarray:
        return self.model.couplings

    @property
    def alpha_method(self) -> str:
        return self.model.alpha_method

    @property
    def initial_sectors(self) -> list[int]:
        return self.model.initial_sectors

    @property
    def initial_sector(self) -> int:
        return self.model.initial_sector

    @property
    def is_mixed(self) -> bool:
        """Always ``False`` (mixtures are refused)."""
        return False

    def has_kind(self, kind: str) -> bool:
        return self.model.has_kind(kind)

    def reachable_sectors(self) -> list[int]:
        """Sectors Doob trajectories can visit (each carries an ``l`` block)."""
        return list(self._sectors)

    # ------------------------------------------------------------------ per-sector data
    def _sector(self, m) -> int:
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m not in self._l:
            raise ValueError(f"m must be one of the sectors {self._sectors}, got {m!r}")
        return int(m)

    def l(self, m: int) -> np.ndarray:  # noqa: E743 (the l_s of docs/model.md 15)
        """Block ``m`` of the left eigenmatrix ``l_s`` (Hermitian PD, ``C(N, m)`` square)."""
        return self._l[self._sector(m)]

    def sector_heff(self, m: int) -> np.ndarray:
        """``H_D = l^(1/2) H_eff l^(-1/2) - i theta / 2`` of sector ``m`` (dense; the
        no-jump evolution is ``exp(-i H_D t)``)."""
        return self._heff[self._sector(m)]

    def sector_gamma(self, m: int) -> np.ndarray:
        """``Gamma_D = i (H_D - H_D^+) = sum_k r_k M_k^+ M_k`` (Hermitian PSD)."""
        return self._gamma[self._sector(m)]

    def jump_matrix(self, k: int, m: int) -> np.ndarray | None:
        """``M_k = exp(s nu_k / 2) l_{m'}^(1/2) A_k l_m^(-1/2)`` (``d' x d``, without
        ``sqrt(rate)``) of channel ``k`` (index in :attr:`channels`) out of sector
        ``m``; ``None`` when ``m + dm_k`` is outside the sectors."""
        k = int(k)
        if not 0 <= k < len(self.channels):
            raise ValueError(f"k must be a channel index in 0..{len(self.channels) - 1}, "
                             f"got {k}")
        return self._jumps.get((k, self._sector(m)))

    def initial_state(self) -> tuple[int, np.ndarray]:
        """``(m0, l^(1/2) psi0 / ||l^(1/2) psi0||)`` in the sector basis."""
        m0, psi = self._psi0
        return m0, psi.copy()

    def steady_state(self) -> dict:
        """Blocks ``{m: rho_D}`` of the Doob steady state ``l^(1/2) r_s l^(1/2)`` (unit trace)."""
        return dict(self._rho)

    def count_rate(self) -> float:
        """Steady rate of the weighted count, ``sum_k nu_k r_k Tr(M_k rho_D M_k^+)`` (=
        ``theta'(s)``)."""
        out = 0.0
        for (k, m), M in self._jumps.items():
            ch = self.channels[k]
            nu = self._counts.get(ch.name, 0)
            if nu:
                out += nu * ch.rate * float(np.einsum("ij,jk,ik->", M, self._rho[m],
                                                      M.conj()).real)
        return out

    def check(self) -> float:
        """Largest relative trace-preservation defect over the sectors,
        ``||Gamma_D - sum_k r_k M_k^+ M_k||_F / max(||Gamma_D||_F, sum_k r_k)``
        (round-off; the rate floor for sectors nothing decays from, e.g. ``m = 0``
        of a loss-only chain, where ``Gamma_D = theta = 0``)."""
        if self._defect is not None:
            return self._defect
        floor = sum(ch.rate for ch in self.channels)
        worst = 0.0
        for m in self._sectors:
            G = self._gamma[m]
            S = np.zeros_like(G)
            for k, ch in enumerate(self.channels):
                M = self._jumps.get((k, m))
                if M is not None:
                    S += ch.rate * (M.conj().T @ M)
            worst = max(worst, float(np.linalg.norm(G - S) / max(np.linalg.norm(G), floor)))
        object.__setattr__(self, "_defect", worst)
        return worst

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict:
        """JSON record: ``N``, ``couplings`` at the top level (as a model's) and
        ``doob = {model, counts, s, theta}``."""
        return {"N": self.N, "couplings": self.couplings.tolist(),
                "doob": {"model": self.model.to_dict(), "counts": dict(self._counts),
                         "s": self.s, "theta": self.theta}}

    @classmethod
    def from_dict(cls, d: dict) -> DoobProcess:
        """Rebuild from :meth:`to_dict` output (recomputes ``l_s``)."""
        if not isinstance(d, dict) or not isinstance(d.get("doob"), dict):
            raise ValueError("Doob metadata must be a dict with a 'doob' record")
        rec = d["doob"]
        return doob(ChainModel.from_dict(rec["model"]), rec["counts"], rec["s"])

    def fingerprint(self) -> str:
        """Stable hash of (model, counts, s); ``theta`` follows from them and is left
        out so that its last bits (thread counts) cannot change the hash."""
        if self._fp is None:
            rec = self.to_dict()
            rec["doob"].pop("theta")
            blob = json.dumps(rec, sort_keys=True).encode()
            object.__setattr__(self, "_fp", hashlib.sha256(blob).hexdigest()[:16])
        return self._fp

    def __eq__(self, other):
        return isinstance(other, DoobProcess) and self.fingerprint() == other.fingerprint()

    def __hash__(self):
        return hash(self.fingerprint())

    def __repr__(self):
        return (f"DoobProcess(s={self.s:g}, counts={self._counts}, theta={self.theta:.10g}, "
                f"model={self.model!r})")


def _restore(state: dict) -> DoobProcess:
    """A :class:`DoobProcess` from its pickled slots (arrays read-only again)."""
    obj = object.__new__(DoobProcess)
    for key, val in state.items():
        if isinstance(val, dict) and key != "_counts":
            val = {k: _frozen(a) for k, a in val.items()}
        elif key == "_psi0":
            val = (val[0], _frozen(val[1]))
        object.__setattr__(obj, key, val)
    return obj


@blas_threads
def doob(model, counts, s) -> DoobProcess:
    """The Doob process of ``model`` at counting field ``s`` (docs/model.md 15).

    Parameters
    ----------
    model : ChainModel
        Needs a unique steady state (a loss or a pump channel) and a pure
        initial state.
    counts : dict
        ``{channel name: integer weight nu}`` as in
        :func:`~thermospin_mc.exact.fcs.exact_counting_statistics`.
    s : float
        Counting field (finite).

    Returns
    -------
    DoobProcess
        ``theta`` is the exact ``theta(s)``; ``tsm.mcsolve(doob, times, ntraj)``
        samples its trajectories (jump tables in the original channel names).
    """
    return DoobProcess(model, counts, s)
