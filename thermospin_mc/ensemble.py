"""Trajectory ensembles: sector packing, seeds, batches, streamed statistics.

Reproducibility: trajectory ``k`` always draws from the random stream derived
from ``(seed, k)``; trajectories are folded into Welford accumulators in
fixed blocks of ``BLOCK`` consecutive indices, and blocks are merged (Chan's
formula) strictly in block order. Neither ``n_jobs``, nor ``batch_size``, nor
the backend changes a single bit of the result.
"""

from __future__ import annotations

import threading
import time
from math import comb

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import _validate as v
from . import kernels as K
from . import observables as OBS
from .model import ChainModel
from .results import Result, expect_table
from .sectors import SectorSpace

__all__ = ["mcsolve", "SectorPack", "BLOCK", "Accumulator"]

#: Trajectories per statistics block (the unit of the fixed reduction order).
BLOCK = 64
#: Sectors up to this dimension are diagonalised (eigen mode); larger ones use
#: the sparse Taylor propagator, which is cheaper per step beyond a few hundred
#: states (cost ~ nnz * terms instead of dim^2) and needs no dense storage.
DENSE_MAX = 400
#: Propagators of the sectors that are not diagonalised: Chebyshev steps with
#: dense output (default) or the plain Taylor substeps.
LARGE_MODES = ("chebyshev", "taylor")
#: Memory of one Chebyshev step's vectors per worker; at least ``CHEB_KMIN + 1``
#: and at most ``CHEB_KMAX + 1`` vectors of the sector's dimension.
CHEB_BYTES = 256 * 2**20
CHEB_KMIN, CHEB_KMAX = 24, 72
#: Longest Chebyshev step in units of the damping spread: ``b h <= CHEB_BH``
#: keeps the partial sums within ``e^{b h}`` of the state (round-off).
CHEB_BH = 4.0
#: Eigenvector condition number above which a sector falls back to Taylor mode.
COND_LIMIT = 1e8
#: Memory cap of the stored shared no-jump path (Taylor mode), per worker.
PATH_BYTES = 128 * 2**20


# --------------------------------------------------------------------------- packing
class SectorPack:
    """Flat arrays of the sectors a run has visited so far (grown on demand).

    Thread-safe: sectors are built under a lock, and kernels run on
    :meth:`snapshot`, consistent copies of the tables that a sector built by
    another thread meanwhile cannot change under them (the kernel then asks
    for the sector, and the caller takes a new snapshot).
    """

    def __init__(self, model: ChainModel, times: np.ndarray, dense_max: int = DENSE_MAX,
                 pairs=None, large: str = "chebyshev"):
        if large not in LARGE_MODES:
            raise ValueError(f"large must be one of {LARGE_MODES}, got {large!r}")
        self.large = large
        self.model = model
        #: two-point pairs, 0-based sites
        self.pairs = (np.zeros((0, 2), dtype=np.int64) if pairs is None
                      else np.asarray(pairs, dtype=np.int64).reshape(-1, 2) - 1)
        self.space = SectorSpace(model)
        self.N = model.N
        self.channels = model.channels
        nch = len(self.channels)
        self.dense_max = dense_max
        self.stab = np.zeros((self.N + 1, K.NCOL), dtype=np.int64)
        self.jtab = np.zeros((max(nch, 1), self.N + 1, 3), dtype=np.int64)
        self.jtab[:, :, 2] = -1
        self.ptab = np.zeros((max(len(self.pairs), 1), self.N + 1, 4), dtype=np.int64)
        self.hnorms = np.zeros(self.N + 1)
        self._cpx, self._ints, self._reals = [], [], []
        self._ncpx = self._nints = self._nreals = 0
        self._snap = None
        self._lock = threading.RLock()
        d = np.diff(times)
        self.dt = float(d[0]) if (times.size > 1 and d[0] > 0 and
                                  np.allclose(d, d[0], rtol=0, atol=1e-13 * max(1, times[-1])))\
            else 0.0
        self.ch_rate = np.array([c.rate for c in self.channels] or [0.0])
        self.ch_dm = np.array([c.dm for c in self.channels] or [0], dtype=np.int64)
        self.modes = {}
        self.times = times
        self._paths = {}

    def _add(self, kind: str, arr) -> int:
        if kind == "c":
            off = self._ncpx
            self._cpx.append(np.ascontiguousarray(arr, dtype=np.complex128).ravel())
            self._ncpx += self._cpx[-1].size
        elif kind == "i":
            off = self._nints
            self._ints.append(np.ascontiguousarray(arr, dtype=np.int64).ravel())
            self._nints += self._ints[-1].size
        else:
            off = self._nreals
            self._reals.append(np.ascontiguousarray(arr, dtype=np.float64).ravel())
            self._nreals += self._reals[-1].size
        return off

    def ensure(self, m: int) -> None:
        """Build sector ``m`` (eigen or Taylor mode) and its outgoing jump maps."""
        with self._lock:
            if not self.stab[m, K.BUILT]:
                self._build(m)
                self._snap = None

    def _build(self, m: int) -> None:
        sec = self.space.sector(m)
        a = self.space.a
        d = sec.dim
        row = self.stab[m]
        row[K.DIM] = d
        H = sec.heff_sparse(a)
        mode = K.MODE_TAYLOR
        if d <= self.dense_max:
            Hd = H.toarray()
            lam, V = np.linalg.eig(Hd)
            try:
                Vinv = np.linalg.inv(V)
                cond = np.linalg.norm(V, 2) * np.linalg.norm(Vinv, 2)
                resid = np.linalg.norm(V @ (lam[:, None] * Vinv) - Hd) / max(
                    np.linalg.norm(Hd), 1e-300)
            except np.linalg.LinAlgError:
                cond, resid = np.inf, np.inf
            if cond < COND_LIMIT and resid < 1e-11:
                mode = K.MODE_EIGEN
                # transposed, real and imaginary parts apart (see kernels._matvec_split)
                row[K.OFF_V] = self._add("r", np.concatenate([V.T.real.ravel(),
                                                              V.T.imag.ravel()]))
                row[K.OFF_VINV] = self._add("r", np.concatenate([Vinv.T.real.ravel(),
                                                                 Vinv.T.imag.ravel()]))
                row[K.OFF_LAM] = self._add("c", lam)
                row[K.OFF_PHASE] = self._add("c", np.exp(-1j * lam * self.dt))
        if mode == K.MODE_TAYLOR:
            mode = K.MODE_CHEB if self.large == "chebyshev" else K.MODE_TAYLOR
            # Shift the real diagonal to the middle of its range: a global phase
            # exp(-i c t), invisible to norms, jumps and observables, which cuts
            # ||H|| from ~ sum_l a_l / 2 (the Ising offset) to ~ 4 max(a) + gamma,
            # and with it the number of Taylor substeps.
            diag = H.diagonal().real
            shift = 0.5 * (diag.max() + diag.min()) if d else 0.0
            Hc = (H - shift * sp.identity(d, format="csr")).tocsr()
            Hc.sort_indices()
            row[K.OFF_INDPTR] = self._add("i", Hc.indptr)
            row[K.OFF_INDICES] = self._add("i", Hc.indices)
            row[K.OFF_DATA] = self._add("c", Hc.data)
            row[K.NNZ] = Hc.nnz
            self.hnorms[m] = float(np.abs(Hc).sum(axis=1).max()) if Hc.nnz else 0.0
            off = (Hc - sp.diags(Hc.diagonal())).tocsr()
            off.eliminate_zeros()
            off.sort_indices()
            if mode == K.MODE_CHEB and np.any(off.data.imag):
                mode = K.MODE_TAYLOR  # the Chebyshev kernel takes a real off-diagonal part
            if mode == K.MODE_CHEB:
                par = cheb_params(Hc)
                c, rho = complex(par[K.CHEB_CR], par[K.CHEB_CI]), par[K.CHEB_RHO]
                par[K.CHEB_OPTR] = self._add("i", off.indptr)
                par[K.CHEB_OIDX] = self._add("i", off.indices)
                par[K.CHEB_OVAL] = self._add("r", off.data.real / rho)
                par[K.CHEB_ODG] = self._add("c", (Hc.diagonal() - c) / rho)
                row[K.OFF_CHEB] = self._add("r", par)
        row[K.MODE] = mode
        self.modes[m] = {K.MODE_EIGEN: "eigen", K.MODE_TAYLOR: "taylor",
                         K.MODE_CHEB: "chebyshev"}[mode]
        row[K.OFF_SITES] = self._add("i", sec.sites)
        row[K.OFF_HOP] = self._add("i", np.concatenate([sec.hop_bond, sec.hop_to,
                                                       sec.hop_from]))
        row[K.NHOP] = sec.hop_bond.size
        row[K.OFF_DECAY] = self._add("r", sec.decay)
        for k, ch in enumerate(self.channels):
            if 0 <= m + ch.dm <= self.N:
                src, dst = self.space.jump_map(ch, m)
                self.jtab[k, m, 0] = self._add("i", np.concatenate([src, dst]))
                self.jtab[k, m, 1] = src.size
                if ch.kind == "dephasing":
                    self.jtab[k, m, 2] = self._add("r", self.space.jump_amplitudes(ch, m))
        for p, (i, k) in enumerate(self.pairs):
            both, src, dst = self.space.pair_maps(int(i), int(k), m)
            self.ptab[p, m] = (self._add("i", both), both.size,
                               self._add("i", np.concatenate([src, dst])), src.size)
        row[K.BUILT] = 1

    def fine_grid(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Output grid, refined to about one Taylor substep in Taylor mode.

        Returns ``(fine_t, out_idx)`` with ``fine_t[out_idx] == times``. The
        refinement is capped at ``PATH_BYTES`` of stored states.
        """
        times = self.times
        if self.stab[m, K.MODE] == K.MODE_EIGEN or self.hnorms[m] == 0.0 or times[-1] <= 0:
            return times, np.arange(times.size, dtype=np.int64)
        d = int(self.stab[m, K.DIM])
        step = max(K.TAYLOR_THETA / self.hnorms[m], times[-1] * 16.0 * d / PATH_BYTES)
        fine_t = np.union1d(times, np.arange(0.0, times[-1], step))
        return fine_t, np.searchsorted(fine_t, times).astype(np.int64)

    def initial_path(self, m0: int, psi0: np.ndarray, flags: np.ndarray, ncomp: int):
        """The shared no-jump path from the initial state (computed once, cached)."""
        key = (m0, tuple(flags.tolist()))
        with self._lock:
            if key not in self._paths:
                stab, _, ptab, hnorms, cpx, ints, reals, _ = self.snapshot()
                fine_t, out_idx = self.fine_grid(m0)
                nt = self.times.size
                path_cur = np.zeros((fine_t.size, stab[m0, K.DIM]), dtype=np.complex128)
                path_norm = np.zeros(fine_t.size)
                path_decay = np.zeros(fine_t.size)
                path_obs = np.zeros((nt, ncomp))
                use_phase = self.dt > 0 and fine_t.size == nt
                K.initial_path(stab, cpx, ints, reals, hnorms, ptab, m0, psi0, fine_t,
                               out_idx, use_phase, self.N, flags, len(self.channels),
                               path_cur, path_norm,
                               path_decay, path_obs)
                self._paths[key] = (fine_t, out_idx, path_cur, path_norm, path_decay,
                                    path_obs)
            return self._paths[key]

    def snapshot(self):
        """``(stab, jtab, ptab, hnorms, cpx, ints, reals, maxdim)`` for one kernel call."""
        with self._lock:
            if self._snap is None:
                def cat(chunks, dtype):
                    return np.concatenate(chunks) if chunks else np.zeros(1, dtype=dtype)
                self._snap = (self.stab.copy(), self.jtab.copy(), self.ptab.copy(),
                              self.hnorms.copy(),
                              cat(self._cpx, np.complex128), cat(self._ints, np.int64),
                              cat(self._reals, np.float64), self.maxdim)
            return self._snap

    @property
    def maxdim(self) -> int:
        return int(max(self.stab[:, K.DIM].max(), 1))


def _hermitian_range(A) -> tuple[float, float]:
    """Smallest and largest eigenvalue of the sparse Hermitian ``A`` (padded)."""
    d = A.shape[0]
    if d <= 300:
        w = np.linalg.eigvalsh(A.toarray())
        lo, hi = float(w[0]), float(w[-1])
    else:
        from scipy.sparse.linalg import eigsh

        M = A.real if not np.any(A.imag.data) else A
        v0 = np.ones(d) / np.sqrt(d)
        # loose Lanczos tolerance, covered by the padding (and a slightly too
        # small range only costs a few terms: convergence is checked a posteriori)
        # both ends in one Lanczos run (half the cost of two)
        w = eigsh(M, k=2, which="BE", tol=1e-4, v0=v0, return_eigenvectors=False)
        lo, hi = float(np.min(w)), float(np.max(w))
    pad = 1e-4 * max(hi - lo, 1.0)
    return lo - pad, hi + pad


def cheb_params(H) -> np.ndarray:
    """Chebyshev parameters of the sparse ``H_eff`` of one sector (``kernels.CHEB_*``).

    The numerical range of ``H = A - i B`` (``A``, ``B`` Hermitian, ``B >= 0``
    the decay part) lies in the rectangle ``[a0, a1] x -i [b0, b1]``; its
    centre is ``c``, the focal half-length ``rho`` of the ellipse is chosen
    with the step length ``h`` to minimise the estimated products per unit
    time, ``(K + 1) / h``, where ``K`` is the first term with
    ``|J_K(rho h)| R^K <= CHEB_TOL`` (``R`` the ellipse through the rectangle's
    corners), subject to ``K <= kcap`` and ``(b1 - b0) h / 2 <= CHEB_BH``.
    The kernel checks convergence a posteriori on the actual vectors.
    """
    from scipy.special import jv

    d = H.shape[0]
    Hh = (0.5 * (H + H.conj().T)).tocsr()
    Bd = (0.5j * (H - H.conj().T)).tocsr()
    a0, a1 = _hermitian_range(Hh)
    # Gershgorin bounds of the decay part (exact when it is diagonal)
    diag = Bd.diagonal().real
    off = np.asarray(abs(Bd - sp.diags(Bd.diagonal())).sum(axis=1)).ravel()
    b0 = float(np.min(diag - off)) if d else 0.0
    b1 = float(np.max(diag + off)) if d else 0.0
    cr, ci = 0.5 * (a0 + a1), -0.5 * (b0 + b1)
    ar, br = max(0.5 * (a1 - a0), 1e-12), 0.5 * (b1 - b0)
    kcap = int(np.clip(CHEB_BYTES // (16 * max(d, 1)) - 1, CHEB_KMIN, CHEB_KMAX))
    hcap = CHEB_BH / br if br > 0 else np.inf
    kk = np.arange(kcap + 2)
    best = (np.inf, ar, 1.0 / ar)
    for s in (1.0, 1.02, 1.05, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0, 2.5):
        rho = s * ar
        z = complex(ar, br) / rho
        R = abs(z + np.sqrt(z - 1) * np.sqrt(z + 1))
        R = max(R, 1.0)
        for x in np.linspace(2.0, kcap, 60):
            h = x / rho
            if h > hcap:
                break
            tail = np.abs(jv(kk, x)) * R ** kk
            ok = (tail <= K.CHEB_TOL) & (kk > x)
            both = ok[1:] & ok[:-1]
            if not both.any():
                continue
            Kn = int(np.argmax(both)) + 1
            cost = (Kn + 1) / h
            if cost < best[0]:
                best = (cost, rho, h)
    _, rho, h = best
    par = np.zeros(K.CHEB_NPAR)
    par[[K.CHEB_CR, K.CHEB_CI, K.CHEB_RHO, K.CHEB_H, K.CHEB_KCAP]] = cr, ci, rho, h, kcap
    return par


# --------------------------------------------------------------------------- components
def _layout(N: int, names: tuple[str, ...], npair: int = 0, nch: int = 0):
    """Kernel flags and column slices of each observable in the kernel rows
    (see :func:`thermospin_mc.observables.kernel_layout`)."""
    return OBS.kernel_layout(N, names, npair, nch)


# --------------------------------------------------------------------------- statistics
class Accumulator:
    """Per-(time, component) count, mean and sum of squared deviations.

    Merging is Chan's pairwise formula; merging in a fixed order gives
    bit-identical results however the blocks were computed.
    """

    def __init__(self, nt: int, ncomp: int):
        self.cnt = np.zeros(nt, dtype=np.int64)
        self.mean = np.zeros((nt, ncomp))
        self.m2 = np.zeros((nt, ncomp))

    def merge(self, cnt, mean, m2) -> None:
        na = self.cnt[:, None].astype(float)
        nb = cnt[:, None].astype(float)
        n = na + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mean - self.mean
            fb = np.where(n > 0, nb / n, 0.0)
            self.mean = self.mean + delta * fb
            self.m2 = self.m2 + m2 + delta * delta * na * fb
        self.cnt = self.cnt + cnt

    def sem(self) -> np.ndarray:
        n = self.cnt[:, None].astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(n > 1, self.m2 / np.maximum(n - 1, 1), np.nan)
            return np.sqrt(var / n)

    def state(self) -> dict:
        return {"cnt": self.cnt.copy(), "mean": self.mean.copy(), "m2": self.m2.copy()}


# --------------------------------------------------------------------------- worker side
_PACKS: dict = {}
_PACKS_LOCK = threading.Lock()


def _get_pack(model: ChainModel, times: np.ndarray, dense_max: int, pairs=None) -> SectorPack:
    pairs = np.zeros((0, 2), dtype=np.int64) if pairs is None else np.asarray(
        pairs, dtype=np.int64).reshape(-1, 2)
    key = (model.fingerprint(), times.tobytes(), dense_max, pairs.tobytes())
    with _PACKS_LOCK:
        pack = _PACKS.get(key)
        if pack is None:
            if len(_PACKS) >= 4:
                _PACKS.clear()
            pack = SectorPack(model, times, dense_max, pairs)
            _PACKS[key] = pack
        return pack


def _initial_draw(model: ChainModel, space: SectorSpace):
    """Kernel form of the initial state: ``(kind, m0, psi0, init_p, init_cfg, binom)``."""
    from .model import ProductMixture

    N = model.N
    binom = np.zeros((1, 1), dtype=np.int64)
    init_cfg = np.zeros((1, 2), dtype=np.int64)
    if not model.is_mixed:
        m0, psi0 = space.initial_state()
        return K.INIT_PURE, m0, psi0, np.zeros(1), init_cfg, binom
    m0 = model.initial_sectors[0]
    psi0 = np.zeros(1, dtype=complex)
    if isinstance(model.initial, ProductMixture):
        binom = np.array([[comb(n, k) for k in range(N + 2)] for n in range(N + 1)],
                         dtype=np.int64)
        return K.INIT_PRODUCT, m0, psi0, np.asarray(model.initial.p, dtype=float), \
            init_cfg, binom
    rows, w = [], []
    for m, wm in space.initial_mixture():
        for idx in np.flatnonzero(wm > 0):
            rows.append((m, idx))
            w.append(wm[idx])
    cum = np.cumsum(w)
    cum /= cum[-1]
    cum[-1] = 1.0
    return K.INIT_TABLE, m0, psi0, cum, np.array(rows, dtype=np.int64), binom


def run_batch(model: ChainModel, times: np.ndarray, key: np.ndarray, block_ids, ntraj: int,
              names: tuple, record_jumps: bool, keep: bool, max_magnons: int,
              dense_max: int = DENSE_MAX, pairs=None, pack: SectorPack | None = None):
    """Run whole statistics blocks; returns one entry per block (in order)."""
    if pack is None:
        pack = _get_pack(model, times, dense_max, pairs)
    space = pack.space
    init_kind, m0, psi0, init_p, init_cfg, binom = _initial_draw(model, space)
    pack.ensure(m0)
    N = model.N
    flags, _, ncomp = _layout(N, names, len(pack.pairs), len(model.channels))
    nt = times.size
    if init_kind != K.INIT_PURE:
        # each trajectory starts from its own configuration: no shared path
        no_path = (np.zeros(0), np.arange(nt, dtype=np.int64),
                   np.zeros((0, 1), dtype=np.complex128), np.zeros(0), np.zeros(0),
                   np.zeros((nt, ncomp)))
    out = []
    jump_cap = 4096
    for b in block_ids:
        t0 = b * BLOCK
        nb = min(BLOCK, ntraj - t0)
        while True:
            stab, jtab, ptab, hnorms, cpx, ints, reals, maxdim = pack.snapshot()
            if init_kind == K.INIT_PURE:
                fine_t, out_idx, path_cur, path_norm, path_decay, path_obs = \
                    pack.initial_path(m0, psi0, flags, ncomp)
            else:
                fine_t, out_idx, path_cur, path_norm, path_decay, path_obs = no_path
            cnt = np.zeros(nt, dtype=np.int64)
            mean = np.zeros((nt, ncomp))
            m2 = np.zeros((nt, ncomp))
            jbuf = np.zeros((jump_cap if record_jumps else 1, 4))
            kept = np.zeros((nb if keep else 1, nt, ncomp))
            status, nj, ntrunc, need = K.run_block(
                stab, jtab, ptab, cpx, ints, reals, hnorms, pack.ch_rate,
                pack.ch_dm, key, t0, nb, m0, psi0, init_kind, init_p, init_cfg, binom,
                times, pack.dt > 0, N, flags,
                ncomp, max_magnons, fine_t, out_idx, path_cur, path_norm, path_decay, path_obs,
                cnt, mean, m2, jbuf,
                record_jumps, keep, kept, maxdim)
            if status == K.STATUS_NEED_SECTOR:
                pack.ensure(int(need))
                continue
            if status == K.STATUS_JUMP_BUFFER_FULL:
                jump_cap *= 4
                continue
            break
        out.append({"cnt": cnt, "mean": mean, "m2": m2, "ntrunc": int(ntrunc),
                    "jumps": jbuf[:nj].copy() if record_jumps else None,
                    "kept": kept if keep else None})
    with pack._lock:
        modes = dict(pack.modes)
    return out, modes


# --------------------------------------------------------------------------- driver
def _root_key(seed) -> tuple[np.ndarray, list]:
    ss = np.random.SeedSequence(seed)
    return ss.generate_state(4, dtype=np.uint64), ss.entropy


def _check_names(observables, pairs=None, N: int = 2) -> tuple[str, ...]:
    """Observables a trajectory run can estimate (``norm`` is 1 on every trajectory)."""
    if observables is None and pairs is None:
        return OBS.DEFAULT
    allowed = OBS.TRAJECTORY
    if observables is not None:
        obs = (observables,) if isinstance(observables, str) else tuple(observables)
        for o in obs:
            if o not in allowed and o != "pm":
                raise ValueError(f"observable must be one of {allowed} (or 'pm') for "
                                 f"trajectories, got {o!r}")
        if not obs:
            raise ValueError("observables must name at least one observable")
        if pairs is None:
            # keep the caller's order (the paper's tables and checkpoints rely on it)
            out = []
            for o in obs:
                out.extend(("pm_re", "pm_im") if o == "pm" else (o,))
            OBS.resolve(out, None, N, allowed=allowed)
            return tuple(out)
    return OBS.resolve(observables, pairs, N, allowed=allowed)[0]


#: ``progress=None`` turns progress reports on for runs of at least this many
#: trajectories (``ntraj``; for a ``target_sem`` run, its minimum ``ntraj``).
PROGRESS_MIN_NTRAJ = 2000


def _want_progress(progress, ntraj) -> bool:
    """Whether a run reports progress on stderr.

    ``progress=True``/``False`` decide; ``None`` (the default) means on for
    runs of at least ``PROGRESS_MIN_NTRAJ`` trajectories, whether or not
    stderr is a terminal (a bar on a terminal, one-line records otherwise,
    see ``scaleout.PROGRESS_EVERY``).
    """
    if progress is not None:
        return bool(progress)
    return ntraj >= PROGRESS_MIN_NTRAJ


_WARM = {"done": False}
_WARM_LOCK = threading.Lock()


def warm_kernels() -> float:
    """Compile (or load from numba's cache) the trajectory kernels; returns seconds.

    Runs one trajectory of a 3-site pump-and-loss chain, which calls every
    kernel entry point with the argument types of a real run, so that the
    compile time is paid (and measured) here rather than inside a run's clock.
    Returns 0 once the kernels are loaded in this process.
    """
    with _WARM_LOCK:
        if _WARM["done"]:
            return 0.0
        from .model import BondCouplings

        t0 = time.perf_counter()
        model = ChainModel(3, profile=BondCouplings((1.0, 1.25)), gamma=1.0, gamma_pump=0.5)
        times = np.linspace(0.0, 1.0, 3)
        key = np.random.SeedSequence(0).generate_state(4, dtype=np.uint64)
        pack = SectorPack(model, times)  # not cached: keeps _PACKS for real runs
        run_batch(model, times, key, [0], 1, ("j", "j_bond", "m", "n"), True, True, 3,
                  pack=pack)
        _WARM["done"] = True
        return time.perf_counter() - t0


def mcsolve(model: ChainModel, times, ntraj: int = 1000, seed=None, n_jobs: int = 1, *,
            batch_size: int | None = None, observables=None, record_jumps: bool = False,
            keep_trajectories: bool = False, max_magnons: int | None = None,
            progress: bool | None = None, dense_max: int = DENSE_MAX,
            backend: str | None = None, client=None, scheduler: str | None = None,
            checkpoint=None, resume: bool | None = None, checkpoint_every: float = 60.0,
            target_sem: float | None = None, target_observables=None, relative: bool = False,
            rel_floor: float = 0.25, max_ntraj: int | None = None,
            time_limit: float | None = None, pairs=None) -> Result:
    """Quantum-jump (Monte Carlo wave function) unravelling of the Lindblad equation.

    Trajectory ``k`` always uses the random stream of ``(seed, k)`` and
    statistics are merged in fixed blocks of ``BLOCK`` trajectories in index
    order: the result is bit-identical for any ``n_jobs``, ``batch_size`` and
    backend, and a resumed run equals an uninterrupted one.

    Parameters
    ----------
    model : ChainModel
        The initial pure state is prepared at ``t = 0``.
    times : array_like
        Non-decreasing output times ``>= 0``.
    ntraj : int
        Number of trajectories (``>= 1``). With ``target_sem`` it is the
        minimum number run before the target is first tested.
    seed : int, sequence of int or None
        Root seed (``numpy.random.SeedSequence`` entropy); ``None`` draws fresh
        entropy, which is stored in ``result.metadata["seed"]`` (or, when an
        existing checkpoint is resumed, continues the checkpoint's seed).
    n_jobs : int
        Parallel workers (threads of this process by default, or loky worker
        processes); ``-1`` uses every core, ``1`` runs here.
        With ``backend="dask"`` and neither ``client`` nor ``scheduler``, the
        number of workers of a temporary local Dask cluster.
    batch_size : int, optional
        Trajectories per parallel task (rounded up to a multiple of ``BLOCK``).
        Does not change the result.
    observables : sequence of str, optional
        Subset of ``j, j_bond, flow, m, n, nn, pm_re, pm_im, count`` (``pm`` is
        both parts of ``<s+_i s-_k>``); default ``j, j_bond, flow, m, n``, plus
        ``nn, pm_re, pm_im`` when ``pairs`` are given. ``count`` is the mean
        number of jumps of each channel up to ``t`` (table observables
        ``count:<channel name>``). See :mod:`thermospin_mc.observables`.
    record_jumps : bool
        Keep every jump: ``result.jumps`` has ``traj, t, channel, site, m_before``.
    keep_trajectories : bool
        Keep each trajectory's rows in ``result.trajectories`` (memory grows as ntraj).
    max_magnons : int, optional
        Cap on the magnon number. A trajectory whose next jump would exceed it
        stops contributing from that time on; the discarded fraction is reported
        in ``metadata["truncated_fraction"]`` and the ``ntraj`` column.
    progress : bool, optional
        Progress reports on stderr: a bar when stderr is a terminal, else a
        one-line record at least every ``scaleout.PROGRESS_EVERY`` seconds
        (10) and one at the end: trajectories done, total (or, with
        ``target_sem``, the achieved and target sem), traj/s, elapsed
        seconds and ETA. Default (``None``): on for runs of at least 2000
        trajectories (``ntraj``).
    dense_max : int
        Largest sector diagonalised densely; larger sectors use the sparse
        Taylor propagator.
    backend : {"serial", "threads", "loky", "dask"}, optional
        Where batches run: this process, ``n_jobs`` threads of this process
        (the kernels release the GIL; no start-up cost), local loky worker
        processes, or a Dask distributed cluster. Default: ``"serial"`` for
        ``n_jobs=1``, ``"threads"`` otherwise, ``"dask"`` when ``client`` or
        ``scheduler`` is given.
    client : dask.distributed.Client, optional
        Run on this Dask client's cluster (it is left open).
    scheduler : str, optional
        Address of a running Dask scheduler, e.g. ``"tcp://10.0.0.1:8786"``.
        Without ``client``/``scheduler``, ``backend="dask"`` starts a local
        cluster of ``n_jobs`` single-threaded worker processes for this run.
        A lost worker only costs a re-run of its batches.
    checkpoint : str or path, optional
        Checkpoint file (``.npz``). Merged statistics and finished blocks are
        written to it atomically every ``checkpoint_every`` seconds, at the end,
        and when the run is interrupted (Ctrl-C or an error). If the file
        exists, the run resumes from it (see ``resume``); a checkpoint of a
        different model, seed, output times, observables, run options or code
        version is refused with a ``ValueError`` and left untouched. A
        finished checkpoint extends to any larger ``ntraj`` (a short last
        block is run again in full), bit-identical to a plain run of that
        ``ntraj``. Resuming is announced on stderr at the start. The file
        ``<checkpoint>.lock`` guards against two runs on one checkpoint; it
        is removed on every exit, and one left by a killed process is taken
        over (with a message).
    resume : bool, optional
        ``None`` (default): resume if the checkpoint exists, else start afresh.
        ``True``: the checkpoint must exist. ``False``: refuse an existing file.
    checkpoint_every : float
        Seconds between checkpoint writes (``>= 0``; ``0`` writes after every batch).
    target_sem : float, optional
        Accuracy target: keep adding blocks (at least ``ntraj`` trajectories)
        until the largest standard error of ``target_observables`` over all
        rows with ``t > 0`` is ``<= target_sem`` (absolute), or every row's
        standard error is ``<= target_sem * |mean|`` (``relative=True``; rows
        below the ``rel_floor`` are left out), or ``max_ntraj`` /
        ``time_limit`` is hit. Standard errors are the effective ones of
        :func:`thermospin_mc.results.effective_sem` (never below the
        one-event floor ``delta / n``, so rows where every trajectory agrees
        do not count as converged after a handful of trajectories). The rule is tested after every
        block, so the result equals a plain run with the final ``ntraj``.
        ``metadata["stopped_by"]`` says what stopped the run
        (``"target_sem"``, ``"max_ntraj"``, ``"time_limit"``, or ``"ntraj"``
        for a plain run that completed).
    target_observables : sequence of str, optional
        Observables the target applies to (default: every computed one except
        ``flow``).
    relative : bool
        Whether ``target_sem`` is relative to ``|mean|``.
    rel_floor : float
        With ``relative=True``: rows whose ``|mean|`` is below ``rel_floor``
        times the largest ``|mean|`` of the same observable (over its sites and
        the times ``t > 0``) are ignored by the target, since a relative error
        of a value crossing zero never converges. In ``[0, 1)``; default 0.25.
    max_ntraj : int, optional
        Upper limit of trajectories of a ``target_sem`` run (``>= ntraj``;
        default ``10**8``).
    time_limit : float, optional
        Wall-clock seconds (``> 0``) after which this call stops at the last
        finished block (the checkpoint, if any, lets a later call continue).
    pairs : sequence of (i, k), optional
        1-based site pairs of the two-point observables ``nn`` and ``pm``
        (table rows carry ``site = i``, ``site2 = k``).

    Returns
    -------
    Result
        ``expect`` rows carry the mean, its standard error over trajectories
        and the number of contributing trajectories. Timing metadata:
        ``compile_s`` (kernel compile or numba-cache load in this process,
        measured on a tiny problem before the clock starts; 0 once loaded;
        loky and Dask workers load theirs inside the run), ``run_s`` (this
        call's wall time), ``elapsed_s`` (run time summed over the calls
        that built a checkpoint, compile excluded) and ``traj_per_s``
        (trajectories this call ran / ``run_s``).

    Raises
    ------
    ValueError
        Bad arguments (the message names the field, its value and the allowed
        range), a corrupted or mismatched checkpoint.
    KeyboardInterrupt
        On Ctrl-C, after the current batch finished and the checkpoint was written.
    """
    from . import scaleout

    if not isinstance(model, ChainModel):
        raise ValueError(f"model must be a ChainModel, got {type(model).__name__}")
    times = v.times(times)
    ntraj = v.integer("ntraj", ntraj, lo=1)
    n_jobs = v.n_jobs(n_jobs)
    N = model.N
    names = _check_names(observables, pairs, N)
    pairs = OBS.check_pairs(pairs, N) if any(o in OBS.PAIR_NAMES for o in names) else None
    max_magnons = N if max_magnons is None else v.integer("max_magnons", max_magnons,
                                                          lo=model.initial_sector, hi=N)
    dense_max = v.integer("dense_max", dense_max, lo=1)
    if batch_size is not None:
        batch_size = v.integer("batch_size", batch_size, lo=1)
    opts = scaleout._options(names, ntraj, n_jobs, backend, client, scheduler, checkpoint,
                             resume, checkpoint_every, target_sem, target_observables,
                             relative, max_ntraj, time_limit, rel_floor)
    key, entropy = _root_key(scaleout.resolve_seed(seed, opts["checkpoint"]))
    return scaleout.execute(model, times, names=names, key=key, entropy=entropy, ntraj=ntraj,
                            n_jobs=n_jobs, batch_size=batch_size, record_jumps=record_jumps,
                            keep=keep_trajectories, max_magnons=max_magnons,
                            dense_max=dense_max, progress=progress, opts=opts, pairs=pairs)


def _assemble(model, times, names, cols, acc, jumps, kept, ntrunc, ntraj, entropy, modes,
              elapsed, n_jobs, record_jumps, extra: dict | None = None,
              pairs=None) -> Result:
    from . import __version__

    sem = acc.sem()
    a = np.asarray(model.couplings)
    means, sems = {}, {}
    for name in names:
        src = "j_bond" if name == "flow" else name
        mu, se = acc.mean[:, cols[src]], sem[:, cols[src]]
        if name == "flow":
            mu, se = mu * (a / 2), se * (a / 2)
        mu = np.where(acc.cnt[:, None] > 0, mu, np.nan)  # no trajectory left (max_magnons)
        means[name], sems[name] = mu, se
    df = expect_table(times, model.N, means, sems, ntraj=ntraj, pairs=pairs,
                      channels=model.channels)
    # per-row count of contributing trajectories (differs only under max_magnons)
    # (expect_table lays rows out as one block of all times per component, so the
    # counts repeat by position; times may repeat, so never match them by label)
    if np.any(acc.cnt != ntraj):
        df["ntraj"] = np.tile(acc.cnt, len(df) // times.size).astype(np.int64)
    meta = {
        "solver": "mcsolve", "model": model.to_dict(), "alpha_method": model.alpha_method,
        "seed": entropy if isinstance(entropy, int) else list(entropy),
        "ntraj": ntraj, "version": __version__, "block": BLOCK,
        "sector_modes": {str(k): val for k, val in sorted(modes.items())},
        "truncated_fraction": ntrunc / ntraj, "elapsed_s": elapsed, "n_jobs": n_jobs,
        "t_end": float(times[-1]), "n_times": int(times.size),
    }
    if pairs is not None and len(pairs):
        meta["pairs"] = np.asarray(pairs).tolist()
    meta.update(extra or {})
    jt = None
    if record_jumps:
        arr = np.concatenate(jumps) if jumps else np.zeros((0, 4))
        chans = model.channels
        names_ = np.array([c.name for c in chans] or ["none"])
        sites_ = np.array([c.site + 1 for c in chans] or [0])
        ch_idx = arr[:, 2].astype(np.int64)
        jt = pd.DataFrame({
            "traj": arr[:, 0].astype(np.int64), "t": arr[:, 1],
            "channel": names_[ch_idx] if arr.size else np.array([], dtype=str),
            "site": sites_[ch_idx] if arr.size else np.array([], dtype=np.int64),
            "m_before": arr[:, 3].astype(np.int64),
        })
        jt["channel"] = jt["channel"].astype(str)
    traj = None
    if kept:
        traj = {"rows": np.concatenate(kept)[:ntraj], "columns": {k: (s.start, s.stop)
                                                                 for k, s in cols.items()}}
    return Result(df, meta, jumps=jt, trajectories=traj)
