"""The counting system of the exact full counting statistics (docs/model.md 11).

The block Liouvillian of a model with one sparse jump superoperator
``J_k rho = L_k rho L_k^+`` per channel (losses ``dm = -1``, pumps ``+1``,
dephasing ``dm = 0`` with ``J rho = r Z rho Z``), the trace functionals of the
jumps and the bordered solve ``(L + e Tr) x = y`` that gives the steady state
and the Drazin solutions; plus the validation of counting weights and channel
names. Used by :mod:`.fcs` (cumulants, SCGF) and :mod:`.waiting` (waiting
times).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..core.sectors import SectorSpace
from .blocks import BlockLayout, nojump_generator
from .blocksolve import BorderedSolver

__all__ = ["CountingSystem", "check_counts", "check_channel_names", "channel_dm", "kinds",
           "steady_sectors", "reachable_sectors", "jump_superoperator", "DIRECT_LIMIT"]

#: Bordered systems up to this size are solved by a sparse LU (factorised once).
DIRECT_LIMIT = 1_000


# --------------------------------------------------------------------------- validation
def channel_dm(ch) -> int:
    """Magnon-number change of a channel: -1 loss, +1 pump, 0 dephasing."""
    if ch.kind == "dephasing":
        return 0
    return int(ch.dm)


def check_counts(model, counts) -> dict:
    """``{channel name: non-zero int weight}`` in the model's channel order."""
    names = tuple(ch.name for ch in model.channels)
    if not isinstance(counts, dict) or not counts:
        raise ValueError("counts must be a non-empty dict {channel name: integer weight}, "
                         f"channels of this model: {list(names)}; got {counts!r}")
    out = {}
    for name, w in counts.items():
        if name not in names:
            raise ValueError(f"counts names an unknown channel {name!r}; channels of this "
                             f"model: {list(names)}")
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)):
            if not (isinstance(w, (float, np.floating)) and float(w).is_integer()):
                raise ValueError(f"counts[{name!r}] must be an integer weight, got {w!r}")
        out[name] = int(w)
    out = {n: out[n] for n in names if out.get(n, 0) != 0}
    if not out:
        raise ValueError(f"counts must give at least one channel a non-zero weight, got {counts}")
    return out


def check_channel_names(model, channels, what: str) -> tuple[str, ...]:
    names = tuple(ch.name for ch in model.channels)
    if isinstance(channels, str):
        channels = (channels,)
    elif isinstance(channels, dict):
        channels = tuple(channels)
    try:
        channels = tuple(channels)
    except TypeError as exc:
        raise ValueError(f"{what} must be a channel name or a list of names from "
                         f"{list(names)}, got {channels!r}") from exc
    if not channels:
        raise ValueError(f"{what} must name at least one channel of {list(names)}")
    for c in channels:
        if c not in names:
            raise ValueError(f"{what} names an unknown channel {c!r}; channels of this "
                             f"model: {list(names)}")
    return tuple(dict.fromkeys(channels))


# --------------------------------------------------------------------------- block system
def kinds(model) -> tuple[bool, bool]:
    dms = {channel_dm(ch) for ch in model.channels}
    return -1 in dms, +1 in dms


def steady_sectors(model) -> list[int]:
    """Sectors holding the unique steady state (an invariant set of ``L``)."""
    has_loss, has_pump = kinds(model)
    if has_loss and has_pump:
        return list(range(model.N + 1))
    if has_loss:
        return [0]
    if has_pump:
        return [model.N]
    raise ValueError("long-time statistics need a unique steady state: the model must have a "
                     "loss or a pump channel (it has none; the magnon number is conserved)")


def reachable_sectors(model) -> list[int]:
    """Every sector the dynamics can visit from any sector of the initial state."""
    return model.reachable_sectors()


def jump_superoperator(layout: BlockLayout, ch) -> sp.csr_matrix:
    """``X -> L_ch X L_ch^+`` on the stacked blocks (loss, pump or dephasing)."""
    space = layout.space
    dm = channel_dm(ch)
    rows, cols, vals = [], [], []
    for m in layout.sectors:
        d, o = layout.dims[m], layout.offsets[m]
        if dm == 0:
            occ = (space.sector(m).sites == ch.site).any(axis=1)
            z = np.where(occ, -1.0, 1.0)  # sigma^z: +1 up, -1 down (magnon)
            idx = o + np.arange(d * d)
            rows.append(idx)
            cols.append(idx)
            vals.append(ch.rate * np.outer(z, z).ravel())
            continue
        t = m + dm
        if t not in layout.dims:
            continue
        src, dst = space.jump_map(ch, m)
        if not src.size:
            continue
        dt_ = layout.dims[t]
        rows.append((layout.offsets[t] + dst[:, None] * dt_ + dst[None, :]).ravel())
        cols.append((o + src[:, None] * d + src[None, :]).ravel())
        vals.append(np.full(src.size ** 2, ch.rate))
    n = layout.size
    if not rows:
        return sp.csr_matrix((n, n), dtype=complex)
    return sp.csr_matrix((np.concatenate(vals).astype(complex),
                          (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


class CountingSystem:
    """Block Liouvillian, per-channel jump superoperators and a bordered solver."""

    def __init__(self, model, sectors):
        self.model = model
        self.space = SectorSpace(model)
        self.layout = BlockLayout(self.space, sectors)
        self.J = {ch.name: jump_superoperator(self.layout, ch) for ch in model.channels}
        self.F = sum(self.J.values()) if self.J else sp.csr_matrix(
            (self.layout.size, self.layout.size), dtype=complex)
        self.A = nojump_generator(self.layout)
        self.L = (self.A + self.F).tocsr()
        self.trace = self.layout.trace()
        # trace functionals of the jumps: Tr(J_ch x) = tJ[ch] @ x
        self.tJ = {k: np.asarray(J.T @ self.trace).ravel() for k, J in self.J.items()}
        leak = np.abs(self.L.T @ self.trace).max() if self.layout.size else 0.0
        scale = max(1.0, abs(self.L).max()) if self.L.nnz else 1.0
        if leak > 1e-10 * scale:
            raise RuntimeError(f"block Liouvillian does not preserve the trace (defect {leak:.3g});"
                               " a channel's jump and decay terms disagree")
        self._solver = None
        self._e = None  # the border of the solver in use
        self.Ainv = None
        self.info = {}

    # ------------------------------------------------------------ bordered solver
    def _make_solver(self, tol: float):
        n = self.layout.size
        e = np.zeros(n, dtype=complex)  # direct: the (0, 0) element of the lowest block
        e[self.layout.offsets[self.layout.sectors[0]]] = 1.0
        t = self.trace
        method = "direct" if n <= DIRECT_LIMIT else "gmres"
        bordered = None
        if method == "gmres":
            try:
                bordered = BorderedSolver(self.layout, self.model.channels, tol)
                self.Ainv = bordered.Ainv
            except ValueError:  # a non-decaying no-jump block: no preconditioner
                method = "direct"
        self.info["method"] = method
        self.info["gmres_iterations"] = []
        if method == "direct":
            nz = np.flatnonzero(t)
            B = self.L + sp.csr_matrix((np.ones(nz.size, dtype=complex),
                                        (np.full(nz.size, int(np.flatnonzero(e)[0])), nz)),
                                       shape=(n, n))
            lu = spla.splu(B.tocsc())
            self._e = e

            def solve(y):
                x = lu.solve(y)
                if not np.all(np.isfinite(x)):
                    raise ValueError("the Liouvillian is singular beyond its steady state "
                                     "(the steady state is not unique for this model)")
                return x
            return solve
        self.info["gmres_iterations"] = bordered.iterations
        self._e = bordered.e  # the preconditioner's sweep starts in its block
        return bordered.solve

    def solve(self, y: np.ndarray, tol: float = 1e-13) -> np.ndarray:
        """``x`` with ``L x + e Tr(x) = y``: the steady state for ``y = e``, the
        trace-free Drazin solution of ``L x = y`` for trace-free ``y``."""
        return self._ensure(tol)(y)

    def _ensure(self, tol: float):
        if self._solver is None:
            self._solver = self._make_solver(tol)
        return self._solver

    def steady_state(self, tol: float = 1e-13) -> np.ndarray:
        """The steady state (unit trace): :meth:`solve` with the solver's own ``e``."""
        x = self._ensure(tol)(self._e)
        return x / (self.trace @ x)

    def initial_vector(self) -> np.ndarray:
        """The model's rho0 (pure or a site-diagonal mixture) in block form."""
        return self.layout.initial(self.model)

    def derivative(self, weights: dict, k: int) -> sp.csr_matrix:
        """``L^(k) = sum_ch nu_ch^k J_ch`` (``k >= 1``)."""
        return sum(float(w) ** k * self.J[name] for name, w in weights.items()).tocsr()

    def tilted(self, weights: dict, s: float) -> sp.csr_matrix:
        out = self.L.copy()
        for name, w in weights.items():
            out = out + np.expm1(s * w) * self.J[name]
        return out.tocsr()


