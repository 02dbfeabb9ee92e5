"""Async throughput: N tasks in one process, a session per request, against pgbench.

Each task loops for ``--duration`` seconds: it opens a session from
:func:`~pgvector_base.session.async_session_factory` on
:func:`~pgvector_base.session.create_async_app_engine` (a pool of N connections), awaits one
``AsyncVectorSearch.nearest`` (or ``nearest_keys``) and closes the session, as a request handler
of an async service does. pgbench runs the same SQL with the same N clients
(:mod:`.throughput`'s scripts and runner), the three taking turns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from benchmarks.bench.common import WARMUP_QUERIES, Item, Throughput, in_turn
from benchmarks.bench.throughput import (
    THROUGHPUT_QUERIES,
    Run,
    pgbench,
    pgbench_scripts,
    summarized,
)
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from pgvector_base.aio import AsyncVectorSearch
from pgvector_base.session import (
    EngineSettings,
    async_session_factory,
    create_async_app_engine,
)

Search = Callable[[AsyncSession, list[float], int], Awaitable[object]]


def measure_async_throughput(
    app: Engine,
    model: type[Item],
    queries: list[list[float]],
    *,
    k: int,
    duration: int,
    repeats: int,
    tasks: list[int],
) -> list[Throughput]:
    """QPS and latency of N async tasks searching for ``duration`` seconds, and of pgbench
    running the same SQL at the same N, taking turns."""
    search = AsyncVectorSearch(model, model.embedding)
    queries = queries[:THROUGHPUT_QUERIES]
    found: dict[tuple[str, int], list[Run]] = {}
    run = partial(async_tasks, app.url, queries, k=k, duration=duration)
    with pgbench_scripts(app, search.search, queries, k) as scripts:
        for repeat in range(repeats):
            for n in tasks:
                turns: dict[str, Callable[[], Run]] = {
                    "app": partial(run, search.nearest, n),
                    "keys": partial(run, search.nearest_keys, n),
                    "pgbench": partial(pgbench, app.url, scripts, duration, n),
                }
                for name, method in in_turn(turns, repeat):
                    found.setdefault((name, n), []).append(method())
    return summarized(found, tasks)


def async_tasks(
    url: URL,
    queries: list[list[float]],
    search: Search,
    n: int,
    *,
    k: int,
    duration: float,
    replicas: Sequence[URL] = (),
) -> Run:
    """Run ``n`` tasks in this process for ``duration`` seconds from a common start, each
    request a session of its own whose search is marked as a replica read (served by
    ``replicas`` if any); return the QPS and every request's latency."""
    return asyncio.run(_tasks(url, queries, search, n, k=k, duration=duration, replicas=replicas))


async def _tasks(
    url: URL,
    queries: list[list[float]],
    search: Search,
    n: int,
    *,
    k: int,
    duration: float,
    replicas: Sequence[URL],
) -> Run:
    settings = EngineSettings(pool_size=n, max_overflow=0)
    primary = create_async_app_engine(url, settings)
    replica_engines = [create_async_app_engine(replica, settings) for replica in replicas]
    sessions = async_session_factory(primary, replica_engines)
    latencies: list[float] = []

    async def request(query: list[float]) -> None:
        async with sessions() as session:
            await search(session, query, k)

    async def task(first: int, end: float) -> None:
        number = first
        while (started := time.perf_counter()) < end:
            await request(queries[number % len(queries)])
            latencies.append(time.perf_counter() - started)
            number += 1

    try:
        # Every connection of the pools opened, and the caches warm, before the clock starts.
        await asyncio.gather(
            *(request(query) for _ in range(n) for query in queries[:WARMUP_QUERIES])
        )
        end = time.perf_counter() + duration
        # Tasks start at different queries, as pgbench's clients pick theirs at random.
        await asyncio.gather(*(task(i * len(queries) // n, end) for i in range(n)))
    finally:
        for engine in (primary, *replica_engines):
            await engine.dispose()
    return len(latencies) / duration, latencies
