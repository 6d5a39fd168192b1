"""Chebyshev propagator of the matrix-free block generator.

:func:`chebyshev_evolve` expands ``exp(tau L)`` (``L`` the
:class:`~thermospin_mc.exact._blockops.BlockGenerator`) in Chebyshev
polynomials of ``A = (L - c) / s`` whose spectrum lies near ``[-i, i]`` (``s``:
largest width ``E_max - E_min`` of a sector Hamiltonian, ``c``: centre of the
decay rates). With ``H_0 = v``, ``H_1 = A v``, ``H_{k+1} = 2 A H_k + H_{k-1}``
(Hermitian for Hermitian ``v``), ``exp(theta A) v = J_0(theta) H_0 + 2 sum_k
J_k(theta) H_k``, ``theta = s tau`` (Jacobi-Anger). The series is cut a
posteriori once the weighted terms ``|e^{c tau} J_k(theta)| ||H_k||`` stay below
``tol ||v||``. The terms grow like the slowest mode of ``exp(tau (L - c))``;
a segment whose round-off estimate (machine epsilon times its largest weighted
term) exceeds ``ROUND_TOL ||v||`` is redone at half the length, so segments are
as long as accuracy allows (one segment over ``[0, 20]`` for the paper's
models). Every output time inside a segment is a combination of the same
``H_k`` with its own Bessel weights, so output times never force steps:
observables (real-linear in ``rho``) are taken per term and combined; the jump
counts (time integrals of linear functionals) use the integrated weights
(Gauss-Legendre, exact to round-off for the smooth integrand). The state after
the last output time is never formed.
"""

from __future__ import annotations

import numpy as np
import scipy.special as ssp

__all__ = ["chebyshev_evolve"]


def _bessel_weights(K: int, theta: np.ndarray) -> np.ndarray:
    """``(len(theta), K)`` weights ``J_0``, ``2 J_k`` of the expansion."""
    k = np.arange(K)
    w = ssp.jv(k[None, :], np.asarray(theta, dtype=float)[:, None])
    w[:, 1:] *= 2.0
    return w


#: Accepted round-off estimate of a segment, relative to the norm of its start.
ROUND_TOL = 1e-12


def _sweep(gen, x, theta, scale, c, s, tol, observe, count_R, acc, abort=True):
    """Chebyshev terms of one segment from ``x`` (left intact): per-term observables
    and counts, ``acc`` (if given) the end state; ``err`` estimates the round-off
    (machine epsilon times the largest weighted term)."""
    terms_obs, terms_cnt = [], []
    Hk, Hm, new = x, np.zeros_like(x), np.empty_like(x)
    W = _bessel_weights(int(theta[-1] + 60), theta)
    nrm0 = np.linalg.norm(x)
    small, k, big, matvecs = 0, 0, 0.0, 0
    while True:
        if k >= W.shape[1]:
            W = _bessel_weights(2 * W.shape[1], theta)
        terms_obs.append(observe(Hk))
        if count_R is not None:
            terms_cnt.append(count_R @ Hk)
        wk = scale[-1] * W[-1, k]
        # next term: H_{k+1} = 2 A H_k + H_{k-1}, A = (L - c) / s (H_1 = A H_0)
        nk = np.sqrt(gen.chebyshev_step(Hk, Hm, new, c, (2.0 if k else 1.0) / s, acc, wk))
        matvecs += 1
        contrib = np.max(np.abs(scale * W[:, k])) * nk
        big = max(big, contrib)
        # a-posteriori cut: the weighted terms against the start's norm
        if k > theta[-1] and contrib <= tol * nrm0:
            small += 1
            if small >= 2:
                break
        else:
            small = 0
        if k == 1:  # keep the segment start intact (a rejected segment restarts there)
            Hm, Hk, new = Hk, new, np.empty_like(x)
        else:
            Hm, Hk, new = Hk, new, Hm
        k += 1
        if not np.isfinite(nk) or (abort and np.finfo(float).eps * big > ROUND_TOL * nrm0):
            break  # hopeless: the caller shortens the segment
    err = np.finfo(float).eps * big * np.sqrt(k + 1) if np.isfinite(big) else np.inf
    return terms_obs, terms_cnt, acc, err, k, W, scale, matvecs


def chebyshev_evolve(gen, x0: np.ndarray, times: np.ndarray, observe,
                     count_R=None, tol: float = 1e-15, growth: float = 200.0,
                     margin: float = 0.1, on_state=None, on_final=None):
    """Evolve ``x0`` (Hermitian blocks) under ``gen`` and return the observables.

    Parameters
    ----------
    gen : BlockGenerator
        The matrix-free generator (:class:`~thermospin_mc.exact._blockops.BlockGenerator`).
    x0 : ndarray
        Stacked initial blocks at ``t = 0``.
    times : ndarray
        Non-decreasing output times ``>= 0``.
    observe : callable
        ``observe(x) -> 1-d float array``, real-linear in ``x``.
    count_R : sparse matrix, optional
        ``(nch, size)`` rates ``R``; the integrals ``int_0^t R x(t') dt'`` are
        returned as well.
    tol : float
        Truncation of the series relative to ``||x0||``.
    growth : float
        Segment length ``tau`` with ``Gamma tau <= growth``: the terms grow like the
        slowest mode of ``exp(tau (L - c))``, ``exp(Gamma tau / 2)``, which bounds
        the exponent range (round-off stays relative to that mode, measured
        ~1e-14 on the observables up to ``Gamma tau = 200``).
    on_state : callable, optional
        ``on_state(j, x)`` receives the state at each output time ``times[j]``
        (``x`` is reused afterwards: copy it). Segments then end at the output
        times (the state is only formed at segment ends), which costs a few
        dozen extra matrix-vector products per output.
    on_final : callable, optional
        ``on_final(x)`` receives the state at ``times[-1]`` (which is then formed;
        segments are not shortened): the start of the next stage of a
        piecewise-constant protocol.

    Returns
    -------
    obs : (len(times), nobs) ndarray
    counts : (len(times), nch) ndarray or None
    info : dict
        ``matvecs`` (including those of rejected segments) and ``segments``.
    """
    s = max(gen.width, 1e-3) * 1.01 + margin * gen.gamma
    c = -0.5 * gen.gamma
    tau_max = growth / max(gen.gamma, 1e-12)
    x = x0.copy()
    nobs = observe(x).size
    nch = 0 if count_R is None else count_R.shape[0]
    obs = np.zeros((times.size, nobs))
    counts = np.zeros((times.size, nch)) if nch else None
    cnt_now = np.zeros(nch)
    t_now = 0.0
    j = 0
    matvecs, segments = 0, 0
    while j < times.size:
        if times[j] <= t_now:
            obs[j] = observe(x)
            if nch:
                counts[j] = cnt_now
            if on_state is not None:
                on_state(j, x)
            j += 1
            continue
        tau_try = tau_max
        while True:
            t_end = min(times[-1] if on_state is None else times[j], t_now + tau_try)
            # outputs inside (t_now, t_end]
            jj = j
            while jj < times.size and times[jj] <= t_end:
                jj += 1
            taus = np.append(times[j:jj] - t_now, t_end - t_now)
            theta = s * taus
            # the state after the last output is not needed (unless it is kept)
            last = jj == times.size and on_state is None and on_final is None
            final = tau_try * s < 8.0  # short enough to accept whatever the growth
            sweep = _sweep(gen, x, theta, np.exp(c * taus), c, s, tol, observe, count_R,
                           None if last else np.zeros_like(x), abort=not final)
            matvecs += sweep[-1]
            if final or sweep[3] <= ROUND_TOL * np.linalg.norm(x):
                break
            tau_try *= 0.5  # round-off from term growth too large: shorter segment
        terms_obs, terms_cnt, acc, _err, k, W, scale, _ = sweep
        K = k + 1
        To = np.array(terms_obs)  # (K, nobs)
        wts = scale[:-1, None] * W[:-1, :K]  # outputs
        obs[j:jj] = wts @ To
        if nch:
            Tc = np.array(terms_cnt).real  # (K, nch)
            # int_0^tau exp(c u) J_k(s u) du by Gauss-Legendre on each output interval
            edges = np.concatenate([[0.0], taus])
            cum = np.zeros((taus.size, K))
            acc_int = np.zeros(K)
            for q in range(taus.size):
                a_, b_ = edges[q], edges[q + 1]
                if b_ > a_:
                    n = int(0.5 * s * (b_ - a_) + 20)
                    u, wq = np.polynomial.legendre.leggauss(n)
                    uu = 0.5 * (b_ - a_) * u + 0.5 * (a_ + b_)
                    Wq = _bessel_weights(K, s * uu) * np.exp(c * uu)[:, None]
                    acc_int = acc_int + 0.5 * (b_ - a_) * (wq @ Wq)
                cum[q] = acc_int
            cvals = cnt_now + cum @ Tc
            counts[j:jj] = cvals[:-1]
            cnt_now = cvals[-1]
        x = acc  # holds every term up to k (each step adds its own)
        t_now = t_end
        if on_state is not None:
            for q in range(j, jj):  # outputs of this segment: all at its end t_end
                on_state(q, x)
        j = jj
        segments += 1
        # outputs equal to t_end were written from the series; skip them
    if on_final is not None:
        on_final(x)  # the state at t_now = times[-1]
    return obs, counts, {"matvecs": matvecs, "segments": segments}
