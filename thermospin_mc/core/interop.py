"""A model in the full ``2^N`` space: QuTiP objects for cross-checks (docs/model.md section 13).

:func:`full_space` builds the Hamiltonian, the jump operators and the initial
density matrix of a :class:`~thermospin_mc.physics.model.ChainModel` as scipy sparse
matrices in the full-space order of docs/model.md section 13 (site 1 the leftmost
tensor factor; on one site index 0 is ``|up>``, index 1 is ``|down>``), and
:func:`to_qutip` wraps them as QuTiP objects (``ChainModel.to_qutip()``). The
Hamiltonian is built from operator words (:class:`~thermospin_mc.core.operators.Operator`):

    h = sum_l (a_l / 2) [2 (s+_l s-_{l+1} + s-_l s+_{l+1}) + Delta_l sz_l sz_{l+1}]
        + sum_i (h_i / 2) sz_i,

with the jump operators ``sqrt(r) s+_i`` (loss), ``sqrt(r) s-_i`` (pump) and
``sqrt(r) sz_i`` (dephasing), in ``model.channels`` order. Its sector blocks
are the sector Hamiltonians of :class:`~thermospin_mc.core.sectors.SectorSpace`
(checked in the tests). Only chains up to ``N = 14`` are exported (the
initial density matrix is a dense ``4^N`` object).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..physics import model as model_module
from ..physics.model import ChainModel
from .basis import full_indices
from .operators import MAX_DENSE_N, Operator, require_qutip
from .sectors import SectorSpace

__all__ = ["full_space", "to_qutip", "hamiltonian_terms", "channel_operator"]

_LETTER = {"loss": "+", "pump": "-", "dephasing": "z"}


def hamiltonian_terms(model: ChainModel) -> dict[str, float]:
    """The chain Hamiltonian as ``{word: coefficient}`` (docs/general_chain.md)."""
    terms: dict[str, float] = {}
    a = np.asarray(model.couplings, dtype=float)
    delta = np.asarray(model.bond_anisotropy, dtype=float)
    for l in range(1, model.N):  # noqa: E741 (the bond index of the docs)
        terms[f"+{l} -{l + 1}"] = float(a[l - 1])
        terms[f"-{l} +{l + 1}"] = float(a[l - 1])
        terms[f"z{l} z{l + 1}"] = float(a[l - 1] * delta[l - 1] / 2)
    for i, h in enumerate(np.asarray(model.site_fields, dtype=float), start=1):
        if h != 0:
            terms[f"z{i}"] = float(h / 2)
    return terms


def channel_operator(model: ChainModel, k: int) -> Operator:
    """Jump operator of channel ``k`` of ``model.channels`` including ``sqrt(rate)``."""
    ch = model.channels[k]
    return Operator.from_terms({f"{_LETTER[ch.kind]}{ch.site + 1}": float(np.sqrt(ch.rate))},
                               model.N, name="L")


def _check(model) -> ChainModel:
    if not isinstance(model, ChainModel):
        raise ValueError(f"model must be a ChainModel, got {type(model).__name__}")
    if model.N > MAX_DENSE_N:
        raise ValueError(f"model: N = {model.N} is above {MAX_DENSE_N}; the full 2^N space "
                         "is exported only for short chains")
    return model


def initial_density_matrix(model: ChainModel) -> np.ndarray:
    """The model's initial state as a dense ``2^N x 2^N`` density matrix (unit trace)."""
    model = _check(model)
    N = model.N
    space = SectorSpace(model)
    size = 1 << N
    if model.is_mixed:
        rho = np.zeros(size)
        for m, w in space.initial_mixture():
            rho[full_indices(N, m)] += w
        rho = np.diag(rho / rho.sum()).astype(complex)
        return rho
    m, psi = space.initial_state()
    vec = np.zeros(size, dtype=complex)
    vec[full_indices(N, m)] = psi
    vec /= np.linalg.norm(vec)
    return np.outer(vec, vec.conj())


def full_space(model: ChainModel) -> tuple[sp.csr_matrix, list[sp.csr_matrix], np.ndarray]:
    """``(H, c_ops, rho0)``: scipy CSR Hamiltonian and jump operators (channel order)
    and the dense initial density matrix, in the full-space order, ``N <= 14``."""
    model = _check(model)
    H = Operator.from_terms(hamiltonian_terms(model), model.N, name="H").to_sparse()
    c_ops = [channel_operator(model, k).to_sparse() for k in range(len(model.channels))]
    return H, c_ops, initial_density_matrix(model)


def to_qutip(model: ChainModel):
    """``(H, c_ops, rho0)`` of ``model`` as QuTiP objects (dims ``[[2]*N, [2]*N]``).

    ``H`` is the chain Hamiltonian, ``c_ops`` the jump operators in
    ``model.channels`` order with their ``sqrt(rate)``, ``rho0`` the initial
    density matrix (pure state or mixture), all in the full-space order of
    docs/model.md section 13, so that ``qutip.mesolve(H, rho0, times, c_ops)``
    solves the same Lindblad equation as :func:`thermospin_mc.mesolve`.
    Needs QuTiP (``pip install qutip``) and ``N <= 14``.
    """
    qutip = require_qutip()
    H, c_ops, rho0 = full_space(model)
    dims = [[2] * model.N, [2] * model.N]
    return (qutip.Qobj(H, dims=dims), [qutip.Qobj(c, dims=dims) for c in c_ops],
            qutip.Qobj(rho0, dims=dims))


model_module.EXPORTERS["qutip"] = to_qutip
