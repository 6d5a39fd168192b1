"""Code identity from the package itself (issue 21, item 2).

``worker.source_digest`` hashes every module of the package but the
command-line front end (``worker.PRESENTATION``), with docstrings, comments and
message strings normalised away. Each test edits a copy of the package in a
temporary directory and compares digests (never a hard-coded digest): a number,
an operator, a string used as a key or a new module changes the digest; a
message, a docstring, a comment, a line break or the command line does not. A
checkpoint written by other code is refused on resume; one written by code that
differs only in a message resumes.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import numpy as np
import pytest

import thermospin_mc as tsm
from thermospin_mc.trajectories import checkpoint as ckpt
from thermospin_mc.trajectories.worker import PRESENTATION, code_identity, source_digest

PACKAGE_DIR = Path(tsm.__file__).resolve().parent
PACKAGE = "thermospin_mc"


@pytest.fixture
def copy(tmp_path) -> Path:
    """A copy of the package's sources (no ``__pycache__``)."""
    dst = tmp_path / PACKAGE
    shutil.copytree(PACKAGE_DIR, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _edit(path: Path, old: str, new: str) -> None:
    """Replace the first ``old`` in ``path`` (which must hold it) by ``new``."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{path.name} no longer holds {old!r}: pick another edit"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _is_message_call(node) -> bool:
    f = node.func
    return (isinstance(f, ast.Name) and f.id in ("print", "warn")) or (
        isinstance(f, ast.Attribute) and f.attr == "warn")


def _numbers(tree) -> list[ast.Constant]:
    """Numeric constants of a module outside messages (raise, print, warn)."""
    found = []

    def visit(node):
        if isinstance(node, ast.Raise) or (isinstance(node, ast.Call)
                                           and _is_message_call(node)):
            return
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _bump_a_number(path: Path) -> None:
    """Add 1 to the last number of ``path`` that is not in a message."""
    text = path.read_text(encoding="utf-8")
    node = _numbers(ast.parse(text))[-1]
    lines = text.splitlines(keepends=True)
    line = lines[node.lineno - 1]
    lines[node.lineno - 1] = (line[:node.col_offset] + repr(node.value + 1)
                              + line[node.end_col_offset:])
    path.write_text("".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------- the digest
def test_copy_has_the_package_digest_and_identity_keeps_its_shape(copy):
    assert source_digest(copy) == source_digest()
    ident = code_identity()
    assert list(ident) == ["thermospin_mc", "source_sha256", "numpy", "numba"]
    assert ident["source_sha256"] == source_digest()[:16]
    assert ident["thermospin_mc"] == tsm.__version__ and ident["numpy"] == np.__version__


@pytest.mark.parametrize("edit", [
    "number in results.py", "number in observables.py", "operator", "string key",
    "new module", "module renamed", "progress.py"])
def test_what_can_change_a_number_changes_the_digest(copy, edit):
    before = source_digest(copy)
    if edit == "number in results.py":
        _bump_a_number(copy / "core/results.py")
    elif edit == "number in observables.py":
        _bump_a_number(copy / "core/observables.py")
    elif edit == "operator":
        _edit(copy / "core/observables.py", "N / 2 - magnons", "N / 2 + magnons")
    elif edit == "string key":
        _edit(copy / "core/observables.py", '"pm_im")', '"pm_imag")')
    elif edit == "new module":
        (copy / "extra.py").write_text("SCALE = 2.0\n", encoding="utf-8")
    elif edit == "module renamed":
        (copy / "trajectories/stats.py").rename(copy / "trajectories/stats2.py")
    else:  # shows nothing, but the driver imports it: it counts
        _bump_a_number(copy / "trajectories/progress.py")
    assert source_digest(copy) != before


def test_messages_docstrings_comments_and_layout_do_not_change_the_digest(copy):
    before = source_digest(copy)
    # exception messages, plain and f-strings, in numerical modules
    _edit(copy / "core/observables.py", '"pairs must be distinct, got {out}"',
          '"the pairs {out} repeat a pair"')
    _edit(copy / "core/observables.py", "raise ValueError(f\"pair sites must be integers",
          "raise ValueError(f\"every pair site must be an integer")
    _edit(copy / "trajectories/checkpoint.py", '"refusing to mix runs', '"will not mix runs')
    # a warning and a print
    _edit(copy / "analysis/timeavg.py", 'warnings.warn(f"only', 'warnings.warn(f"just')
    extra = 'def f(x):\n    print({}, x)\n    print({})\n    return 2 * x\n'
    (copy / "extra.py").write_text(extra.format('"x is"', 'f"x = {x}"'), encoding="utf-8")
    mid = source_digest(copy)
    (copy / "extra.py").write_text(extra.format('"x equals"', 'f"value {x:.3g} " + "!"'),
                                   encoding="utf-8")
    assert source_digest(copy) == mid
    # docstrings (module, function), comments, line breaks
    _edit(copy / "core/results.py", '"""', '"""Edited. ')
    _edit(copy / "trajectories/kernels.py", "\ndef ", "\n# a new comment\ndef ")
    _edit(copy / "trajectories/stats.py", "def ", "def  ")
    text = (copy / "trajectories/sectorpack.py").read_text(encoding="utf-8")
    tree = ast.parse(text)
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
              and ast.get_docstring(n))
    doc = fn.body[0].value
    lines = text.splitlines(keepends=True)
    lines[doc.lineno - 1] = lines[doc.lineno - 1].replace('"""', '"""Rewritten: ', 1)
    (copy / "trajectories/sectorpack.py").write_text("".join(lines), encoding="utf-8")
    (copy / "extra.py").unlink()
    # editor and cache copies are not modules of the package
    for hidden in (".ipynb_checkpoints", "__pycache__"):
        (copy / hidden).mkdir(exist_ok=True)
        (copy / hidden / "results.py").write_text("SCALE = 2.0\n", encoding="utf-8")
    assert source_digest(copy) == before


def test_command_line_modules_do_not_count(copy):
    before = source_digest(copy)
    for name in PRESENTATION:
        if _numbers(ast.parse((copy / name).read_text(encoding="utf-8"))):
            _bump_a_number(copy / name)
        with (copy / name).open("a", encoding="utf-8") as fh:
            fh.write("\nEXTRA = 3\n")
    assert source_digest(copy) == before


def _package_imports(path: Path, modules: set[str]) -> set[tuple[str, int]]:
    """``(module stem, line)`` of every package module ``path`` names in an import,
    wherever the import stands (module level or inside a function), at any depth
    (``from ..app import cli``, ``from .cli_args import x``, ``import pkg.app.cli``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [part for a in node.names if a.name.startswith(PACKAGE + ".")
                     for part in a.name.split(".")[1:]]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 0:
                if not (mod + ".").startswith(PACKAGE + "."):
                    continue
                mod = mod[len(PACKAGE) + 1:]
            names = [part for part in mod.split(".") if part] + [a.name for a in node.names]
        out |= {(n, node.lineno) for n in names if n in modules}
    return out


def _presentation_importers(package_dir: Path) -> list[str]:
    """Modules that count but import a module of ``PRESENTATION``."""
    files = [p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts]
    modules = {p.stem for p in files}
    excluded = {Path(name).stem for name in PRESENTATION}
    bad = []
    for p in files:
        if p.relative_to(package_dir).as_posix() in PRESENTATION:
            continue
        bad += [f"{p.relative_to(package_dir).as_posix()}:{line} imports {m}"
                for m, line in _package_imports(p, modules) if m in excluded]
    return sorted(bad)


def test_no_module_that_counts_imports_an_excluded_one(tmp_path):
    for name in PRESENTATION:
        assert (PACKAGE_DIR / name).is_file(), f"{name} is gone: update worker.PRESENTATION"
    bad = _presentation_importers(PACKAGE_DIR)
    assert not bad, "modules in the code identity import excluded ones:\n" + "\n".join(bad)
    # the check can fail: lazy and absolute imports of an excluded module are found
    fake = tmp_path / PACKAGE
    fake.mkdir()
    for name in PRESENTATION:
        (fake / name).parent.mkdir(parents=True, exist_ok=True)
        (fake / name).write_text("X = 1\n", encoding="utf-8")
    (fake / "engine").mkdir()
    (fake / "engine" / "driver.py").write_text(
        "def f():\n    from ..app.cli import X\n    return X\n", encoding="utf-8")
    (fake / "engine" / "pack.py").write_text(f"from {PACKAGE}.app import cli_args\n",
                                             encoding="utf-8")
    (fake / "engine" / "stats.py").write_text("from ..app import cli\n", encoding="utf-8")
    found = _presentation_importers(fake)
    assert found == ["engine/driver.py:2 imports cli", "engine/pack.py:1 imports cli_args",
                     "engine/stats.py:1 imports cli"]


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_of_other_code_is_refused_and_of_a_reworded_message_resumes(
        tmp_path, copy, monkeypatch):
    model = tsm.paper_model("loss", N=3)
    kw = dict(ntraj=64, seed=5, observables=("j", "m"),
              checkpoint=tsm.Checkpointing(path=tmp_path / "ck.npz"),
              cluster=tsm.Cluster(progress=False))
    times = np.linspace(0.0, 2.0, 5)
    first = tsm.mcsolve(model, times, **kw)
    written = (tmp_path / "ck.npz").read_bytes()
    real = code_identity()

    def run_as(package_dir: Path):
        ident = dict(real, source_sha256=source_digest(package_dir)[:16])
        monkeypatch.setattr(ckpt, "code_identity", lambda: ident)
        return tsm.mcsolve(model, times, **kw)

    # a message reworded: same identity, the finished checkpoint resumes as itself
    _edit(copy / "core/observables.py", '"pairs must be distinct, got {out}"',
          '"the pairs {out} repeat a pair"')
    again = run_as(copy)
    assert again.metadata["resumed_ntraj"] == 64
    np.testing.assert_array_equal(again.expect["mean"], first.expect["mean"])
    # a number of the reduction changed: refused, the file left untouched
    _bump_a_number(copy / "core/results.py")
    with pytest.raises(ValueError, match=r"different code version: .*'source_sha256'.*"
                                         r"refusing to mix runs"):
        run_as(copy)
    assert (tmp_path / "ck.npz").read_bytes() == written
