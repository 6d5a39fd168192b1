"""One observable-name resolver for every solver (issue 21, item 1).

``mcsolve``, ``sesolve``, ``mesolve`` and ``steadystate`` (and the command
line) resolve names with ``observables.resolve``; only what each solver
computes (``allowed``) and its default set differ. Names come back in table
order, each once; refusals are one line naming the argument, the solver and
the allowed values.
"""

from __future__ import annotations

import numpy as np
import pytest

import thermospin_mc as tsm
from thermospin_mc.core import observables as OBS

MODEL = tsm.boundary_driven(3, 0.8, 1.2, initial=tsm.product_mixture([0.5, 0.2, 0.1]))
PURE = tsm.paper_model("loss", N=3)


def _rows(res) -> list[str]:
    return list(dict.fromkeys(res.expect["observable"]))


@pytest.mark.parametrize("observables, pairs", [
    (("m", "j", "m"), None), ("n", None), (("pm", "n"), [(1, 3)]), (None, [(1, 2)]),
    (("m", "j"), [(2, 3)])])
def test_every_solver_resolves_names_alike(observables, pairs):
    names, _ = OBS.resolve(observables, pairs, MODEL.N)
    assert names == tuple(o for o in OBS.OBSERVABLES if o in names)  # table order, once
    mc = tsm.mcsolve(MODEL, [0.0, 0.5], ntraj=4, seed=1, observables=observables, pairs=pairs,
                     cluster=tsm.Cluster(progress=False))
    me = tsm.mesolve(MODEL, [0.0, 0.5], observables=observables, pairs=pairs)
    ss = tsm.steadystate(MODEL, observables=observables, pairs=pairs)
    assert _rows(mc) == list(names)
    assert _rows(me) == _rows(ss) == list(OBS.resolve(
        observables, pairs, MODEL.N, default=OBS.DEFAULT + ("norm",))[0])


def test_refusals_name_the_argument_the_solver_and_the_allowed_values():
    cases = [
        ("mcsolve", lambda o: tsm.mcsolve(MODEL, [0.0], ntraj=4, observables=o), "norm",
         OBS.TRAJECTORY),
        ("mesolve", lambda o: tsm.mesolve(MODEL, [0.0], observables=o), "spin",
         OBS.OBSERVABLES),
        ("steadystate", lambda o: tsm.steadystate(MODEL, observables=o), "count",
         tuple(o for o in OBS.OBSERVABLES if o != "count")),
        ("sesolve", lambda o: tsm.sesolve(PURE, [0.0], observables=o), "count",
         tuple(o for o in OBS.OBSERVABLES if o != "count")),
    ]
    for solver, run, bad, allowed in cases:
        with pytest.raises(ValueError) as exc:
            run(("j", bad))
        msg = str(exc.value)
        assert "\n" not in msg
        assert msg.startswith(f"observables of {solver}: each observable must be one of ")
        assert msg.endswith(f"got {bad!r}")
        listed = msg.split("one of ", 1)[1].split(" or pm", 1)[0].split(", ")
        assert tuple(listed) == allowed, solver
        with pytest.raises(ValueError, match="observables must name at least one observable"):
            run(())
        with pytest.raises(ValueError, match=r"need pairs=\[\(i, k\), \.\.\.\]"):
            run(("nn",))
    with pytest.raises(ValueError, match="observables must be a name or a sequence of names"):
        tsm.mesolve(MODEL, [0.0], observables=3)


def test_pairs_are_returned_checked_and_refused_in_one_line():
    names, pairs = OBS.resolve("pm", [(1, 2), (3, 1)], 3)
    assert names == ("pm_re", "pm_im")
    np.testing.assert_array_equal(pairs, [[1, 2], [3, 1]])
    assert OBS.resolve(None, None, 3)[1].shape == (0, 2)
    for bad, msg in [([(1, 4)], "pair sites must be integers in 1..3"),
                     ([(1, 2), (1, 2)], "pairs must be distinct"),
                     ([(1, 2, 3)], "pairs must be a list of")]:
        with pytest.raises(ValueError, match=msg):
            OBS.resolve(None, bad, 3)
