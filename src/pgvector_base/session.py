"""The application's engine and session factory, for a web app or a worker.

Create one engine per process at startup and share it; open a session per request or job::

    engine = create_app_engine()
    Session = session_factory(engine)
    with Session() as session:
        ...

The pool's size comes from :class:`EngineSettings`, and can be set per deployment with
``DATABASE_POOL_SIZE`` and ``DATABASE_MAX_OVERFLOW``: processes * (pool_size + max_overflow) must
stay below the server's ``max_connections``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.engine import URL, Connection
from sqlalchemy.orm import Session, sessionmaker

from pgvector_base.database import DatabaseConfigError, resolve_url

POOL_SIZE_ENV = "DATABASE_POOL_SIZE"
MAX_OVERFLOW_ENV = "DATABASE_MAX_OVERFLOW"


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
    """psycopg 3, whose binary parameters and prepared statements take about a millisecond off
    each vector search (see :mod:`pgvector_base.search`); ``"psycopg2"`` also works. Migrations
    always use psycopg2."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> EngineSettings:
        """The defaults, with ``DATABASE_POOL_SIZE`` and ``DATABASE_MAX_OVERFLOW`` if set."""
        values: dict[str, int] = {}
        for field, name in (("pool_size", POOL_SIZE_ENV), ("max_overflow", MAX_OVERFLOW_ENV)):
            raw = environ.get(name, "").strip()
            if raw:
                if not raw.isdigit():
                    raise DatabaseConfigError(f"{name} must be a whole number, not {raw!r}")
                values[field] = int(raw)
        return cls(
            pool_size=values.get("pool_size", cls.pool_size),
            max_overflow=values.get("max_overflow", cls.max_overflow),
        )


def create_app_engine(url: URL | None = None, settings: EngineSettings | None = None) -> Engine:
    """An engine for ``url`` (default: :func:`~pgvector_base.database.resolve_url`), web-app pool.

    ``pool_pre_ping`` tests each connection as it is checked out, so a server restart or a dropped
    connection costs one reconnect instead of a failed request. The URL's driver is replaced by
    ``settings.driver``.
    """
    settings = settings or EngineSettings.from_env()
    return create_engine(
        (url or resolve_url()).set(drivername=f"postgresql+{settings.driver}"),
        pool_pre_ping=True,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_recycle=settings.pool_recycle,
        connect_args={"connect_timeout": settings.connect_timeout},
    )


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
