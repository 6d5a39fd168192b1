"""Append-only flat arrays: the pools a sector pack's tables are views of."""

from __future__ import annotations

import numpy as np

__all__ = ["Pool"]


class Pool:
    """An append-only flat array (one of a pack's ``cpx``, ``ints``, ``reals``).

    Appends go to a buffer whose capacity doubles; :meth:`view` is the filled
    part. Entries are never changed once written, so a view taken earlier (the
    tables a kernel is running on) keeps its contents while later sectors are
    appended, without copying the pool for every new sector. Not locked itself:
    its pack appends under its own lock.
    """

    def __init__(self, dtype):
        self._buf = np.empty(1024, dtype=dtype)
        self._n = 0

    def add(self, arr) -> int:
        """Append ``arr`` (cast to the pool's type, flattened); returns its offset."""
        arr = np.ascontiguousarray(arr, dtype=self._buf.dtype).ravel()
        off, end = self._n, self._n + arr.size
        if end > self._buf.size:
            grown = np.empty(max(end, 2 * self._buf.size), dtype=self._buf.dtype)
            grown[:off] = self._buf[:off]
            self._buf = grown
        self._buf[off:end] = arr
        self._n = end
        return off

    def view(self) -> np.ndarray:
        """The entries so far (one zero when there are none: the kernels' empty pool)."""
        return self._buf[:self._n] if self._n else np.zeros(1, dtype=self._buf.dtype)
