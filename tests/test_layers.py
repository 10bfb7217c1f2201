"""The packages' layering (README.md, "Layout"): imports only point down.

``coordinator`` and ``worker`` never import each other; the store (``jobstore``) imports
neither the CLI libraries nor the experiments; ``user_errors`` is the neutral bottom.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"user_errors", "objectives", "jobstore", "cli_support", "coordinator", "worker"}
MAY_IMPORT: dict[str, set[str]] = {
    "user_errors": set(),
    "objectives": {"user_errors"},
    "jobstore": {"user_errors"},
    "cli_support": {"jobstore", "objectives", "user_errors"},
    "coordinator": {"cli_support", "jobstore", "objectives", "user_errors"},
    "worker": {"cli_support", "jobstore", "objectives", "user_errors"},
}
"""For each package, the other first-party packages it may import."""


def _imported_packages(path: Path) -> set[str]:
    """Top-level first-party packages ``path`` imports anywhere (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & FIRST_PARTY
    return found


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_imports_only_point_down(package: str) -> None:
    wrong = {
        str(path.relative_to(REPO)): sorted(_imported_packages(path) - MAY_IMPORT[package] - {package})
        for path in sorted((REPO / package).rglob("*.py"))
    }
    assert {path: names for path, names in wrong.items() if names} == {}


def test_the_store_loads_no_cli_library_and_no_experiment() -> None:
    """Importing every jobstore module (in a fresh interpreter, so nothing is loaded yet)
    loads neither typer nor rich nor anything of the experiments or the programs."""
    modules = sorted(f"jobstore.{path.stem}" for path in (REPO / "jobstore").glob("*.py") if path.stem != "__init__")
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'typer', 'rich', 'click', 'objectives', 'cli_support', 'coordinator', 'worker'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"
