"""Queries: latency and recall by ef_search and iterative scan, and one query's time taken apart."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import psycopg
from benchmarks.bench.common import (
    DEFAULT_EF_SEARCH,
    INDEX,
    WARMUP_QUERIES,
    Data,
    Item,
    Overhead,
    Queries,
    Spread,
    in_turn,
    percentiles,
)
from pgvector import Vector
from pgvector.psycopg import register_vector
from sqlalchemy import ColumnElement, Engine
from sqlalchemy.orm import Session

from pgvector_base.search import IterativeScan, SearchSettings, VectorSearch
from pgvector_base.session import set_local

EF_SEARCH = (10, 20, 40, 80, 160)
ITERATIVE_SCANS: tuple[IterativeScan, ...] = ("off", "relaxed_order", "strict_order")
# The exact scan is the same query with index scans turned off for its session.
EXACT = {"enable_indexscan": "off"}
SERVER_EXECUTION = "server: execution (EXPLAIN ANALYZE)"
SERVER_PLANNING = "server: planning (EXPLAIN ANALYZE, the vector as a literal)"
DRIVER = "psycopg alone: nearest()'s SQL, the vector in binary"
KEYS = "VectorSearch.nearest_keys()"
NEAREST = "VectorSearch.nearest()"


@dataclass
class Answers:
    """The ids each query returned, and how long each took in the application and in the
    server's execution alone, in seconds."""

    ids: list[list[int]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)


def measure_queries(
    app: Engine, model: type[Item], data: Data, k: int
) -> tuple[list[Queries], list[Queries]]:
    """Latency and recall, unfiltered by ef_search and filtered by iterative scan mode."""
    search = VectorSearch(model, model.embedding)
    by_ef_search = [
        (f"HNSW, ef_search = {ef}", SearchSettings(ef_search=ef).parameters(search.index))
        for ef in EF_SEARCH
    ]
    by_mode = [
        (
            f"HNSW, iterative_scan = {mode}",
            SearchSettings(iterative_scan=mode).parameters(search.index),
        )
        for mode in ITERATIVE_SCANS
    ]
    exact = ("exact scan", EXACT)
    unfiltered: list[list[ColumnElement[bool]]] = [[] for _ in data.queries]
    filters = [[model.category == c] for c in data.query_categories]
    searches = compare(app, search, data.queries, unfiltered, k=k, methods=[exact, *by_ef_search])
    filtered = compare(app, search, data.queries, filters, k=k, methods=[exact, *by_mode])
    return searches, filtered


def compare(
    app: Engine,
    search: VectorSearch[Item],
    queries: list[list[float]],
    filters: list[list[ColumnElement[bool]]],
    *,
    k: int,
    methods: list[tuple[str, dict[str, str]]],
) -> list[Queries]:
    """Answer the queries by each method, the first being the exact scan.

    Each method has a session of its own, with its settings for the whole transaction, and the
    methods take turns query by query, so whatever else the machine is doing slows them alike.
    Each query is also run through EXPLAIN ANALYZE, for the server's share of its time. An untimed
    run comes first, so that the timed run and EXPLAIN ANALYZE find the same pages in shared
    buffers: the table and its index are larger than the default 128 MB, and a page read from the
    OS cache by one would be a hit for the other.
    """
    answers = {name: Answers() for name, _ in methods}
    with ExitStack() as stack:
        sessions = {name: stack.enter_context(Session(app)) for name, _ in methods}
        for name, settings in methods:
            set_local(sessions[name], settings)
            plan = "\n".join(explain(sessions[name], search, queries[0], k, filters[0]))
            if (INDEX in plan) == (name == methods[0][0]):
                raise RuntimeError(f"{name}: not the plan to measure (too few --rows?):\n{plan}")
        for query, where in list(zip(queries, filters, strict=True))[:WARMUP_QUERIES]:
            for session in sessions.values():
                search.nearest(session, query, k, where=where)
        for number, (query, where) in enumerate(zip(queries, filters, strict=True)):
            # Each method goes first in turn: the one after the exact scan finds colder caches.
            for name, session in in_turn(sessions, number):
                search.nearest(session, query, k, where=where)
                started = time.perf_counter()
                neighbors = search.nearest(session, query, k, where=where)
                answers[name].latencies.append(time.perf_counter() - started)
                answers[name].ids.append([neighbor.item.id for neighbor in neighbors])
                session.expunge_all()
                _, execution = server_times(session, search, query, k, where)
                answers[name].server.append(execution)
    exact = answers[methods[0][0]]
    return [summary(name, answers[name], exact, k) for name, _ in methods]


def explain(
    session: Session,
    search: VectorSearch[Item],
    query: list[float],
    k: int,
    where: list[ColumnElement[bool]],
    *,
    analyze: bool = False,
) -> list[str]:
    """The plan of one of the search's queries, and with ``analyze`` its execution time."""
    statement = (
        search.statement(where)
        .params(query=query, k=k)
        .compile(dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True})
    )
    options = "(ANALYZE, TIMING OFF) " if analyze else ""
    return list(session.connection().exec_driver_sql(f"EXPLAIN {options}{statement}").scalars())


def server_times(
    session: Session,
    search: VectorSearch[Item],
    query: list[float],
    k: int,
    where: list[ColumnElement[bool]],
) -> tuple[float, float]:
    """The server's planning and execution time of one search, in seconds, from the last lines of
    EXPLAIN ANALYZE: "Planning Time: 0.089 ms", "Execution Time: 1.234 ms"."""
    planning, execution = explain(session, search, query, k, where, analyze=True)[-2:]
    return float(planning.split()[-2]) / 1000, float(execution.split()[-2]) / 1000


def measure_overhead(
    app: Engine, search: VectorSearch[Item], queries: list[list[float]], k: int, rounds: int
) -> list[Overhead]:
    """Where one query's time goes, at pgvector's default ef_search: the server's execution and
    planning, then the same SQL run by psycopg alone, by ``nearest_keys`` and by ``nearest``.

    One session runs them all, query by query, each method first in turn, after an untimed run
    that puts the query's pages in shared buffers (see :func:`compare`). Every query runs once a
    round; each figure is the median over rounds of the round's p50 (or its difference).
    """
    statement = search.statement()
    # nearest()'s SQL and its constant (the 1 of 1 - distance), which psycopg runs with the vector
    # in binary and unprepared, as it does for nearest().
    compiled = statement.compile(dialect=app.dialect)
    sql, constants = str(compiled), {**compiled.params, "k": k}
    names = (SERVER_EXECUTION, SERVER_PLANNING, DRIVER, KEYS, NEAREST)
    p50s: dict[str, list[float]] = {name: [] for name in names}
    with Session(app) as session:
        set_local(session, {"hnsw.ef_search": str(DEFAULT_EF_SEARCH)})
        driver = session.connection().connection.driver_connection
        if not isinstance(driver, psycopg.Connection):
            raise RuntimeError(f"the application engine's driver is not psycopg 3: {driver!r}")
        register_vector(driver)
        cursor = driver.cursor()
        methods: dict[str, Callable[[list[float]], object]] = {
            DRIVER: lambda query: cursor.execute(
                sql, {**constants, "query": Vector(query)}
            ).fetchall(),
            KEYS: lambda query: search.nearest_keys(session, query, k),
            NEAREST: lambda query: search.nearest(session, query, k),
        }
        for round_number in range(rounds):
            timings: dict[str, list[float]] = {name: [] for name in names}
            for number, query in enumerate(queries):
                search.nearest_keys(session, query, k)
                for name, method in in_turn(methods, round_number * len(queries) + number):
                    started = time.perf_counter()
                    method(query)
                    timings[name].append(time.perf_counter() - started)
                session.expunge_all()
                planning, execution = server_times(session, search, query, k, [])
                timings[SERVER_PLANNING].append(planning)
                timings[SERVER_EXECUTION].append(execution)
            for name, times in timings.items():
                p50s[name].append(1000 * statistics.median(times))

    def over(name: str, base: str) -> Spread:
        return Spread.of([a - b for a, b in zip(p50s[name], p50s[base], strict=True)])

    return [
        Overhead(SERVER_EXECUTION, Spread.of(p50s[SERVER_EXECUTION])),
        Overhead(SERVER_PLANNING, Spread.of(p50s[SERVER_PLANNING])),
        *(
            Overhead(
                name,
                Spread.of(p50s[name]),
                over(name, SERVER_EXECUTION),
                None if name == DRIVER else over(name, DRIVER),
            )
            for name in (DRIVER, KEYS, NEAREST)
        ),
    ]


def summary(method: str, found: Answers, exact: Answers, k: int) -> Queries:
    """Percentiles, recall against ``exact``, and speedups of the medians over ``exact``'s."""
    p50, p95, p99 = percentiles(found.latencies)
    server = statistics.median(found.server)
    recall = statistics.fmean(
        len(set(ids) & set(truth)) / k for ids, truth in zip(found.ids, exact.ids, strict=True)
    )
    return Queries(
        method,
        1000 * p50,
        1000 * p95,
        1000 * p99,
        recall,
        percentiles(exact.latencies)[0] / p50,
        1000 * server,
        statistics.median(exact.server) / server,
    )
