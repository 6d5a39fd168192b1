"""The basis of the Davidson Liouvillian spectrum: vectors, images, Ritz pairs, restarts.

:class:`DavidsonBasis` keeps the orthonormal basis ``V`` of the real packing
(rows of ``Vt``), its images ``W = L V`` (``Wt``), the projected matrix ``H =
V^T L V`` and ``G = W W^T`` (residual norms without the long vectors). Vectors
join by block classical Gram-Schmidt (:meth:`DavidsonBasis.insert`); the Ritz
pairs come from the complex Schur form of ``H`` by back substitution
(:meth:`DavidsonBasis.ritz`: ``eig`` balances, and the projected row that the
trace functional makes zero to round-off cost it eight digits of the
eigenvectors); a full basis restarts to the Schur vectors of chosen Ritz
values (the wanted ones, the ones followed, the rightmost of every frequency
band). The iteration itself is :class:`~.davidson.Davidson`.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from .davidson_operator import DavidsonOperator
from .spectrum_tolerances import ZERO_TOL

__all__ = ["DavidsonBasis"]


class DavidsonBasis(DavidsonOperator):
    """The basis, its images and the projected matrices of a Davidson iteration.

    The arrays ``Vt``, ``Wt``, ``H``, ``G`` and the basis size ``p`` are
    allocated by :meth:`~.davidson.Davidson.iterate`; ``max_basis``, ``keep``
    and ``piece`` (corrections added at a time) are set by
    :class:`~.davidson.Davidson`.
    """

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

    # ------------------------------------------------------------ basis
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

    def insert(self, vectors: list, follow=()) -> None:
        """:meth:`_add` ``vectors``, at most ``piece`` at a time, each piece after a
        restart when it would overflow ``max_basis``; ``follow``: Ritz values whose
        nearest Ritz vectors every such restart keeps (the pairs being explored)."""
        for start in range(0, len(vectors), self.piece):
            part = vectors[start:start + self.piece]
            if self.p + len(part) > self.max_basis:
                lam = np.linalg.eigvals(self.H[:self.p, :self.p])
                self._restart(lam, follow, room=len(part))
            self._add(part)

    def residual_norms(self, Y: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """``||L u - theta u||`` for the columns ``y`` of ``Y`` (``u = V y``) from the
        small matrices: ``y^+ G y - 2 Re(theta y^+ H^T y) + |theta|^2 ||y||^2``
        (``G = W W^T``, ``W V^T = H^T``); rounding leaves about ``1e-8 |theta|``."""
        p = self.p
        G, H = self.G[:p, :p], self.H[:p, :p]
        a = np.einsum("ij,ij->j", Y.conj(), G @ Y).real
        b = np.einsum("ij,ij->j", Y.conj(), H.T @ Y)
        c = np.einsum("ij,ij->j", Y.conj(), Y).real
        return np.sqrt(np.maximum(a - 2.0 * (theta * b).real + np.abs(theta) ** 2 * c, 0.0))

    def residuals(self, Y: np.ndarray, theta: np.ndarray) -> np.ndarray:
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
        band = self.band(vals.imag)
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
