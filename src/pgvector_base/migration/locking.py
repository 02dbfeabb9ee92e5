"""One migration run at a time per database, and the ``vector`` extension created inside it.

Several replicas often run ``alembic upgrade head`` at the same moment. A plain
``CREATE EXTENSION IF NOT EXISTS vector`` races (both see it missing, one fails on the catalog's
unique index), and so do two migration runs. The first process to take a session-level advisory
lock runs; the others wait for it and then find nothing left to do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection

from pgvector_base.migration import timeouts

logger = logging.getLogger(__name__)

# Any constant shared by every process that migrates this database; this one spells "pgvector".
# Advisory locks belong to one database, so runs against different databases never wait.
MIGRATION_LOCK_KEY = 0x7067766563746F72
LOCK_TIMEOUT_ENV = "MIGRATION_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = "10min"
POLL_INTERVAL = 0.2

TRY_LOCK_SQL = text("SELECT pg_try_advisory_lock(:key)")
UNLOCK_SQL = text("SELECT pg_advisory_unlock(:key)")
# pg_locks shows a bigint advisory key as its high half (classid) and low half (objid).
HOLDER_SQL = text(
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND classid::bigint = :high AND objid::bigint = :low"
)
CREATE_EXTENSION_SQL = "CREATE EXTENSION IF NOT EXISTS vector"
VECTOR_VERSION_SQL = text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
# Where the extension's types are, unless `vector` resolves through the search_path; the names
# quoted as the fix's SQL needs them.
HIDDEN_VECTOR_SQL = text(
    "SELECT extnamespace::regnamespace::text, current_setting('search_path'), "
    "quote_ident(current_user), quote_ident(current_database()) "
    "FROM pg_extension WHERE extname = 'vector' "
    "AND to_regtype('vector') IS NULL"
)


@contextmanager
def migration_lock(
    connection: Connection, timeout: timeouts.Duration | None = None
) -> Iterator[None]:
    """Hold the migration lock on ``connection`` for the whole block; wait up to ``timeout``.

    ``timeout`` defaults to ``MIGRATION_LOCK_TIMEOUT`` (10min; 0 waits indefinitely). The lock is
    a session-level advisory lock taken by the migration session itself, so

    * it survives every commit, including those ``autocommit_block()`` makes, and it is released
      only after that session's last transaction: a run killed mid-migration keeps the others out
      until PostgreSQL has rolled its work back;
    * a waiting process polls ``pg_try_advisory_lock`` and ends the transaction of each attempt at
      once. It never holds a snapshot, which the running process's ``CREATE INDEX CONCURRENTLY``
      would wait for: blocked in ``pg_advisory_lock`` instead, the two would deadlock.

    Pass a connection outside any transaction, as ``env.py`` does. Inside the caller's transaction
    the attempts cannot be ended one by one, and after a failure the lock stays with the caller's
    session until it rolls back and closes.
    """
    if timeout is None:
        timeout = timeouts.read(LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT)
    own_transactions = not connection.in_transaction()
    deadline = time.monotonic() + timeout.seconds
    if not try_lock(connection, own_transactions):
        logger.info(
            "Another migration run holds the migration lock; waiting up to %s", timeout.text
        )
        while not try_lock(connection, own_transactions):
            if timeout.seconds and time.monotonic() >= deadline:
                raise CommandError(lock_timeout_message(connection, own_transactions, timeout))
            time.sleep(POLL_INTERVAL)
    try:
        yield
    except BaseException:
        if own_transactions and not connection.invalidated:
            unlock(connection, own_transactions)
        raise
    unlock(connection, own_transactions)


def try_lock(connection: Connection, own_transactions: bool) -> bool:
    """Try once to take the migration lock; end the attempt's transaction if it is ours."""
    acquired = bool(connection.scalar(TRY_LOCK_SQL, {"key": MIGRATION_LOCK_KEY}))
    if own_transactions:
        # A session-level lock outlives the rollback; the snapshot of the attempt does not.
        connection.rollback()
    return acquired


def unlock(connection: Connection, own_transactions: bool) -> None:
    """Release the migration lock, which a pooled session would otherwise keep."""
    connection.execute(UNLOCK_SQL, {"key": MIGRATION_LOCK_KEY})
    if own_transactions:
        connection.rollback()


def lock_timeout_message(
    connection: Connection, own_transactions: bool, timeout: timeouts.Duration
) -> str:
    """Say who has held the migration lock too long (its backend's pid) and what to do."""
    holder = connection.scalar(
        HOLDER_SQL, {"high": MIGRATION_LOCK_KEY >> 32, "low": MIGRATION_LOCK_KEY & 0xFFFFFFFF}
    )
    if own_transactions:
        connection.rollback()
    who = "another migration run" if holder is None else f"PostgreSQL backend pid {holder}"
    return (
        f"{who} has held the migration lock on database '{connection.engine.url.database}' "
        f"for over {timeout.text}; wait for it to finish (pg_stat_activity shows what it runs), "
        f"or raise {LOCK_TIMEOUT_ENV}"
    )


def create_vector_extension(connection: Connection) -> str:
    """Create the ``vector`` extension unless it exists; return its installed version.

    Call it while holding the migration lock. Checking the catalog first means a role without the
    privilege to create extensions can still migrate a database where an administrator created it.
    Managed services often install extensions in a schema of their own: if that schema is not on
    the ``search_path``, no migration could name the ``vector`` type, so this stops first.
    """
    version = connection.scalar(VECTOR_VERSION_SQL)
    if version is None:
        connection.exec_driver_sql(CREATE_EXTENSION_SQL)
        version = connection.scalar(VECTOR_VERSION_SQL)
    hidden = connection.execute(HIDDEN_VECTOR_SQL).first()
    if hidden is not None:
        schema, search_path, user, database = hidden
        raise CommandError(
            f"the vector extension is installed in schema {schema}, which is not on the "
            f"search_path ({search_path}) of user {user} in database {database}; add it: "
            f'ALTER ROLE {user} SET search_path = "$user", public, {schema} '
            f"(or ALTER DATABASE {database} SET search_path = ...), then run again"
        )
    return str(version)
