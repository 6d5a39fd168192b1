"""Jump channels (docs/model.md section 6): the user's specs (:class:`Loss`,
:class:`Pump`, :class:`Dephasing`, 1-based sites) and the engine's record
(:class:`Channel`: name, kind, 0-based site, rate). A new channel kind is added
here (its spec class, ``CHANNEL_KINDS``, ``SPEC_TYPES`` and ``Channel.dm``); see
docs/architecture.md for the other places it touches.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import _validate as v

__all__ = ["Channel", "ChannelSpec", "Loss", "Pump", "Dephasing", "CHANNEL_KINDS",
           "SPEC_TYPES", "spec_of", "channel_from_dict", "normalise_channels"]

#: Channel kinds the engine knows.
CHANNEL_KINDS = ("loss", "pump", "dephasing")


@dataclass(frozen=True)
class Channel:
    """One jump channel as the engine sees it.

    ``kind`` is ``"loss"`` (``sqrt(rate) s+_site``), ``"pump"`` (``sqrt(rate) s-_site``)
    or ``"dephasing"`` (``sqrt(rate) sigma^z_site``); ``site`` is 0-based; ``name``
    as in tables.
    """

    name: str
    kind: str
    site: int
    rate: float

    @property
    def dm(self) -> int:
        """Change of the magnon number by one jump: -1 (loss), +1 (pump), 0 (dephasing)."""
        return {"loss": -1, "pump": +1}.get(self.kind, 0)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "site": self.site + 1, "rate": self.rate, "name": self.name}


@dataclass(frozen=True)
class ChannelSpec:
    """Base of the channel specs: a 1-based ``site``, a ``rate`` and an optional
    ``name``; :meth:`channel` validates them for ``N`` sites."""

    site: int
    rate: float
    name: str | None = None
    kind = ""

    def channel(self, N: int) -> Channel:
        site = v.integer(f"{self.kind} site", self.site, lo=1, hi=N)
        rate = v.real(f"{self.kind} rate", self.rate, lo=0.0, lo_open=True)
        name = f"{self.kind}@{site}" if self.name is None else self.name
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ValueError(f"channel name must be a non-empty string without surrounding "
                             f"spaces, got {name!r}")
        return Channel(name, self.kind, site - 1, rate)


@dataclass(frozen=True)
class Loss(ChannelSpec):
    """Loss channel ``L = sqrt(rate) s+_site`` (removes a magnon at the 1-based ``site``)."""

    kind = "loss"


@dataclass(frozen=True)
class Pump(ChannelSpec):
    """Pump channel ``L = sqrt(rate) s-_site`` (adds a magnon at the 1-based ``site``)."""

    kind = "pump"


@dataclass(frozen=True)
class Dephasing(ChannelSpec):
    """Dephasing channel ``L = sqrt(rate) sigma^z_site`` (keeps the magnon sector)."""

    kind = "dephasing"


SPEC_TYPES = {"loss": Loss, "pump": Pump, "dephasing": Dephasing}


def spec_of(ch: Channel) -> ChannelSpec:
    """The user spec (``Loss``/``Pump``/``Dephasing``) that builds channel ``ch``."""
    return SPEC_TYPES[ch.kind](site=ch.site + 1, rate=ch.rate, name=ch.name)




def channel_from_dict(d: dict) -> ChannelSpec:
    """A channel spec from ``{"kind": "loss" | "pump" | "dephasing", "site": i,
    "rate": r, "name": optional}`` (a TOML ``[[model.channel]]`` table, or
    :meth:`Channel.to_dict`). Site and rate are validated by the model."""
    if not isinstance(d, dict):
        raise ValueError(f"a channel must be a table with kind, site, rate; got {d!r}")
    unknown = sorted(set(d) - {"kind", "site", "rate", "name"})
    if unknown:
        raise ValueError(f"unknown channel key(s) {unknown}; allowed: kind, site, rate, name")
    missing = [k for k in ("kind", "site", "rate") if k not in d]
    if missing:
        raise ValueError(f"channel {d!r} lacks {', '.join(missing)}")
    if d["kind"] not in SPEC_TYPES:
        raise ValueError(f"channel kind must be one of {CHANNEL_KINDS}, got {d['kind']!r}")
    return SPEC_TYPES[d["kind"]](site=d["site"], rate=d["rate"], name=d.get("name"))


def normalise_channels(channels, N: int) -> list[Channel]:
    """Validated :class:`Channel` records for ``N`` sites from specs or channels
    (names must be unique)."""
    if isinstance(channels, (Channel, ChannelSpec)):
        channels = [channels]
    out = []
    for c in channels:
        if isinstance(c, Channel):
            c = spec_of(c)
        if not isinstance(c, ChannelSpec) or type(c) is ChannelSpec:
            raise ValueError(f"channels must be Loss, Pump or Dephasing objects, got {c!r}")
        out.append(c.channel(N))
    names = [c.name for c in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"channel names must be unique, got duplicates {dup} (give name=...)")
    return out
