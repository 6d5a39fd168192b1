"""Shared helpers of the command-line tests."""

from __future__ import annotations

import json

from thermospin_mc.app import cli

#: A small, fast trajectory run's flags.
SMALL = ["--N", "5", "--times", "0:4:5", "--ntraj", "64", "--n-jobs", "1", "--no-progress"]


def dry(argv, capsys, tmp_path):
    """``run --dry-run``: (exit status, resolved dict or None, stderr)."""
    rc = cli.main(["run", "--dry-run", "--out", str(tmp_path / "out"), *argv])
    cap = capsys.readouterr()
    return rc, (json.loads(cap.out) if rc == 0 else None), cap.err


def one_line_error(rc, err):
    """Whether a command was refused by the one input rule: status 2, one line."""
    return rc == 2 and err.count("\n") == 1 and err.startswith("thermospin-mc: error: ")
