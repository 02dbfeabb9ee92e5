"""The two owners' boundary, read from the import statements themselves.

Floors, from the ground up: ``pgvector_base.database`` → the rest of ``pgvector_base`` →
``app.models`` → ``migrations/env.py``, ``app.cli`` and ``benchmarks/``. Nothing imports a higher
floor, so a team can rewrite ``src/app`` freely and the migration history never depends on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MACHINERY = ROOT / "src" / "pgvector_base"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute, including imports inside functions."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            assert node.level == 0, f"{path}: relative import of {node.module}"
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def reaching(paths: list[Path], package: str) -> dict[str, set[str]]:
    """For each file of ``paths``, the modules of ``package`` it imports (only those that do)."""
    found = {
        str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path): {
            module
            for module in imported_modules(path)
            if module == package or module.startswith(f"{package}.")
        }
        for path in paths
    }
    return {name: modules for name, modules in found.items() if modules}


def python_files(directory: Path) -> list[Path]:
    """The Python files under ``directory``."""
    return sorted(directory.rglob("*.py"))


def test_the_machinery_imports_nothing_from_the_application() -> None:
    assert reaching(python_files(MACHINERY), "app") == {}


@pytest.mark.parametrize("location", ["migrations", "benchmarks"])
def test_migrations_and_benchmarks_import_no_application_code_but_its_models(
    location: str,
) -> None:
    allowed = {"app", "app.models", "app.models.Base"}
    found = reaching(python_files(ROOT / location), "app")
    assert {name: modules - allowed for name, modules in found.items() if modules - allowed} == {}


def test_migration_files_import_only_the_machinery_and_libraries() -> None:
    assert reaching(python_files(ROOT / "migrations" / "versions"), "app") == {}


def test_the_url_source_is_the_ground_floor() -> None:
    assert reaching([MACHINERY / "database.py"], "pgvector_base") == {}


def test_the_models_import_no_higher_floor() -> None:
    found = reaching([ROOT / "src" / "app" / "models.py"], "app")
    assert found == {}


def test_an_import_of_the_application_inside_a_function_is_found(tmp_path: Path) -> None:
    """The checks above can fail: a deferred import counts as much as one at the top."""
    module = tmp_path / "helper.py"
    module.write_text("def models():\n    from app.models import Base\n    return Base\n")
    assert reaching([module], "app") == {str(module): {"app.models", "app.models.Base"}}
