"""Hybrid search (``pgvector_base.search.hybrid``): the fused answers equal reciprocal rank fusion
of rankings computed here, independently of the statement under test.

The vector ranking is numpy's brute force over every stored vector; the text ranking is
PostgreSQL's own ``ts_rank_cd`` of each matching row, read by a plain SQL query of the test's
own on the ``body`` text (not the generated column or the index), then sorted and cut here. The
vector leg searches an IVFFlat index with ``probes`` equal to its lists, which scans every list:
exact, so that the answers must be equal, not close. The plans are PostgreSQL's own for the
statement as sent, with ``enable_seqscan`` off (the tables are small). Searches on a streaming
replica are ``replicas/test_replicas.py``'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    BigInteger,
    Computed,
    Engine,
    Index,
    Text,
    create_engine,
    func,
    insert,
    inspect,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.engine import URL
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgvector_base.aio import AsyncHybridSearch
from pgvector_base.search import (
    Distance,
    HybridHit,
    HybridSearch,
    NoIndexError,
    SearchSettings,
    text_indexes,
)
from pgvector_base.session import (
    async_session_factory,
    create_app_engine,
    create_async_app_engine,
    session_factory,
)
from tests.conftest import CreateDatabase

from .plans import plan

ROWS = 3000
DIM = 16
LISTS = 10
# Scans every list of the IVFFlat index: the exact answer.
EXACT = SearchSettings(probes=LISTS)
WORDS = [f"w{n}" for n in range(40)]
# Zipf-like word frequencies: a few words in many rows, most in few.
FREQUENCIES = 1 / np.arange(1, len(WORDS) + 1)
rng = np.random.default_rng(27)
VECTORS = rng.standard_normal((ROWS, DIM), dtype=np.float32)
BODIES = [
    " ".join(
        [*rng.choice(WORDS, size=int(rng.integers(3, 12)), p=FREQUENCIES / FREQUENCIES.sum())]
        + (["the"] if n % 3 == 0 else [])
    )
    for n in range(ROWS)
]
CATEGORIES = 4


class Base(DeclarativeBase):
    pass


class Note(Base):
    """Text with a generated tsvector column and its GIN index; an exact (IVFFlat, L2) and an
    HNSW (cosine) index on the embedding."""

    __tablename__ = "hybrid_note"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    category: Mapped[int]
    body: Mapped[str] = mapped_column(Text)
    document: Mapped[str] = mapped_column(
        TSVECTOR, Computed("to_tsvector('english', body)", persisted=True)
    )
    embedding: Mapped[list[float]] = mapped_column(VECTOR(DIM))
    __table_args__ = (
        Index(
            "ix_hybrid_note_l2",
            "embedding",
            postgresql_using="ivfflat",
            postgresql_with={"lists": LISTS},
            postgresql_ops={"embedding": "vector_l2_ops"},
        ),
        Index(
            "ix_hybrid_note_cosine",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
        Index("ix_hybrid_note_document", "document", postgresql_using="gin"),
    )


class Memo(Base):
    """The same rows, searched through an expression index in the 'simple' configuration,
    which keeps stop words such as "the"."""

    __tablename__ = "hybrid_memo"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    category: Mapped[int]
    body: Mapped[str] = mapped_column(Text)
    embedding: Mapped[list[float]] = mapped_column(VECTOR(DIM))
    __table_args__ = (
        Index(
            "ix_hybrid_memo_l2",
            "embedding",
            postgresql_using="ivfflat",
            postgresql_with={"lists": LISTS},
            postgresql_ops={"embedding": "vector_l2_ops"},
        ),
        Index(
            "ix_hybrid_memo_body",
            func.to_tsvector(literal_column("'simple'"), literal_column("body")),
            postgresql_using="gin",
        ),
    )


class Bare(Base):
    """A vector index and text, but no full-text index."""

    __tablename__ = "hybrid_bare"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    embedding: Mapped[list[float]] = mapped_column(VECTOR(DIM))
    __table_args__ = (
        Index(
            "ix_hybrid_bare_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_l2_ops"},
        ),
    )


class Unbuilt(DeclarativeBase):
    """Models that are only ever constructed against, never created."""


def embedding_index(table: str) -> Index:
    return Index(
        f"ix_{table}_embedding",
        "embedding",
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_l2_ops"},
    )


class TwoTexts(Unbuilt):
    """Two full-text indexes, in two configurations."""

    __tablename__ = "hybrid_two_texts"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    document: Mapped[str] = mapped_column(
        TSVECTOR, Computed("to_tsvector('english', body)", persisted=True)
    )
    embedding: Mapped[list[float]] = mapped_column(VECTOR(DIM))
    __table_args__ = (
        embedding_index(__tablename__),
        Index("ix_two_texts_document", "document", postgresql_using="gin"),
        Index("ix_two_texts_simple", text("to_tsvector('simple', body)"), postgresql_using="gin"),
    )


class Triggered(Unbuilt):
    """A tsvector column kept by a trigger: its configuration is nowhere in the model."""

    __tablename__ = "hybrid_triggered"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    document: Mapped[str] = mapped_column(TSVECTOR)
    embedding: Mapped[list[float]] = mapped_column(VECTOR(DIM))
    __table_args__ = (
        embedding_index(__tablename__),
        Index("ix_triggered_document", "document", postgresql_using="gin"),
    )


CONFIGS = {Note: "english", Memo: "simple"}
Model = type[Note] | type[Memo]


@pytest.fixture(scope="module")
def url(create_database: CreateDatabase) -> URL:
    """A database of the module's own with the same rows in both tables, analyzed."""
    url = create_database()
    engine = create_engine(url)
    rows = [
        {"id": n, "category": n % CATEGORIES, "body": body, "embedding": vector.tolist()}
        for n, (body, vector) in enumerate(zip(BODIES, VECTORS, strict=True))
    ]
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        Base.metadata.create_all(connection)
        connection.execute(insert(Note), rows)
        connection.execute(insert(Memo), rows)
        connection.execute(text("ANALYZE"))
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def engine(url: URL) -> Iterator[Engine]:
    engine = create_app_engine(url)
    yield engine
    engine.dispose()


def query_vector(n: int) -> np.ndarray[Any, Any]:
    """A query near row ``n``, stored nowhere."""
    near: np.ndarray[Any, Any] = VECTORS[n] + np.float32(0.05)
    return near


def expected(
    session: Session,
    model: Model,
    query: np.ndarray[Any, Any],
    words: str,
    *,
    k: int,
    depth: int,
    vector_weight: float = 1.0,
    text_weight: float = 1.0,
    k_rrf: float = 60.0,
    category: int | None = None,
) -> list[tuple[int, float, int | None, int | None]]:
    """``(id, score, vector rank, text rank)`` of the ``k`` best rows by RRF, computed here."""
    keep = [n for n in range(ROWS) if category is None or n % CATEGORIES == category]
    distances = np.linalg.norm(VECTORS[keep].astype(np.float64) - query.astype(np.float64), axis=1)
    nearest = np.argsort(distances, kind="stable")[: depth + 1]
    # No two distances so close that float4 arithmetic on the server could order them otherwise.
    assert np.min(np.diff(distances[nearest])) > 1e-5
    vector_ranks = {keep[n]: rank for rank, n in enumerate(nearest[:depth], 1)}
    config = CONFIGS[model]
    scored = session.execute(
        text(
            f"SELECT id, ts_rank_cd(to_tsvector('{config}', body), "
            f"websearch_to_tsquery('{config}', :words)) FROM {model.__tablename__} "
            f"WHERE to_tsvector('{config}', body) @@ websearch_to_tsquery('{config}', :words)"
        ),
        {"words": words},
    ).all()
    matches = sorted(
        ((key, score) for key, score in scored if key in set(keep)),
        key=lambda match: (-match[1], match[0]),
    )[:depth]
    text_ranks = {
        key: 1 + sum(1 for _, other in matches if other > score) for key, score in matches
    }
    fused = []
    for key in vector_ranks.keys() | text_ranks.keys():
        vector_rank, text_rank = vector_ranks.get(key), text_ranks.get(key)
        score = (0.0 if vector_rank is None else vector_weight / (k_rrf + vector_rank)) + (
            0.0 if text_rank is None else text_weight / (k_rrf + text_rank)
        )
        fused.append((key, score, vector_rank, text_rank))
    fused.sort(key=lambda hit: (-hit[1], hit[0]))
    return fused[:k]


def found(hits: list[HybridHit[Any]]) -> list[tuple[int, float, int | None, int | None]]:
    return [(hit.item.id, hit.score, hit.vector_rank, hit.text_rank) for hit in hits]


CASES = [
    # (query row, words, weights): one word, an OR, two words ANDed, a phrase with a stop word.
    (7, "w3", (1.0, 1.0)),
    (11, "w1 or w9", (1.0, 1.0)),
    (23, "w0 w2", (0.5, 2.0)),
    (42, "the w5", (2.0, 0.5)),
]


@pytest.mark.parametrize("model", [Note, Memo])
@pytest.mark.parametrize("case", CASES, ids=[words for _, words, _ in CASES])
@pytest.mark.parametrize("k", [25, 60])
def test_results_equal_the_rrf_of_the_exact_and_ts_rank_cd_rankings(
    engine: Engine, model: Model, case: tuple[int, str, tuple[float, float]], k: int
) -> None:
    """k = 25 cuts the fused list; k = 60 (twice the depth) returns every candidate."""
    row, words, weights = case
    search = HybridSearch(model, model.embedding, Distance.L2)
    query = query_vector(row)
    vector_weight, text_weight = weights
    with Session(engine) as session:
        hits = search.search(
            session,
            query,
            words,
            k=k,
            depth=30,
            vector_weight=vector_weight,
            text_weight=text_weight,
            settings=EXACT,
        )
        want = expected(
            session,
            model,
            query,
            words,
            k=k,
            depth=30,
            vector_weight=vector_weight,
            text_weight=text_weight,
        )
    assert found(hits) == want
    if k == 60:  # each leg has rows of its own
        assert {hit.vector_rank is None for hit in hits} == {True, False}
        assert {hit.text_rank is None for hit in hits} == {True, False}
    for hit in hits:
        assert (hit.distance is None) == (hit.vector_rank is None)
        if hit.distance is not None:
            assert hit.distance == pytest.approx(
                float(np.linalg.norm(VECTORS[hit.item.id] - query)), rel=1e-5
            )


def test_the_configuration_comes_from_the_declaration() -> None:
    assert [(index.name, index.config) for index in text_indexes(Note)] == [
        ("ix_hybrid_note_document", "english")
    ]
    assert [(index.name, index.config) for index in text_indexes(Memo)] == [
        ("ix_hybrid_memo_body", "simple")
    ]


def test_filters_hold_on_both_legs(engine: Engine) -> None:
    """With a filter, both legs take their depth from the matching rows only: equal to the
    rankings computed over those rows, which a filter applied after either leg would not be."""
    search = HybridSearch(Note, Note.embedding, Distance.L2)
    query = query_vector(5)
    with Session(engine) as session:
        hits = search.search(
            session, query, "w2", k=40, depth=20, where=[Note.category == 1], settings=EXACT
        )
        want = expected(session, Note, query, "w2", k=40, depth=20, category=1)
    assert found(hits) == want
    assert all(hit.item.category == 1 for hit in hits)
    # Only the search reads the vector and the tsvector: neither is loaded with the rows.
    assert {"embedding", "document"} <= inspect(hits[0].item).unloaded
    assert sorted(hit.vector_rank for hit in hits if hit.vector_rank) == list(range(1, 21))
    assert max(hit.text_rank or 0 for hit in hits) > 1


@pytest.mark.parametrize(
    ("model", "distance", "vector_index", "text_index"),
    [
        (Note, Distance.COSINE, "ix_hybrid_note_cosine", "ix_hybrid_note_document"),
        (Note, Distance.L2, "ix_hybrid_note_l2", "ix_hybrid_note_document"),
        (Memo, Distance.L2, "ix_hybrid_memo_l2", "ix_hybrid_memo_body"),
    ],
)
def test_both_legs_use_their_indexes(
    engine: Engine, model: Model, distance: Distance, vector_index: str, text_index: str
) -> None:
    search = HybridSearch(model, model.embedding, distance)
    with Session(engine) as session:
        explained = plan(
            engine,
            lambda: search.search(session, query_vector(3), "w4", 10, where=[model.category == 2]),
            "SET LOCAL enable_seqscan = off",
            marker="vector_hits",
        )
    assert f"Index Scan using {vector_index}" in explained
    assert f"Bitmap Index Scan on {text_index}" in explained
    assert "Seq Scan" not in explained


def test_ef_search_is_raised_to_the_depth_for_the_statement_alone(engine: Engine) -> None:
    """An HNSW scan returns at most ef_search rows: 40 by default, so a vector leg 100 deep gets
    its 100 only if the search raises it; afterwards the transaction has the server's value."""
    search = HybridSearch(Note, Note.embedding, Distance.COSINE)
    query = query_vector(9)
    show = text("SELECT current_setting('hnsw.ef_search')")

    def vector_ranks(hits: list[HybridHit[Note]]) -> list[int]:
        return sorted(hit.vector_rank for hit in hits if hit.vector_rank is not None)

    with session_factory(engine)() as session:
        hits = search.search(session, query, "w30", k=200, depth=100)
        assert vector_ranks(hits) == list(range(1, 101))
        assert session.execute(show).scalar_one() == "40"
        # The settings given are raised too, and only where they fall short.
        few = search.search(
            session, query, "w30", k=200, depth=60, settings=SearchSettings(ef_search=10)
        )
        assert vector_ranks(few) == list(range(1, 61))
        assert session.execute(show).scalar_one() == "40"
        # The same statement without the raise: the scan stops at ef_search.
        rows = session.execute(
            search.statement(),
            {
                "query": query.tolist(),
                "text": "w30",
                "k": 200,
                "depth": 100,
                "vector_weight": 1.0,
                "text_weight": 1.0,
                "k_rrf": 60.0,
            },
        ).all()
        assert len([row for row in rows if row.vector_rank is not None]) <= 40


def test_a_model_without_a_text_index_is_refused_in_one_line() -> None:
    with pytest.raises(NoIndexError) as refused:
        HybridSearch(Bare, Bare.embedding)
    assert str(refused.value) == (
        "Bare has no full-text index, so every text search would scan the whole table; declare "
        "a GIN index on a tsvector column generated by to_tsvector('english', ...) or on "
        "to_tsvector('english', <column>) in the model's __table_args__"
    )


@pytest.mark.parametrize(
    ("model", "text_index", "message"),
    [
        (
            TwoTexts,
            None,
            "TwoTexts has several full-text indexes (ix_two_texts_document, "
            "ix_two_texts_simple); pass text_index= to choose one",
        ),
        (
            TwoTexts,
            "ix_nope",
            "TwoTexts has no full-text index ix_nope; its full-text indexes: "
            "ix_two_texts_document, ix_two_texts_simple",
        ),
        (
            Triggered,
            None,
            "index ix_triggered_document of Triggered names no text search configuration; "
            "generate its tsvector column with Computed(\"to_tsvector('english', ...)\") "
            "(or the one you use)",
        ),
    ],
)
def test_an_ambiguous_or_unreadable_text_index_is_refused_in_one_line(
    model: type[Any], text_index: str | None, message: str
) -> None:
    with pytest.raises(NoIndexError) as refused:
        HybridSearch(model, model.embedding, text_index=text_index)
    assert str(refused.value) == message


def test_text_index_picks_one_of_several() -> None:
    chosen = HybridSearch(TwoTexts, TwoTexts.embedding, text_index="ix_two_texts_simple")
    assert (chosen.text_index.expression, chosen.text_index.config) == (
        "to_tsvector('simple', body)",
        "simple",
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"depth": 1001}, "depth must be a whole number from 1 to 1000 (the largest"),
        ({"depth": 0}, "depth must be a whole number from 1 to 1000"),
        ({"words": b"w1"}, "the query text must be a str, not bytes"),
        ({"words": "w1\x00"}, "the query text contains a NUL character"),
        ({"text_weight": -1.0}, "text_weight must be a finite number of at least 0, not -1.0"),
        ({"k_rrf": float("nan")}, "k_rrf must be a finite number of at least 0, not nan"),
    ],
)
def test_bad_arguments_are_refused_in_one_line_before_any_query(
    arguments: dict[str, Any], message: str
) -> None:
    search = HybridSearch(Note, Note.embedding, Distance.COSINE)
    words = arguments.pop("words", "w1")
    # No session is needed: nothing reaches the server.
    with pytest.raises(ValueError, match=r"^[^\n]+$") as refused:
        search.search(None, query_vector(1), words, **arguments)  # type: ignore[arg-type]
    assert str(refused.value).startswith(message)


def test_async_equals_sync(url: URL, engine: Engine) -> None:
    searches = {
        model: (
            HybridSearch(model, model.embedding, Distance.L2),
            AsyncHybridSearch(model, model.embedding, Distance.L2),
        )
        for model in (Note, Memo)
    }
    cases = [(model, row, words) for model in searches for row, words, _ in CASES]
    with Session(engine) as session:
        want = [
            found(
                searches[model][0].search(
                    session,
                    query_vector(row),
                    words,
                    15,
                    where=[model.category < 3],
                    settings=EXACT,
                )
            )
            for model, row, words in cases
        ]

    async def main() -> list[list[tuple[int, float, int | None, int | None]]]:
        async_engine = create_async_app_engine(url)
        sessions = async_session_factory(async_engine)

        async def request(model: Model, row: int, words: str) -> list[Any]:
            async with sessions() as session:
                hits = await searches[model][1].search(
                    session,
                    query_vector(row),
                    words,
                    15,
                    where=[model.category < 3],
                    settings=EXACT,
                )
                return found(hits)

        try:
            return list(await asyncio.gather(*(request(*case) for case in cases)))
        finally:
            await async_engine.dispose()

    assert asyncio.run(main()) == want
