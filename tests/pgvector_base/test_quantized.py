"""Searches through quantized indexes (``pgvector_base.search.quantized``): a ``halfvec``
expression index and a binary-quantization index on a ``vector`` column, re-ranked by the exact
distance on the full vector in one statement.

The plans are PostgreSQL's own for the SQL that was sent. The oracle for the answers: the index's
candidates, read by SQL written here (pgvector README's shape), re-ranked by numpy's cosine
distance on the stored vectors; whenever numpy's exact top k is among the candidates, the answer
is that exact top k.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pgvector.sqlalchemy import BIT, HALFVEC, VECTOR
from sqlalchemy import BigInteger, Engine, Index, cast, create_engine, event, func, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgvector_base.aio import AsyncVectorSearch
from pgvector_base.database import DATABASE_URL_ENV
from pgvector_base.loading import load
from pgvector_base.search import Distance, HybridSearch, NoIndexError, SearchSettings, VectorSearch
from pgvector_base.search.indexes import QuantizedIndex
from pgvector_base.search.quantized import DEFAULT_OVERSAMPLING
from pgvector_base.search.recall import main as recall_command
from pgvector_base.search.recall import measure_recall
from pgvector_base.session import async_session_factory, create_app_engine, create_async_app_engine
from tests.conftest import CreateDatabase

from .plans import plan

ROWS = 3000
DIM = 64
WIDE_ROWS = 300
WIDE_DIM = 3072  # OpenAI's large embeddings: above what HNSW indexes as vector
K = 10
HALF = "ix_quantized_doc_half"
BITS = "ix_quantized_doc_bits"


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "quantized_doc"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    category: Mapped[int]
    embedding: Mapped[list[float]] = mapped_column(VECTOR(DIM))


Index(
    HALF,
    cast(Doc.embedding, HALFVEC(DIM)).label("embedding_half"),
    postgresql_using="hnsw",
    postgresql_ops={"embedding_half": "halfvec_cosine_ops"},
)
Index(
    BITS,
    cast(func.binary_quantize(Doc.embedding), BIT(DIM)).label("embedding_bits"),
    postgresql_using="hnsw",
    postgresql_ops={"embedding_bits": "bit_hamming_ops"},
)


class Wide(Base):
    __tablename__ = "quantized_wide"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    embedding: Mapped[list[float]] = mapped_column(VECTOR(WIDE_DIM))


Index(
    "ix_quantized_wide_half",
    cast(Wide.embedding, HALFVEC(WIDE_DIM)).label("embedding_half"),
    postgresql_using="hnsw",
    postgresql_ops={"embedding_half": "halfvec_l2_ops"},
)

rng = np.random.default_rng(27)
# Clustered, as embeddings are: 150 topics of 20 rows each.
CENTERS = rng.standard_normal((ROWS // 20, DIM), dtype=np.float32)
VECTORS = np.repeat(CENTERS, 20, axis=0) + rng.standard_normal((ROWS, DIM), dtype=np.float32) * 0.5
WIDE = rng.standard_normal((WIDE_ROWS, WIDE_DIM), dtype=np.float32)
QUERIES = [
    VECTORS[n] + rng.standard_normal(DIM, dtype=np.float32) * 0.3 for n in range(0, ROWS, 100)
]
# How the test itself reads the index's candidates: pgvector README's queries, by hand.
CANDIDATES = {
    HALF: "SELECT id FROM quantized_doc ORDER BY embedding::halfvec(64) <=> "
    "CAST(:query AS vector(64))::halfvec(64) LIMIT :candidates",
    BITS: "SELECT id FROM quantized_doc ORDER BY binary_quantize(embedding)::bit(64) <~> "
    "binary_quantize(CAST(:query AS vector(64))) LIMIT :candidates",
}


@pytest.fixture(scope="module")
def url(create_database: CreateDatabase) -> URL:
    url = create_database()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        Base.metadata.create_all(connection)
        load(connection, Doc.__table__, ((n, n % 10, v) for n, v in enumerate(VECTORS)))  # type: ignore[arg-type]
        load(connection, Wide.__table__, enumerate(WIDE))  # type: ignore[arg-type]
        connection.execute(text("ANALYZE"))
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def engine(url: URL) -> Iterator[Engine]:
    engine = create_app_engine(url)
    yield engine
    engine.dispose()


def searches() -> dict[str, VectorSearch[Doc]]:
    return {
        HALF: VectorSearch(Doc, Doc.embedding),
        BITS: VectorSearch(Doc, Doc.embedding, Distance.COSINE, index=BITS),
    }


def test_the_indexes_are_found_with_their_quantization() -> None:
    found = searches()
    half, bits = found[HALF].index, found[BITS].index
    assert isinstance(half, QuantizedIndex)
    assert isinstance(bits, QuantizedIndex)
    assert (half.method, half.distance, half.kind, half.dimensions) == (
        "hnsw",
        Distance.COSINE,
        "halfvec",
        DIM,
    )
    assert (bits.distance, bits.kind, bits.dimensions) == (Distance.HAMMING, "binary", DIM)
    # Both rank their candidates by the full vector's cosine distance.
    assert found[HALF].distance is found[BITS].distance is Distance.COSINE


def test_binary_quantization_needs_the_distance_to_rank_by() -> None:
    with pytest.raises(NoIndexError, match="pass distance="):
        VectorSearch(Doc, Doc.embedding, index=BITS)
    with pytest.raises(NoIndexError, match="has no searchable index ix_nowhere"):
        VectorSearch(Doc, Doc.embedding, index="ix_nowhere")


@pytest.mark.parametrize("name", [HALF, BITS])
def test_every_search_is_served_by_the_expression_index(engine: Engine, name: str) -> None:
    search = searches()[name]
    query = QUERIES[0].tolist()
    with Session(engine) as session:
        for run in (
            lambda: search.nearest(session, query, K),
            lambda: search.nearest_keys(session, query, K),
            lambda: search.nearest_keys(session, query, K, where=[Doc.category != 3]),
            lambda: search.neighbors_of(session, 5, K),
        ):
            assert f"Index Scan using {name}" in plan(engine, run)


def numpy_top(query: np.ndarray[Any, Any], among: list[int] | None = None) -> list[int]:
    """The K nearest ids by cosine distance, over every row or ``among`` those, by numpy."""
    ids = np.arange(ROWS) if among is None else np.array(among)
    rows = VECTORS[ids].astype(np.float64)
    q = query.astype(np.float64)
    distances = 1 - rows @ q / (np.linalg.norm(rows, axis=1) * np.linalg.norm(q))
    return [int(ids[n]) for n in np.argsort(distances, kind="stable")[:K]]


@pytest.mark.parametrize(("name", "oversampling"), [(HALF, 2), (BITS, 2), (BITS, 8)])
def test_answers_are_the_candidates_reranked_and_exact_when_they_hold_the_top_k(
    engine: Engine, name: str, oversampling: int
) -> None:
    search = searches()[name]
    settings = SearchSettings(ef_search=200, oversampling=oversampling)
    held = 0
    with Session(engine) as session:
        for query in QUERIES:
            keys = [key for key, _ in search.nearest_keys(session, query, K, settings=settings)]
            hits = [
                hit.item.id for hit in search.nearest(session, query.tolist(), K, settings=settings)
            ]
            with session.begin_nested():
                session.execute(text("SELECT set_config('hnsw.ef_search', '200', true)"))
                candidates = list(
                    session.scalars(
                        text(CANDIDATES[name]),
                        {"query": str(query.tolist()), "candidates": K * oversampling},
                    )
                )
            exact = numpy_top(query)
            assert keys == hits == numpy_top(query, candidates)
            if set(exact) <= set(candidates):
                held += 1
                assert keys == exact
    assert held >= len(QUERIES) // 2  # the case the issue names is exercised


def test_binary_recall_grows_with_oversampling_and_is_below_one_at_one(engine: Engine) -> None:
    search = searches()[BITS]
    with Session(engine) as session:
        low, high = (
            measure_recall(
                session, search, sample=40, settings=SearchSettings(ef_search=100, oversampling=n)
            )
            for n in (1, 8)
        )
    assert low.recall < 1
    assert low.recall < high.recall


def test_ef_search_is_raised_to_the_candidates_unless_the_settings_give_one(engine: Engine) -> None:
    """HNSW returns at most ef_search rows: 10 results times 8 candidates need ef_search 80."""
    seen: list[str] = []

    def after(connection: Any, *args: Any) -> None:
        if "ORDER BY" in args[1]:
            seen.append(connection.exec_driver_sql("SHOW hnsw.ef_search").scalar_one())

    found = searches()
    event.listen(engine, "after_cursor_execute", after)
    try:
        with Session(engine) as session:
            for name in (HALF, BITS):
                found[name].nearest_keys(session, QUERIES[0], K)
            for settings in (
                SearchSettings(oversampling=3),
                SearchSettings(oversampling=8),
                SearchSettings(oversampling=8, ef_search=30),
            ):
                found[BITS].nearest_keys(session, QUERIES[0], K, settings=settings)
            # What configure() set stays when it is above the candidates: it is never lowered.
            found[BITS].configure(session, SearchSettings(ef_search=200))
            found[BITS].nearest_keys(session, QUERIES[0], K)
    finally:
        event.remove(engine, "after_cursor_execute", after)
    defaults = [str(max(40, K * DEFAULT_OVERSAMPLING[kind])) for kind in ("halfvec", "binary")]
    assert seen == [*defaults, "40", "80", "30", "200"]


def test_oversampling_is_refused_for_a_whole_column_index() -> None:
    class Other(DeclarativeBase):
        pass

    class Plain(Other):
        __tablename__ = "quantized_plain"
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        embedding: Mapped[list[float]] = mapped_column(VECTOR(3))
        __table_args__ = (
            Index(
                "ix_quantized_plain",
                "embedding",
                postgresql_using="hnsw",
                postgresql_ops={"embedding": "vector_l2_ops"},
            ),
        )

    search = VectorSearch(Plain, Plain.embedding)
    with pytest.raises(ValueError, match="oversampling do not apply to ix_quantized_plain"):
        SearchSettings(oversampling=4).parameters(search.index)


def test_a_3072_dimension_column_is_searchable_through_its_halfvec_index(engine: Engine) -> None:
    search = VectorSearch(Wide, Wide.embedding)
    query = WIDE[7].tolist()
    with Session(engine) as session:
        assert "Index Scan using ix_quantized_wide_half" in plan(
            engine, lambda: search.nearest_keys(session, query, 3), "SET LOCAL enable_seqscan = off"
        )
        keys = search.nearest_keys(session, query, 3, settings=SearchSettings(ef_search=100))
    distances = np.linalg.norm(WIDE.astype(np.float64) - WIDE[7].astype(np.float64), axis=1)
    assert [key for key, _ in keys] == [int(n) for n in np.argsort(distances)[:3]]


def test_async_searches_go_through_the_quantized_index(url: URL) -> None:
    search = AsyncVectorSearch(Doc, Doc.embedding)

    async def main() -> list[int]:
        engine = create_async_app_engine(url)
        try:
            async with async_session_factory(engine)() as session:
                found = await search.nearest_keys(
                    session, QUERIES[1], K, settings=SearchSettings(ef_search=200, oversampling=4)
                )
                return [key for key, _ in found]
        finally:
            await engine.dispose()

    with Session(create_app_engine(url)) as session:
        expected = [
            key
            for key, _ in searches()[HALF].nearest_keys(
                session, QUERIES[1], K, settings=SearchSettings(ef_search=200, oversampling=4)
            )
        ]
    assert asyncio.run(main()) == expected


def test_the_recall_command_measures_a_quantized_index(
    url: URL, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, url.render_as_string(hide_password=False))
    column = f"{__name__}:Doc.embedding"
    arguments = [column, "--index", BITS, "--sample", "20", "--oversampling", "2"]
    assert recall_command([*arguments, "--distance", "cosine"]) == 0
    assert re.fullmatch(
        r"recall@10 0\.\d{3} over 20 queries \(min [0-9.]+\)\n", capsys.readouterr().out
    )
    assert recall_command(arguments) == 1
    assert "pass distance=" in capsys.readouterr().err


def test_hybrid_search_refuses_a_column_with_only_a_quantized_index() -> None:
    """Its vector leg orders by the whole column, which a quantized index does not serve."""
    with pytest.raises(NoIndexError, match="has only a quantized index"):
        HybridSearch(Doc, Doc.embedding)
