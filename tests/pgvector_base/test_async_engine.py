"""The async engine and sessions: the sync engine's URL, pool and pooler settings on psycopg 3's
async API, many tasks on one event loop, and no lazy load that fails without saying what to do.

Every test runs against the real test server on tables of its own; what was prepared is read from
the server's ``pg_prepared_statements``, and which rows came back from the server itself.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import BigInteger, ForeignKey, create_engine, insert, select, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    mapped_column,
    relationship,
    selectinload,
    undefer,
)
from sqlalchemy.pool import NullPool

from pgvector_base.database import DATABASE_URL_ENV, DatabaseConfigError
from pgvector_base.session import (
    EngineSettings,
    LazyLoadError,
    async_session_factory,
    create_app_engine,
    create_async_app_engine,
)
from tests.conftest import CreateDatabase

from . import pgbouncer as harness

RUNS = 10


class Base(DeclarativeBase):
    pass


class Shelf(Base):
    __tablename__ = "async_shelf"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    label: Mapped[str] = mapped_column(deferred=True)
    books: Mapped[list[Book]] = relationship(back_populates="shelf")
    guarded: Mapped[list[Book]] = relationship(viewonly=True, lazy="raise")


class Book(Base):
    __tablename__ = "async_book"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    shelf_id: Mapped[int] = mapped_column(ForeignKey(Shelf.id))
    shelf: Mapped[Shelf] = relationship(back_populates="books")


@pytest.fixture(scope="module")
def url(create_database: CreateDatabase) -> URL:
    """A database of the module's own with a shelf of three books."""
    url = create_database()
    engine = create_engine(url, poolclass=NullPool)
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(Shelf), [{"id": 1, "label": "one"}])
        connection.execute(insert(Book), [{"id": n, "shelf_id": 1} for n in range(1, 4)])
    engine.dispose()
    return url


async def prepared_after_runs(engine: AsyncEngine) -> int:
    """Statements the server holds prepared for the connection after ``RUNS`` runs of one query
    in a committed transaction."""
    try:
        async with engine.connect() as connection:
            for _ in range(RUNS):
                await connection.execute(text("SELECT count(*) FROM pg_class"))
            await connection.commit()
            return int(await connection.scalar(text("SELECT count(*) FROM pg_prepared_statements")))
    finally:
        await engine.dispose()


def test_the_async_engine_takes_the_database_url_and_the_sync_engines_settings(
    url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, url.render_as_string(hide_password=False))
    monkeypatch.setenv("DATABASE_POOL_SIZE", "3")

    async def main() -> None:
        engine = create_async_app_engine()
        assert engine.dialect.is_async
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.url.database == url.database
        assert engine.pool.size() == 3  # type: ignore[attr-defined]
        async with engine.connect() as connection:
            assert await connection.scalar(text("SELECT current_database()")) == url.database
        # No statement prepared on the server by default, so a transaction-mode pooler is safe.
        assert await prepared_after_runs(engine) == 0
        assert await prepared_after_runs(
            create_async_app_engine(url, EngineSettings(prepare_threshold=2))
        )
        assert await prepared_after_runs(
            create_async_app_engine(url.update_query_dict({"prepare_threshold": "2"}))
        )

    asyncio.run(main())


def test_psycopg2_has_no_async_engine_and_says_so_in_one_line(url: URL) -> None:
    with pytest.raises(DatabaseConfigError) as refused:
        create_async_app_engine(url, EngineSettings(driver="psycopg2"))
    assert "the async engine needs the psycopg driver" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_connection_options_a_pooler_refuses_fail_in_one_line(
    server_url: URL, url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    if harness.binary() is None:
        pytest.skip(harness.SKIP_REASON)
    monkeypatch.setenv("PGOPTIONS", "-c client_connection_check_interval=10s")

    async def connect(pooled: URL) -> None:
        engine = create_async_app_engine(pooled)
        try:
            async with engine.connect():
                pass
        finally:
            await engine.dispose()

    with (
        harness.start(server_url, pool_mode="transaction") as bouncer,
        pytest.raises(DatabaseConfigError) as refused,
    ):
        asyncio.run(connect(bouncer.url(url)))
    assert "\n" not in str(refused.value)
    assert "ALTER ROLE" in str(refused.value)


def test_many_tasks_share_one_engine_on_one_event_loop(url: URL) -> None:
    async def main() -> list[int]:
        engine = create_async_app_engine(url, EngineSettings(pool_size=2, max_overflow=2))
        sessions = async_session_factory(engine)

        async def request(n: int) -> int:
            async with sessions() as session:
                # pg_sleep yields the loop to the other tasks while this one holds a connection.
                await session.execute(text("SELECT pg_sleep(0.01)"))
                return int(await session.scalar(text("SELECT CAST(:n AS int) * 2"), {"n": n}))

        try:
            return list(await asyncio.gather(*(request(n) for n in range(64))))
        finally:
            await engine.dispose()

    assert asyncio.run(main()) == [2 * n for n in range(64)]


def test_a_lazy_load_fails_saying_what_to_do_and_the_documented_loads_work(url: URL) -> None:
    async def main() -> None:
        engine = create_async_app_engine(url)
        sessions = async_session_factory(engine)
        try:
            async with sessions() as session:
                shelf = await session.get_one(Shelf, 1)
                with pytest.raises(LazyLoadError) as lazy:
                    _ = shelf.books
                with pytest.raises(LazyLoadError):
                    _ = shelf.label  # deferred column
                with pytest.raises(Exception, match="lazy='raise'"):
                    _ = shelf.guarded
                await session.refresh(shelf, ["label"])
                assert shelf.label == "one"
            message = str(lazy.value)
            assert "\n" not in message
            assert "selectinload(" in message
            assert "Shelf" in message
            async with sessions() as session:
                loaded = await session.scalar(
                    select(Shelf).options(selectinload(Shelf.books), undefer(Shelf.label))
                )
                await session.commit()
            # Loaded in the query, and not expired by the commit: readable without the server.
            assert loaded is not None
            assert sorted(book.id for book in loaded.books) == [1, 2, 3]
            assert loaded.label == "one"
        finally:
            await engine.dispose()

    asyncio.run(main())


def backend_query(url: URL, pid: int) -> str:
    """The last statement the server ran for the backend ``pid``, as another connection sees it."""
    admin = create_engine(url, poolclass=NullPool)
    try:
        with admin.connect() as connection:
            return str(
                connection.scalar(
                    text("SELECT query FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                )
            )
    finally:
        admin.dispose()


def terminate(url: URL, pid: int) -> None:
    """End the backend ``pid`` as a server shutdown would, and wait until it has exited."""
    admin = create_engine(url, poolclass=NullPool)
    try:
        with admin.connect() as connection:
            assert connection.scalar(text("SELECT pg_terminate_backend(:pid, 30000)"), {"pid": pid})
    finally:
        admin.dispose()


def test_checking_out_a_live_pooled_connection_costs_no_round_trip(url: URL) -> None:
    """No ping before each request: the pooled connection's last statement stays the previous
    request's ROLLBACK while it is checked out again."""

    async def main() -> None:
        engine = create_async_app_engine(url, EngineSettings(pool_size=1, max_overflow=0))
        sessions = async_session_factory(engine)
        try:
            async with sessions() as session:
                pid = int(await session.scalar(text("SELECT pg_backend_pid()")))
            async with engine.connect() as connection:
                assert backend_query(url, pid) == "ROLLBACK"
                assert await connection.scalar(text("SELECT pg_backend_pid()")) == pid
        finally:
            await engine.dispose()

    asyncio.run(main())
    sync = create_app_engine(url, EngineSettings(pool_size=1, max_overflow=0))
    try:
        with sync.connect() as connection:
            pid = int(connection.scalar(text("SELECT pg_backend_pid()")))
        with sync.connect():
            assert backend_query(url, pid) == "ROLLBACK"
    finally:
        sync.dispose()


def test_a_connection_the_server_ended_costs_a_reconnect_not_a_failed_request(url: URL) -> None:
    """A pooled connection whose backend was terminated (as a restart ends every one) is found
    at checkout and replaced: the next request runs on a new backend, with no error."""

    async def main() -> None:
        engine = create_async_app_engine(url, EngineSettings(pool_size=2, max_overflow=0))
        sessions = async_session_factory(engine)

        async def pids() -> set[int]:
            async def request() -> int:
                async with sessions() as session:
                    pid = int(await session.scalar(text("SELECT pg_backend_pid()")))
                    await session.execute(text("SELECT pg_sleep(0.01)"))
                    return pid

            return set(await asyncio.gather(request(), request()))

        try:
            before = await pids()
            assert len(before) == 2
            for pid in before:
                terminate(url, pid)
            after = await pids()
            assert len(after) == 2
            assert not after & before
        finally:
            await engine.dispose()

    asyncio.run(main())
    sync = create_app_engine(url, EngineSettings(pool_size=1, max_overflow=0))
    try:
        with sync.connect() as connection:
            pid = int(connection.scalar(text("SELECT pg_backend_pid()")))
        terminate(url, pid)
        with sync.connect() as connection:
            assert connection.scalar(text("SELECT pg_backend_pid()")) != pid
    finally:
        sync.dispose()


def test_each_request_through_a_transaction_pooler_is_one_transaction(
    server_url: URL, url: URL
) -> None:
    """Through transaction-mode PgBouncer, with fewer server connections than tasks, a request's
    statements run in one transaction on one server connection: a setting made local by its
    first statement is the one its second reads, whatever the other tasks set meanwhile."""
    if harness.binary() is None:
        pytest.skip(harness.SKIP_REASON)

    async def main(pooled: URL) -> list[str]:
        engine = create_async_app_engine(pooled, EngineSettings(pool_size=8, max_overflow=0))
        sessions = async_session_factory(engine)

        async def request(n: int) -> str:
            async with sessions() as session:
                await session.execute(
                    text("SELECT set_config('pooler.request', :n, true)"), {"n": str(n)}
                )
                await session.execute(text("SELECT pg_sleep(0.01)"))
                return str(await session.scalar(text("SELECT current_setting('pooler.request')")))

        try:
            return list(await asyncio.gather(*(request(n) for n in range(32))))
        finally:
            await engine.dispose()

    with harness.start(server_url, pool_mode="transaction", pool_size=2) as bouncer:
        assert asyncio.run(main(bouncer.url(url))) == [str(n) for n in range(32)]
