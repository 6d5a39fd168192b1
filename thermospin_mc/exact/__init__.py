"""The exact solvers (layer 3) on the block-diagonal density matrix: evolution,
steady state, counting statistics, waiting times, the Doob process,
correlations and spectra, the Liouvillian spectrum.

They never import the trajectory engine (``trajectories`` sits above): they are
the reference the trajectories are tested against. The names of
``thermospin_mc.exact`` before the folders existed are re-exported here.
"""

from .solvers import (
    CHEBYSHEV_MIN_SIZE,
    DIRECT_STEADY_LIMIT,
    BlockLayout,
    exit_probabilities,
    liouvillian,
    mesolve,
    sesolve,
    steadystate,
)

__all__ = ["sesolve", "mesolve", "steadystate", "exit_probabilities", "BlockLayout", "liouvillian",
           "CHEBYSHEV_MIN_SIZE", "DIRECT_STEADY_LIMIT"]
