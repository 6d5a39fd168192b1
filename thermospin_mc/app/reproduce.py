"""The source paper's Figs. 2-6 as tidy tables (and PNGs via :mod:`plotting`), and
two extra figure sets: exact counting statistics (``fcs``) and rare currents by
cloning and the Doob process (``rare``).

Each ``figN(settings)`` returns ``{table_name: DataFrame}``; :func:`reproduce`
computes the requested figures, writes every table as parquet and CSV with
metadata, and draws one PNG per panel. The figures are in
:mod:`.figures_paper` (Figs. 2-6) and :mod:`.figures_counting` (``fcs``,
``rare``), their sizes in :mod:`.figure_settings`; this module names them
and writes them.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from ..core.tables import metadata
from ..io import write_table
from .figure_settings import USES, Settings  # re-export
from .figures_counting import RARE, fcs, rare, rare_cloning, rare_doob  # re-export
from .figures_paper import fig2, fig3, fig4, fig5, fig6, quadratic_fit  # re-export
from .plotting import plot_figure

__all__ = ["FIGURES", "EXTRA_FIGURES", "Settings", "reproduce", "quadratic_fit", "fig2", "fig3",
           "fig4", "fig5", "fig6", "fcs", "rare", "rare_cloning", "rare_doob", "RARE", "USES"]

FIGURES = ("fig2", "fig3", "fig4", "fig5", "fig6")


def _meta(settings: Settings, figure: str, **extra) -> dict:
    return metadata("reproduce", None, figure=figure, settings=asdict(settings), **extra)


_FUNCS = {"fig2": fig2, "fig3": fig3, "fig4": fig4, "fig5": fig5, "fig6": fig6, "fcs": fcs,
          "rare": rare}
#: Extra figure sets (requested by name, not part of "all").
EXTRA_FIGURES = ("fcs", "rare")


def reproduce(figures, out, settings: Settings | None = None, formats=("parquet", "csv"),
              plots: bool = True, log=print) -> dict[str, dict[str, pd.DataFrame]]:
    """Compute ``figures`` (names from :data:`FIGURES` or ``"all"``) and write
    ``out/<fig>_<table>.{parquet,csv}`` and ``out/<fig>*.png``.

    Returns ``{figure: {table: DataFrame}}``.
    """
    settings = settings or Settings()
    if isinstance(figures, str):
        figures = [figures]
    names = []
    for f in figures:
        if f == "all":
            names.extend(FIGURES)
        elif f in _FUNCS:
            names.append(f)
        else:
            raise ValueError(f"figure must be one of {FIGURES + EXTRA_FIGURES + ('all',)}, "
                             f"got {f!r}")
    for fmt in formats:
        if fmt not in ("parquet", "csv"):
            raise ValueError(f"formats must be parquet and/or csv, got {fmt!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in dict.fromkeys(names):
        t0 = time.perf_counter()
        tables = _FUNCS[name](settings)
        meta = _meta(settings, name, elapsed_s=time.perf_counter() - t0)
        for tname, df in tables.items():
            tmeta = dict(meta, table=tname, **{k: v_ for k, v_ in df.attrs.items()})
            for fmt in formats:
                write_table(df, out / f"{name}_{tname}.{fmt}", tmeta)
        if plots:
            for path in plot_figure(name, tables, out):
                log(f"wrote {path}")
        log(f"{name}: {', '.join(tables)} in {time.perf_counter() - t0:.1f} s")
        results[name] = tables
    return results
