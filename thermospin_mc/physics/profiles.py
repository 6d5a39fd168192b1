"""Temperature profiles of a chain: how each bond gets its temperature (or its
coupling), docs/model.md section 4. A profile maps ``N`` to the ``N - 1`` bond
temperatures in eps0 units (``BondCouplings`` gives the couplings directly and
returns ``None``); :class:`~thermospin_mc.physics.model.ChainModel` turns temperatures
into couplings with a(T) (:mod:`thermospin_mc.physics.thermal`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _validate as v

__all__ = ["UniformProfile", "StepProfile", "LinearProfile", "BondTemperatures",
           "BondCouplings", "PROFILE_TYPES", "profile_from_dict"]


@dataclass(frozen=True)
class UniformProfile:
    """Every bond at the same temperature ``T`` (units of eps0)."""

    T: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "T", v.real("T", self.T, lo=0.0))

    def bond_temperatures(self, N: int) -> np.ndarray:
        return np.full(N - 1, self.T)

    def to_dict(self) -> dict:
        return {"kind": "uniform", "T": self.T}


@dataclass(frozen=True)
class StepProfile:
    """Paper's closed-system step: ``T_l = T1`` for ``l < (N+1)/2``, else ``T2``."""

    T1: float = 0.0
    T2: float = 2.0

    def __post_init__(self):
        object.__setattr__(self, "T1", v.real("T1", self.T1, lo=0.0))
        object.__setattr__(self, "T2", v.real("T2", self.T2, lo=0.0))

    def bond_temperatures(self, N: int) -> np.ndarray:
        l = np.arange(1, N)
        return np.where(l < (N + 1) / 2, self.T1, self.T2)

    def to_dict(self) -> dict:
        return {"kind": "step", "T1": self.T1, "T2": self.T2}


@dataclass(frozen=True)
class LinearProfile:
    """Paper's open-system ramp ``T_l = T1 + (T2 - T1)(l - 1)/(N - 2)``.

    The outer bonds sit exactly at ``T1`` and ``T2``; for ``N = 2`` (one bond)
    the single bond takes the mean temperature.
    """

    T1: float = 0.0
    T2: float = 2.0

    def __post_init__(self):
        object.__setattr__(self, "T1", v.real("T1", self.T1, lo=0.0))
        object.__setattr__(self, "T2", v.real("T2", self.T2, lo=0.0))

    def bond_temperatures(self, N: int) -> np.ndarray:
        if N == 2:
            return np.array([(self.T1 + self.T2) / 2])
        l = np.arange(1, N)
        return np.where(l == N - 1, self.T2, self.T1 + (self.T2 - self.T1) * (l - 1) / (N - 2))

    def to_dict(self) -> dict:
        return {"kind": "linear", "T1": self.T1, "T2": self.T2}


def _set_bond_values(profile, label: str) -> None:
    """Validate a per-bond profile's ``values`` (``>= 0``) and store them as floats."""
    arr = v.real_array(label, profile.values, lo=0.0)
    object.__setattr__(profile, "values", tuple(float(x) for x in arr))


@dataclass(frozen=True)
class BondTemperatures:
    """User-given temperature of every bond (``N - 1`` values, units of eps0)."""

    values: tuple

    def __post_init__(self):
        _set_bond_values(self, "bond temperatures")

    def bond_temperatures(self, N: int) -> np.ndarray:
        if len(self.values) != N - 1:
            raise ValueError(f"bond temperatures must have N - 1 = {N - 1} values, "
                             f"got {len(self.values)}")
        return np.array(self.values)

    def to_dict(self) -> dict:
        return {"kind": "bond_temperatures", "values": list(self.values)}


@dataclass(frozen=True)
class BondCouplings:
    """User-given couplings ``a_l`` of every bond (``N - 1`` values, units of J0)."""

    values: tuple

    def __post_init__(self):
        _set_bond_values(self, "couplings")

    def bond_temperatures(self, N: int):
        return None

    def to_dict(self) -> dict:
        return {"kind": "bond_couplings", "values": list(self.values)}


#: Every profile type, for ``isinstance`` checks.
PROFILE_TYPES = (UniformProfile, StepProfile, LinearProfile, BondTemperatures, BondCouplings)


def profile_from_dict(d: dict):
    """A profile object from its ``to_dict`` form."""
    kind = d.get("kind")
    if kind == "uniform":
        return UniformProfile(d["T"])
    if kind == "step":
        return StepProfile(d["T1"], d["T2"])
    if kind == "linear":
        return LinearProfile(d["T1"], d["T2"])
    if kind == "bond_temperatures":
        return BondTemperatures(tuple(d["values"]))
    if kind == "bond_couplings":
        return BondCouplings(tuple(d["values"]))
    raise ValueError(f"profile kind must be one of uniform, step, linear, bond_temperatures, "
                     f"bond_couplings; got {kind!r}")
