"""``alembic upgrade head`` killed (SIGKILL) in the middle of a multi-statement migration.

The migration adds a column, waits at a gate (``gates.py``), then creates a table: the process is
killed while the server runs the statement that waits there, however slowly either side starts.
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
from pathlib import Path

from alembic import command
from sqlalchemy.engine import URL

from ..revisions import Migrations
from .gates import (
    CREATE_WIDGET,
    SLOW_MIGRATION,
    WAIT_LIMIT,
    first_value,
    gate_closed,
    poll,
    schema,
    wait_at_the_gate,
)

WAITING = "Another migration run holds the migration lock; waiting up to"


def kill_at_the_gate(migrations: Migrations, url: URL) -> int:
    """Start the upgrade, SIGKILL it while the server waits at the gate; return the server pid."""
    upgrade = migrations.start("upgrade", "head")
    backend = wait_at_the_gate(url, "the migration to reach the gate")
    os.kill(upgrade.pid, signal.SIGKILL)
    upgrade.communicate(timeout=WAIT_LIMIT)
    assert upgrade.returncode == -signal.SIGKILL
    assert isinstance(backend, int)
    return backend


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
        wait_at_the_gate(fresh_database_url, "the first run at the gate")
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
