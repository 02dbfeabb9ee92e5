"""``alembic upgrade head`` killed (SIGKILL) in the middle of a multi-statement migration.

The migration adds a column, waits at a gate, then creates a table. The gate is an advisory lock
that the test holds: the migration's statement polls it and ends once the test releases it, so the
process is killed while the server runs that statement, however slowly either side starts.
PostgreSQL rolls the migration's transaction back once it notices the client is gone: the
migration session checks every few seconds (``client_connection_check_interval``), so a long
statement, such as an index build, stops then instead of running to its end. Until then, that
session still holds its locks and the migration lock, so a run started meanwhile waits for it
rather than racing it. Interrupted concurrent index builds are recovered by
``pgvector_base.migration.indexes`` (its own tests).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from alembic import command
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from ..revisions import Migrations

T = TypeVar("T")

GATE_KEY = 7_000_001
CREATE_WIDGET = 'op.create_table("widget", sa.Column("id", sa.BigInteger(), primary_key=True))'
# Advisory locks are per database; pg_locks shows a small key as objid, with classid 0.
SLOW_MIGRATION = f"""
op.add_column("widget", sa.Column("sku", sa.Text()))
op.execute(
    \"\"\"
    DO $$ BEGIN
        WHILE EXISTS (
            SELECT FROM pg_locks
            WHERE locktype = 'advisory' AND granted AND classid = 0 AND objid = {GATE_KEY}
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        ) LOOP
            PERFORM pg_sleep(0.05);
        END LOOP;
    END $$
    \"\"\"
)
op.create_table("audit", sa.Column("id", sa.BigInteger(), primary_key=True))
"""
AT_THE_GATE = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND ltrim(query, E' \\n') LIKE 'DO $$%' AND state = 'active'"
)
WAIT_LIMIT = 60.0
WAITING = "Another migration run holds the migration lock; waiting up to"


def poll(check: Callable[[], T | None], what: str) -> T:
    """Call ``check`` until it returns something other than ``None``; fail after ``WAIT_LIMIT``."""
    deadline = time.monotonic() + WAIT_LIMIT
    while (value := check()) is None:
        assert time.monotonic() < deadline, f"waited {WAIT_LIMIT:.0f}s for {what}"
        time.sleep(0.05)
    return value


def first_value(url: URL, sql: str) -> object | None:
    """The first column of the first row of ``sql``, or ``None`` when it has no row."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        value: object | None = connection.scalar(text(sql))
    engine.dispose()
    return value


@contextmanager
def gate_closed(url: URL) -> Iterator[None]:
    """Hold the gate that the slow migration waits at, for the block."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": GATE_KEY})
        holder.commit()
        yield
        holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": GATE_KEY})
        holder.commit()
    engine.dispose()


def kill_at_the_gate(migrations: Migrations, url: URL) -> int:
    """Start the upgrade, SIGKILL it while the server waits at the gate; return the server pid."""
    upgrade = migrations.start("upgrade", "head")
    backend = poll(lambda: first_value(url, AT_THE_GATE), "the migration to reach the gate")
    os.kill(upgrade.pid, signal.SIGKILL)
    upgrade.communicate(timeout=WAIT_LIMIT)
    assert upgrade.returncode == -signal.SIGKILL
    assert isinstance(backend, int)
    return backend


def schema(url: URL) -> tuple[list[str], set[str], set[str]]:
    """``alembic_version`` rows, the tables, and the columns of ``widget``."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        versions = list(connection.scalars(text("SELECT version_num FROM alembic_version")))
    inspector = inspect(engine)
    tables = set(inspector.get_table_names())
    columns = {column["name"] for column in inspector.get_columns("widget")}
    engine.dispose()
    return versions, tables, columns


def backend_gone(url: URL, backend: int) -> None:
    """Wait until server process ``backend`` has ended."""
    gone = f"SELECT true WHERE NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = {backend})"
    poll(lambda: first_value(url, gone), f"backend {backend} to end")


def test_killed_run_stops_its_statement_without_waiting_for_it_to_end(
    migrations: Migrations, fresh_database_url: URL
) -> None:
    """The gate stays closed: only noticing the lost client ends the statement."""
    migrations.add("widget", CREATE_WIDGET)
    migrations.add("slow", SLOW_MIGRATION)
    with gate_closed(fresh_database_url):
        backend = kill_at_the_gate(migrations, fresh_database_url)
        backend_gone(fresh_database_url, backend)
        assert first_value(fresh_database_url, "SELECT to_regclass('widget')::text") is None


def test_killed_migration_leaves_the_previous_revision_and_reruns(
    migrations: Migrations, fresh_database_url: URL
) -> None:
    previous = migrations.add("widget", CREATE_WIDGET)
    command.upgrade(migrations.config(), previous)
    head = migrations.add("slow", SLOW_MIGRATION)
    before = schema(fresh_database_url)
    with gate_closed(fresh_database_url):
        backend = kill_at_the_gate(migrations, fresh_database_url)
    backend_gone(fresh_database_url, backend)
    assert schema(fresh_database_url) == before
    assert before[0] == [previous]
    rerun = migrations.run("upgrade", "head")
    assert rerun.returncode == 0, rerun.stderr
    versions, tables, columns = schema(fresh_database_url)
    assert (versions, tables - before[1], columns - before[2]) == ([head], {"audit"}, {"sku"})


def test_run_started_before_the_server_rolled_back_waits_for_it(
    migrations: Migrations, fresh_database_url: URL, tmp_path: Path
) -> None:
    """The second run starts while the first runs its statement, which goes on past the kill.

    Were the migration lock held apart from the migration's own session, the second run would
    start at once, and its ALTER TABLE would fail on the lock the dying transaction still holds.
    """
    command.upgrade(migrations.config(), migrations.add("widget", CREATE_WIDGET))
    head = migrations.add("slow", SLOW_MIGRATION)
    log = tmp_path / "rerun.log"
    with log.open("w") as stderr, gate_closed(fresh_database_url):
        first = migrations.start("upgrade", "head")
        poll(lambda: first_value(fresh_database_url, AT_THE_GATE), "the first run at the gate")
        rerun = migrations.start(
            "upgrade", "head", env={"MIGRATION_DDL_LOCK_TIMEOUT": "500ms"}, stderr=stderr
        )
        # The second run logs WAITING as soon as its first try for the migration lock fails; a
        # run that did not wait has ended by itself, and is judged below.
        poll(
            lambda: True if WAITING in log.read_text() else rerun.poll(),
            "the second run to wait for the migration lock",
        )
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=WAIT_LIMIT)
    try:
        rerun.communicate(timeout=WAIT_LIMIT)
    except subprocess.TimeoutExpired:
        rerun.kill()
        raise
    output = log.read_text()
    assert rerun.returncode == 0, output
    assert WAITING in output
    assert schema(fresh_database_url)[0] == [head]
