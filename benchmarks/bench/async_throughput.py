"""Async throughput: N tasks in one process, a session per request, against raw async psycopg
and pgbench.

Each task loops for ``--duration`` seconds: it opens a session from
:func:`~pgvector_base.session.async_session_factory` on
:func:`~pgvector_base.session.create_async_app_engine` (a pool of N connections), awaits one
``AsyncVectorSearch.nearest`` (or ``nearest_keys``) and closes the session, as a request handler
of an async service does. Beside them, in the same turns:

* raw async psycopg, the template's own cost: psycopg_pool's ``AsyncConnectionPool`` of N
  connections, the SQL ``nearest_keys`` sends (captured from it), the query vector in binary
  through pgvector-python's dumper, a transaction per request (``pool.connection()`` commits it),
  nothing prepared, as the template prepares nothing by default;
* pgbench with the same SQL and N clients (:mod:`.throughput`'s scripts and runner), in its three
  query modes: ``prepared``, the server's bound; ``extended`` and ``simple``, which prepare
  nothing, as the template.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from benchmarks.bench.common import WARMUP_QUERIES, AsyncThroughput, Item, Spread, in_turn, ratios
from benchmarks.bench.throughput import (
    THROUGHPUT_QUERIES,
    Run,
    median_percentiles,
    pgbench,
    pgbench_scripts,
)
from pgvector import Vector
from pgvector.psycopg import register_vector_async
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine, event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from pgvector_base.aio import AsyncVectorSearch
from pgvector_base.session import (
    EngineSettings,
    async_session_factory,
    create_app_engine,
    create_async_app_engine,
)

Search = Callable[[AsyncSession, list[float], int], Awaitable[object]]

NEAREST = "AsyncVectorSearch.nearest()"
KEYS = "AsyncVectorSearch.nearest_keys()"
PSYCOPG = "raw async psycopg, same SQL"
PGBENCH = "pgbench -M prepared"
PGBENCH_MODES = {
    PGBENCH: "prepared",
    "pgbench -M extended": "extended",
    "pgbench -M simple": "simple",
}


def measure_async_throughput(
    app: Engine,
    model: type[Item],
    queries: list[list[float]],
    *,
    k: int,
    duration: int,
    repeats: int,
    tasks: list[int],
) -> list[AsyncThroughput]:
    """QPS and latency of N async tasks searching for ``duration`` seconds, of raw async psycopg
    and of pgbench in its three modes running the same SQL at the same N, taking turns."""
    search = AsyncVectorSearch(model, model.embedding)
    queries = queries[:THROUGHPUT_QUERIES]
    found: dict[tuple[str, int], list[Run]] = {}
    run = partial(async_tasks, app.url, queries, k=k, duration=duration)
    raw = partial(psycopg_tasks, app.url, keys_sql(app.url, search, queries[0], k), queries)
    with pgbench_scripts(app, search.search, queries, k) as scripts:
        for repeat in range(repeats):
            for n in tasks:
                turns: dict[str, Callable[[], Run]] = {
                    NEAREST: partial(run, search.nearest, n),
                    KEYS: partial(run, search.nearest_keys, n),
                    PSYCOPG: partial(raw, n, k=k, duration=duration),
                    **{
                        name: partial(pgbench, app.url, scripts, duration, n, mode)
                        for name, mode in PGBENCH_MODES.items()
                    },
                }
                for name, method in in_turn(turns, repeat):
                    found.setdefault((name, n), []).append(method())
    results = []
    for n in tasks:
        psycopg_qps, pgbench_qps = ([qps for qps, _ in found[(b, n)]] for b in (PSYCOPG, PGBENCH))
        for name in (NEAREST, KEYS, PSYCOPG, *PGBENCH_MODES):
            qps = [qps for qps, _ in found[(name, n)]]
            results.append(
                AsyncThroughput(
                    n,
                    name,
                    Spread.of(qps),
                    median_percentiles(found[(name, n)]),
                    ratios(qps, psycopg_qps),
                    ratios(qps, pgbench_qps),
                )
            )
    return results


def keys_sql(url: URL, search: AsyncVectorSearch[Item], query: list[float], k: int) -> str:
    """The SQL that ``nearest_keys`` sends, as psycopg receives it."""
    engine = create_app_engine(url, EngineSettings(pool_size=1, max_overflow=0))
    sent: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
    try:
        with Session(engine) as session:
            search.search.nearest_keys(session, query, k)
    finally:
        engine.dispose()
    (sql,) = sent
    return sql


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

    async def request(query: list[float]) -> None:
        async with sessions() as session:
            await search(session, query, k)

    try:
        return await _timed(request, queries, n, duration)
    finally:
        for engine in (primary, *replica_engines):
            await engine.dispose()


def psycopg_tasks(
    url: URL, sql: str, queries: list[list[float]], n: int, *, k: int, duration: float
) -> Run:
    """:func:`async_tasks` without the template: ``n`` tasks on an ``AsyncConnectionPool``, each
    request a transaction that runs ``sql``."""
    return asyncio.run(_psycopg_tasks(url, sql, queries, n, k=k, duration=duration))


async def _psycopg_tasks(
    url: URL, sql: str, queries: list[list[float]], n: int, *, k: int, duration: float
) -> Run:
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
        conninfo,
        min_size=n,
        max_size=n,
        kwargs={"prepare_threshold": None},
        configure=register_vector_async,
        open=False,
    )
    await pool.open(wait=True)

    async def request(query: list[float]) -> None:
        async with pool.connection() as connection:
            cursor = await connection.execute(sql, {"query": Vector(query), "k": k})
            await cursor.fetchall()

    try:
        return await _timed(request, queries, n, duration)
    finally:
        await pool.close()


async def _timed(
    request: Callable[[list[float]], Awaitable[None]],
    queries: list[list[float]],
    n: int,
    duration: float,
) -> Run:
    """``n`` tasks sending requests for ``duration`` seconds from a common start, after a warm-up
    that opens every connection; the QPS and every request's latency."""
    latencies: list[float] = []

    async def task(first: int, end: float) -> None:
        number = first
        while (started := time.perf_counter()) < end:
            await request(queries[number % len(queries)])
            latencies.append(time.perf_counter() - started)
            number += 1

    # Every connection of the pools opened, and the caches warm, before the clock starts.
    await asyncio.gather(*(request(query) for _ in range(n) for query in queries[:WARMUP_QUERIES]))
    end = time.perf_counter() + duration
    # Tasks start at different queries, as pgbench's clients pick theirs at random.
    await asyncio.gather(*(task(i * len(queries) // n, end) for i in range(n)))
    return len(latencies) / duration, latencies
