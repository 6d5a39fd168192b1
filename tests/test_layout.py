"""Every public name keeps its import path across the layer folders (docs/architecture.md).

``tests/data/flat_layout_names.json`` holds the ``__all__`` of every module of
the flat layout before the folders existed (the contract of this re-cut): each
name must still import from its old module path, which the package root
aliases (``thermospin_mc.MOVED``) to the module's new home.
"""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import thermospin_mc as tsm

DATA = Path(__file__).parent / "data" / "flat_layout_names.json"
FLAT = json.loads(DATA.read_text())["modules"]


@pytest.mark.parametrize("module", sorted(FLAT))
def test_every_name_of_the_flat_layout_still_imports(module):
    path = "thermospin_mc" if module == "__init__" else f"thermospin_mc.{module}"
    mod = importlib.import_module(path)
    missing = [name for name in FLAT[module] if not hasattr(mod, name)]
    assert not missing, f"{path} lost {missing}"


def test_old_paths_are_the_new_modules():
    assert set(tsm.MOVED) | {"exact", "analysis", "io", "cli"} >= set(FLAT) - {"__init__"} - {
        "_validate", "_threads", "_version", "signals"}
    for old, new in tsm.MOVED.items():
        assert importlib.import_module(f"thermospin_mc.{old}") is importlib.import_module(
            f"thermospin_mc.{new}"), old
    from thermospin_mc.model import ChainModel
    from thermospin_mc.results import merge

    from thermospin_mc.exact import mesolve
    assert (mesolve, ChainModel, merge) == (tsm.mesolve, tsm.ChainModel, tsm.merge)
    assert tsm.cloning.__module__ == "thermospin_mc.trajectories.cloning"   # the function


def test_public_names_of_the_package_analysis_and_io():
    for mod in (tsm, tsm.analysis, tsm.io):
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert not missing, (mod.__name__, missing)
    assert set(FLAT["__init__"]) <= set(tsm.__all__)
    assert set(FLAT["analysis"]) <= set(tsm.analysis.__all__)
    assert set(FLAT["io"]) <= set(tsm.io.__all__)


def test_command_line_module_path_still_runs():
    out = subprocess.run([sys.executable, "-m", "thermospin_mc.cli", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"thermospin-mc {tsm.__version__}"


def test_the_package_root_does_not_import_the_command_line():
    code = ("import sys, thermospin_mc; "
            "print(sorted(m for m in sys.modules if m.startswith('thermospin_mc.app')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_checkpoint_file_format_is_unchanged():
    from thermospin_mc.trajectories import checkpoint
    assert (checkpoint.FORMAT, checkpoint.SCHEMA) == ("thermospin_mc.checkpoint", 1)
