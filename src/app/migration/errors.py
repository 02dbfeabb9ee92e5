"""Expected failures of a migration run, each turned into one line: what failed, where, what to do.

Alembic prints a :class:`~alembic.util.CommandError` as a single ``FAILED: ...`` line with no
traceback, so each known failure is re-raised as one. Messages are built from the URL with its
password masked, never from the raw connection string. Anything unexpected keeps its traceback.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

from alembic.util import CommandError
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from app.database import DatabaseConfigError
from app.migration import timeouts

# SQLSTATE codes, see https://www.postgresql.org/docs/current/errcodes-appendix.html
INVALID_PASSWORD = "28P01"
INVALID_AUTHORIZATION = "28000"
INVALID_CATALOG_NAME = "3D000"
INSUFFICIENT_PRIVILEGE = "42501"
FEATURE_NOT_SUPPORTED = "0A000"
UNDEFINED_FILE = "58P01"
DATA_EXCEPTION = "22000"
STRING_DATA_LENGTH_MISMATCH = "22026"
LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"

# pgvector's complaint about a vector of the wrong size, and PostgreSQL's about a bit string.
DIMENSION_MISMATCH = re.compile(
    r"expected \d+ dimensions, not \d+|bit string length \d+ does not match type bit\(\d+\)"
)
ALTER_COLUMN_TYPE = re.compile(
    r"ALTER TABLE (?P<table>\S+) ALTER COLUMN (?P<column>\S+) TYPE (?P<type>[^\s;]+)", re.IGNORECASE
)


@contextmanager
def reported(url: URL | None = None) -> Iterator[None]:
    """Re-raise expected failures inside the block as a one-line ``CommandError`` about ``url``."""
    try:
        yield
    except DatabaseConfigError as error:
        raise CommandError(str(error)) from None
    except DBAPIError as error:
        message = describe(error, url)
        if message is None:
            raise
        raise CommandError(message) from None


def describe(error: DBAPIError, url: URL | None) -> str | None:
    """Explain ``error`` in one line, or return ``None`` if it is not an expected failure."""
    code = getattr(error.orig, "pgcode", None)
    text = str(error.orig)
    where = location(url)
    user = url.username if url is not None else "?"
    database = url.database if url is not None else "?"
    if code in {INVALID_PASSWORD, INVALID_AUTHORIZATION} or "authentication failed" in text:
        return (
            f"PostgreSQL at {where} rejected user '{user}' (authentication failed); "
            "check the user and password in DATABASE_URL"
        )
    if code == INVALID_CATALOG_NAME or (
        "database" in text and "does not exist" in text and code is None
    ):
        return (
            f"database '{database}' does not exist on PostgreSQL at {where}; "
            f'create it (CREATE DATABASE "{database}") or fix the name in DATABASE_URL'
        )
    if "vector" in text and (code in {FEATURE_NOT_SUPPORTED, UNDEFINED_FILE}):
        return (
            f"PostgreSQL at {where} has no pgvector extension to install; use the compose image "
            "(docker compose up -d db), the embedded default (unset DATABASE_URL), "
            "or install pgvector on that server"
        )
    if code == INSUFFICIENT_PRIVILEGE and "extension" in text:
        return (
            f"user '{user}' may not create the vector extension in database '{database}' "
            f"at {where}; have a superuser run CREATE EXTENSION vector; in that database once"
        )
    if code is None and error.connection_invalidated is False and is_unreachable(text):
        return (
            f"cannot connect to PostgreSQL at {where} (database '{database}'): {first_line(text)}; "
            "is the server running? (docker compose up -d db, "
            "or unset DATABASE_URL for the embedded server)"
        )
    return timed_out(code, text, error.statement) or dimension_mismatch(code, text, error.statement)


def dimension_mismatch(code: str | None, text: str, statement: str | None) -> str | None:
    """Explain a column type change that stored rows of another dimension cannot follow.

    Returns ``None`` when the error is about something else.
    """
    mismatch = DIMENSION_MISMATCH.search(text)
    if code not in {DATA_EXCEPTION, STRING_DATA_LENGTH_MISMATCH} or mismatch is None:
        return None
    change = ALTER_COLUMN_TYPE.search(statement or "")
    what = (
        f"{change['table']}.{change['column']} to {change['type']}"
        if change
        else "the vector column's type"
    )
    return (
        f"cannot change {what}: rows already stored do not fit ({mismatch.group()}); "
        "the migration was rolled back. Embeddings of another size need a new column, "
        'see the README, "Changing an embedding\'s dimensions"'
    )


def timed_out(code: str | None, text: str, statement: str | None) -> str | None:
    """Explain a statement that ``lock_timeout`` or ``statement_timeout`` canceled.

    Returns ``None`` when the error is about something else, or a cancellation with another cause
    (``pg_cancel_backend``).
    """
    if code not in {LOCK_NOT_AVAILABLE, QUERY_CANCELED}:
        return None
    running = f" ({shorten(statement)})" if statement else ""
    if "lock timeout" in text:
        limit = timeouts.settings()["lock_timeout"].text
        return (
            f"a migration statement{running} waited over {limit} for a lock held by another "
            "session (a long query or an open transaction; pg_locks shows it) and was canceled, "
            "and the migration was rolled back; retry when that session is done, "
            f"or raise {timeouts.DDL_LOCK_TIMEOUT_ENV}"
        )
    if "statement timeout" in text:
        limit = timeouts.settings()["statement_timeout"].text
        return (
            f"a migration statement{running} ran for over {limit} and was canceled, and the "
            f"migration was rolled back; raise {timeouts.STATEMENT_TIMEOUT_ENV} for this run "
            "(0 for no limit), or build vector indexes on populated tables concurrently"
        )
    return None


def shorten(statement: str) -> str:
    """The start of ``statement`` on one line, enough to recognise it."""
    return textwrap.shorten(" ".join(statement.split()), width=80, placeholder=" ...")


def location(url: URL | None) -> str:
    """``host:port`` of ``url``, or the socket directory for a local (unix socket) connection."""
    if url is None:
        return "the configured server"
    socket_dir = url.query.get("host")
    if url.host is None and socket_dir:
        return f"socket {socket_dir if isinstance(socket_dir, str) else socket_dir[0]}"
    return f"{url.host or 'localhost'}:{url.port or 5432}"


UNREACHABLE_MARKERS = (
    "connection refused",
    "could not translate host name",
    "timeout expired",
    "no route to host",
    "network is unreachable",
    "no such file or directory",
    "name or service not known",
    "could not connect to server",
)


def is_unreachable(text: str) -> bool:
    """Whether a driver message says the server could not be reached at all."""
    lowered = text.lower()
    return any(marker in lowered for marker in UNREACHABLE_MARKERS)


def first_line(text: str) -> str:
    """The driver's reason, stripped of the host/port prefix psycopg2 repeats on every line."""
    reason = text.strip().splitlines()[0] if text.strip() else "no reason given"
    return reason.rsplit(" failed: ", 1)[-1]
