"""Which tests a run collects: a bare ``pytest`` the team's, ``--machinery`` the template's too.

The project's ``tests/conftest.py`` is copied into a project of the test's own, beside a test in
each kind of folder, and pytest is asked (``--collect-only``) what it would run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPOSITORY_ROOT
from tests.pgvector_base.inner_pytest import run_pytest

FOLDERS = ("schema", "example", "our_own", "pgvector_base", "template")
TEAMS = ["schema", "example", "our_own"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with the template's ``tests/conftest.py`` and one test in each folder."""
    tests = tmp_path / "tests"
    tests.mkdir()
    shutil.copy(REPOSITORY_ROOT / "tests" / "conftest.py", tests)
    (tests / "__init__.py").touch()
    for folder in FOLDERS:
        (tests / folder).mkdir()
        (tests / folder / "__init__.py").touch()
        (tests / folder / f"test_{folder}.py").write_text("def test_it() -> None:\n    pass\n")
    (tmp_path / "pyproject.toml").write_text(
        (REPOSITORY_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    )
    return tmp_path


def collected(project: Path, *arguments: str) -> list[str]:
    """The folders under ``tests/`` of the tests ``pytest ARGUMENTS`` would run in ``project``."""
    result = run_pytest(project, "--collect-only", "-q", *arguments)
    assert result.returncode == 0, result.stdout + result.stderr
    ids = [line for line in result.stdout.splitlines() if "::" in line]
    return sorted(Path(node.split("::")[0]).parent.name for node in ids)


def test_a_bare_pytest_runs_the_teams_tests_in_every_folder_but_the_templates(
    project: Path,
) -> None:
    assert collected(project) == sorted(TEAMS)
    assert collected(project, "tests") == sorted(TEAMS)


def test_machinery_adds_the_templates_own_tests(project: Path) -> None:
    assert collected(project, "--machinery") == sorted(FOLDERS)


def test_a_folder_named_on_the_command_line_runs_without_machinery(project: Path) -> None:
    assert collected(project, "tests/pgvector_base") == ["pgvector_base"]
    assert collected(project, "tests/template/test_template.py") == ["template"]
