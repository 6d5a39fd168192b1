"""The shifted generator ``(L - sigma) y = r`` on a coherence layout, by GMRES.

:class:`ShiftedSolver`: left-preconditioned GMRES (:meth:`ShiftedSolver.solve`)
and the flexible GMRES of the spectrum's exact solves
(:meth:`ShiftedSolver.solve_flexible`), both preconditioned by a block-triangular
sweep of exact no-jump block solves.
"""

from __future__ import annotations

import queue

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..core.sectors import SectorSpace
from .blocks import BlockLayout, CoherenceLayout
from .blocksolve import GMRES_BASIS_BYTES, NoJumpInverse
from .regression import trace_vector

__all__ = ["ShiftedSolver", "PICKS", "FGMRES_MAXITER"]

#: Frequencies solved per round of the reduced model (fixed: the rounds, and so the
#: numbers, do not depend on ``n_jobs``; up to this many threads solve them at once;
#: the flexible GMRES workspaces are sized for that many).
PICKS = 2

#: Iterations of one flexible GMRES solve before it is refused.
FGMRES_MAXITER = 1000


class ShiftedSolver:
    """``y`` with ``(L - sigma) y (+ e Tr y) = r`` by GMRES on a coherence layout
    (``F``: the jump part of ``L``).

    Left preconditioner, as :class:`~thermospin_mc.exact.blocksolve.BorderedSolver`
    for square blocks: the exact inverse of the shifted no-jump part plus the
    jumps of the weaker direction (block triangular in ``m``: one sweep of
    exact block solves ``-i (H_r X - X H^+) - sigma X = Y`` in the eigenbases,
    or Schur forms, of :class:`~thermospin_mc.exact.blocksolve.NoJumpInverse`); GMRES
    sees the other jumps and the border ``e Tr y`` (``border=True``, square
    blocks; ``e``: the first element of the sweep's first block), which makes
    the system regular at ``sigma = 0`` and gives ``Tr y = 0`` for a trace-free
    ``r``. ``solve`` may run in ``concurrent`` threads at once. Raises
    ``ValueError`` (from ``NoJumpInverse``) when a no-jump block has a
    non-decaying state.

    :meth:`solve_flexible` (needs ``L``, the whole generator) is the
    right-preconditioned flexible GMRES of :func:`spectrum`: the same sweep in
    single precision (:meth:`sweep32`; the blocks whose eigenbases are too
    ill-conditioned for it stay in double), the Arnoldi vectors, the products
    with ``L`` and the residual in double, so the stated residual is the true
    one.
    """

    def __init__(self, layout: CoherenceLayout, F: sp.csr_matrix, channels, border: bool,
                 tol: float = 1e-11, concurrent: int = 1, L: sp.csr_matrix | None = None):
        self.layout, self.tol, self.L = layout, tol, L
        space, shift = layout.space, layout.shift
        secs = sorted({k for m in layout.sectors for k in (m, m + shift)})
        inv = NoJumpInverse(BlockLayout(space, secs))
        forms = {m: self._form(space, m, inv.data[m]) for m in secs}
        self.blocks = {}
        for m in layout.sectors:
            fr, fc = forms[m + shift], forms[m]
            den = None
            if fr[0] == fc[0] == "eig":
                den = -1j * (fr[3][:, None] - fc[3].conj()[None, :])
            self.blocks[m] = (fr, fc, den)
        # single-precision copies where the rounded eigenbases stay inverse to 1e-3
        ok = {m: forms[m][0] == "eig" and _single_ok(forms[m][1], forms[m][2]) for m in secs}
        self.blocks32 = {}
        for m in layout.sectors:
            (_, Sr, Sir, _, _, _), (_, _, _, _, ScH, SicH), den = self.blocks[m]
            if den is not None and ok[m] and ok[m + shift]:
                self.blocks32[m] = tuple(np.asarray(z, dtype=np.complex64)
                                         for z in (Sir, SicH, Sr, ScH, den))
        # the sweep takes the weaker direction (BorderedSolver's rule)
        loss, pump = (sum(ch.rate for ch in channels if ch.kind == k) for k in ("loss", "pump"))
        self.dm = -1 if loss > 0 and (pump == 0 or loss <= pump) else 1
        self.order = sorted(layout.sectors, reverse=self.dm < 0)
        # the jumps split by direction: those of the sweep in it, the rest for GMRES
        F = F.tocoo()
        where = np.zeros(layout.size, dtype=np.int64)
        for m in layout.sectors:
            o = layout.offsets[m]
            where[o:o + layout.rows[m] * layout.dims[m]] = m
        sweep = (where[F.row] - where[F.col]) == self.dm
        n = layout.size
        Fs = sp.csr_matrix((F.data[sweep], (F.row[sweep], F.col[sweep])), shape=(n, n))
        self.F_rest = sp.csr_matrix((F.data[~sweep], (F.row[~sweep], F.col[~sweep])),
                                    shape=(n, n))
        self.F_into = {m: Fs[layout.offsets[m]:layout.offsets[m]
                             + layout.rows[m] * layout.dims[m]] for m in layout.sectors}
        self.e = np.zeros(n, dtype=complex)
        self.e[layout.offsets[self.order[0]]] = 1.0
        self.trace = trace_vector(layout) if border else None
        # ``concurrent`` solves share the Krylov basis budget
        self.restart = int(min(80, max(8, GMRES_BASIS_BYTES // (16 * max(n, 1) * concurrent))))
        # flexible GMRES keeps 2 m + 1 vectors: PICKS such workspaces in half the budget
        self.restart_flexible = int(min(80, max(8, GMRES_BASIS_BYTES
                                                // (32 * max(n, 1) * PICKS * 2))))
        self.iterations: list[int] = []
        self._spare: queue.SimpleQueue = queue.SimpleQueue()

    @staticmethod
    def _form(space: SectorSpace, m: int, data):
        """``(kind, S, S^-1, R, S^+, S^-+)`` with ``H_eff = S R S^-1``: ``R`` the
        eigenvalues (``eig``) or the upper triangular Schur factor (``schur``)."""
        kind, P, Q, _den = data
        if kind == "eig":  # H = V diag(lam) W
            H = space.sector(m).heff_sparse(space.a)
            lam = np.einsum("ij,ji->i", Q, np.asarray(H @ P))
            return ("eig", P, Q, lam, P.conj().T, Q.conj().T)
        return ("schur", Q, Q.conj().T, P, Q.conj().T, Q)  # H = Q T Q^+

    def block_solve(self, m: int, Y: np.ndarray, sigma: complex) -> np.ndarray:
        """``X`` with ``-i (H_r X - X H^+) - sigma X = Y`` (``H_r``: rows' sector
        ``m + shift``). With ``H = S R S^-1`` and ``X = S_r Z S^+``:
        ``(R_r - i sigma) Z - Z R^+ = i S_r^-1 Y S^-+``."""
        (kr, Sr, Sir, Rr, _, _), (kc, _, _, Rc, ScH, SicH), den = self.blocks[m]
        C = Sir @ Y @ SicH
        if den is not None:
            Z = C / (den - sigma)
        else:
            Tr = np.diag(Rr) if kr == "eig" else Rr
            Tc = np.diag(Rc) if kc == "eig" else Rc
            Z, scale, info = sla.lapack.ztrsyl(Tr - 1j * sigma * np.eye(Tr.shape[0]), Tc,
                                               1j * C, trana="N", tranb="C", isgn=-1)
            if info < 0:
                raise RuntimeError(f"ztrsyl failed with info = {info}")
            Z = Z / scale
        return Sr @ Z @ ScH

    def precondition(self, y: np.ndarray, sigma: complex) -> np.ndarray:
        """One sweep: the shifted no-jump part plus the jumps of direction ``dm``."""
        lay = self.layout
        x = np.zeros_like(y)
        for m in self.order:
            o, r, c = lay.offsets[m], lay.rows[m], lay.dims[m]
            rhs = y[o:o + r * c] - self.F_into[m] @ x
            x[o:o + r * c] = self.block_solve(m, rhs.reshape(r, c), sigma).ravel()
        return x

    def sweep32(self, y: np.ndarray, sigma: complex) -> np.ndarray:
        """:meth:`precondition` with the block transforms in single precision (the
        blocks of :attr:`blocks32`; the others, and the jumps, in double)."""
        lay = self.layout
        x = np.zeros_like(y)
        s32 = np.complex64(sigma)
        for m in self.order:
            o, r, c = lay.offsets[m], lay.rows[m], lay.dims[m]
            rhs = (y[o:o + r * c] - self.F_into[m] @ x).reshape(r, c)
            fast = self.blocks32.get(m)
            if fast is None:
                x[o:o + r * c] = self.block_solve(m, rhs, sigma).ravel()
                continue
            Sir, SicH, Sr, ScH, den = fast
            Z = (Sir @ rhs.astype(np.complex64) @ SicH) / (den - s32)
            x[o:o + r * c] = (Sr @ Z @ ScH).ravel()
        return x

    def solve(self, r: np.ndarray, sigma: complex) -> np.ndarray:
        """``y`` with ``(L - sigma) y (+ e Tr y) = r``."""
        it = [0]

        def count(_):
            it[0] += 1

        def matvec(x):
            z = self.F_rest @ x
            if self.trace is not None:
                z += self.e * (self.trace @ x)
            return x + self.precondition(z, sigma)

        n = self.layout.size
        op = spla.LinearOperator((n, n), matvec=matvec, dtype=complex)
        y, code = spla.gmres(op, self.precondition(r, sigma), rtol=self.tol, atol=0.0,
                             restart=self.restart, maxiter=max(50, 4000 // self.restart),
                             callback=count, callback_type="pr_norm")
        if code != 0:
            raise RuntimeError(f"GMRES of the shifted generator did not converge (code {code}, "
                               f"sigma = {sigma})")
        self.iterations.append(it[0])
        return y

    def solve_flexible(self, b: np.ndarray, sigma: complex, x0: np.ndarray | None = None,
                       atol: float = 0.0, steady: np.ndarray | None = None):
        """``y`` with ``(L - sigma) y = b`` and ``||b - (L - sigma) y|| <= atol`` (true
        residual, checked with ``L``), by flexible GMRES right-preconditioned with
        :meth:`sweep32`, restarted every :attr:`restart_flexible` iterations.

        ``steady`` (square blocks; ``b`` and ``x0`` trace free): every
        preconditioned vector is made trace free along it, so the iterates stay
        in the trace-free space, where ``L - sigma`` is regular at ``sigma = 0``
        too (no border). Returns ``(y, iterations, b - (L - sigma) y)``; raises
        ``RuntimeError`` after ``FGMRES_MAXITER`` iterations.
        """
        L = self.L

        def apply(z):
            return L @ z - sigma * z

        x = np.zeros_like(b) if x0 is None else np.array(x0, dtype=complex)
        r = b - apply(x) if x0 is not None else b.copy()
        beta = float(np.linalg.norm(r))
        m = self.restart_flexible
        try:  # a workspace of an earlier solve (its pages are touched already)
            work = self._spare.get_nowait()
        except queue.Empty:
            work = (np.empty((m + 1, b.size), dtype=complex), np.empty((m, b.size), dtype=complex))
        try:
            x, its, r = self._flexible(apply, b, x, r, beta, sigma, atol, steady, work)
        finally:
            self._spare.put(work)
        self.iterations.append(its)
        return x, its, r

    def _flexible(self, apply, b, x, r, beta, sigma, atol, steady, work):
        m, trace = self.restart_flexible, self.trace
        its = 0
        while beta > atol:
            if its >= FGMRES_MAXITER:
                raise RuntimeError(f"flexible GMRES of the shifted generator did not converge "
                                   f"in {its} iterations (omega = {sigma.imag:g}, residual "
                                   f"{beta:.3g} > {atol:.3g})")
            V, Zs = work
            H = np.zeros((m + 1, m), dtype=complex)
            V[0] = r / beta
            g = np.zeros(m + 1, dtype=complex)
            g[0] = beta
            for j in range(m):
                z = self.sweep32(V[j], sigma)
                if steady is not None:
                    z -= (trace @ z) * steady
                Zs[j] = z
                w = apply(z)
                its += 1
                for _ in range(2):  # classical Gram-Schmidt, twice
                    h = (V[:j + 1] @ w.conj()).conj()
                    w -= h @ V[:j + 1]
                    H[:j + 1, j] += h
                H[j + 1, j] = hn = np.linalg.norm(w)
                y = np.linalg.lstsq(H[:j + 2, :j + 1], g[:j + 2], rcond=None)[0]
                est = np.linalg.norm(g[:j + 2] - H[:j + 2, :j + 1] @ y)
                if hn > 0:
                    V[j + 1] = w / hn
                if est <= 0.8 * atol or hn == 0 or its >= FGMRES_MAXITER:
                    break
            x = x + y @ Zs[:j + 1]
            r = b - apply(x)  # the true residual
            beta = float(np.linalg.norm(r))
        return x, its, r


def _single_ok(S: np.ndarray, Sinv: np.ndarray) -> bool:
    """The eigenbasis ``S`` and its inverse still inverse to 1e-3 once rounded to
    single precision (a conditioning test that costs one product)."""
    S32 = np.asarray(S, dtype=np.complex64).astype(complex)
    Si32 = np.asarray(Sinv, dtype=np.complex64).astype(complex)
    err = np.abs(Si32 @ S32 - np.eye(S.shape[0])).max()
    return bool(err <= 1e-3)
