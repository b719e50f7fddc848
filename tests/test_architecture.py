"""The layout is the architecture: sdegen/ is a few packages by concept, imports point
down only, and no module imports itself back through others.

Each package of sdegen declares in its docstring the packages it may import (a line
`May import: ...`); the test reads those lines, checks that every import of every
module (function-level imports too) keeps to them, that the declarations themselves
form floors (no package may import one that may import it back), and that the module
graph has no circle of any length. The checker is tested on planted faults too, so a
green run means the tree was checked, not that nothing was read.
"""

import ast
import importlib
import re
from pathlib import Path

import pytest

import sdegen


ROOT = Path(sdegen.__file__).parent
MAX_ENTRIES = 12  # top-level entries of sdegen/ besides __init__.py and py.typed
MAX_LINES = 450
ALL = "everything"


# ---------------------------------------------------------------- reading the tree


def read_tree(root: Path = ROOT) -> dict[str, tuple[bool, str]]:
    """Every module of the package at `root`: dotted name -> (is a package, source)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (is_pkg, path.read_text())
    return out


def _resolve(target: str, modules: set[str]) -> str | None:
    """The module `target` names, or its nearest enclosing module."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def imports_of(name: str, is_pkg: bool, source: str, modules: set[str]) -> set[str]:
    """The modules of the tree that module `name` imports, anywhere in its body."""
    top = name.split(".")[0]
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            heads = [a.name for a in node.names if a.name.split(".")[0] == top]
            found.update(filter(None, (_resolve(h, modules) for h in heads)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                head = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == top:
                head = node.module
            else:
                continue
            for a in node.names:
                sub = f"{head}.{a.name}"
                found.add(sub if sub in modules else _resolve(head, modules))
    found.discard(None)
    found.discard(name)
    return found


def import_graph(tree: dict[str, tuple[bool, str]]) -> dict[str, set[str]]:
    modules = set(tree)
    return {m: imports_of(m, p, s, modules) for m, (p, s) in tree.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def package_of(module: str) -> str:
    """The floor a module belongs to: the top-level entry of the tree it lives in
    (`sdegen._engine._solvers._base` -> `_engine`; the root `sdegen` -> `sdegen`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def declarations(tree: dict[str, tuple[bool, str]]) -> dict[str, set[str] | str]:
    """Each top-level entry's `May import:` line: the set of entries it may import,
    or `ALL`."""
    out: dict[str, set[str] | str] = {}
    for name, (_, source) in tree.items():
        if name.count(".") != 1:
            continue
        doc = ast.get_docstring(ast.parse(source)) or ""
        m = re.search(r"^May import:(.*)$", doc, re.M)
        if m is None:
            continue
        text = m.group(1)
        out[package_of(name)] = ALL if ALL in text else set(re.findall(r"`(\w+)`", text))
    return out


def violations(graph: dict[str, set[str]], declared: dict[str, set[str] | str]) -> list[str]:
    """Every import from one entry into another that the importer's declaration does
    not allow (the root `sdegen`, the public façade, imports everything)."""
    bad = []
    for a, targets in sorted(graph.items()):
        pa = package_of(a)
        if pa == a.split(".")[0]:  # the root package itself
            continue
        allowed = declared.get(pa, set())
        for b in sorted(targets):
            pb = package_of(b)
            if pb != pa and allowed != ALL and pb not in allowed:
                bad.append(f"{a} imports {b}: `{pa}` may import only {sorted(allowed)}")
    return bad


def declared_circles(declared: dict[str, set[str] | str]) -> list[list[str]]:
    """The declarations must be floors: no package may import one that may import it."""
    names = set(declared)
    graph = {p: (names - {p} if d == ALL else set(d)) for p, d in declared.items()}
    return circles(graph)


# ---------------------------------------------------------------- the tree as it is

TREE = read_tree()
GRAPH = import_graph(TREE)
DECLARED = declarations(TREE)


def test_no_import_circles():
    found = circles(GRAPH)
    assert found == [], "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_every_package_declares_its_floor():
    entries = {package_of(m) for m in TREE if m.count(".") >= 1}
    missing = sorted(entries - set(DECLARED))
    assert missing == [], f"no `May import:` line in the docstring of {missing}"
    for p, d in DECLARED.items():
        if d != ALL:
            unknown = sorted(d - entries)
            assert unknown == [], f"`{p}` declares unknown packages {unknown}"
    assert declared_circles(DECLARED) == []


def test_imports_point_down():
    bad = violations(GRAPH, DECLARED)
    assert bad == [], "imports that point up or sideways:\n" + "\n".join(bad)


def test_architecture_page_matches_the_declarations():
    page = (ROOT.parent / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|$", page, re.M)
    table = {p: ALL if ALL in d else set(re.findall(r"`(\w+)`", d)) for p, d in rows}
    assert table == DECLARED


def test_only_the_command_line_imports_the_public_facade():
    users = sorted(m for m, t in GRAPH.items() if "sdegen" in t)
    assert users and all(package_of(m) == "_cli" for m in users), users


def test_layout_is_small():
    entries = sorted(
        p.name for p in ROOT.iterdir()
        if p.name not in ("__init__.py", "py.typed", "__pycache__")
    )  # fmt: skip
    assert len(entries) <= MAX_ENTRIES, entries
    long = {m: s.count("\n") for m, (_, s) in TREE.items() if s.count("\n") > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"


def test_name_table_references_resolve():
    """The name table imports what its rows name on first use (by module path, so it
    can be read without importing the solvers); every such path must resolve."""
    from sdegen._engine import _solver_table

    source = Path(_solver_table.__file__).read_text()
    refs = re.findall(r'_(?:lazy|ref)\("([.\w]+)", "(\w+)"', source)
    assert len(refs) >= 10
    for module, name in set(refs):
        mod = importlib.import_module(module, _solver_table.__package__)
        assert hasattr(mod, name), (module, name)


# ---------------------------------------------------------------- the checker itself


def _planted() -> dict[str, tuple[bool, str]]:
    doc = '"""{}\nMay import: {}."""\n'
    return {
        "pkg": (True, "from ._low import a\nfrom ._high import b\n"),
        "pkg._low": (True, doc.format("low", "nothing")),
        "pkg._low.a": (False, "def f():\n    from .._high.b import g\n"),
        "pkg._high": (True, doc.format("high", "`_low`")),
        "pkg._high.b": (False, "from .._low import a\nfrom . import c\n"),
        "pkg._high.c": (False, "import pkg._high.b\n"),
        "pkg._top": (True, doc.format("top", ALL)),
        "pkg._top.d": (False, "import pkg\nfrom pkg._high.c import x\n"),
    }


def test_checker_finds_planted_faults():
    tree = _planted()
    graph = import_graph(tree)
    assert graph["pkg._low.a"] == {"pkg._high.b"}  # a function-level import counts
    assert graph["pkg._high.b"] == {"pkg._low.a", "pkg._high.c"}
    assert graph["pkg._top.d"] == {"pkg", "pkg._high.c"}
    assert circles(graph) == [["pkg._high.b", "pkg._high.c", "pkg._low.a"]]
    del tree["pkg._high.c"], tree["pkg._top.d"]
    assert circles(import_graph(tree)) == [["pkg._high.b", "pkg._low.a"]]
    declared = declarations(tree)
    assert declared == {"_low": set(), "_high": {"_low"}, "_top": ALL}
    bad = violations(graph, declared)
    assert bad == [
        "pkg._low.a imports pkg._high.b: `_low` may import only []"
    ]
    assert declared_circles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    assert declared_circles({"a": {"b"}, "b": set(), "c": ALL}) == []


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_every_module_imports(module):
    """Every module of the tree imports on its own (a moved file with a stale relative
    import fails here, not in a user's hands)."""
    importlib.import_module(module)
