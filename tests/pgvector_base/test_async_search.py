"""Async search (``pgvector_base.aio``) on a real server through psycopg 3's async driver, under
many tasks on one event loop: brute-force answers, the index in PostgreSQL's own plan for what was
sent, settings on the search's connection only, the sync API's checks, the query in binary.

Each search's plan and settings are read on the connection that ran it, right after it ran.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any

import numpy as np
import pytest
from pgvector import Vector
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Index, create_engine, event, insert, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from pgvector_base.aio import AsyncVectorSearch
from pgvector_base.search import SearchSettings, VectorSearch
from pgvector_base.session import (
    EngineSettings,
    LazyLoadError,
    async_session_factory,
    create_async_app_engine,
)
from tests.conftest import CreateDatabase

ROWS = 5000
DIM = 16
K = 10
TASKS = 32
# With ef_search this large, HNSW's scan of 5,000 rows finds the exact nearest ones.
EXACT = SearchSettings(ef_search=100)


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "async_search_doc"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    category: Mapped[int]
    embedding: Mapped[list[float]] = mapped_column(VECTOR(DIM))
    __table_args__ = (
        Index(
            "ix_async_search_doc_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_l2_ops"},
        ),
    )


VECTORS = np.random.default_rng(19).standard_normal((ROWS, DIM), dtype=np.float32)


@pytest.fixture(scope="module")
def url(create_database: CreateDatabase) -> URL:
    """A database of the module's own with the documents, analyzed."""
    url = create_database()
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        Base.metadata.create_all(connection)
        connection.execute(
            insert(Doc),
            [
                {"id": n, "category": n % 10, "embedding": vector.tolist()}
                for n, vector in enumerate(VECTORS)
            ],
        )
        connection.execute(text("ANALYZE async_search_doc"))
    engine.dispose()
    return url


def brute_force(
    query: np.ndarray[Any, Any], keep: Callable[[int], bool] = lambda _: True
) -> list[int]:
    """The ``K`` nearest ids that ``keep`` takes, by L2 distance over every row, computed here."""
    distances = np.linalg.norm(VECTORS.astype(np.float64) - query.astype(np.float64), axis=1)
    ranked = [int(n) for n in np.argsort(distances, kind="stable")]
    return [n for n in ranked if keep(n)][:K]


Served = list[tuple[str, str]]


@contextmanager
def searches_served(engine: AsyncEngine) -> Iterator[Served]:
    """For each search sent through ``engine``, what its connection says right after it ran, in
    its own transaction: its ``hnsw.ef_search`` and its plan for the statement as sent."""
    served: Served = []

    def after(connection: Any, _: Any, statement: str, parameters: Any, *rest: Any) -> None:
        if "ORDER BY" not in statement:
            return
        with closing(connection.connection.dbapi_connection.cursor()) as raw:
            raw.execute("SELECT current_setting('hnsw.ef_search')")
            (ef_search,) = raw.fetchone()
            raw.execute(f"EXPLAIN {statement}", parameters)
            plan = "\n".join(row[0] for row in raw.fetchall())
        served.append((ef_search, plan))

    event.listen(engine.sync_engine, "after_cursor_execute", after)
    try:
        yield served
    finally:
        event.remove(engine.sync_engine, "after_cursor_execute", after)


def test_concurrent_async_searches_give_the_brute_force_answers_by_the_index(url: URL) -> None:
    """32 tasks on a pool of 4: each task's searches are answered exactly, by an index scan, with
    its settings on its own search, and the connection shows the server's value afterwards."""
    docs = AsyncVectorSearch(Doc, Doc.embedding)
    show = text("SELECT current_setting('hnsw.ef_search')")

    async def main() -> Served:
        engine = create_async_app_engine(url, EngineSettings(pool_size=4, max_overflow=0))
        sessions = async_session_factory(engine)

        async def request(n: int) -> None:
            query = VECTORS[n] + np.float32(0.01)
            async with sessions() as session:
                keys = await docs.nearest_keys(session, query, K, settings=EXACT)
                assert [key for key, _ in keys] == brute_force(query)
                assert await session.scalar(show) == "40"  # same connection, savepoint undone
                hits = await docs.nearest(session, query.tolist(), K, settings=EXACT)
                assert [hit.item.id for hit in hits] == brute_force(query)
                like = await docs.neighbors_of(session, n, K, settings=EXACT)
                assert [hit.item.id for hit in like] == brute_force(VECTORS[n], lambda m: m != n)
                assert await session.scalar(show) == "40"

        try:
            with searches_served(engine) as served:
                await asyncio.gather(*(request(n) for n in range(TASKS)))
            return served
        finally:
            await engine.dispose()

    served = asyncio.run(main())
    assert len(served) == 3 * TASKS
    for ef_search, plan in served:
        assert ef_search == "100"
        assert "Index Scan using ix_async_search_doc_embedding" in plan, plan


def test_settings_reach_neither_the_transaction_nor_the_next_checkout(url: URL) -> None:
    docs = AsyncVectorSearch(Doc, Doc.embedding)
    settings = SearchSettings(ef_search=4, max_scan_tuples=100, iterative_scan="strict_order")
    current = text(
        "SELECT pg_backend_pid(), current_setting('hnsw.ef_search'), "
        "current_setting('hnsw.max_scan_tuples'), current_setting('hnsw.iterative_scan')"
    )

    async def main() -> tuple[list[Any], list[Any], int]:
        engine = create_async_app_engine(url, EngineSettings(pool_size=1, max_overflow=0))
        sessions = async_session_factory(engine)
        try:
            async with sessions() as session:
                few = SearchSettings(ef_search=4)
                found = await docs.nearest_keys(session, VECTORS[0], K, settings=few)
                await docs.nearest_keys(session, VECTORS[0], K, settings=settings)
                in_transaction = list((await session.execute(current)).one())
                await session.commit()
            async with sessions() as session:
                next_checkout = list((await session.execute(current)).one())
            return in_transaction, next_checkout, len(found)
        finally:
            await engine.dispose()

    in_transaction, next_checkout, found = asyncio.run(main())
    assert found <= 4  # the settings reached the search: HNSW returns at most ef_search rows
    assert in_transaction[0] == next_checkout[0]  # the same server connection
    assert in_transaction[1:] == next_checkout[1:] == ["40", "20000", "off"]


def test_configured_settings_last_until_the_transaction_ends(url: URL) -> None:
    docs = AsyncVectorSearch(Doc, Doc.embedding)

    async def main() -> list[int]:
        engine = create_async_app_engine(url)
        try:
            async with async_session_factory(engine)() as session:
                await docs.configure(session, SearchSettings(ef_search=4))
                sizes = [len(await docs.nearest_keys(session, VECTORS[1], K)) for _ in range(2)]
                await session.rollback()
                sizes.append(len(await docs.nearest_keys(session, VECTORS[1], K)))
                return sizes
        finally:
            await engine.dispose()

    first, second, after_rollback = asyncio.run(main())
    assert first <= 4  # HNSW returns at most ef_search rows
    assert second <= 4
    assert after_rollback == K


BAD_CALLS: list[tuple[str, Callable[[Any], Any]]] = [
    ("nearest_keys", lambda call: call([1.0, 2.0], K)),
    ("nearest_keys", lambda call: call([float("nan")] * DIM, K)),
    ("nearest", lambda call: call(VECTORS[0], 0)),
    ("nearest", lambda call: call(VECTORS[0], True)),
    ("nearest", lambda call: call(["x"] * DIM, K)),
    ("neighbors_of", lambda call: call(-1, K)),
    ("nearest", lambda call: call(VECTORS[0], K, settings=SearchSettings(probes=3))),
]


@pytest.mark.parametrize(("method", "call"), BAD_CALLS)
def test_async_searches_refuse_what_the_sync_ones_refuse_in_the_same_line(
    url: URL, method: str, call: Callable[[Any], Any]
) -> None:
    sync_docs = VectorSearch(Doc, Doc.embedding)
    async_docs = AsyncVectorSearch(Doc, Doc.embedding)
    engine = create_engine(url, poolclass=NullPool)
    with Session(engine) as session, pytest.raises((ValueError, LookupError)) as sync_refusal:
        call(lambda *args, **kwargs: getattr(sync_docs, method)(session, *args, **kwargs))
    engine.dispose()

    async def main() -> None:
        async_engine = create_async_app_engine(url)
        try:
            async with async_session_factory(async_engine)() as session:
                await call(
                    lambda *args, **kwargs: getattr(async_docs, method)(session, *args, **kwargs)
                )
        finally:
            await async_engine.dispose()

    with pytest.raises(type(sync_refusal.value), match=f"^{re.escape(str(sync_refusal.value))}$"):
        asyncio.run(main())


@pytest.mark.parametrize("settings", [None, EXACT])
def test_async_searches_see_pending_changes_as_session_execute_does(
    url: URL, settings: SearchSettings | None
) -> None:
    """A row added a moment ago, at row 7's vector, is the nearest to it when the session
    autoflushes, and stays pending and unseen when it does not."""
    docs = AsyncVectorSearch(Doc, Doc.embedding)
    query = VECTORS[7].tolist()

    async def firsts(autoflush: bool) -> tuple[list[int], list[int]]:
        """What nearest_keys, nearest and neighbors_of(7) find with the row pending."""
        engine = create_async_app_engine(url)
        try:
            async with async_session_factory(engine)() as session:
                session.sync_session.autoflush = autoflush
                added = Doc(id=ROWS + 7, category=0, embedding=query)
                session.add(added)
                keys = await docs.nearest_keys(session, query, 3, settings=settings)
                hits = await docs.nearest(session, query, 3, settings=settings)
                like = await docs.neighbors_of(session, 7, 3, settings=settings)
                assert (added in session.new) is not autoflush
                return [key for key, _ in keys], [hit.item.id for hit in hits + like]
        finally:
            await engine.dispose()

    keys, items = asyncio.run(firsts(True))
    assert [keys[0], items[0], items[3]] == [ROWS + 7] * 3
    unseen_keys, unseen_items = asyncio.run(firsts(False))
    assert ROWS + 7 not in unseen_keys + unseen_items


def test_the_query_is_sent_in_pgvectors_binary_format(url: URL) -> None:
    docs = AsyncVectorSearch(Doc, Doc.embedding)
    sent: list[Any] = []

    def capture(*args: Any) -> None:
        if "ORDER BY" in args[2]:
            sent.append(args[3]["query"])

    async def main() -> None:
        engine = create_async_app_engine(url)
        event.listen(engine.sync_engine, "before_cursor_execute", capture)
        try:
            async with async_session_factory(engine)() as session:
                await docs.nearest_keys(session, VECTORS[5].tolist(), K)
        finally:
            await engine.dispose()

    asyncio.run(main())
    assert [query.data for query in sent] == [Vector(VECTORS[5]).to_binary()]


def test_the_deferred_vector_of_a_result_fails_saying_how_to_load_it(url: URL) -> None:
    docs = AsyncVectorSearch(Doc, Doc.embedding)

    async def main() -> list[float]:
        engine = create_async_app_engine(url)
        try:
            async with async_session_factory(engine)() as session:
                (hit,) = await docs.nearest(session, VECTORS[2], 1)
                with pytest.raises(LazyLoadError, match=r"undefer\(\.\.\.\)"):
                    _ = hit.item.embedding
                await session.refresh(hit.item, ["embedding"])
                return list(hit.item.embedding)
        finally:
            await engine.dispose()

    assert asyncio.run(main()) == pytest.approx(VECTORS[2].tolist())
