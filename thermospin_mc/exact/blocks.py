"""Block form of the Lindblad equation, shared by the exact solvers.

The density matrix started in one magnon sector stays block diagonal in the
magnon number (docs/model.md section 6), so only the blocks ``rho_m`` of the sectors
the dynamics can reach are stored, row-major, stacked in increasing ``m``
(:class:`BlockLayout`). Block ``m`` obeys

    d rho_m / dt = -i (H_m rho_m - rho_m H_m^+) + sum_k r_k P_k rho_{m'} P_k^T,

with ``H_m`` the non-Hermitian ``H_eff`` of the sector, ``m' = m + 1`` for a
loss channel and ``m - 1`` for the pump, and ``P_k`` the 0/1 index map of the
channel (dephasing: inside the block, with the signs of ``sigma^z``).

The same generator acts on the coherence blocks ``X_m`` between sector
``m + shift`` (rows) and sector ``m`` (columns) of an operator like ``s-_i rho``
(:class:`CoherenceLayout`, docs/model.md 13): ``H_{m + shift}`` on the left,
``H_m^+`` on the right and the index maps of both sectors in the jumps.

This module holds the pieces :mod:`.exact` and :mod:`.fcs` build on: the
layout and the observables of stacked blocks, the assembled sparse generator
(no-jump part and jumps), the exact action of its exponential, and the
checks that refuse models without a unique steady state; the solvers on the
block form (exact no-jump inverse, bordered GMRES) are in :mod:`.blocksolve`.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..core import observables as OBS
from ..core.sectors import SectorSpace
from ..physics.model import ChainModel
from ..physics.schedule import Schedule

__all__ = ["BlockLayout", "CoherenceLayout", "PureLayout", "check_model", "stack",
           "nojump_generator", "feed_generator", "liouvillian", "evolve_grid", "solve_in_block",
           "refuse_trapped", "refuse_dark_states"]

def check_model(model, solver: str | None = None) -> ChainModel:
    """``model`` if it is a :class:`ChainModel`, else a one-line ``ValueError``.

    A :class:`~thermospin_mc.physics.schedule.Schedule` is refused with the reason: the
    solvers that call this need one time-independent generator (a steady state,
    a spectrum, long-time statistics). ``solver`` names the caller in the
    message; by default the calling function's name (when public).
    """
    if isinstance(model, Schedule):
        if solver is None:
            caller = sys._getframe(1).f_code.co_name
            solver = caller if not caller.startswith("_") else "this solver"
        raise ValueError(f"{solver}: a Schedule has no single generator (it needs one "
                         "time-independent model); pass one stage's model, e.g. "
                         "schedule.model_at(t)")
    if not isinstance(model, ChainModel):
        raise ValueError(f"model must be a ChainModel, got {type(model).__name__}")
    return model


# ---------------------------------------------------------------------------- layout
class BlockLayout:
    """Row-major stacking of the blocks ``rho_m`` of a list of sectors."""

    #: Block ``m`` couples sector ``m + shift`` (rows) with sector ``m`` (columns).
    shift = 0

    def __init__(self, space: SectorSpace, sectors: list[int]):
        self.space = space
        self.sectors = list(sectors)
        self.dims = {m: space.dim(m) for m in self.sectors}
        self.rows = self.dims
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
        (:func:`thermospin_mc.core.observables.evaluate_blocks`)."""
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


class CoherenceLayout:
    """Row-major stacking of rectangular coherence blocks ``X_m`` (docs/model.md 13).

    Block ``m`` has the rows of sector ``m + shift`` and the columns of sector
    ``m`` (``shift = +1``: ``s-_i rho``; ``-1``: ``s+_i rho``; ``0``: the square
    blocks of :class:`BlockLayout`); sectors whose partner ``m + shift`` is
    outside ``0..N`` are left out. :func:`nojump_generator` and
    :func:`feed_generator` act on it as on a :class:`BlockLayout`.
    """

    def __init__(self, space: SectorSpace, sectors, shift: int):
        self.space = space
        self.shift = int(shift)
        self.sectors = [m for m in sectors if 0 <= m + self.shift <= space.N]
        self.dims = {m: space.dim(m) for m in self.sectors}
        self.rows = {m: space.dim(m + self.shift) for m in self.sectors}
        self.offsets = {}
        off = 0
        for m in self.sectors:
            self.offsets[m] = off
            off += self.rows[m] * self.dims[m]
        self.size = off
        self.N = space.N

    def block(self, x: np.ndarray, m: int) -> np.ndarray:
        """View of block ``m`` of the stacked vector ``x`` (rows: sector ``m + shift``)."""
        o = self.offsets[m]
        return x[o:o + self.rows[m] * self.dims[m]].reshape(self.rows[m], self.dims[m])


def stack(series: list[dict], names) -> dict:
    return {name: np.array([s[name] for s in series]) for name in names}


# ---------------------------------------------------------------------------- Liouvillian
def nojump_generator(layout: BlockLayout | CoherenceLayout) -> sp.csr_matrix:
    """Block-diagonal part ``X -> -i (H_r X - X H^+)`` of the Liouvillian (``H_r``:
    the ``H_eff`` of the rows' sector ``m + layout.shift``, ``H`` that of ``m``)."""
    space = layout.space
    blocks = []
    for m in layout.sectors:
        H = space.sector(m).heff_sparse(space.a)
        Hr = space.sector(m + layout.shift).heff_sparse(space.a) if layout.shift else H
        blocks.append(-1j * sp.kron(Hr, sp.identity(layout.dims[m], format="csr"))
                      + 1j * sp.kron(sp.identity(layout.rows[m], format="csr"), H.conj()))
    return sp.block_diag(blocks, format="csr")


def feed_generator(layout: BlockLayout | CoherenceLayout) -> sp.csr_matrix:
    """Jump (feeding) part ``X -> sum_k r_k P_k X P_k^T`` between neighbouring blocks
    (dephasing: inside a block, with the signs of ``sigma^z``); for a
    :class:`CoherenceLayout` the rows map with the index map of sector ``m + shift``."""
    space, shift = layout.space, layout.shift
    rows, cols, vals = [], [], []
    for ch in space.channels:
        for m in layout.sectors:
            t = m + ch.dm
            if t not in layout.dims:
                continue
            src, dst = space.jump_map(ch, m)
            src_r, dst_r = space.jump_map(ch, m + shift) if shift else (src, dst)
            if not (src.size and src_r.size):
                continue
            dm_, dt_ = layout.dims[m], layout.dims[t]
            rows.append((layout.offsets[t] + dst_r[:, None] * dt_ + dst[None, :]).ravel())
            cols.append((layout.offsets[m] + src_r[:, None] * dm_ + src[None, :]).ravel())
            if ch.kind == "dephasing":
                # sigma^z X sigma^z: element (a, b) times s_a s_b (s = +1 up, -1 down)
                amp = space.jump_amplitudes(ch, m)
                amp_r = space.jump_amplitudes(ch, m + shift) if shift else amp
                vals.append(ch.rate * np.outer(amp_r, amp).ravel())
            else:
                vals.append(np.full(src_r.size * src.size, ch.rate))
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
