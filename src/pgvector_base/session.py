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

Async services get the same engine and sessions from :func:`create_async_app_engine` and
:func:`async_session_factory`. Read replicas (``DATABASE_REPLICA_URLS``) serve the reads marked
with :data:`READ_REPLICA`; everything else goes to the primary (docs/application.md, "Read
replicas").
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import select as sockets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.engine import URL, Connection, Dialect, ExceptionContext
from sqlalchemy.exc import InvalidatePoolError, InvalidRequestError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.dml import UpdateBase

# Not in SQLAlchemy's documented API, but what its own await_ checks to raise MissingGreenlet.
from sqlalchemy.util.concurrency import in_greenlet

from pgvector_base.database import (
    REFUSED_OPTIONS,
    REFUSED_OPTIONS_ADVICE,
    DatabaseConfigError,
    display,
    parse_url,
    resolve_url,
    scrub,
)

logger = logging.getLogger(__name__)

POOL_SIZE_ENV = "DATABASE_POOL_SIZE"
MAX_OVERFLOW_ENV = "DATABASE_MAX_OVERFLOW"
PREPARE_THRESHOLD_ENV = "DATABASE_PREPARE_THRESHOLD"
PREPARE_THRESHOLD_PARAMETER = "prepare_threshold"
REPLICA_URLS_ENV = "DATABASE_REPLICA_URLS"
REPLICA_OPTION = "replica"
READ_REPLICA: Mapping[str, bool] = MappingProxyType({REPLICA_OPTION: True})
"""Execution options that let a replica serve a read, as in
``select(...).execution_options(**READ_REPLICA)``. Only reads marked so go to a replica, and only
in a session that has not written."""
REPLICA_RETRY_SECONDS = 30.0
"""How long a replica that failed to connect is left out before reads try it again."""
# One comma with any whitespace around it, or whitespace alone (newlines too).
_REPLICA_URL_SEPARATOR = re.compile(r"\s*,\s*|\s+")
_SEPARATE = "separate the URLs with commas, spaces or newlines"
# Keys of Session.info.
_PRIMARY_ONLY = "pgvector_base.read_from_primary"


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


def replica_urls(environ: Mapping[str, str] = os.environ) -> list[URL]:
    """The read replicas' URLs from ``DATABASE_REPLICA_URLS`` (none if unset).

    The URLs are separated by commas, whitespace or both, so that one a line (a YAML block
    scalar) works. Each is checked like ``DATABASE_URL``, and no message quotes one: a comma or a
    space in a password must be URL-encoded (``%2C``, ``%20``).
    """
    raw = environ.get(REPLICA_URLS_ENV, "")
    if not raw.strip():
        return []
    parts = _REPLICA_URL_SEPARATOR.split(raw.strip())
    if "" in parts:
        raise DatabaseConfigError(
            f"{REPLICA_URLS_ENV} has an empty entry; {_SEPARATE} (URL-encode a comma in a "
            "password as %2C)"
        )
    for number, part in enumerate(parts, start=1):
        # Another separator (';', '|') leaves two URLs in one entry; a raw space in a password
        # leaves its tail as an entry without a scheme.
        schemes = part.count("://")
        if schemes > 1:
            raise DatabaseConfigError(
                f"{REPLICA_URLS_ENV} (URL {number}) holds more than one URL; {_SEPARATE}"
            )
        if schemes == 0:
            raise DatabaseConfigError(
                f"{REPLICA_URLS_ENV} (URL {number}) is no URL of its own; {_SEPARATE}, so "
                "URL-encode a space or comma in a password (%20, %2C)"
            )
    return [
        parse_url(part, f"{REPLICA_URLS_ENV} (URL {number})")
        for number, part in enumerate(parts, start=1)
    ]


def _engine_arguments(url: URL, settings: EngineSettings) -> tuple[URL, dict[str, Any]]:
    """The URL (with ``settings.driver``) and keyword arguments shared by the sync and async
    engines."""
    threshold = settings.prepare_threshold
    if PREPARE_THRESHOLD_PARAMETER in url.query:
        raw = url.query[PREPARE_THRESHOLD_PARAMETER]
        name = f"?{PREPARE_THRESHOLD_PARAMETER}= in the database URL"
        threshold = prepare_threshold(raw if isinstance(raw, str) else raw[-1], name)
        url = url.difference_update_query([PREPARE_THRESHOLD_PARAMETER])
    connect_args: dict[str, object] = {"connect_timeout": settings.connect_timeout}
    if settings.driver == "psycopg":
        connect_args["prepare_threshold"] = threshold
    return url.set(drivername=f"postgresql+{settings.driver}"), {
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_timeout": settings.pool_timeout,
        "pool_recycle": settings.pool_recycle,
        "connect_args": connect_args,
    }


def create_app_engine(url: URL | None = None, settings: EngineSettings | None = None) -> Engine:
    """An engine for ``url`` (default: :func:`~pgvector_base.database.resolve_url`), web-app pool.

    A connection is tested as it is checked out (:func:`_check_on_checkout`), so a server restart
    or a connection the server ended costs one reconnect instead of a failed request. The URL's
    driver is replaced by ``settings.driver``. A ``?prepare_threshold=`` in the URL overrides
    ``settings.prepare_threshold``. A pooler that refuses the connection's options (PgBouncer
    refuses ``PGOPTIONS``) raises :class:`~pgvector_base.database.DatabaseConfigError` saying
    where to set them instead.
    """
    return _sync_engine(url, settings, ping=False)


def create_async_app_engine(
    url: URL | None = None, settings: EngineSettings | None = None
) -> AsyncEngine:
    """:func:`create_app_engine`'s engine for asyncio: the same URL, pool and pooler settings, on
    psycopg 3's async API.

    A ``settings.driver`` other than ``"psycopg"`` raises
    :class:`~pgvector_base.database.DatabaseConfigError`: psycopg2 has no async API.
    """
    return _async_engine(url, settings, ping=False)


def create_replica_engines(
    urls: Sequence[URL] | None = None, settings: EngineSettings | None = None
) -> list[Engine]:
    """An engine per read replica (default: :func:`replica_urls`), with the primary's settings.

    Their connections are pinged at every checkout (SQLAlchemy's ``pool_pre_ping``): a promoted
    replica reports that it has left recovery only in answer to a statement, and the ping's
    answer is what :class:`ReadReplicas` reads before a marked read could reach it.
    """
    return [
        _sync_engine(url, settings, ping=True) for url in (replica_urls() if urls is None else urls)
    ]


def create_async_replica_engines(
    urls: Sequence[URL] | None = None, settings: EngineSettings | None = None
) -> list[AsyncEngine]:
    """:func:`create_replica_engines` for asyncio."""
    return [
        _async_engine(url, settings, ping=True)
        for url in (replica_urls() if urls is None else urls)
    ]


def _sync_engine(url: URL | None, settings: EngineSettings | None, *, ping: bool) -> Engine:
    settings = settings or EngineSettings.from_env()
    target, arguments = _engine_arguments(url or resolve_url(), settings)
    engine = create_engine(target, pool_pre_ping=ping, **arguments)
    _listen(engine)
    return engine


def _async_engine(url: URL | None, settings: EngineSettings | None, *, ping: bool) -> AsyncEngine:
    settings = settings or EngineSettings.from_env()
    if settings.driver != "psycopg":
        raise DatabaseConfigError(
            f"the async engine needs the psycopg driver, not {settings.driver!r}; "
            "use EngineSettings(driver='psycopg')"
        )
    target, arguments = _engine_arguments(url or resolve_url(), settings)
    engine = create_async_engine(target, pool_pre_ping=ping, **arguments)
    _listen(engine.sync_engine)
    return engine


def _listen(engine: Engine) -> None:
    event.listen(engine, "handle_error", _refused_options)
    event.listen(engine, "checkout", partial(_check_on_checkout, engine.dialect))


def _check_on_checkout(
    dialect: Dialect, dbapi_connection: Any, record: ConnectionPoolEntry, _: object
) -> None:
    """Ping a pooled connection at checkout only if the server has sent it something since the
    last request: SQLAlchemy's ``pool_pre_ping`` would cost every request a round trip.

    A server that restarts, or ends a connection (``pg_terminate_backend``,
    ``idle_session_timeout``), sends an error and closes the socket, which then reads as ready;
    an idle connection of a live server has nothing to read. The ping then finds out what it was
    (a notification is harmless), and a dead connection invalidates the pool as a failed
    pre-ping does, so that the request reconnects instead of failing.
    """
    if not _readable(record.driver_connection.fileno()):  # type: ignore[union-attr]
        return
    try:
        dialect.do_ping(dbapi_connection)
    except Exception as error:
        if dialect.is_disconnect(error, dbapi_connection, None):  # type: ignore[arg-type]
            raise InvalidatePoolError(f"the server ended the connection: {error}") from None
        raise


def _readable(fileno: int) -> bool:
    """Whether the socket has data (or its end) to read, without waiting."""
    if not hasattr(sockets, "poll"):  # Windows
        return bool(sockets.select([fileno], [], [], 0)[0])
    poller = sockets.poll()
    poller.register(fileno, sockets.POLLIN)
    return bool(poller.poll(0))


def _refused_options(context: ExceptionContext) -> None:
    """Turn a pooler's refusal of the ``options`` startup parameter into one clear line."""
    error = context.original_exception
    if context.connection is None and REFUSED_OPTIONS in str(error):
        raise DatabaseConfigError(REFUSED_OPTIONS_ADVICE) from None


class NotAReplicaError(OperationalError):
    """The server behind a replica URL is out of recovery: a promoted replica, or a primary."""


NOT_A_REPLICA = (
    "the server is no longer in recovery (promoted, or a primary behind a replica URL); point "
    f"{REPLICA_URLS_ENV} at the current replicas"
)


def _refuse_a_primary(_: Any, record: ConnectionPoolEntry, __: Any) -> None:
    """A pool ``checkout`` listener: refuse a connection whose server is not in recovery.

    PostgreSQL 14+ reports ``in_hot_standby`` when a connection opens, and again after the first
    statement once the server is promoted (here, the pre-ping of the engines
    :func:`create_replica_engines` makes): reading it costs no round trip. A server or pooler that
    reports nothing is taken for a replica.
    """
    connection = record.driver_connection  # psycopg's or psycopg2's, also under the async engine
    if connection is not None and connection.info.parameter_status("in_hot_standby") == "off":
        raise NotAReplicaError(None, None, Exception(NOT_A_REPLICA))


class ReadReplicas:
    """The replica engines of one primary, taken in turn.

    A replica that fails to connect, or whose server is out of recovery (checked at each checkout
    of its connections, without a round trip), is out: skipped, and tried again after
    ``retry_after`` seconds. Each outage gets one log line, however many reads meet it, and one
    more when a read reaches the replica again.
    """

    def __init__(self, engines: Sequence[Engine], retry_after: float = REPLICA_RETRY_SECONDS):
        self.engines = tuple(engines)
        self.retry_after = retry_after
        self._turn = itertools.count()
        self._skipped_until: dict[Engine, float] = {}
        self._out: set[Engine] = set()
        self._lock = threading.Lock()
        for engine in self.engines:
            # Listening twice with the same function keeps one listener: engines may be shared.
            event.listen(engine, "checkout", _refuse_a_primary)

    def in_turn(self, first: Engine | None = None) -> list[Engine]:
        """The replicas not being skipped: ``first``, then from the next one's turn."""
        if not self.engines:
            return []
        start = next(self._turn) % len(self.engines)
        ordered = ([first] if first else []) + [
            engine for engine in self.engines[start:] + self.engines[:start] if engine is not first
        ]
        now = time.monotonic()
        with self._lock:
            return [engine for engine in ordered if self._skipped_until.get(engine, 0.0) <= now]

    def skip(self, engine: Engine, error: OperationalError) -> None:
        """Leave ``engine`` out for ``retry_after`` seconds; if it was in, say why in one line."""
        with self._lock:
            self._skipped_until[engine] = time.monotonic() + self.retry_after
            if engine in self._out:
                return
            self._out.add(engine)
        reason = scrub(str(error.orig).strip().splitlines()[0], engine.url)
        logger.warning(
            "Read replica %s is out, its reads go elsewhere until it is back "
            "(tried again after %gs): %s",
            display(engine.url),
            self.retry_after,
            reason,
        )

    def reached(self, engine: Engine) -> None:
        """Note that a read reached ``engine``; if it was out, say that it is back."""
        if engine not in self._out:  # the usual case, decided without the lock
            return
        with self._lock:
            if engine not in self._out:
                return
            self._out.discard(engine)
        # A warning like the line that said it was out, so that whoever sees one sees both.
        logger.warning("Read replica %s is back: its reads go to it again", display(engine.url))


class RoutingSession(Session):
    """A session that sends reads marked with :data:`READ_REPLICA` to a replica, and everything
    else (writes, flushes, unmarked reads, :meth:`Session.connection`) to its primary bind.

    A session keeps to the replica it read from first, so that its reads see one replay
    position, and settings made on that replica's connection
    (``session.connection(bind_arguments={"clause": marked_statement})``) reach its later marked
    reads. Once the session has written or holds pending changes (flushed or not), or after
    :func:`read_from_primary`, marked reads go to the primary too, so that they see the
    session's own writes. A replica that cannot be reached at checkout is skipped, and the read
    goes to the next one or to the primary: never an error while the primary is up. This is
    SQLAlchemy's documented ``get_bind`` pattern.
    """

    def __init__(self, *args: Any, replicas: ReadReplicas | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replicas = replicas or ReadReplicas(())
        self.replica: Engine | None = None

    def get_bind(
        self,
        mapper: Any = None,
        *,
        clause: ClauseElement | None = None,
        bind: Engine | Connection | None = None,
        **kwargs: Any,
    ) -> Engine | Connection:
        """The primary bind, or for a marked read a reachable replica."""
        primary = super().get_bind(mapper, clause=clause, bind=bind, **kwargs)
        # Pending changes count as written, flushed or not: with autoflush off, a marked read
        # must not see a replica's older rows while the session is about to write over them.
        if (
            self._flushing
            or isinstance(clause, UpdateBase)
            or self._new
            or self._deleted
            or self.identity_map.check_modified()
        ):
            self.info[_PRIMARY_ONLY] = True
            return primary
        if bind is not None or self.info.get(_PRIMARY_ONLY) or not _marked(clause):
            return primary
        for replica in self.replicas.in_turn(first=self.replica):
            try:
                # Checked out now (and tested, see _check_on_checkout), so that a replica that
                # is down is found here, while the read can still go elsewhere.
                self.connection(bind_arguments={"bind": replica})
            except OperationalError as error:
                self.replicas.skip(replica, error)
            else:
                self.replicas.reached(replica)
                self.replica = replica
                return replica
        return primary


def _marked(clause: ClauseElement | None) -> bool:
    return isinstance(clause, Executable) and bool(
        clause.get_execution_options().get(REPLICA_OPTION)
    )


def read_from_primary(session: Session | AsyncSession) -> None:
    """Send the rest of ``session``'s reads to the primary, for a read that must see a write
    committed a moment ago (by this request or another) that a replica may not have replayed."""
    session.info[_PRIMARY_ONLY] = True


def session_factory(
    engine: Engine,
    replicas: Sequence[Engine] = (),
    retry_after: float = REPLICA_RETRY_SECONDS,
) -> sessionmaker[RoutingSession]:
    """Sessions bound to ``engine``, whose reads marked with :data:`READ_REPLICA` go to
    ``replicas`` (see :class:`RoutingSession`).

    ``expire_on_commit=False`` keeps loaded objects readable after the commit that ends a request,
    for example while a response is rendered from them.
    """
    return sessionmaker(
        engine,
        class_=RoutingSession,
        expire_on_commit=False,
        replicas=ReadReplicas(replicas, retry_after),
    )


class LazyLoadError(InvalidRequestError):
    """An async session's object was asked for an attribute that is not loaded (where
    SQLAlchemy would raise ``MissingGreenlet``)."""


class AsyncRoutingSession(RoutingSession):
    """The :class:`RoutingSession` inside an :class:`AsyncSession`: loading on attribute access
    fails with :class:`LazyLoadError`, saying what to do."""


@event.listens_for(AsyncRoutingSession, "do_orm_execute")
def _refuse_implicit_io(state: ORMExecuteState) -> None:
    # An AsyncSession runs its own statements inside its greenlet; one that arrives outside it
    # comes from attribute access (a lazy relationship, a deferred or expired column), where
    # SQLAlchemy would fail with MissingGreenlet, which does not say what to do.
    if not in_greenlet():
        target = state.bind_mapper.class_.__name__ if state.bind_mapper else "an object"
        parent = state.lazy_loaded_from
        attribute = (
            f"a relationship of {parent.class_.__name__} to {target}"
            if parent is not None
            else f"an attribute of {target}"
        )
        raise LazyLoadError(
            f"{attribute} is not loaded, and an async session cannot load it on "
            "access: load it in the query (selectinload(...) for a relationship, undefer(...) "
            "for a deferred column) or with `await session.refresh(obj, [name])`, and declare "
            "relationships lazy='raise' (docs/application.md#async-services)"
        )


def async_session_factory(
    engine: AsyncEngine,
    replicas: Sequence[AsyncEngine] = (),
    retry_after: float = REPLICA_RETRY_SECONDS,
) -> async_sessionmaker[AsyncSession]:
    """:func:`session_factory` for asyncio: sessions bound to ``engine``, marked reads to
    ``replicas``, and a :class:`LazyLoadError` instead of a lazy load."""
    return async_sessionmaker(
        engine,
        expire_on_commit=False,
        sync_session_class=AsyncRoutingSession,
        replicas=ReadReplicas([replica.sync_engine for replica in replicas], retry_after),
    )


def set_local(executor: Session | Connection, settings: Mapping[str, str]) -> None:
    """Apply ``settings`` until the current transaction ends, like ``SET LOCAL``.

    A transaction-local setting cannot outlive the transaction, so it never reaches the next user
    of a pooled connection. On one server, ``set_config(name, value, true)`` takes the name and
    value as bound parameters. On a Citus node it would stay on the coordinator, and a
    distributed query's shards would run without it, silently: there the settings are sent as
    ``SET LOCAL`` after ``SET LOCAL citus.propagate_set_commands = 'local'``, which Citus
    forwards to every worker connection of the transaction (docs/citus.md). Whether the server
    runs Citus is asked once per pooled connection.
    """
    if not settings:
        return
    connection = executor if isinstance(executor, Connection) else executor.connection()
    if not _runs_citus(connection):
        connection.execute(
            select(*(func.set_config(name, value, True) for name, value in settings.items()))
        )
        return
    # SET takes no bound parameters: each name is checked, each value quoted as a literal.
    statements = [f"SET LOCAL {_CITUS_PROPAGATION} = 'local'"]
    for name, value in settings.items():
        if not _SETTING_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a setting's name")
        statements.append(f"SET LOCAL {name} = {_literal(value)}")
    # One statement each: psycopg 3 prepares a statement run often enough (at once with
    # prepare_threshold=0), and no statement of several commands can be prepared. Sent with no
    # parameters at all, or the driver would read a % in a value as a placeholder.
    for statement in statements:
        connection.exec_driver_sql(statement, execution_options={"no_parameters": True})


_CITUS_PROPAGATION = "citus.propagate_set_commands"
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
# Key of the pooled connection's info: True on a server that loaded Citus.
_CITUS = "pgvector_base.citus"


def _literal(value: str) -> str:
    """``value`` as an escape string literal, which reads the same whatever
    ``standard_conforming_strings`` is."""
    if "\0" in value:
        raise ValueError(f"{value!r} is not a setting's value")
    return "E'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _runs_citus(connection: Connection) -> bool:
    """Whether ``connection``'s server has loaded Citus (``shared_preload_libraries``); asked
    once per pooled connection, whose info keeps the answer while it lives."""
    known = connection.info.get(_CITUS)
    if known is None:
        # pg_settings lists a setting once its library has defined it, never a placeholder.
        known = connection.info[_CITUS] = bool(
            connection.scalar(
                text("SELECT EXISTS (SELECT FROM pg_settings WHERE name = :name)"),
                {"name": _CITUS_PROPAGATION},
            )
        )
    return bool(known)


TENANT_SETTING = "app.tenant_id"
"""The setting that row-level security policies read the transaction's tenant from
(:mod:`pgvector_base.migration.tenancy`)."""
_TENANT = "pgvector_base.tenant"
S = TypeVar("S", bound=Session)
AS = TypeVar("AS", bound=AsyncSession)


def tenant_session(factory: sessionmaker[S], tenant: str | int) -> S:
    """A session of ``factory`` for ``tenant``: every transaction it begins, on any of its
    connections, sets ``app.tenant_id`` for that transaction only.

    The setting is transaction-local (``set_config(..., true)``), so it never reaches the next
    user of a pooled connection, through a transaction-mode pooler too. Use it as
    ``with tenant_session(Session, tenant_id) as session: ...``; :func:`async_tenant_session`
    for asyncio.
    """
    return factory(info={_TENANT: _tenant_value(tenant)})


def async_tenant_session(factory: async_sessionmaker[AS], tenant: str | int) -> AS:
    """:func:`tenant_session` for an :func:`async_session_factory`."""
    return factory(info={_TENANT: _tenant_value(tenant)})


def _tenant_value(tenant: str | int) -> str:
    if isinstance(tenant, bool) or not isinstance(tenant, str | int) or tenant == "":
        raise ValueError(f"tenant_session(..., {tenant!r}): a tenant is a non-empty str or an int")
    return str(tenant)


@event.listens_for(RoutingSession, "after_begin")
def _set_tenant(session: Session, transaction: object, connection: Connection) -> None:
    # Before the transaction's first statement on this connection: no query of it runs without
    # its tenant, and the setting ends with it.
    tenant = session.info.get(_TENANT)
    if tenant is not None:
        set_local(connection, {TENANT_SETTING: tenant})
