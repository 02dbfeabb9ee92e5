"""``copier copy`` and ``copier update`` from the working tree, and the generated projects at work.

Three projects: the defaults (the template renamed after its folder, migrated, schema tests
passing); one without the example and pgai, named "Acme Search", whose own CI (``.ci/run``, i.e.
its README's test command, ruff, mypy and Squawk) passes with a fresh install, then with a team's
models; and one generated at an earlier version, given models of its own, then updated. And a
clone after the task script, compared file by file with what Copier makes from the same answers.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import URL

from tests.conftest import REPOSITORY_ROOT, CreateDatabase
from tests.template.projects import (
    add_team_models,
    commit_all,
    copier,
    copy_files,
    project_settings,
    run,
    snapshot,
    working_tree_files,
)

TEMPLATE_ONLY = ("copier.yml", "{{ _copier_conf.answers_file }}.jinja", "tests/template/")
EXAMPLE_PATHS = ("src/app/cli.py", "tests/example", "docs/example.md")


def files(root: Path) -> set[str]:
    """Every file under ``root``, as a relative path."""
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def readme_command(project: Path, marker: str) -> str:
    """The shell block after ``<!-- marker -->`` in ``project``'s README, as .ci/run reads it."""
    match = re.search(
        rf"^<!-- {marker} -->\n```sh\n(.*?)\n```$", (project / "README.md").read_text(), re.M | re.S
    )
    assert match, f"README.md has no block after <!-- {marker} -->"
    return match.group(1)


def alembic(project: Path, database: URL, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run ``alembic ARGUMENTS`` in ``project`` on ``database``."""
    return run(
        [sys.executable, "-m", "alembic", *arguments],
        project,
        project_settings(project, database),
    )


def schema_tests(project: Path, server_settings: dict[str, str]) -> None:
    """Run ``project``'s tests of its models and migrations (tests/schema) on the test server."""
    pytest_command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/schema",
    ]
    run(pytest_command, project, {**project_settings(project), **server_settings})


@pytest.mark.timeout(600)
def test_defaults_give_the_template_renamed_after_its_folder_and_it_migrates(
    template: Path, tmp_path: Path, create_database: CreateDatabase, server_settings: dict[str, str]
) -> None:
    project = tmp_path / "vector-shop"
    copier("copy", template, project, cwd=tmp_path)

    shipped = {name for name in files(template) if not name.startswith((".git/", *TEMPLATE_ONLY))}
    assert files(project) == shipped | {".copier-answers.yml"}
    for name in sorted(shipped):
        before, after = (
            # A binary file (the benchmark's charts) must not change: any changed line fails.
            root.joinpath(name).read_text(errors="replace").splitlines()
            for root in (template, project)
        )
        changed = [line for line in difflib.ndiff(before, after) if line.startswith("+ ")]
        assert all(re.search(r"vector[-_]shop", line) for line in changed), (name, changed)

    main_command = readme_command(project, "quickstart-run")
    assert main_command.endswith("alembic upgrade head")
    database = create_database()
    alembic(project, database, "upgrade", "head")
    assert "No new upgrade operations detected" in alembic(project, database, "check").stdout
    schema_tests(project, server_settings)


@pytest.mark.parametrize(
    "answers",
    [{}, {"project_name": "Acme Search", "include_example": "false", "include_pgai": "false"}],
    ids=["defaults", "without-example-and-pgai"],
)
def test_a_clone_after_the_task_script_is_the_project_copier_makes(
    template: Path, tmp_path: Path, answers: dict[str, str]
) -> None:
    """The README's path for a clone (the task script by hand) ends where Copier's does: without
    the template's own files, whose tests of generation would fail on a team's models."""
    project = tmp_path / "vector-shop"
    copier("copy", template, project, cwd=tmp_path, **answers)
    clone = tmp_path / "clone"
    copy_files(working_tree_files(template), template, clone)
    arguments = {"project_name": project.name, **answers}
    options = [f"--{name.replace('_', '-')}={value}" for name, value in arguments.items()]
    run([sys.executable, ".copier/tasks.py", *options], clone)

    generated = snapshot(project)
    del generated[".copier-answers.yml"]
    assert snapshot(clone) == generated


@pytest.mark.timeout(1800)
def test_without_example_and_pgai_the_project_ci_passes_then_with_a_teams_models(
    template: Path,
    shared_tmp_path: Path,
    create_database: CreateDatabase,
    server_settings: dict[str, str],
) -> None:
    project = shared_tmp_path / "acme"
    answers = {"project_name": "Acme Search", "include_example": "false", "include_pgai": "false"}
    copier("copy", template, project, cwd=shared_tmp_path, **answers)
    commit_all(project, "Start from pgvector base")
    assert (project / "README.md").read_text().startswith("# Acme Search\n")
    assert 'name = "acme-search"' in (project / "pyproject.toml").read_text()
    for path in (*EXAMPLE_PATHS, "docs/pgai.md", "tests/pgvector_base/test_pgai.py"):
        assert not (project / path).exists(), path
    assert "--with pgai" not in readme_command(project, "quickstart-test")

    # The project's CI: its README's test command as written (a fresh Poetry and virtualenv), then
    # ruff, mypy and Squawk. Its pytest keeps its temporary files here: each pytest session run as
    # root closes /tmp/pytest-of-root to other users, the embedded server's among them.
    basetemp = {"PYTEST_ADDOPTS": f"--basetemp={shared_tmp_path / 'pytest'}"}
    run(["bash", ".ci/run"], project, {**server_settings, **basetemp}, timeout=1500)

    python = project / ".venv" / "bin" / "python"
    add_team_models(project, python)
    database = create_database()
    settings = project_settings(project, database)
    run(
        [python, "-m", "alembic", "revision", "--autogenerate", "-m", "initial schema"],
        project,
        settings,
    )
    run([python, "-m", "alembic", "upgrade", "head"], project, settings)
    checked = run([python, "-m", "alembic", "check"], project, settings)
    assert "No new upgrade operations" in checked.stdout
    run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/schema"],
        project,
        server_settings,
    )
    run([python, "-m", "ruff", "check", "--no-cache", "."], project)
    run([python, "-m", "mypy"], project)
    assert not (project / ".pgdata").exists(), "the project's tests started an embedded server"


def earlier_version(repository: Path) -> None:
    """Turn the template's files in ``repository`` into a plausible earlier version of them: one
    line of models.py (which the team edits too) reads differently, and database.py (which it
    does not) has a line more."""
    models = repository / "src" / "app" / "models.py"
    _, rest = models.read_text().split("\n", 1)
    models.write_text('"""An earlier wording of the first line of the docstring.\n' + rest)
    database = repository / "src" / "pgvector_base" / "database.py"
    database.write_text(database.read_text() + "# A line the next version of the template drops.\n")


@pytest.mark.parametrize(
    "include_example", ["true", "false"], ids=["with-example", "without-example"]
)
@pytest.mark.timeout(900)
def test_update_merges_the_template_into_a_project_with_models_of_its_own(
    include_example: str,
    tmp_path: Path,
    create_database: CreateDatabase,
    server_settings: dict[str, str],
) -> None:
    versions = tmp_path / "template"
    versions.mkdir()
    names = working_tree_files()
    copy_files(names, REPOSITORY_ROOT, versions)
    earlier_version(versions)
    earlier = commit_all(versions, "An earlier version")
    copy_files(names, REPOSITORY_ROOT, versions)
    current = commit_all(versions, "The working tree")

    project = tmp_path / "shop"
    copier(
        "copy",
        "--vcs-ref",
        earlier,
        versions,
        project,
        cwd=tmp_path,
        include_example=include_example,
    )
    commit_all(project, "Generated")
    database = create_database()
    alembic(project, database, "upgrade", "head")
    add_team_models(project)
    alembic(project, database, "revision", "--autogenerate", "-m", "documents")
    commit_all(project, "Documents, chunks and items")

    copier("update", "--vcs-ref", "HEAD", cwd=project)

    assert not run(["git", "ls-files", "--unmerged"], project).stdout
    assert not list(project.rglob("*.rej"))
    markers = ["git", "grep", "-l", "-e", "^<<<<<<< ", "-e", "^>>>>>>> "]
    assert run(markers, project, check=False).stdout == ""
    # Parsed, not matched as text: a hash of digits alone is written quoted.
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"]
    assert isinstance(recorded, str)
    assert len(recorded) >= 7
    assert current.startswith(recorded)
    machinery = "src/pgvector_base/database.py"
    assert (project / machinery).read_text() == (REPOSITORY_ROOT / machinery).read_text()
    models = (project / "src" / "app" / "models.py").read_text()
    assert (
        models.split("\n", 1)[0] == (versions / "src/app/models.py").read_text().split("\n", 1)[0]
    )
    assert "class Chunk(Base):" in models
    example_migrations = list(
        (project / "migrations" / "versions").glob("*_create_product_table.py")
    )
    kept = [path for path in EXAMPLE_PATHS if (project / path).exists()]
    if include_example == "true":
        assert "class Product(Base):" in models
        assert kept == list(EXAMPLE_PATHS)
        assert example_migrations
    else:
        assert "Product" not in models
        assert kept == []
        assert example_migrations == []

    alembic(project, database, "upgrade", "head")
    assert "No new upgrade operations" in alembic(project, database, "check").stdout
    schema_tests(project, server_settings)
