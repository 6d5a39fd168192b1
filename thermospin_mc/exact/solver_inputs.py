"""The exact solvers' shared handling of their arguments and metadata.

:func:`sesolve`, :func:`mesolve` (:mod:`.solvers`) and :func:`steadystate`
(:mod:`.steady`) resolve their observables and operators by one resolver
(:func:`check_observables`), check ``states`` alike, name the operator rows
after the built-in ones and record the operators and the solver in the
result's metadata the same way.
"""

from __future__ import annotations

import numpy as np

from ..core import observables as OBS
from ..core.observables import OBSERVABLES
from ..core.tables import metadata as result_metadata
from ..physics.model import ChainModel

__all__ = ["solver_metadata", "check_observables", "check_states", "operator_metadata",
           "operator_row_names"]


def solver_metadata(model: ChainModel, solver: str, **extra) -> dict:
    """The result metadata of an exact solver (``ntraj = 0``) for ``model``."""
    return result_metadata(solver, model, ntraj=0, **extra)


def check_observables(observables, pairs=None, N: int = 2, count: bool = True,
                      solver: str = ""):
    """``(names, pairs, operators)`` by the one resolver
    :func:`thermospin_mc.core.observables.resolve` after
    :func:`~thermospin_mc.core.observables.split_operators` (``pairs`` stays None when
    none are given; ``names`` is empty when only operators are asked for)."""
    plain, ops = OBS.split_operators(observables, N)
    allowed = OBSERVABLES if count else tuple(o for o in OBSERVABLES if o != "count")
    if plain == () and ops:
        checked = OBS.check_pairs(pairs, N)
        return (), (None if pairs is None else checked), ops
    names, checked = OBS.resolve(plain, pairs, N, allowed=allowed,
                                 default=OBS.DEFAULT + ("norm",), solver=solver)
    return names, (None if pairs is None else checked), ops


def check_states(states) -> bool:
    """``states`` as a bool (True or False only: ``ValueError`` otherwise)."""
    if not isinstance(states, (bool, np.bool_)):
        raise ValueError(f"states must be True or False, got {states!r}")
    return bool(states)


def operator_metadata(ops) -> dict:
    """Metadata of operator rows (``meta["operators"]``, read by the error-bar floors)."""
    return {"operators": [op.to_dict() for op in ops]} if ops else {}


def operator_row_names(ops) -> list[str]:
    """The table rows of the operators ``ops``, in order (``name`` or ``name_re``,
    ``name_im`` each)."""
    return [row for op in ops for row in OBS.operator_rows(op)]
