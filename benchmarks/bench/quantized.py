"""Quantized indexes side by side: the ``vector`` HNSW index, a ``halfvec`` expression HNSW index
re-ranked at 1, 2 and 4 times oversampling, and a binary-quantization HNSW index re-ranked at 2, 4
and 8 times (pgvector's README, "Scaling"), on the benchmark's synthetic set and, when its package
is installed, on as many GloVe 6B 50d word vectors (:mod:`.datasets`).

Each index is built on its own, the kinds taking turns, and measured for its size, its build time
(BuildSettings(), as the loader builds), the p50 of ``VectorSearch.nearest_keys`` through it at
pgvector's default ef_search, and recall@k by :func:`~pgvector_base.search.measure_recall`, which
compares each search with the exact answer on a sample of stored rows.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt
from benchmarks.bench.common import Quantized, Spread, checkpoint, embeddings, in_turn
from benchmarks.bench.datasets import GLOVE_WORDS, glove
from pgvector.sqlalchemy import BIT, HALFVEC, VECTOR
from sqlalchemy import BigInteger, Engine, Index, cast, func, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgvector_base.loading import BuildSettings, copy_rows
from pgvector_base.search import Distance, SearchSettings, VectorSearch, measure_recall
from pgvector_base.session import set_local

TABLE = "quantized_item"
VECTOR_INDEX = "ix_quantized_item_vector"
HALFVEC_INDEX = "ix_quantized_item_halfvec"
BINARY_INDEX = "ix_quantized_item_binary"
# halfvec keeps 11 bits of each value, so it needs fewer candidates than binary quantization's 1.
HALFVEC_OVERSAMPLING = (1, 2, 4)
BINARY_OVERSAMPLING = (2, 4, 8)
KINDS = {
    VECTOR_INDEX: "vector HNSW",
    HALFVEC_INDEX: "halfvec expression HNSW",
    BINARY_INDEX: "binary quantization HNSW",
}


def quantized_model(dim: int) -> tuple[type[Any], dict[str, Index]]:
    """The mapped table with ``dim`` dimensions (in metadata of its own, apart from the
    benchmark's ``item``), and its three indexes by name (not created)."""

    class QuantizedBase(DeclarativeBase):
        pass

    class QuantizedItem(QuantizedBase):
        __tablename__ = TABLE
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        embedding: Mapped[list[float]] = mapped_column(VECTOR(dim))

    column = QuantizedItem.__table__.c.embedding
    indexes = {
        VECTOR_INDEX: Index(
            VECTOR_INDEX,
            column,
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
        HALFVEC_INDEX: Index(
            HALFVEC_INDEX,
            cast(column, HALFVEC(dim)).label("embedding_half"),
            postgresql_using="hnsw",
            postgresql_ops={"embedding_half": "halfvec_cosine_ops"},
        ),
        BINARY_INDEX: Index(
            BINARY_INDEX,
            cast(func.binary_quantize(column), BIT(dim)).label("embedding_bits"),
            postgresql_using="hnsw",
            postgresql_ops={"embedding_bits": "bit_hamming_ops"},
        ),
    }
    return QuantizedItem, indexes


def measure_quantized(
    engine: Engine,
    app: Engine,
    *,
    rows: int,
    dim: int,
    queries: int,
    k: int,
    repeats: int,
    seed: int,
) -> tuple[list[Quantized], str]:
    """:func:`measure_data` on the synthetic set (``rows`` x ``dim``) and on as many GloVe 6B 50d
    word vectors, when its package is installed; and why not, when it is not."""
    rng = np.random.default_rng(seed)
    synthetic = f"synthetic, {rows:,} x {dim}"
    found, missing = glove(min(rows, GLOVE_WORDS))
    data = [(synthetic, embeddings(rng, rows, dim))]
    if found is not None:
        data.append((found.source, found.vectors))
    measured = [
        figure
        for name, vectors in data
        for figure in measure_data(
            engine, app, name, vectors, queries=queries, k=k, repeats=repeats, seed=seed
        )
    ]
    return measured, missing


def measure_data(
    engine: Engine,
    app: Engine,
    data: str,
    vectors: npt.NDArray[np.float32],
    *,
    queries: int,
    k: int,
    repeats: int,
    seed: int,
) -> list[Quantized]:
    """Per index kind (and oversampling, for the quantized ones) on ``vectors``: index size,
    build seconds, p50 of ``nearest_keys`` at the default ef_search, and recall@``k`` over
    ``queries`` stored rows. Each round builds every index in turn, alone on the table, and
    measures it."""
    rows, dim = vectors.shape
    model, indexes = quantized_model(dim)
    table = model.__table__
    with engine.begin() as connection:
        table.drop(connection, checkfirst=True)
        table.create(connection)
        for index in indexes.values():
            index.drop(connection)
        copy_rows(connection, table, {"id": np.arange(1, rows + 1), "embedding": vectors})
        connection.execute(text(f"ANALYZE {TABLE}"))
    searched: dict[str, tuple[str, VectorSearch[Any], SearchSettings | None]] = {
        KINDS[VECTOR_INDEX]: (
            VECTOR_INDEX,
            VectorSearch(model, model.embedding, index=VECTOR_INDEX),
            None,
        ),
    }
    for name, distance, factors in (
        (HALFVEC_INDEX, None, HALFVEC_OVERSAMPLING),
        (BINARY_INDEX, Distance.COSINE, BINARY_OVERSAMPLING),
    ):
        search = VectorSearch(model, model.embedding, distance, index=name)
        for factor in factors:
            searched[f"{KINDS[name]}, {factor}x re-ranked"] = (
                name,
                search,
                SearchSettings(oversampling=factor),
            )
    build_seconds: dict[str, list[float]] = {name: [] for name in indexes}
    sizes: dict[str, int] = {}
    p50: dict[str, list[float]] = {name: [] for name in searched}
    recall: dict[str, float] = {}
    sample = min(queries, rows)
    try:
        for repeat in range(repeats):
            for name, index in in_turn(indexes, repeat):
                build_seconds[name].append(build(engine, index))
                with engine.connect() as connection:
                    sizes[name] = int(
                        connection.scalar(text(f"SELECT pg_relation_size('{name}')")) or 0
                    )
                for label, (index_name, search, settings) in searched.items():
                    if index_name != name:
                        continue
                    with Session(app) as session:
                        report = measure_recall(
                            session, search, k=k, sample=sample, settings=settings, seed=seed
                        )
                    p50[label].append(report.approximate_ms)
                    recall[label] = report.recall
                with engine.begin() as connection:
                    index.drop(connection)
    finally:
        with engine.begin() as connection:
            table.drop(connection)
    return [
        Quantized(
            data,
            label,
            index_name,
            settings.oversampling if settings else None,
            Spread.of(build_seconds[index_name]),
            sizes[index_name] / 2**20,
            Spread.of(p50[label]),
            recall[label],
        )
        for label, (index_name, _, settings) in searched.items()
    ]


def build(engine: Engine, index: Index) -> float:
    """Seconds to build ``index`` with BuildSettings(), after a checkpoint."""
    checkpoint(engine)
    with engine.begin() as connection:
        set_local(connection, BuildSettings().parameters())
        started = time.perf_counter()
        index.create(connection)
        return time.perf_counter() - started


def smallest_oversampling(results: list[Quantized], index: str, target: float = 0.95) -> int | None:
    """The smallest oversampling at which ``index`` reaches ``target`` recall, if any."""
    reaching = [
        q.oversampling
        for q in results
        if q.index == index and q.oversampling and q.recall >= target
    ]
    return min(reaching, default=None)
