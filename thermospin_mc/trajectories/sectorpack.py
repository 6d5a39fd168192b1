"""Sector packs: the flat arrays of the magnon sectors a run visits, built on demand.

A :class:`SectorPack` holds the flat arrays of the magnon sectors a run has
visited (built on demand, thread-safe), in the layout of
:mod:`thermospin_mc.trajectories.kernels` (``SectorTables``): each sector's
propagator (eigen, Chebyshev or Taylor mode), its jump maps, two-point pair
maps and user operators (offset 0), packed per sector as coordinate lists
(:func:`operator_entries`). :func:`run_spec` builds the kernels' ``RunSpec``
of a run on a pack.
"""

from __future__ import annotations

import threading

import numpy as np
import scipy.sparse as sp

from ..core.sector_build import off_diagonal, shifted_csr
from ..core.sectors import SectorSpace
from ..physics.model import ChainModel
from ..physics.schedule import dynamics_key, is_schedule
from . import kernels as K
from .chebyshev_params import cheb_params, hermitian_range
from .layouts import StateLayout
from .operator_tables import operator_digest, operator_entries
from .pools import Pool

__all__ = ["SectorPack", "run_spec", "operator_entries", "operator_digest", "is_doob",
           "DENSE_MAX", "LARGE_MODES", "COND_LIMIT", "PATH_BYTES", "DOOB_DENSE_MAX"]

#: Sectors up to this dimension are diagonalised (eigen mode); larger ones use
#: the sparse Chebyshev propagator, which is cheaper beyond about 100 states
#: (cost ~ nnz * terms with lazily computed terms, instead of dim^2 per
#: evaluation) and needs no dense storage. Measured on the paper's pump + loss
#: chain (1 core, medians of 5-9 interleaved runs): N = 13 is 14% and N = 11
#: 6% faster with their 286- and 165-state sectors in Chebyshev mode than in
#: eigen mode; N = 9 is 1-6% faster with its 126-state sectors in Chebyshev
#: mode (three sets of six alternating runs), while its 84-state sectors are
#: faster in eigen mode (dense_max = 60 is 8-14% slower than 100).
DENSE_MAX = 100
#: Propagators of the sectors that are not diagonalised: Chebyshev steps with
#: dense output (default) or the plain Taylor substeps.
LARGE_MODES = ("chebyshev", "taylor")
#: Eigenvector condition number above which a sector falls back to Taylor mode.
COND_LIMIT = 1e8
#: A Chebyshev sector's off-diagonal part is also stored packed (4 bytes per
#: entry instead of 16, ``kernels._entry_impl``) from this size of its
#: CSR entries on. Measured per nonzero of the term loop (1 core, 30 terms):
#: N = 21, m = 7 / 8 / 9 (16.6-47 MiB): 1.46 / 1.53 / 1.45 ns unpacked, 0.90 /
#: 1.16 / 1.08 ns packed; matrices that stay in the 32 MiB L3 are slower packed
#: (N = 17, m = 5: 0.80 against 0.92 ns; N = 19, m = 7, 6.8 MiB: 0.78 against
#: 0.84 ns), since the lookup of the value costs more than the loads it spares.
PACK_MIN_BYTES = 8 * 2**20
#: Memory cap of the stored shared no-jump path (Taylor mode), per worker.
PATH_BYTES = 128 * 2**20

#: The Doob process's sectors are diagonalised (eigen mode) up to this dimension
#: (its generator is dense: the Chebyshev mode, which needs a real sparse
#: off-diagonal part, does not apply; above it the Taylor mode runs on the dense
#: matrix).
DOOB_DENSE_MAX = 2000


class SectorPack:
    """Flat arrays of the sectors a run has visited so far (grown on demand).

    Thread-safe: sectors are built under a lock, and kernels run on
    :meth:`tables`, consistent snapshots (copies of the sector rows, views of
    the append-only pools) that a sector built by another thread meanwhile
    cannot change under them (the kernel then asks for the sector, and the
    caller takes new tables).

    ``model`` may be a :class:`~thermospin_mc.physics.schedule.Schedule`: the stages
    it runs (:meth:`Schedule.dynamic_stages` up to the last output time) share
    the pools; each distinct stage model ``u`` owns the table rows ``u (N + 1)
    + m`` (model 0 is stage 0's, so a sector ``m`` of stage 0 is row ``m``),
    its rates are row ``u`` of ``ch_rate`` over the schedule's channel names
    (0 where the model lacks the channel, whose jump maps then stay empty).
    """

    def __init__(self, model: ChainModel, times: np.ndarray, dense_max: int = DENSE_MAX,
                 pairs=None, large: str = "chebyshev", operators=()):
        if large not in LARGE_MODES:
            raise ValueError(f"large must be one of {LARGE_MODES}, got {large!r}")
        self.large = large
        #: user operators (offset 0), evaluated in the kernels from per-sector entry lists
        self.operators = tuple(operators)
        self.model = model
        #: two-point pairs, 0-based sites
        self.pairs = (np.zeros((0, 2), dtype=np.int64) if pairs is None
                      else np.asarray(pairs, dtype=np.int64).reshape(-1, 2) - 1)
        self.N = model.N
        self.channels = model.channels
        self._stages(model, times)
        self.space = self.spaces[0]
        nch = len(self.channels)
        nrow = len(self.models) * (self.N + 1)
        self.dense_max = dense_max
        self.stab = np.zeros((nrow, K.NCOL), dtype=np.int64)
        self.jtab = np.zeros((max(nch, 1), nrow, K.NJCOL), dtype=np.int64)
        self.jtab[:, :, K.JT_AMP] = -1
        self.jtab[:, :, K.JT_DENSE] = -1
        self.ptab = np.zeros((max(len(self.pairs), 1), nrow, 4), dtype=np.int64)
        self.otab = np.zeros((max(len(self.operators), 1), nrow, K.NOPCOL),
                             dtype=np.int64)
        for o, op in enumerate(self.operators):
            self.otab[o, :, K.OP_HERM] = bool(op.hermitian)
        self.hnorms = np.zeros(nrow)
        self._pools = {"c": Pool(np.complex128), "i": Pool(np.int64), "r": Pool(np.float64)}
        self._snap = None
        self._lock = threading.RLock()
        d = np.diff(times)
        self.dt = float(d[0]) if (times.size > 1 and d[0] > 0 and
                                  np.allclose(d, d[0], rtol=0, atol=1e-13 * max(1, times[-1])))\
            else 0.0
        self.ch_rate = np.array([[own.get(c.name, 0.0) for c in self.channels] or [0.0]
                                 for own in ({c.name: c.rate for c in mod.channels}
                                             for mod in self.models)])
        self.ch_dm = np.array([c.dm for c in self.channels] or [0], dtype=np.int64)
        self.modes = {}
        self.times = times
        self._paths = {}
        self._mindim = 1
        #: (u, r) -> Hermitian range of sector r = min(m, N - m) and its shift (``_cheb_params``)
        self._hranges = {}

    def _stages(self, model, times: np.ndarray) -> None:
        """``models`` (distinct stage models, stage 0's first), ``spaces``, and per
        stage ``stage_t``, ``stage_u`` (its model) and ``stage_base`` (its row 0)."""
        self.doob = is_doob(model)
        if is_schedule(model):
            stages = model.dynamic_stages(float(times[-1]) if times.size else None)
        else:
            stages = ((0.0, model),)
        self.models, keys, self.stage_u = [], [], []
        for _, mod in stages:
            key = dynamics_key(mod)
            if key not in keys:
                keys.append(key)
                self.models.append(mod)
            self.stage_u.append(keys.index(key))
        self.stage_t = np.array([t for t, _ in stages], dtype=float)
        self.stage_u = np.array(self.stage_u, dtype=np.int64)
        self.stage_base = self.stage_u * (self.N + 1)
        self.spaces = [SectorSpace(mod.model if self.doob else mod) for mod in self.models]
        # outputs of stage s: [kend[s - 1], kend[s]); a trajectory without a jump
        # in stage s probes its end from L[s] (its last output, else its start)
        nt, S = times.size, self.stage_t.size
        self.stage_kend = np.append(np.searchsorted(times, self.stage_t[1:], side="right"),
                                    nt).astype(np.int64)
        first = np.concatenate([[0], self.stage_kend[:-1]])
        self.stage_L = np.where(self.stage_kend > first, times[np.maximum(self.stage_kend - 1, 0)]
                                if nt else 0.0, self.stage_t)
        self.bph = np.full((S, self.N + 1, 2), -1, dtype=np.int64)

    def _add(self, kind: str, arr) -> int:
        """Append ``arr`` to pool ``kind`` (``"c"``, ``"i"``, ``"r"``); returns its offset."""
        return self._pools[kind].add(arr)

    def ensure(self, m: int) -> None:
        """Build sector ``m`` (eigen or Taylor mode) and its outgoing jump maps."""
        with self._lock:
            if not self.stab[m, K.BUILT]:
                self._build(m)
                self._snap = None

    def _build(self, row_m: int) -> None:
        u, m = divmod(row_m, self.N + 1)
        space, own = self.spaces[u], {c.name: c for c in self.models[u].channels}
        sec = space.sector(m)
        d = sec.dim
        row = self.stab[row_m]
        row[K.DIM] = d
        row[K.OFF_GAMMA] = -1
        if self.doob:  # the Doob process: dense generator, decay and jumps (docs/model.md 15)
            row[K.OFF_GAMMA] = self._add("r", _split(self.model.sector_gamma(m)))
        H = self._heff(u, m)
        mode = (K.MODE_EIGEN if self._build_eigen(row, H, d, u, m)
                else self._build_sparse(row, row_m, H))
        row[K.MODE] = mode
        self.modes[m if len(self.models) == 1 else
                   f"{m}@t={self.stage_t[np.flatnonzero(self.stage_u == u)[0]]:g}"] = {
            K.MODE_EIGEN: "eigen", K.MODE_TAYLOR: "taylor", K.MODE_CHEB: "chebyshev"}[mode]
        row[K.OFF_SITES] = self._add("i", sec.sites)
        row[K.OFF_HOP] = self._add("i", np.concatenate([sec.hop_bond, sec.hop_to,
                                                       sec.hop_from]))
        row[K.NHOP] = sec.hop_bond.size
        row[K.OFF_DECAY] = self._add("r", sec.decay)
        for k, ch in enumerate(self.channels):
            ch = own.get(ch.name)  # None: no such channel in this stage (rate 0)
            if self.doob:
                M = self.model.jump_matrix(k, m)
                if M is not None:
                    self.jtab[k, row_m, K.JT_DENSE] = self._add("r", _split(M))
                    self.jtab[k, row_m, K.JT_COUNT] = M.shape[0]
                    # the product M psi fills a vector of the target's size
                    self._mindim = max(self._mindim, M.shape[0])
            elif ch is not None and 0 <= m + ch.dm <= self.N:
                src, dst = space.jump_map(ch, m)
                self.jtab[k, row_m, K.JT_MAP] = self._add("i", np.concatenate([src, dst]))
                self.jtab[k, row_m, K.JT_COUNT] = src.size
                if ch.kind == "dephasing":
                    self.jtab[k, row_m, K.JT_AMP] = self._add("r",
                                                              space.jump_amplitudes(ch, m))
        for p, (i, k) in enumerate(self.pairs):
            both, src, dst = space.pair_maps(int(i), int(k), m)
            self.ptab[p, row_m] = (self._add("i", both), both.size,
                                   self._add("i", np.concatenate([src, dst])), src.size)
        for o, op in enumerate(self.operators):
            A = op.sector_matrix(space, m)
            if A.shape != (d, d):
                raise ValueError(f"operator {op.name!r}: sector {m} matrix has shape {A.shape}, "
                                 f"expected ({d}, {d})")
            rows, cols, vals, nd = operator_entries(A, bool(op.hermitian))
            self.otab[o, row_m, K.OP_ROW] = self._add("i", rows)
            self.otab[o, row_m, K.OP_COL] = self._add("i", cols)
            self.otab[o, row_m, K.OP_VAL] = self._add("c", vals)
            self.otab[o, row_m, K.OP_ND] = nd
            self.otab[o, row_m, K.OP_NNZ] = rows.size
        row[K.BUILT] = 1

    def _build_eigen(self, row: np.ndarray, H, d: int, u: int, m: int) -> bool:
        """Eigen mode of sector ``m`` of model ``u`` (stab row ``row``) if it is small and
        well conditioned: stores ``V``, ``V^-1``, ``lam`` and the phases; returns whether."""
        if d <= (max(self.dense_max, DOOB_DENSE_MAX) if self.doob else self.dense_max):
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
                row[K.OFF_V] = self._add("r", _split(V))
                row[K.OFF_VINV] = self._add("r", _split(Vinv))
                row[K.OFF_LAM] = self._add("c", lam)
                row[K.OFF_PHASE] = self._add("c", np.exp(-1j * lam * self.dt))
                self._boundary_phases(u, m, lam)
                return True
        return False

    def _build_sparse(self, row: np.ndarray, row_m: int, H) -> int:
        """Chebyshev (or Taylor) mode of the sector of stab row ``row_m``: stores the
        shifted sparse ``H_eff`` (and the Chebyshev parameters); returns the mode."""
        mode = K.MODE_CHEB if self.large == "chebyshev" else K.MODE_TAYLOR
        Hc, shift = shifted_csr(H)  # shifted: a global phase, fewer Taylor substeps
        row[K.NNZ] = Hc.nnz
        row[[K.OFF_INDPTR, K.OFF_INDICES, K.OFF_DATA]] = -1
        self.hnorms[row_m] = float(np.abs(Hc).sum(axis=1).max()) if Hc.nnz else 0.0
        off = off_diagonal(Hc)
        if mode == K.MODE_CHEB and np.any(off.data.imag):
            mode = K.MODE_TAYLOR  # the Chebyshev kernel takes a real off-diagonal part
        if mode == K.MODE_TAYLOR:
            self._add_taylor(row, Hc)
        else:
            # a sector H_eff is symmetric (real symmetric h, diagonal decay part)
            par = self._cheb_params(row_m, Hc, shift)
            c, rho = complex(par[K.CHEB_CR], par[K.CHEB_CI]), par[K.CHEB_RHO]
            par[K.CHEB_OPTR] = self._add("i", off.indptr)
            par[K.CHEB_ODG] = self._add("c", (Hc.diagonal() - c) / rho)
            par[K.CHEB_PK], par[K.CHEB_VT] = self._add_packed(off, rho)
            # the kernel reads the packed copy or the plain one, not both
            par[[K.CHEB_OIDX, K.CHEB_OVAL]] = -1
            if par[K.CHEB_PK] < 0:
                par[K.CHEB_OIDX] = self._add("i", off.indices)
                par[K.CHEB_OVAL] = self._add("r", off.data.real / rho)
            row[K.OFF_CHEB] = self._add("r", par)
        return mode

    def _cheb_params(self, row_m: int, Hc, shift: float) -> np.ndarray:
        """Chebyshev parameters of the shifted ``H_eff`` ``Hc = H_eff - shift`` of a row.

        The range of the Hermitian part (a Lanczos run, most of the set-up of a
        large sector) is shared by sectors ``m`` and ``N - m`` of a stage model
        without site fields: the global spin flip maps one ``h`` onto the
        other (loss, pump and dephasing enter ``H_eff`` only through its
        anti-Hermitian part). It is always computed on the representative
        ``r = min(m, N - m)`` (built for it if the partner comes first), so that
        the parameters do not depend on the order in which sectors are built.
        """
        u, m = divmod(row_m, self.N + 1)
        if self.doob:
            return cheb_params(Hc)
        if np.any(self.models[u].site_fields):  # no flip symmetry: a range of its own
            return cheb_params(Hc, symmetric=True)
        r = min(m, self.N - m)
        if (u, r) not in self._hranges:
            Hr, sr = (Hc, shift) if r == m else shifted_csr(self._heff(u, r))
            self._hranges[(u, r)] = (*hermitian_range(Hr, symmetric=True), sr)
        lo, hi, sr = self._hranges[(u, r)]
        if r != m:  # the representative's range, moved to this sector's shift
            lo, hi = lo + sr - shift, hi + sr - shift
        return cheb_params(Hc, symmetric=True, hrange=(lo, hi))

    def _add_taylor(self, row: np.ndarray, Hc) -> None:
        """Store the shifted sparse ``H_eff`` ``Hc`` of a sector for the Taylor
        propagation (``kernels._taylor``): every Taylor-mode sector, and a
        Chebyshev-mode one only where the shared no-jump path needs it
        (:meth:`_ensure_taylor`; its ``H_eff`` is not kept otherwise)."""
        row[K.OFF_INDPTR] = self._add("i", Hc.indptr)
        row[K.OFF_INDICES] = self._add("i", Hc.indices)
        row[K.OFF_DATA] = self._add("c", Hc.data)

    def _ensure_taylor(self, row_m: int) -> None:
        """Add the sparse ``H_eff`` of a built Chebyshev-mode row for Taylor steps
        (the shared no-jump path's rows; call under the pack's lock)."""
        row = self.stab[row_m]
        if row[K.MODE] == K.MODE_CHEB and row[K.OFF_INDPTR] < 0:
            self._add_taylor(row, shifted_csr(self._heff(*divmod(row_m, self.N + 1)))[0])
            self._snap = None

    def _heff(self, u: int, m: int):
        """Sparse ``H_eff`` of sector ``m`` of stage model ``u`` (the Doob process:
        its dense generator, docs/model.md 15)."""
        if self.doob:
            return sp.csr_matrix(self.model.sector_heff(m))
        space = self.spaces[u]
        return space.sector(m).heff_sparse(space.a)

    def _add_packed(self, off, rho: float) -> tuple[int, int]:
        """Offsets (in ``ints``, ``reals``) of the packed copy of a Chebyshev
        off-diagonal part (``kernels._entry_impl``), or ``(-1, -1)``.

        Packed when its CSR entries take at least ``PACK_MIN_BYTES`` (the term
        loop is then bound by memory traffic), the dimension fits the column
        bits and it has at most ``PACK_MAX_VALUES`` distinct values (one per
        bond coupling in the chains of this package). The values are the very
        doubles of the CSR copy, so the terms are the same to the bit.
        """
        vals = off.data.real / rho
        if 16 * off.nnz < PACK_MIN_BYTES or off.shape[0] > K.PACK_MASK + 1:
            return -1, -1
        # the distinct values from a sample, checked on all (a full sort is slow)
        table = np.unique(vals[::max(1, vals.size // 4096)])
        index = np.minimum(np.searchsorted(table, vals), table.size - 1)
        if not np.array_equal(table[index], vals):
            table, index = np.unique(vals, return_inverse=True)
        if table.size > K.PACK_MAX_VALUES:
            return -1, -1
        pk = off.indices.astype(np.uint32) | (index.astype(np.uint32) << np.uint32(K.PACK_SHIFT))
        if pk.size % 2:
            pk = np.append(pk, np.uint32(0))
        return self._add("i", pk.view(np.int64)), self._add("r", table)

    def _boundary_phases(self, u: int, m: int, lam: np.ndarray) -> None:
        """``bph`` of sector ``m`` in every stage of model ``u``: the phases of the
        step from ``stage_L[s]`` to the stage's end and of the step from its start
        to its first output time (see ``kernels.SectorTables``)."""
        S = self.stage_t.size
        for s in np.flatnonzero(self.stage_u == u):
            if s + 1 < S:
                tau = self.stage_t[s + 1] - self.stage_L[s]
                self.bph[s, m, 0] = self._add("c", np.exp(-1j * lam * tau))
            if s > 0 and self.stage_kend[s - 1] < self.stage_kend[s]:
                tau = self.times[self.stage_kend[s - 1]] - self.stage_t[s]
                self.bph[s, m, 1] = self._add("c", np.exp(-1j * lam * tau))

    def fine_grid(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Output grid, refined to about one Taylor substep in Taylor mode.

        Returns ``(fine_t, out_idx)`` with ``fine_t[out_idx] == times``. The
        refinement is capped at ``PATH_BYTES`` of stored states. Stage
        boundaries are points of the grid; sector ``m`` of every stage must be built.
        """
        times = self.times
        rows = self.stage_base + m
        taylor = [r for r in rows if self.stab[r, K.MODE] != K.MODE_EIGEN and self.hnorms[r] > 0]
        if not taylor or times[-1] <= 0:
            if len(rows) == 1:
                return times, np.arange(times.size, dtype=np.int64)
            fine_t = np.union1d(times, self.stage_t[1:])
        else:
            d = int(self.stab[m, K.DIM])
            hmax = max(self.hnorms[r] for r in taylor)
            step = max(K.TAYLOR_THETA / hmax, times[-1] * 16.0 * d / PATH_BYTES)
            fine_t = np.union1d(np.union1d(times, np.arange(0.0, times[-1], step)),
                                self.stage_t[1:])
        return fine_t, np.searchsorted(fine_t, times).astype(np.int64)

    def initial_path(self, m0: int, psi0: np.ndarray, flags: np.ndarray, ncomp: int):
        """The shared no-jump path from the initial state (computed once, cached).

        Returns ``(fine_t, out_idx, path_cur, path_norm, path_decay, path_obs)``.
        """
        key = (m0, tuple(flags.tolist()))
        with self._lock:
            if key not in self._paths:
                for u in range(1, len(self.models)):  # the path crosses every stage
                    self.ensure(u * (self.N + 1) + m0)
                for row in set((self.stage_base + m0).tolist()):  # its Taylor steps
                    self._ensure_taylor(row)
                tables = self.tables()
                fine_t, out_idx = self.fine_grid(m0)
                nt = self.times.size
                d0 = int(tables.stab[m0, K.DIM])
                start = K.Start(
                    m0=int(m0), psi0=psi0, init_kind=K.INIT_PURE, init_p=np.zeros(1),
                    init_cfg=np.zeros((1, 2), dtype=np.int64),
                    binom=np.zeros((1, 1), dtype=np.int64), fine_t=fine_t, out_idx=out_idx,
                    path_cur=np.zeros((fine_t.size, d0), dtype=np.complex128),
                    path_norm=np.zeros(fine_t.size), path_decay=np.zeros(fine_t.size),
                    path_obs=np.zeros((nt, ncomp)),
                    path_psi=np.zeros((nt, d0) if flags[K.FLAG_STATE] else (1, 1),
                                      dtype=np.complex128))
                spec = run_spec(self, np.zeros(4, dtype=np.uint64), flags, ncomp,
                                max_magnons=self.N, record_jumps=False, keep=False,
                                use_phase_grid=self.dt > 0 and fine_t.size == nt)
                K.initial_path(tables, spec, start)
                self._paths[key] = start[6:]
            return self._paths[key]

    def snapshot(self):
        """``(stab, jtab, ptab, hnorms, cpx, ints, reals, maxdim)`` for one kernel call."""
        t = self.tables()
        return t.stab, t.jtab, t.ptab, t.hnorms, t.cpx, t.ints, t.reals, t.maxdim

    def tables(self) -> K.SectorTables:
        """A consistent :class:`kernels.SectorTables` of the sectors built so far.

        A copy: a sector another thread builds meanwhile cannot change it under a
        running kernel (the kernel then asks for the sector, and the caller
        takes new tables).
        """
        with self._lock:
            if self._snap is None:
                pools = self._pools
                self._snap = K.SectorTables(
                    self.stab.copy(), self.jtab.copy(), self.ptab.copy(), self.hnorms.copy(),
                    pools["c"].view(), pools["i"].view(), pools["r"].view(), self.ch_rate,
                    self.ch_dm, self.maxdim,
                    self.otab.copy(), self.bph.copy())
            return self._snap

    def modes_copy(self) -> dict:
        """``{sector: "eigen" | "taylor" | "chebyshev"}`` of the sectors built so far."""
        with self._lock:
            return dict(self.modes)

    @property
    def maxdim(self) -> int:
        """Work-vector size: the largest built sector (and dense jump target)."""
        return int(max(self.stab[:, K.DIM].max(), self._mindim))


def _split(M: np.ndarray) -> np.ndarray:
    """A dense complex matrix in the kernels' layout: transposed, real then imaginary
    parts (``kernels._matvec_rect``)."""
    M = np.asarray(M, dtype=complex)
    return np.concatenate([M.T.real.ravel(), M.T.imag.ravel()])


def is_doob(model) -> bool:
    """Whether ``model`` is a Doob process (``tsm.doob``: dense per-sector generator)."""
    return hasattr(model, "jump_matrix") and hasattr(model, "sector_heff")



def run_spec(pack: SectorPack, key: np.ndarray, flags: np.ndarray, ncomp: int, *,
             max_magnons: int, record_jumps: bool, keep: bool,
             use_phase_grid: bool | None = None, layout: StateLayout | None = None
             ) -> K.RunSpec:
    """The :class:`kernels.RunSpec` of a run on ``pack`` (``layout``: where the
    kernel accumulates the states, with ``FLAG_STATE``)."""
    if layout is None:
        rho_off, stride = np.full(pack.N + 1, -1, dtype=np.int64), 0
    else:
        rho_off, stride = layout.offsets, layout.stride
    return K.RunSpec(key=key, times=pack.times,
                     use_phase_grid=bool(pack.dt > 0 if use_phase_grid is None
                                         else use_phase_grid),
                     N=int(pack.N), flags=flags, ncomp=int(ncomp), nch=len(pack.channels),
                     max_magnons=int(max_magnons), record_jumps=bool(record_jumps),
                     keep=bool(keep), rho_off=np.tile(rho_off, len(pack.models)),
                     rho_stride=int(stride), stage_t=pack.stage_t,
                     stage_base=pack.stage_base, stage_u=pack.stage_u,
                     stage_kend=pack.stage_kend, stage_L=pack.stage_L)
