"""The README's architecture table names every module of the package, and only modules that exist."""
from __future__ import annotations

import re

from tests.conftest import ROOT


def _named_in_table() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Architecture"):readme.index("### Why each dependency")]
    return {name for cell in re.findall(r"^\| ([^|]+) \|", table, re.M) for name in re.findall(r"`([^`]+)`", cell)}


def _is_named(module: str, named: set[str]) -> bool:
    """A row names a module by its path in the package, or (in a folder's row) by its file name."""
    return any(module == name or module.endswith("/" + name) for name in named)


def test_every_module_has_a_row_and_every_row_a_module():
    named = _named_in_table()
    modules = {str(p.relative_to(ROOT / "smtverify")) for p in (ROOT / "smtverify").rglob("*.py")}
    missing = [m for m in modules if not _is_named(m, named) and not m.startswith("ops/") and not m.endswith("__init__.py")]
    assert not missing, f"modules without a row in the README's architecture: {sorted(missing)}"
    ghosts = [n for n in named if n.endswith(".py") and not any(_is_named(m, {n}) for m in modules)]
    assert not ghosts, f"rows naming no module: {ghosts}"
