"""Migrations through a real PgBouncer: refused in transaction mode, once in session mode.

In transaction mode a session-level advisory lock and session settings stay on whichever server
connection ran the transaction, which the pool then hands to other clients. ``alembic upgrade``
must stop before any DDL with one line, and leave nothing on any server connection of the pool.
A lock left behind that way by an older run is named as such to the next run, with how to end it.
"""

from __future__ import annotations

from collections import Counter

import psycopg2
import pytest
from sqlalchemy.engine import URL

from pgvector_base.database import DATABASE_URL_ENV
from pgvector_base.migration.locking import MIGRATION_LOCK_KEY

from ..reliability.gates import CREATE_WIDGET, poll
from ..revisions import Migrations, failed_line, run_replicas
from .conftest import StartPgBouncer

SETTINGS = ("lock_timeout", "statement_timeout", "maintenance_work_mem")
SHOW_SETTINGS = "SELECT " + ", ".join(f"current_setting('{name}')" for name in SETTINGS)
LOCK_ROWS = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
REPLICAS = 4


@pytest.fixture
def migrations(tmp_path_factory: pytest.TempPathFactory) -> Migrations:
    """Migrations of the test's own, with one revision."""
    migrations = Migrations(tmp_path_factory.mktemp("pooled") / "migrations")
    migrations.add("widget", CREATE_WIDGET)
    return migrations


def dsn(url: URL) -> str:
    """A libpq connection string for ``url``, with no options PgBouncer would refuse."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def rows(url: URL, sql: str) -> list[tuple[object, ...]]:
    """The rows of ``sql`` on a connection of its own."""
    with psycopg2.connect(dsn(url)) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        result = [tuple(row) for row in cursor.fetchall()]
    connection.close()
    return result


def environment(url: URL, **extra: str) -> dict[str, str]:
    """``alembic``'s environment: ``DATABASE_URL`` at ``url``, no ``PGOPTIONS`` (PgBouncer refuses
    startup options), and ``extra``."""
    return {DATABASE_URL_ENV: url.render_as_string(hide_password=False), "PGOPTIONS": "", **extra}


def open_every_server_connection(url: URL, pool_size: int) -> dict[int, tuple[object, ...]]:
    """Make ``pool_size`` clients of the pooler each run a transaction at the same time, so that
    each is on a server connection of its own; return each one's pid and ``SHOW_SETTINGS``."""
    clients = [psycopg2.connect(dsn(url)) for _ in range(pool_size)]
    seen: dict[int, tuple[object, ...]] = {}
    try:
        for client in clients:
            with client.cursor() as cursor:
                cursor.execute(f"{SHOW_SETTINGS}, pg_backend_pid()")
                *values, pid = cursor.fetchall()[0]
                seen[pid] = tuple(values)
    finally:
        for client in clients:
            client.close()
    assert len(seen) == pool_size
    return seen


@pytest.mark.parametrize(
    ("server_round_robin", "evidence"),
    [
        # PgBouncer's default hands out the server connection released last: the second
        # connection gets the first one's.
        (0, "a second connection was handed its server process, pid "),
        # With every server connection open and handed out in turn, which check stops the run
        # depends on the turn: the second connection's, or the migration transaction's.
        (1, ""),
    ],
    ids=["last used first", "round robin"],
)
def test_transaction_mode_is_refused_in_one_line_and_leaves_nothing_behind(
    migrations: Migrations,
    fresh_database_url: URL,
    pgbouncer: StartPgBouncer,
    server_round_robin: int,
    evidence: str,
) -> None:
    pool_size = 3
    bouncer = pgbouncer(
        pool_mode="transaction",
        pool_size=pool_size,
        settings={"server_round_robin": server_round_robin},
    )
    pooled = bouncer.url(fresh_database_url)
    if server_round_robin:
        open_every_server_connection(pooled, pool_size)
    (defaults,) = rows(fresh_database_url, SHOW_SETTINGS)
    result = migrations.run("upgrade", "head", env=environment(pooled))
    line = failed_line(result)
    assert result.returncode == 255
    assert line.startswith(
        f"FAILED: the connection to database '{fresh_database_url.database}' at "
        f"127.0.0.1:{bouncer.port} goes through a transaction-mode pooler ({evidence}"
    )
    assert line.endswith(
        "): the migration lock and settings need a session of their own; run migrations over a "
        "direct or session-mode URL (DATABASE_URL for the migration step; "
        'docs/configuration.md, "PgBouncer and other poolers")'
    )
    seen = open_every_server_connection(pooled, pool_size)
    assert seen == dict.fromkeys(seen, defaults)
    assert rows(fresh_database_url, LOCK_ROWS) == []
    assert rows(fresh_database_url, "SELECT to_regclass('alembic_version')::text") == [(None,)]


def test_replicas_through_session_mode_migrate_once(
    migrations: Migrations, fresh_database_url: URL, pgbouncer: StartPgBouncer
) -> None:
    # Each replica holds a server connection for its run, and a second one for a moment.
    bouncer = pgbouncer(pool_mode="session", pool_size=2 * REPLICAS)
    runs = run_replicas(migrations, REPLICAS, environment(bouncer.url(fresh_database_url)))
    assert runs == Counter({migrations.head: 1})
    assert rows(fresh_database_url, "SELECT version_num FROM alembic_version") == [
        (migrations.head,)
    ]
    assert rows(fresh_database_url, LOCK_ROWS) == []


def test_lock_left_on_an_idle_pooled_connection_is_named_with_how_to_end_it(
    migrations: Migrations, fresh_database_url: URL, pgbouncer: StartPgBouncer
) -> None:
    """A client takes the migration lock through transaction mode and goes: the lock stays on
    a server connection that sits idle in the pool. The next run, over the direct URL, says so."""
    bouncer = pgbouncer(pool_mode="transaction", pool_size=1)
    with psycopg2.connect(dsn(bouncer.url(fresh_database_url))) as client:
        client.cursor().execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    client.close()
    ((holder,),) = poll(lambda: rows(fresh_database_url, LOCK_ROWS) or None, "the lock")
    result = migrations.run(
        "upgrade", "head", env=environment(fresh_database_url, MIGRATION_LOCK_TIMEOUT="1s")
    )
    assert failed_line(result) == (
        f"FAILED: PostgreSQL backend pid {holder} has held the migration lock on database "
        f"'{fresh_database_url.database}' for over 1s while idle, running nothing: a run left it "
        "behind (through a transaction-mode pooler, on one of the pool's server connections); "
        f"end that connection (SELECT pg_terminate_backend({holder}), or RECONNECT in "
        "PgBouncer's admin console), then migrate over a direct or session-mode URL"
    )
    # The advice works: RECONNECT closes the server connection once it is idle.
    bouncer.admin("RECONNECT")
    poll(lambda: rows(fresh_database_url, LOCK_ROWS) == [] or None, "the lock to go")
    retry = migrations.run("upgrade", "head", env=environment(fresh_database_url))
    assert retry.returncode == 0, retry.stderr


def test_options_the_pooler_refuses_are_named_with_where_to_set_them(
    migrations: Migrations, fresh_database_url: URL, pgbouncer: StartPgBouncer
) -> None:
    """``PGOPTIONS`` (docs/reliability.md's way to set ``client_connection_check_interval``) is a
    startup parameter PgBouncer refuses: one line says to set it on the role or database."""
    bouncer = pgbouncer(pool_mode="session")
    result = migrations.run(
        "upgrade",
        "head",
        env=environment(
            bouncer.url(fresh_database_url),
            PGOPTIONS="-c client_connection_check_interval=10s",
        ),
    )
    assert result.returncode == 255
    assert failed_line(result) == (
        f"FAILED: cannot connect to PostgreSQL at 127.0.0.1:{bouncer.port}: the connection pooler "
        "refuses the connection's options (PGOPTIONS, or ?options= in the database URL): set "
        "them on the role or database instead, e.g. "
        "ALTER ROLE app SET client_connection_check_interval = '10s'"
    )
    assert rows(fresh_database_url, "SELECT to_regclass('alembic_version')") == [(None,)]
