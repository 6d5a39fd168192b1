"""Small input-validation helpers shared by every public entry point.

Every failure is a ``ValueError`` whose message names the field, the value that
was given and the allowed range, e.g. ``"gamma must be >= 0, got -1.0"``.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np


def real(name: str, value, *, lo: float | None = None, hi: float | None = None,
         lo_open: bool = False) -> float:
    """Return ``value`` as a finite float inside ``[lo, hi]`` (or ``(lo, hi]``)."""
    if isinstance(value, bool) or not isinstance(value, (Real, np.floating, np.integer)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if lo is not None:
        if lo_open and not v > lo:
            raise ValueError(f"{name} must be > {lo}, got {v}")
        if not lo_open and v < lo:
            raise ValueError(f"{name} must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {v}")
    return v


def integer(name: str, value, *, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``value`` as an int inside ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, (Integral, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if lo is not None and v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {v}")
    return v


def real_array(name: str, values, *, lo: float | None = None, ndim: int = 1) -> np.ndarray:
    """Return a finite float array (optionally bounded below)."""
    try:
        arr = np.array(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of real numbers, got {values!r}") from exc
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values, got {arr.tolist()}")
    if lo is not None and arr.size and arr.min() < lo:
        raise ValueError(f"{name} must be >= {lo} everywhere, got minimum {arr.min()}")
    return arr


def times(values) -> np.ndarray:
    """Validate output times: 1-D, finite, >= 0, non-decreasing, at least one."""
    arr = real_array("times", np.atleast_1d(values), lo=0.0)
    if arr.size == 0:
        raise ValueError("times must contain at least one time, got an empty array")
    if arr.size > 1 and np.any(np.diff(arr) < 0):
        raise ValueError("times must be non-decreasing, got a decreasing step at index "
                         f"{int(np.argmax(np.diff(arr) < 0)) + 1}")
    return arr


def n_jobs(value) -> int:
    """Validate a worker count: ``>= 1``, or ``-1`` for every core; returns the count."""
    import os

    n = integer("n_jobs", value)
    if n == 0 or n < -1:
        raise ValueError(f"n_jobs must be >= 1 or -1 (all cores), got {n}")
    return (os.cpu_count() or 1) if n == -1 else n


def flag(name: str, value) -> bool:
    """Validate a yes/no option: ``True``/``False`` (also NumPy's, or the integers 0
    and 1); returns a ``bool``."""
    if isinstance(value, (bool, np.bool_)) or (
            isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")
