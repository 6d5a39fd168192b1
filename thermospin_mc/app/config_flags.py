"""The spelling shared by flags and TOML keys, and the one refusal type.

Every flag ``--some-key`` is the TOML key ``some_key`` (:func:`flag` turns one
into the other); every bad flag or key is refused with a :class:`ConfigError`
of one line naming it (exit status 2).
"""

from __future__ import annotations

__all__ = ["ConfigError", "flag"]


class ConfigError(ValueError):
    """Bad command-line flag or TOML key (one line, exit status 2)."""


def flag(key: str) -> str:
    """The command-line spelling of a key (``delta_T`` -> ``--delta-T``)."""
    if key == "compare":
        return "--no-compare"
    if key == "progress":
        return "--no-progress"
    return "--" + key.replace("_", "-")
