"""The package's layers (README, "Architecture"): a module imports only its own layer and the layers below it,
whether the import is at the top of the file or inside a function; and the record readers load neither torch nor
Ray, so the dashboard and the read-only commands start fast."""

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
    assert best[0] > 0, f"{name} is in no layer: add it to LAYERS and to the README's architecture section"
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
