"""Solvers on the block form: the exact no-jump inverse and the bordered GMRES.

- :class:`NoJumpInverse`: ``-i (H X - X H^+) - sigma X = Y`` solved exactly per
  block in the eigenbasis (Schur form for ill-conditioned ones) of the
  sector's ``H_eff``; the steady state's preconditioner, the counting
  statistics' shifted solves and ``exit_probabilities`` use it.
- :class:`BorderedSolver`: ``L x + e Tr(x) = y`` by GMRES on the matrix-free
  generator (:class:`~thermospin_mc.exact._blockops.BlockGenerator`), left-
  preconditioned by one triangular sweep of exact block solves; the steady
  state (``y = e``) and the trace-free (Drazin) solves of the counting
  statistics.
- :class:`HermitianPacking`: the real coordinates of Hermitian blocks, in which
  GMRES runs for Hermitian right-hand sides.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.linalg as sla
import scipy.sparse.linalg as spla
from threadpoolctl import threadpool_limits

from .. import _threads
from ._blockops import BlockGenerator, triangular_solve
from .blocks import BlockLayout
from .hermitian import (
    hermitian_defect,
    hermitian_pack,
    hermitian_sum,
    hermitian_unpack,
    upper_half,
)

__all__ = ["NoJumpInverse", "BorderedSolver", "HermitianPacking", "GMRES_BASIS_BYTES",
           "conditioned_eig"]

#: Memory budget of the steady-state GMRES basis (sets its restart length): 5 GB,
#: at most a quarter of the machine's memory. A restart shorter than the number of
#: iterations costs iterations (measured at N = 11: 25 without restart, 40 with 12).
try:
    _PHYS = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
    _PHYS = 16 * 2**30
GMRES_BASIS_BYTES = int(min(5e9, 0.25 * _PHYS))

_NO_DEN = np.zeros((0, 0), dtype=complex)


def _triangular_product(F: np.ndarray, U: np.ndarray, S: np.ndarray) -> None:
    """``S = F U`` for upper triangular ``U`` (zero below its diagonal) in column
    panels: panel ``[a, b)`` of ``S`` needs only the first ``b`` columns of ``F``,
    so ``p`` panels cost ``(p + 1) / 2p`` of the full product (9/16 for 8)."""
    d = U.shape[0]
    p = max(1, min(8, d // 64))
    edges = [d * k // p for k in range(p + 1)]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        np.matmul(F[:, :b], U[:b, a:b], out=S[:, a:b])


# ---------------------------------------------------------------------------- no-jump inverse
def conditioned_eig(H: np.ndarray, cond_limit: float):
    """``(lam, V, V^-1)`` of a dense block when its eigenvectors are well conditioned,
    else ``None`` (the caller falls back to a Schur form). The test is
    ``||V||_F ||V^-1||_F < cond_limit``, a conservative, SVD-free bound of
    ``cond_2(V)``."""
    lam, V = np.linalg.eig(H)
    try:
        W = np.linalg.inv(V)
        kappa = np.linalg.norm(V) * np.linalg.norm(W)
    except np.linalg.LinAlgError:
        return None
    if np.isfinite(kappa) and kappa < cond_limit:
        return lam, V, W
    return None


class NoJumpInverse:
    """Exact solution of ``-i (H X - X H^+) = Y`` per block (all blocks decay).

    A block whose ``H_eff`` has a well-conditioned eigenbasis ``H = V diag(lam) W``
    (``W = V^-1``) is solved as ``X = V ((W Y W^+) / den) V^+`` with ``den_ij =
    -i (lam_i - conj(lam_j))``; the others through the Schur form. For Hermitian
    ``Y`` both products are congruences ``F Z F^+`` of Hermitian matrices: with
    ``Z = U + U^+`` (``U`` its upper triangle, half its diagonal) ``F Z F^+ = G +
    G^+``, ``G = (F U) F^+``, where ``F U`` runs in column panels (4.5 ``d^3``
    real multiply-adds in place of 8): 12.5 ``d^3`` per congruence instead of 16.

    Every product is a numpy ``matmul``: the GMRES around it uses numpy's BLAS
    too, and mixing two BLAS libraries (scipy's and numpy's wheels each bring
    their own) left their idle threads spinning against each other (measured:
    the N = 11 steady state took 7.6 s and 14.5 s of CPU with scipy's ``zgemm`` /
    ``ztrmm`` for these products, 5.3 s and 9.9 s with numpy's, two threads).
    The Hermitian path uses work blocks held by the instance: one solve at a
    time per instance (the solvers here call it from one thread).
    """

    def __init__(self, layout: BlockLayout, cond_limit: float = 1e8, n_jobs: int | None = None):
        self.layout = layout
        self.cond_limit = cond_limit
        space = layout.space
        # the dense H_eff of every block first (serially), then the decompositions:
        # one LAPACK thread each, ``n_jobs`` blocks at a time, largest first (a
        # decomposition does not depend on the thread count, so neither do results)
        mats = {m: space.sector(m).heff_sparse(space.a).toarray() for m in layout.sectors}
        order = sorted(layout.sectors, key=lambda m: -layout.dims[m])
        n = _threads.current() if n_jobs is None else int(n_jobs)
        with threadpool_limits(limits=1):
            if n > 1 and len(order) > 1:
                with ThreadPoolExecutor(min(n, len(order))) as ex:
                    parts = list(ex.map(lambda m: self._decompose(m, mats[m]), order))
            else:
                parts = [self._decompose(m, mats[m]) for m in order]
        self.data = dict(zip(order, parts, strict=True))
        # four work blocks of the largest size (views of their heads)
        dmax = max(layout.dims[m] for m in layout.sectors)
        self._ws = [np.empty(dmax * dmax, dtype=complex) for _ in range(4)]

    def _decompose(self, m: int, H: np.ndarray):
        eig = conditioned_eig(H, self.cond_limit)
        if eig is not None:
            lam, V, W = eig
            den = -1j * (lam[:, None] - lam.conj()[None, :])
            # a (numerically) non-decaying eigenmode: a dark state of H_eff
            if np.min(np.abs(den)) <= 1e-13 * max(1.0, float(np.abs(den).max())):
                raise ValueError(f"sector m = {m} has a non-decaying (dark) state; "
                                 "the steady state is not unique for this model")
            return ("eig", V, W, den)
        T, Q = sla.schur(H, output="complex")
        return ("schur", T, Q, None)

    def apply(self, y: np.ndarray, sigma: float = 0.0, hermitian: bool = False) -> np.ndarray:
        """Every block of ``y`` solved (:meth:`solve_block`, shift ``sigma``)."""
        lay = self.layout
        out = np.empty_like(y)
        for m in lay.sectors:
            d, o = lay.dims[m], lay.offsets[m]
            self.solve_block(m, y[o:o + d * d].reshape(d, d), sigma,
                             out=out[o:o + d * d].reshape(d, d), hermitian=hermitian)
        return out

    def _work(self, k: int, d: int) -> np.ndarray:
        return self._ws[k][:d * d].reshape(d, d)

    def solve_block(self, m: int, Y: np.ndarray, sigma: float = 0.0,
                    out: np.ndarray | None = None, hermitian: bool = False) -> np.ndarray:
        """``X`` with ``-i (H_m X - X H_m^+) - sigma X = Y`` (``Y`` a ``d x d`` block,
        ``sigma`` real; the counting statistics' inverse iteration shifts it).

        ``out``: a ``d x d`` array for ``X`` (returned).
        ``hermitian=True``: ``Y`` is Hermitian (only its part on and above the
        diagonal is read) and so is ``X``.
        """
        kind, A, B, den = self.data[m]
        d = Y.shape[0]
        if out is None:
            out = np.empty((d, d), dtype=complex)
        if hermitian:  # the Hermitian matrix of the upper triangle
            U = self._work(0, d)
            upper_half(Y, U)
            if kind == "schur":
                Y = U + U.conj().T
        if kind == "schur":
            # (T - i sigma) Xt - Xt T^+ = i Q^+ Y Q in the Schur basis (H = Q T Q^+)
            T, Q = A, B
            C = Q.conj().T @ (1j * Y) @ Q
            Ts = T - 1j * sigma * np.eye(T.shape[0]) if sigma else T
            Xt, scale, info = sla.lapack.ztrsyl(Ts, T, C, trana="N", tranb="C", isgn=-1)
            if info < 0:
                raise RuntimeError(f"ztrsyl failed with info = {info}")
            out[...] = Q @ (Xt / scale) @ Q.conj().T
            if hermitian:  # Hermitian to round-off: exactly
                out[...] = 0.5 * (out + out.conj().T)
            return out
        V, W = A, B
        if not hermitian:
            out[...] = V @ ((W @ Y @ W.conj().T) / (den - sigma if sigma else den)) @ V.conj().T
            return out
        S, G, Fh = self._work(1, d), self._work(2, d), self._work(3, d)
        for k, F in enumerate((W, V)):
            _triangular_product(F, U, S)  # F U
            np.conjugate(F, out=Fh)
            np.matmul(S, Fh.T, out=G)  # F U F^+
            if k == 0:  # the middle: U = upper triangle of (G + G^+) / den
                hermitian_sum(G, den, sigma, U, False)
        hermitian_sum(G, _NO_DEN, 0.0, out, True)
        return out


class BorderedSolver:
    """``x`` with ``L x + e Tr(x) = y`` by GMRES on the matrix-free generator.

    Left preconditioner: the exact inverse of the no-jump part plus the jumps
    of one direction (loss or pump), block triangular in ``m`` (one sweep of
    exact block solves in the ``H_eff`` eigenbases); GMRES sees the remaining
    jumps and the border. The sweep handles the weaker direction (by total
    rate; a direction without channels is never chosen), so it starts at the
    end of the ``m`` range where the stronger one piles up the population, and
    ``e`` (:attr:`e`: the ``(0, 0)`` element of the sweep's first block) sits
    there too: the preconditioned right-hand side is then already a fair
    steady state. Measured on the paper's pump + loss model at N = 9 / 11:
    18 / 22 GMRES iterations, against 21 / 25 with the stronger direction and
    ``e`` in the lowest block, and 19 / 23 with the stronger direction and
    ``e`` at its own start (the stronger direction was better in 1 of 7 rate
    ratios tried at N = 9, by one iteration). For ``y = e`` the solution is the
    steady state (up to normalisation, :meth:`steady_state`); for a trace-free
    ``y`` it is the trace-free (Drazin) solution of ``L x = y``, whatever ``e``.
    Raises ``ValueError`` (from :class:`NoJumpInverse`) when a no-jump block
    has a non-decaying state.
    """

    def __init__(self, layout: BlockLayout, channels, tol: float = 1e-13):
        self.layout = layout
        self.tol = tol
        self.gen = BlockGenerator(layout)
        self.Ainv = NoJumpInverse(layout)
        rate = {k: sum(ch.rate for ch in channels if ch.kind == k) for k in ("loss", "pump")}
        if rate["loss"] > 0 and (rate["pump"] == 0 or rate["loss"] <= rate["pump"]):
            self.dm = -1  # the loss sweep: from the top sector down
        else:
            self.dm = 1  # the pump sweep: from the bottom sector up
        self.trace = layout.trace()
        self.e = np.zeros(layout.size, dtype=complex)
        start = layout.sectors[-1] if self.dm < 0 else layout.sectors[0]
        self.e[layout.offsets[start]] = 1.0
        # the Krylov basis holds `restart` vectors: at most GMRES_BASIS_BYTES of them
        # (complex vectors; the real packing's vectors take half the bytes)
        self.restart = self._restart(16)
        self.iterations: list[int] = []
        n = layout.size
        self._op = spla.LinearOperator((n, n), matvec=self._matvec, dtype=complex)
        self._pack = HermitianPacking(layout)
        self._op_h = spla.LinearOperator((n, n), dtype=float,
                                         matvec=lambda r: self._pack.pack(
                                             self._matvec(self._pack.unpack(r), True)))

    def _restart(self, itemsize: int) -> int:
        return int(min(80, max(8, GMRES_BASIS_BYTES // (itemsize * max(self.layout.size, 1)))))

    def steady_state(self) -> np.ndarray:
        """The steady state (unit trace): the solution for ``y = e``."""
        x = self.solve(self.e)
        return x / (self.trace @ x)

    def precondition(self, y: np.ndarray, hermitian: bool = False) -> np.ndarray:
        return triangular_solve(self.gen, self.Ainv.solve_block, y, self.dm, hermitian)

    def _matvec(self, x: np.ndarray, hermitian: bool = False) -> np.ndarray:
        return x + self.precondition(self.gen.feed_except(x, self.dm)
                                     + self.e * (self.trace @ x), hermitian)

    def solve(self, y: np.ndarray) -> np.ndarray:
        """``x`` with ``L x + e Tr(x) = y``. A Hermitian ``y`` (every block) has a
        Hermitian solution, and every Krylov vector of the preconditioned operator
        is Hermitian then (it maps Hermitian blocks to Hermitian blocks, and the
        Frobenius products of Hermitian matrices are real): GMRES runs on the
        real packing of the blocks (:class:`HermitianPacking`), the same
        iteration with vectors of half the bytes (the basis budget holds twice
        as many before a restart)."""
        it = [0]

        def count(_):
            it[0] += 1

        herm = self._pack.is_hermitian(y)
        b = self.precondition(y, herm)
        op, rhs = (self._op_h, self._pack.pack(b)) if herm else (self._op, b)
        restart = self._restart(8) if herm else self.restart
        x, code = spla.gmres(op, rhs, rtol=self.tol, atol=0.0,
                             restart=restart, maxiter=max(50, 4000 // restart),
                             callback=count, callback_type="pr_norm")
        if code != 0:
            raise RuntimeError(f"GMRES of the bordered Liouvillian did not converge "
                               f"(code {code})")
        self.iterations.append(it[0])
        return self._pack.unpack(x) if herm else x


class HermitianPacking:
    """Real coordinates of block vectors whose blocks are Hermitian, ``d^2`` reals
    in place of each block's ``d^2`` complex numbers: ``Re X_ii`` on the diagonal,
    ``sqrt(2) Re X_ij`` above it and ``sqrt(2) Im X_ij`` below (``i < j``;
    :func:`~thermospin_mc.exact._blockops.hermitian_pack`). The factor ``sqrt(2)`` makes
    the Euclidean product of the packings the Frobenius product of the blocks, so
    norms and residuals are those of the complex vectors."""

    def __init__(self, layout: BlockLayout):
        self.size = layout.size
        self._offs = np.array([layout.offsets[m] for m in layout.sectors], dtype=np.int64)
        self._dims = np.array([layout.dims[m] for m in layout.sectors], dtype=np.int64)

    def is_hermitian(self, x: np.ndarray) -> bool:
        """Every block Hermitian to 1e-14 of the largest element."""
        defect, scale = hermitian_defect(x, self._offs, self._dims)
        return bool(defect <= 1e-14 * scale)

    def pack(self, x: np.ndarray) -> np.ndarray:
        r = np.empty(self.size)
        hermitian_pack(x, self._offs, self._dims, r)
        return r

    def unpack(self, r: np.ndarray) -> np.ndarray:
        x = np.empty(self.size, dtype=complex)
        hermitian_unpack(np.ascontiguousarray(r, dtype=float), self._offs, self._dims, x)
        return x
