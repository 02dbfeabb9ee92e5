"""How cost grows with the table: loading, building the index and a query, size by size."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from benchmarks.bench.common import (
    DEFAULT_EF_SEARCH,
    INDEX,
    Item,
    Scale,
    Spread,
    build,
    checkpoint,
    embeddings,
    in_turn,
    timed_queries,
)
from benchmarks.bench.query import explain
from sqlalchemy import Engine, Table, text
from sqlalchemy.orm import Session

from pgvector_base.loading import BuildSettings, copy_rows
from pgvector_base.search import SearchSettings, VectorSearch
from pgvector_base.session import set_local

# The sizes, as fractions of --rows: four up to it and one above it.
FRACTIONS = (0.1, 0.25, 0.5, 1.0, 2.0)


def measure_scaling(
    engine: Engine,
    app: Engine,
    *,
    model: type[Item],
    table: Table,
    rows: int,
    dim: int,
    queries: int,
    k: int,
    repeats: int,
    seed: int,
) -> list[Scale]:
    """For each size, the sizes taking turns: load an empty ``item`` by the template's loader (a
    numpy column batch), build the HNSW index with BuildSettings(), and run each query through
    ``VectorSearch.nearest`` at the default ef_search on the index, its recall checked against
    numpy's exact answer. Leaves ``item`` with the largest size's rows and index."""
    sizes = [max(1, round(rows * fraction)) for fraction in FRACTIONS]
    rng = np.random.default_rng(seed)
    vectors = embeddings(rng, max(sizes) + queries, dim)
    stored, asked = vectors[: max(sizes)], vectors[max(sizes) :]
    categories = rng.integers(10, size=max(sizes))
    search = VectorSearch(model, model.embedding)
    # Sequential scans off: the table is for the index's cost, and at the smallest sizes the
    # planner's choice between the index and a sort of a few thousand rows is a coin toss.
    settings = SearchSettings(ef_search=DEFAULT_EF_SEARCH).parameters(search.index) | {
        "enable_seqscan": "off"
    }
    seconds: dict[str, dict[str, list[float]]] = {
        str(size): {"load": [], "build": [], "p50": []} for size in sizes
    }
    recall: dict[str, float] = {}
    index_bytes: dict[str, int] = {}
    turns: dict[str, int] = {str(size): size for size in sizes}
    for repeat in range(repeats):
        for name, size in in_turn(turns, repeat):
            columns = {
                "id": np.arange(1, size + 1),
                "category": categories[:size],
                "embedding": stored[:size],
            }
            with engine.begin() as connection:
                connection.execute(text(f"DROP INDEX IF EXISTS {INDEX}"))
                connection.execute(text("TRUNCATE item"))
            seconds[name]["load"].append(
                timed(engine, lambda: load(engine, table, columns))  # noqa: B023
            )
            with engine.begin() as connection:
                connection.execute(text("ANALYZE item"))
            seconds[name]["build"].append(
                timed(engine, lambda: build(engine, BuildSettings().parameters()))
            )
            with engine.connect() as connection:
                index_bytes[name] = int(
                    connection.scalar(text(f"SELECT pg_relation_size('{INDEX}')")) or 0
                )
            latencies, found = query(app, search, settings, asked.tolist(), k)
            seconds[name]["p50"].append(statistics.median(latencies))
            recall[name] = float(
                np.mean(
                    [
                        len(set(ids) & set(truth)) / k
                        for ids, truth in zip(found, exact(stored[:size], asked, k), strict=True)
                    ]
                )
            )
    return [
        Scale(
            size,
            Spread.of(seconds[str(size)]["load"]),
            Spread.of(seconds[str(size)]["build"]),
            index_bytes[str(size)] / 2**20,
            Spread.of([1000 * p50 for p50 in seconds[str(size)]["p50"]]),
            recall[str(size)],
        )
        for size in sizes
    ]


def load(engine: Engine, table: Table, columns: dict[str, object]) -> None:
    """The rows, by the template's loader, in one transaction."""
    with engine.begin() as connection:
        copy_rows(connection, table, columns)


def timed(engine: Engine, method: Callable[[], object]) -> float:
    """Seconds ``method`` takes, after a checkpoint so that none runs meanwhile."""
    checkpoint(engine)
    started = time.perf_counter()
    method()
    return time.perf_counter() - started


def query(
    app: Engine,
    search: VectorSearch[Item],
    settings: dict[str, str],
    queries: list[list[float]],
    k: int,
) -> tuple[list[float], list[list[int]]]:
    """Each query's latency through ``nearest`` after an untimed run of it, and the ids found."""
    with Session(app) as session:
        set_local(session, settings)
        plan = "\n".join(explain(session, search, queries[0], k, []))
        if INDEX not in plan:
            raise RuntimeError(f"the search does not use the index (too few --rows?):\n{plan}")
        latencies, found = timed_queries(
            session, queries, lambda vector: search.nearest(session, vector, k)
        )
    return latencies, [[neighbor.item.id for neighbor in neighbors] for neighbors in found]


def exact(
    stored: npt.NDArray[np.float32], asked: npt.NDArray[np.float32], k: int
) -> list[list[int]]:
    """The ids (1-based, as loaded) of each query's k nearest rows by cosine distance, by numpy:
    the vectors are unit length, so the nearest have the largest dot products."""
    found = []
    for start in range(0, len(asked), 50):
        scores = asked[start : start + 50] @ stored.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        found += [(row + 1).tolist() for row in top]
    return found
