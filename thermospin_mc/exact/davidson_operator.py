"""The operator side of the Davidson Liouvillian spectrum: ``L``, its preconditioner, seeds.

:class:`DavidsonOperator` holds what the iteration (:class:`~.davidson.Davidson`)
applies to vectors of the real packing of Hermitian blocks
(:class:`~thermospin_mc.exact.blocksolve.HermitianPacking`): the generator ``L``
(:meth:`DavidsonOperator.apply`), the steady state's block-triangular
preconditioner shifted by a complex ``sigma`` (the exact no-jump inverse plus the
jumps of the weaker direction, :func:`~thermospin_mc.exact._blockops.triangular_solve`;
single precision for the large, well-conditioned blocks), and the no-jump
modes ``v_a v_b^+`` that seed the basis, with the frequency bands
(``[0, omega_max]`` cut in ``bins`` equal parts) they are sorted into.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import ThreadpoolController

from .. import _threads
from ._blockops import BlockGenerator, triangular_solve
from .blocks import BlockLayout
from .blocksolve import HermitianPacking, NoJumpInverse

__all__ = ["DavidsonOperator", "SINGLE_DIM"]

#: Blocks from this dimension on are preconditioned in single precision.
SINGLE_DIM = 48


class DavidsonOperator:
    """``L``, the shifted preconditioner and the no-jump seeds of a Davidson iteration.

    Parameters
    ----------
    layout : BlockLayout
        The sectors (all coupled ones, or one sector).
    channels : sequence of Channel
        The model's channels (they choose the direction of the preconditioner's
        sweep).
    scale : float
        A bound of ``|lambda|`` (:func:`~.spectrum_tolerances.spectral_scale`).
    bins : int
        Frequency bands (:meth:`band`).
    """

    def __init__(self, layout: BlockLayout, channels, scale: float, bins: int):
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
        self.bins = max(1, int(bins))
        self.n = layout.size
        self.omega_max = 1.0  # set by :meth:`seeds`

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
        (:func:`~thermospin_mc.exact._blockops.triangular_solve`): single precision where
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
        (:meth:`band`), and the no-jump values ``-i (lambda_a - conj(lambda_b))``
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
        band = self.band(den.imag)
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

    def centre(self, im: float) -> float:
        """The centre of the frequency band of ``im``."""
        return (float(self.band(np.array([im]))[0]) + 0.5) * self.omega_max / self.bins

    def band(self, im: np.ndarray) -> np.ndarray:
        """The frequency band (``0 .. bins - 1``) of each frequency ``im``: equal
        parts of ``[0, omega_max]``, the last one open above."""
        b = (np.abs(np.asarray(im, dtype=float)) * (self.bins / self.omega_max)).astype(int)
        return np.minimum(b, self.bins - 1)

