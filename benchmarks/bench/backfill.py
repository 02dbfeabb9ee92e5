"""Backfill: :func:`pgvector_base.backfill.backfill` against the server's own ``UPDATE ... FROM``.

Table ``refill (id bigint primary key, source bigint, target vector(dim))`` holds ``--rows`` rows
with ``target`` empty. The backfill fills it with a free embed function (the run's vectors,
computed in advance, looked up by ``source``), so what is measured is the runner: claiming each
batch, checking and sending its vectors by binary COPY, and the ``UPDATE ... FROM``. The bound has
no client at all: the same batches, each its own transaction, copied by ``UPDATE ... FROM`` a
table that already holds the vectors. The two take turns on a fresh ``refill`` each time.

Then a reader searches ``item`` through :class:`~pgvector_base.search.VectorSearch` (HNSW, one
request after another, the application's engine) for ``--duration`` seconds alone, and again
while a backfill runs on the same server: its p99 during over before.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from benchmarks.bench.common import Data, Item, Refill, Spread, checkpoint, in_turn, ratios
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Column, Engine, MetaData, Table, text
from sqlalchemy.orm import Session

from pgvector_base.backfill import DEFAULT_BATCH_SIZE, backfill
from pgvector_base.loading import copy_rows
from pgvector_base.search import VectorSearch

BACKFILL = f"backfill(), free embed function, batches of {DEFAULT_BATCH_SIZE}"
SERVER = f"server: UPDATE ... FROM a table holding the vectors, batches of {DEFAULT_BATCH_SIZE}"
READER = "reader p99 ms, nearest_keys() on item"


def measure_backfill(
    engine: Engine, app: Engine, *, model: type[Item], data: Data, repeats: int, duration: int
) -> list[Refill]:
    """Rows per second of the backfill and of its bound, taking turns; last, the reader's p99
    during a backfill and before it."""
    vectors: npt.NDArray[np.float32] = data.columns["embedding"]
    dim = vectors.shape[1]
    metadata = MetaData()
    refill = Table(
        "refill",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("source", BigInteger),
        Column("target", VECTOR(dim)),
    )
    ready = Table(
        "refill_vectors",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("embedding", VECTOR(dim)),
    )
    ids = data.columns["id"]
    # refill has no trigger to keep targets honest, and needs none: nothing else writes to it.
    logging.getLogger("pgvector_base.backfill").setLevel(logging.ERROR)
    with engine.begin() as connection:
        metadata.create_all(connection)
        copy_rows(connection, ready, {"id": ids, "embedding": vectors})
        connection.execute(text("ANALYZE refill_vectors"))

    def embed(sources: list[Any]) -> npt.NDArray[np.float32]:
        found: npt.NDArray[np.float32] = vectors[np.asarray(sources) - 1]
        return found

    def fill() -> None:
        backfill(app, refill.c.target, ["source"], embed)

    def bound() -> None:
        for first in range(1, len(ids) + 1, DEFAULT_BATCH_SIZE):
            with engine.begin() as connection:
                connection.execute(
                    text(
                        "UPDATE refill SET target = v.embedding FROM refill_vectors AS v "
                        "WHERE refill.id = v.id AND refill.id BETWEEN :first AND :last "
                        "AND v.id BETWEEN :first AND :last"
                    ),
                    {"first": first, "last": first + DEFAULT_BATCH_SIZE - 1},
                )

    methods: dict[str, Callable[[], None]] = {BACKFILL: fill, SERVER: bound}
    rates: dict[str, list[float]] = {name: [] for name in methods}
    before: list[float] = []
    during: list[float] = []
    search = VectorSearch(model, model.embedding)
    try:
        for repeat in range(repeats):
            for name, method in in_turn(methods, repeat):
                reset(engine, refill, ids)
                started = time.perf_counter()
                method()
                rates[name].append(len(ids) / (time.perf_counter() - started))
            reset(engine, refill, ids)
            before.append(reader_p99(app, search, data.queries, duration=duration))
            during.append(reader_p99(app, search, data.queries, alongside=fill))
    finally:
        with engine.begin() as connection:
            metadata.drop_all(connection)
    figures = [
        Refill(name, Spread.of(rates[name]), ratios(rates[name], rates[SERVER])) for name in methods
    ]
    return [*figures, Refill(READER, Spread.of(during), ratios(during, before), Spread.of(before))]


def reset(engine: Engine, refill: Table, ids: npt.NDArray[Any]) -> None:
    """``refill`` anew, its targets empty, vacuumed and analyzed, after a checkpoint."""
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE refill"))
        copy_rows(connection, refill, {"id": ids, "source": ids}, columns=["id", "source"])
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM (ANALYZE) refill"))
    checkpoint(engine)


def reader_p99(
    app: Engine,
    search: VectorSearch[Any],
    queries: list[list[float]],
    *,
    duration: float = 0.0,
    alongside: Callable[[], None] | None = None,
) -> float:
    """The p99 latency, ms, of searches one after another: for ``duration`` seconds, or for as
    long as ``alongside`` runs in another thread."""
    worker = threading.Thread(target=alongside) if alongside else None
    if worker:
        worker.start()
    deadline = time.perf_counter() + duration

    def running() -> bool:
        return worker.is_alive() if worker else time.perf_counter() < deadline

    latencies: list[float] = []
    cycle = itertools.cycle(queries)
    while running():
        query = next(cycle)
        started = time.perf_counter()
        with Session(app) as session:
            search.nearest_keys(session, query, 10)
        latencies.append(time.perf_counter() - started)
    if worker:
        worker.join()
    return 1000 * float(np.percentile(latencies, 99))
