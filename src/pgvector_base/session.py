"""The application's engine and session factory, for a web app or a worker.

Create one engine per process at startup and share it; open a session per request or job::

    engine = create_app_engine()
    Session = session_factory(engine)
    with Session() as session:
        ...

The pool's size comes from :class:`EngineSettings`, and can be set per deployment with
``DATABASE_POOL_SIZE`` and ``DATABASE_MAX_OVERFLOW``: processes * (pool_size + max_overflow) must
stay below the server's ``max_connections`` (or, behind a session-mode pooler, its pool size).

The engine works through a transaction-mode pooler (PgBouncer ``pool_mode = transaction``, the
"pooled" endpoints of managed services) because it prepares no statement on the server: each
transaction may run on another server connection, where a prepared statement of this client is
missing or is another client's (see docs/application.md, "Behind a connection pooler").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.engine import URL, Connection, ExceptionContext
from sqlalchemy.orm import Session, sessionmaker

from pgvector_base.database import DatabaseConfigError, resolve_url

POOL_SIZE_ENV = "DATABASE_POOL_SIZE"
MAX_OVERFLOW_ENV = "DATABASE_MAX_OVERFLOW"
PREPARE_THRESHOLD_ENV = "DATABASE_PREPARE_THRESHOLD"
PREPARE_THRESHOLD_PARAMETER = "prepare_threshold"
# PgBouncer's answer to libpq's "options" startup parameter (PGOPTIONS, ?options=), which it
# does not pass on (unless listed in its ignore_startup_parameters).
REFUSED_OPTIONS = "unsupported startup parameter: options"


@dataclass(frozen=True)
class EngineSettings:
    """Connection pool settings for a web app or a worker."""

    pool_size: int = 5
    """Connections kept open per process."""
    max_overflow: int = 10
    """Extra connections opened under load, and closed when they are returned."""
    pool_timeout: int = 30
    """Seconds a request waits for a free connection before it fails."""
    pool_recycle: int = 1800
    """Seconds after which a connection is replaced, before a proxy or firewall drops it as idle."""
    connect_timeout: int = 10
    """Seconds to wait for an unreachable server, instead of the system's minutes-long timeout."""
    driver: str = "psycopg"
    """psycopg 3, whose binary parameters take about a millisecond off each vector search (see
    :mod:`pgvector_base.search`); ``"psycopg2"`` also works. Migrations always use psycopg2."""
    prepare_threshold: int | None = None
    """psycopg 3 prepares a statement on the server once a connection has run it this many
    times; ``None`` never does. Only for a direct connection: through a transaction-mode pooler a
    prepared statement gives errors and other clients' rows."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> EngineSettings:
        """The defaults, with ``DATABASE_POOL_SIZE``, ``DATABASE_MAX_OVERFLOW`` and
        ``DATABASE_PREPARE_THRESHOLD`` if set."""
        values: dict[str, int] = {}
        for field, name in (("pool_size", POOL_SIZE_ENV), ("max_overflow", MAX_OVERFLOW_ENV)):
            raw = environ.get(name, "").strip()
            if raw:
                values[field] = _whole_number(raw, name)
        raw_threshold = environ.get(PREPARE_THRESHOLD_ENV, "")
        return cls(
            pool_size=values.get("pool_size", cls.pool_size),
            max_overflow=values.get("max_overflow", cls.max_overflow),
            prepare_threshold=prepare_threshold(raw_threshold, PREPARE_THRESHOLD_ENV),
        )


def _whole_number(raw: str, name: str) -> int:
    if not raw.isdigit():
        raise DatabaseConfigError(f"{name} must be a whole number, not {raw!r}")
    return int(raw)


def prepare_threshold(raw: str, name: str) -> int | None:
    """Parse a prepare threshold: a whole number, or empty or ``None`` for never."""
    raw = raw.strip()
    if raw.lower() in {"", "none"}:
        return None
    return _whole_number(raw, name)


def create_app_engine(url: URL | None = None, settings: EngineSettings | None = None) -> Engine:
    """An engine for ``url`` (default: :func:`~pgvector_base.database.resolve_url`), web-app pool.

    ``pool_pre_ping`` tests each connection as it is checked out, so a server restart or a dropped
    connection costs one reconnect instead of a failed request. The URL's driver is replaced by
    ``settings.driver``. A ``?prepare_threshold=`` in the URL overrides
    ``settings.prepare_threshold``. A pooler that refuses the connection's options (PgBouncer
    refuses ``PGOPTIONS``) raises :class:`~pgvector_base.database.DatabaseConfigError` saying
    where to set them instead.
    """
    settings = settings or EngineSettings.from_env()
    url = url or resolve_url()
    threshold = settings.prepare_threshold
    if PREPARE_THRESHOLD_PARAMETER in url.query:
        raw = url.query[PREPARE_THRESHOLD_PARAMETER]
        name = f"?{PREPARE_THRESHOLD_PARAMETER}= in the database URL"
        threshold = prepare_threshold(raw if isinstance(raw, str) else raw[-1], name)
        url = url.difference_update_query([PREPARE_THRESHOLD_PARAMETER])
    connect_args: dict[str, object] = {"connect_timeout": settings.connect_timeout}
    if settings.driver == "psycopg":
        connect_args["prepare_threshold"] = threshold
    engine = create_engine(
        url.set(drivername=f"postgresql+{settings.driver}"),
        pool_pre_ping=True,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_recycle=settings.pool_recycle,
        connect_args=connect_args,
    )
    event.listen(engine, "handle_error", _refused_options)
    return engine


def _refused_options(context: ExceptionContext) -> None:
    """Turn a pooler's refusal of the ``options`` startup parameter into one clear line."""
    error = context.original_exception
    if context.connection is None and REFUSED_OPTIONS in str(error):
        raise DatabaseConfigError(
            "the connection pooler refuses the connection's options (PGOPTIONS, or ?options= in "
            "the database URL): set them on the role or database instead, e.g. "
            "ALTER ROLE app SET client_connection_check_interval = '10s'"
        ) from None


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``.

    ``expire_on_commit=False`` keeps loaded objects readable after the commit that ends a request,
    for example while a response is rendered from them.
    """
    return sessionmaker(engine, expire_on_commit=False)


def set_local(executor: Session | Connection, settings: Mapping[str, str]) -> None:
    """Apply ``settings`` until the current transaction ends, like ``SET LOCAL``.

    ``set_config(name, value, true)`` takes the name and value as bound parameters, where ``SET``
    would need them spliced into the SQL. A transaction-local setting cannot outlive the
    transaction, so it never reaches the next user of a pooled connection.
    """
    if settings:
        executor.execute(
            select(*(func.set_config(name, value, True) for name, value in settings.items()))
        )
