"""Static architecture rules of the package (docs/architecture.md).

Everything here reads the sources with :mod:`ast`; nothing of the package is
imported, so a broken module cannot hide a violation. Every import statement
counts, wherever it stands (module level or inside a function): an import
inside a function that avoids a cycle at run time is still a cycle in the
design. ``import thermospin_mc`` and ``from . import __version__`` import the
package root (``__init__``).

The layers are the package's folders: a module's layer is the folder it sits
in (``FOLDERS``, bottom up), so moving a module between layers means moving
its file. Modules are named by their dotted path inside the package
(``physics.model``, ``io``; a subpackage's ``__init__`` by its folder,
``exact``). The other rules are data (the lists below). Each check is first run on small
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
#: The layers, bottom up, as folders ("" = the modules at the top of the package). A
#: module imports only modules of its own folder or of a folder below; a folder
#: missing here fails ``test_every_module_has_a_layer``.
FOLDERS = ("", "physics", "core", "exact", "trajectories", "analysis", "app")
#: Top-level files that sit above every layer: the root (re-exports only) and the
#: ``python -m thermospin_mc.cli`` entry point.
ENTRY_POINTS = (ROOT, "cli")
#: At most this many modules at the top of the package (``__init__`` included).
MAX_TOP_LEVEL = 12
#: Modules that may import nothing of the package (pure numba kernels).
LEAF_MODULES = ("trajectories.kernels",)
#: The exact (density-matrix) solvers never reach, even transitively, the trajectory
#: engine (folders; the layer order forbids the direct imports already).
EXACT_FOLDER = "exact"
TRAJECTORY_FOLDER = "trajectories"
#: Modules allowed to import the package root (none: the root only re-exports).
ROOT_IMPORTERS = ()
#: Longest module; only the modules listed may be longer, with a written reason (the
#: docstring tag): numba's cache does not see changes in other files, so the
#: compiled engine stays one file.
MAX_LINES = 500
LENGTH_TAG = "Length:"
LONG_MODULES = ("trajectories.kernels",)
#: Longest function body (docstring excluded), and the longer limit of the kernels.
MAX_BODY = 100
MAX_BODY_KERNELS = 150


# --------------------------------------------------------------------------- parsing
def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class ModuleInfo:
    """Imports, private-name uses, length and function lengths of one module."""

    def __init__(self, name: str, path: Path, modules: set[str], package: str,
                 is_package: bool = False):
        self.name = name
        self.path = path
        #: the folder (layer) the file sits in: "" for the top of the package
        self.folder = name if is_package and name != ROOT else (
            name.rsplit(".", 1)[0] if "." in name else "")
        self.text = path.read_text(encoding="utf-8")
        self.tree = ast.parse(self.text, filename=str(path))
        self.lines = len(self.text.splitlines())
        self.imports: dict[str, int] = {}     # imported package module -> first line
        self.private: list[tuple[int, str]] = []
        aliases: dict[str, str] = {}          # local name -> package module it is bound to
        # the dotted package this file's relative imports start from
        here = name if is_package else (name.rsplit(".", 1)[0] if "." in name else "")
        if name == ROOT:
            here = ""

        def add(target: str, line: int):
            if target != name:
                self.imports.setdefault(target, line)

        def module_of(dotted: str) -> str:
            """Longest known module prefix of a dotted path inside the package."""
            parts = dotted.split(".") if dotted else []
            for k in range(len(parts), 0, -1):
                cand = ".".join(parts[:k])
                if cand in modules:
                    return cand
            return ROOT

        def base_of(node: ast.ImportFrom) -> str | None:
            """Dotted package path (inside the package) an ImportFrom starts at."""
            if node.level == 0:
                if not node.module or node.module.split(".")[0] != package:
                    return None
                return node.module.split(".", 1)[1] if "." in node.module else ""
            parts = here.split(".") if here else []
            up = node.level - 1
            if up > len(parts):
                return None
            parts = parts[:len(parts) - up]
            if node.module:
                parts += node.module.split(".")
            return ".".join(parts)

        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    parts = a.name.split(".")
                    if parts[0] != package:
                        continue
                    target = module_of(".".join(parts[1:]))
                    add(target, node.lineno)
                    if a.asname:
                        aliases[a.asname] = target
                    elif len(parts) == 1:
                        aliases[package] = ROOT
            elif isinstance(node, ast.ImportFrom):
                base = base_of(node)
                if base is None:
                    continue
                owner = module_of(base)
                for a in node.names:
                    sub = f"{base}.{a.name}" if base else a.name
                    if sub in modules:              # from pkg import module
                        add(sub, node.lineno)
                        aliases[a.asname or a.name] = sub
                        continue
                    add(owner, node.lineno)         # a name of a module (or of the root)
                    if _is_private(a.name):
                        where = "." * node.level + (node.module or "")
                        self.private.append((node.lineno, f"from {where} import {a.name}"))
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

    def function_bodies(self) -> list[tuple[str, int, int]]:
        """``(qualified name, first line, body lines)`` of every function, the
        docstring left out of the body."""
        out = []

        def visit(node, prefix):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    body = child.body
                    first = body[0]
                    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                            and isinstance(first.value.value, str) and len(body) > 1):
                        first = body[1]
                    out.append((prefix + child.name, child.lineno,
                                child.end_lineno - first.lineno + 1))
                    visit(child, prefix + child.name + ".")
                elif isinstance(child, ast.ClassDef):
                    visit(child, prefix + child.name + ".")

        visit(self.tree, "")
        return out


def _resolve(node, aliases: dict[str, str], modules: set[str]) -> str | None:
    """Package module an expression ``a`` / ``a.b`` / ``a.b.c`` is bound to, else None."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, aliases, modules)
        if base is None:
            return None
        sub = node.attr if base == ROOT else f"{base}.{node.attr}"
        if sub in modules:
            return sub
    return None


def scan(directory: Path, package: str) -> dict[str, ModuleInfo]:
    """``{dotted module name: ModuleInfo}`` for every ``*.py`` under ``directory``
    (``__pycache__`` skipped); a subpackage's ``__init__`` is named by its folder."""
    names: dict[str, tuple[Path, bool]] = {}
    for p in sorted(directory.rglob("*.py")):
        rel = p.relative_to(directory)
        if any(part == "__pycache__" or part.startswith(".") for part in rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts == ["__init__"]:
            names[ROOT] = (p, True)
        elif parts[-1] == "__init__":
            names[".".join(parts[:-1])] = (p, True)
        else:
            names[".".join(parts)] = (p, False)
    modules = set(names) - {ROOT}
    return {n: ModuleInfo(n, p, modules, package, pkg) for n, (p, pkg) in names.items()}


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
    return [f"{m}:{line}: {what}" for m, i in sorted(info.items())
            for line, what in sorted(i.private)]


def leaf_violations(info: dict[str, ModuleInfo], leaves) -> list[str]:
    return [f"{m}:{line}: imports {t}" for m in leaves if m in info
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
    return [f"{m}:{i.imports[ROOT]}: imports the package root" for m, i in
            sorted(info.items()) if m != ROOT and ROOT in i.imports and m not in allowed]


def unlayered(info: dict[str, ModuleInfo], folders) -> list[str]:
    return [f"{m}: folder {i.folder!r} is not a layer in FOLDERS" for m, i in sorted(info.items())
            if m != ROOT and i.folder not in folders]


def layer_violations(info: dict[str, ModuleInfo], folders, entry_points=(ROOT,)) -> list[str]:
    """Imports of a module in a higher folder (the entry points sit above all)."""
    rank = {f: k for k, f in enumerate(folders)}
    out = []
    for m, i in sorted(info.items()):
        if m in entry_points or i.folder not in rank:
            continue
        for t, line in sorted(i.imports.items(), key=lambda x: x[1]):
            if t in entry_points or t not in info or info[t].folder not in rank:
                continue
            if rank[info[t].folder] > rank[i.folder]:
                out.append(f"{m}:{line}: {i.folder or 'top'} imports {t} ({info[t].folder})")
    return out


def long_modules(info: dict[str, ModuleInfo], max_lines: int, tag: str,
                 allowed=()) -> list[str]:
    """Modules over ``max_lines``: any not in ``allowed``, and the allowed ones
    without a written reason."""
    out = []
    for m, i in sorted(info.items()):
        if i.lines <= max_lines:
            continue
        if m not in allowed:
            out.append(f"{m}: {i.lines} lines (at most {max_lines})")
        elif i.docstring_reason(tag) is None:
            out.append(f"{m}: {i.lines} lines, no '{tag}' line in its docstring")
    return out


def long_functions(info: dict[str, ModuleInfo], max_body: int, longer=None) -> list[str]:
    """Functions whose body (docstring excluded) is over ``max_body`` lines;
    ``longer`` maps module names to their own limit."""
    longer = longer or {}
    return [f"{m}:{line}: {name} has a {n}-line body (at most {longer.get(m, max_body)})"
            for m, i in sorted(info.items()) for name, line, n in i.function_bodies()
            if n > longer.get(m, max_body)]


def top_level(info: dict[str, ModuleInfo]) -> list[str]:
    """Modules at the top of the package (the root included, subpackages not)."""
    return sorted(m for m, i in info.items() if m == ROOT or (i.folder == "" and m != ROOT))


# --------------------------------------------------------------------------- the checks can fail
def _write(tmp_path: Path, files: dict[str, str]) -> dict[str, ModuleInfo]:
    """A synthetic package ``pkg``; keys are file paths without ``.py``
    (``"a"``, ``"sub/__init__"``, ``"sub/x"``)."""
    pkg = tmp_path / "pkg"
    for name, src in files.items():
        path = pkg / f"{name}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(src)
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
    assert private_imports(info) == ["a:4: B._hidden (b)", "b:2: from .c import _h"]
    assert leaf_violations(info, ["k"]) == ["k:2: imports e"]
    assert reach_violations(info, ["a"], {"c"}) == ["a -> b -> c"]
    assert reach_violations(info, ["d"], {"c"}) == []
    assert root_importers(info, ()) == ["c:1: imports the package root"]
    assert long_modules(info, 20, "Length:") == ["e: 25 lines (at most 20)",
                                                 "long: 21 lines (at most 20)"]
    assert long_modules(info, 20, "Length:", allowed=("e", "long")) == [
        "long: 21 lines, no 'Length:' line in its docstring"]


def test_folders_are_the_layers(tmp_path):
    info = _write(tmp_path, {
        "__init__": "from .up.top import t\nfrom .low import base\n",
        "base": "",
        "entry": "from .up.top import t\n",
        "low/__init__": '"""Low."""\nfrom .m import x\n',
        "low/m": "from .. import base\nfrom ..up import top\nx = 1\n",
        "low/n": "from .m import x\nimport pkg.up.top as T\n",
        "up/__init__": "",
        "up/top": "from ..low.m import x\nfrom ..low import n\nt = T = x\n",
        "stray/s": "",
    })
    assert set(info) == {"__init__", "base", "entry", "low", "low.m", "low.n", "up", "up.top",
                         "stray.s"}
    assert set(info["low.m"].imports) == {"base", "up.top"}
    assert set(info["low.n"].imports) == {"low.m", "up.top"}
    assert set(info["up.top"].imports) == {"low.m", "low.n"}
    assert set(info["low"].imports) == {"low.m"}
    assert top_level(info) == ["__init__", "base", "entry"]
    folders = ("", "low", "up")
    assert unlayered(info, folders) == ["stray.s: folder 'stray' is not a layer in FOLDERS"]
    assert layer_violations(info, folders, (ROOT, "entry")) == [
        "low.m:2: low imports up.top (up)", "low.n:2: low imports up.top (up)"]
    assert layer_violations(info, ("", "up", "low"), (ROOT, "entry")) == [
        "up.top:1: up imports low.m (low)", "up.top:2: up imports low.n (low)"]
    assert reach_violations(info, ["low.n"], {"up.top"}) == ["low.n -> up.top"]


def test_function_bodies(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(6))
    info = _write(tmp_path, {
        "__init__": "",
        "f": f'def short():\n    """Doc\n\n    more."""\n{body}\n'
             f"class C:\n    def long(self):\n{body.replace('    ', '        ')}"
             "        return 1\n",
        "g": f"def outer():\n{body}    def inner():\n        return 1\n",
    })
    assert info["f"].function_bodies() == [("short", 1, 6), ("C.long", 13, 7)]
    assert long_functions(info, 6) == ["f:13: C.long has a 7-line body (at most 6)",
                                       "g:1: outer has a 8-line body (at most 6)"]
    assert long_functions(info, 6, {"f": 7, "g": 8}) == []


def test_attribute_chains_and_absolute_imports(tmp_path):
    info = _write(tmp_path, {
        "__init__": "",
        "a": "import pkg\nimport pkg.b as PB\n\ndef f():\n    return pkg.b._x, PB._y, "
             "pkg.__version__, pkg.s.t._z\n",
        "b": "import pkg.c\nfrom pkg import c\nfrom pkg.c import _z\n",
        "c": "",
        "s/__init__": "",
        "s/t": "",
    })
    assert private_imports(info) == ["a:5: PB._y (b)", "a:5: pkg.b._x (b)",
                                     "a:5: pkg.s.t._z (s.t)", "b:3: from pkg.c import _z"]
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
    exact = [m for m, i in package.items() if i.folder == EXACT_FOLDER]
    engine = {m for m, i in package.items() if i.folder == TRAJECTORY_FOLDER}
    assert exact and engine
    bad = reach_violations(package, exact, engine)
    assert not bad, "exact solver reaches trajectory code:\n" + "\n".join(bad)


def test_no_module_imports_the_package_root(package):
    bad = root_importers(package, ROOT_IMPORTERS)
    assert not bad, "\n".join(bad)


def test_every_module_has_a_layer(package):
    bad = unlayered(package, FOLDERS)
    assert not bad, "\n".join(bad)


def test_imports_go_down_the_layers(package):
    bad = layer_violations(package, FOLDERS, ENTRY_POINTS)
    assert not bad, "imports of a higher layer:\n" + "\n".join(bad)


def test_at_least_four_folders_and_few_top_level_modules(package):
    folders = {i.folder for i in package.values()} - {""}
    assert len(folders) >= 4, folders
    top = top_level(package)
    assert len(top) <= MAX_TOP_LEVEL, top


def test_long_modules(package):
    bad = long_modules(package, MAX_LINES, LENGTH_TAG, LONG_MODULES)
    assert not bad, "\n".join(bad)


def test_long_functions(package):
    bad = long_functions(package, MAX_BODY, {m: MAX_BODY_KERNELS for m in LEAF_MODULES})
    assert not bad, "\n".join(bad)
