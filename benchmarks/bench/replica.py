"""Searches served by a streaming replica beside the same searches on the primary alone.

:mod:`.cluster` starts a primary and a streaming replica of its own (the embedded server's
binaries, on this machine); the primary gets the first :data:`REPLICA_ROWS` rows and the HNSW
index, and the replica replays them. Each search is marked as a replica read, as
``VectorSearch`` marks its reads: a session from ``session_factory(primary)`` runs it on the
primary, one from ``session_factory(primary, replicas=[replica])`` routes it to the replica, with
its settings on the replica's connection. The figures: the median latency of a request (a session
of its own, one ``nearest_keys`` or ``nearest``), and the QPS of N async tasks
(:mod:`.async_throughput`), the two routes taking turns. Both servers share the machine's cores, so
on a 2-core machine the replica adds no capacity: the figures show what routing costs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from benchmarks.bench import cluster
from benchmarks.bench.async_throughput import async_tasks
from benchmarks.bench.common import (
    INDEX,
    WARMUP_QUERIES,
    BenchBase,
    Data,
    Item,
    Routing,
    Spread,
    build,
    in_turn,
    ratios,
)
from benchmarks.bench.prepared import timed
from benchmarks.bench.throughput import THROUGHPUT_QUERIES
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from pgvector_base.aio import AsyncVectorSearch
from pgvector_base.loading import BuildSettings, copy_rows
from pgvector_base.search import VectorSearch
from pgvector_base.session import (
    READ_REPLICA,
    EngineSettings,
    async_session_factory,
    create_app_engine,
    create_async_app_engine,
)

# Small enough to load, build and replay in well under a minute.
REPLICA_ROWS = 20_000
ROUTES = ("primary", "replica")


def measure_replica(
    model: type[Item],
    data: Data,
    *,
    k: int,
    duration: int,
    repeats: int,
    tasks: list[int],
) -> list[Routing]:
    """Request latency and async QPS of searches on the primary and on its replica."""
    queries = data.queries[:THROUGHPUT_QUERIES]
    with cluster.start() as servers:
        load(servers.primary, data)
        servers.wait_for_replay()
        check_routing(servers.primary, servers.replica, model, queries[0], k)
        return measure_routes(
            servers.primary,
            servers.replica,
            model,
            queries,
            k=k,
            duration=duration,
            repeats=repeats,
            tasks=tasks,
        )


def load(primary: URL, data: Data) -> None:
    """The table, its first :data:`REPLICA_ROWS` rows and its HNSW index, on the primary."""
    table = BenchBase.metadata.tables["item"]
    columns = {name: values[:REPLICA_ROWS] for name, values in data.columns.items()}
    engine = create_engine(primary, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            table.create(connection)
            connection.execute(text(f"DROP INDEX {INDEX}"))
            copy_rows(connection, table, columns)
        build(engine, BuildSettings().parameters())
        with engine.begin() as connection:
            connection.execute(text("ANALYZE item"))
    finally:
        engine.dispose()


def check_routing(
    primary: URL, replica: URL, model: type[Item], query: list[float], k: int
) -> None:
    """Raise unless the routed session's search, and only it, was served by the replica."""
    search = AsyncVectorSearch(model, model.embedding)
    in_recovery = select(func.pg_is_in_recovery()).execution_options(**READ_REPLICA)

    async def served_by_replica(replicas: list[URL]) -> bool:
        engine = create_async_app_engine(primary)
        replica_engines = [create_async_app_engine(url) for url in replicas]
        try:
            async with async_session_factory(engine, replica_engines)() as session:
                await search.nearest_keys(session, query, k)
                # A session keeps to the server its first marked read went to.
                return bool(await session.scalar(in_recovery))
        finally:
            for each in (engine, *replica_engines):
                await each.dispose()

    routed = asyncio.run(served_by_replica([replica])), asyncio.run(served_by_replica([]))
    if routed != (True, False):
        raise RuntimeError(f"searches served by the replica: routed, unrouted = {routed}")


def measure_routes(
    primary: URL,
    replica: URL,
    model: type[Item],
    queries: list[list[float]],
    *,
    k: int,
    duration: int,
    repeats: int,
    tasks: list[int],
) -> list[Routing]:
    """Each figure on both routes, the routes taking turns."""
    search = VectorSearch(model, model.embedding)
    requests = {
        "nearest_keys": lambda session, query: search.nearest_keys(session, query, k),
        "nearest": lambda session, query: search.nearest(session, query, k),
    }
    settings = EngineSettings(pool_size=1, max_overflow=0)
    app = create_app_engine(primary, settings)
    replicas = {"primary": [], "replica": [create_app_engine(replica, settings)]}
    asynchronous = AsyncVectorSearch(model, model.embedding)
    figures: dict[str, dict[str, Callable[[], float]]] = {
        f"{name}(), a request at a time: median latency, ms": {
            route: partial(
                lambda request, engines: 1000 * timed(app, request, False, queries, engines),
                request,
                replicas[route],
            )
            for route in ROUTES
        }
        for name, request in requests.items()
    }
    for n in tasks:
        figures[f"nearest_keys(), {n} async task{'s' if n > 1 else ''}: QPS"] = {
            route: partial(
                lambda n, urls: async_tasks(
                    primary,
                    queries,
                    asynchronous.nearest_keys,
                    n,
                    k=k,
                    duration=duration,
                    replicas=urls,
                )[0],
                n,
                [] if route == "primary" else [replica],
            )
            for route in ROUTES
        }
    runs: dict[tuple[str, str], list[float]] = {}
    try:
        # Connections opened and caches warm on both servers (the async runs warm their own).
        for engines in replicas.values():
            timed(app, requests["nearest"], False, queries[:WARMUP_QUERIES], engines)
        for number in range(repeats):
            for figure, turns in figures.items():
                for route, method in in_turn(turns, number):
                    runs.setdefault((figure, route), []).append(method())
    finally:
        app.dispose()
        for engines in replicas.values():
            for engine in engines:
                engine.dispose()
    return [
        Routing(
            figure,
            Spread.of(runs[(figure, "primary")]),
            Spread.of(runs[(figure, "replica")]),
            ratios(runs[(figure, "replica")], runs[(figure, "primary")]),
        )
        for figure in figures
    ]
