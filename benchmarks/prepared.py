"""What server-side prepared statements are worth in the session-per-request pattern.

    poetry run python -m benchmarks.prepared     # 10,000 x 384 rows: about a minute

Each request opens a session from :func:`~pgvector_base.session.create_app_engine`'s engine, runs
one search (``VectorSearch.nearest_keys`` or ``nearest``) and ends: closed without a commit (a read
request; psycopg discards its prepared statements on the rollback) or committed (a request that
writes). The engine prepares nothing (the default) or prepares each statement after 5 runs
(``EngineSettings(prepare_threshold=5)``, psycopg's own default). Each figure is the median latency
of one run of ``--requests`` requests; the table gives the median of ``--repeats`` runs with their
min and max. Methods take turns, run by run, so whatever else the machine does slows them alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from benchmarks.bench import INDEX, BenchBase, build, drop_database, embeddings, in_turn, item_model
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from pgvector_base.database import embedded_server_url, ensure_database
from pgvector_base.loading import BuildSettings, copy_rows
from pgvector_base.search import VectorSearch
from pgvector_base.session import EngineSettings, create_app_engine, session_factory

Request = Callable[[Session, list[float]], object]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurement on a fresh database of the embedded server and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--requests", type=int, default=300, help="requests per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each method")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args(argv)
    server = embedded_server_url()
    database = f"bench_prepared_{os.getpid()}"
    ensure_database(server, database)
    try:
        print(measure(server.set(database=database), args))
    finally:
        drop_database(server, database)
    return 0


def measure(url: URL, args: argparse.Namespace) -> str:
    """Set up the table and index, time every method, and return the results as markdown."""
    model = item_model(args.dim)
    rng = np.random.default_rng(0)
    vectors = embeddings(rng, args.rows + args.requests, args.dim)
    queries = vectors[args.rows :].tolist()
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        BenchBase.metadata.create_all(connection)
        # Rows are loaded before the vector index exists, as pgvector advises.
        connection.execute(text(f"DROP INDEX {INDEX}"))
        copy_rows(
            connection,
            BenchBase.metadata.tables["item"],
            {
                "id": np.arange(1, args.rows + 1),
                "category": rng.integers(10, size=args.rows),
                "embedding": vectors[: args.rows],
            },
        )
    build(engine, BuildSettings().parameters())
    with engine.begin() as connection:
        connection.execute(text("ANALYZE item"))
    engine.dispose()

    search = VectorSearch(model, model.embedding)
    requests: dict[str, Request] = {
        "nearest_keys": lambda session, query: search.nearest_keys(session, query, args.k),
        "nearest": lambda session, query: search.nearest(session, query, args.k),
    }
    engines = {
        "off": create_app_engine(url, EngineSettings(pool_size=1, max_overflow=0)),
        "on": create_app_engine(
            url, EngineSettings(pool_size=1, max_overflow=0, prepare_threshold=5)
        ),
    }
    # Named "request end prepared", as in_turn() takes string names.
    methods = {
        f"{request} {end} {prepared}": (engines[prepared], requests[request], end == "commit")
        for request in requests
        for end in ("close", "commit")
        for prepared in engines
    }
    runs: dict[str, list[float]] = {name: [] for name in methods}
    try:
        for app, request, commit in methods.values():
            timed(app, request, commit, queries[:20])  # connect, warm caches
        for number in range(args.repeats):
            for name, (app, request, commit) in in_turn(methods, number):
                runs[name].append(timed(app, request, commit, queries))
    finally:
        for app in engines.values():
            app.dispose()
    return table(runs, args)


def timed(app: Engine, request: Request, commit: bool, queries: list[list[float]]) -> float:
    """The median latency, in seconds, of one request per query, each in a session of its own."""
    sessions = session_factory(app)
    latencies = []
    for query in queries:
        started = time.perf_counter()
        with sessions() as session:
            request(session, query)
            if commit:
                session.commit()
        latencies.append(time.perf_counter() - started)
    return statistics.median(latencies)


def table(runs: dict[str, list[float]], args: argparse.Namespace) -> str:
    """Markdown: per request and ending, the median latency prepared off and on, in ms."""

    def cell(values: list[float]) -> str:
        ms = [1000 * value for value in values]
        return f"{statistics.median(ms):.3f} ({min(ms):.3f}-{max(ms):.3f})"

    lines = [
        f"{args.rows} rows x {args.dim}, k = {args.k}, {args.requests} requests per run, "
        f"{args.repeats} runs; median per-request latency in ms (min-max of runs)",
        "",
        "| request | session ends with | prepared off | prepared on | on - off |",
        "|---|---|---|---|---|",
    ]
    for request, end in dict.fromkeys(tuple(name.split()[:2]) for name in runs):
        off, on = runs[f"{request} {end} off"], runs[f"{request} {end} on"]
        difference = 1000 * (statistics.median(on) - statistics.median(off))
        lines.append(f"| {request} | {end} | {cell(off)} | {cell(on)} | {difference:+.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
