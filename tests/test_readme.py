"""README.md's examples run as written.

Every ```python block is executed, in order, in one namespace (a fresh working
directory); each ```toml block is saved there as run.toml, or as NAME when its
first line is ``# file: NAME``; every
``thermospin-mc run ...`` command line is validated with ``--dry-run`` (it must
be accepted as written; its computation is covered by the other tests).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from thermospin_mc.app import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def _run_lines() -> list[list[str]]:
    lines = []
    for raw in README.read_text().splitlines():
        text = raw.strip()
        if not raw.startswith("    ") or "thermospin-mc run" not in text:
            continue
        for part in text.split("&&"):
            words = shlex.split(part, comments=True)
            if words[:2] == ["thermospin-mc", "run"]:
                lines.append(words[2:])
    return lines


def test_readme_has_examples():
    assert len(_blocks("python")) >= 2 and _run_lines()


@pytest.mark.parametrize("argv", _run_lines(), ids=lambda a: " ".join(a) or "defaults")
def test_readme_command_lines_are_accepted(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for block in _blocks("toml"):
        first = block.splitlines()[0]
        name = first[len("# file:"):].strip() if first.startswith("# file:") else "run.toml"
        (tmp_path / name).write_text(block)
    rc = cli.main(["run", *argv, "--dry-run"])
    assert rc == 0, capsys.readouterr().err


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(_blocks("python")):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
