"""Row matching and agreement tests of two results: z-scores row by row
(:meth:`~ResultComparison.compare`) and one calibrated test of the whole comparison
(:meth:`~ResultComparison.goodness_of_fit`).

:class:`ResultComparison` is the base class of :class:`thermospin_mc.core.results.Result`
that holds these methods; it reads results through their public attributes
(``expect``, ``metadata``, ``groups``) only. The error-bar rules themselves (one
event's worth of an observable, effective standard errors, the sign-flip test) live
in :mod:`thermospin_mc.core.errorbars`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errorbars import GOF_FLIPS, effective_sem, one_event, operator_floors, signflip_fit

__all__ = ["ResultComparison"]


class ResultComparison:
    """Comparison methods of :class:`~thermospin_mc.core.results.Result` (its base class).

    Needs the result's ``expect`` table, ``metadata`` and trajectory ``groups``.
    """

    __slots__ = ()

    def effective_sem(self) -> np.ndarray:
        """The rows' effective standard errors (:func:`effective_sem`), in row order."""
        e = self.expect
        return effective_sem(e["observable"].to_numpy(), e["site"].to_numpy(),
                             e["sem"].to_numpy(), e["ntraj"].to_numpy(),
                             self.metadata.get("model", {}).get("couplings"),
                             operator_floors(self.metadata.get("operators")))

    def compare(self, other: ResultComparison, atol: float = 1e-12) -> pd.DataFrame:
        """Row-by-row z-scores ``diff / sqrt(sem_eff^2 + other.sem_eff^2 + atol^2)``.

        ``diff = mean - other.mean``; ``sem_eff`` are the effective standard
        errors of :func:`effective_sem`: ``max(sem, delta / ntraj)`` for
        trajectory rows, where ``delta`` is one event's worth of the
        observable, so a row where every trajectory agreed (``sem = 0``) and
        the other value differs by less than one trajectory's worth has
        ``|z| < 1``, never a huge or infinite z. Exact rows (``ntraj = 0``)
        keep ``sem = 0``.

        Rows are matched on ``(t, observable, site)``; rows present in only one
        result are dropped. ``atol`` is a round-off floor: values that vanish by
        symmetry (e.g. ``j`` at Delta T = 0) come out as ~1e-16 with standard
        errors ~1e-18, and without the floor their z-scores would measure
        rounding, not statistics. Exact against exact (both ``ntraj = 0``):
        ``z = diff / atol``, a difference in units of the round-off floor; with
        ``atol = 0`` and both errors zero, z is 0 for equal means and +-inf
        otherwise. Rows without trajectories left (``mean`` NaN) give NaN.

        Returns
        -------
        pandas.DataFrame
            ``t, observable, site, mean, mean_other, diff, sem, sem_eff, z``:
            ``sem`` is the combined raw error ``sqrt(sem^2 + other.sem^2)``,
            ``sem_eff`` the combined effective error used in ``z`` (without
            ``atol``).
        """
        merged, keys = self._matched(other)
        diff = merged["mean"] - merged["mean_other"]
        err = np.sqrt(merged["sem"] ** 2 + merged["sem_other"] ** 2)
        obs, site = merged["observable"].to_numpy(), merged["site"].to_numpy()
        eff_a = effective_sem(obs, site, merged["sem"].to_numpy(), merged["ntraj"].to_numpy(),
                              self.metadata.get("model", {}).get("couplings"),
                              operator_floors(self.metadata.get("operators")))
        eff_b = effective_sem(obs, site, merged["sem_other"].to_numpy(),
                              merged["ntraj_other"].to_numpy(),
                              other.metadata.get("model", {}).get("couplings"),
                              operator_floors(other.metadata.get("operators")))
        eff = np.sqrt(eff_a**2 + eff_b**2)
        den = np.sqrt(eff**2 + float(atol) ** 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(den > 0, diff / den, np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
        out = {"t": merged["t"], "observable": merged["observable"], "site": merged["site"]}
        if "site2" in keys:
            out["site2"] = merged["site2"]
        out.update({"mean": merged["mean"], "mean_other": merged["mean_other"], "diff": diff,
                    "sem": err, "sem_eff": eff, "z": z})
        return pd.DataFrame(out)

    def _matched(self, other: ResultComparison) -> tuple[pd.DataFrame, list]:
        """Rows of both results matched on ``(t, observable, site[, site2])``, with each
        side's row position (``_row``, ``_row_other``); and the match keys."""
        if not isinstance(other, ResultComparison):
            raise ValueError(f"can only compare with a Result, got {type(other).__name__}")
        # the k-th occurrence of (t, observable, site) matches the k-th (repeated times)
        keys = ["t", "observable", "site", "_occurrence"]
        if "site2" in self.expect.columns and "site2" in other.expect.columns:
            keys.insert(3, "site2")

        def tag(df):
            return df.assign(_occurrence=df.groupby(keys[:-1]).cumcount(),
                             _row=np.arange(len(df)))

        merged = tag(self.expect).merge(tag(other.expect), on=keys, suffixes=("", "_other"))
        if merged.empty:
            raise ValueError("the two results have no (t, observable, site) rows in common")
        return merged, keys

    def goodness_of_fit(self, other: ResultComparison, flips: int = GOF_FLIPS) -> pd.Series:
        """One test for the whole comparison with ``other``, calibrated despite
        correlated rows.

        Rows of one trajectory run are strongly correlated (neighbouring times,
        sites, observables share trajectories), so the per-row z-scores of
        :meth:`compare` are not independent, and a run of ``|z| > 3`` on a
        correct run can be one fluctuation seen many times. This test takes
        the correlations into account without modelling them: the run's
        independent trajectory groups (blocks of 64 trajectories dealt
        round-robin into up to 64 groups) each give a deviation from the
        reference, and the statistic ``chi2 = sum over rows of z^2`` is held
        against its distribution under random sign flips of the groups'
        deviations (:func:`thermospin_mc.core.errorbars.signflip_fit`,
        ``docs/statistics.md``). Under the null hypothesis (both results
        estimate the same values) ``p_value`` is uniform on [0, 1].

        Parameters
        ----------
        other : Result
            The reference: an exact result (``mesolve``, ``steadystate``), or
            another trajectory run of the same model and output times with an
            independent seed (its groups are paired with this run's in order;
            unpaired groups are left out).
        flips : int
            Random sign patterns (default ``GOF_FLIPS`` = 19999; all ``2^G``
            patterns when there are fewer). The p-value is never below
            ``1 / (flips + 1)``.

        Returns
        -------
        pandas.Series
            ``chi2`` (sum of the rows' squared z, each with the group-based
            spread floored at one event), ``dof`` (effective number of
            independent rows: ``2 E[chi2]^2 / Var[chi2]`` under the null),
            ``p_value``, ``rows`` (rows tested: matched, finite, holding
            every trajectory, with a nonzero spread), ``groups`` (independent
            groups or pairs), ``flips`` (sign patterns compared). ``p_value``
            is NaN when no tested row varies.

        Raises
        ------
        ValueError
            ``self`` (or a trajectory ``other``) has no trajectory groups
            (exact results; files written before this version), fewer than
            6 groups (at least 6 blocks of 64 trajectories), or no matched
            row holds every trajectory (``max_magnons`` truncation everywhere).
        """
        flips = int(flips)
        if flips < 1:
            raise ValueError(f"flips must be >= 1, got {flips}")
        merged, _ = self._matched(other)
        sides = [(self, "_row", "ntraj")]
        if (merged["ntraj_other"].to_numpy() > 0).any():
            sides.append((other, "_row_other", "ntraj_other"))
        use = np.isfinite(merged["mean"].to_numpy()) & np.isfinite(
            merged["mean_other"].to_numpy())
        for res, _, ncol in sides:
            if res.groups is None:
                raise ValueError("goodness_of_fit needs the trajectory groups of a trajectory "
                                 "result (mcsolve of this version; exact results and older "
                                 "files have none)")
            total = int(res.groups["count"].sum(axis=0).max())
            use &= merged[ncol].to_numpy() == total
        if not use.any():
            raise ValueError("goodness_of_fit: no matched row holds every trajectory (rows "
                             "truncated by max_magnons are not tested)")
        merged = merged[use]
        parts = []
        for res, col, _ in sides:
            idx = merged[col].to_numpy()
            parts.append((res.groups["count"][:, idx].max(axis=1).astype(float),
                          res.groups["mean"][:, idx]))
        (wa, xa) = parts[0]
        if len(parts) == 1:
            dev, weight = xa - merged["mean_other"].to_numpy(), wa
        else:
            (wb, xb) = parts[1]
            k = min(len(wa), len(wb))
            dev, weight = xa[:k] - xb[:k], 1.0 / (1.0 / wa[:k] + 1.0 / wb[:k])
        floor = one_event(merged["observable"].to_numpy(), merged["site"].to_numpy(),
                          self.metadata.get("model", {}).get("couplings"),
                          operator_floors(self.metadata.get("operators"))) / np.sqrt(wa.sum())
        out = signflip_fit(dev, weight, floor, flips)
        return pd.Series(out, dtype=object).rename("goodness_of_fit")
