"""A gate that holds a migration inside its transaction while a test acts on it.

The gate is an advisory lock that the test holds (:func:`gate_closed`): a migration statement
(:data:`WAIT_AT_THE_GATE`) polls it and ends once the test releases it, so a test can act while
the server runs that statement, however slowly either side starts. :data:`AT_THE_GATE` finds the
waiting statement in ``pg_stat_activity``; :func:`poll` waits for such observable state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

T = TypeVar("T")

GATE_KEY = 7_000_001
WAIT_LIMIT = 60.0
CREATE_WIDGET = 'op.create_table("widget", sa.Column("id", sa.BigInteger(), primary_key=True))'
# Advisory locks are per database; pg_locks shows a small key as objid, with classid 0.
WAIT_AT_THE_GATE = f"""
    DO $$ BEGIN
        WHILE EXISTS (
            SELECT FROM pg_locks
            WHERE locktype = 'advisory' AND granted AND classid = 0 AND objid = {GATE_KEY}
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        ) LOOP
            PERFORM pg_sleep(0.05);
        END LOOP;
    END $$
    """
# Adds a column to ``widget``, waits at the gate, then creates ``audit``.
SLOW_MIGRATION = f'''
op.add_column("widget", sa.Column("sku", sa.Text()))
op.execute(
    """{WAIT_AT_THE_GATE}"""
)
op.create_table("audit", sa.Column("id", sa.BigInteger(), primary_key=True))
'''
AT_THE_GATE = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND ltrim(query, E' \\n') LIKE 'DO $$%' AND state = 'active'"
)


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


def wait_at_the_gate(url: URL, what: str) -> object:
    """Wait until a statement waits at the gate; its server process's pid."""
    return poll(lambda: first_value(url, AT_THE_GATE), what)


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
