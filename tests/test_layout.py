"""The house's rules, checked on the source: small classes, no import cycle, no SQL on the run store's
tables outside the store package, no module-level switches that something else flips."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "labeljury"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MAX_CLASS_LINES = 400
STORE_TABLES = ("meta", "texts", "rows", "embeddings", "predictions", "specialists", "versions", "routing",
                "reviews", "final", "stages", "answers", "priors", "verdicts")
SQL_ON_STORE_TABLES = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN|TABLE)\s+(?:IF\s+NOT\s+EXISTS\s+)?(" +
                                 "|".join(STORE_TABLES) + r")\b")


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The labeljury modules `name` imports, anywhere in it (a function's lazy import too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
            targets = [f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in known else base_name for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def test_no_class_is_over_400_lines() -> None:
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long


def test_no_import_cycle() -> None:
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    # a package imports its own modules (its __init__ re-exports them): that edge is not a cycle
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    """The rules above can fail: a cycle and SQL on a store table are found where they are."""
    assert SQL_ON_STORE_TABLES.search('conn.execute("SELECT text_id FROM reviews WHERE pending=0")')
    assert SQL_ON_STORE_TABLES.search("DELETE FROM meta WHERE key=?")
    assert not SQL_ON_STORE_TABLES.search("SELECT text_id FROM human_queue")
    known = {"labeljury.a": tmp_path / "a.py", "labeljury.b": tmp_path / "b.py"}
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import y\n")
    assert imports_of("labeljury.a", known["labeljury.a"], known) == {"labeljury.b"}
    assert imports_of("labeljury.b", known["labeljury.b"], known) == {"labeljury.a"}


def test_no_sql_on_the_store_tables_outside_the_store() -> None:
    found = []
    for name, path in modules().items():
        if name == "labeljury.store" or name.startswith("labeljury.store."):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if SQL_ON_STORE_TABLES.search(line):
                found.append(f"{path.relative_to(SRC.parent)}:{i}: {line.strip()}")
    assert not found


def test_the_store_imports_nothing_above_it() -> None:
    known = modules()
    allowed = {"labeljury.errors", "labeljury.sources"}  # sources: the stored names, a leaf
    for name, path in known.items():
        if name == "labeljury.store" or name.startswith("labeljury.store."):
            above = {t for t in imports_of(name, path, known)
                     if not t.startswith("labeljury.store") and t not in allowed}
            assert not above, f"{name} imports {above}"


@pytest.mark.parametrize("root", [SRC, BENCHMARKS], ids=["src", "benchmarks"])
def test_no_module_level_switch_is_flipped_from_outside(root: Path) -> None:
    """Settings are typed fields passed in (e.g. `context.Tuning`), never a module global that another
    module assigns (`module.SWITCH = True`) or a `global` statement rebinds."""
    flips = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        module_names = {a.asname or a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                        for a in n.names}
        module_names |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                         for a in n.names if a.name.islower() and (n.module or "").startswith(("labeljury", "."))}
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                flips.append(f"{path.name}:{node.lineno}: global {', '.join(node.names)}")
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign | ast.AugAssign) else []
            for t in targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in module_names \
                        and t.attr.isupper():
                    flips.append(f"{path.name}:{node.lineno}: {t.value.id}.{t.attr} = ...")
    assert not flips


def test_no_module_level_boolean_switch_in_the_library() -> None:
    switches = []
    for name, path in modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and \
                    isinstance(node.value.value, bool):
                switches += [f"{name}.{t.id}" for t in node.targets if isinstance(t, ast.Name)]
    assert not switches
