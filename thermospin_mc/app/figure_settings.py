"""The sizes of the reproduction (:class:`Settings`) and which of them each figure
uses (:data:`USES`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import _validate as v

__all__ = ["Settings", "USES"]

_TRAJ = ("N", "n_times", "delta_T", "ntraj", "seed", "n_jobs", "progress")
#: Which :class:`Settings` fields each figure uses (the CLI refuses a flag that
#: none of the requested figures would use).
USES = {"fig2": ("alpha_N",), "fig3": ("N", "n_times"), "fig4": ("N", "n_times"),
        "fig5": _TRAJ, "fig6": (*_TRAJ, "gamma_pumps"),
        "fcs": ("N", "ntraj", "seed", "n_jobs", "progress", "gamma_pumps"),
        "rare": ("N", "ntraj", "seed", "n_jobs", "progress")}


@dataclass(frozen=True)
class Settings:
    """Sizes of the reproduction (defaults: the paper's, minutes on 2 cores).

    Parameters
    ----------
    N : int
        Chain length of Figs. 3-6 (the paper: 7).
    ntraj : int
        Trajectories per curve of Figs. 5 and 6a.
    n_jobs : int
        Worker processes for the trajectories (-1: all cores).
    seed : int
        Root seed; curve ``i`` of a figure uses ``seed + i``.
    n_times : int
        Output times per time series.
    t_closed, t_open : float
        End times of the closed (Figs. 3-4) and open (Figs. 5-6) evolutions.
    delta_T : tuple of float
        Temperature differences (eps0) of Figs. 5 and 6a.
    gamma_pumps : tuple of float
        Pump rates of Fig. 6b.
    steady_delta_T : tuple of float
        Temperature differences of Fig. 6b.
    fit_max : float
        Fig. 6b's quadratic fit uses ``0 < Delta T < fit_max``.
    alpha_N : tuple of int
        Particle numbers of Fig. 2.
    progress : bool or None
        Progress bars of the trajectory runs.
    """

    N: int = 7
    ntraj: int = 20_000
    n_jobs: int = -1
    seed: int = 2021
    n_times: int = 201
    t_closed: float = 10.0
    t_open: float = 20.0
    delta_T: tuple = (0.0, 1.0, 2.0, 3.0)
    gamma_pumps: tuple = (0.155, 0.620, 1.551)
    steady_delta_T: tuple = field(default_factory=lambda: tuple(np.round(
        np.linspace(0.0, 3.0, 31), 10)))
    fit_max: float = 1.0
    alpha_N: tuple = (5, 7, 9)
    progress: bool | None = None

    def __post_init__(self):
        v.integer("N", self.N, lo=3)
        v.integer("ntraj", self.ntraj, lo=2)
        v.integer("n_times", self.n_times, lo=2)
        v.real("t_closed", self.t_closed, lo=0.0, lo_open=True)
        v.real("t_open", self.t_open, lo=0.0, lo_open=True)
        v.real("fit_max", self.fit_max, lo=0.0, lo_open=True)
        for name in ("delta_T", "steady_delta_T", "gamma_pumps"):
            vals = getattr(self, name)
            if len(vals) == 0:
                raise ValueError(f"{name} must list at least one value")
            for x in vals:
                v.real(name, x, lo=0.0)
        if self.N % 2 == 0:
            raise ValueError(f"N must be odd (the pump sits at the centre), got {self.N}")
