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


def test_the_command_line_answers_help_version_and_typos_without_importing_torch():
    """Torch's import takes seconds; --help, --version and a mistyped command or flag need none of it."""
    import subprocess
    import sys

    script = """
import sys
from entroprune.cli import app
for args in (["--help"], ["search", "--help"], ["run", "--help"], ["--version"], ["serach"],
             ["search", "x.pt", "--episodes", "many"]):
    try:
        app(args)
    except SystemExit:
        pass
print("torch modules:", sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torch_pruning"))[:3])
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout and "--macs-target" in proc.stdout and "entroprune 0.1.0 (torch 2" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "torch modules: []", proc.stdout.strip().splitlines()[-1]


def test_each_lazy_name_is_the_one_its_type_checking_import_names():
    """`entroprune` and `entroprune.search` import their names on first use (``_HOMES``); their
    ``TYPE_CHECKING`` imports say the same for type checkers. The two lists, ``__all__`` and what each
    name resolves to must agree."""
    import importlib

    for package in ("entroprune", "entroprune.search"):
        mod = importlib.import_module(package)
        path = SRC / (package.replace("entroprune", "").strip(".").replace(".", "/")) / "__init__.py"
        declared = {}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                for imp in (n for n in ast.walk(node) if isinstance(n, ast.ImportFrom)):
                    declared.update({a.name: imp.module for a in imp.names})
        assert declared == mod._HOMES, package
        assert sorted(mod.__all__) == sorted(mod._HOMES), package
        for name, home in mod._HOMES.items():
            assert getattr(mod, name) is getattr(importlib.import_module(f"{package}.{home}"), name), name
        assert set(mod.__all__) <= set(dir(mod))
