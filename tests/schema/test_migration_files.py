"""The team's migration files pass ruff and mypy as written, and the ``alembic`` command applies
them to a fresh database after which ``alembic check`` finds nothing to do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
VERSIONS = REPOSITORY_ROOT / "migrations" / "versions"
MIGRATION_FILES = sorted(str(path) for path in VERSIONS.glob("*.py"))


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m ARGS`` of this environment (alembic, ruff, mypy), from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.mark.skipif(not MIGRATION_FILES, reason="no migrations yet: migrations/versions is empty")
@pytest.mark.parametrize(
    "tool", [["ruff", "check"], ["ruff", "format", "--check"], ["mypy"]], ids=" ".join
)
def test_migration_files_pass(tool: list[str]) -> None:
    result = run_module(*tool, *MIGRATION_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alembic_upgrades_a_fresh_database_and_then_checks_clean(fresh_database_url: URL) -> None:
    upgrade = run_module("alembic", "upgrade", "head")
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    check = run_module("alembic", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected." in check.stdout
