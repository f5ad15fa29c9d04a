"""The package's seams: no module imports one that imports it back (issue 19)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "entroprune"


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every entroprune module ``path`` imports, at module level or inside functions (a lazy import is
    still a dependency); imports under ``if TYPE_CHECKING`` are annotations only."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and getattr(node.test, "id", "") ==
            "TYPE_CHECKING" for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        elif (node.module or "").startswith("entroprune"):
            target = node.module
        else:
            continue
        names = [f"{target}.{a.name}" for a in node.names]
        hits = [n for n in names if n in modules] or [target]  # "from . import ddp" imports ddp
        for hit in hits:
            while hit not in modules and "." in hit:
                hit = hit.rsplit(".", 1)[0]
            if hit in modules and hit != name:
                found.add(hit)
    return found


def test_no_import_cycle():
    files = sorted(SRC.rglob("*.py"))
    modules = {_module(p) for p in files}
    graph = {_module(p): _imports(p, modules) for p in files}
    cycles, state, stack = [], {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for dep in sorted(graph[m]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join([*stack[stack.index(dep):], dep]))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)


def test_no_function_over_80_lines():
    """A function longer than a screen hides its steps; split it (issue 19)."""
    long = [f"{p.relative_to(SRC)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p in sorted(SRC.rglob("*.py")) for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80]
    assert not long, "\n".join(long)
