"""The package's layers (docs/architecture.md): a module imports only its own layer and the layers below it,
whether the import is at the top of the file or inside a function; no two modules import each other, even through
others; an import of the package's own modules sits inside a function only when it keeps a heavy package (torch,
Ray, Optuna, Streamlit, matplotlib, ...) out of a module that does not load it already; and the record readers
load neither torch nor Ray, so the dashboard and the read-only commands start fast."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import shapetune

SRC = Path(shapetune.__file__).parent

# Bottom to top. A module's layer is the first entry that names it or a package above it.
LAYERS: list[tuple[str, ...]] = [
    ("shapetune", "shapetune.errors", "shapetune.io", "shapetune.storage"),
    ("shapetune.data", "shapetune.models", "shapetune.catalog"),
    ("shapetune.config",),
    ("shapetune.search_spaces",),
    ("shapetune.experiment",),
    ("shapetune.training",),
    ("shapetune.tuning",),
    ("shapetune.serving",),
    ("shapetune.evaluation",),
    ("shapetune.dashboard",),
    ("shapetune.cli",),
]

def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> int:
    best = (-1, 0)  # (length of the longest matching prefix, layer)
    for i, names in enumerate(LAYERS):
        for n in names:
            if (name == n or name.startswith(n + ".")) and len(n) > best[0]:
                best = (len(n), i)
    assert best[0] > 0, f"{name} is in no layer: add it to LAYERS and to docs/architecture.md"
    return best[1]


def own_imports(path: Path) -> set[str]:
    """The ``shapetune`` modules ``path`` imports (``from a import b`` counts ``a.b`` when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names
                      if (SRC.parent / f"{node.module}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                      or (SRC.parent / f"{node.module}.{a.name}".replace(".", "/")).is_dir()}
    return {m for m in found if m == "shapetune" or m.startswith("shapetune.")}


MODULES = sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


# What an import inside a function may keep out of a module that does not load it at import time.
HEAVY = {"torch", "ray", "optuna", "streamlit", "matplotlib", "mlflow", "sklearn", "skimage", "plotly"}
NAMES = {module_name(p): p for p in MODULES}


def _targets(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return []


def _split_imports(path: Path) -> tuple[set[str], list[tuple[int, str]]]:
    """What ``path`` imports when it is imported, and (line, name) of what its functions import; the
    ``if TYPE_CHECKING:`` blocks count as neither."""
    top: set[str] = set()
    lazy: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for t in _targets(child):
                if inner:
                    lazy.append((child.lineno, t))
                else:
                    top.add(t)
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return top, lazy


IMPORTS = {name: _split_imports(p) for name, p in NAMES.items()}


def _packages_of(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _loaded_at_import(name: str) -> set[str]:
    """Our modules and third-party names that importing module ``name`` runs (its packages' ``__init__`` too)."""
    seen, todo = set(), [name]
    while todo:
        for target in IMPORTS[todo.pop()][0]:
            for q in _packages_of(target):
                if q not in seen:
                    seen.add(q)
                    if q in IMPORTS:
                        todo.append(q)
    return seen


def heavy(name: str) -> set[str]:
    """The heavy packages importing module ``name`` loads (through its own modules' top-level imports too)."""
    return {q.split(".")[0] for q in _loaded_at_import(name) | {name}} & HEAVY


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_own_imports_inside_functions_keep_a_heavy_package_out(path):
    me = module_name(path)
    needless = sorted({(line, t) for line, t in IMPORTS[me][1] if t in IMPORTS
                       and not set().union(*(heavy(q) for q in _packages_of(t) if q in IMPORTS)) - heavy(me)})
    assert not needless, f"{me}: move these imports to the top of the file (they load nothing heavy): {needless}"


def test_no_import_circles():
    graph = {m: {t for t in IMPORTS[m][0] | {t for _, t in IMPORTS[m][1]} if t in IMPORTS and t != m}
             for m in IMPORTS}
    circles = []
    for start in graph:  # a depth-first search from each module for a path back to it
        stack, seen = [(start, (start,))], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    circles.append(" -> ".join((*path, start)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*path, nxt)))
    assert not circles, "import circles:\n" + "\n".join(sorted(circles))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down(path):
    me = module_name(path)
    upward = sorted(m for m in own_imports(path) if layer(m) > layer(me))
    assert not upward, f"{me} imports a layer above its own: {upward}"


@pytest.mark.parametrize("module", ["shapetune.dashboard.experiments", "shapetune.experiment.table",
                                    "shapetune.experiment.checkpoints", "shapetune.config", "shapetune.catalog",
                                    "shapetune.search_spaces.spec"])
def test_record_readers_load_neither_torch_nor_ray(module):
    code = (f"import sys, {module}; heavy = [m for m in ('torch', 'ray', 'ray.tune') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing {module} loads {out}"


def test_there_is_no_top_level_platform_package():
    assert not (SRC / "platform").exists() and not (SRC.parent / "platform").exists()
