"""Benchmark of the template's loader and search, on a fresh database of the embedded server.

    poetry run python benchmarks/bench.py                  # 100,000 x 384, 200 queries
    poetry run python benchmarks/bench.py --rows 1000000   # needs about 14 GB of memory

In one run, on one table ``item (id bigint primary key, category int, embedding vector(dim))``:

* loading the same rows, given as Python lists: ORM ``add_all``, an executemany INSERT, text
  COPY, the template's loader (binary COPY), and ``INSERT INTO item SELECT * FROM staging`` where
  ``staging`` already holds the rows: the server alone, with no client and no parsing, the upper
  bound of any loader. Each run starts from an empty table after a checkpoint;
* building the HNSW index (cosine, m = 16, ef_construction = 64, as on ``Product``) with the
  server's default settings, then with the template's :class:`~pgvector_base.loading.BuildSettings`;
* k nearest neighbours of random queries through :class:`~pgvector_base.search.VectorSearch`:
  an exact scan (index scans turned off), then the index at several ``hnsw.ef_search``, with
  p50/p95 latency, the server's execution time, and recall@k against the exact answers; then
  with a filter that 10% of the rows match, without and with iterative scans. The methods take
  turns query by query.

It prints the results, writes them to ``results.md`` and ``results.json`` next to this file, drops
its database, and exits with status 1 if a goal is missed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg2
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Engine,
    Index,
    Integer,
    MetaData,
    Table,
    create_engine,
    insert,
    text,
)
from sqlalchemy.engine import URL, Connection
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from pgvector_base.database import embedded_server_url, ensure_database, parse_url
from pgvector_base.loading import BuildSettings, copy_rows
from pgvector_base.search import IterativeScan, SearchSettings, VectorSearch
from pgvector_base.session import create_app_engine, set_local

RESULTS = Path(__file__).resolve().parent
ORM = "ORM add_all"
LOADER = "template loader: binary COPY"
UPPER_BOUND = "upper bound: INSERT ... SELECT FROM staging"
INDEX = "ix_item_embedding_hnsw"
EF_SEARCH = (10, 20, 40, 80, 160)
ITERATIVE_SCANS: tuple[IterativeScan, ...] = ("off", "relaxed_order", "strict_order")
# The exact scan is the same query with index scans turned off for its session.
EXACT = {"enable_indexscan": "off"}
CATEGORIES = 10
# ORM add_all and executemany load a few thousand rows per second whatever the table's size, so
# they load at most this many: more would only take longer, and at 1M exhaust the memory. They
# and text COPY run once: at a few percent of the loader's speed, run-to-run noise cannot matter.
BASELINE_ROWS = 100_000
TEXT_COPY_BATCH = 10_000
WARMUP_QUERIES = 10
# The data: clusters on a low-dimensional manifold (see embeddings()).
LATENT_DIM = 32
CLUSTERS = 100
NOISE = 0.1

Row = tuple[int, int, list[float]]


class BenchBase(DeclarativeBase):
    """The benchmark's own metadata, apart from the application's."""


class Item(BenchBase):
    """A row of the benchmark table; :func:`item_model` gives the embedding its dimensions."""

    __abstract__ = True

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    category: Mapped[int]
    embedding: Mapped[list[float]]


def item_model(dim: int) -> type[Item]:
    """The mapped ``item`` class, once ``--dim`` is known."""

    class SizedItem(Item):
        __tablename__ = "item"

        embedding: Mapped[list[float]] = mapped_column(VECTOR(dim), sort_order=1)

        __table_args__ = (
            Index(
                INDEX,
                "embedding",
                postgresql_using="hnsw",
                postgresql_with={"m": 16, "ef_construction": 64},
                postgresql_ops={"embedding": "vector_cosine_ops"},
            ),
        )

    return SizedItem


@dataclass(frozen=True)
class Load:
    """One loading method: the median of its runs, and its ratio to the upper bound."""

    method: str
    rows: int
    runs: int
    seconds: float
    rows_per_second: float
    ratio_to_upper_bound: float


@dataclass(frozen=True)
class Build:
    """One build of the HNSW index."""

    settings: str
    seconds: float


@dataclass(frozen=True)
class Queries:
    """Latency and recall of one way of answering the queries, and its speedups over the exact
    scan: as the application sees it, and in the server's execution time alone."""

    method: str
    p50_ms: float
    p95_ms: float
    recall: float
    speedup: float
    server_p50_ms: float
    server_speedup: float


@dataclass(frozen=True)
class Goal:
    """A goal of the benchmark: a ratio measured in this run, and its target."""

    name: str
    value: float
    target: float

    @property
    def passed(self) -> bool:
        """Whether this run met the goal."""
        return self.value >= self.target


@dataclass
class Results:
    """Everything one run measured."""

    hardware: str
    rows: int
    dim: int
    queries: int
    k: int
    loads: list[Load] = field(default_factory=list)
    builds: list[Build] = field(default_factory=list)
    searches: list[Queries] = field(default_factory=list)
    filtered: list[Queries] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)


@dataclass
class Answers:
    """The ids each query returned, and how long each took in the application and in the
    server's execution alone, in seconds."""

    ids: list[list[int]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return 1 if a goal was missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument(
        "--repeats", type=int, default=5, help="runs of the loader and of the upper bound"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-url", help="a superuser URL of another server to run on")
    args = parser.parse_args(argv)

    server = (
        parse_url(args.server_url, "--server-url") if args.server_url else embedded_server_url()
    )
    database = f"bench_{os.getpid()}"
    ensure_database(server, database)
    engine = create_app_engine(server.set(database=database))
    try:
        results = run(engine, args)
    finally:
        engine.dispose()
        drop_database(server, database)
    report = markdown(results)
    print(report)
    (RESULTS / "results.md").write_text(report)
    (RESULTS / "results.json").write_text(json.dumps(serialized(results), indent=2) + "\n")
    return 0 if all(goal.passed for goal in results.goals) else 1


def run(engine: Engine, args: argparse.Namespace) -> Results:
    """Load, build and query on the benchmark's database."""
    model = item_model(args.dim)
    table = BenchBase.metadata.tables["item"]
    staging = Table(
        "staging",
        MetaData(),
        Column("id", BigInteger, nullable=False),
        Column("category", Integer, nullable=False),
        Column("embedding", VECTOR(args.dim), nullable=False),
    )
    rng = np.random.default_rng(args.seed)
    vectors = embeddings(rng, args.rows + args.queries, args.dim)
    categories = rng.integers(CATEGORIES, size=args.rows).tolist()
    rows: list[Row] = list(
        zip(range(1, args.rows + 1), categories, vectors[: args.rows].tolist(), strict=True)
    )
    queries: list[list[float]] = vectors[args.rows :].tolist()
    filters = [[model.category == int(c)] for c in rng.integers(CATEGORIES, size=args.queries)]

    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        BenchBase.metadata.create_all(connection)
        # Rows are loaded before the vector index exists, as pgvector advises for a first load.
        connection.execute(text(f"DROP INDEX {INDEX}"))
        staging.create(connection)
        copy_rows(connection, staging, rows)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        # Settled, so that the upper bound's reads do not also set hint bits.
        connection.execute(text("VACUUM (FREEZE, ANALYZE) staging"))
    results = Results(hardware(engine), args.rows, args.dim, args.queries, args.k)
    results.loads = measure_loads(engine, model, table, rows, args.repeats)
    with engine.begin() as connection:
        connection.execute(text("ANALYZE item"))

    results.builds.append(Build(f"server defaults: {build_settings(engine)}", build(engine, {})))
    with engine.begin() as connection:
        connection.execute(text(f"DROP INDEX {INDEX}"))
    template = BuildSettings().parameters()
    described = ", ".join(f"{name} = {value}" for name, value in template.items())
    results.builds.append(Build(f"template BuildSettings(): {described}", build(engine, template)))

    search = VectorSearch(model, model.embedding)
    exact = ("exact scan", EXACT)
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
    no_filters: list[list[ColumnElement[bool]]] = [[] for _ in queries]
    results.searches = compare(
        engine, search, queries, no_filters, k=args.k, methods=[exact, *by_ef_search]
    )
    results.filtered = compare(
        engine, search, queries, filters, k=args.k, methods=[exact, *by_mode]
    )
    results.goals = goals(results)
    return results


def embeddings(rng: np.random.Generator, count: int, dim: int) -> npt.NDArray[np.float32]:
    """Unit vectors in clusters on a 32-dimensional manifold, like the output of an embedding model.

    Uniform random vectors in hundreds of dimensions would be the wrong test: all their distances
    are nearly equal, so "nearest" means little and no index finds it. Real embeddings lie near a
    manifold of far fewer dimensions than they have, in clusters of related texts.
    """
    centers = 2 * rng.standard_normal((CLUSTERS, LATENT_DIM))
    projection = rng.standard_normal((LATENT_DIM, dim)) / np.sqrt(LATENT_DIM)
    latent = centers[rng.integers(CLUSTERS, size=count)] + rng.standard_normal((count, LATENT_DIM))
    vectors = latent @ projection + NOISE * rng.standard_normal((count, dim))
    unit: npt.NDArray[np.float64] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit.astype(np.float32)


def measure_loads(
    engine: Engine, model: type[Item], table: Table, rows: list[Row], repeats: int
) -> list[Load]:
    """Time each loading method on an empty table; runs alternate between methods."""
    baseline = rows[:BASELINE_ROWS]
    methods: list[tuple[str, int, int, Callable[[], object]]] = [
        (ORM, len(baseline), 1, lambda: orm_add_all(engine, model, baseline)),
        ("executemany INSERT", len(baseline), 1, lambda: executemany(engine, table, baseline)),
        ("text COPY", len(rows), 1, lambda: text_copy(engine, rows)),
        (LOADER, len(rows), repeats, lambda: binary_copy(engine, table, rows)),
        (UPPER_BOUND, len(rows), repeats, lambda: upper_bound(engine)),
    ]
    seconds: dict[str, list[float]] = {name: [] for name, *_ in methods}
    for repeat in range(repeats):
        for name, _, runs, load in methods:
            if repeat < runs:
                seconds[name].append(timed_load(engine, load))
    rates = {name: count / statistics.median(seconds[name]) for name, count, *_ in methods}
    bound = rates[UPPER_BOUND]
    return [
        Load(name, count, runs, statistics.median(seconds[name]), rates[name], rates[name] / bound)
        for name, count, runs, _ in methods
    ]


def timed_load(engine: Engine, load: Callable[[], object]) -> float:
    """Seconds ``load`` takes on an empty table, after a checkpoint so none runs meanwhile."""
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE item"))
    with engine.connect() as connection:
        connection.execute(text("CHECKPOINT"))
    started = time.perf_counter()
    load()
    return time.perf_counter() - started


def orm_add_all(engine: Engine, model: type[Item], rows: list[Row]) -> None:
    """One ORM object per row, flushed by one commit."""
    with Session(engine) as session:
        session.add_all([model(id=i, category=c, embedding=v) for i, c, v in rows])
        session.commit()


def executemany(engine: Engine, table: Table, rows: list[Row]) -> None:
    """One Core INSERT with a list of parameter sets (batched by SQLAlchemy's insertmanyvalues)."""
    with engine.begin() as connection:
        connection.execute(
            insert(table), [{"id": i, "category": c, "embedding": v} for i, c, v in rows]
        )


def text_copy(engine: Engine, rows: list[Row]) -> None:
    """COPY in text format, vectors written as pgvector's ``[1.0,2.0,...]`` literals."""
    with engine.begin() as connection, psycopg2_cursor(connection) as cursor:
        for start in range(0, len(rows), TEXT_COPY_BATCH):
            lines = "".join(
                f"{i}\t{c}\t[{','.join(map(str, v))}]\n"
                for i, c, v in rows[start : start + TEXT_COPY_BATCH]
            )
            cursor.copy_expert("COPY item (id, category, embedding) FROM STDIN", io.StringIO(lines))


def binary_copy(engine: Engine, table: Table, rows: list[Row]) -> None:
    """The template's loader."""
    with engine.begin() as connection:
        copy_rows(connection, table, rows)


def upper_bound(engine: Engine) -> None:
    """The server copying rows it already holds: what a loader would reach with a free client."""
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO item SELECT * FROM staging"))


def psycopg2_cursor(connection: Connection) -> psycopg2.extensions.cursor:
    """A cursor of the driver's own, for ``copy_expert``."""
    dbapi_connection = connection.connection.dbapi_connection
    assert isinstance(dbapi_connection, psycopg2.extensions.connection)
    return dbapi_connection.cursor()


def build_settings(engine: Engine) -> str:
    """The server's own index build settings."""
    with engine.connect() as connection:
        return ", ".join(
            f"{name} = {connection.scalar(text(f'SHOW {name}'))}"
            for name in ("maintenance_work_mem", "max_parallel_maintenance_workers")
        )


def build(engine: Engine, settings: dict[str, str]) -> float:
    """Seconds to build the HNSW index with ``settings`` for the transaction."""
    (index,) = BenchBase.metadata.tables["item"].indexes
    with engine.begin() as connection:
        set_local(connection, settings)
        started = time.perf_counter()
        index.create(connection)
        return time.perf_counter() - started


def compare(
    engine: Engine,
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
    Each query is also run through EXPLAIN ANALYZE, for the server's share of its time.
    """
    answers = {name: Answers() for name, _ in methods}
    with ExitStack() as stack:
        sessions = {name: stack.enter_context(Session(engine)) for name, _ in methods}
        for name, settings in methods:
            set_local(sessions[name], settings)
            plan = "\n".join(explain(sessions[name], search, queries[0], k, filters[0]))
            if (INDEX in plan) == (name == methods[0][0]):
                raise RuntimeError(f"{name}: not the plan to measure (too few --rows?):\n{plan}")
        for query, where in list(zip(queries, filters, strict=True))[:WARMUP_QUERIES]:
            for session in sessions.values():
                search.nearest(session, query, k, where=where)
        turns = list(sessions.items())
        for number, (query, where) in enumerate(zip(queries, filters, strict=True)):
            # Each method goes first in turn: the one after the exact scan finds colder caches.
            start = number % len(turns)
            for name, session in turns[start:] + turns[:start]:
                started = time.perf_counter()
                neighbors = search.nearest(session, query, k, where=where)
                answers[name].latencies.append(time.perf_counter() - started)
                answers[name].ids.append([neighbor.item.id for neighbor in neighbors])
                session.expunge_all()
                # The last line of EXPLAIN ANALYZE: "Execution Time: 1.234 ms".
                summary_line = explain(session, search, query, k, where, analyze=True)[-1]
                answers[name].server.append(float(summary_line.split()[-2]) / 1000)
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


def summary(method: str, found: Answers, exact: Answers, k: int) -> Queries:
    """Percentiles, recall against ``exact``, and speedups of the medians over ``exact``'s."""
    p50, p95 = percentiles(found.latencies)
    server = statistics.median(found.server)
    recall = statistics.fmean(
        len(set(ids) & set(truth)) / k for ids, truth in zip(found.ids, exact.ids, strict=True)
    )
    return Queries(
        method,
        1000 * p50,
        1000 * p95,
        recall,
        percentiles(exact.latencies)[0] / p50,
        1000 * server,
        statistics.median(exact.server) / server,
    )


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p95."""
    cuts = statistics.quantiles(latencies, n=20)
    return cuts[9], cuts[18]


def goals(results: Results) -> list[Goal]:
    """The issue's goals, from this run's measurements."""
    loads = {load.method: load for load in results.loads}
    loader = loads[LOADER]
    accurate = [query for query in results.searches[1:] if query.recall >= 0.95]
    fastest = max(accurate, key=lambda query: query.speedup, default=None)
    iterative = next(q for q in results.filtered if q.method.endswith("relaxed_order"))
    return [
        Goal(
            "loader rows/s over ORM add_all rows/s",
            loader.rows_per_second / loads[ORM].rows_per_second,
            15,
        ),
        Goal("loader rows/s over the upper bound's", loader.ratio_to_upper_bound, 0.6),
        Goal(
            "exact p50 over HNSW p50 at recall >= 0.95"
            + (f" ({fastest.method})" if fastest else " (no ef_search reached it)"),
            fastest.speedup if fastest else 0.0,
            20,
        ),
        Goal(f"filtered recall@{results.k}, {iterative.method}", iterative.recall, 0.9),
    ]


def hardware(engine: Engine) -> str:
    """One line: the machine, the server and Python."""
    with engine.connect() as connection:
        server = connection.scalar(text("SHOW server_version"))
        pgvector = connection.scalar(
            text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        )
        shared_buffers = connection.scalar(text("SHOW shared_buffers"))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {memory:.0f} GB RAM, "
        f"{platform.system()} {platform.release()}; PostgreSQL {server}, pgvector {pgvector}, "
        f"shared_buffers = {shared_buffers}; Python {platform.python_version()}"
    )


def cpu_model() -> str:
    """The processor's name, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown processor"


def markdown(results: Results) -> str:
    """The results as Markdown tables."""
    lines = [
        "# Benchmark results",
        "",
        f"{results.rows:,} rows of {results.dim} dimensions, {results.queries} queries, "
        f"k = {results.k}.",
        "",
        f"Hardware: {results.hardware}.",
        "",
        "| Loading (rows as Python lists) | Rows | Runs | Seconds | Rows/s | / upper bound |",
        "|---|--:|--:|--:|--:|--:|",
        *(
            f"| {load.method} | {load.rows:,} | {load.runs} | {load.seconds:.2f} | "
            f"{load.rows_per_second:,.0f} | {load.ratio_to_upper_bound:.2f} |"
            for load in results.loads
        ),
        "",
        "| Building the HNSW index | Seconds |",
        "|---|--:|",
        *(f"| {build.settings} | {build.seconds:.1f} |" for build in results.builds),
    ]
    for title, queries in (
        ("Queries", results.searches),
        ("Filtered, 10% match", results.filtered),
    ):
        lines += [
            "",
            f"| {title} | p50 ms | p95 ms | Recall@{results.k} | Exact p50 / p50 "
            "| Server p50 ms | Exact / server p50 |",
            "|---|--:|--:|--:|--:|--:|--:|",
            *(
                f"| {q.method} | {q.p50_ms:.2f} | {q.p95_ms:.2f} | {q.recall:.3f} | "
                f"{q.speedup:.1f} | {q.server_p50_ms:.2f} | {q.server_speedup:.1f} |"
                for q in queries
            ),
        ]
    lines += [
        "",
        "| Goal | Measured | Target | |",
        "|---|--:|--:|---|",
        *(
            f"| {goal.name} | {goal.value:.2f} | {goal.target:g} | "
            f"{'PASS' if goal.passed else 'FAIL'} |"
            for goal in results.goals
        ),
    ]
    return "\n".join(lines) + "\n"


def serialized(results: Results) -> dict[str, Any]:
    """The results as JSON-ready data, each goal with whether it passed."""
    data = asdict(results)
    data["goals"] = [{**asdict(goal), "passed": goal.passed} for goal in results.goals]
    return data


def drop_database(server: URL, name: str) -> None:
    """Drop the benchmark's database."""
    engine = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
