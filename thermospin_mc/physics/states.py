"""Initial states of a chain: pure magnon configurations, a pure state inside one
magnon sector, and mixtures diagonal in the site basis (docs/model.md section 5).
Sites are 1-based; :func:`normalise_initial` validates a state against ``N``
and returns its canonical form (what ``ChainModel.initial`` holds).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

from .. import _validate as v

__all__ = ["Magnons", "magnons", "StateVector", "ProductMixture", "product_mixture",
           "Mixture", "mixture", "initial_from_dict", "normalise_initial"]


@dataclass(frozen=True)
class Magnons:
    """Product state with down spins (magnons) at the given 1-based sites."""

    sites: tuple = ()

    def to_dict(self) -> dict:
        return {"kind": "magnons", "sites": list(self.sites)}


def magnons(*sites: int) -> Magnons:
    """Product state with magnons at ``sites`` (1-based); ``magnons()`` is all up."""
    if len(sites) == 1 and isinstance(sites[0], (list, tuple, np.ndarray)):
        sites = tuple(sites[0])
    return Magnons(tuple(int(s) for s in sites))


@dataclass(frozen=True)
class StateVector:
    """A user state inside the ``m``-magnon sector.

    ``amplitudes`` are given in the sector's basis order (see
    :meth:`thermospin_mc.core.sectors.SectorSpace.basis`): colexicographic order of
    the occupied-site sets. The vector is normalised on use.
    """

    m: int
    amplitudes: tuple

    def to_dict(self) -> dict:
        amps = np.asarray(self.amplitudes, dtype=complex)
        return {"kind": "state_vector", "m": self.m,
                "re": amps.real.tolist(), "im": amps.imag.tolist()}


@dataclass(frozen=True)
class ProductMixture:
    """Product mixture: site ``i`` is down (a magnon) with probability ``p[i-1]``,
    independently of the others (``rho0 = prod_i diag(1 - p_i, p_i)`` in the
    (up, down) order)."""

    p: tuple

    def to_dict(self) -> dict:
        return {"kind": "product_mixture", "p": list(self.p)}


def product_mixture(p) -> ProductMixture:
    """Product mixture with ``p[i-1]`` the probability that site ``i`` is down."""
    return ProductMixture(tuple(float(x) for x in np.ravel(np.asarray(p, dtype=float))))


@dataclass(frozen=True)
class Mixture:
    """Mixture diagonal in the site basis: configuration ``configurations[k]``
    (a tuple of 1-based down sites) with probability ``weights[k]``. The weights
    are normalised on use."""

    configurations: tuple
    weights: tuple

    def to_dict(self) -> dict:
        return {"kind": "mixture", "configurations": [list(c) for c in self.configurations],
                "weights": list(self.weights)}


def mixture(weights) -> Mixture:
    """Site-diagonal mixture from ``{(down sites...): weight}`` or ``[(sites, weight), ...]``.

    An int key is one magnon site; ``()`` is the all-up configuration.
    """
    items = weights.items() if isinstance(weights, dict) else weights
    cfgs, ws = [], []
    for cfg, w in items:
        if isinstance(cfg, (int, np.integer)):
            cfg = (int(cfg),)
        cfgs.append(tuple(int(x) for x in cfg))
        ws.append(w)
    return Mixture(tuple(cfgs), tuple(ws))


def initial_from_dict(d: dict):
    """An initial-state object from its ``to_dict`` form."""
    kind = d.get("kind")
    if kind == "magnons":
        return Magnons(tuple(d["sites"]))
    if kind == "state_vector":
        amps = np.asarray(d["re"], dtype=float) + 1j * np.asarray(d["im"], dtype=float)
        return StateVector(d["m"], tuple(complex(x) for x in amps))
    if kind == "product_mixture":
        return ProductMixture(tuple(d["p"]))
    if kind == "mixture":
        return Mixture(tuple(tuple(c) for c in d["configurations"]), tuple(d["weights"]))
    raise ValueError(f"initial kind must be one of magnons, state_vector, product_mixture, "
                     f"mixture; got {kind!r}")



def normalise_initial(initial, N: int):
    """The canonical, validated form of an initial state for ``N`` sites: ``"all_up"``,
    an int or a sequence of ints become :class:`Magnons` (sorted sites); a
    :class:`StateVector` is normalised; mixture weights are normalised and merged."""
    if isinstance(initial, str):
        if initial != "all_up":
            raise ValueError(f"initial must be 'all_up', magnon sites, Magnons or StateVector; "
                             f"got {initial!r}")
        return Magnons(())
    if isinstance(initial, (int, np.integer)) and not isinstance(initial, bool):
        initial = Magnons((int(initial),))
    elif isinstance(initial, (list, tuple)):
        initial = Magnons(tuple(int(s) for s in initial))
    if isinstance(initial, Magnons):
        sites = tuple(int(s) for s in initial.sites)
        for s in sites:
            if not 1 <= s <= N:
                raise ValueError(f"initial magnon site must be in 1..{N}, got {s}")
        if len(set(sites)) != len(sites):
            raise ValueError(f"initial magnon sites must be distinct, got {sites}")
        return Magnons(tuple(sorted(sites)))
    if isinstance(initial, StateVector):
        m = v.integer("initial.m", initial.m, lo=0, hi=N)
        try:
            amps = np.asarray(initial.amplitudes, dtype=complex).ravel()
        except (TypeError, ValueError) as exc:
            raise ValueError("initial.amplitudes must be complex numbers") from exc
        dim = comb(N, m)
        if amps.size != dim:
            raise ValueError(f"initial state vector must have C(N, m) = C({N}, {m}) = {dim} "
                             f"entries, got {amps.size}")
        if not np.all(np.isfinite(amps)):
            raise ValueError("initial state vector must be finite")
        nrm = float(np.linalg.norm(amps))
        if nrm == 0.0:
            raise ValueError("initial state vector must have non-zero norm, got norm 0")
        # normalise once: a vector normalised to round-off is kept bit for bit, so that
        # to_dict/from_dict round trips (and fingerprints) are exact
        if abs(nrm - 1.0) > 8 * np.finfo(float).eps:
            amps = amps / nrm
        return StateVector(m, tuple(complex(x) for x in amps))
    if isinstance(initial, ProductMixture):
        p = v.real_array("initial.p", initial.p, lo=0.0)
        if p.size != N:
            raise ValueError(f"product_mixture needs N = {N} probabilities (one per site), "
                             f"got {p.size}")
        if p.max() > 1.0:
            raise ValueError(f"product_mixture probabilities must be <= 1, got maximum "
                             f"{p.max()}")
        return ProductMixture(tuple(float(x) for x in p))
    if isinstance(initial, Mixture):
        w = v.real_array("initial.weights", initial.weights, lo=0.0)
        if len(initial.configurations) != w.size or w.size == 0:
            raise ValueError(f"mixture needs one weight per configuration and at least one "
                             f"configuration, got {len(initial.configurations)} "
                             f"configurations and {w.size} weights")
        if w.sum() <= 0.0:
            raise ValueError("mixture weights must not all be 0")
        cfgs = {}
        for cfg, wk in zip(initial.configurations, w, strict=True):
            sites = normalise_initial(Magnons(tuple(cfg)), N).sites
            if wk > 0.0:
                cfgs[sites] = cfgs.get(sites, 0.0) + float(wk)
        keys = sorted(cfgs, key=lambda c: (len(c), c))
        tot = sum(cfgs.values())
        return Mixture(tuple(keys), tuple(cfgs[k] / tot for k in keys))
    raise ValueError(f"initial must be 'all_up', magnon sites, Magnons, StateVector, "
                     f"ProductMixture or Mixture; got {initial!r}")
