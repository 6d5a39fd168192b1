"""A user operator in the form the trajectory kernels read: its entry lists per
sector (:func:`operator_entries`) and the digest that identifies it in the
per-process pack cache and in checkpoints (:func:`operator_digest`)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["operator_entries", "operator_digest"]


def operator_entries(A, hermitian: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The kernel's entry list of one sector matrix of a user operator.

    Parameters
    ----------
    A : scipy.sparse matrix or ndarray
        The operator in one sector, ``(d, d)``, in the sector's basis order.
    hermitian : bool
        Whether the operator is Hermitian: then only its diagonal and its strict
        upper triangle are kept (the kernel adds twice the real part of the
        upper triangle's contribution, see ``kernels._record_ops``).

    Returns
    -------
    rows, cols : numpy.ndarray
        int64 row and column of each kept nonzero entry: the diagonal ones
        first (ascending), then the off-diagonal ones by row, then column.
    vals : numpy.ndarray
        complex128 values.
    nd : int
        Number of diagonal entries (the first ``nd``).
    """
    C = sp.coo_matrix(sp.csr_matrix(A, dtype=np.complex128))
    C.sum_duplicates()  # canonical: sorted by row, then column; no duplicates
    r, c, v = C.row.astype(np.int64), C.col.astype(np.int64), C.data
    nz = v != 0
    dg = nz & (r == c)
    off = nz & ((c > r) if hermitian else (c != r))
    rows = np.concatenate([r[dg], r[off]])
    cols = np.concatenate([c[dg], c[off]])
    vals = np.concatenate([v[dg], v[off]]).astype(np.complex128)
    return rows, cols, vals, int(dg.sum())


def operator_digest(op) -> str:
    """SHA-256 (hex) of an operator's canonical record ``op.to_dict()`` (name, Hermiticity,
    terms): what the per-process pack cache and a checkpoint identify an operator by."""
    import hashlib
    import json

    text = json.dumps(op.to_dict(), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()
