"""Searches on a distributed table: their settings reach every shard and end with the
transaction, their answers match a single server's, and a filter on the distribution column
sends them to one shard.

Whether a setting reached the shards is read from what the shards did: with ``ef_search = 1``
and iterative scans off, each shard's HNSW scan returns one row, so a search for 100 rows gets
one per shard. Recall is measured against a brute-force answer computed with numpy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Engine, Index, create_engine, event, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgvector_base.aio import AsyncVectorSearch
from pgvector_base.loading import load
from pgvector_base.search import SearchSettings, VectorSearch
from pgvector_base.session import (
    EngineSettings,
    async_session_factory,
    create_app_engine,
    create_async_app_engine,
    session_factory,
    set_local,
)

from .conftest import CitusDatabase

ROWS = 4000
DIMENSIONS = 16
TENANTS = 8
SHARDS = 4
K = 100
ONE_PER_SHARD = SearchSettings(ef_search=1, iterative_scan="off")


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "citus_doc"
    tenant: Mapped[int] = mapped_column(primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    embedding: Mapped[list[float]] = mapped_column(VECTOR(DIMENSIONS))
    __table_args__ = (
        Index(
            "ix_citus_doc_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_l2_ops"},
        ),
    )


def rows() -> npt.NDArray[np.float32]:
    return np.random.default_rng(0).standard_normal((ROWS, DIMENSIONS)).astype(np.float32)


QUERIES = np.random.default_rng(1).standard_normal((20, DIMENSIONS)).astype(np.float32)


def fill(engine: Engine, *, distribute: bool) -> None:
    """The table, distributed (4 shards) or not, with the rows, indexed and analyzed (by
    :func:`~pgvector_base.loading.load`)."""
    vectors = rows()
    with engine.begin() as connection:
        Base.metadata.create_all(connection)
        if distribute:
            connection.execute(
                text("SELECT create_distributed_table('citus_doc', 'tenant', shard_count => :n)"),
                {"n": SHARDS},
            )
        load(
            connection,
            Base.metadata.tables["citus_doc"],
            [(n % TENANTS, n, vector) for n, vector in enumerate(vectors)],
        )


@pytest.fixture(scope="module")
def cluster_engine(citus_database: CitusDatabase) -> Iterator[Engine]:
    """The application's engine on a cluster database with the distributed table; one pooled
    connection, so that every test's transactions share it."""
    url = citus_database()
    setup = create_engine(url)
    with setup.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        # The shards are small enough for a sequential scan, which would not show the index's
        # settings; set for the workers' connections too (Citus propagates it).
        connection.execute(text(f"ALTER DATABASE {url.database} SET enable_seqscan = off"))
    fill(setup, distribute=True)
    setup.dispose()
    engine = create_app_engine(url, EngineSettings(pool_size=1, max_overflow=0))
    yield engine
    engine.dispose()


def keys(session: Session, settings: SearchSettings | None = None, k: int = K) -> list[Any]:
    search = VectorSearch(Doc, Doc.embedding)
    return [key for key, _ in search.nearest_keys(session, QUERIES[0], k, settings=settings)]


def test_a_searchs_settings_reach_every_shard_and_end_with_it(cluster_engine: Engine) -> None:
    sessions = session_factory(cluster_engine)
    with sessions() as session:
        assert len(keys(session)) == K  # pgvector's default ef_search, 40 per shard
        found = keys(session, ONE_PER_SHARD)
        assert 1 <= len(found) <= SHARDS, found
        # Rolled back with the search's savepoint, on the coordinator and on the shards.
        assert len(keys(session)) == K
        assert session.scalar(text("SELECT current_setting('hnsw.ef_search')")) == "40"


def test_set_config_alone_would_not_reach_the_shards(cluster_engine: Engine) -> None:
    # Why set_local sends SET LOCAL on Citus: the way it sets them on one server changes
    # nothing on the shards, silently.
    with cluster_engine.begin() as connection:
        connection.execute(text("SELECT set_config('hnsw.ef_search', '1', true)"))
        connection.execute(text("SELECT set_config('hnsw.iterative_scan', 'off', true)"))
        with Session(connection) as session:
            assert len(keys(session)) == K


def test_configured_settings_reach_the_shards_and_leave_the_pooled_connection_clean(
    cluster_engine: Engine,
) -> None:
    sessions = session_factory(cluster_engine)
    search = VectorSearch(Doc, Doc.embedding)
    with sessions() as session:
        backend = session.scalar(text("SELECT pg_backend_pid()"))
        search.configure(session, ONE_PER_SHARD)
        assert 1 <= len(keys(session)) <= SHARDS
        assert 1 <= len(keys(session)) <= SHARDS  # for the rest of the transaction
        session.commit()
        # The same pooled connection (pool_size=1), and the same workers' connections, which
        # Citus keeps open between transactions: nothing stayed on either.
        assert session.scalar(text("SELECT pg_backend_pid()")) == backend
        assert len(keys(session)) == K
        assert session.scalar(text("SELECT current_setting('hnsw.ef_search')")) == "40"


def test_a_value_is_quoted_and_a_bad_name_refused_before_anything_is_sent(
    cluster_engine: Engine,
) -> None:
    with cluster_engine.begin() as connection:
        set_local(connection, {"application_name": "it's \\ 100%"})
        assert connection.scalar(text("SELECT current_setting('application_name')")) == (
            "it's \\ 100%"
        )
        with pytest.raises(ValueError, match="not a setting's name"):
            set_local(connection, {"hnsw.ef_search = 1; DROP TABLE citus_doc; --": "1"})
        assert connection.scalar(text("SELECT count(*) FROM citus_doc")) == ROWS


def test_async_searchs_settings_reach_every_shard(cluster_engine: Engine) -> None:
    async def run() -> tuple[int, int]:
        engine = create_async_app_engine(cluster_engine.url, EngineSettings(pool_size=1))
        search = AsyncVectorSearch(Doc, Doc.embedding)
        try:
            async with async_session_factory(engine)() as session:
                limited = await search.nearest_keys(session, QUERIES[0], K, settings=ONE_PER_SHARD)
                default = await search.nearest_keys(session, QUERIES[0], K)
        finally:
            await engine.dispose()
        return len(limited), len(default)

    limited, default = asyncio.run(run())
    assert 1 <= limited <= SHARDS
    assert default == K


def recall(engine: Engine, settings: SearchSettings) -> float:
    """Mean recall@10 of the search over ``QUERIES`` against numpy's exact answer."""
    vectors = rows()
    search = VectorSearch(Doc, Doc.embedding)
    hits = 0
    with Session(engine) as session:
        for query in QUERIES:
            exact = set(np.argsort(((vectors - query) ** 2).sum(axis=1))[:10].tolist())
            found = search.nearest_keys(session, query, 10, settings=settings)
            hits += len(exact & {key[1] for key, _ in found})
    return hits / (10 * len(QUERIES))


def test_recall_equals_a_single_servers_on_the_same_rows(
    cluster_engine: Engine, vector_engine: Engine
) -> None:
    fill(vector_engine, distribute=False)
    # Each shard's scan keeps ef_search candidates, so the cluster's recall can only be higher.
    settings = SearchSettings(ef_search=40)
    single = recall(vector_engine, settings)
    assert recall(cluster_engine, settings) == pytest.approx(single, abs=0.01)


def test_a_search_filtered_on_the_distribution_column_runs_on_one_shard(
    cluster_engine: Engine,
) -> None:
    search = VectorSearch(Doc, Doc.embedding)
    sent: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        sent.append((args[2], args[3]))

    with Session(cluster_engine) as session:
        connection = session.connection()
        event.listen(connection, "before_cursor_execute", capture)
        found = search.nearest_keys(session, QUERIES[0], 10, where=[Doc.tenant == 3])
        event.remove(connection, "before_cursor_execute", capture)
        assert found
        assert {key[0] for key, _ in found} == {3}
        statement, parameters = sent[-1]
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(f"EXPLAIN {statement}", parameters)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "Task Count: 1" in plan, plan


def test_settings_reach_the_shards_when_every_statement_is_prepared(
    cluster_engine: Engine,
) -> None:
    # prepare_threshold=0 prepares each statement at its first run, the SET LOCALs too.
    engine = create_app_engine(
        cluster_engine.url, EngineSettings(pool_size=1, max_overflow=0, prepare_threshold=0)
    )
    try:
        with session_factory(engine)() as session:
            for _ in range(3):
                assert 1 <= len(keys(session, ONE_PER_SHARD)) <= SHARDS
            assert len(keys(session)) == K
    finally:
        engine.dispose()
