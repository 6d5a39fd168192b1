"""A trajectory run's reducer state in the checkpoint schema.

:func:`dump` turns a :class:`~thermospin_mc.trajectories.stats.Reducer` into the
checkpoint's ``(state, arrays)`` (see :mod:`~thermospin_mc.trajectories.checkpoint`
for the file); :func:`restore` loads them back with every shape checked (:func:`corrupt` is
the one error of an unreadable or inconsistent file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .batches import BLOCK
from .stats import Reducer

__all__ = ["dump", "restore", "corrupt"]


def corrupt(path: Path, detail: str) -> ValueError:
    """The one-line error of an unreadable or inconsistent checkpoint file."""
    return ValueError(
        f"checkpoint {str(path)!r} is corrupted or not a thermospin-mc checkpoint ({detail}); "
        "it was left untouched: delete it or choose another checkpoint path to start afresh")


def dump(red: Reducer, elapsed: float) -> tuple[dict, dict]:
    """A reducer's ``(state, arrays)`` in the checkpoint schema."""
    nt, nc = red.nt, red.ncomp
    red.compact()
    pend = sorted(red.pending)
    blks = [red.pending[b] for b in pend]
    state = {"prefix_blocks": red.next_block, "prefix_ntraj": red.ntraj,
             "ntrunc": red.ntrunc, "elapsed_s": elapsed, "cap": red.cap,
             "modes": {str(k): m for k, m in sorted(red.modes.items())}}
    if red.base is not None:
        state["base"] = {"ntrunc": red.base["ntrunc"], "njumps": red.base["njumps"]}
    acc = red.acc
    arrays = {
        "acc_cnt": acc.cnt, "acc_mean": acc.mean, "acc_m2": acc.m2,
        "grp_cnt": red.groups.cnt, "grp_mean": red.groups.mean,
        "jumps": red.jumps[0] if red.jumps else np.zeros((0, 4)),
        "kept": red.kept[0] if red.kept else np.zeros((0, nt, nc)),
        "p_ids": np.array(pend, dtype=np.int64),
        "p_nb": np.array([k["nb"] for k in blks], dtype=np.int64),
        "p_ntrunc": np.array([k["ntrunc"] for k in blks], dtype=np.int64),
        "p_cnt": np.stack([k["cnt"] for k in blks]) if blks
        else np.zeros((0, nt), dtype=np.int64),
        "p_mean": np.stack([k["mean"] for k in blks]) if blks else np.zeros((0, nt, nc)),
        "p_m2": np.stack([k["m2"] for k in blks]) if blks else np.zeros((0, nt, nc)),
        "p_njumps": np.array([len(k["jumps"]) if red.record_jumps else 0 for k in blks],
                             dtype=np.int64),
        "p_jumps": np.concatenate([k["jumps"] for k in blks])
        if blks and red.record_jumps else np.zeros((0, 4)),
        "p_kept": np.concatenate([k["kept"] for k in blks])
        if blks and red.keep else np.zeros((0, nt, nc)),
    }
    if red.base is not None:
        arrays.update(base_cnt=red.base["cnt"], base_mean=red.base["mean"],
                      base_m2=red.base["m2"], base_grp_cnt=red.base["g_cnt"],
                      base_grp_mean=red.base["g_mean"])
    if red.rho is not None:  # states=True: the sum of states, per pending block, before base
        arrays["st_sum"] = red.rho
        arrays["p_st"] = (np.stack([k["rho"] for k in blks]) if blks
                          else np.zeros((0, red.state_size)))
        if red.base is not None:
            arrays["base_st"] = red.base["rho"]
    return state, arrays


def _checked_arrays(red: Reducer, path, state: dict, arrays: dict) -> tuple:
    """``(a, pb, pn, ntrunc, modes, base)``: a checkpoint's arrays, prefix counters,
    sector modes and short-last-block base state, every shape checked against
    ``red`` (a mismatch: a corrupted file)."""
    nt, nc = red.nt, red.ncomp
    try:
        a = {k: arrays[k] for k in ("acc_cnt", "acc_mean", "acc_m2", "grp_cnt", "grp_mean",
                                     "jumps", "kept",
                                     "p_ids", "p_nb", "p_ntrunc", "p_cnt", "p_mean",
                                     "p_m2", "p_njumps", "p_jumps", "p_kept")}
        pb, pn = int(state["prefix_blocks"]), int(state["prefix_ntraj"])
        ntrunc = int(state["ntrunc"])
        # sector -> mode (a schedule's sectors: "m@t=<stage start>")
        modes = {(int(k) if str(k).isdigit() else str(k)): str(m)
                 for k, m in dict(state["modes"]).items()}
        k = a["p_ids"].shape[0]
        ok = (a["acc_cnt"].shape == (nt,) and a["acc_mean"].shape == (nt, nc)
              and a["grp_cnt"].shape == red.groups.cnt.shape
              and a["grp_mean"].shape == red.groups.mean.shape
              and a["acc_m2"].shape == (nt, nc) and a["jumps"].ndim == 2
              and a["jumps"].shape[1] == 4 and a["kept"].shape[1:] == (nt, nc)
              and a["p_nb"].shape == (k,) and a["p_ntrunc"].shape == (k,)
              and a["p_cnt"].shape == (k, nt) and a["p_mean"].shape == (k, nt, nc)
              and a["p_m2"].shape == (k, nt, nc) and a["p_njumps"].shape == (k,)
              and a["p_jumps"].shape == (int(a["p_njumps"].sum()), 4)
              and a["p_kept"].shape[1:] == (nt, nc)
              and (pn == 0 if pb == 0 else (pb - 1) * BLOCK < pn <= pb * BLOCK))
        if red.keep:
            ok = ok and a["kept"].shape[0] == pn and \
                a["p_kept"].shape[0] == int(a["p_nb"].sum())
        base = None
        if "base" in state:
            base = {"cnt": arrays["base_cnt"].astype(np.int64),
                    "mean": arrays["base_mean"].astype(np.float64),
                    "m2": arrays["base_m2"].astype(np.float64),
                    "ntrunc": int(state["base"]["ntrunc"]),
                    "njumps": int(state["base"]["njumps"])}
            base["g_cnt"] = arrays["base_grp_cnt"].astype(np.int64)
            base["g_mean"] = arrays["base_grp_mean"].astype(np.float64)
            ok = ok and (base["cnt"].shape == (nt,) and base["mean"].shape == (nt, nc)
                         and base["g_cnt"].shape == (nt,) and base["g_mean"].shape == (nt, nc)
                         and base["m2"].shape == (nt, nc)
                         and 0 <= base["njumps"] <= a["jumps"].shape[0]
                         and pb >= 1 and pn < pb * BLOCK)
        if red.rho is not None:
            ns = red.state_size
            a["st_sum"], a["p_st"] = arrays["st_sum"], arrays["p_st"]
            ok = ok and a["st_sum"].shape == (ns,) and a["p_st"].shape == (k, ns)
            if base is not None:
                base["rho"] = arrays["base_st"].astype(np.float64)
                ok = ok and base["rho"].shape == (ns,)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise corrupt(Path(path), f"incomplete state: {exc}") from exc
    if not ok:
        raise corrupt(Path(path), "inconsistent array shapes")
    return a, pb, pn, ntrunc, modes, base


def restore(red: Reducer, path, state: dict, arrays: dict) -> None:
    """Load a verified checkpoint's state into ``red`` (shape errors: a corrupted file)."""
    a, pb, pn, ntrunc, modes, base = _checked_arrays(red, path, state, arrays)
    if pn > red.cap:
        raise ValueError(
            f"checkpoint {str(path)!r} already holds {pn} trajectories, more than the "
            f"{red.cap} asked for (ntraj, or max_ntraj with target_sem); ask for at "
            "least that many or use another checkpoint path")
    if pn != pb * BLOCK and pn != red.cap:
        if base is None:
            raise ValueError(
                f"checkpoint {str(path)!r} holds a finished run of {pn} trajectories "
                f"(not a whole number of {BLOCK}-trajectory blocks) written by an "
                f"older version; it can only be resumed with ntraj={pn}")
        # extend a run that ended with a short block: go back to the state
        # before that block; it is run again in full
        red.restored = pn
        pb -= 1
        pn = pb * BLOCK
        a["acc_cnt"], a["acc_mean"], a["acc_m2"] = base["cnt"], base["mean"], base["m2"]
        g = pb % a["grp_cnt"].shape[0]
        a["grp_cnt"], a["grp_mean"] = a["grp_cnt"].copy(), a["grp_mean"].copy()
        a["grp_cnt"][g], a["grp_mean"][g] = base["g_cnt"], base["g_mean"]
        ntrunc = base["ntrunc"]
        if red.rho is not None:
            a["st_sum"] = base["rho"]
        a["jumps"] = a["jumps"][:base["njumps"]]
        a["kept"] = a["kept"][:pn]
        base = None
    red.base = base
    red.restored = max(red.restored, pn)
    red.acc.load(a["acc_cnt"], a["acc_mean"], a["acc_m2"])
    red.groups.load(a["grp_cnt"], a["grp_mean"])
    if red.rho is not None:
        red.rho = np.array(a["st_sum"], dtype=np.float64)
    red.next_block, red.ntraj, red.ntrunc, red.modes = pb, pn, ntrunc, modes
    if red.record_jumps and len(a["jumps"]):
        red.jumps = [a["jumps"]]
    if red.keep and pn:
        red.kept = [a["kept"]]
    joff = koff = 0
    for i, b in enumerate(a["p_ids"].tolist()):
        nb, nj = int(a["p_nb"][i]), int(a["p_njumps"][i])
        blk = {"cnt": a["p_cnt"][i].astype(np.int64), "mean": a["p_mean"][i],
               "m2": a["p_m2"][i], "ntrunc": int(a["p_ntrunc"][i]), "nb": nb,
               "jumps": a["p_jumps"][joff:joff + nj] if red.record_jumps else None,
               "kept": a["p_kept"][koff:koff + nb] if red.keep else None,
               "rho": (np.array(a["p_st"][i], dtype=np.float64) if red.rho is not None
                       else None)}
        joff += nj
        koff += nb if red.keep else 0
        # a block finished beyond the prefix is reused only if it has the same size
        if pb <= b < red.nblocks and nb == red.block_size(b):
            red.pending[b] = blk
