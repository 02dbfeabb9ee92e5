"""Hybrid search beside vector-only search, on one table of short documents and their vectors.

The data are real word vectors where the optional GloVe package is installed
(:mod:`.datasets`), else the benchmark's synthetic vectors with made-up words. Row ``i`` of
``hybrid_doc`` is a document of :data:`DOCUMENT_WORDS` words: word ``i`` of the vocabulary and
words drawn by Zipf's law from the most frequent ones (past the punctuation and stop words at the
top of GloVe's list); its embedding is the mean of its words' vectors, scaled to unit length. A
query is two words of a random document, either of which a match must contain, and the mean of
their two vectors. The table has an HNSW index (cosine) on the embedding and a GIN index on a
generated ``tsvector``.

Each query is answered by :meth:`VectorSearch.nearest` (k rows, pgvector's default ef_search, and
ef_search = 100 beside the deeper hybrid) and by :meth:`HybridSearch.search` with a depth of 40
(one round trip) and of 100 (``ef_search`` raised to 100 in a savepoint), taking turns query by
query; each figure is the median over ``--repeats`` rounds of a round's p50, and each ratio to the
default vector search's is taken round by round.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack

import numpy as np
import numpy.typing as npt
from benchmarks.bench.common import (
    WARMUP_QUERIES,
    HybridLatency,
    HybridRun,
    Spread,
    embeddings,
    in_turn,
)
from benchmarks.bench.datasets import GLOVE_WORDS, glove
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Computed, Engine, Index, Text, text
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgvector_base.loading import load
from pgvector_base.search import HybridSearch, SearchSettings, VectorSearch

DOCUMENT_WORDS = 8
# GloVe's most frequent "words" are punctuation and stop words, which no search looks for.
SKIPPED_WORDS = 100
# Documents draw their other words from this many of the most frequent.
VOCABULARY = 50_000
DEPTHS = (40, 100)
VECTOR_ONLY = "VectorSearch.nearest()"
VECTOR_INDEX = "ix_hybrid_doc_embedding"
TEXT_INDEX = "ix_hybrid_doc_document"


class HybridBase(DeclarativeBase):
    """The hybrid part's own table, apart from the benchmark's ``item``."""


class Doc(HybridBase):
    """A row of ``hybrid_doc``; :func:`doc_model` gives the embedding its dimensions."""

    __abstract__ = True

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    document: Mapped[str] = mapped_column(
        TSVECTOR, Computed("to_tsvector('english', body)", persisted=True)
    )
    embedding: Mapped[list[float]]


def doc_model(dim: int) -> type[Doc]:
    """The mapped ``hybrid_doc`` class for vectors of ``dim`` dimensions."""

    class SizedDoc(Doc):
        __tablename__ = "hybrid_doc"

        embedding: Mapped[list[float]] = mapped_column(VECTOR(dim))

        __table_args__ = (
            Index(
                VECTOR_INDEX,
                "embedding",
                postgresql_using="hnsw",
                postgresql_with={"m": 16, "ef_construction": 64},
                postgresql_ops={"embedding": "vector_cosine_ops"},
            ),
            Index(TEXT_INDEX, "document", postgresql_using="gin"),
        )

    return SizedDoc


Query = tuple[list[float], str]


def measure_hybrid(
    engine: Engine,
    app: Engine,
    *,
    rows: int,
    dim: int,
    queries: int,
    k: int,
    repeats: int,
    seed: int,
) -> HybridRun:
    """Load the documents, then time the searches, the methods taking turns."""
    rng = np.random.default_rng(seed)
    rows = min(rows, GLOVE_WORDS)
    found, missing = glove(rows)
    if found is not None:
        words, vectors, data = found.words, found.vectors, found.source
    else:
        words = [f"w{n}" for n in range(rows)]
        vectors = embeddings(rng, rows, dim)
        data = f"synthetic vectors and words ({missing})"
    members = document_words(rng, rows, len(words))
    model = doc_model(vectors.shape[1])
    table = HybridBase.metadata.tables["hybrid_doc"]
    with engine.begin() as connection:
        HybridBase.metadata.create_all(connection)
        load(
            connection,
            table,
            (
                (n, " ".join(words[m] for m in row), vector)
                for n, (row, vector) in enumerate(
                    zip(members, unit_mean(vectors, members), strict=True)
                )
            ),
            columns=["id", "body", "embedding"],
        )
    # The COPY left its rows in the GIN index's pending list, which the planner rightly counts
    # as slow to scan; VACUUM merges them into the index, as autovacuum would in time.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"VACUUM ANALYZE {table.name}"))
    try:
        asked = make_queries(rng, words, vectors, members, queries)
        return HybridRun(
            data=data,
            rows=rows,
            matches=matching(app, model, asked),
            latencies=time_searches(app, model, asked, k=k, repeats=repeats),
        )
    finally:
        # So that the later parts find shared buffers as they would without this one.
        with engine.begin() as connection:
            HybridBase.metadata.drop_all(connection)


def document_words(rng: np.random.Generator, rows: int, vocabulary: int) -> npt.NDArray[np.int64]:
    """Each document's words, as indexes into the vocabulary: its own word, then words drawn by
    Zipf's law (frequency falling as 1 / rank) from the most frequent, skipping the first."""
    ranks = np.arange(SKIPPED_WORDS, min(VOCABULARY, vocabulary))
    weights = 1 / (ranks + 1)
    others = rng.choice(ranks, size=(rows, DOCUMENT_WORDS - 1), p=weights / weights.sum())
    return np.column_stack([np.arange(rows), others])


def unit_mean(
    vectors: npt.NDArray[np.float32], members: npt.NDArray[np.int64]
) -> list[list[float]]:
    """The mean of each row's words' vectors, scaled to unit length."""
    total = np.zeros((len(members), vectors.shape[1]))
    for column in members.T:
        total += vectors[column]
    unit: list[list[float]] = (
        (total / np.linalg.norm(total, axis=1, keepdims=True)).astype(np.float32).tolist()
    )
    return unit


def make_queries(
    rng: np.random.Generator,
    words: list[str],
    vectors: npt.NDArray[np.float32],
    members: npt.NDArray[np.int64],
    count: int,
) -> list[Query]:
    """``count`` queries: two of the drawn words of a random document, either to match
    (``a or b``), and their mean vector."""
    asked = []
    for row in rng.integers(len(members), size=count):
        pair = rng.choice(members[row, 1:], size=2, replace=False)
        (vector,) = unit_mean(vectors, pair.reshape(1, 2))
        asked.append((vector, " or ".join(words[n] for n in pair)))
    return asked


def matching(app: Engine, model: type[Doc], asked: list[Query]) -> float:
    """The median number of rows whose text matches a query's words: the text leg's work."""
    count = text(
        f"SELECT count(*) FROM {model.__tablename__} "
        "WHERE document @@ websearch_to_tsquery('english', :words)"
    )
    with Session(app) as session:
        counts: list[int] = [session.scalar(count, {"words": words}) for _, words in asked]
    return statistics.median(counts)


def time_searches(
    app: Engine, model: type[Doc], asked: list[Query], *, k: int, repeats: int
) -> list[HybridLatency]:
    """The p50 of each method, round by round, and the hybrid's over the vector search's."""
    vector = VectorSearch(model, model.embedding)
    hybrid = HybridSearch(model, model.embedding)

    def hybrid_at(depth: int) -> Callable[[Session, Query], object]:
        return lambda session, query: hybrid.search(session, query[0], query[1], k, depth=depth)

    deep = SearchSettings(ef_search=DEPTHS[-1])
    methods: dict[str, Callable[[Session, Query], object]] = {
        VECTOR_ONLY: lambda session, query: vector.nearest(session, query[0], k),
        f"{VECTOR_ONLY}, ef_search = {DEPTHS[-1]}": lambda session, query: vector.nearest(
            session, query[0], k, settings=deep
        ),
        **{f"HybridSearch.search(), depth = {depth}": hybrid_at(depth) for depth in DEPTHS},
    }
    p50s: dict[str, list[float]] = {name: [] for name in methods}
    with ExitStack() as stack:
        sessions = {name: stack.enter_context(Session(app)) for name in methods}
        check_plan(sessions[VECTOR_ONLY], hybrid, asked[0], k)
        for query in asked[:WARMUP_QUERIES]:
            for name, method in methods.items():
                method(sessions[name], query)
        for round_number in range(repeats):
            timings: dict[str, list[float]] = {name: [] for name in methods}
            for number, query in enumerate(asked):
                for name, method in in_turn(methods, round_number * len(asked) + number):
                    started = time.perf_counter()
                    method(sessions[name], query)
                    timings[name].append(time.perf_counter() - started)
                    sessions[name].expunge_all()
            for name, times in timings.items():
                p50s[name].append(1000 * statistics.median(times))
    return [
        HybridLatency(
            name,
            Spread.of(p50s[name]),
            None
            if name == VECTOR_ONLY
            else Spread.of([h / v for h, v in zip(p50s[name], p50s[VECTOR_ONLY], strict=True)]),
        )
        for name in methods
    ]


def check_plan(session: Session, hybrid: HybridSearch[Doc], query: Query, k: int) -> None:
    """Refuse to measure a plan that does not use both indexes (too few ``--rows``?)."""
    statement = (
        hybrid.statement()
        .params(
            query=query[0],
            text=query[1],
            k=k,
            depth=DEPTHS[0],
            vector_weight=1.0,
            text_weight=1.0,
            k_rrf=60.0,
        )
        .compile(dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True})
    )
    plan = "\n".join(session.connection().exec_driver_sql(f"EXPLAIN {statement}").scalars())
    if VECTOR_INDEX not in plan or TEXT_INDEX not in plan:
        raise RuntimeError(f"hybrid search: not the plan to measure:\n{plan}")
