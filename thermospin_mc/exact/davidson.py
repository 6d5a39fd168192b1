"""The Davidson iteration for the rightmost eigenvalues of the Liouvillian (docs/model.md 13).

:func:`davidson_spectrum` runs :class:`Davidson` in :data:`ATTEMPTS` (fewer
frequency bands after a stall). The iteration seeds its basis with the slowest
no-jump modes and the slowest of every frequency band
(:class:`~.davidson_operator.DavidsonOperator`), explores them
(:meth:`Davidson._explore`), refines the rightmost Ritz pairs until the ``k``
wanted values and their guards have converged, and verifies every frequency
band (:meth:`_unclear`) before it accepts the result; the basis, its
Ritz pairs and restarts are :class:`~.davidson_basis.DavidsonBasis`. The method,
its tolerances and its measured cost and reliability are described in
:mod:`.relaxation`.
"""

from __future__ import annotations

import numpy as np

from .blocks import BlockLayout
from .davidson_basis import DavidsonBasis
from .spectrum_tolerances import RESIDUAL_TOL, ZERO_TOL, spectrum_order

__all__ = ["davidson_spectrum", "Davidson", "ATTEMPTS", "EXTRA", "GUARD_TOL", "REACH"]

#: Ritz values converged beyond the ``k`` asked for (counting conjugates) ...
EXTRA = 2

#: ... to this looser tolerance (they guard the ``k``-th against being overtaken).
GUARD_TOL = 1e-6

#: The band check (:meth:`_unclear`) clears a Ritz pair ``(theta, r)`` only
#: when ``Re theta + REACH ||r||`` lies left of the last wanted value.
REACH = 1.0

#: Davidson attempts ``(frequency bands, steps)``: a clustered spectrum can stall the
#: iteration while many bands hold their place in the basis (1 of 800 random chains
#: at N = 4-6, ``scripts/check_davidson.py``); the second attempt, with fewer bands
#: and so more room for the refinement, converged there.
ATTEMPTS = ((12, 3000), (4, 6000))


def _pair(theta: complex, y: np.ndarray, imtol: float) -> tuple[complex, np.ndarray, bool]:
    """A Ritz pair made exact where it should be: a value within ``imtol`` of the
    real axis is real, and so is its vector (rotated by the phase of its largest
    entry; the imaginary part dropped, normalised again)."""
    theta = complex(theta)
    if abs(theta.imag) > imtol:
        return theta, y, False
    y = (y * np.exp(-1j * np.angle(y[np.argmax(np.abs(y))]))).real
    return complex(theta.real), (y / np.linalg.norm(y)).astype(complex), True


def davidson_spectrum(layout: BlockLayout, channels, k: int,
                      scale: float) -> tuple[np.ndarray, int]:
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


class Davidson(DavidsonBasis):
    """Generalised Davidson iteration for the rightmost eigenvalues of ``L``.

    Works in the real packing of Hermitian blocks (``n`` real unknowns), where
    ``L`` is real. The basis holds at most ``max_basis`` vectors (restarted to
    the Schur vectors of about ``keep`` Ritz values,
    :meth:`~.davidson_basis.DavidsonBasis._restart`), and up to ``2 * bins + 2``
    more while a block of corrections is added, together with their images under
    ``L`` and the projected matrix ``H = V^T L V``.

    Parameters
    ----------
    layout : BlockLayout
        The sectors (all coupled ones, or one sector).
    channels : sequence of Channel
        The model's channels (they choose the direction of the preconditioner's
        sweep).
    scale : float
        A bound of ``|lambda|`` (:func:`~.spectrum_tolerances.spectral_scale`);
        tolerances are relative to it.
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
        super().__init__(layout, channels, scale, bins)
        self.max_basis = max_basis
        self.keep = keep
        self.block = block
        self.nseed = nseed
        self.rounds = rounds
        self.max_iter = max_iter
        self.iterations = 0
        self.verifications = 0  # corrections of the verification (:meth:`_unclear`)
        # corrections are added at most this many at a time (:meth:`insert`)
        self.piece = 2 * max(block, self.bins)

    # ------------------------------------------------------------ iteration
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
                track = list(lam[rep][spectrum_order(lam[rep])][:self.nseed + 1])
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
            R = self.residuals(np.array([q[1] for q in pairs]).T, np.array([q[0] for q in pairs]))
            new = []
            for (th, _y, real), r in zip(pairs, R, strict=True):
                shift = th if mode != "axis" else (0.0 if real else 1j * th.imag)
                if np.linalg.norm(r) > RESIDUAL_TOL * self.scale:
                    new += self.precondition(r.real, None if real else r.imag, shift)
            self.insert(new, [lam[j] for j in used])

    def _band_pairs(self, lam, Y, done: list, match: float) -> list:
        """``(theta, y, real)`` of the rightmost Ritz pair of every frequency band
        among those not converged before (``done``)."""
        imtol = ZERO_TOL * self.scale
        rep = [j for j in np.flatnonzero(lam.imag >= -imtol)
               if not any(abs(c - lam[j]) <= match for c in done)]
        if not rep:
            return []
        rep = np.array(rep)
        band = self.band(lam[rep].imag)
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
        matrices (:meth:`residual_norms`), the residuals themselves only where
        they decide. An empty list: every band is clear."""
        picks = self._band_pairs(lam, Y, done, match)
        if not picks:
            return []
        th = np.array([q[0] for q in picks])
        est = self.residual_norms(np.array([q[1] for q in picks]).T, th)
        look = [i for i in range(len(picks))
                if est[i] <= 10 * GUARD_TOL * self.scale
                or th[i].real + 1.01 * REACH * est[i] >= rho]
        if not look:
            return []
        R = self.residuals(np.array([picks[i][1] for i in look]).T, th[look])
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
        self.insert([self.pack.pack(self.layout.trace())] + slow)
        self._explore(self.rounds)
        self.insert(bands)
        self._explore(self.rounds, [complex(z.real, abs(z.imag)) for z in values])
        done: list[complex] = []  # converged Ritz values (one per conjugate pair)
        axis = None  # the converged values when the bands were last corrected toward the axis
        while True:
            p = self.p
            lam, Y = self.ritz(self.H[:p, :p])
            rep = np.flatnonzero(lam.imag >= -imtol)
            rep = rep[spectrum_order(lam[rep])]
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
                R = self.residuals(np.array([b[1] for b in batch]).T,
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
                        return out[spectrum_order(out)]
                    axis = key
                    picks = self._band_pairs(lam, Y, done, match)
                    R = self.residuals(np.array([q[1] for q in picks]).T,
                                       np.array([q[0] for q in picks])) if picks else []
                    unclear = [(th, r, False, 1j * self.centre(th.imag))
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
            self.insert(new, follow)
