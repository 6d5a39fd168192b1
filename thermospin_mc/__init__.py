"""thermospin_mc: quantum-jump trajectories and exact block solvers for open
Heisenberg chains whose couplings are set by a temperature profile.

Physics conventions: ``docs/model.md`` (units hbar = m = k_B = 1, temperatures in
eps0 = pi^2 rho^2 / 6, times and rates in J0 = alpha_1 / g).
"""

import importlib as _importlib
import importlib.abc as _importlib_abc
import importlib.util as _importlib_util
import sys as _sys

from . import analysis, io  # noqa: E402
from ._version import __version__
from .core import interop, observables  # noqa: E402
from .core.blockstate import BlockState  # noqa: E402
from .core.operators import Operator  # noqa: E402
from .core.results import Result, merge, read_result  # noqa: E402
from .core.sectors import SectorSpace  # noqa: E402
from .exact.correlation_spectrum import spectrum  # noqa: E402
from .exact.correlations import correlation  # noqa: E402
from .exact.doob import DoobProcess, doob  # noqa: E402
from .exact.fcs import (  # noqa: E402
    exact_counting_statistics,
    rate_function,
    scgf,
    waiting_time_bins,
    waiting_time_distribution,
)
from .exact.relaxation import liouvillian_spectrum, relaxation_time  # noqa: E402
from .exact.solvers import mesolve, sesolve  # noqa: E402
from .exact.steady import exit_probabilities, steadystate  # noqa: E402
from .physics.model import (  # noqa: E402
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
from .physics.schedule import Schedule  # noqa: E402
from .physics.thermal import alpha_ratio  # noqa: E402
from .trajectories.cloning import cloning  # noqa: E402
from .trajectories.driver import Checkpointing, Cluster, RunTerminated, Target, mcsolve  # noqa: E402

#: Where the modules of the flat layout (before the layer folders) live now. The old
#: paths (``thermospin_mc.model``, ``from thermospin_mc import pack``, ...) keep
#: importing the same module objects; new code uses the folder paths.
MOVED = {
    "canonical": "physics.canonical", "thermal": "physics.thermal",
    "profiles": "physics.profiles", "states": "physics.states",
    "channels": "physics.channels", "model": "physics.model", "schedule": "physics.schedule",
    "sectors": "core.sectors", "observables": "core.observables",
    "errorbars": "core.errorbars", "operators": "core.operators",
    "blockstate": "core.blockstate", "interop": "core.interop", "results": "core.results",
    "_blockops": "exact._blockops", "blocks": "exact.blocks", "blocksolve": "exact.blocksolve",
    "counting": "exact.counting", "fcs": "exact.fcs", "waiting": "exact.waiting",
    "doob": "exact.doob", "correlations": "exact.correlations",
    "relaxation": "exact.relaxation",
    "kernels": "trajectories.kernels", "pack": "trajectories.batches",
    "stats": "trajectories.stats", "backends": "trajectories.backends",
    "worker": "trajectories.worker", "progress": "trajectories.progress",
    "checkpoint": "trajectories.checkpoint", "driver": "trajectories.driver",
    "cloning": "trajectories.cloning",
    "jumpstats": "analysis.jumpstats", "timeavg": "analysis.timeavg",
    "jumpcompare": "analysis.jumpcompare",
    "plotting": "app.plotting", "reproduce": "app.reproduce", "config": "app.config",
    "cli_args": "app.cli_args", "cli_jumps": "app.cli_jumps",
}


class _MovedFinder(_importlib_abc.MetaPathFinder, _importlib_abc.Loader):
    """Imports an old flat path (``thermospin_mc.model``) as the module that now holds
    it, on first use: ``import thermospin_mc`` imports nothing more for them."""

    def find_spec(self, fullname, path=None, target=None):
        old = fullname[len(__name__) + 1:] if fullname.startswith(__name__ + ".") else None
        if old in MOVED:
            return _importlib_util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = _importlib.import_module(f"{__name__}.{MOVED[spec.name[len(__name__) + 1:]]}")
        self._spec = module.__spec__    # the import machinery sets __spec__; restored below
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec


# modules the root has imported already are aliased now (this also keeps a later
# ``import thermospin_mc.cloning`` from rebinding the function ``cloning``); the
# others (the command line's, mostly) on first use
for _old, _new in MOVED.items():
    if f"{__name__}.{_new}" in _sys.modules:
        _sys.modules.setdefault(f"{__name__}.{_old}", _sys.modules[f"{__name__}.{_new}"])
del _old, _new
_sys.meta_path.append(_MovedFinder())


def __getattr__(name):
    """``thermospin_mc.<old flat module>`` as an attribute (see :data:`MOVED`)."""
    if name in MOVED:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
