"""The leading eigenmatrices of the tilted generator, for the Doob process (docs/model.md 15).

Shifted inverse iteration at ``sigma`` next to ``theta(s)``
(:func:`inverse_iteration`) for the right eigenmatrix ``r_s`` and the left one
``l_s``, on the solves of :func:`shifted_solvers`: a sparse LU of ``L_s - sigma``
(both eigenvectors from one factorisation) up to
:data:`~thermospin_mc.exact.counting.DIRECT_LIMIT` unknowns; above, GMRES
left-preconditioned with the exact shifted no-jump inverse (per block in the
eigenbasis of ``H_eff``, or a triangular Sylvester solve in its Schur form when
that basis is ill-conditioned). :func:`hermitian_blocks` reads the blocks of an
eigenvector, checked Hermitian.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.linalg.lapack import ztrsyl

from .blocks import BlockLayout
from .blocksolve import conditioned_eig
from .counting import DIRECT_LIMIT, CountingSystem

__all__ = ["shifted_solvers", "inverse_iteration", "hermitian_blocks", "GMRES_RTOL"]

#: Relative residual of the inner GMRES solves of inverse iteration on large layouts.
GMRES_RTOL = 1e-11


class _NoJumpInverse:
    """Exact ``(A - sigma)^-1`` and ``(A^* - sigma)^-1`` per block, ``A X = -i (H X - X H^+)``.

    In a well-conditioned eigenbasis ``H = V diag(lam) W`` (``W = V^-1``,
    ``den_ij = -i (lam_i - conj(lam_j))``): ``X = V ((W Y W^+) / (den - sigma)) V^+``
    and, for the adjoint ``A^* X = i (H^+ X - X H)``, ``X = W^+ ((V^+ Y V) /
    (conj(den) - sigma)) W``. Otherwise in the Schur form ``H = Q T Q^+``: ``X = Q Z
    Q^+`` with the triangular Sylvester equations (``T_s = T - i sigma / 2``)
    ``T_s Z - Z T_s^+ = i Q^+ Y Q`` and ``T_s^+ Z - Z T_s = -i Q^+ Y Q``.
    """

    def __init__(self, layout: BlockLayout, cond_limit: float = 1e8):
        self.layout = layout
        space = layout.space
        self.data = {}
        for m in layout.sectors:
            H = space.sector(m).heff_sparse(space.a).toarray()
            eig = conditioned_eig(H, cond_limit)
            if eig is not None:
                lam, V, W = eig
                self.data[m] = ("eig", V, W, -1j * (lam[:, None] - lam.conj()[None, :]))
            else:
                T, Q = sla.schur(H, output="complex")
                self.data[m] = ("schur", T, Q, None)

    def apply(self, y: np.ndarray, sigma: float, adjoint: bool) -> np.ndarray:
        lay = self.layout
        out = np.empty_like(y)
        for m in lay.sectors:
            d, o = lay.dims[m], lay.offsets[m]
            Y = y[o:o + d * d].reshape(d, d)
            kind, P, R, den = self.data[m]
            if kind == "eig":
                V, W = P, R
                if adjoint:
                    X = W.conj().T @ ((V.conj().T @ Y @ V) / (den.conj() - sigma)) @ W
                else:
                    X = V @ ((W @ Y @ W.conj().T) / (den - sigma)) @ V.conj().T
            else:
                T, Q = P, R
                Ts = T - 0.5j * sigma * np.eye(d)
                C = Q.conj().T @ Y @ Q
                if adjoint:
                    Z, scale, info = ztrsyl(Ts, Ts, -1j * C, trana="C", tranb="N", isgn=-1)
                else:
                    Z, scale, info = ztrsyl(Ts, Ts, 1j * C, trana="N", tranb="C", isgn=-1)
                if info < 0:  # pragma: no cover - argument error
                    raise RuntimeError(f"ztrsyl failed in block m = {m} (info {info})")
                X = Q @ (Z / scale) @ Q.conj().T
            out[o:o + d * d] = X.ravel()
        return out


def shifted_solvers(sysm: CountingSystem, Ls: sp.csr_matrix, sigma: float):
    """``(right, left)``: ``b, x0 -> (L_s - sigma)^-1 b`` and ``(L_s^H - sigma)^-1 b``
    (inexact GMRES solves on large layouts: inverse iteration checks its residual)."""
    n = Ls.shape[0]
    if n <= DIRECT_LIMIT:
        lu = spla.splu((Ls - sigma * sp.identity(n, dtype=complex, format="csr")).tocsc())
        return (lambda b, x0: lu.solve(b)), (lambda b, x0: lu.solve(b, trans="H"))
    pre = _NoJumpInverse(sysm.layout)
    F = (Ls - sysm.A).tocsr()
    FH = F.conj().T.tocsr()

    def make(Fm, adjoint):
        op = spla.LinearOperator((n, n), dtype=complex,
                                 matvec=lambda x: x + pre.apply(Fm @ x, sigma, adjoint))

        def solve(b, x0):
            x, _ = spla.gmres(op, pre.apply(b, sigma, adjoint), x0=x0, rtol=GMRES_RTOL, atol=0.0,
                              restart=60, maxiter=3)
            return x
        return solve
    return make(F, False), make(FH, True)


def inverse_iteration(solve, op: sp.csr_matrix, theta: float, sigma: float, x0: np.ndarray,
            scale: float, what: str) -> np.ndarray:
    """Eigenvector of ``op`` next to ``theta`` by inverse iteration at the shift ``sigma``."""
    x = x0 / np.linalg.norm(x0)
    mu = theta
    for _ in range(60):
        z = solve(x, x / (mu - sigma))
        x = z / np.linalg.norm(z)
        ox = op @ x
        mu = complex(np.vdot(x, ox))
        if np.linalg.norm(ox - mu * x) <= 1e-12 * scale:
            return x
    raise RuntimeError(f"doob: inverse iteration for the {what} eigenvector of the tilted "
                       f"generator did not converge (theta {theta}, last estimate {mu})")


def hermitian_blocks(layout: BlockLayout, x: np.ndarray, what: str) -> dict:
    """The Hermitian blocks of ``x`` after checking their anti-Hermitian part is round-off."""
    blocks = {m: layout.block(x, m) for m in layout.sectors}
    big = max(np.linalg.norm(B) for B in blocks.values())
    anti = max(np.linalg.norm(B - B.conj().T) for B in blocks.values()) / max(big, 1e-300)
    if anti > 1e-8:
        raise ValueError(f"doob: the {what} eigenmatrix of the tilted generator is not "
                         f"Hermitian (relative anti-Hermitian part {anti:.3g}); theta(s) is "
                         "not a simple real leading eigenvalue on the reachable sectors")
    return {m: 0.5 * (B + B.conj().T) for m, B in blocks.items()}
