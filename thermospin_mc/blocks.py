"""Block form of the Lindblad equation, shared by the exact solvers.

The density matrix started in one magnon sector stays block diagonal in the
magnon number (MODEL.md section 6), so only the blocks ``rho_m`` of the sectors
the dynamics can reach are stored, row-major, stacked in increasing ``m``
(:class:`BlockLayout`). Block ``m`` obeys

    d rho_m / dt = -i (H_m rho_m - rho_m H_m^+) + sum_k r_k P_k rho_{m'} P_k^T,

with ``H_m`` the non-Hermitian ``H_eff`` of the sector, ``m' = m + 1`` for a
loss channel and ``m - 1`` for the pump, and ``P_k`` the 0/1 index map of the
channel (dephasing: inside the block, with the signs of ``sigma^z``).

This module holds the pieces :mod:`.exact` and :mod:`.fcs` build on: the
layout and the observables of stacked blocks, the assembled sparse generator
(no-jump part and jumps), the exact action of its exponential, the exact
inverse of the no-jump part per block (:class:`NoJumpInverse`), and the
checks that refuse models without a unique steady state.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from threadpoolctl import threadpool_limits

from . import _threads
from . import observables as OBS
from ._blockops import (
    BlockGenerator,
    hermitian_defect,
    hermitian_pack,
    hermitian_sum,
    hermitian_unpack,
    triangular_solve,
    upper_half,
)
from .model import ChainModel
from .sectors import SectorSpace

__all__ = ["BlockLayout", "PureLayout", "check_model", "stack", "nojump_generator",
           "feed_generator", "liouvillian", "evolve_grid", "NoJumpInverse",
           "solve_in_block", "refuse_trapped", "refuse_dark_states", "BorderedSolver",
           "HermitianPacking"]

#: Memory budget of the steady-state GMRES basis (sets its restart length): 5 GB,
#: at most a quarter of the machine's memory. A restart shorter than the number of
#: iterations costs iterations (measured at N = 11: 25 without restart, 40 with 12).
try:
    _PHYS = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
    _PHYS = 16 * 2**30
GMRES_BASIS_BYTES = int(min(5e9, 0.25 * _PHYS))

_zgemm, _ztrmm = sla.blas.zgemm, sla.blas.ztrmm
_NO_DEN = np.zeros((0, 0), dtype=complex, order="F")


def check_model(model) -> ChainModel:
    if not isinstance(model, ChainModel):
        raise ValueError(f"model must be a ChainModel, got {type(model).__name__}")
    return model


# ---------------------------------------------------------------------------- layout
class BlockLayout:
    """Row-major stacking of the blocks ``rho_m`` of a list of sectors."""

    def __init__(self, space: SectorSpace, sectors: list[int]):
        self.space = space
        self.sectors = list(sectors)
        self.dims = {m: space.dim(m) for m in self.sectors}
        self.offsets = {}
        off = 0
        for m in self.sectors:
            self.offsets[m] = off
            off += self.dims[m] ** 2
        self.size = off
        N = space.N
        # observable gather indices
        self.diag_idx, self.occ, self.hop_idx, self.hop_bond = {}, {}, {}, {}
        for m in self.sectors:
            sec = space.sector(m)
            d, o = self.dims[m], self.offsets[m]
            self.diag_idx[m] = o + np.arange(d) * (d + 1)
            self.occ[m] = sec.occupation()
            self.hop_idx[m] = o + sec.hop_from * d + sec.hop_to
            self.hop_bond[m] = sec.hop_bond
        self.N = N

    def block(self, x: np.ndarray, m: int) -> np.ndarray:
        d, o = self.dims[m], self.offsets[m]
        return x[o:o + d * d].reshape(d, d)

    def trace(self) -> np.ndarray:
        t = np.zeros(self.size, dtype=complex)
        for m in self.sectors:
            t[self.diag_idx[m]] = 1.0
        return t

    def observables(self, x: np.ndarray, names, pairs=None) -> dict:
        """Expectation values of one stacked density matrix ``x``
        (:func:`thermospin_mc.observables.evaluate_blocks`)."""
        return OBS.evaluate_blocks(self, x, names, pairs)

    def pure(self, m: int, psi: np.ndarray) -> np.ndarray:
        x = np.zeros(self.size, dtype=complex)
        d, o = self.dims[m], self.offsets[m]
        x[o:o + d * d] = np.outer(psi, psi.conj()).ravel()
        return x

    def diagonal(self, weights, drop: tuple[int, ...] = ()) -> np.ndarray:
        """Block-diagonal, site-diagonal ``rho`` from ``[(m, weights over sector m)]``.

        Weight in the sectors ``drop`` is left out (a caller whose layout omits
        sectors that cannot contribute, e.g. the all-up sector for losses);
        weight in any other sector outside the layout is an error.
        """
        x = np.zeros(self.size, dtype=complex)
        for m, w in weights:
            if m not in self.dims:
                if m in drop:
                    continue
                raise ValueError(f"the initial state has weight in sector m = {m}, which "
                                 f"this solver's layout {self.sectors} does not hold")
            x[self.diag_idx[m]] = w
        return x

    def initial(self, model: ChainModel, drop: tuple[int, ...] = ()) -> np.ndarray:
        """The model's initial density matrix (pure or a site-diagonal mixture);
        see :meth:`diagonal` for ``drop``."""
        if model.is_mixed:
            return self.diagonal(self.space.initial_mixture(), drop)
        return self.pure(*self.space.initial_state())


def stack(series: list[dict], names) -> dict:
    return {name: np.array([s[name] for s in series]) for name in names}


# ---------------------------------------------------------------------------- Liouvillian
def nojump_generator(layout: BlockLayout) -> sp.csr_matrix:
    """Block-diagonal part ``X -> -i (H X - X H^+)`` of the Liouvillian."""
    space = layout.space
    blocks = []
    for m in layout.sectors:
        H = space.sector(m).heff_sparse(space.a)
        eye = sp.identity(layout.dims[m], format="csr")
        blocks.append(-1j * sp.kron(H, eye) + 1j * sp.kron(eye, H.conj()))
    return sp.block_diag(blocks, format="csr")


def feed_generator(layout: BlockLayout) -> sp.csr_matrix:
    """Jump (feeding) part ``X -> sum_k r_k P_k X P_k^T`` between neighbouring blocks
    (dephasing: inside a block, with the signs of ``sigma^z``)."""
    space = layout.space
    rows, cols, vals = [], [], []
    for ch in space.channels:
        for m in layout.sectors:
            t = m + ch.dm
            if t not in layout.dims:
                continue
            src, dst = space.jump_map(ch, m)
            if not src.size:
                continue
            dm_, dt_ = layout.dims[m], layout.dims[t]
            rows.append((layout.offsets[t] + dst[:, None] * dt_ + dst[None, :]).ravel())
            cols.append((layout.offsets[m] + src[:, None] * dm_ + src[None, :]).ravel())
            if ch.kind == "dephasing":
                # sigma^z X sigma^z: element (a, b) times s_a s_b (s = +1 up, -1 down)
                amp = space.jump_amplitudes(ch, m)
                vals.append(ch.rate * np.outer(amp, amp).ravel())
            else:
                vals.append(np.full(src.size ** 2, ch.rate))
    if not rows:
        return sp.csr_matrix((layout.size, layout.size), dtype=complex)
    return sp.csr_matrix((np.concatenate(vals).astype(complex),
                          (np.concatenate(rows), np.concatenate(cols))),
                         shape=(layout.size, layout.size))


def liouvillian(model: ChainModel, sectors: list[int] | None = None):
    """The sparse block Liouvillian and its :class:`BlockLayout`."""
    space = SectorSpace(model)
    layout = BlockLayout(space, model.reachable_sectors() if sectors is None else sectors)
    return (nojump_generator(layout) + feed_generator(layout)).tocsr(), layout


def is_uniform(times: np.ndarray) -> bool:
    if times.size < 3:
        return True
    d = np.diff(times)
    return bool(np.all(np.abs(d - d[0]) <= 1e-12 * max(1.0, abs(times[-1]))))


def evolve_grid(op, x0: np.ndarray, times: np.ndarray):
    """Yield ``expm(op t) x0`` at each of ``times`` (``op`` sparse, exact action)."""
    if times.size > 2 and is_uniform(times) and times[-1] > times[0]:
        # one call on a uniform grid: expm_multiply returns exp(t_k op) x0
        # scipy gh-16363: start != 0 reuses the interval's scaling for exp(start op); go to
        x0 = spla.expm_multiply(op * times[0], x0) if times[0] > 0 else x0  # times[0] first
        yield from spla.expm_multiply(op, x0, start=0.0, stop=times[-1] - times[0],
                                      num=times.size, endpoint=True)
        return
    x, t_now = x0, 0.0
    for t in times:
        if t > t_now:
            x = spla.expm_multiply(op * (t - t_now), x)
            t_now = t
        yield x


class PureLayout:
    """Observables of an (unnormalised) pure state in one sector; the missing
    weight ``1 - ||psi||^2`` is the population of the sector below (lost magnon)."""

    def __init__(self, space: SectorSpace, m: int, lost_to: int | None = None):
        self.space, self.m, self.lost_to = space, m, lost_to
        sec = space.sector(m)
        self.sec, self.occ = sec, sec.occupation()
        self.N = space.N

    def observables(self, psi: np.ndarray, names) -> dict:
        N, a, sec = self.N, self.space.a, self.sec
        p = np.abs(psi) ** 2
        norm = p.sum()
        lost = 1.0 - norm if self.lost_to is not None else 0.0
        jb = np.bincount(sec.hop_bond, -4.0 * (psi[sec.hop_to].conj() * psi[sec.hop_from]).imag,
                         minlength=N - 1) if sec.hop_bond.size else np.zeros(N - 1)
        return OBS.assemble(names, N, a, n=self.occ.T @ p, jb=jb,
                            magnons=self.m * norm + (self.lost_to or 0) * lost,
                            norm=norm + lost)


# ---------------------------------------------------------------------------- no-jump inverse
class NoJumpInverse:
    """Exact solution of ``-i (H X - X H^+) = Y`` per block (all blocks decay).

    A block whose ``H_eff`` has a well-conditioned eigenbasis ``H = V diag(lam) W``
    (``W = V^-1``) is solved as ``X = V ((W Y W^+) / den) V^+`` with ``den_ij =
    -i (lam_i - conj(lam_j))``; the others through the Schur form. The products
    run as BLAS calls on the transposed (Fortran) view of the row-major blocks,
    ``X^T = conj(V) ((conj(W) Y^T conj(W)^+) / den^T) conj(V)^+``, which needs no
    conjugated copies. For Hermitian ``Y`` both products are congruences ``A Z
    A^+`` of Hermitian matrices: with ``Z = U + U^+`` (``U`` its upper triangle,
    half diagonal) ``A Z A^+ = G + G^+``, ``G = (A U) A^+``, a triangular and a
    general product (12 ``d^3`` real multiply-adds in place of 16).
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
        # three work blocks of the largest size (Fortran views of their heads)
        dmax = max(layout.dims[m] for m in layout.sectors)
        self._ws = [np.empty(dmax * dmax, dtype=complex) for _ in range(3)]

    def _decompose(self, m: int, H: np.ndarray):
        lam, V = np.linalg.eig(H)
        # ||V||_F ||V^-1||_F >= cond_2(V): a conservative, SVD-free conditioning test
        try:
            W = np.linalg.inv(V)
            kappa = np.linalg.norm(V) * np.linalg.norm(W)
        except np.linalg.LinAlgError:
            kappa = np.inf
        if np.isfinite(kappa) and kappa < self.cond_limit:
            den = -1j * (lam[:, None] - lam.conj()[None, :])
            # a (numerically) non-decaying eigenmode: a dark state of H_eff
            if np.min(np.abs(den)) <= 1e-13 * max(1.0, float(np.abs(den).max())):
                raise ValueError(f"sector m = {m} has a non-decaying (dark) state; "
                                 "the steady state is not unique for this model")
            # conj(V), conj(W) Fortran-ordered; den^T (a Fortran view of den)
            return ("eig", np.asfortranarray(V.conj()), np.asfortranarray(W.conj()), den.T)
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
        return self._ws[k][:d * d].reshape((d, d), order="F")

    def solve_block(self, m: int, Y: np.ndarray, sigma: float = 0.0,
                    out: np.ndarray | None = None, hermitian: bool = False) -> np.ndarray:
        """``X`` with ``-i (H_m X - X H_m^+) - sigma X = Y`` (``Y`` a ``d x d`` block,
        ``sigma`` real; the counting statistics' inverse iteration shifts it).

        ``out``: a C-contiguous ``d x d`` array for ``X`` (returned).
        ``hermitian=True``: ``Y`` is Hermitian (only its part on and below the
        diagonal is read) and so is ``X``.
        """
        kind, A, B, den = self.data[m]
        d = Y.shape[0]
        if out is None:
            out = np.empty((d, d), dtype=complex)
        if kind == "schur":
            # (T - i sigma) Xt - Xt T^+ = i Q^+ Y Q in the Schur basis (H = Q T Q^+)
            T, Q = A, B
            if hermitian:  # the Hermitian matrix of the lower triangle
                Y = np.tril(Y) + np.tril(Y, -1).conj().T
            C = Q.conj().T @ (1j * Y) @ Q
            Ts = T - 1j * sigma * np.eye(T.shape[0]) if sigma else T
            Xt, scale, info = sla.lapack.ztrsyl(Ts, T, C, trana="N", tranb="C", isgn=-1)
            if info < 0:
                raise RuntimeError(f"ztrsyl failed with info = {info}")
            out[...] = Q @ (Xt / scale) @ Q.conj().T
            if hermitian:  # Hermitian to round-off: exactly
                out[...] = 0.5 * (out + out.conj().T)
            return out
        Vc, Wc, denT = A, B, den  # conj(V), conj(W), den^T
        Yt = np.asfortranarray(Y.T)  # a view for a row-major block
        G = self._work(0, d)
        if hermitian:
            U, S = self._work(1, d), self._work(2, d)
            upper_half(Yt, U)
            for k, F in enumerate((Wc, Vc)):
                S[...] = F
                S = _ztrmm(1.0, U, S, side=1, lower=0, overwrite_b=1)  # F U
                G = _zgemm(1.0, S, F, trans_b=2, c=G, overwrite_c=1)  # F U F^+
                if k == 0:  # the middle: U = upper triangle of (G + G^+) / den^T
                    hermitian_sum(G, denT, sigma, U, False)
            hermitian_sum(G, _NO_DEN, 0.0, out.T, True)
            return out
        S = self._work(1, d)
        S = _zgemm(1.0, Wc, Yt, c=S, overwrite_c=1)
        G = _zgemm(1.0, S, Wc, trans_b=2, c=G, overwrite_c=1)
        G /= denT - sigma if sigma else denT
        S = _zgemm(1.0, Vc, G, c=S, overwrite_c=1)
        Xt = out.T
        R = _zgemm(1.0, S, Vc, trans_b=2, c=Xt, overwrite_c=1)
        if not np.shares_memory(R, out):  # out not C-contiguous: copied by f2py
            Xt[...] = R
        return out


def refuse_trapped(space: SectorSpace, sectors, model: ChainModel,
                    max_dim: int | None = None) -> None:
    """Raise if population can stay forever in one of ``sectors`` (no magnon
    change). Without dephasing that is a dark state of ``H_eff``; with dephasing
    the in-sector generator (no-jump part plus the dephasing jumps) must have
    no stationary state. Sectors above ``max_dim`` states are not checked."""
    if max_dim is not None:
        sectors = [m for m in sectors if space.dim(m) <= max_dim]
    if not model.has_kind("dephasing"):
        refuse_dark_states(space, sectors)
        return
    for m in sectors:
        layout = BlockLayout(space, [m])
        Lm = (nojump_generator(layout) + feed_generator(layout)).tocsc()
        if layout.size <= 400:
            sv = np.linalg.svd(Lm.toarray(), compute_uv=False)
            singular = sv[-1] <= 1e-10 * max(sv[0], 1e-300)
        else:
            try:
                lu = spla.splu(Lm)
                u = np.abs(lu.U.diagonal())
                singular = u.min() <= 1e-12 * max(u.max(), 1e-300)
            except RuntimeError:
                singular = True
        if singular:
            raise ValueError(f"sector m = {m} has a state that never changes its magnon "
                             "number; the steady state is not unique for this model")


def refuse_dark_states(space: SectorSpace, sectors, rtol: float = 1e-10) -> None:
    """Raise if a sector's ``H_eff`` has an eigenvalue with zero imaginary part."""
    for m in sectors:
        H = space.sector(m).heff_sparse(space.a).toarray()
        lam = np.linalg.eigvals(H)
        scale = max(1.0, float(np.abs(lam).max()))
        if np.min(np.abs(lam.imag)) <= rtol * scale:
            raise ValueError(f"sector m = {m} has a non-decaying (dark) state; the steady "
                             "state is not unique for this model")



def solve_in_block(layout: BlockLayout, m: int, y: np.ndarray) -> np.ndarray:
    """Solve ``L_m X = y`` with ``L_m`` the in-block generator of sector ``m`` (no-jump
    part plus the jumps that stay in the sector); raises if ``L_m`` is singular."""
    sub = BlockLayout(layout.space, [m])
    Lm = (nojump_generator(sub) + feed_generator(sub)).tocsc()
    with warnings.catch_warnings():
        warnings.simplefilter("error", spla.MatrixRankWarning)
        try:
            X = spla.spsolve(Lm, y)
        except (RuntimeError, spla.MatrixRankWarning) as exc:
            raise ValueError(f"sector m = {m} has a (dark) state that never loses its "
                             "magnons; exit_probabilities needs every magnon to leave, use "
                             "mesolve's count observables at long times instead") from exc
    if not np.all(np.isfinite(X)):
        raise ValueError(f"sector m = {m} has a (dark) state that never loses its magnons; "
                         "exit_probabilities needs every magnon to leave, use mesolve's "
                         "count observables at long times instead")
    return X


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
        self.restart = int(min(80, max(8, GMRES_BASIS_BYTES // (16 * max(layout.size, 1)))))
        self.iterations: list[int] = []
        n = layout.size
        self._op = spla.LinearOperator((n, n), matvec=self._matvec, dtype=complex)
        self._pack = HermitianPacking(layout)
        self._op_h = spla.LinearOperator((n, n), dtype=float,
                                         matvec=lambda r: self._pack.pack(
                                             self._matvec(self._pack.unpack(r), True)))

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
        iteration in half the memory of its basis."""
        it = [0]

        def count(_):
            it[0] += 1

        herm = self._pack.is_hermitian(y)
        b = self.precondition(y, herm)
        op, rhs = (self._op_h, self._pack.pack(b)) if herm else (self._op, b)
        x, code = spla.gmres(op, rhs, rtol=self.tol, atol=0.0,
                             restart=self.restart, maxiter=max(50, 4000 // self.restart),
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
    :func:`~thermospin_mc._blockops.hermitian_pack`). The factor ``sqrt(2)`` makes
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
