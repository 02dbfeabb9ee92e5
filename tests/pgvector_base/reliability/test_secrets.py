"""Secrets: none committed, none printed.

The only passwords in the repository are the documented defaults of the local, throwaway compose
database (and placeholders in documentation); ``.env`` is ignored; ``.env.example`` documents every
variable the code reads. A password with ``%``, ``@`` and ``:`` never shows in what ``alembic``
prints, raw or URL-encoded, whether the run succeeds or fails (failures: ``test_errors.py``).
``tests/pgvector_base/test_compose.py`` checks that the compose port listens on 127.0.0.1 only
and that the workflow's token is read-only.
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from pgvector_base.database import DATABASE_URL_ENV

from ..revisions import REPOSITORY_ROOT, Migrations
from .conftest import PASSWORD
from .servers import Server

# The compose defaults ("postgres", also the workflow's service container and .env.example's URL)
# and what documentation writes instead of a password.
ALLOWED_PASSWORDS = {"postgres", "PASSWORD", "***", "secret"}
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^\s:/@'\"]+:(?P<password>[^\s@/'\"]*)@")
# PASSWORD=..., POSTGRES_PASSWORD: ..., password = ... in configuration files.
SETTING_PASSWORD = re.compile(
    r"^\s*[\w.-]*password\s*[:=]\s*(?P<value>\S.*?)\s*$", re.IGNORECASE | re.MULTILINE
)
INTERPOLATION = re.compile(r"\$\{\w+(?::?-(?P<default>[^}]*))?\}")
CONFIGURATION_SUFFIXES = {".env", ".example", ".yaml", ".yml", ".ini", ".toml", ".cfg", ".conf"}
ENV_EXAMPLE = REPOSITORY_ROOT / ".env.example"


def repository_files() -> list[Path]:
    """Files git tracks or would add, except ``tests/``, whose fake passwords are on purpose."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [
        REPOSITORY_ROOT / name
        for name in listed
        if not name.startswith("tests/") and (REPOSITORY_ROOT / name).is_file()
    ]


def passwords(path: Path) -> Iterator[str]:
    """Every password written in ``path``: in URLs, and in settings of configuration files."""
    try:
        content = path.read_text()
    except UnicodeDecodeError:
        return
    for match in URL_PASSWORD.finditer(content):
        yield match["password"]
    if path.suffix in CONFIGURATION_SUFFIXES or path.name.startswith(".env"):
        for match in SETTING_PASSWORD.finditer(content):
            value = match["value"].strip("'\"")
            interpolated = INTERPOLATION.fullmatch(value)
            if interpolated is None:
                yield value
            elif interpolated["default"]:
                yield interpolated["default"]


def test_no_password_is_committed() -> None:
    found = {
        (str(path.relative_to(REPOSITORY_ROOT)), password)
        for path in repository_files()
        for password in passwords(path)
        if password not in ALLOWED_PASSWORDS
    }
    assert found == set()


def test_the_scan_finds_passwords(tmp_path: Path) -> None:
    (tmp_path / "settings.yaml").write_text(
        "db:\n  password: hunter2\n  PGPASSWORD: ${X:-s3cret}\n"
    )
    (tmp_path / "app.py").write_text('URL = "postgresql://app:hunter3@db/app"\n')
    assert list(passwords(tmp_path / "settings.yaml")) == ["hunter2", "s3cret"]
    assert list(passwords(tmp_path / "app.py")) == ["hunter3"]


def test_env_file_is_ignored() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "--quiet", ".env"], cwd=REPOSITORY_ROOT, check=False
    )
    assert ignored.returncode == 0


def environment_variables() -> set[str]:
    """Names the code reads from the environment: its ``*_ENV`` constants."""
    sources = [
        *(REPOSITORY_ROOT / "src").rglob("*.py"),
        *(REPOSITORY_ROOT / "migrations").rglob("*.py"),
        REPOSITORY_ROOT / "tests" / "conftest.py",
    ]
    names = set()
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id.endswith("_ENV") for t in node.targets)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                names.add(node.value.value)
    return names


def test_env_example_documents_every_variable() -> None:
    documented = set(re.findall(r"^#?\s*(\w+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert {"DATABASE_URL", "MIGRATION_LOCK_TIMEOUT"} <= environment_variables()
    assert environment_variables() - documented == set()


def test_no_workflow_job_asks_for_more_than_reading() -> None:
    workflows = (REPOSITORY_ROOT / ".github" / "workflows").glob("*.y*ml")
    for workflow in map(yaml.safe_load, (path.read_text() for path in workflows)):
        granted = [workflow.get("permissions") or {}]
        granted += [job.get("permissions") or {} for job in workflow["jobs"].values()]
        assert all(scope in {"read", "none"} for grant in granted for scope in grant.values())


@pytest.fixture
def database(password_server: Server) -> Iterator[URL]:
    """A database on the server that checks passwords."""
    admin = create_engine(password_server.url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text("CREATE DATABASE secrets"))
    yield password_server.url("secrets")
    with admin.connect() as connection:
        connection.execute(text("DROP DATABASE secrets WITH (FORCE)"))
    admin.dispose()


def test_password_is_never_printed(database: URL, migrations: Migrations) -> None:
    migrations.models(
        """
        from sqlalchemy import BigInteger, Column, MetaData, Table

        metadata = MetaData()
        Table("widget", metadata, Column("id", BigInteger, primary_key=True))
        """
    )
    migrations.add(
        "widget",
        'op.create_table("widget", sa.Column("id", sa.BigInteger(), primary_key=True))',
        'op.drop_table("widget")',
    )
    raw = database.render_as_string(hide_password=False)
    assert quote(PASSWORD, safe="") in raw
    env = {DATABASE_URL_ENV: raw}
    runs = [migrations.run(*command, env=env) for command in (["upgrade", "head"], ["check"])]
    runs.append(
        migrations.run("-x", f"dburl={raw}", "downgrade", "base", env={DATABASE_URL_ENV: ""})
    )
    for result in runs:
        assert result.returncode == 0, result.stdout + result.stderr
        output = result.stdout + result.stderr
        assert PASSWORD not in output
        assert quote(PASSWORD, safe="") not in output
        assert f"Database: {database.render_as_string()}" in output
