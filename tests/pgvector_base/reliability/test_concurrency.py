"""Replicas that run ``alembic upgrade head`` at the same moment: one migrates, the others wait.

Eight ``alembic`` processes start together against one database, five times on fresh databases
and once on a database one revision behind. They apply two revisions of the test's own: one that
creates a table and records itself in it, and one with an ``autocommit_block()`` that commits the
migration transaction halfway, builds an index with ``CREATE INDEX CONCURRENTLY`` while the seven
other processes are connected and waiting for the lock, and records itself again after the commit.
A migration lock held by the transaction would be lost at that commit; a waiter holding a snapshot
would make the concurrent build wait forever.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from pgvector_base.database import DATABASE_URL_ENV
from pgvector_base.migration.locking import MIGRATION_LOCK_KEY

from ..revisions import Migrations, failed_line, run_replicas

REPLICAS = 8
FRESH_DATABASES = 5

RECORD = """
op.create_table("applied", sa.Column("step", sa.Text(), nullable=False))
op.execute("INSERT INTO applied VALUES ('record')")
"""
# Waits (in the migration, so under the lock) until every replica is connected: the build then
# runs while all the others poll for the lock.
CONCURRENT_INDEX = f"""
op.execute("INSERT INTO applied VALUES ('before the autocommit block')")
op.execute(
    \"\"\"
    DO $$ BEGIN
        WHILE (SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND backend_type = 'client backend') < {REPLICAS}
        LOOP
            PERFORM pg_sleep(0.05), pg_stat_clear_snapshot();
        END LOOP;
    END $$
    \"\"\"
)
with op.get_context().autocommit_block():
    op.create_index("ix_applied_step", "applied", ["step"], postgresql_concurrently=True)
op.execute("INSERT INTO applied VALUES ('after the autocommit block')")
"""
CreateDatabase = Callable[[], URL]


def environment(url: URL) -> dict[str, str]:
    """``DATABASE_URL`` at ``url``, for the replicas."""
    return {DATABASE_URL_ENV: url.render_as_string(hide_password=False)}


def database_state(url: URL) -> tuple[list[str], list[str], bool]:
    """``alembic_version`` rows, ``applied`` steps in order, and whether the index is valid."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        versions = list(connection.scalars(text("SELECT version_num FROM alembic_version")))
        steps = list(connection.scalars(text("SELECT step FROM applied ORDER BY ctid")))
        valid = connection.scalar(
            text("SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_applied_step'::regclass")
        )
    engine.dispose()
    return versions, steps, bool(valid)


# Forty alembic processes start here; on two busy cores that alone can take minutes.
@pytest.mark.timeout(900)
def test_replicas_on_fresh_databases_apply_each_migration_once(
    migrations: Migrations, create_database: CreateDatabase
) -> None:
    migrations.add("record", RECORD)
    head = migrations.add("concurrent index", CONCURRENT_INDEX)
    for _ in range(FRESH_DATABASES):
        url = create_database()
        runs = run_replicas(migrations, REPLICAS, environment(url))
        assert runs == Counter(migrations.revisions())
        assert database_state(url) == (
            [head],
            ["record", "before the autocommit block", "after the autocommit block"],
            True,
        )


def test_replicas_on_a_database_one_revision_behind_apply_the_last_once(
    migrations: Migrations, create_database: CreateDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    behind = migrations.add("record", RECORD)
    head = migrations.add("concurrent index", CONCURRENT_INDEX)
    url = create_database()
    monkeypatch.setenv(DATABASE_URL_ENV, url.render_as_string(hide_password=False))
    command.upgrade(migrations.config(), behind)
    runs = run_replicas(migrations, REPLICAS, environment(url))
    assert runs == Counter({head: 1})
    assert database_state(url) == (
        [head],
        ["record", "before the autocommit block", "after the autocommit block"],
        True,
    )


def test_lock_held_longer_than_the_lock_timeout_fails_in_one_line(
    migrations: Migrations, fresh_database_url: URL
) -> None:
    """The holder is a run in progress: in a transaction (a lock left behind by a session that
    is idle outside any transaction is another line, see ``tests/pgvector_base/pooler/``)."""
    migrations.add("record", RECORD)
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        pid = holder.scalar(text("SELECT pg_backend_pid()"))
        result = migrations.run("upgrade", "head", env={"MIGRATION_LOCK_TIMEOUT": "1s"})
        holder.rollback()
    engine.dispose()
    assert failed_line(result) == (
        f"FAILED: PostgreSQL backend pid {pid} has held the migration lock on database "
        f"'{fresh_database_url.database}' for over 1s; wait for it to finish "
        "(pg_stat_activity shows what it runs), or raise MIGRATION_LOCK_TIMEOUT"
    )
    assert "Another migration run holds the migration lock; waiting up to 1s" in result.stderr
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT to_regclass('alembic_version')")) is None
    engine.dispose()
