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
