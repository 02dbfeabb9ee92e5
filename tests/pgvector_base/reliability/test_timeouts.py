"""Migrations against a live database: lock_timeout and statement_timeout, with overrides.

A migration's ``ALTER TABLE`` that waits behind another session's lock gives up after
``MIGRATION_DDL_LOCK_TIMEOUT`` with one clear line, leaves the database at its previous revision,
and succeeds once the lock is gone. The settings last the whole run, across ``autocommit_block()``,
and ``timeouts.lifted()`` lifts them for concurrent index builds.
"""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from pgvector_base.migration import timeouts

from ..revisions import Migrations, failed_line
from .conftest import scalars

RECORD = (
    "INSERT INTO observed VALUES "
    "('{place}', current_setting('lock_timeout'), current_setting('statement_timeout'))"
)
OBSERVE_SETTINGS = f"""
op.create_table(
    "observed",
    sa.Column("place", sa.Text()),
    sa.Column("lock_timeout", sa.Text()),
    sa.Column("statement_timeout", sa.Text()),
)
op.execute("{RECORD.format(place="in the transaction")}")
with op.get_context().autocommit_block(), timeouts.lifted():
    op.execute("{RECORD.format(place="lifted")}")
op.execute("{RECORD.format(place="after the autocommit block")}")
"""
CREATE_WIDGET = 'op.create_table("widget", sa.Column("id", sa.BigInteger(), primary_key=True))'
DDL_LOCK = timeouts.DDL_LOCK_TIMEOUT_ENV
STATEMENT = timeouts.STATEMENT_TIMEOUT_ENV


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, ("5s", "5min")),
        ({DDL_LOCK: "250ms", STATEMENT: "2min"}, ("250ms", "2min")),
    ],
    ids=["defaults", "overridden"],
)
def test_timeouts_last_the_whole_run_and_are_lifted_for_index_builds(
    migrations: Migrations,
    fresh_database_url: URL,
    monkeypatch: pytest.MonkeyPatch,
    environment: dict[str, str],
    expected: tuple[str, str],
) -> None:
    monkeypatch.delenv(DDL_LOCK, raising=False)
    monkeypatch.delenv(STATEMENT, raising=False)
    imports = "from pgvector_base.migration import timeouts"
    migrations.add("observe settings", OBSERVE_SETTINGS, imports=imports)
    result = migrations.run("upgrade", "head", env=environment)
    assert result.returncode == 0, result.stderr
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    with engine.connect() as connection:
        observed = [tuple(row) for row in connection.execute(text("SELECT * FROM observed"))]
    engine.dispose()
    assert observed == [
        ("in the transaction", *expected),
        ("lifted", "0", "0"),
        ("after the autocommit block", *expected),
    ]


def test_offline_sql_sets_the_timeouts_then_creates_the_extension(migrations: Migrations) -> None:
    migrations.add("widget", CREATE_WIDGET)
    result = migrations.run(
        "upgrade",
        "head",
        "--sql",
        env={DDL_LOCK: "2s", STATEMENT: "1h"},
    )
    assert result.returncode == 0, result.stderr
    statements = [line for line in result.stdout.splitlines() if line.strip()]
    assert statements[:4] == [
        "SET lock_timeout = '2s';",
        "SET statement_timeout = '1h';",
        "CREATE EXTENSION IF NOT EXISTS vector;",
        "BEGIN;",
    ]


def test_ddl_behind_a_conflicting_lock_fails_fast_and_succeeds_on_retry(
    migrations: Migrations, fresh_database_url: URL
) -> None:
    previous = migrations.add("widget", CREATE_WIDGET)
    command.upgrade(migrations.config(), previous)
    head = migrations.add("add sku", 'op.add_column("widget", sa.Column("sku", sa.Text()))')
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    # A report that keeps its transaction open: it holds ACCESS SHARE on widget, which
    # ALTER TABLE's ACCESS EXCLUSIVE has to wait for.
    with engine.connect() as report:
        report.execute(text("SELECT count(*) FROM widget"))
        result = migrations.run("upgrade", "head", env={DDL_LOCK: "1s"})
        assert failed_line(result) == (
            "FAILED: a migration statement (ALTER TABLE widget ADD COLUMN sku TEXT) waited over "
            "1s for a lock held by another session (a long query or an open transaction; "
            "pg_locks shows it) and was canceled, and the migration was rolled back; retry when "
            "that session is done, or raise MIGRATION_DDL_LOCK_TIMEOUT"
        )
        assert scalars(fresh_database_url, "SELECT version_num FROM alembic_version") == [previous]
        assert "sku" not in {column["name"] for column in inspect(engine).get_columns("widget")}
        report.rollback()
    retry = migrations.run("upgrade", "head", env={DDL_LOCK: "1s"})
    assert retry.returncode == 0, retry.stderr
    assert scalars(fresh_database_url, "SELECT version_num FROM alembic_version") == [head]
    assert "sku" in {column["name"] for column in inspect(engine).get_columns("widget")}
    engine.dispose()


def test_long_statement_is_canceled_and_rolled_back(
    migrations: Migrations, fresh_database_url: URL
) -> None:
    # The limit is meant for the sleep alone, not for creating the extension in a fresh database.
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION vector"))
    engine.dispose()
    migrations.add("slow", f'{CREATE_WIDGET}\nop.execute("SELECT pg_sleep(60)")')
    result = migrations.run("upgrade", "head", env={STATEMENT: "1s"})
    assert failed_line(result) == (
        "FAILED: a migration statement (SELECT pg_sleep(60)) ran for over 1s and was "
        "canceled, and the migration was rolled back; raise MIGRATION_STATEMENT_TIMEOUT for "
        "this run (0 for no limit), or build vector indexes on populated tables concurrently"
    )
    # Everything ran in one transaction, from an empty database: nothing is left of it.
    assert scalars(fresh_database_url, "SELECT to_regclass('alembic_version')::text") == [None]
    assert scalars(fresh_database_url, "SELECT to_regclass('widget')::text") == [None]


def test_a_timeout_that_is_no_duration_is_one_line(
    migrations: Migrations, fresh_database_url: URL
) -> None:
    result = migrations.run("upgrade", "head", env={STATEMENT: "5 minutes"})
    assert failed_line(result) == (
        "FAILED: MIGRATION_STATEMENT_TIMEOUT='5 minutes' is not a duration; use a number with an "
        "optional unit (500ms, 30s, 5min, 1h; a bare number means seconds), or 0 for no limit"
    )


@pytest.mark.parametrize(
    ("raw", "spelled", "seconds"),
    [
        ("500ms", "500ms", 0.5),
        ("30", "30s", 30.0),
        (" 2 min ", "2min", 120.0),
        ("1.5h", "1.5h", 5400.0),
        ("0", "0s", 0.0),
    ],
)
def test_durations(monkeypatch: pytest.MonkeyPatch, raw: str, spelled: str, seconds: float) -> None:
    monkeypatch.setenv("MIGRATION_TEST_DURATION", raw)
    assert timeouts.read("MIGRATION_TEST_DURATION", "1s") == timeouts.Duration(spelled, seconds)
