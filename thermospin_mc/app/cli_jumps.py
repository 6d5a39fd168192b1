"""The jump-count subcommands of :mod:`thermospin_mc.cli`: ``stats`` (statistics of
a recorded jump table, :mod:`.cli_stats`), ``fcs`` (exact counting statistics,
optionally beside a jump table, :mod:`.cli_fcs`) and ``rare`` (theta(s) and the
tilted current by cloning, optionally beside the exact values, :mod:`.cli_rare`).
:func:`add_stats`, :func:`add_fcs` and :func:`add_rare` register them on the
parser; ``fcs`` and ``rare`` share the ``--counts`` syntax of :mod:`.cli_counts`.
This module gathers them under one name.
"""

from __future__ import annotations

from .cli_counts import NET_SPIN, default_counts  # re-export
from .cli_fcs import add_fcs  # re-export
from .cli_rare import SLOPE_STEP, add_rare  # re-export
from .cli_stats import add_stats  # re-export

__all__ = ["add_stats", "add_fcs", "add_rare", "default_counts", "NET_SPIN", "SLOPE_STEP"]
