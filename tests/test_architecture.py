"""Static architecture rules of the package (docs/architecture.md, issue 13).

Everything here reads the sources with :mod:`ast`; nothing of the package is
imported, so a broken module cannot hide a violation. Every import statement
counts, wherever it stands (module level or inside a function): an import
inside a function that avoids a cycle at run time is still a cycle in the
design. ``import thermospin_mc`` and ``from . import __version__`` import the
package root (``__init__``).

The rules are data (the lists below) so that renaming a module after a merge
means editing a list, not the checks. Each check is first run on small
synthetic packages written to a temporary directory, so that a check which
could never fail would be noticed.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

# --------------------------------------------------------------------------- rules (data)
#: The package checked: its directory and its import name.
PACKAGE_DIR = Path(__file__).resolve().parents[1] / "thermospin_mc"
PACKAGE = "thermospin_mc"
#: Name of the package root in the import graph.
ROOT = "__init__"
#: Modules that may import nothing of the package (pure numba kernels).
LEAF_MODULES = ("kernels",)
#: The exact (density-matrix) solvers ...
EXACT_MODULES = ("exact", "fcs", "_blockops", "blocks", "blocksolve", "counting", "waiting",
                 "correlations", "relaxation", "doob")
#: ... never reach, even transitively, these trajectory modules.
TRAJECTORY_MODULES = ("kernels", "pack", "stats", "backends", "worker", "progress",
                      "driver", "checkpoint", "cloning")
#: Modules allowed to import the package root (none: the root only re-exports).
ROOT_IMPORTERS = ()
#: Layers, bottom up (docs/architecture.md): a module imports only modules of its own
#: layer or below; the root (``__init__``) sits above all and no module imports it.
#: Names not present in the package are ignored (e.g. the re-cut's new modules before
#: the merge); a module of the package missing here fails ``test_every_module_has_a_layer``.
LAYERS = (
    # 0 foundations: import nothing of the package but each other
    ("_validate", "_threads", "_version", "canonical", "kernels", "_blockops", "signals"),
    # 1 physics inputs: a(T), profiles, initial states, channels, the model
    ("thermal", "profiles", "states", "channels", "model", "schedule"),
    # 2 sector data and the shared definitions (observables, files)
    ("sectors", "observables", "errorbars", "io", "operators", "blockstate", "interop"),
    # 3 the result type
    ("results",),
    # 4 solvers: exact (block density matrix) and trajectories, side by side
    ("blocks", "blocksolve", "exact", "counting", "fcs", "doob", "waiting", "correlations",
     "relaxation", "pack", "stats", "backends", "worker", "progress", "checkpoint", "driver",
     "cloning"),
    # 5 statistics of finished runs
    ("jumpstats", "timeavg", "jumpcompare", "analysis"),
    # 6 applications: figures, configuration, command line
    ("plotting", "reproduce", "config", "cli_args", "cli_jumps", "cli"),
)
#: Longest module without a written reason, and the docstring tag giving one.
MAX_LINES = 500
LENGTH_TAG = "Length:"


# --------------------------------------------------------------------------- parsing
def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class ModuleInfo:
    """Imports, private-name uses and length of one module of the package."""

    def __init__(self, name: str, path: Path, modules: set[str], package: str):
        self.name = name
        self.path = path
        self.text = path.read_text(encoding="utf-8")
        self.tree = ast.parse(self.text, filename=str(path))
        self.lines = len(self.text.splitlines())
        self.imports: dict[str, int] = {}     # imported package module -> first line
        self.private: list[tuple[int, str]] = []
        aliases: dict[str, str] = {}          # local name -> package module it is bound to

        def add(target: str, line: int):
            if target != name:
                self.imports.setdefault(target, line)

        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    parts = a.name.split(".")
                    if parts[0] != package:
                        continue
                    target = parts[1] if len(parts) > 1 and parts[1] in modules else ROOT
                    add(target, node.lineno)
                    if a.asname:
                        aliases[a.asname] = target
                    elif len(parts) == 1:
                        aliases[package] = ROOT
            elif isinstance(node, ast.ImportFrom):
                if node.level == 1 or (node.level == 0 and node.module
                                       and node.module.split(".")[0] == package):
                    mod = node.module if node.level == 1 else (
                        node.module.split(".", 1)[1] if "." in node.module else None)
                    if mod is None:                 # from . import x, y
                        for a in node.names:
                            if a.name in modules:
                                add(a.name, node.lineno)
                                aliases[a.asname or a.name] = a.name
                            else:                   # a name of the root, e.g. __version__
                                add(ROOT, node.lineno)
                                if _is_private(a.name):
                                    self.private.append(
                                        (node.lineno, f"from . import {a.name}"))
                    else:
                        target = mod.split(".")[0]
                        add(target if target in modules else ROOT, node.lineno)
                        for a in node.names:
                            if _is_private(a.name):
                                self.private.append(
                                    (node.lineno, f"from .{mod} import {a.name}"))
        # private attributes of imported package modules: K._foo, tsm.kernels._foo
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Attribute) and _is_private(node.attr):
                owner = _resolve(node.value, aliases, modules)
                if owner is not None and owner != name:
                    self.private.append((node.lineno, f"{ast.unparse(node)} ({owner})"))

    def docstring_reason(self, tag: str) -> str | None:
        doc = ast.get_docstring(self.tree) or ""
        for line in doc.splitlines():
            if line.strip().startswith(tag) and line.strip()[len(tag):].strip():
                return line.strip()
        return None


def _resolve(node, aliases: dict[str, str], modules: set[str]) -> str | None:
    """Package module an expression ``a`` / ``a.b`` is bound to, else None."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, aliases, modules)
        if base == ROOT and node.attr in modules:
            return node.attr
    return None


def scan(directory: Path, package: str) -> dict[str, ModuleInfo]:
    """``{module name: ModuleInfo}`` for every ``*.py`` directly in ``directory``."""
    files = sorted(directory.glob("*.py"))
    modules = {p.stem for p in files if p.stem != "__init__"}
    return {p.stem: ModuleInfo(p.stem, p, modules, package) for p in files}


# --------------------------------------------------------------------------- checks
def find_cycles(info: dict[str, ModuleInfo]) -> list[list[str]]:
    """One concrete cycle (``[a, b, ..., a]``) per strongly connected component
    (a set of modules that all reach each other; see :func:`knots` for its members)."""
    graph = {m: sorted(i.imports) for m, i in info.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[set[str]] = []
    counter = [0]

    def strong(v):                      # Tarjan; the graph has ~30 nodes, recursion is fine
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    cycles = []
    for comp in comps:
        start = min(comp)
        # shortest path back to start inside the component
        prev = {start: None}
        queue = deque([start])
        found = None
        while queue and found is None:
            u = queue.popleft()
            for w in graph[u]:
                if w == start:
                    found = u
                    break
                if w in comp and w not in prev:
                    prev[w] = u
                    queue.append(w)
        path = [start]
        u = found
        while u is not None and u != start:
            path.append(u)
            u = prev[u]
        cycles.append([start] + path[1:][::-1] + [start])
    return cycles


def knots(info: dict[str, ModuleInfo]) -> list[list[str]]:
    """Members of every import cycle's strongly connected component, sorted."""
    reach = {m: set(reach_all(info, m)) for m in info}
    comps = {frozenset([m] + [w for w in reach[m] if m in reach[w]]) for m in info
             if m in reach[m]}
    return sorted(sorted(c) for c in comps)


def reach_all(info: dict[str, ModuleInfo], start: str) -> list[str]:
    """Every package module reachable from ``start`` by imports (``start`` only if on a cycle)."""
    seen, queue = set(), deque([start])
    while queue:
        for w in info[queue.popleft()].imports:
            if w in info and w not in seen:
                seen.add(w)
                queue.append(w)
    return sorted(seen)


def private_imports(info: dict[str, ModuleInfo]) -> list[str]:
    return [f"{m}.py:{line}: {what}" for m, i in sorted(info.items())
            for line, what in sorted(i.private)]


def leaf_violations(info: dict[str, ModuleInfo], leaves) -> list[str]:
    return [f"{m}.py:{line}: imports {t}" for m in leaves if m in info
            for t, line in sorted(info[m].imports.items(), key=lambda x: x[1])]


def reach_violations(info: dict[str, ModuleInfo], sources, forbidden) -> list[str]:
    """``a -> b -> c`` import chains from a source module to a forbidden module."""
    out = []
    for s in sources:
        if s not in info:
            continue
        prev = {s: None}
        queue = deque([s])
        while queue:
            u = queue.popleft()
            for w in sorted(info[u].imports):
                if w in prev or w not in info:
                    continue
                prev[w] = u
                if w in forbidden:
                    chain, x = [], w
                    while x is not None:
                        chain.append(x)
                        x = prev[x]
                    out.append(" -> ".join(chain[::-1]))
                else:
                    queue.append(w)
    return out


def root_importers(info: dict[str, ModuleInfo], allowed) -> list[str]:
    return [f"{m}.py:{i.imports[ROOT]}: imports the package root" for m, i in
            sorted(info.items()) if m != ROOT and ROOT in i.imports and m not in allowed]


def layer_of(layers) -> dict[str, int]:
    return {m: k for k, mods in enumerate(layers) for m in mods}


def unlayered(info: dict[str, ModuleInfo], layers) -> list[str]:
    known = layer_of(layers)
    return [f"{m}.py: no layer in LAYERS" for m in sorted(info) if m != ROOT and m not in known]


def layer_violations(info: dict[str, ModuleInfo], layers) -> list[str]:
    """Imports of a higher layer (imports of the root: :func:`root_importers`)."""
    known = layer_of(layers)
    out = []
    for m, i in sorted(info.items()):
        if m == ROOT or m not in known:
            continue
        for t, line in sorted(i.imports.items(), key=lambda x: x[1]):
            lt = known.get(t)
            if lt is not None and lt > known[m]:
                out.append(f"{m}.py:{line}: layer {known[m]} imports {t} (layer {lt})")
    return out


def long_modules(info: dict[str, ModuleInfo], max_lines: int, tag: str) -> list[str]:
    return [f"{m}.py: {i.lines} lines, no '{tag}' line in its docstring"
            for m, i in sorted(info.items())
            if i.lines > max_lines and i.docstring_reason(tag) is None]


# --------------------------------------------------------------------------- the checks can fail
def _write(tmp_path: Path, files: dict[str, str]) -> dict[str, ModuleInfo]:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for name, src in files.items():
        (pkg / f"{name}.py").write_text(src)
    return scan(pkg, "pkg")


def test_checks_on_a_synthetic_package(tmp_path):
    info = _write(tmp_path, {
        "__init__": "from .a import f\n",
        "a": "from . import b as B\n\ndef f():\n    return B._hidden\n",
        "b": "def g():\n    from .c import _h\n    return _h\n",
        "c": "import pkg\n\ndef _h():\n    from . import __version__\n",
        "d": "from .e import x\n",
        "e": '"""Doc.\n\nLength: one table.\n"""\nx = 1\n' + "\n" * 20,
        "k": "import numpy\nfrom pkg.e import x\n",
        "long": "y = 1\n" * 21,
    })
    assert find_cycles(info) == [["__init__", "a", "b", "c", "__init__"]]
    assert knots(info) == [["__init__", "a", "b", "c"]]
    assert private_imports(info) == ["a.py:4: B._hidden (b)", "b.py:2: from .c import _h"]
    assert leaf_violations(info, ["k"]) == ["k.py:2: imports e"]
    assert reach_violations(info, ["a"], {"c"}) == ["a -> b -> c"]
    assert reach_violations(info, ["d"], {"c"}) == []
    assert root_importers(info, ()) == ["c.py:1: imports the package root"]
    assert long_modules(info, 20, "Length:") == ["long.py: 21 lines, no 'Length:' line in "
                                                 "its docstring"]
    layers = (("c", "k"), ("b", "e"), ("a", "d"))
    assert unlayered(info, layers) == ["long.py: no layer in LAYERS"]
    assert layer_violations(info, layers) == ["k.py:2: layer 0 imports e (layer 1)"]


def test_attribute_chains_and_absolute_imports(tmp_path):
    info = _write(tmp_path, {
        "__init__": "",
        "a": "import pkg\nimport pkg.b as PB\n\ndef f():\n    return pkg.b._x, PB._y, "
             "pkg.__version__\n",
        "b": "import pkg.c\nfrom pkg import c\nfrom pkg.c import _z\n",
        "c": "",
    })
    assert private_imports(info) == ["a.py:5: PB._y (b)", "a.py:5: pkg.b._x (b)",
                                     "b.py:3: from .c import _z"]
    assert set(info["a"].imports) == {"__init__", "b"}
    assert set(info["b"].imports) == {"c"}
    assert find_cycles(info) == []


# --------------------------------------------------------------------------- the package
@pytest.fixture(scope="module")
def package():
    info = scan(PACKAGE_DIR, PACKAGE)
    assert ROOT in info and len(info) > 5
    return info


def test_no_import_cycles(package):
    cycles = find_cycles(package)
    assert not cycles, "import cycles (function-level imports count):\n" + "\n".join(
        " -> ".join(c) for c in cycles) + "\nmodules on these cycles:\n" + "\n".join(
        ", ".join(k) for k in knots(package))


def test_no_private_names_across_modules(package):
    bad = private_imports(package)
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_leaf_modules_import_nothing_of_the_package(package):
    bad = leaf_violations(package, LEAF_MODULES)
    assert not bad, "\n".join(bad)


def test_exact_solvers_never_reach_trajectory_code(package):
    bad = reach_violations(package, EXACT_MODULES, set(TRAJECTORY_MODULES))
    assert not bad, "exact solver reaches trajectory code:\n" + "\n".join(bad)


def test_no_module_imports_the_package_root(package):
    bad = root_importers(package, ROOT_IMPORTERS)
    assert not bad, "\n".join(bad)


def test_long_modules_say_why(package):
    bad = long_modules(package, MAX_LINES, LENGTH_TAG)
    assert not bad, "\n".join(bad)


def test_every_module_has_a_layer(package):
    bad = unlayered(package, LAYERS)
    assert not bad, "\n".join(bad)


def test_imports_go_down_the_layers(package):
    bad = layer_violations(package, LAYERS)
    assert not bad, "imports of a higher layer:\n" + "\n".join(bad)
