"""Search spaces: declarative YAML files (shipped here or any path) -> Optuna define-by-run functions."""

from __future__ import annotations

from pathlib import Path

from shapetune.search_spaces.spec import SearchSpace, SpaceError, parse_space

SPACES_DIR = Path(__file__).parent


def shipped_spaces() -> list[str]:
    """Names of the search spaces shipped with the package."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load a shipped space by name (``lvae_hcm``) or any YAML file by path, validated."""
    p = Path(name_or_path)
    if not p.exists() and p.suffix not in (".yaml", ".yml"):
        p = SPACES_DIR / f"{name_or_path}.yaml"
        if not p.exists():
            raise SpaceError(f"{name_or_path}: no such search space (shipped: {', '.join(shipped_spaces())})")
    if not p.exists():
        raise SpaceError(f"{p}: search-space file not found")
    return parse_space(p.read_text(), str(p))


__all__ = ["SearchSpace", "SpaceError", "load_space", "parse_space", "shipped_spaces"]
