"""How long a migration may wait for a lock, and how long one statement may run.

A migration against a database that serves traffic must not queue every application query behind
its ``ALTER TABLE``: PostgreSQL grants locks in arrival order, so a DDL statement waiting for a long
query holds up everything that arrives after it. ``lock_timeout`` makes such a statement give up
after a few seconds instead, and ``statement_timeout`` bounds how long one statement may hold its
locks once it has them. Both are set for the migration session (they survive the commits of
``autocommit_block()``) and can be changed per environment:

* ``MIGRATION_DDL_LOCK_TIMEOUT`` (default ``5s``) becomes ``lock_timeout``;
* ``MIGRATION_STATEMENT_TIMEOUT`` (default ``5min``) becomes ``statement_timeout``.

The session also checks every few seconds that its client is still there
(``client_connection_check_interval``, PostgreSQL 14+ where the platform allows it): a killed run's
index build then stops at once instead of holding its locks, and the migration lock, to the end.
It is set with ``SET``, not as a startup option, which poolers refuse. :func:`reset` sets all
three back at the end of the run, for whoever uses the connection next.

Durations are a number with an optional unit (``ms``, ``s``, ``min``, ``h``; a bare number means
seconds); ``0`` means no limit. ``CREATE INDEX CONCURRENTLY`` belongs inside :func:`lifted`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from alembic import op
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection

DDL_LOCK_TIMEOUT_ENV = "MIGRATION_DDL_LOCK_TIMEOUT"
STATEMENT_TIMEOUT_ENV = "MIGRATION_STATEMENT_TIMEOUT"
# Long enough for DDL to get its lock on a busy table, short enough that queries queued behind it
# wait no longer than a slow request would.
DEFAULT_DDL_LOCK_TIMEOUT = "5s"
# A statement that runs longer than this while holding a lock is an outage; vector indexes on
# populated tables belong in CREATE INDEX CONCURRENTLY, which this limit does not cover.
DEFAULT_STATEMENT_TIMEOUT = "5min"

# Often enough that a killed run's build stops within seconds; each check is one system call.
CLIENT_CHECK_INTERVAL = "5s"
# A subtransaction that swallows the refusal of servers that have no such setting (before 14) or
# cannot check (some platforms): they keep working as before.
WATCH_CLIENT = f"""
DO $$ BEGIN
    PERFORM set_config('client_connection_check_interval', '{CLIENT_CHECK_INTERVAL}', false);
EXCEPTION WHEN undefined_object OR invalid_parameter_value THEN NULL;
END $$
"""
# RESET, for the settings this server has: reset_val is what the session started with.
RESET_SQL = text(
    "SELECT set_config(name, reset_val, false) FROM pg_settings WHERE name = ANY(:names)"
)

UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}
DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|min|h)?")


@dataclass(frozen=True)
class Duration:
    """A timeout as PostgreSQL spells it (``5s``) and in seconds; zero means no limit."""

    text: str
    seconds: float


def read(name: str, default: str) -> Duration:
    """The duration in environment variable ``name``, or ``default`` when it is unset or empty."""
    raw = (os.environ.get(name) or default).strip()
    match = DURATION.fullmatch(raw)
    if match is None:
        raise CommandError(
            f"{name}={raw!r} is not a duration; use a number with an optional unit "
            "(500ms, 30s, 5min, 1h; a bare number means seconds), or 0 for no limit"
        )
    unit = match["unit"] or "s"
    return Duration(f"{match['number']}{unit}", float(match["number"]) * UNIT_SECONDS[unit])


def settings() -> dict[str, Duration]:
    """The PostgreSQL settings of a migration session, as configured in the environment."""
    return {
        "lock_timeout": read(DDL_LOCK_TIMEOUT_ENV, DEFAULT_DDL_LOCK_TIMEOUT),
        "statement_timeout": read(STATEMENT_TIMEOUT_ENV, DEFAULT_STATEMENT_TIMEOUT),
    }


def statements() -> list[str]:
    """:func:`settings` as ``SET`` statements, for the session and for ``alembic upgrade --sql``."""
    return [f"SET {name} = '{duration.text}'" for name, duration in settings().items()]


def apply(connection: Connection) -> None:
    """Set :func:`settings` for the rest of ``connection``'s session.

    Call it inside the migration transaction: the values outlast its commit (they are session
    settings, not ``SET LOCAL``), so they also govern what runs after an ``autocommit_block()``.
    The session also watches for its client going away (``CLIENT_CHECK_INTERVAL``).
    """
    for statement in [*statements(), WATCH_CLIENT]:
        connection.exec_driver_sql(statement)


def reset(connection: Connection, names: Iterable[str] | None = None) -> None:
    """Set ``names`` (by default what :func:`apply` sets) back to the session's initial values.

    Call it at the end of the migration transaction: a pooler hands the connection to others.
    """
    names = [*settings(), "client_connection_check_interval"] if names is None else names
    connection.execute(RESET_SQL, {"names": list(names)})


@contextmanager
def lifted() -> Iterator[None]:
    """In a migration, run the block with neither timeout, then set both back: for index builds.

    Use it inside ``autocommit_block()`` around ``CREATE INDEX CONCURRENTLY`` (online and with
    ``--sql``). A concurrent build may take hours and blocks no reads or writes meanwhile. It also
    waits for every transaction older than itself, and PostgreSQL counts those waits against
    ``lock_timeout``: one long report query would make the build fail and leave an INVALID index.
    """
    for name in settings():
        op.execute(f"SET {name} = 0")
    try:
        yield
    finally:
        for statement in statements():
            op.execute(statement)
