"""``alembic upgrade head`` killed (SIGKILL) in the middle of a multi-statement migration.

The migration adds a column, sleeps, then creates a table. The process is killed while the server
runs the sleep. PostgreSQL rolls the migration's transaction back once it notices the client is
gone, which it does when the running statement ends: until then, that session still holds its
locks and the migration lock, so a run started meanwhile waits for it rather than racing it.
Interrupted concurrent index builds are recovered by ``pgvector_base.migration.indexes``
(its own tests).
"""

from __future__ import annotations

import os
import signal
import time

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from .revisions import Migrations, shipped_head

SLEEP_ENV = "SLOW_MIGRATION_SECONDS"
SLOW_MIGRATION = f"""
op.add_column("product", sa.Column("sku", sa.Text()))
op.execute(f"SELECT pg_sleep({{float(os.environ.get('{SLEEP_ENV}', '0'))}})")
op.create_table("audit", sa.Column("id", sa.BigInteger(), primary_key=True))
"""
WAIT_LIMIT = 60.0


def wait_for(url: URL, sql: str, expected: bool) -> int | None:
    """Poll ``sql`` (one row, one column, or none) until whether it has a row is ``expected``."""
    engine = create_engine(url, poolclass=NullPool)
    deadline = time.monotonic() + WAIT_LIMIT
    with engine.connect() as connection:
        while True:
            value = connection.scalar(text(sql))
            connection.rollback()
            if (value is not None) == expected:
                engine.dispose()
                return value if isinstance(value, int) else None
            assert time.monotonic() < deadline, f"still {value!r} after {WAIT_LIMIT}s: {sql}"
            time.sleep(0.05)


def kill_during_sleep(migrations: Migrations, url: URL, seconds: float) -> int:
    """Start the upgrade, SIGKILL it while the server sleeps; return the server process id."""
    upgrade = migrations.start("upgrade", "head", env={SLEEP_ENV: str(seconds)})
    backend = wait_for(
        url,
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep%' AND state = 'active'",
        expected=True,
    )
    assert backend is not None
    os.kill(upgrade.pid, signal.SIGKILL)
    upgrade.communicate(timeout=WAIT_LIMIT)
    assert upgrade.returncode == -signal.SIGKILL
    return backend


def schema(url: URL) -> tuple[list[str], set[str], set[str]]:
    """``alembic_version`` rows, the tables, and the columns of ``product``."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        versions = list(connection.scalars(text("SELECT version_num FROM alembic_version")))
    inspector = inspect(engine)
    tables = set(inspector.get_table_names())
    columns = {column["name"] for column in inspector.get_columns("product")}
    engine.dispose()
    return versions, tables, columns


def test_killed_migration_leaves_the_previous_revision_and_reruns(
    migrations: Migrations, fresh_database_url: URL
) -> None:
    previous = shipped_head()
    command.upgrade(Config(str(migrations.ini)), previous)
    head = migrations.add("slow", SLOW_MIGRATION, imports="import os")
    before = schema(fresh_database_url)
    backend = kill_during_sleep(migrations, fresh_database_url, seconds=2)
    wait_for(fresh_database_url, f"SELECT 1 FROM pg_stat_activity WHERE pid = {backend}", False)
    assert schema(fresh_database_url) == before
    assert before[0] == [previous]
    rerun = migrations.run("upgrade", "head")
    assert rerun.returncode == 0, rerun.stderr
    versions, tables, columns = schema(fresh_database_url)
    assert (versions, tables - before[1], columns - before[2]) == ([head], {"audit"}, {"sku"})


def test_run_started_before_the_server_rolled_back_waits_for_it(
    migrations: Migrations, fresh_database_url: URL
) -> None:
    """The killed run's statement outlasts the lock timeout of the run that follows at once.

    Were the migration lock held apart from the migration's own session, the second run would
    start at once, and its ALTER TABLE would fail on the lock the dying transaction still holds.
    """
    command.upgrade(Config(str(migrations.ini)), shipped_head())
    head = migrations.add("slow", SLOW_MIGRATION, imports="import os")
    kill_during_sleep(migrations, fresh_database_url, seconds=3)
    rerun = migrations.run("upgrade", "head", env={"MIGRATION_DDL_LOCK_TIMEOUT": "500ms"})
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Another migration run holds the migration lock; waiting up to" in rerun.stderr
    assert schema(fresh_database_url)[0] == [head]
