"""The physical setup: a frozen, validated description of one open XXX chain.

Conventions (``docs/model.md``): sites ``i = 1..N``, bonds ``l = 1..N-1`` (bond ``l``
joins sites ``l`` and ``l+1``); a magnon is a down spin; temperatures are in
units of ``eps0 = pi^2 rho^2 / 6``; rates and times in units of ``J0``.

Internally (sector bases, kernels) sites are 0-based; every table and every
public argument is 1-based.

The parts of a model live in their own modules and are re-exported here:
:mod:`~thermospin_mc.physics.profiles` (temperature profiles),
:mod:`~thermospin_mc.physics.states` (initial states), :mod:`~thermospin_mc.physics.channels`
(jump channels); this module holds :class:`ChainModel` and the presets.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from .. import _validate as v
from .channels import (
    Channel,
    Dephasing,
    Loss,
    Pump,
    channel_from_dict,
    normalise_channels,
    spec_of,
)
from .profiles import (
    PROFILE_TYPES,
    BondCouplings,
    BondTemperatures,
    LinearProfile,
    StepProfile,
    UniformProfile,
    profile_from_dict,
)
from .states import (
    Magnons,
    Mixture,
    ProductMixture,
    StateVector,
    initial_from_dict,
    magnons,
    mixture,
    normalise_initial,
    product_mixture,
)
from .thermal import alpha_ratio

__all__ = [
    "UniformProfile", "StepProfile", "LinearProfile", "BondTemperatures", "BondCouplings",
    "Magnons", "magnons", "StateVector", "ProductMixture", "product_mixture", "Mixture",
    "mixture", "ChainModel", "Channel", "Loss", "Pump", "Dephasing", "paper_model",
    "boundary_driven", "with_dephasing", "channel_from_dict", "profile_from_dict",
    "initial_from_dict", "PAPER_GAMMA", "PAPER_GAMMA_PUMP",
]

PAPER_GAMMA = 3.102
PAPER_GAMMA_PUMP = 0.620

#: Full-space exporters of a model, by format: :mod:`thermospin_mc.core.interop` (a layer
#: above, it needs the sector bases) registers ``"qutip"`` when the package is imported.
EXPORTERS: dict = {}


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
    initial : "all_up" | Magnons | StateVector | ProductMixture | Mixture | int | sequence
        Initial state: a pure product of magnon positions (an int or a sequence
        of ints are magnon sites), a pure state inside one sector, or a mixture
        diagonal in the site basis.
    anisotropy : float or sequence of N - 1 floats
        XXZ anisotropy Delta_l multiplying the ``sz sz`` term of bond ``l``
        (1 = XXX, the paper); one number applies to every bond.
    fields : sequence of N floats, optional
        Site fields ``h_i``: ``H += sum_i (h_i / 2) sigma^z_i`` (default 0).
    channels : sequence of Loss, Pump, Dephasing, optional
        Jump channels at any 1-based sites, each with its own rate ``> 0``.
        Exclusive with the paper's shorthand ``gamma`` / ``gamma_pump`` /
        ``pump_site``. After construction ``model.channels`` holds the
        :class:`Channel` records (name, kind, 0-based site, rate) in the given
        order (for the shorthand: ``loss_left``, ``loss_right``, ``pump``).
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
    anisotropy: float | tuple = 1.0
    fields: tuple | None = None
    channels: tuple | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        N = v.integer("N", self.N, lo=2)
        set_(self, "N", N)
        if not isinstance(self.profile, PROFILE_TYPES):
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
        # anisotropy: one number (kept as a float, the paper's form) or one per bond
        if np.ndim(self.anisotropy) == 0:
            set_(self, "anisotropy", v.real("anisotropy", self.anisotropy))
            aniso = np.full(N - 1, self.anisotropy)
        else:
            aniso = v.real_array("anisotropy", self.anisotropy)
            if aniso.size != N - 1:
                raise ValueError(f"anisotropy must be one number or N - 1 = {N - 1} values "
                                 f"(one per bond), got {aniso.size}")
            set_(self, "anisotropy", tuple(float(x) for x in aniso))
        aniso.setflags(write=False)
        set_(self, "_aniso", aniso)
        # site fields
        if self.fields is None:
            h = np.zeros(N)
        else:
            h = v.real_array("fields", self.fields)
            if h.size != N:
                raise ValueError(f"fields must have N = {N} values (one per site), "
                                 f"got {h.size}")
            h = h + 0.0  # no negative zeros
        set_(self, "fields", None if not np.any(h) else tuple(float(x) for x in h))
        h.setflags(write=False)
        set_(self, "_h", h)
        # channels: explicit list, or the paper's shorthand
        if self.channels is not None:
            given = [k for k, val in (("gamma", self.gamma), ("gamma_pump", self.gamma_pump),
                                      ("pump_site", self.pump_site)) if val not in (None, 0.0)]
            if given:
                raise ValueError(f"give either channels or the paper's shorthand "
                                 f"gamma/gamma_pump/pump_site, not both (got channels and "
                                 f"{', '.join(given)})")
            set_(self, "pump_site", None)
            chans = normalise_channels(self.channels, N)
            set_(self, "_explicit", bool(chans))
        else:
            set_(self, "_explicit", False)
            if self.pump_site is None:
                if self.gamma_pump > 0 and N % 2 == 0:
                    raise ValueError(f"pump_site must be given for even N (N = {N}) when "
                                     f"gamma_pump > 0; allowed 1..{N}")
                pump_site = (N + 1) // 2 if N % 2 == 1 else None
            else:
                pump_site = v.integer("pump_site", self.pump_site, lo=1, hi=N)
            set_(self, "pump_site", pump_site)
            chans = []
            if self.gamma > 0:
                chans.append(Channel("loss_left", "loss", 0, self.gamma))
                chans.append(Channel("loss_right", "loss", N - 1, self.gamma))
            if self.gamma_pump > 0:
                chans.append(Channel("pump", "pump", self.pump_site - 1, self.gamma_pump))
        set_(self, "channels", tuple(chans))
        # couplings
        T_bonds = self.profile.bond_temperatures(N)
        if T_bonds is None:
            a = np.array(self.profile.values, dtype=float)
            if a.size != N - 1:
                raise ValueError(f"couplings must have N - 1 = {N - 1} values, got {a.size}")
        else:
            a = np.atleast_1d(np.asarray(
                alpha_ratio(T_bonds, N=self.alpha_N, rho=self.rho, method=self.alpha_method),
                dtype=float))
        a.setflags(write=False)
        set_(self, "_a", a)
        set_(self, "_T_bonds", None if T_bonds is None else np.asarray(T_bonds, dtype=float))
        # initial state
        set_(self, "initial", normalise_initial(self.initial, N))

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
    def bond_anisotropy(self) -> np.ndarray:
        """Anisotropy ``Delta_l`` of every bond (length ``N - 1``, read-only)."""
        return self._aniso

    @property
    def site_fields(self) -> np.ndarray:
        """Site fields ``h_i`` (length ``N``, read-only; zeros by default)."""
        return self._h

    def channel(self, name: str) -> Channel:
        """The channel called ``name``."""
        for ch in self.channels:
            if ch.name == name:
                return ch
        raise ValueError(f"channel must be one of {[c.name for c in self.channels]}, "
                         f"got {name!r}")

    @property
    def explicit_channels(self) -> bool:
        """Whether the channels were given as a list (``channels=``) rather than by the
        paper's shorthand ``gamma`` / ``gamma_pump`` / ``pump_site``."""
        return self._explicit

    def has_kind(self, kind: str) -> bool:
        """Whether any channel is of ``kind`` (``loss``, ``pump`` or ``dephasing``)."""
        return any(ch.kind == kind for ch in self.channels)

    @property
    def is_closed(self) -> bool:
        return not self.channels

    @property
    def is_mixed(self) -> bool:
        """Whether the initial state is a mixture (not a pure state)."""
        return isinstance(self.initial, (ProductMixture, Mixture))

    @property
    def initial_sectors(self) -> list[int]:
        """Magnon numbers the initial state has weight in (ascending)."""
        ini = self.initial
        if isinstance(ini, Magnons):
            return [len(ini.sites)]
        if isinstance(ini, StateVector):
            return [ini.m]
        if isinstance(ini, ProductMixture):
            p = np.asarray(ini.p)
            return list(range(int(np.sum(p >= 1.0)), int(np.sum(p > 0.0)) + 1))
        return sorted({len(c) for c in ini.configurations})

    @property
    def initial_sector(self) -> int:
        """Magnon number of the initial state (the largest one for a mixture)."""
        return self.initial_sectors[-1]

    def reachable_sectors(self) -> list[int]:
        """Magnon numbers the dynamics can visit from the initial state."""
        secs = self.initial_sectors
        lo = 0 if self.has_kind("loss") else secs[0]
        hi = self.N if self.has_kind("pump") else secs[-1]
        return list(range(lo, hi + 1))

    def with_(self, **changes) -> ChainModel:
        """A copy with some parameters changed (validated again).

        Giving ``channels`` replaces the shorthand ``gamma``/``gamma_pump``/
        ``pump_site`` (unless those are given too); giving one of those replaces
        an explicit channel list.
        """
        params = {k: getattr(self, k) for k in (
            "N", "profile", "rho", "alpha_method", "gamma", "gamma_pump",
            "pump_site", "initial", "anisotropy", "fields")}
        params["alpha_N"] = None if self.alpha_N == self.N else self.alpha_N
        shorthand = ("gamma", "gamma_pump", "pump_site")
        if self._explicit:
            params["channels"] = tuple(spec_of(ch) for ch in self.channels)
            params.update(gamma=0.0, gamma_pump=0.0, pump_site=None)
            if any(k in changes for k in shorthand) and "channels" not in changes:
                params["channels"] = None
        elif changes.get("channels") is not None:
            params.update(gamma=0.0, gamma_pump=0.0, pump_site=None)
        # a changed N moves the default (centre) pump site along; an explicit site is
        # kept (for even N the site is always explicit, there is no default centre)
        if ("N" in changes and "pump_site" not in changes and self.N % 2 == 1
                and self.pump_site == (self.N + 1) // 2):
            params["pump_site"] = None
        params.update(changes)
        return ChainModel(**params)

    def to_dict(self) -> dict:
        """JSON-serialisable metadata: everything needed to rebuild the model
        (:meth:`from_dict`). Keys of the general chain (per-bond anisotropy,
        ``fields``, ``channels``) appear only when they are used, so the paper's
        models keep their metadata and fingerprints."""
        d = {
            "N": self.N, "rho": self.rho, "profile": self.profile.to_dict(),
            "alpha_method": self.alpha_method, "alpha_N": self.alpha_N,
            "bond_temperatures": None if self._T_bonds is None else self._T_bonds.tolist(),
            "couplings": self._a.tolist(), "gamma": self.gamma,
            "gamma_pump": self.gamma_pump, "pump_site": self.pump_site,
            "initial": self.initial.to_dict(),
            "anisotropy": (self.anisotropy if isinstance(self.anisotropy, float)
                           else list(self.anisotropy)),
        }
        if self.fields is not None:
            d["fields"] = list(self.fields)
        if self._explicit:
            d["channels"] = [ch.to_dict() for ch in self.channels]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ChainModel:
        """Rebuild a model from :meth:`to_dict` output (e.g. a result's metadata)."""
        if not isinstance(d, dict) or "N" not in d:
            raise ValueError("model metadata must be a dict with at least the key 'N'")
        if "schedule" in d:
            raise ValueError("model metadata holds a schedule of stages; rebuild it with "
                             "Schedule.from_dict")
        prof = profile_from_dict(d.get("profile", {"kind": "uniform", "T": 0.0}))
        kw = {"N": d["N"], "profile": prof, "rho": d.get("rho", 1.0),
              "alpha_method": d.get("alpha_method", "canonical"),
              "alpha_N": None if d.get("alpha_N") in (None, d["N"]) else d["alpha_N"],
              "initial": initial_from_dict(d.get("initial", {"kind": "magnons", "sites": []})),
              "anisotropy": d.get("anisotropy", 1.0), "fields": d.get("fields")}
        if d.get("channels"):
            kw["channels"] = [channel_from_dict(c) for c in d["channels"]]
        else:
            kw.update(gamma=d.get("gamma", 0.0), gamma_pump=d.get("gamma_pump", 0.0),
                      pump_site=d.get("pump_site") if d.get("gamma_pump", 0.0) > 0 else None)
        model = cls(**kw)
        if d.get("couplings") is not None and not np.allclose(
                model.couplings, d["couplings"], rtol=1e-12, atol=0.0):
            # the a(T) curve changed since the metadata was written: keep its couplings
            model = model.with_(profile=BondCouplings(tuple(d["couplings"])))
        return model

    def to_qutip(self):
        """``(H, c_ops, rho0)`` as QuTiP objects in the full-space order of docs/model.md
        section 12 (:func:`thermospin_mc.core.interop.to_qutip`; needs QuTiP, N <= 14)."""
        return EXPORTERS["qutip"](self)

    def fingerprint(self) -> str:
        """Stable hash of the model (for checkpoints and merging)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def __eq__(self, other):
        return isinstance(other, ChainModel) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(self.fingerprint())

    def __repr__(self):
        if self._explicit:
            chans = ", ".join(f"{c.name}({c.rate:g})" for c in self.channels)
            return (f"ChainModel(N={self.N}, profile={self.profile!r}, channels=[{chans}], "
                    f"anisotropy={self.anisotropy}, fields={self.fields}, "
                    f"initial={self.initial!r}, alpha_method={self.alpha_method!r})")
        return (f"ChainModel(N={self.N}, profile={self.profile!r}, gamma={self.gamma}, "
                f"gamma_pump={self.gamma_pump}, pump_site={self.pump_site}, "
                f"initial={self.initial!r}, alpha_method={self.alpha_method!r})")


# --------------------------------------------------------------------------- paper presets
def paper_model(scenario: str, *, N: int = 7, delta_T: float = 2.0,
                gamma: float = PAPER_GAMMA, gamma_pump: float = PAPER_GAMMA_PUMP,
                alpha_method: str = "canonical", pump_site: int | None = None) -> ChainModel:
    """The paper's scenarios (docs/model.md section 8), all with ``T1 = 0``.

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


def boundary_driven(N: int, rate_in: float, rate_out: float, *, profile=None,
                    anisotropy=1.0, fields=None, initial="all_up", **kwargs) -> ChainModel:
    """Boundary-driven chain: pump at site 1 (``rate_in``), loss at site N (``rate_out``).

    Magnons enter at the left end and leave at the right end, the usual
    transport set-up. ``profile`` defaults to a uniform chain at ``T = 0``
    (all couplings 1); further keyword arguments go to :class:`ChainModel`.
    Channel names are ``pump@1`` and ``loss@N``.
    """
    N = v.integer("N", N, lo=2)
    rate_in = v.real("rate_in", rate_in, lo=0.0, lo_open=True)
    rate_out = v.real("rate_out", rate_out, lo=0.0, lo_open=True)
    return ChainModel(N=N, profile=UniformProfile(0.0) if profile is None else profile,
                      anisotropy=anisotropy, fields=fields, initial=initial,
                      channels=[Pump(site=1, rate=rate_in), Loss(site=N, rate=rate_out)],
                      **kwargs)


def with_dephasing(model: ChainModel, rate: float, sites=None) -> ChainModel:
    """``model`` with dephasing ``sqrt(rate) sigma^z_i`` added at ``sites`` (1-based;
    default every site). The model's channels (with their names) are kept."""
    if not isinstance(model, ChainModel):
        raise ValueError(f"model must be a ChainModel, got {type(model).__name__}")
    rate = v.real("dephasing rate", rate, lo=0.0, lo_open=True)
    sites = range(1, model.N + 1) if sites is None else (
        [sites] if isinstance(sites, (int, np.integer)) else list(sites))
    if not len(sites):
        raise ValueError("sites must name at least one site")
    specs = [spec_of(ch) for ch in model.channels]
    specs += [Dephasing(site=int(s), rate=rate) for s in sites]
    return model.with_(channels=specs)
