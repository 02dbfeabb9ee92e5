"""The loader through a real PgBouncer: loads that commit store exactly what was sent.

Clients load batches into one table (which has rows, so its index stays in place) and commit each,
as a worker would: threads sharing one application engine on the pooled URL, and two engines
taking turns. What the server stored is then read over a direct connection and compared row by
row with what was sent.

Two clients taking turns through a transaction-mode pool share one server connection, and run the
same statements in the same order: had psycopg prepared them (its default, after 5 runs), the
second client's first prepared statement would carry the name the first one's already has there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Engine, Index, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

from pgvector_base.loading import load
from pgvector_base.session import EngineSettings, create_app_engine
from tests.conftest import CreateDatabase

from .conftest import StartPgBouncer

DIM = 8
CLIENTS = 4
# More loads per client than psycopg's default prepare_threshold (5).
LOADS = 20
BATCH = 20
SEED_ROWS = 10


class LoadingBase(DeclarativeBase):
    """This module's own table."""


class LoadedItem(LoadingBase):
    __tablename__ = "pooled_loaded_item"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    category: Mapped[int]
    embedding: Mapped[Any] = mapped_column(VECTOR(DIM))

    __table_args__ = (
        Index(
            "ix_pooled_loaded_item_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_l2_ops"},
        ),
    )


TABLE = LoadedItem.__table__


@pytest.fixture
def direct(create_database: CreateDatabase) -> Iterator[Engine]:
    """A database of the test's own, whose table has a few rows already."""
    engine = create_engine(create_database(), poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    LoadingBase.metadata.create_all(engine)
    with engine.begin() as connection:
        load(connection, TABLE, batch(0, SEED_ROWS))  # type: ignore[arg-type]
    yield engine
    engine.dispose()


def vectors(first: int, count: int) -> npt.NDArray[np.float32]:
    """The vectors of rows ``first`` to ``first + count - 1``: the same for every call."""
    return np.random.default_rng(first).random((count, DIM), dtype=np.float32)


def batch(first: int, count: int) -> dict[str, Any]:
    return {
        "id": np.arange(first, first + count),
        "category": np.arange(first, first + count) % 7,
        "embedding": vectors(first, count),
    }


def load_once(engine: Engine, number: int, load_number: int) -> list[str]:
    """Load one batch of client ``number`` and commit; return a line if that failed."""
    first = SEED_ROWS + (number * LOADS + load_number) * BATCH
    try:
        with engine.begin() as connection:
            result = load(connection, TABLE, batch(first, BATCH))  # type: ignore[arg-type]
    except Exception as error:
        return [
            f"client {number} load {load_number}: {type(error).__name__}: {error}".split("\n")[0]
        ]
    return [] if result.rows == BATCH else [f"client {number} load {load_number}: {result.rows}"]


def client(engine: Engine, number: int, start: threading.Barrier) -> list[str]:
    """Load this client's batches, one transaction each; return a line per failed load."""
    start.wait()
    return [problem for n in range(LOADS) for problem in load_once(engine, number, n)]


def check(direct: Engine, problems: list[str], clients: int) -> None:
    """No load failed, and the table holds exactly the seed rows and every client's batches."""
    assert not problems, f"{len(problems)} failed loads, first ones:\n" + "\n".join(problems[:10])
    with direct.connect() as connection:
        stored = connection.execute(
            select(LoadedItem.id, LoadedItem.category, LoadedItem.embedding).order_by(LoadedItem.id)
        ).all()
    total = SEED_ROWS + clients * LOADS * BATCH
    assert [row.id for row in stored] == list(range(total))
    assert [row.category for row in stored] == [i % 7 for i in range(total)]
    # Rows were sent in float32, so they must come back bit for bit.
    sent = np.concatenate(
        [vectors(0, SEED_ROWS)]
        + [vectors(SEED_ROWS + i * BATCH, BATCH) for i in range(clients * LOADS)]
    )
    assert np.array_equal(np.array([row.embedding for row in stored], dtype=np.float32), sent)


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_concurrent_loads_through_pgbouncer_store_what_was_sent(
    pgbouncer: StartPgBouncer, direct: Engine, pool_mode: str
) -> None:
    bouncer = pgbouncer(pool_mode=pool_mode)
    engine = create_app_engine(
        bouncer.url(direct.url), EngineSettings(pool_size=CLIENTS, max_overflow=0)
    )
    start = threading.Barrier(CLIENTS)
    try:
        with ThreadPoolExecutor(CLIENTS) as executor:
            futures = [executor.submit(client, engine, n, start) for n in range(CLIENTS)]
            problems = [problem for future in futures for problem in future.result()]
    finally:
        engine.dispose()
    check(direct, problems, CLIENTS)


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_two_loaders_taking_turns_through_pgbouncer_store_what_was_sent(
    pgbouncer: StartPgBouncer, direct: Engine, pool_mode: str
) -> None:
    bouncer = pgbouncer(pool_mode=pool_mode)
    settings = EngineSettings(pool_size=1, max_overflow=0)
    engines = [create_app_engine(bouncer.url(direct.url), settings) for _ in range(2)]
    try:
        problems = [
            problem
            for load_number in range(LOADS)
            for number, engine in enumerate(engines)
            for problem in load_once(engine, number, load_number)
        ]
    finally:
        for engine in engines:
            engine.dispose()
    check(direct, problems, len(engines))
