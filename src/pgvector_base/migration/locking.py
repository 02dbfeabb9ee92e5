"""One migration run at a time per database, and the ``vector`` extension created under it.

Several replicas often run ``alembic upgrade head`` at the same moment. A plain
``CREATE EXTENSION IF NOT EXISTS vector`` races (both see it missing, one fails on the catalog's
unique index), and so do two migration runs. The first process to take a session-level advisory
lock runs; the others wait for it and then find nothing left to do.

The lock is only as good as the session it is held in. Through a transaction-mode pooler each
transaction may run on another server connection, shared with other clients: the lock would
guard nothing and stay behind. So the run stops, before taking it, when a second connection lands
on the server process of the first, and again wherever the lock turns out not to be this server
process's own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from pgvector_base.migration import errors, timeouts

logger = logging.getLogger(__name__)

# Any constant shared by every process that migrates this database; this one spells "pgvector".
# Advisory locks belong to one database, so runs against different databases never wait.
MIGRATION_LOCK_KEY = 0x7067766563746F72
LOCK_TIMEOUT_ENV = "MIGRATION_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = "10min"
POLL_INTERVAL = 0.2

TRY_LOCK_SQL = text("SELECT pg_try_advisory_lock(:key)")
UNLOCK_SQL = text("SELECT pg_advisory_unlock(:key)")
BACKEND_PID_SQL = text("SELECT pg_backend_pid()")
# pg_locks shows a bigint advisory key as its high half (classid) and low half (objid).
KEY = {"high": MIGRATION_LOCK_KEY >> 32, "low": MIGRATION_LOCK_KEY & 0xFFFFFFFF}
LOCK_ROWS = (
    "FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND classid::bigint = :high AND objid::bigint = :low"
)
HELD_HERE_SQL = text(f"SELECT EXISTS (SELECT {LOCK_ROWS} AND pid = pg_backend_pid())")
# The holder, and whether it has sat idle (no transaction, nothing running) for the whole wait:
# a lock left behind, which no run will ever release.
HOLDER_SQL = text(
    "SELECT locks.pid, activity.state = 'idle' "
    "AND activity.state_change < now() - make_interval(secs => :seconds) "
    f"FROM (SELECT pid {LOCK_ROWS}) AS locks LEFT JOIN pg_stat_activity AS activity USING (pid)"
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

    Stops with a ``CommandError`` when ``connection`` goes through a transaction-mode pooler
    (see :func:`ensure_own_session`), or the lock is found on a server process not its own.
    """
    if timeout is None:
        timeout = timeouts.read(LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT)
    own_transactions = not connection.in_transaction()
    if own_transactions:
        ensure_own_session(connection)
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
            # The failure may have left a transaction that takes no more statements.
            connection.rollback()
            unlock(connection, own_transactions)
        raise
    if not unlock(connection, own_transactions):
        raise CommandError(
            pooler_message(
                connection,
                "the migrations ran, but the server process that released the migration lock "
                "at the end did not hold it",
            )
        )


def ensure_own_session(connection: Connection) -> None:
    """Stop unless ``connection`` keeps one server process between its transactions.

    A direct connection is recognised by the server process's pid, which the driver learnt at
    connecting and a pooler hides. Through a pooler, a second connection tells the modes apart:
    in session mode it gets a server process of its own; in transaction mode it is handed the
    one ``connection`` has just released (PgBouncer hands out the most recently used first).
    """
    pid = connection.scalar(BACKEND_PID_SQL)
    connection.rollback()
    driver_info = getattr(connection.connection.dbapi_connection, "info", None)
    if pid == getattr(driver_info, "backend_pid", None):
        return
    with connection.engine.connect() as second:
        shared = second.scalar(BACKEND_PID_SQL) == pid
    if shared:
        raise CommandError(
            pooler_message(
                connection, f"a second connection was handed its server process, pid {pid}"
            )
        )


def try_lock(connection: Connection, own_transactions: bool) -> bool:
    """Try once to take the migration lock; end the attempt's transaction if it is ours."""
    # Asked in the attempt's own transaction, so of the same server process: a lock it holds
    # already was taken by another client that shares it through a pooler.
    if connection.scalar(HELD_HERE_SQL, KEY):
        pid = connection.scalar(BACKEND_PID_SQL)
        if own_transactions:
            connection.rollback()
        raise CommandError(
            pooler_message(
                connection,
                f"server process pid {pid} held the migration lock for another client",
            )
        )
    acquired = bool(connection.scalar(TRY_LOCK_SQL, {"key": MIGRATION_LOCK_KEY}))
    if own_transactions:
        # A session-level lock outlives the rollback; the snapshot of the attempt does not.
        connection.rollback()
    return acquired


def check_held(connection: Connection) -> None:
    """Stop unless this transaction's server process holds the migration lock.

    Call it inside the migration transaction, before any DDL: the lock was taken in an earlier
    transaction, which a transaction-mode pooler may have run on another server process.
    """
    if not connection.scalar(HELD_HERE_SQL, KEY):
        pid = connection.scalar(BACKEND_PID_SQL)
        raise CommandError(
            pooler_message(
                connection,
                f"the migration transaction runs on server process pid {pid}, which does not "
                "hold the migration lock this run took",
            )
        )


def unlock(connection: Connection, own_transactions: bool) -> bool:
    """Release the migration lock; return whether this server process held it."""
    released = bool(connection.scalar(UNLOCK_SQL, {"key": MIGRATION_LOCK_KEY}))
    if own_transactions:
        connection.rollback()
    return released


def pooler_message(connection: Connection, evidence: str) -> str:
    """The line for a connection that goes through a transaction-mode pooler."""
    url = connection.engine.url
    return (
        f"the connection to database '{url.database}' at {errors.location(url)} goes through a "
        f"transaction-mode pooler ({evidence}): the migration lock and settings need a session "
        "of their own; run migrations over a direct or session-mode URL (DATABASE_URL for the "
        'migration step; docs/configuration.md, "PgBouncer and other poolers")'
    )


def lock_timeout_message(
    connection: Connection, own_transactions: bool, timeout: timeouts.Duration
) -> str:
    """Say who has held the migration lock too long (its backend's pid) and what to do."""
    holder, left_behind = connection.execute(
        HOLDER_SQL, {**KEY, "seconds": timeout.seconds}
    ).first() or (None, False)
    if own_transactions:
        connection.rollback()
    database = connection.engine.url.database
    if left_behind:
        return (
            f"PostgreSQL backend pid {holder} has held the migration lock on database "
            f"'{database}' for over {timeout.text} while idle, running nothing: a run left it "
            "behind (through a transaction-mode pooler, on one of the pool's server connections); "
            f"end that connection (SELECT pg_terminate_backend({holder}), or RECONNECT in "
            "PgBouncer's admin console), then migrate over a direct or session-mode URL"
        )
    who = "another migration run" if holder is None else f"PostgreSQL backend pid {holder}"
    return (
        f"{who} has held the migration lock on database '{database}' "
        f"for over {timeout.text}; wait for it to finish (pg_stat_activity shows what it runs), "
        f"or raise {LOCK_TIMEOUT_ENV}"
    )


def create_vector_extension(connection: Connection) -> str:
    """Create the ``vector`` extension unless it exists; return its installed version.

    Call it while holding the migration lock, outside a transaction: committed at once,
    the extension does not make another process that creates it meanwhile (a library starting up:
    ``CREATE EXTENSION IF NOT EXISTS vector``) wait for the whole migration, then fail on the
    catalog's unique index. Should that process win the race, its extension is used.
    Checking the catalog first means a role without the privilege to create extensions can still
    migrate a database where an administrator created it. Managed services often install
    extensions in a schema of their own: if that schema is not on the ``search_path``, no
    migration could name the ``vector`` type, so this stops first.
    """
    own_transaction = not connection.in_transaction()
    version = connection.scalar(VECTOR_VERSION_SQL)
    if version is None:
        try:
            connection.exec_driver_sql(CREATE_EXTENSION_SQL)
        except IntegrityError:
            if not own_transaction:
                raise
            # Another process created it since the check, and committed.
            connection.rollback()
        version = connection.scalar(VECTOR_VERSION_SQL)
    if own_transaction:
        connection.commit()
    hidden = connection.execute(HIDDEN_VECTOR_SQL).first()
    if own_transaction:
        connection.rollback()
    if hidden is not None:
        schema, search_path, user, database = hidden
        raise CommandError(
            f"the vector extension is installed in schema {schema}, which is not on the "
            f"search_path ({search_path}) of user {user} in database {database}; add it: "
            f'ALTER ROLE {user} SET search_path = "$user", public, {schema} '
            f"(or ALTER DATABASE {database} SET search_path = ...), then run again"
        )
    return str(version)
