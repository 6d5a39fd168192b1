"""thermospin_mc: quantum-jump trajectories and exact block solvers for open
Heisenberg chains whose couplings are set by a temperature profile.

Physics conventions: ``docs/model.md`` (units hbar = m = k_B = 1, temperatures in
eps0 = pi^2 rho^2 / 6, times and rates in J0 = alpha_1 / g).
"""

from . import analysis, interop, io, observables  # noqa: E402
from ._version import __version__
from .blockstate import BlockState  # noqa: E402
from .cloning import cloning  # noqa: E402
from .correlations import correlation, spectrum  # noqa: E402
from .doob import DoobProcess, doob  # noqa: E402
from .driver import Checkpointing, Cluster, RunTerminated, Target, mcsolve  # noqa: E402
from .exact import exit_probabilities, mesolve, sesolve, steadystate  # noqa: E402
from .fcs import (  # noqa: E402
    exact_counting_statistics,
    rate_function,
    scgf,
    waiting_time_bins,
    waiting_time_distribution,
)
from .model import (  # noqa: E402
    BondCouplings,
    BondTemperatures,
    ChainModel,
    Channel,
    Dephasing,
    LinearProfile,
    Loss,
    Magnons,
    Mixture,
    ProductMixture,
    Pump,
    StateVector,
    StepProfile,
    UniformProfile,
    boundary_driven,
    magnons,
    mixture,
    paper_model,
    product_mixture,
    with_dephasing,
)
from .operators import Operator  # noqa: E402
from .relaxation import liouvillian_spectrum, relaxation_time  # noqa: E402
from .results import Result, merge, read_result  # noqa: E402
from .schedule import Schedule  # noqa: E402
from .sectors import SectorSpace  # noqa: E402
from .thermal import alpha_ratio  # noqa: E402

__all__ = [
    "alpha_ratio", "ChainModel", "UniformProfile", "StepProfile", "LinearProfile",
    "BondTemperatures", "BondCouplings", "Magnons", "magnons", "StateVector", "paper_model",
    "SectorSpace", "Result", "mcsolve", "merge", "mesolve", "sesolve", "steadystate",
    "exit_probabilities", "read_result", "exact_counting_statistics", "scgf", "rate_function",
    "waiting_time_distribution", "waiting_time_bins",
    "analysis", "io",
    "Channel", "Loss", "Pump", "Dephasing", "ProductMixture", "product_mixture", "Mixture",
    "mixture", "boundary_driven", "with_dephasing", "observables",
    "Cluster", "Checkpointing", "Target", "RunTerminated", "__version__",
    "Operator", "BlockState", "interop", "Schedule", "cloning",
    "correlation", "spectrum",
    "liouvillian_spectrum", "relaxation_time",
    "doob", "DoobProcess",
]
