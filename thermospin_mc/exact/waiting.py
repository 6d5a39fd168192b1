"""Exact waiting-time densities and bin probabilities between counted jumps
(docs/model.md 11): ``w(tau) = Tr[J_B exp((L - J) tau) J_A rho] / Tr[J_A rho]`` with
the exact action of the exponential on the stacked blocks.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .. import _validate as v
from .._threads import blas_threads
from .blocks import check_model, evolve_grid
from .counting import CountingSystem, check_channel_names, reachable_sectors, steady_sectors

__all__ = ["waiting_time_distribution", "waiting_time_bins"]


# --------------------------------------------------------------------------- waiting times
def _wtd_setup(model, channels, start, end, rho, solver: str):
    model = check_model(model, solver)
    counted = check_channel_names(model, channels, "channels")
    start = counted if start is None else check_channel_names(model, start, "start")
    end = counted if end is None else check_channel_names(model, end, "end")
    counted = tuple(dict.fromkeys(counted + start + end))
    return model, counted, start, end


def _wtd_vectors(sysm: CountingSystem, counted, start, end, x: np.ndarray):
    Jc = sum(sysm.J[c] for c in counted)
    M = (sysm.L - Jc).tocsr()
    y = sum(sysm.J[c] for c in start) @ x
    norm = (sysm.trace @ y).real
    if not norm > 0:
        raise ValueError(f"no jumps of {list(start)} occur in the reference state: the "
                         "waiting-time density is undefined")
    tend = sum(sysm.tJ[c] for c in end)
    return M, y / norm, tend


@blas_threads
def waiting_time_distribution(model, channels, tau, *, start=None, end=None) -> np.ndarray:
    """Steady-state density of the waiting time between counted jumps (docs/model.md 11).

    ``w(tau) = Tr[J_end exp((L - J) tau) J_start rho_ss] / Tr[J_start rho_ss]``
    with ``J`` the sum over the counted channels.

    Parameters
    ----------
    model : ChainModel
        Needs a unique steady state.
    channels : str or sequence of str
        The counted channels (``J = sum`` of their jump superoperators).
    tau : float or array_like
        Delays ``>= 0``.
    start, end : str or sequence of str, optional
        Ordered-pair form: density that, after a jump of ``start``, the next
        counted jump happens at ``tau`` and is one of ``end`` (defaults: the
        counted channels). ``start`` and ``end`` channels are counted too. With
        ``start = A`` the densities for all ``end = B`` add up to the density
        for ``end = channels``.

    Returns
    -------
    numpy.ndarray
        ``w(tau)``, same shape as ``tau``; its integral over ``[0, inf)`` is the
        probability that a next counted jump (of ``end``) ever happens.
    """
    model, counted, start, end = _wtd_setup(model, channels, start, end, None,
                                            "waiting_time_distribution")
    tau_arr = np.asarray(tau, dtype=float)
    flat = v.real_array("tau", tau_arr.ravel(), lo=0.0)
    sysm = CountingSystem(model, steady_sectors(model))
    M, y, tend = _wtd_vectors(sysm, counted, start, end, sysm.steady_state())
    order = np.argsort(flat, kind="stable")
    vals = np.empty(flat.size)
    if flat.size:
        for i, z in zip(order, evolve_grid(M, y, flat[order]), strict=True):
            vals[i] = (tend @ z).real
    return vals.reshape(tau_arr.shape)


def _integral_grid(M: sp.csr_matrix, y: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``int_0^e exp(M u) y du`` at each of the increasing ``edges``."""
    n = M.shape[0]
    aug = sp.bmat([[M, None], [sp.identity(n, dtype=complex, format="csr"),
                                sp.csr_matrix((n, n), dtype=complex)]], format="csr")
    y0 = np.concatenate([y, np.zeros(n, dtype=complex)])
    return np.array([z[n:] for z in evolve_grid(aug, y0, edges)])


@blas_threads
def waiting_time_bins(model, channels, edges, *, start=None, end=None,
                      window=None) -> np.ndarray:
    """Exact probability of the waiting time in each bin ``[edges[i], edges[i+1])``.

    Parameters
    ----------
    model, channels, start, end
        As in :func:`waiting_time_distribution`.
    edges : array_like
        Increasing bin edges ``>= 0``.
    window : (float, float), optional
        ``None``: intervals starting in the steady state. ``(t_a, t_b)``: the
        interval-start jumps are the ``start`` jumps in ``[t_a, t_b)`` of the
        evolution from ``model.initial`` (each weighted by its exact rate), the
        reference of a trajectory histogram over that window.

    Returns
    -------
    numpy.ndarray
        ``len(edges) - 1`` probabilities (``int`` of ``w`` over each bin).
    """
    model, counted, start, end = _wtd_setup(model, channels, start, end, None,
                                            "waiting_time_bins")
    edges = v.real_array("edges", edges, lo=0.0)
    if edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("edges must be at least two strictly increasing values")
    if window is None:
        sysm = CountingSystem(model, steady_sectors(model))
        x = sysm.steady_state()
    else:
        t_a, t_b = window
        t_a = v.real("window[0]", t_a, lo=0.0)
        t_b = v.real("window[1]", t_b, lo=0.0)
        if not t_b > t_a:
            raise ValueError(f"window must satisfy t_a < t_b, got ({t_a}, {t_b})")
        sysm = CountingSystem(model, reachable_sectors(model))
        x0 = sysm.initial_vector()
        if t_a > 0:
            x0 = spla.expm_multiply(sysm.L * t_a, x0)
        x = _integral_grid(sysm.L, x0, np.array([t_b - t_a]))[0]
    M, y, tend = _wtd_vectors(sysm, counted, start, end, x)
    grid = np.concatenate([[0.0], edges]) if edges[0] > 0 else edges
    cum = np.array([(tend @ z).real for z in _integral_grid(M, y, grid)])
    if edges[0] > 0:
        cum = cum[1:]
    return np.diff(cum)
