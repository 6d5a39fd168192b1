"""Rare currents by population dynamics (cloning), docs/model.md section 15.

``theta(s) = lim (1/t) ln E[exp(s K_t)]`` for the weighted jump count ``K_t``
of section 11 (``counts``: channel name -> integer weight ``nu``), estimated
from a population of ``clones`` copies of the ordinary unravelling:

1. every clone runs the quantum-jump unravelling of :func:`mcsolve` (the same
   kernels, :func:`kernels.advance_clones`) over one resampling interval
   ``dt``, counting ``K_i``, the sum of ``nu`` over its jumps;
2. its weight is ``w_i = exp(s K_i)``; the log of the mean weight,
   ``ln W_j = ln((1/n_c) sum_i w_i)``, is added up, and the weighted mean
   count ``sum_i w_i K_i / sum_i w_i`` too;
3. the population is resampled in proportion to the weights (systematic
   resampling: one uniform per interval, ``n_c`` equally spaced pointers on the
   cumulative weights; constant population, the least added noise among the
   unbiased schemes), and every new clone continues from its parent's
   normalised state with a fresh stream (a fresh no-jump threshold is exact:
   survival without a jump is Markov in the normalised state).

``theta = sum_j ln W_j / t'``, the sum over the intervals after a burn-in
(``burn``, a fraction of ``t``; ``t'`` the time left). The current is each
final clone's count along its ancestry (a clone inherits its parent's count at
resampling) in the middle stretch ``[burn t, (1 - burn) t]``, averaged over the
final population and divided by the stretch's length: the tilted ensemble's
typical current, ``theta'(s)``. (The weighted mean count of each interval, or
the lineages' last stretch, would estimate the end-point ensemble instead,
which differs.) The estimator is consistent as ``n_c -> oo`` and ``t -> oo``;
its biases are

- ``O(1/n_c)``: the finite population (a systematic error of the order of the
  weights' relative variance over ``n_c``). ``extrapolate=True`` runs
  populations of ``n_c``, ``n_c / 2`` and ``n_c / 4`` clones and fits ``theta``
  linearly in ``1/n_c`` (weighted by the error bars; Nemoto, Guevara Hidalgo and
  Lecomte 2016): ``theta`` is then the intercept, ``bias`` the raw value at
  ``n_c`` minus it, ``theta_sem`` the intercept's error;
- ``O(1/t)``: the start from the model's initial state rather than from the
  tilted stationary state, and (for the current) the lineages' end; both are
  removed when the burn-in spans a few relaxation times of the tilted
  generator (at ``s = 0``: :func:`relaxation_time`).

The resampling interval ``dt`` does not bias the limit: a longer interval
lets the weights spread more before each resampling (fewer clones carry the
population: more variance at fixed ``n_c``), a shorter one costs more
restarts. The default is one over the sum of the channel rates (about one jump
per clone per interval), capped at 1. Error bars: ``populations``
independent populations (default 8), ``theta_sem`` their standard error.

Reproducibility: clone ``i`` of population ``p`` in interval ``j`` uses the
stream ``(seed, p, j, i)`` and the resampling uniform ``(seed, p, j)``; the
same streams serve every ``s`` (common random numbers: smooth curves), and
the numbers do not depend on ``n_jobs`` or the backend (populations run in
parallel through the backends of :func:`mcsolve`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd

from .._validate import n_jobs as _check_n_jobs
from ..exact.counting import check_counts
from ..physics.model import ChainModel
from . import kernels as K
from .backends import BACKENDS, Cluster
from .batches import get_pack, initial_draw, warm_kernels
from .sectorpack import DENSE_MAX

__all__ = ["cloning", "COLUMNS"]

#: Columns of the table :func:`cloning` returns (``bias`` and ``populations`` follow).
COLUMNS = ("s", "theta", "theta_sem", "current", "current_sem", "clones", "t")


def _population(model, weights: np.ndarray, s_values: np.ndarray, t: float, clones: int,
                seed: int, p: int, dt: float, j_burn: int, dense_max: int) -> np.ndarray:
    """One population per ``s``: ``(len(s_values), 2)`` rows ``(theta, current)``:
    ``theta`` from the intervals ``j >= j_burn``, the current from the lineages'
    counts in the intervals ``j_burn <= j < nsteps - j_burn``."""
    times = np.array([0.0, t])
    pack = get_pack(model, times, dense_max)
    kind, m0, psi0, init_p, init_cfg, _ = initial_draw(model, pack.space)
    pack.ensure(m0)
    nsteps = max(1, math.ceil(t / dt - 1e-12))
    out = np.empty((s_values.size, 2))
    for si, s in enumerate(s_values):
        rng0 = np.random.default_rng([seed, p, 0xC10E])
        # the starting population: the initial state (a mixture: one draw per clone)
        ms = np.full(clones, m0, dtype=np.int64)
        if kind == K.INIT_PURE:
            psis = np.zeros((clones, max(psi0.size, 1)), dtype=np.complex128)
            psis[:, :psi0.size] = psi0
        else:
            rows = _draw_mixture(model, pack, kind, init_p, init_cfg, clones, rng0)
            ms[:] = rows[:, 0]
            for m in np.unique(ms):
                pack.ensure(int(m))
            psis = np.zeros((clones, pack.maxdim), dtype=np.complex128)
            psis[np.arange(clones), rows[:, 1]] = 1.0
        log_w = 0.0
        lineage = np.zeros(clones)  # each clone's count since the burn-in, along its ancestry
        for j in range(nsteps):
            t0, t1 = j * dt, min((j + 1) * dt, t)
            key = np.random.SeedSequence([seed, p, j]).generate_state(4, dtype=np.uint64)
            while True:
                tables = pack.tables()
                width = max(tables.maxdim, psis.shape[1])
                if psis.shape[1] < width:
                    psis = np.concatenate(
                        [psis, np.zeros((clones, width - psis.shape[1]), complex)], axis=1)
                m_out = np.empty(clones, dtype=np.int64)
                psi_out = np.zeros((clones, width), dtype=np.complex128)
                k_out = np.zeros(clones)
                n_out = np.zeros(clones, dtype=np.int64)
                status, need = K.advance_clones(tables, key, t0, t1, weights, ms, psis,
                                                m_out, psi_out, k_out, n_out)
                if status == K.STATUS_NEED_SECTOR:
                    pack.ensure(int(need))
                    continue
                break
            x = s * k_out
            top = x.max()
            w = np.exp(x - top)
            if j >= j_burn:
                log_w += top + math.log(w.sum() / clones)
                if j < nsteps - j_burn:
                    lineage += k_out
            # systematic resampling in proportion to the weights
            u = np.random.default_rng([seed, p, j, 1]).random()
            cum = np.cumsum(w)
            idx = np.searchsorted(cum, (u + np.arange(clones)) / clones * cum[-1],
                                  side="right")
            idx = np.minimum(idx, clones - 1)
            ms, psis, lineage = m_out[idx], psi_out[idx], lineage[idx]
        mid = min(nsteps - j_burn, nsteps) * dt - j_burn * dt
        out[si] = log_w / (t - j_burn * dt), lineage.mean() / mid
    return out


def _draw_mixture(model, pack, kind, init_p, init_cfg, clones, rng) -> np.ndarray:
    """``(clones, 2)`` rows ``(m, basis index)`` drawn from a site-diagonal mixture."""
    if kind == K.INIT_TABLE:
        j = np.searchsorted(init_p, rng.random(clones), side="right")
        return init_cfg[np.minimum(j, len(init_cfg) - 1)]
    space = pack.space
    down = rng.random((clones, model.N)) < np.asarray(init_p)[None, :]
    rows = np.empty((clones, 2), dtype=np.int64)
    for i in range(clones):
        sites = np.flatnonzero(down[i])
        rows[i] = sites.size, int(space.rank(sites[None, :])[0]) if sites.size else 0
    return rows


@dataclass(frozen=True)
class CloningJob:
    """Populations of one cloning run, for the backends of :mod:`backends`
    (``run(ids)`` runs populations ``ids``; the other fields let a worker
    prepare the model's pack like an ``mcsolve`` job)."""

    model: Any
    weights: np.ndarray
    s: np.ndarray
    t: float
    clones: int
    seed: int
    dt: float
    j_burn: int
    dense_max: int = DENSE_MAX
    times: np.ndarray = None
    names: tuple = ("m",)
    pairs: Any = None
    operators: tuple = ()
    states: bool = False

    def run(self, ids) -> tuple:
        res = [_population(self.model, self.weights, self.s, self.t, self.clones, self.seed,
                           int(p), self.dt, self.j_burn, self.dense_max) for p in ids]
        return ids, res, {}


def cloning(model: ChainModel, counts, s, t: float = 50.0, clones: int = 1000, seed=1,
            n_jobs: int = 1, *, populations: int = 8, interval: float | None = None,
            burn: float = 0.25, extrapolate: bool = False, backend: str | None = None,
            dense_max: int = DENSE_MAX) -> pd.DataFrame:
    """``theta(s)`` and the tilted mean current by population dynamics (cloning).

    Parameters
    ----------
    model : ChainModel
        Any chain the trajectories run (a pure or mixed initial state).
    counts : dict
        ``{channel name: integer weight}``, as in :func:`exact_counting_statistics`.
    s : float or array_like
        Counting fields (finite).
    t : float
        Length of each population's history (``> 0``).
    clones : int
        Clones per population (``>= 2``).
    seed : int
        Root seed (``>= 0``); the streams are described in the module docstring.
    n_jobs : int
        Populations run in parallel (threads; ``backend`` to choose another).
    populations : int
        Independent populations per ``s`` (``>= 2``): the error bars. Their
        standard error is itself estimated from ``populations`` values, so a
        z-score against it is Student-t with ``populations - 1`` degrees of
        freedom (8 populations: ``|z| > 4`` with probability 0.5%, against
        6e-5 for a normal variable); use more for sharper tests.
    interval : float, optional
        Resampling interval ``dt`` (``0 < dt <= t``); default ``min(1, 1 / sum of
        the channel rates)``.
    burn : float
        Fraction of ``t`` (``0 <= burn < 0.5``, rounded down to whole intervals)
        that the population evolves and is resampled before the estimators
        start, and (for the current) after they stop: it removes the
        ``O(1/t)`` biases of the start and of the lineages' end (default 0.25).
    extrapolate : bool
        Also run ``clones // 2`` and ``clones // 4`` (at least 2) and report the
        intercept of a weighted linear fit in ``1 / clones``.
    backend : str, optional
        As in :func:`mcsolve` (``serial``, ``threads``, ``loky``, ``dask``).
    dense_max : int
        As in :func:`mcsolve`.

    Returns
    -------
    pandas.DataFrame
        One row per ``s`` (in the given order): ``s, theta, theta_sem, current,
        current_sem, clones, t``, then ``bias`` (raw minus extrapolated theta;
        NaN without ``extrapolate``) and ``populations``. ``theta_sem`` and
        ``current_sem`` are standard errors over the populations.

    Raises
    ------
    ValueError
        One line: an unknown channel or a non-integer weight in ``counts``,
        ``clones < 2``, non-finite ``s``, ``t <= 0``, a bad ``interval``,
        ``populations < 2``, a model that is not a ``ChainModel``.
    """
    if not isinstance(model, ChainModel):
        raise ValueError(f"model must be a ChainModel, got {type(model).__name__}")
    nu = check_counts(model, counts)
    weights = np.array([float(nu.get(ch.name, 0)) for ch in model.channels])
    s_arr = np.atleast_1d(np.asarray(s, dtype=float)) if _is_real_array(s) else None
    if s_arr is None or s_arr.ndim != 1 or s_arr.size == 0 or not np.all(np.isfinite(s_arr)):
        raise ValueError(f"s must be a finite real number or a 1-d array of them, got {s!r}")
    if isinstance(t, bool) or not isinstance(t, Real) or not math.isfinite(t) or t <= 0:
        raise ValueError(f"t must be a finite number > 0, got {t!r}")
    t = float(t)
    clones = _int("clones", clones, 2)
    populations = _int("populations", populations, 2)
    seed = _int("seed", seed, 0)
    n_jobs = _check_n_jobs(n_jobs)
    if not isinstance(extrapolate, (bool, np.bool_)):
        raise ValueError(f"extrapolate must be True or False, got {extrapolate!r}")
    total = sum(ch.rate for ch in model.channels)
    dt = min(1.0, 1.0 / total) if interval is None else interval
    if isinstance(dt, bool) or not isinstance(dt, Real) or not (0 < dt <= t):
        raise ValueError(f"interval must be a number in (0, t = {t:g}], got {interval!r}")
    if isinstance(burn, bool) or not isinstance(burn, Real) or not (0 <= burn < 0.5):
        raise ValueError(f"burn must be a fraction in [0, 0.5), got {burn!r}")
    nsteps = max(1, math.ceil(t / dt - 1e-12))
    j_burn = min(int(math.floor(burn * t / dt + 1e-12)), (nsteps - 1) // 2)
    sizes = [clones] + ([max(2, clones // 2), max(2, clones // 4)] if extrapolate else [])
    cluster = Cluster(backend=backend, n_jobs=n_jobs)
    warm_kernels()
    runs = {}
    for n_c in dict.fromkeys(sizes):
        job = CloningJob(model, weights, s_arr, t, n_c, seed, float(dt), j_burn, dense_max,
                         times=np.array([0.0, t]))
        got = {}
        with BACKENDS[cluster.backend](cluster, job) as runner:
            for item in runner.map([p] for p in range(populations)):
                if item is not None:
                    ids, res, _ = item
                    got.update(zip(ids, res, strict=True))
        runs[n_c] = np.array([got[p] for p in range(populations)])  # (P, ns, 2)
    rows = []
    for si, sv in enumerate(s_arr):
        est = {n: (r[:, si, 0].mean(), r[:, si, 0].std(ddof=1) / math.sqrt(populations))
               for n, r in runs.items()}
        r0 = runs[clones][:, si]
        theta, theta_sem = est[clones]
        bias = math.nan
        if extrapolate and len(est) > 1 and theta_sem > 0:
            x = np.array([1.0 / n for n in est])
            y = np.array([v[0] for v in est.values()])
            e = np.array([max(v[1], 1e-300) for v in est.values()])
            A = np.stack([np.ones_like(x), x], axis=1) / e[:, None]
            coef, *_ = np.linalg.lstsq(A, y / e, rcond=None)
            cov = np.linalg.inv(A.T @ A)
            bias = theta - coef[0]
            theta, theta_sem = float(coef[0]), float(math.sqrt(cov[0, 0]))
        rows.append({"s": float(sv), "theta": float(theta), "theta_sem": float(theta_sem),
                     "current": float(r0[:, 1].mean()),
                     "current_sem": float(r0[:, 1].std(ddof=1) / math.sqrt(populations)),
                     "clones": clones, "t": t, "bias": float(bias),
                     "populations": populations})
    return pd.DataFrame(rows, columns=[*COLUMNS, "bias", "populations"])


def _is_real_array(x) -> bool:
    try:
        a = np.asarray(x)
    except Exception:  # noqa: BLE001
        return False
    return a.dtype.kind in "iuf" and a.dtype != bool


def _int(name: str, x, lo: int) -> int:
    if isinstance(x, bool) or not isinstance(x, Integral) or x < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {x!r}")
    return int(x)
