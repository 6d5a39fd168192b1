"""The one run record of ``mcsolve`` (trajectories/runrecord.py): option records,
the keywords of earlier releases with their DeprecationWarning, and what is
derived from the record (worker job, checkpoint identity)."""

import inspect
import warnings

import numpy as np
import pytest

import thermospin_mc as tsm
from thermospin_mc.trajectories.runrecord import KEYWORDS, from_keywords, plan_run

MODEL = tsm.paper_model("pump", N=5, delta_T=2.0)
TIMES = np.linspace(0.0, 2.0, 5)
#: ``mcsolve``'s keywords before the records (the earlier signature, the contract
#: of the deprecation): each must still be accepted.
EARLIER = ("batch_size", "keep_trajectories", "max_magnons", "progress", "dense_max", "backend",
           "client", "scheduler", "checkpoint", "resume", "checkpoint_every", "target_sem",
           "target_observables", "relative", "rel_floor", "max_ntraj", "time_limit")


def _same(a, b):
    assert np.array_equal(a.expect["mean"].to_numpy(), b.expect["mean"].to_numpy())
    assert np.array_equal(a.expect["sem"].to_numpy(), b.expect["sem"].to_numpy())


def test_signature_has_at_most_twelve_named_parameters():
    params = inspect.signature(tsm.mcsolve).parameters.values()
    named = [p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    assert named == ["model", "times", "ntraj", "seed", "n_jobs", "observables", "pairs",
                     "record_jumps", "states", "target", "checkpoint", "cluster"]
    assert sorted(KEYWORDS) == sorted(EARLIER)


def test_earlier_keywords_warn_name_the_record_and_give_the_same_result(tmp_path):
    kw = dict(ntraj=192, seed=5, observables=("j", "m"))
    new = tsm.mcsolve(MODEL, TIMES, **kw,
                      target=tsm.Target(sem=0.05, max_ntraj=640, max_magnons=3),
                      checkpoint=tsm.Checkpointing(path=tmp_path / "a.npz",
                                                   keep_trajectories=True),
                      cluster=tsm.Cluster(batch_size=64, progress=False, dense_max=2))
    with pytest.warns(DeprecationWarning) as rec:
        old = tsm.mcsolve(MODEL, TIMES, **kw, target_sem=0.05, max_ntraj=640, max_magnons=3,
                          checkpoint=tmp_path / "b.npz", keep_trajectories=True,
                          batch_size=64, progress=False, dense_max=2)
    assert len(rec) == 1
    assert rec[0].filename == __file__            # the warning points at the caller's line
    text = str(rec[0].message)
    for part in ("target=tsm.Target(sem=..., max_ntraj=..., max_magnons=...)",
                 "checkpoint=tsm.Checkpointing(path=..., keep_trajectories=...)",
                 "cluster=tsm.Cluster(batch_size=..., progress=..., dense_max=...)"):
        assert part in text
    _same(new, old)
    assert new.metadata["stopped_by"] == old.metadata["stopped_by"]
    assert new.metadata["max_magnons"] == old.metadata["max_magnons"] == 3
    assert np.array_equal(new.trajectories["rows"], old.trajectories["rows"])
    assert (tmp_path / "a.npz").exists() and (tmp_path / "b.npz").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # the records alone warn about nothing
        tsm.mcsolve(MODEL, TIMES, 64, 1, cluster=tsm.Cluster(progress=False))


def test_refusals_are_one_line():
    with pytest.raises(ValueError, match=r"give progress inside cluster=tsm.Cluster"):
        tsm.mcsolve(MODEL, TIMES, 64, 1, cluster=tsm.Cluster(), progress=False)
    with pytest.raises(ValueError, match=r"give resume inside checkpoint=tsm.Checkpointing"):
        tsm.mcsolve(MODEL, TIMES, 64, 1, checkpoint=tsm.Checkpointing(), resume=False)
    with pytest.raises(TypeError, match="unexpected keyword argument 'target_se'"):
        tsm.mcsolve(MODEL, TIMES, 64, 1, target_se=0.1)
    with pytest.raises(ValueError, match="target must be a tsm.Target"):
        tsm.mcsolve(MODEL, TIMES, 64, 1, target=0.1)
    with pytest.raises(ValueError, match="cluster must be a tsm.Cluster"):
        tsm.mcsolve(MODEL, TIMES, 64, 1, cluster="threads")
    with pytest.raises(ValueError, match="n_jobs=2 and cluster=Cluster\\(n_jobs=3\\) disagree"):
        tsm.mcsolve(MODEL, TIMES, 64, 1, 2, cluster=tsm.Cluster(n_jobs=3))
    with pytest.raises(ValueError, match="max_magnons must be"):
        tsm.mcsolve(MODEL, TIMES, 64, 1, target=tsm.Target(max_magnons=7))
    for bad in (dict(batch_size=0), dict(progress="yes"), dict(progress=2), dict(dense_max=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            tsm.Cluster(**bad)
    with pytest.raises(ValueError, match="keep_trajectories must be True or False"):
        tsm.Checkpointing(keep_trajectories="no")
    assert tsm.Cluster(progress=np.False_).progress is False
    assert tsm.Checkpointing(keep_trajectories=1).keep_trajectories is True


def test_workers_from_n_jobs_or_the_cluster_are_the_same_run():
    a = tsm.mcsolve(MODEL, TIMES, 256, 3, 2, cluster=tsm.Cluster(progress=False))
    b = tsm.mcsolve(MODEL, TIMES, 256, 3, cluster=tsm.Cluster(n_jobs=2, progress=False))
    c = tsm.mcsolve(MODEL, TIMES, 256, 3, cluster=tsm.Cluster(progress=False))
    assert a.metadata["backend"] == b.metadata["backend"] == "threads"
    assert a.metadata["n_jobs"] == b.metadata["n_jobs"] == 2
    assert c.metadata["backend"] == "serial"
    _same(a, b)
    _same(a, c)
    loky = tsm.Cluster(backend="loky").with_n_jobs(2)
    assert (loky.backend, loky.n_jobs) == ("loky", 2)


def test_identity_and_job_derive_from_the_record():
    def plan(**records):
        return plan_run(MODEL, TIMES, 128, 9, 1, observables=("j", "m"), pairs=None,
                        record_jumps=False, states=False, legacy={},
                        **{"target": None, "checkpoint": None, "cluster": None, **records})

    base = plan()
    assert base.job.max_magnons == MODEL.N and base.job.cap == 128
    # how the work is carried out is not part of what a checkpoint belongs to ...
    same = plan(cluster=tsm.Cluster(batch_size=512, progress=False, n_jobs=2))
    assert same.identity == base.identity
    # ... but everything that changes a number is
    for records, key in ((dict(cluster=tsm.Cluster(dense_max=3)), "dense_max"),
                         (dict(target=tsm.Target(max_magnons=3)), "max_magnons"),
                         (dict(checkpoint=tsm.Checkpointing(keep_trajectories=True)),
                          "keep_trajectories")):
        other = plan(**records)
        assert other.identity[key] != base.identity[key], key
        assert {k for k in base.identity if base.identity[k] != other.identity[k]} == {key}
    assert plan(target=tsm.Target(sem=0.1, max_ntraj=1024)).job.cap == 1024


def test_command_line_keys_build_the_records():
    records = from_keywords({"target_sem": 0.01, "rel_floor": 0.5, "checkpoint": "c.npz",
                             "checkpoint_every": 5.0, "backend": "loky", "batch_size": 128})
    assert records["target"] == tsm.Target(sem=0.01, rel_floor=0.5)
    assert records["checkpoint"].path.name == "c.npz" and records["checkpoint"].every == 5.0
    assert (records["cluster"].backend, records["cluster"].batch_size) == ("loky", 128)
    with pytest.raises(ValueError, match="'ntraj' is not an option of a run record"):
        from_keywords({"ntraj": 5})
