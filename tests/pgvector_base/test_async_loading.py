"""Async loading (``pgvector_base.aio.load``) through psycopg 3's async COPY on a real server:
what is stored is what was sent, the first-load order leaves the index rebuilt and the table
analyzed, and a failure leaves no rows and the index in place. Read back through psycopg2.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Engine, Index, Table, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pgvector_base.aio import copy_rows, load
from pgvector_base.loading import LoadError
from pgvector_base.session import async_session_factory, create_async_app_engine
from tests.conftest import CreateDatabase

DIM = 8
ROWS = 300


class Base(DeclarativeBase):
    pass


class Passage(Base):
    __tablename__ = "async_loading_passage"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    title: Mapped[str]
    embedding: Mapped[list[float]] = mapped_column(VECTOR(DIM))
    __table_args__ = (
        Index(
            "ix_async_loading_passage_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )


PASSAGE: Table = Base.metadata.tables["async_loading_passage"]


@pytest.fixture(scope="module")
def url(create_database: CreateDatabase) -> URL:
    url = create_database()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        Base.metadata.create_all(connection)
    engine.dispose()
    return url


@pytest.fixture
def engine(url: URL) -> Iterator[Engine]:
    """psycopg2, to read what was stored; the table starts empty."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE async_loading_passage"))
    yield engine
    engine.dispose()


def passages(count: int) -> list[tuple[Any, ...]]:
    vectors = np.random.default_rng(count).standard_normal((count, DIM)).astype(np.float32)
    return [(n, f"passage {n} ✓", vectors[n - 1].tolist()) for n in range(1, count + 1)]


def state(engine: Engine) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]], float]:
    """The table's rows, its vector index (name, definition) and the planner's row count."""
    with engine.connect() as connection:
        rows = [
            # The shortest text of each float4, read back as float4: exactly what was stored.
            (key, title, np.asarray(embedding, dtype=np.float32).tolist())
            for key, title, embedding in connection.execute(
                text(f"SELECT id, title, CAST(embedding AS real[]) FROM {PASSAGE.name} ORDER BY id")
            )
        ]
        indexes = connection.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE tablename = :table AND indexdef LIKE '%USING hnsw%'"
            ),
            {"table": PASSAGE.name},
        ).all()
        reltuples = connection.scalar(
            text("SELECT reltuples FROM pg_class WHERE oid = CAST(:table AS regclass)"),
            {"table": PASSAGE.name},
        )
    return rows, [(str(name), str(definition)) for name, definition in indexes], reltuples


def test_an_async_first_load_stores_what_was_sent_and_rebuilds_the_index(
    url: URL, engine: Engine
) -> None:
    sent = passages(ROWS)
    _, before_indexes, _ = state(engine)
    progress: list[int] = []

    async def main() -> Any:
        async_engine = create_async_app_engine(url)
        try:
            async with async_session_factory(async_engine)() as session:
                result = await load(
                    await session.connection(),
                    PASSAGE,
                    sent,
                    batch_size=64,
                    progress=progress.append,
                )
                await session.commit()
                return result
        finally:
            await async_engine.dispose()

    result = asyncio.run(main())
    rows, indexes, reltuples = state(engine)
    assert rows == [(key, title, vector) for key, title, vector in sent]  # float32: exact
    assert indexes == before_indexes
    assert result.rows == ROWS
    assert result.rebuilt_indexes == ("ix_async_loading_passage_embedding",)
    assert progress == [64, 64, 64, 64, 44]
    assert reltuples == ROWS  # analyzed


def test_an_async_copy_into_a_table_with_rows_keeps_its_index(url: URL, engine: Engine) -> None:
    first, more = passages(ROWS)[:100], passages(ROWS)[100:]

    async def main() -> int:
        async_engine = create_async_app_engine(url)
        try:
            async with async_engine.begin() as connection:
                await load(connection, PASSAGE, first)
            async with async_engine.begin() as connection:
                return await copy_rows(connection, PASSAGE, more)
        finally:
            await async_engine.dispose()

    _, before_indexes, _ = state(engine)
    assert asyncio.run(main()) == ROWS - 100
    rows, indexes, _ = state(engine)
    assert [row[0] for row in rows] == list(range(1, ROWS + 1))
    assert indexes == before_indexes


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([0.5] * 3, f"line 150: embedding: expected {DIM} dimensions, got 3"),
        ([math.nan] * DIM, "line 150: embedding: NaN not allowed in vector"),
        ("x", "line 150: embedding: expected a list of numbers, got str"),
    ],
)
def test_a_bad_row_mid_load_leaves_no_rows_and_the_index_in_place(
    url: URL, engine: Engine, bad: Any, message: str
) -> None:
    """Row 150 of 300, in batches of 64: two COPYs were stored before it. A caller who commits
    anyway gets a rollback."""
    rows = passages(ROWS)
    rows[149] = (*rows[149][:2], bad)
    before = state(engine)

    async def main() -> None:
        async_engine = create_async_app_engine(url)
        try:
            async with async_engine.connect() as connection:
                with pytest.raises(LoadError) as failed:
                    await load(connection, PASSAGE, rows, batch_size=64)
                assert str(failed.value).startswith(message)
                await connection.commit()
        finally:
            await async_engine.dispose()

    asyncio.run(main())
    assert state(engine) == before
    assert before[0] == []


def test_a_row_the_server_rejects_is_named_by_its_line(url: URL, engine: Engine) -> None:
    rows = passages(10)
    rows[6] = (rows[2][0], *rows[6][1:])  # line 7 repeats line 3's key

    async def main() -> None:
        async_engine = create_async_app_engine(url)
        try:
            async with async_engine.begin() as connection:
                await load(connection, PASSAGE, rows)
        finally:
            await async_engine.dispose()

    with pytest.raises(LoadError, match=r"^line \d+: duplicate key value"):
        asyncio.run(main())
    assert state(engine)[0] == []
