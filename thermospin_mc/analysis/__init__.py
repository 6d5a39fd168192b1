"""Statistics of jump records and steady states (docs/model.md section 7, docs/statistics.md).

Everything here works on the tidy tables of a run (no physics of its own):

- jump tables (``Result.jumps``, or ``jumps.parquet``/``jumps.csv`` written by
  ``thermospin-mc run --record-jumps``) with columns ``traj, t, channel, site,
  m_before``; ``traj`` is the 0-based trajectory index and channels are
  ``loss_left``, ``loss_right`` and ``pump``;
- kept trajectory rows (``mcsolve(..., checkpoint=Checkpointing(keep_trajectories=True))``).

Error bars. Trajectories are independent, so any per-trajectory quantity (the
number of jumps in a window, a trajectory's time average) is one independent
sample and its standard error over trajectories is exact in the large-sample
sense, however strongly correlated the events inside one trajectory are. For a
single long trajectory :func:`batch_means` estimates the error of a time average
from non-overlapping batches whose length is chosen from the integrated
autocorrelation time.

The functions live in three modules, one concept each, and are gathered here
(``thermospin_mc.analysis.<name>`` is the public path):
:mod:`~thermospin_mc.analysis.jumpstats` (jump tables: exit sides, waiting times,
counts, counting statistics), :mod:`~thermospin_mc.analysis.jumpcompare` (the same
beside the exact solvers) and :mod:`~thermospin_mc.analysis.timeavg` (time averages of
kept trajectory rows, batch means).

A jump table contains only the jumps up to the last output time of the run; a
trajectory without any jump in it has no row at all. That is why functions that
count trajectories take ``ntraj`` explicitly (it is in the table's metadata,
``table.attrs["thermospin_mc"]["ntraj"]``, but a filtered table keeps stale
metadata, so it is never read silently).
"""

from __future__ import annotations

from .jumpcompare import CountingComparison, compare_counting_statistics, steady_state_from_jumps
from .jumpstats import (
    CHANNELS,
    WaitingTimes,
    counting_statistics,
    exit_sides,
    jump_counts,
    waiting_times,
)
from .timeavg import BatchMeans, batch_means, integrated_autocorr_time, time_average

__all__ = [
    "CHANNELS", "exit_sides", "waiting_times", "WaitingTimes", "jump_counts",
    "counting_statistics", "steady_state_from_jumps", "time_average", "batch_means",
    "BatchMeans", "integrated_autocorr_time", "compare_counting_statistics",
    "CountingComparison",
]
