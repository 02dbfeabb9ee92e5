"""Serializing migration runs, and creating the ``vector`` extension inside that serialization.

Several replicas often run ``alembic upgrade head`` at the same moment. A plain
``CREATE EXTENSION IF NOT EXISTS vector`` races (both see it missing, one fails on the catalog's
unique index), and so do two migration runs. The first process to take a session-level advisory lock
runs; the others wait for it and then find nothing left to do.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection

# Any constant shared by every process that migrates this database; this one spells "pgvector".
MIGRATION_LOCK_KEY = 0x7067766563746F72
LOCK_TIMEOUT_ENV = "MIGRATION_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 600.0
POLL_INTERVAL = 0.2

CREATE_EXTENSION_SQL = "CREATE EXTENSION IF NOT EXISTS vector"


@contextmanager
def migration_lock(connection: Connection, timeout: float | None = None) -> Iterator[None]:
    """Hold the migration lock for the whole block, waiting up to ``timeout`` seconds for it.

    The lock is a session-level advisory lock held by a second, autocommit connection: it survives
    the commits that Alembic's ``autocommit_block()`` makes on the migration connection, and waiting
    processes poll ``pg_try_advisory_lock`` outside any transaction, so they hold no snapshot that a
    ``CREATE INDEX CONCURRENTLY`` run by the lock holder would have to wait for.
    """
    if timeout is None:
        timeout = float(os.environ.get(LOCK_TIMEOUT_ENV) or DEFAULT_LOCK_TIMEOUT)
    with connection.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as holder:
        deadline = time.monotonic() + timeout
        while not holder.scalar(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
        ):
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"another migration has held the migration lock for over {timeout:g} s; "
                    f"wait for it to finish or raise {LOCK_TIMEOUT_ENV}"
                )
            time.sleep(POLL_INTERVAL)
        try:
            yield
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})


def create_vector_extension(connection: Connection) -> None:
    """Create the ``vector`` extension unless it exists; call it while holding the migration lock.

    Checking the catalog first means a role without the privilege to create extensions can still
    migrate a database where an administrator has created it already.
    """
    installed = connection.scalar(text("SELECT 1 FROM pg_extension WHERE extname = 'vector'"))
    if not installed:
        connection.exec_driver_sql(CREATE_EXTENSION_SQL)
