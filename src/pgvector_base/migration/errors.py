"""Expected failures of a migration run, each turned into one line: what failed, where, what to do.

Alembic prints a :class:`~alembic.util.CommandError` as a single ``FAILED: ...`` line with no
traceback, so each known failure is re-raised as one. Messages are built from the URL with its
password masked, never from the raw connection string, and the driver's own words are quoted only
with every password of the URL masked. Anything unexpected keeps its traceback.
"""

from __future__ import annotations

import configparser
import re
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import takewhile

from alembic.util import CommandError
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from pgvector_base.database import (
    REFUSED_OPTIONS,
    REFUSED_OPTIONS_ADVICE,
    DatabaseConfigError,
    scrub,
    sqlstate,
)
from pgvector_base.migration import timeouts

# SQLSTATE codes, see https://www.postgresql.org/docs/current/errcodes-appendix.html
INVALID_PASSWORD = "28P01"
INVALID_AUTHORIZATION = "28000"
INVALID_CATALOG_NAME = "3D000"
INSUFFICIENT_PRIVILEGE = "42501"
INVALID_SCHEMA_NAME = "3F000"
FEATURE_NOT_SUPPORTED = "0A000"
UNDEFINED_FILE = "58P01"
DATA_EXCEPTION = "22000"
STRING_DATA_LENGTH_MISMATCH = "22026"
LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"
DISK_FULL = "53100"
DEPENDENT_OBJECTS_STILL_EXIST = "2BP01"
NOT_NULL_VIOLATION = "23502"

# pgvector's complaint about a vector of the wrong size, and PostgreSQL's about a bit string.
DIMENSION_MISMATCH = re.compile(
    r"expected \d+ dimensions, not \d+|bit string length \d+ does not match type bit\(\d+\)"
)
ALTER_COLUMN_TYPE = re.compile(
    r"ALTER TABLE (?P<table>\S+) ALTER COLUMN (?P<column>\S+) TYPE (?P<type>[^\s;]+)", re.IGNORECASE
)


NOT_NULL_DDL = re.compile(
    r"ALTER TABLE (?P<table>\S+) "
    r"(?:ADD COLUMN (?P<added>\S+)|ALTER COLUMN (?P<altered>\S+) SET NOT NULL)",
    re.IGNORECASE,
)
INTERRUPTED = (
    "interrupted (Ctrl-C); the migration's open transaction was rolled back; "
    "`alembic current` shows the revision the database is at: run the command again to go on"
)


@contextmanager
def reported(url: URL | None = None) -> Iterator[None]:
    """Re-raise expected failures inside the block as a one-line ``CommandError`` about ``url``.

    Ctrl-C is one of them: by the time it gets here, leaving the block has rolled back the
    transaction it interrupted.
    """
    try:
        yield
    except DatabaseConfigError as error:
        raise CommandError(str(error)) from None
    except configparser.InterpolationError as error:
        # configparser's own message quotes the value: the URL and its password.
        raise CommandError(
            f"{error.option} in alembic.ini has a '%' that configparser cannot read; "
            "write each % as %% (a password's %40 as %%40), or set DATABASE_URL instead"
        ) from None
    except KeyboardInterrupt:
        raise CommandError(INTERRUPTED) from None
    except DBAPIError as error:
        message = describe(error, url)
        if message is None:
            raise
        raise CommandError(message) from None


def describe(error: DBAPIError, url: URL | None) -> str | None:
    """Explain ``error`` in one line, or return ``None`` if it is not an expected failure."""
    failure = Failure(
        code=sqlstate(error.orig),
        text=scrub(str(error.orig), url),
        statement=error.statement,
        where=location(url),
        # libpq also takes the user from the query (?user=app).
        user=(url.username or first_value(url.query.get("user"))) if url is not None else "?",
        database=url.database if url is not None else "?",
    )
    for explain in EXPLANATIONS:
        message = explain(failure)
        if message is not None:
            return message
    return None


@dataclass(frozen=True)
class Failure:
    """What an explanation needs to know of a failed statement: no password among it."""

    code: str | None
    text: str
    statement: str | None
    where: str
    user: str | None
    database: str | None


def authentication_failed(failure: Failure) -> str | None:
    """Wrong user or password."""
    if failure.code not in {INVALID_PASSWORD, INVALID_AUTHORIZATION} and (
        "authentication failed" not in failure.text
    ):
        return None
    return (
        f"PostgreSQL at {failure.where} rejected user '{failure.user}' (authentication failed); "
        "check the user and password in DATABASE_URL"
    )


def database_missing(failure: Failure) -> str | None:
    """The URL names a database the server does not have."""
    if failure.code != INVALID_CATALOG_NAME and not (
        failure.code is None and re.search(r'database ".*" does not exist', failure.text)
    ):
        return None
    return (
        f"database '{failure.database}' does not exist on PostgreSQL at {failure.where}; "
        f'create it (CREATE DATABASE "{failure.database}") or fix the name in DATABASE_URL'
    )


def pgvector_missing(failure: Failure) -> str | None:
    """The server has no pgvector to create the extension from."""
    if failure.code not in {FEATURE_NOT_SUPPORTED, UNDEFINED_FILE} or "vector" not in failure.text:
        return None
    return (
        f"PostgreSQL at {failure.where} has no pgvector extension to install; use the compose "
        "image (docker compose up -d db), the embedded default (unset DATABASE_URL), "
        "or install pgvector on that server"
    )


def extension_not_allowed(failure: Failure) -> str | None:
    """The role may not create the extension."""
    if failure.code != INSUFFICIENT_PRIVILEGE or "extension" not in failure.text:
        return None
    return (
        f"user '{failure.user}' may not create the vector extension in database "
        f"'{failure.database}' at {failure.where}; have a superuser run CREATE EXTENSION vector; "
        "in that database once"
    )


def pgai_missing(failure: Failure) -> str | None:
    """A migration calls pgai's functions before ``pgai-install`` has created them."""
    if failure.code != INVALID_SCHEMA_NAME or 'schema "ai"' not in failure.text:
        return None
    return (
        f"database '{failure.database}' at {failure.where} has no pgai library (schema ai); "
        "run `poetry run pgai-install` once, then migrate again"
    )


def unreachable(failure: Failure) -> str | None:
    """Nothing answers at the host and port (or socket) of the URL."""
    if failure.code is not None or not is_unreachable(failure.text):
        return None
    return (
        f"cannot connect to PostgreSQL at {failure.where} (database '{failure.database}'): "
        f"{first_line(failure.text)}; is the server running? (docker compose up -d db, "
        "or unset DATABASE_URL for the embedded server)"
    )


def options_refused(failure: Failure) -> str | None:
    """A pooler (PgBouncer) refuses the ``options`` startup parameter that ``PGOPTIONS`` sets."""
    if REFUSED_OPTIONS not in failure.text:
        return None
    return f"cannot connect to PostgreSQL at {failure.where}: {REFUSED_OPTIONS_ADVICE}"


def connection_failed(failure: Failure) -> str | None:
    """Any other failure to connect: libpq refused an option (``sslmode=require`` on a server
    without SSL, a port out of range in the query, an unknown option) before any statement ran."""
    if failure.code is not None or failure.statement is not None:
        return None
    return (
        f"cannot connect to PostgreSQL at {failure.where} (database '{failure.database}'): "
        f"{first_line(failure.text)}; check the host, port and options (such as sslmode) "
        "in DATABASE_URL"
    )


def dependent_objects(failure: Failure) -> str | None:
    """A ``DROP`` (a downgrade's ``DROP SCHEMA``, say) that objects outside the migrations need.

    PostgreSQL's ``DETAIL`` names them; ``CASCADE`` is not suggested, as it drops them too.
    """
    if failure.code != DEPENDENT_OBJECTS_STILL_EXIST:
        return None
    first, *rest = failure.text.strip().splitlines()
    # DETAIL lists one object a line; HINT, which follows it, suggests CASCADE.
    details = takewhile(lambda line: not line.startswith(("HINT:", "CONTEXT:")), rest)
    named = "; ".join(line.removeprefix("DETAIL:").strip() for line in details)
    found = f" ({shorten(named)})" if named else ""
    return (
        f"{first}{found}; the migration was rolled back. Those objects are not this "
        "migration's: move or drop them yourself if they may go, then run it again"
    )


def dimension_mismatch(failure: Failure) -> str | None:
    """A column type change that stored rows of another dimension cannot follow."""
    mismatch = DIMENSION_MISMATCH.search(failure.text)
    if failure.code not in {DATA_EXCEPTION, STRING_DATA_LENGTH_MISMATCH} or mismatch is None:
        return None
    change = ALTER_COLUMN_TYPE.search(failure.statement or "")
    what = (
        f"{change['table']}.{change['column']} to {change['type']}"
        if change
        else "the vector column's type"
    )
    return (
        f"cannot change {what}: rows already stored do not fit ({mismatch.group()}); "
        "the migration was rolled back. Embeddings of another size need a new column beside "
        "this one, filled by pgvector-backfill: see docs/embedding-models.md"
    )


def not_null_refused(failure: Failure) -> str | None:
    """A column added, or declared, ``NOT NULL`` on a table whose rows have no value for it.

    The downgrade of a dropped column is the usual case: it adds the column back as the model had
    it, but its values are gone.
    """
    ddl = NOT_NULL_DDL.search(failure.statement or "")
    if failure.code != NOT_NULL_VIOLATION or ddl is None:
        return None
    column = ddl["added"] or ddl["altered"]
    return (
        f"cannot make {ddl['table']}.{column} NOT NULL: rows already stored have no value in it; "
        "the migration was rolled back. Add the column nullable, fill it, then declare it NOT "
        "NULL; a downgrade that adds back a dropped column cannot bring its values back: make "
        "that add_column nullable=True"
    )


def timed_out(failure: Failure) -> str | None:
    """A statement that ``lock_timeout`` or ``statement_timeout`` canceled.

    A cancellation with another cause (``pg_cancel_backend``) is not explained.
    """
    if failure.code not in {LOCK_NOT_AVAILABLE, QUERY_CANCELED}:
        return None
    running = f" ({shorten(failure.statement)})" if failure.statement else ""
    if "lock timeout" in failure.text:
        limit = timeouts.settings()["lock_timeout"].text
        return (
            f"a migration statement{running} waited over {limit} for a lock held by another "
            "session (a long query or an open transaction; pg_locks shows it) and was canceled, "
            "and the migration was rolled back; retry when that session is done, "
            f"or raise {timeouts.DDL_LOCK_TIMEOUT_ENV}"
        )
    if "statement timeout" in failure.text:
        limit = timeouts.settings()["statement_timeout"].text
        return (
            f"a migration statement{running} ran for over {limit} and was canceled, and the "
            f"migration was rolled back; raise {timeouts.STATEMENT_TIMEOUT_ENV} for this run "
            "(0 for no limit), or build vector indexes on populated tables concurrently"
        )
    return None


def shared_memory_exhausted(failure: Failure) -> str | None:
    """A parallel index build asked for more shared memory than the server's ``/dev/shm`` has.

    A parallel HNSW build allocates all of ``maintenance_work_mem`` as shared memory, and Docker
    gives a container 64 MB of it unless ``shm_size`` says otherwise.
    """
    if failure.code != DISK_FULL or "shared memory" not in failure.text:
        return None
    return (
        f"PostgreSQL at {failure.where} ran out of shared memory (/dev/shm) during a parallel "
        "index build, which takes all of maintenance_work_mem; use less (48MB: "
        "MIGRATION_MAINTENANCE_WORK_MEM for migrations, BuildSettings for loads), build without "
        "parallel workers (max_parallel_maintenance_workers = 0), or give the server a larger "
        "/dev/shm (shm_size in docker-compose.yaml)"
    )


EXPLANATIONS: tuple[Callable[[Failure], str | None], ...] = (
    authentication_failed,
    database_missing,
    pgvector_missing,
    extension_not_allowed,
    pgai_missing,
    unreachable,
    options_refused,
    connection_failed,
    dependent_objects,
    dimension_mismatch,
    not_null_refused,
    timed_out,
    shared_memory_exhausted,
)


def shorten(statement: str) -> str:
    """The start of ``statement`` on one line, enough to recognise it."""
    return textwrap.shorten(" ".join(statement.split()), width=80, placeholder=" ...")


def location(url: URL | None) -> str:
    """``host:port`` of ``url``, or the socket directory for a local (unix socket) connection.

    libpq takes both from the query too (``?host=/run/postgresql``, ``?host=db&port=5433``).
    """
    if url is None:
        return "the configured server"
    host = url.host or first_value(url.query.get("host"))
    if host is not None and host.startswith("/"):
        return f"socket {host}"
    return f"{host or 'localhost'}:{url.port or first_value(url.query.get('port')) or 5432}"


def first_value(value: str | tuple[str, ...] | None) -> str | None:
    """The first of a URL query's values for one key (a key may be given more than once)."""
    return value if value is None or isinstance(value, str) else value[0]


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
