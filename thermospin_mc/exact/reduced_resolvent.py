"""The reduced model of a resolvent: ``(i omega - L)^-1 r`` for many frequencies in
one growing subspace of exact solutions, each to its true residual
(:class:`ReducedResolvent`, the tail of :mod:`.correlation_spectrum`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .blocksolve import GMRES_BASIS_BYTES
from .shifted_solver import PICKS, ShiftedSolver

__all__ = ["ReducedResolvent", "thread_map"]


def thread_map(fn, items, n: int) -> list:
    """``[fn(x) for x in items]`` on up to ``n`` threads (in order)."""
    items = list(items)
    if n > 1 and len(items) > 1:
        with ThreadPoolExecutor(min(n, len(items))) as ex:
            return list(ex.map(fn, items))
    return [fn(x) for x in items]


class ReducedResolvent:
    """Minimal-residual solutions of ``(i omega - L) y = r`` for many omega in one
    growing subspace, with their true residuals.

    The subspace ``V`` starts as ``span{r}``; :meth:`solve` adds, round by round,
    the exact solutions (flexible GMRES, warm-started from the reduced solution)
    at the ``PICKS`` frequencies whose residual is largest, until every
    frequency's residual is at most ``atol``. ``Q`` is an orthonormal basis of
    ``span{V, L V}`` (``L v`` is computed for every new ``v``), so the residual
    ``r - (i omega - L) V z`` of any ``z`` is a short vector of coordinates: its
    norm, the true residual, costs no products of length ``n``, and the
    minimal residual is a small least-squares problem per omega.

    Parameters
    ----------
    L : scipy.sparse matrix
    r : ndarray
        The right-hand side (trace free if ``steady`` is given).
    a : ndarray
        The functional ``a.y`` returned per omega.
    steady, trace : ndarray or None
        Square blocks: the steady state and the trace; every vector of ``V`` is
        made trace free (the space the steady mode does not reach), where
        ``i omega - L`` is regular at ``omega = 0`` too.
    n_jobs : int
        Threads (results do not depend on them).
    """

    def __init__(self, L, r: np.ndarray, a: np.ndarray, steady, trace, n_jobs: int = 1):
        n = r.size
        self.L, self.a, self.steady, self.trace, self.n_jobs = L, a, steady, trace, n_jobs
        self.cap = int(max(8, min(400, GMRES_BASIS_BYTES // (16 * max(n, 1)))))
        self.Q = np.empty((self.cap, n), dtype=complex)  # pages are touched as rows fill
        self.K = self.k = 0
        self.CV = np.zeros((self.cap, self.cap), dtype=complex)  # V = CV^T Q
        self.CL = np.zeros((self.cap, self.cap), dtype=complex)  # L V = CL^T Q
        self.aQ = np.zeros(self.cap, dtype=complex)
        self.nr = float(np.linalg.norm(r))
        self.r = r
        self.cr = np.zeros(self.cap, dtype=complex)
        self.solves: list[tuple[float, int]] = []
        if self.nr > 0:
            self.add([r])
            self.cr = self.nr * self.CV[:, 0]

    # ------------------------------------------------------------------ basis
    def add(self, vectors: list) -> bool:
        """Add directions (and their images under ``L``) to the subspace; ``False``
        (nothing added) when the basis would exceed its capacity."""
        if self.K + 2 * len(vectors) > self.cap:
            return False
        rows = []
        for vec in vectors:
            vec = np.array(vec, dtype=complex)
            if self.steady is not None:
                vec -= (self.trace @ vec) * self.steady
            nv = np.linalg.norm(vec)
            if nv > 0:
                vec /= nv
                rows += [vec, self.L @ vec]
        if not rows:
            return True
        coef = self._orthonormalise(np.array(rows))
        for t in range(0, len(rows), 2):
            self.CV[:, self.k], self.CL[:, self.k] = coef[t], coef[t + 1]
            self.k += 1
        return True

    def add_solutions(self, sols: list) -> bool:
        """Add exact solutions ``(y, x0, z0, sigma, res)``: ``(L - sigma) y = -r - res``
        (``res`` the solver's residual), warm-started from ``x0 = V z0``. The new
        direction is ``d = y - x0``; its image ``L d = sigma y - r - res - L V z0``
        needs no product with ``L``, only ``res`` as one more direction (the
        rational Krylov relation: with exact solves ``L V`` stays in ``span{V, r}``).
        ``False`` (nothing added) when the basis would exceed its capacity."""
        if self.K + 2 * len(sols) > self.cap:
            return False
        rows, parts = [], []
        for y, x0, z0, sigma, res in sols:
            d = y - x0
            nd, nres = np.linalg.norm(d), np.linalg.norm(res)
            if not nd > 0:
                continue
            parts.append((nd, nres, z0, sigma, len(rows)))
            rows.append(d / nd)
            if nres > 0:
                rows.append(res / nres)
        if not rows:
            return True
        coef = self._orthonormalise(np.array(rows))
        k0 = self.k
        for nd, nres, z0, sigma, t in parts:
            cd = coef[t]
            cres = nres * coef[t + 1] if nres > 0 else 0.0
            y = self.CV[:, :k0] @ z0 + nd * cd
            self.CV[:, self.k] = cd
            self.CL[:, self.k] = (sigma * y - self.cr - cres - self.CL[:, :k0] @ z0) / nd
            self.k += 1
        return True

    def _orthonormalise(self, W: np.ndarray) -> np.ndarray:
        """Coordinates (rows) of the rows of ``W`` in ``Q`` after extending ``Q`` by
        their new directions: block classical Gram-Schmidt, twice, against ``Q``
        (read four times whatever the number of rows), then in order among
        themselves, twice, with one more pass against all of ``Q`` for a row
        that loses more than 90 % of its norm (its remainder is then mostly
        round-off of the earlier passes)."""
        K0 = self.K
        coef = np.zeros((W.shape[0], self.cap), dtype=complex)
        nrm = np.linalg.norm(W, axis=1)
        Q = self.Q[:K0]
        for _ in range(2):
            if K0:
                h = (Q @ W.conj().T).conj()  # <q_i, w_t>, without a conjugated copy of Q
                W -= h.T @ Q
                coef[:, :K0] += h.T
        for t in range(W.shape[0]):
            w = W[t]
            for lo, extra in ((K0, False), (K0, False), (0, True)):
                if extra and np.linalg.norm(w) > 0.1 * nrm[t]:
                    break
                if self.K > lo:
                    Qn = self.Q[lo:self.K]
                    h = (Qn @ w.conj()).conj()
                    w -= h @ Qn
                    coef[t, lo:self.K] += h
            rest = np.linalg.norm(w)
            if rest > 1e-13 * nrm[t]:  # else: inside span Q to round-off
                self.Q[self.K] = w / rest
                self.aQ[self.K] = self.a @ self.Q[self.K]
                coef[t, self.K] = rest
                self.K += 1
        return coef

    # ------------------------------------------------------------------ reduced solves
    def reduced(self, omegas: np.ndarray):
        """Minimal residual in the subspace: ``(res, Z)``, the residual norms and the
        coefficients ``z`` (``y = V z``) per omega."""
        K, k = self.K, self.k
        CV, CL, rhs = self.CV[:K, :k], self.CL[:K, :k], self.cr[:K]

        def one(w):
            M = 1j * w * CV - CL
            z = np.linalg.lstsq(M, rhs, rcond=None)[0]
            return float(np.linalg.norm(rhs - M @ z)), z

        parts = thread_map(one, omegas, self.n_jobs)
        return np.array([p[0] for p in parts]), [p[1] for p in parts]

    def vector(self, z: np.ndarray) -> np.ndarray:
        """``V z``."""
        return (self.CV[:self.K, :self.k] @ z) @ self.Q[:self.K]

    def value(self, z: np.ndarray) -> complex:
        """``a.V z``."""
        return complex(self.aQ[:self.K] @ (self.CV[:self.K, :self.k] @ z))

    # ------------------------------------------------------------------ the loop
    def solve(self, omegas: np.ndarray, solver: ShiftedSolver, atol: float) -> np.ndarray:
        """``a.y`` with ``(i omega - L) y = r`` and ``||r - (i omega - L) y|| <= atol`` for
        every omega (sorted, distinct): rounds of ``PICKS`` exact solves at the
        frequencies of largest reduced residual (solved to ``atol / 2``, their own
        values kept), added to the subspace, until all others meet ``atol`` in it.
        Each round settles at least one frequency, so at most ``len(omegas)``
        rounds; when the basis is full, the rest are solved one by one."""
        vals = np.zeros(omegas.size, dtype=complex)
        if self.nr == 0.0:
            return vals
        done = np.zeros(omegas.size, dtype=bool)
        while True:
            res, Z = self.reduced(omegas)
            open_ = ~done & (res > atol)
            if not open_.any():
                break
            picks = _picks(res, open_)
            if self.K + 2 * len(picks) > self.cap:  # full: every open one on its own
                picks = list(np.flatnonzero(open_))
                out = thread_map(lambda j, Z=Z: self._exact(solver, omegas[j], self.vector(Z[j]),
                                                      atol), picks, min(self.n_jobs, PICKS))
                for j, (y, its, _) in zip(picks, out, strict=True):
                    vals[j], done[j] = self.a @ y, True
                    self.solves.append((float(omegas[j]), its))
                break
            x0s = [self.vector(Z[j]) for j in picks]
            out = thread_map(lambda jx: self._exact(solver, omegas[jx[0]], jx[1], atol),
                       list(zip(picks, x0s, strict=True)), min(self.n_jobs, PICKS))
            for j, (y, its, _) in zip(picks, out, strict=True):
                vals[j], done[j] = self.a @ y, True
                self.solves.append((float(omegas[j]), its))
            self.add_solutions([(y, x0, Z[j], 1j * omegas[j], res) for j, x0, (y, _, res)
                                in zip(picks, x0s, out, strict=True)])
        for j in np.flatnonzero(~done):
            vals[j] = self.value(Z[j])
        return vals

    def _exact(self, solver, w: float, x0: np.ndarray, atol: float):
        """The solve at ``omega = w`` to ``atol / 2``: ``(y, iterations, residual)``."""
        return solver.solve_flexible(-self.r, 1j * w, x0=x0, atol=0.5 * atol,
                                     steady=self.steady)


def _picks(res: np.ndarray, open_: np.ndarray) -> list[int]:
    """Up to ``PICKS`` open frequencies of largest residual, more than two grid
    points apart."""
    order = np.argsort(-np.where(open_, res, -1.0), kind="stable")
    picks: list[int] = []
    for j in order:
        if not open_[j]:
            break
        if all(abs(int(j) - p) > 2 for p in picks):
            picks.append(int(j))
            if len(picks) == PICKS:
                break
    return picks

