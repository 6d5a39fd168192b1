"""Runs that scale out and survive: Dask backend, checkpoints, accuracy targets, merging.

The common thread is bit-identity: whatever the backend, however often a run
is killed and resumed, and wherever an accuracy target stops it, the result
must equal (bit for bit) a plain serial run with the same seed and final
ntraj. Merged results of independent seeds must equal the pooled statistics
of the union of their trajectories (to rounding, 1e-12 relative).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import thermospin_mc as tsm
from thermospin_mc.app import cli
from thermospin_mc.io import read_table
from thermospin_mc.trajectories.batches import BLOCK, run_batch
from thermospin_mc.trajectories.checkpoint import read_checkpoint, write_checkpoint
from thermospin_mc.trajectories.snapshot import dump, restore
from thermospin_mc.trajectories.stats import Reducer

TIMES = np.linspace(0.0, 20.0, 41)
MODEL = tsm.paper_model("pump", N=5, delta_T=2.0)
ROOT = Path(__file__).resolve().parents[1]


def _same(a: tsm.Result, b: tsm.Result, jumps: bool = False) -> None:
    """Bit-for-bit equality of two results' tables."""
    ea, eb = a.expect, b.expect
    assert list(ea.columns) == list(eb.columns)
    for col in ("t", "site", "ntraj"):
        assert np.array_equal(ea[col].to_numpy(), eb[col].to_numpy()), col
    assert (ea["observable"].to_numpy() == eb["observable"].to_numpy()).all()
    for col in ("mean", "sem"):
        assert np.array_equal(ea[col].to_numpy(), eb[col].to_numpy(), equal_nan=True), col
    if jumps:
        ja, jb = a.jumps.reset_index(drop=True), b.jumps.reset_index(drop=True)
        assert len(ja) == len(jb) and len(ja) > 0
        for col in ja.columns:
            assert (ja[col].to_numpy() == jb[col].to_numpy()).all(), col


# --------------------------------------------------------------------------- Dask
@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def test_dask_local_cluster_equals_joblib_bit_for_bit(dask_client, tmp_path):
    kw = dict(ntraj=1500, seed=31, record_jumps=True)
    serial = tsm.mcsolve(MODEL, TIMES, n_jobs=1, **kw)
    loky = tsm.mcsolve(MODEL, TIMES, n_jobs=2, **kw,
                       cluster=tsm.Cluster(batch_size=128, backend="loky"))
    on_client = tsm.mcsolve(MODEL, TIMES, **kw,
                            cluster=tsm.Cluster(client=dask_client, batch_size=64))
    # connecting to an existing scheduler by address, as on a real cluster
    by_address = tsm.mcsolve(MODEL, TIMES, **kw,
                             cluster=tsm.Cluster(scheduler=dask_client.scheduler.address,
                                                 batch_size=256))
    assert on_client.metadata["backend"] == by_address.metadata["backend"] == "dask"
    assert loky.metadata["backend"] == "loky"
    for other in (loky, on_client, by_address):
        _same(serial, other, jumps=True)
    # the command line on an existing scheduler
    assert cli.build_model({"scenario": "pump", "N": 5}) == MODEL
    code = cli.main(["run", "--scenario", "pump", "--N", "5", "--times", "0:20:41", "--ntraj",
                     "1500", "--seed", "31", "--record-jumps", "--scheduler",
                     dask_client.scheduler.address, "--out", str(tmp_path / "cli"),
                     "--format", "parquet", "--no-compare", "--no-progress"])
    assert code == 0
    _same(serial, _read_result(tmp_path / "cli"), jumps=True)
    # an accuracy target with a checkpoint on the cluster stops at the same block
    tkw = dict(ntraj=256, seed=32, observables=("j", "m"),
               target=tsm.Target(sem=1e-2, max_ntraj=20_000))
    t_serial = tsm.mcsolve(MODEL, TIMES, **tkw)
    t_dask = tsm.mcsolve(MODEL, TIMES, **tkw, checkpoint=tsm.Checkpointing(path=tmp_path / "t.npz"),
                         cluster=tsm.Cluster(client=dask_client, batch_size=64))
    assert t_serial.metadata["stopped_by"] == t_dask.metadata["stopped_by"] == "target_sem"
    _same(t_serial, t_dask)


def test_dask_worker_killed_mid_run_gives_the_same_result(dask_client):
    kw = dict(ntraj=24_000, seed=41, observables=("j", "m", "n"))
    ref = tsm.mcsolve(MODEL, TIMES, n_jobs=1, **kw, cluster=tsm.Cluster(batch_size=64))
    t0 = time.monotonic()
    # warm and time the workers
    tsm.mcsolve(MODEL, TIMES, **kw, cluster=tsm.Cluster(client=dask_client, batch_size=64))
    duration = time.monotonic() - t0
    pids = dask_client.run(os.getpid)
    victim = sorted(pids.values())[0]
    killed = {}

    def kill_later():
        time.sleep(0.4 * duration)
        os.kill(victim, signal.SIGKILL)
        killed["at"] = time.monotonic()

    killer = threading.Thread(target=kill_later)
    killer.start()
    res = tsm.mcsolve(MODEL, TIMES, **kw, cluster=tsm.Cluster(client=dask_client, batch_size=64))
    finished = time.monotonic()
    killer.join()
    assert killed["at"] < finished, "the worker was killed only after the run had ended"
    _same(ref, res)
    # the worker really died (its nanny started a new process)
    dask_client.wait_for_workers(2, timeout=60)
    assert victim not in dask_client.run(os.getpid).values()


# --------------------------------------------------------------------------- checkpoints
def _cli_cmd(ck: Path, out: Path, ntraj: int) -> list[str]:
    return [sys.executable, "-m", "thermospin_mc.cli", "run", "--scenario", "pump", "--N", "5",
            "--times", "0:20:41", "--ntraj", str(ntraj), "--seed", "7", "--n-jobs", "1",
            "--batch-size", "64", "--record-jumps", "--checkpoint", str(ck),
            "--checkpoint-every", "0", "--out", str(out), "--format", "parquet",
            "--no-compare", "--no-progress"]


CLI_NTRAJ = 12_000


@pytest.fixture(scope="module")
def cli_reference():
    model = cli.build_model({"scenario": "pump", "N": 5})
    return tsm.mcsolve(model, cli.parse_times("0:20:41"), ntraj=CLI_NTRAJ, seed=7,
                       record_jumps=True)


def _read_result(out: Path) -> tsm.Result:
    df, meta = read_table(out / "expect.parquet")
    jumps, _ = read_table(out / "jumps.parquet")
    return tsm.Result(df, meta, jumps=jumps)


def _wait_for_write(ck: Path, since: float, proc, timeout=60.0) -> bool:
    """Wait until the checkpoint was (re)written after ``since`` or the process ended."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ck.exists() and ck.stat().st_mtime_ns > since:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError("no checkpoint was written")


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path, cli_reference):
    ck, out = tmp_path / "run.npz", tmp_path / "out"
    cmd = _cli_cmd(ck, out, CLI_NTRAJ)
    rng = random.Random(20260)
    env = {**os.environ, "CI": "1"}
    kills_mid_run = 0
    last = -1
    for _ in range(4):
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        if _wait_for_write(ck, last, proc):
            time.sleep(rng.uniform(0.0, 0.15))  # a random moment: mid-batch or mid-write
            last = ck.stat().st_mtime_ns
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills_mid_run += 1
        proc.wait(timeout=60)
        proc.stderr.close()
    assert kills_mid_run >= 2, "the runs ended before they could be killed"
    # no torn file: what is on disk is always a complete checkpoint
    _, state, _ = read_checkpoint(ck)
    assert 0 < state["prefix_ntraj"] <= CLI_NTRAJ
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    res = _read_result(out)
    assert res.metadata["resumed_ntraj"] > 0
    _same(cli_reference, res, jumps=True)


def test_ctrl_c_writes_a_checkpoint_and_exits_130(tmp_path, cli_reference):
    ck, out = tmp_path / "run.npz", tmp_path / "out"
    cmd = _cli_cmd(ck, out, CLI_NTRAJ)
    env = {**os.environ, "CI": "1"}
    # the child gets the default SIGINT disposition, as when started from a terminal
    # (a test runner launched from a non-interactive shell may inherit SIGINT ignored)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert _wait_for_write(ck, -1, proc), "the run ended before Ctrl-C"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "checkpoint" in err and "Traceback" not in err
    _, state, _ = read_checkpoint(ck)
    assert 0 < state["prefix_ntraj"] < CLI_NTRAJ
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resumed from checkpoint" in done.stdout
    _same(cli_reference, _read_result(out), jumps=True)


def test_resume_after_time_limit_and_extension_equal_plain_runs(tmp_path):
    ck = tmp_path / "ck.npz"
    kw = dict(seed=5, record_jumps=True, observables=("j", "m"))
    part = tsm.mcsolve(MODEL, TIMES, ntraj=1000, **kw, cluster=tsm.Cluster(batch_size=64),
                       target=tsm.Target(time_limit=1e-9),
                       checkpoint=tsm.Checkpointing(path=ck, keep_trajectories=True))
    assert part.metadata["stopped_by"] == "time_limit"
    assert 0 < part.metadata["ntraj"] < 1000
    _same(part, tsm.mcsolve(MODEL, TIMES, ntraj=part.metadata["ntraj"], **kw,
                            cluster=tsm.Cluster(batch_size=64),
                            checkpoint=tsm.Checkpointing(keep_trajectories=True)), jumps=True)
    full = tsm.mcsolve(MODEL, TIMES, ntraj=1000, **kw, cluster=tsm.Cluster(batch_size=64),
                       checkpoint=tsm.Checkpointing(path=ck, resume=True, keep_trajectories=True))
    plain = tsm.mcsolve(MODEL, TIMES, ntraj=1000, **kw, cluster=tsm.Cluster(batch_size=64),
                        checkpoint=tsm.Checkpointing(keep_trajectories=True))
    assert full.metadata["resumed_ntraj"] == part.metadata["ntraj"]
    assert full.metadata["stopped_by"] == "ntraj"
    _same(plain, full, jumps=True)
    assert np.array_equal(plain.trajectories["rows"], full.trajectories["rows"])
    # a finished whole-block run extends to more trajectories later
    ck2 = tmp_path / "ck2.npz"
    tsm.mcsolve(MODEL, TIMES, ntraj=640, **kw, cluster=tsm.Cluster(batch_size=64),
                checkpoint=tsm.Checkpointing(path=ck2, keep_trajectories=True))
    more = tsm.mcsolve(MODEL, TIMES, ntraj=1000, **kw, cluster=tsm.Cluster(batch_size=64),
                       checkpoint=tsm.Checkpointing(path=ck2, keep_trajectories=True))
    assert more.metadata["resumed_ntraj"] == 640
    _same(plain, more, jumps=True)
    # ... and so does a run that ended with a short block (1000 = 15 * 64 + 40)
    _same(tsm.mcsolve(MODEL, TIMES, ntraj=1200, **kw, cluster=tsm.Cluster(batch_size=64),
                      checkpoint=tsm.Checkpointing(keep_trajectories=True)),
          tsm.mcsolve(MODEL, TIMES, ntraj=1200, **kw, cluster=tsm.Cluster(batch_size=64),
                      checkpoint=tsm.Checkpointing(path=ck, keep_trajectories=True)),
          jumps=True)
    with pytest.raises(ValueError, match="already holds 1200 trajectories"):
        tsm.mcsolve(MODEL, TIMES, ntraj=900, **kw, cluster=tsm.Cluster(batch_size=64),
                    checkpoint=tsm.Checkpointing(path=ck, keep_trajectories=True))


def test_blocks_finished_out_of_order_survive_a_checkpoint(tmp_path):
    names = ("j", "m")
    key = np.random.SeedSequence(9).generate_state(4, dtype=np.uint64)
    ntraj = 5 * BLOCK - 10
    args = (MODEL, TIMES, key)
    kw = dict(ntraj=ntraj, names=names, record_jumps=True, keep=False, max_magnons=5)
    ck = tmp_path / "ck.npz"
    # let a loky-like run finish blocks 0, 2, 4 (block 4 is the short last one)
    plain = tsm.mcsolve(MODEL, TIMES, ntraj=ntraj, seed=9, observables=names,
                        record_jumps=True)
    tsm.mcsolve(MODEL, TIMES, ntraj=BLOCK, seed=9, observables=names, record_jumps=True,
                checkpoint=tsm.Checkpointing(path=ck))  # a valid identity and block 0
    identity, state, arrays = read_checkpoint(ck)
    red = Reducer(TIMES.size, 2, ntraj, True, False)
    restore(red, ck, state, arrays)
    for ids in ([2], [4]):
        blocks, modes = run_batch(*args, block_ids=ids, **kw)
        red.offer(ids, blocks, modes)
    assert red.next_block == 1 and sorted(red.pending) == [2, 4]
    state, arrays = dump(red, 0.0)
    write_checkpoint(ck, identity, state, arrays)
    res = tsm.mcsolve(MODEL, TIMES, ntraj=ntraj, seed=9, observables=names, record_jumps=True,
                      checkpoint=tsm.Checkpointing(path=ck))
    _same(plain, res, jumps=True)


def _finished_checkpoint(path: Path) -> bytes:
    tsm.mcsolve(MODEL, TIMES, ntraj=300, seed=3, observables=("j", "m"),
                checkpoint=tsm.Checkpointing(path=path))
    return path.read_bytes()


def test_corrupted_checkpoint_is_refused_and_left_untouched(tmp_path):
    ck = tmp_path / "ck.npz"
    good = _finished_checkpoint(ck)
    n = len(good)
    flipped = bytearray(good)
    for i in range(n // 2, n // 2 + 16):
        flipped[i] ^= 0xFF
    variants = {"truncated": good[: n // 2], "flipped bytes": bytes(flipped),
                "not a checkpoint": b"hello, I am a text file\n", "empty": b""}
    for label, blob in variants.items():
        ck.write_bytes(blob)
        with pytest.raises(ValueError, match="corrupted or not a thermospin-mc checkpoint"):
            tsm.mcsolve(MODEL, TIMES, ntraj=300, seed=3, observables=("j", "m"),
                        checkpoint=tsm.Checkpointing(path=ck))
        assert ck.read_bytes() == blob, label
        assert not ck.with_name(ck.name + ".tmp").exists()
    # a valid zip/npz that is not ours
    np.savez(ck, x=np.arange(3))
    blob = ck.read_bytes()
    with pytest.raises(ValueError, match="corrupted or not a thermospin-mc checkpoint"):
        tsm.mcsolve(MODEL, TIMES, ntraj=300, seed=3, observables=("j", "m"),
                    checkpoint=tsm.Checkpointing(path=ck))
    assert ck.read_bytes() == blob


def test_mismatched_checkpoint_is_refused_and_left_untouched(tmp_path):
    ck = tmp_path / "ck.npz"
    good = _finished_checkpoint(ck)
    base = dict(ntraj=300, seed=3, observables=("j", "m"), checkpoint=tsm.Checkpointing(path=ck))
    cases = [
        ("seed", dict(MODEL=MODEL, times=TIMES, kw=dict(base, seed=4))),
        ("model", dict(MODEL=MODEL.with_(gamma=1.0), times=TIMES, kw=base)),
        ("output times", dict(MODEL=MODEL, times=TIMES[:-1], kw=base)),
        ("observables", dict(MODEL=MODEL, times=TIMES, kw=dict(base, observables=("j",)))),
        ("max_magnons", dict(MODEL=MODEL, times=TIMES, kw=dict(base,
                                                               target=tsm.Target(max_magnons=3)))),
        ("record_jumps", dict(MODEL=MODEL, times=TIMES, kw=dict(base, record_jumps=True))),
    ]
    for what, case in cases:
        with pytest.raises(ValueError, match=f"different {what}.*refusing to mix"):
            tsm.mcsolve(case["MODEL"], case["times"], **case["kw"])
        assert ck.read_bytes() == good, what
    # a checkpoint written by another code version
    identity, state, arrays = read_checkpoint(ck)
    identity["code"] = dict(identity["code"], source_sha256="0" * 16)
    write_checkpoint(ck, identity, state, arrays)
    forged = ck.read_bytes()
    with pytest.raises(ValueError, match="different code version"):
        tsm.mcsolve(MODEL, TIMES, **base)
    assert ck.read_bytes() == forged
    # resume=False never overwrites; resume=True needs the file
    with pytest.raises(ValueError, match="already exists"):
        tsm.mcsolve(MODEL, TIMES, **dict(base, checkpoint=tsm.Checkpointing(path=ck,
                                                                             resume=False)))
    assert ck.read_bytes() == forged
    with pytest.raises(ValueError, match="no checkpoint"):
        tsm.mcsolve(MODEL, TIMES, **dict(base, checkpoint=tsm.Checkpointing(
            path=tmp_path / "nope.npz", resume=True)))
    # seed=None continues the checkpoint's seed
    ck.write_bytes(good)
    again = tsm.mcsolve(MODEL, TIMES, ntraj=300, seed=None, observables=("j", "m"),
                        checkpoint=tsm.Checkpointing(path=ck))
    assert again.metadata["seed"] == 3 and again.metadata["resumed_ntraj"] == 300
    assert ck.read_bytes() == good  # a finished checkpoint is not rewritten


# --------------------------------------------------------------------------- targets
def _worst(res, names, relative):
    e = res.expect[(res.expect.t > 0) & res.expect.observable.isin(names)]
    if relative:
        return float(np.where(e["sem"] == 0, 0.0, e["sem"] / e["mean"].abs()).max())
    return float(e["sem"].max())


def test_target_sem_stops_at_the_first_block_that_meets_it():
    names = ("j", "m")
    kw = dict(seed=17, observables=names)
    res = tsm.mcsolve(MODEL, TIMES, ntraj=500, **kw, target=tsm.Target(sem=1e-2, max_ntraj=50_000))
    meta = res.metadata
    n = meta["ntraj"]
    assert meta["stopped_by"] == "target_sem" and 500 <= n < 50_000 and n % BLOCK == 0
    assert _worst(res, names, False) <= 1e-2 == meta["target_sem"]
    assert meta["achieved_sem"] == _worst(res, names, False)
    _same(res, tsm.mcsolve(MODEL, TIMES, ntraj=n, **kw))  # equals the plain run
    assert _worst(tsm.mcsolve(MODEL, TIMES, ntraj=n - BLOCK, **kw), names, False) > 1e-2
    # relative target on m (|m| is far from zero), independent of n_jobs
    rel = dict(ntraj=256, **kw,
               target=tsm.Target(sem=5e-3, relative=True, observables=("m",), max_ntraj=50_000))
    r1 = tsm.mcsolve(MODEL, TIMES, **rel)
    r2 = tsm.mcsolve(MODEL, TIMES, n_jobs=2, **rel, cluster=tsm.Cluster(batch_size=128))
    assert r1.metadata["stopped_by"] == "target_sem"
    assert _worst(r1, ("m",), True) <= 5e-3
    _same(r1, r2)
    # limits
    capped = tsm.mcsolve(MODEL, TIMES, ntraj=200, **kw, target=tsm.Target(sem=1e-9, max_ntraj=1000))
    assert capped.metadata["stopped_by"] == "max_ntraj" and capped.metadata["ntraj"] == 1000
    _same(capped, tsm.mcsolve(MODEL, TIMES, ntraj=1000, **kw))
    timed = tsm.mcsolve(MODEL, TIMES, ntraj=200, **kw, target=tsm.Target(sem=1e-9, time_limit=0.2))
    assert timed.metadata["stopped_by"] == "time_limit"
    assert 200 <= timed.metadata["ntraj"] < 10**8


# --------------------------------------------------------------------------- merging
def test_merged_results_equal_the_union_of_trajectories(tmp_path):
    kw = dict(observables=("j", "j_bond", "flow", "m", "n"), record_jumps=True,
              checkpoint=tsm.Checkpointing(keep_trajectories=True))
    parts = [tsm.mcsolve(MODEL, TIMES, ntraj=n, seed=s, **kw)
             for n, s in ((300, 1), (170, 2), (64, 3))]
    merged = parts[0] + parts[1] + parts[2]
    assert merged.metadata["ntraj"] == 534 and merged.metadata["seeds"] == [1, 2, 3]
    rows = np.concatenate([p.trajectories["rows"] for p in parts])
    assert np.array_equal(merged.trajectories["rows"], rows)
    cols = parts[0].trajectories["columns"]
    half_a = np.asarray(MODEL.couplings) / 2
    for name in ("j", "j_bond", "flow", "m", "n"):
        lo, hi = cols["j_bond" if name == "flow" else name]
        x = rows[:, :, lo:hi] * (half_a if name == "flow" else 1.0)
        mean, sem = x.mean(axis=0), x.std(axis=0, ddof=1) / np.sqrt(len(rows))
        np.testing.assert_allclose(merged.get(name), mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(merged.get(name, "sem"), sem, rtol=1e-12, atol=1e-14)
    assert (merged.expect["ntraj"] == 534).all()
    # jumps: trajectory indices continue across the parts
    assert len(merged.jumps) == sum(len(p.jumps) for p in parts)
    assert merged.jumps["traj"].max() < 534
    assert merged.jumps["traj"].min() == 0
    # tsm.merge, sum() and a merge of results read back from files agree (bit for
    # bit when the same parts are pooled in the same way: the files keep each
    # row's m2; chained pairwise merges differ from one n-ary merge by rounding only)
    via_merge = tsm.merge(parts)
    _same(merged, sum(parts), jumps=True)
    parts[1].to_parquet(tmp_path, prefix="b_")
    loaded = tsm.read_result(tmp_path, prefix="b_")  # with the exact per-row m2
    _same(via_merge, tsm.merge(parts[0], loaded, parts[2]))
    for stat in ("mean", "sem"):
        np.testing.assert_allclose(via_merge.expect[stat], merged.expect[stat], rtol=1e-12,
                                   atol=1e-15)
    assert via_merge.jumps.equals(merged.jumps)
    # merged results merge further (seeds are tracked)
    more = tsm.mcsolve(MODEL, TIMES, ntraj=64, seed=4, **kw)
    assert (merged + more).metadata["seeds"] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="share the seed 2"):
        merged + tsm.mcsolve(MODEL, TIMES, ntraj=64, seed=2, **kw)


def test_merge_refuses_overlapping_seeds_and_different_models():
    a = tsm.mcsolve(MODEL, TIMES, ntraj=64, seed=1, observables=("j", "m"))
    with pytest.raises(ValueError, match="share the seed 1"):
        a + tsm.mcsolve(MODEL, TIMES, ntraj=128, seed=1, observables=("j", "m"))
    with pytest.raises(ValueError, match="different models.*gamma"):
        a + tsm.mcsolve(MODEL.with_(gamma=2.0), TIMES, ntraj=64, seed=2,
                        observables=("j", "m"))
    with pytest.raises(ValueError, match="different output times"):
        a + tsm.mcsolve(MODEL, TIMES[:-1], ntraj=64, seed=2, observables=("j", "m"))
    with pytest.raises(ValueError, match="different observables"):
        a + tsm.mcsolve(MODEL, TIMES, ntraj=64, seed=2, observables=("j",))
    with pytest.raises(ValueError, match="different max_magnons"):
        a + tsm.mcsolve(MODEL, TIMES, ntraj=64, seed=2, observables=("j", "m"),
                        target=tsm.Target(max_magnons=2))
    with pytest.raises(ValueError, match="only trajectory results"):
        tsm.merge(a, tsm.mesolve(MODEL, TIMES, observables=("j", "m")))


# --------------------------------------------------------------------------- validation, CLI
@pytest.mark.filterwarnings("ignore:mcsolve\\(\\) keywords:DeprecationWarning")
def test_bad_scale_out_arguments_are_rejected(tmp_path):
    """The keywords of earlier releases keep their checks and messages."""
    run = lambda **kw: tsm.mcsolve(MODEL, TIMES, ntraj=64, seed=1, **kw)  # noqa: E731
    cases = [
        ("backend must be one of", dict(backend="mpi")),
        ("scheduler must be", dict(scheduler="")),
        ("backend must be 'dask'", dict(backend="loky", scheduler="tcp://x:1")),
        ("client must be a dask.distributed.Client", dict(client=object())),
        ("checkpoint_every must be >= 0", dict(checkpoint=tmp_path / "c.npz",
                                                checkpoint_every=-1)),
        ("resume=True needs a checkpoint", dict(resume=True)),
        ("target_sem must be > 0", dict(target_sem=0.0)),
        ("target_observables must be among", dict(target_sem=1e-3, target_observables=("n",),
                                                  observables=("j",))),
        ("max_ntraj must be >= 64", dict(target_sem=1e-3, max_ntraj=10)),
        ("max_ntraj only applies with target_sem", dict(max_ntraj=100)),
        ("time_limit must be > 0", dict(time_limit=0)),
        ("checkpoint must be a file path", dict(checkpoint=tmp_path)),
        ("target_sem needs at least one output time > 0", dict(target_sem=1e-3, times=[0.0])),
    ]
    for msg, kw in cases:
        times = kw.pop("times", TIMES)
        with pytest.raises(ValueError, match=msg):
            tsm.mcsolve(MODEL, times, ntraj=64, seed=1, **kw)
    assert run(backend="serial").metadata["backend"] == "serial"


def test_cli_target_sem_flags(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["run", "--scenario", "pump", "--N", "5", "--times", "0:20:41",
                     "--ntraj", "256", "--seed", "3", "--n-jobs", "1", "--observables", "j,m",
                     "--target-sem", "1%", "--target-observables", "m", "--max-ntraj", "20000",
                     "--checkpoint", str(tmp_path / "ck.npz"), "--out", str(out),
                     "--format", "csv", "--no-compare", "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0 and "stopped by target_sem" in text and "relative" in text
    _, meta = read_table(out / "expect.csv")
    assert meta["target_sem"] == 0.01 and meta["relative"] is True
    assert (tmp_path / "ck.npz").exists()
    assert cli.main(["run", "--N", "5", "--resume"]) == 2
    assert "--resume needs --checkpoint" in capsys.readouterr().err
    assert cli.main(["run", "--N", "5", "--target-sem", "abc"]) == 2
    assert "--target-sem must be a number" in capsys.readouterr().err


# --------------------------------------------------------------------------- memory (slow)
@pytest.mark.slow
def test_streamed_million_trajectories_stay_under_500_MB():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "probe_memory.py"),
                           "--ntraj", "1000000", "--n-jobs", "2", "--json"],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr
    fig = json.loads(proc.stdout.strip().splitlines()[-1])
    assert fig["ntraj"] == 1_000_000
    assert fig["peak_rss_parent_mb"] < 500, fig
    assert fig["peak_rss_worker_max_mb"] < 500, fig
    assert fig["parent_growth_mb"] < 100, fig  # streamed: nothing grows with ntraj
