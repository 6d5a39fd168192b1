"""The physical setup: a frozen, validated description of one open XXX chain.

Conventions (``MODEL.md``): sites ``i = 1..N``, bonds ``l = 1..N-1`` (bond ``l``
joins sites ``l`` and ``l+1``); a magnon is a down spin; temperatures are in
units of ``eps0 = pi^2 rho^2 / 6``; rates and times in units of ``J0``.

Internally (sector bases, kernels) sites are 0-based; every table and every
public argument is 1-based.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from math import comb

import numpy as np

from . import _validate as v

__all__ = [
    "UniformProfile", "StepProfile", "LinearProfile", "BondTemperatures", "BondCouplings",
    "Magnons", "magnons", "StateVector", "ChainModel", "Channel", "paper_model",
    "PAPER_GAMMA", "PAPER_GAMMA_PUMP",
]

PAPER_GAMMA = 3.102
PAPER_GAMMA_PUMP = 0.620


# --------------------------------------------------------------------------- profiles
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


@dataclass(frozen=True)
class BondTemperatures:
    """User-given temperature of every bond (``N - 1`` values, units of eps0)."""

    values: tuple

    def __post_init__(self):
        arr = v.real_array("bond temperatures", self.values, lo=0.0)
        object.__setattr__(self, "values", tuple(float(x) for x in arr))

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
        arr = v.real_array("couplings", self.values, lo=0.0)
        object.__setattr__(self, "values", tuple(float(x) for x in arr))

    def bond_temperatures(self, N: int):
        return None

    def to_dict(self) -> dict:
        return {"kind": "bond_couplings", "values": list(self.values)}


_PROFILE_TYPES = (UniformProfile, StepProfile, LinearProfile, BondTemperatures, BondCouplings)


# --------------------------------------------------------------------------- initial states
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
    :meth:`thermospin_mc.sectors.SectorSpace.basis`): colexicographic order of
    the occupied-site sets. The vector is normalised on use.
    """

    m: int
    amplitudes: tuple

    def to_dict(self) -> dict:
        amps = np.asarray(self.amplitudes, dtype=complex)
        return {"kind": "state_vector", "m": self.m,
                "re": amps.real.tolist(), "im": amps.imag.tolist()}


@dataclass(frozen=True)
class Channel:
    """One jump channel: ``kind`` is ``"loss"`` (sqrt(rate) s+_site) or ``"pump"``
    (sqrt(rate) s-_site); ``site`` is 0-based; ``name`` as in tables."""

    name: str
    kind: str
    site: int
    rate: float

    @property
    def dm(self) -> int:
        return -1 if self.kind == "loss" else +1


# --------------------------------------------------------------------------- the model
@dataclass(frozen=True, eq=False)
class ChainModel:
    """An open inhomogeneous XXX chain with temperature-set couplings.

    Parameters
    ----------
    N : int
        Number of sites (atoms), ``N >= 2``.
    profile : profile object
        ``UniformProfile``, ``StepProfile``, ``LinearProfile``, ``BondTemperatures``
        or ``BondCouplings``. Temperatures are in units of eps0.
    rho : float
        Density of the gas (``> 0``); enters a(T) only.
    alpha_method : str
        Which a(T) curve maps temperatures to couplings: ``"canonical"``
        (default, exact for this N), ``"thermodynamic"`` or ``"sommerfeld"``.
    alpha_N : int, optional
        Particle number used in the a(T) curve (default: ``N``).
    gamma : float
        Edge-loss rate (``>= 0``): ``L = sqrt(gamma) s+_1`` and ``sqrt(gamma) s+_N``.
    gamma_pump : float
        Central pump rate (``>= 0``): ``L = sqrt(gamma_pump) s-_c``.
    pump_site : int, optional
        1-based pump site ``c``; default ``(N+1)/2`` for odd N. Required for even N
        when ``gamma_pump > 0``.
    initial : "all_up" | Magnons | StateVector | int | sequence of int
        Initial pure state; an int or a sequence of ints are magnon sites.
    anisotropy : float
        XXZ anisotropy Delta multiplying the ``sz sz`` term (1 = XXX, the paper).
    """

    N: int
    profile: object = field(default_factory=UniformProfile)
    rho: float = 1.0
    alpha_method: str = "canonical"
    alpha_N: int | None = None
    gamma: float = 0.0
    gamma_pump: float = 0.0
    pump_site: int | None = None
    initial: object = "all_up"
    anisotropy: float = 1.0

    def __post_init__(self):
        set_ = object.__setattr__
        N = v.integer("N", self.N, lo=2)
        set_(self, "N", N)
        if not isinstance(self.profile, _PROFILE_TYPES):
            raise ValueError("profile must be one of UniformProfile, StepProfile, LinearProfile,"
                             f" BondTemperatures, BondCouplings; got {self.profile!r}")
        set_(self, "rho", v.real("rho", self.rho, lo=0.0, lo_open=True))
        allowed = ("canonical", "thermodynamic", "sommerfeld")
        if self.alpha_method not in allowed:
            raise ValueError(f"alpha_method must be one of {allowed}, got {self.alpha_method!r}")
        set_(self, "alpha_N", N if self.alpha_N is None
             else v.integer("alpha_N", self.alpha_N, lo=1))
        set_(self, "gamma", v.real("gamma", self.gamma, lo=0.0))
        set_(self, "gamma_pump", v.real("gamma_pump", self.gamma_pump, lo=0.0))
        set_(self, "anisotropy", v.real("anisotropy", self.anisotropy))
        # pump site
        if self.pump_site is None:
            if self.gamma_pump > 0 and N % 2 == 0:
                raise ValueError(f"pump_site must be given for even N (N = {N}) when "
                                 f"gamma_pump > 0; allowed 1..{N}")
            pump_site = (N + 1) // 2 if N % 2 == 1 else None
        else:
            pump_site = v.integer("pump_site", self.pump_site, lo=1, hi=N)
        set_(self, "pump_site", pump_site)
        # couplings
        T_bonds = self.profile.bond_temperatures(N)
        if T_bonds is None:
            a = np.array(self.profile.values, dtype=float)
            if a.size != N - 1:
                raise ValueError(f"couplings must have N - 1 = {N - 1} values, got {a.size}")
        else:
            from .thermal import alpha_ratio

            a = np.atleast_1d(np.asarray(
                alpha_ratio(T_bonds, N=self.alpha_N, rho=self.rho, method=self.alpha_method),
                dtype=float))
        a.setflags(write=False)
        set_(self, "_a", a)
        set_(self, "_T_bonds", None if T_bonds is None else np.asarray(T_bonds, dtype=float))
        # initial state
        set_(self, "initial", _normalise_initial(self.initial, N))

    # ------------------------------------------------------------------ derived data
    @property
    def couplings(self) -> np.ndarray:
        """Bond couplings ``a_l`` (length ``N - 1``, read-only), units of J0."""
        return self._a

    @property
    def bond_temperatures(self) -> np.ndarray | None:
        """Bond temperatures ``T_l`` in eps0 units (``None`` for user couplings)."""
        return self._T_bonds

    @property
    def channels(self) -> tuple[Channel, ...]:
        """Active jump channels (rate > 0) in fixed order: loss_left, loss_right, pump."""
        ch = []
        if self.gamma > 0:
            ch.append(Channel("loss_left", "loss", 0, self.gamma))
            ch.append(Channel("loss_right", "loss", self.N - 1, self.gamma))
        if self.gamma_pump > 0:
            ch.append(Channel("pump", "pump", self.pump_site - 1, self.gamma_pump))
        return tuple(ch)

    @property
    def is_closed(self) -> bool:
        return not self.channels

    @property
    def initial_sector(self) -> int:
        """Magnon number of the initial state."""
        ini = self.initial
        return len(ini.sites) if isinstance(ini, Magnons) else ini.m

    def reachable_sectors(self) -> list[int]:
        """Magnon numbers the dynamics can visit from the initial sector."""
        m0 = self.initial_sector
        lo = 0 if self.gamma > 0 else m0
        hi = self.N if self.gamma_pump > 0 else m0
        return list(range(lo, hi + 1))

    def with_(self, **changes) -> ChainModel:
        """A copy with some parameters changed (validated again)."""
        params = {k: getattr(self, k) for k in (
            "N", "profile", "rho", "alpha_method", "gamma", "gamma_pump",
            "pump_site", "initial", "anisotropy")}
        params["alpha_N"] = None if self.alpha_N == self.N else self.alpha_N
        # a changed N moves the default (centre) pump site along; an explicit site is
        # kept (for even N the site is always explicit, there is no default centre)
        if ("N" in changes and "pump_site" not in changes and self.N % 2 == 1
                and self.pump_site == (self.N + 1) // 2):
            params["pump_site"] = None
        params.update(changes)
        return ChainModel(**params)

    def to_dict(self) -> dict:
        """JSON-serialisable metadata: everything needed to rebuild the model."""
        return {
            "N": self.N, "rho": self.rho, "profile": self.profile.to_dict(),
            "alpha_method": self.alpha_method, "alpha_N": self.alpha_N,
            "bond_temperatures": None if self._T_bonds is None else self._T_bonds.tolist(),
            "couplings": self._a.tolist(), "gamma": self.gamma,
            "gamma_pump": self.gamma_pump, "pump_site": self.pump_site,
            "initial": self.initial.to_dict(), "anisotropy": self.anisotropy,
        }

    def fingerprint(self) -> str:
        """Stable hash of the model (for checkpoints and merging)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def __eq__(self, other):
        return isinstance(other, ChainModel) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(self.fingerprint())

    def __repr__(self):
        return (f"ChainModel(N={self.N}, profile={self.profile!r}, gamma={self.gamma}, "
                f"gamma_pump={self.gamma_pump}, pump_site={self.pump_site}, "
                f"initial={self.initial!r}, alpha_method={self.alpha_method!r})")


def _normalise_initial(initial, N: int):
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
        return StateVector(m, tuple(complex(x) for x in amps / nrm))
    raise ValueError(f"initial must be 'all_up', magnon sites, Magnons or StateVector; "
                     f"got {initial!r}")


# --------------------------------------------------------------------------- paper presets
def paper_model(scenario: str, *, N: int = 7, delta_T: float = 2.0,
                gamma: float = PAPER_GAMMA, gamma_pump: float = PAPER_GAMMA_PUMP,
                alpha_method: str = "canonical", pump_site: int | None = None) -> ChainModel:
    """The paper's scenarios (MODEL.md section 8), all with ``T1 = 0``.

    ``scenario``:

    - ``"closed"`` (Figs. 3-4): step profile ``T2 = delta_T``, one magnon at the
      centre, no channels;
    - ``"loss"`` (Fig. 5): linear profile ``delta_T``, edge loss ``gamma``, one
      magnon at the centre;
    - ``"pump"`` (Fig. 6): linear profile ``delta_T``, edge loss ``gamma`` and
      central pump ``gamma_pump``, initially all up. For even N there is no
      central site: ``pump_site`` must be given (as for :class:`ChainModel`).

    The initial magnon of ``"closed"`` and ``"loss"`` sits at ``(N + 1) // 2``
    (the centre for odd N, the left one of the two central sites for even N).
    """
    N = v.integer("N", N, lo=2)
    centre = (N + 1) // 2
    if pump_site is not None and scenario != "pump":
        raise ValueError(f"pump_site only applies to the 'pump' scenario, got scenario "
                         f"{scenario!r}")
    if scenario == "closed":
        return ChainModel(N=N, profile=StepProfile(0.0, delta_T), alpha_method=alpha_method,
                          initial=magnons(centre))
    if scenario == "loss":
        return ChainModel(N=N, profile=LinearProfile(0.0, delta_T), alpha_method=alpha_method,
                          gamma=gamma, initial=magnons(centre))
    if scenario == "pump":
        return ChainModel(N=N, profile=LinearProfile(0.0, delta_T), alpha_method=alpha_method,
                          gamma=gamma, gamma_pump=gamma_pump, pump_site=pump_site,
                          initial="all_up")
    raise ValueError(f"scenario must be one of 'closed', 'loss', 'pump', got {scenario!r}")
