"""Fixed-seed runs whose tables are stored as a regression fingerprint.

The fingerprint (``tests/data/fingerprint.json``) was written by
``python tests/fingerprint_cases.py --write`` *before* the run pipeline was
re-cut into ``pack``/``stats``/``backends``/``checkpoint``/``mcsolve``
(issue 13). It guards refactors: a restructuring of the orchestration must
leave every table of these runs unchanged. It is not a physics test (the
physics is tested against exact and independent references elsewhere); it
only says "the numbers did not move". Only regenerate it for a deliberate,
documented change of results.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import thermospin_mc as tsm

PATH = Path(__file__).with_name("data") / "fingerprint.json"


def _general_model():
    return tsm.ChainModel(
        N=5, profile=tsm.BondCouplings((1.0, 0.8, 1.2, 0.9)), anisotropy=(1.0, 0.7, 1.3, 1.0),
        fields=(0.1, -0.2, 0.0, 0.3, 0.05),
        channels=[tsm.Loss(1, 0.4), tsm.Pump(3, 0.3), tsm.Loss(5, 0.5),
                  tsm.Dephasing(2, 0.2)],
        initial=tsm.ProductMixture((0.2, 0.0, 0.5, 0.0, 0.1)))


def cases() -> dict:
    """name -> Result of each fixed-seed run."""
    times = np.linspace(0.0, 4.0, 9)
    pump = tsm.paper_model("pump", N=5)
    loss = tsm.paper_model("loss", N=5, delta_T=1.0)
    gen = _general_model()
    out = {
        "mc_pump": tsm.mcsolve(pump, times, ntraj=300, seed=11, record_jumps=True),
        "mc_pump_threads": tsm.mcsolve(pump, times, ntraj=300, seed=11, n_jobs=2,
                                       record_jumps=True),
        "mc_loss": tsm.mcsolve(loss, times, ntraj=200, seed=3,
                               observables=["j", "j_bond", "flow", "m", "n"]),
        "mc_general": tsm.mcsolve(gen, times, ntraj=250, seed=5, record_jumps=True,
                                  observables=["j", "m", "n", "nn", "pm_re", "pm_im", "count"],
                                  pairs=[(1, 3), (2, 4)]),
        "me_general": tsm.mesolve(gen, times, observables=["j", "m", "n", "nn"],
                                  pairs=[(1, 3)]),
        "ss_pump": tsm.steadystate(pump),
    }
    return out


def fingerprint() -> dict:
    fp = {}
    for name, res in cases().items():
        e = res.expect
        entry = {"columns": list(map(str, e.columns)),
                 "keys": [list(map(str, r)) for r in
                          e[[c for c in e.columns if c in ("observable", "site", "site2")]]
                          .itertuples(index=False)],
                 "mean": [float(x) for x in e["mean"]],
                 "sem": [float(x) for x in e["sem"]],
                 "ntraj": [int(x) for x in e["ntraj"]],
                 "meta_keys": sorted(k for k in res.metadata if not k.endswith("_s")
                                     and k != "traj_per_s")}
        if res.jumps is not None:
            j = res.jumps
            entry["jumps"] = {"traj": j["traj"].tolist(), "t": [float(x) for x in j["t"]],
                              "channel": j["channel"].astype(str).tolist(),
                              "site": j["site"].tolist(), "m_before": j["m_before"].tolist()}
        fp[name] = entry
    ex = tsm.exit_probabilities(tsm.paper_model("loss", N=5, delta_T=1.0))
    fp["exit_loss"] = {"index": list(map(str, ex.index)), "values": [float(x) for x in ex]}
    return fp


if __name__ == "__main__":
    if "--write" not in sys.argv:
        sys.exit("usage: python tests/fingerprint_cases.py --write")
    PATH.parent.mkdir(exist_ok=True)
    PATH.write_text(json.dumps(fingerprint(), indent=0, allow_nan=True))
    print("wrote", PATH)
