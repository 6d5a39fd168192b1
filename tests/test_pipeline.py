"""The re-cut run pipeline (issue 13): exact merge, immutable results, option records, backends.

- merging: the pooled statistics of two results equal those of the union of
  their trajectories, computed naively from the kept trajectory rows (an
  independent reference: plain numpy mean and ``ddof=1`` standard deviation),
  for means, standard errors and the stored sums of squared deviations; a
  merge through files (parquet and CSV) is bit-identical to one in memory;
- a result cannot be changed after the fact;
- the option records refuse bad values with one line naming the field;
- a backend registered from outside runs batches in its own order and gives
  a result bit-identical to the serial one.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pandas as pd
import pytest

import thermospin_mc as tsm
from thermospin_mc.trajectories import backends
from thermospin_mc.trajectories.backends import BACKENDS, NAMES, Cluster, register
from thermospin_mc.trajectories.checkpoint import Checkpointing
from thermospin_mc.trajectories.stats import Target

MODEL = tsm.paper_model("pump", N=5, delta_T=2.0)
TIMES = np.linspace(0.0, 6.0, 13)
NAMES_ = ("j", "j_bond", "flow", "m", "n")


def _naive(rows: np.ndarray, cols: dict, couplings):
    """Per (observable, component) ``(mean, sem, m2)`` of kept rows, with numpy only."""
    out = {}
    half_a = np.asarray(couplings) / 2
    for name in NAMES_:
        lo, hi = cols["j_bond" if name == "flow" else name]
        x = rows[:, :, lo:hi] * (half_a if name == "flow" else 1.0)
        mean = x.mean(axis=0)
        out[name] = (mean, x.std(axis=0, ddof=1) / np.sqrt(len(x)),
                     ((x - mean) ** 2).sum(axis=0))
    return out


def _m2_of(res: tsm.Result, name: str) -> np.ndarray:
    """The result's stored m2 of one observable as ``(nt, ncomp)`` (rows are per component)."""
    acc = res.accumulators
    sel = (res.expect["observable"] == name).to_numpy()
    nt = TIMES.size
    return acc.m2[sel].reshape(-1, nt).T


@pytest.fixture(scope="module")
def parts():
    kw = dict(observables=NAMES_, record_jumps=True,
              checkpoint=tsm.Checkpointing(keep_trajectories=True),
              cluster=tsm.Cluster(progress=False))
    return (tsm.mcsolve(MODEL, TIMES, ntraj=200, seed=21, **kw),
            tsm.mcsolve(MODEL, TIMES, ntraj=77, seed=22, **kw))


def test_each_result_owns_exact_accumulators(parts):
    for res in parts:
        rows, cols = res.trajectories["rows"], res.trajectories["columns"]
        ref = _naive(rows, cols, MODEL.couplings)
        for name in NAMES_:
            mean, _, m2 = ref[name]
            np.testing.assert_allclose(res.get(name), mean, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(_m2_of(res, name), m2, rtol=1e-10, atol=1e-12)
        assert (res.accumulators.count == len(rows)).all()


def test_merge_equals_the_union_of_trajectories(parts):
    a, b = parts
    merged = a + b
    rows = np.concatenate([a.trajectories["rows"], b.trajectories["rows"]])
    ref = _naive(rows, a.trajectories["columns"], MODEL.couplings)
    for name in NAMES_:
        mean, sem, m2 = ref[name]
        np.testing.assert_allclose(merged.get(name), mean, rtol=1e-12, atol=1e-14)
        # t = 0: every trajectory agrees, sem 0 (not compared relative to 0)
        np.testing.assert_allclose(merged.get(name, "sem"), sem, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(_m2_of(merged, name), m2, rtol=1e-10, atol=1e-12)
    assert (merged.expect["ntraj"] == 277).all() and merged.metadata["ntraj"] == 277
    # order of the parts only changes rounding
    other = b + a
    np.testing.assert_allclose(other.expect["mean"], merged.expect["mean"], rtol=1e-13,
                               atol=1e-15)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_merge_through_files_is_bit_identical(parts, tmp_path, fmt):
    a, b = parts
    b.save(tmp_path, formats=(fmt,), prefix="b_")
    loaded = tsm.read_result(tmp_path, prefix="b_")
    assert np.array_equal(loaded.accumulators.m2, b.accumulators.m2)
    x, y = a + b, a + loaded
    for col in ("mean", "sem", "ntraj"):
        assert np.array_equal(x.expect[col].to_numpy(), y.expect[col].to_numpy()), col
    # the CSV table itself stays a plain table: no extra column
    if fmt == "csv":
        assert list(pd.read_csv(tmp_path / "b_expect.csv").columns) == list(b.expect.columns)


def test_exact_results_refuse_merging_and_have_zero_accumulators():
    ref = tsm.mesolve(MODEL, TIMES, observables=("j", "m"))
    acc = ref.accumulators
    assert (acc.count == 0).all() and (acc.m2 == 0).all()
    res = tsm.mcsolve(MODEL, TIMES, ntraj=64, seed=1, observables=("j", "m"))
    with pytest.raises(ValueError, match="only trajectory results"):
        res + ref


def test_result_is_immutable(parts):
    res = parts[0]
    for name in ("expect", "metadata", "jumps", "trajectories", "other"):
        with pytest.raises(AttributeError, match="immutable"):
            setattr(res, name, None)
    before = res.expect["mean"].to_numpy().copy()
    table = res.expect
    table.loc[:, "mean"] = 0.0
    table["extra"] = 1
    assert np.array_equal(res.expect["mean"].to_numpy(), before)
    assert "extra" not in res.expect.columns
    meta = res.metadata
    meta["ntraj"] = -1
    meta["model"]["N"] = 99
    assert res.metadata["ntraj"] == 200 and res.metadata["model"]["N"] == 5
    rows = res.trajectories["rows"]
    with pytest.raises(ValueError, match="read-only"):
        rows[0, 0, 0] = 1.0
    m2 = res.accumulators.m2
    m2[:] = -1.0
    assert (res.accumulators.m2 >= 0).all()
    j = res.jumps
    j.loc[:, "t"] = -1.0
    assert (res.jumps["t"] >= 0).all()
    # a pickled (or copied) result is the same result
    back = pickle.loads(pickle.dumps(res))
    pd.testing.assert_frame_equal(back.expect, res.expect, check_exact=True)
    assert np.array_equal(back.accumulators.m2, res.accumulators.m2)
    assert np.array_equal(back.trajectories["rows"], rows) and back.metadata == res.metadata
    assert copy.deepcopy(res).metadata == res.metadata
    # replace gives a changed copy and leaves the original alone
    other = res.replace(metadata={**res.metadata, "note": "x"})
    assert other.metadata["note"] == "x" and "note" not in res.metadata
    assert np.array_equal(other.accumulators.m2, res.accumulators.m2)


def _one_line_error(exc_info, field):
    msg = str(exc_info.value)
    assert "\n" not in msg and field in msg, msg


@pytest.mark.parametrize("build, field", [
    (lambda: Target(sem=-1.0), "target_sem"),
    (lambda: Target(sem=0.1, observables=()), "target_observables"),
    (lambda: Target(observables=("j",)), "target_observables"),
    (lambda: Target(max_ntraj=10), "max_ntraj"),
    (lambda: Target(sem=0.1, max_ntraj=0), "max_ntraj"),
    (lambda: Target(relative=True), "relative"),
    (lambda: Target(relative="yes"), "relative"),
    (lambda: Target(rel_floor=1.0), "rel_floor"),
    (lambda: Target(time_limit=0.0), "time_limit"),
    (lambda: Checkpointing(every=-1.0), "checkpoint_every"),
    (lambda: Checkpointing(resume=True), "resume"),
    (lambda: Checkpointing(resume="yes"), "resume"),
    (lambda: Checkpointing(path=""), "checkpoint"),
    (lambda: Cluster(backend="mpi"), "backend"),
    (lambda: Cluster(n_jobs=0), "n_jobs"),
    (lambda: Cluster(scheduler=""), "scheduler"),
    (lambda: Cluster(backend="loky", scheduler="tcp://127.0.0.1:1"), "backend"),
])
def test_option_records_refuse_bad_values_in_one_line(build, field):
    with pytest.raises(ValueError) as exc_info:
        build()
    _one_line_error(exc_info, field)


def test_option_records_resolve_defaults_and_are_frozen():
    assert Cluster().backend == "serial" and Cluster(n_jobs=2).backend == "threads"
    assert Cluster(scheduler="tcp://10.0.0.1:8786").backend == "dask"
    t = Target(sem=0.01)
    assert t.resolve(("j", "flow", "m"), 500) == (("j", "m"), 10**8)
    assert Target(sem=0.01, max_ntraj=900).resolve(("j",), 500) == (("j",), 900)
    with pytest.raises(ValueError, match="max_ntraj"):
        Target(sem=0.01, max_ntraj=100).resolve(("j",), 500)
    with pytest.raises(ValueError, match="target_observables"):
        Target(sem=0.01, observables=("n",)).resolve(("j",), 500)
    with pytest.raises(AttributeError):
        t.sem = 1.0


def test_registry_names_the_built_in_backends():
    assert tuple(BACKENDS) == NAMES
    for cls in BACKENDS.values():
        assert callable(cls.map) and isinstance(cls.warm_here, bool)


def test_a_registered_backend_runs_batches_in_its_own_order():
    """A backend that returns batches last-first (the worst completion order)
    gives the serial result bit for bit: the reducer restores block order."""

    @register("reversed")
    class Reversed(backends.Serial):
        def map(self, tasks):
            done = [self.job.run(ids) for ids in tasks]
            yield None  # a heartbeat is allowed
            yield from reversed(done)

    try:
        kw = dict(ntraj=300, seed=4, observables=("j", "m"), record_jumps=True)
        plain = tsm.mcsolve(MODEL, TIMES, **kw, cluster=tsm.Cluster(batch_size=64, progress=False))
        rev = tsm.mcsolve(MODEL, TIMES, **kw, cluster=tsm.Cluster(backend="reversed",
                                                                  batch_size=64, progress=False))
        assert rev.metadata["backend"] == "reversed"
        for col in ("mean", "sem", "ntraj"):
            assert np.array_equal(plain.expect[col].to_numpy(), rev.expect[col].to_numpy(),
                                  equal_nan=True)
        assert plain.jumps.equals(rev.jumps)
    finally:
        BACKENDS.pop("reversed", None)
    with pytest.raises(ValueError, match="backend must be one of"):
        tsm.mcsolve(MODEL, TIMES, ntraj=64, cluster=tsm.Cluster(backend="reversed"))


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    from thermospin_mc.io import atomic_write

    path = tmp_path / "f.bin"
    atomic_write(path, b"old")

    def broken(fh):
        fh.write(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]  # no temporary left
    atomic_write(path, "new \u00e9")
    assert path.read_text(encoding="utf-8") == "new \u00e9"
