"""Shared statistical check of trajectory results against an exact solution."""

from __future__ import annotations

import numpy as np


def check_against(res, ref, ntraj: int) -> float:
    """Trajectories ``res`` against the exact ``ref``, row by row.

    Rows with an error bar: at least 90% within 2 sem (about 95% expected for
    Gaussian errors) and none beyond 5 sem. Rows where every trajectory agreed
    (sem = 0): the difference stays within a few events' worth (3/ntraj per
    unit of the value's scale, times 7 for the largest observable range).
    Returns the fraction within 2 sem.
    """
    z = res.compare(ref)
    z = z[z.observable != "norm"]
    with_err = z[z["sem"] > 0]
    no_err = z[z["sem"] == 0]
    frac = float((with_err.z.abs() < 2).mean())
    assert frac >= 0.90, f"only {frac:.3f} of rows within 2 sem"
    assert with_err.z.abs().max() < 5.0, with_err.loc[with_err.z.abs().idxmax()].to_dict()
    scale = np.maximum(1.0, np.abs(no_err["mean_other"]))
    assert (no_err["diff"].abs() <= 3.0 / ntraj * scale * 7 + 1e-9).all()
    return frac
