"""``python -m benchmarks.bench``: run the parts, print the tables, write the results."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import benchmarks.bench
from benchmarks.bench.async_throughput import measure_async_throughput
from benchmarks.bench.backfill import measure_backfill
from benchmarks.bench.build import measure_builds
from benchmarks.bench.common import (
    INDEX,
    REPOSITORY_ROOT,
    RESULTS,
    BenchBase,
    Data,
    Item,
    Results,
    build,
    drop_database,
    generate,
    hardware,
    item_model,
    uptime,
)
from benchmarks.bench.hybrid import measure_hybrid
from benchmarks.bench.load import measure_loads
from benchmarks.bench.prepared import measure_prepared
from benchmarks.bench.quantized import measure_quantized
from benchmarks.bench.query import measure_overhead, measure_queries
from benchmarks.bench.replica import measure_replica
from benchmarks.bench.report import draw_charts, goals, markdown, serialized
from benchmarks.bench.scaling import measure_scaling
from benchmarks.bench.startup import measure_startup
from benchmarks.bench.tenants import measure_tenants
from benchmarks.bench.throughput import measure_throughput
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from pgvector_base.database import embedded_server_url, ensure_database, parse_url
from pgvector_base.loading import BuildSettings, copy_rows
from pgvector_base.search import VectorSearch
from pgvector_base.session import EngineSettings, create_app_engine

# In the order they run: scaling last, as it leaves other sizes in the table.
PARTS = (
    "load",
    "build",
    "query",
    "async",
    "prepared",
    "hybrid",
    "replica",
    "backfill",
    "startup",
    "quantized",
    "tenants",
    "scaling",
)
# The parts that search the whole table, with its index.
SEARCHES = {"build", "query", "async", "prepared", "backfill"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return 1 if a goal was missed."""
    doc = benchmarks.bench.__doc__ or ""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench", description=doc[: doc.find("\n")]
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--duration", type=int, default=5, help="seconds of each throughput run")
    parser.add_argument("--clients", default="1,2,4,8", help="client counts for throughput")
    parser.add_argument(
        "--tasks", default="1,4,16", help="task counts for async throughput and the replica"
    )
    parser.add_argument("--only", choices=PARTS, help="run one part, print it, write nothing")
    parser.add_argument(
        "--output",
        type=Path,
        help="write results.md, results.json and the charts here "
        "(default: benchmarks/ for a full run, nowhere with --only)",
    )
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
    output = args.output or (None if args.only else RESULTS)
    if output:
        output.mkdir(parents=True, exist_ok=True)
    charts = draw_charts(results, output) if output else []
    report = markdown(results, charts=charts)
    print(report)
    if output:
        (output / "results.md").write_text(report)
        (output / "results.json").write_text(json.dumps(serialized(results), indent=2) + "\n")
    return 0 if all(goal.passed for goal in results.goals) else 1


def run(url: URL, args: argparse.Namespace) -> Results:
    """Load, build and query on the benchmark's database, as ``--only`` asks."""
    parts = [args.only] if args.only else list(PARTS)
    model = item_model(args.dim)
    table = BenchBase.metadata.tables["item"]
    data = generate(args)
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
    results.source = source()
    try:
        if "load" in parts:
            results.loads = measure_loads(
                engine, app, model=model, table=table, data=data, repeats=args.repeats
            )
        if SEARCHES & set(parts):
            # The last load measured may have been a sample: every row, once.
            with engine.begin() as connection:
                connection.execute(text("TRUNCATE item"))
                copy_rows(connection, table, data.columns)
                connection.execute(text("ANALYZE item"))
        if "build" in parts:
            results.builds = measure_builds(engine, url, args.repeats)
        elif SEARCHES & set(parts):
            build(engine, BuildSettings().parameters())
        if "query" in parts:
            results.searches, results.filtered = measure_queries(app, model, data, args.k)
            results.overhead = measure_overhead(
                app, VectorSearch(model, model.embedding), data.queries, args.k, args.repeats
            )
            results.throughput = measure_throughput(
                app,
                model,
                data.queries,
                k=args.k,
                duration=args.duration,
                repeats=args.repeats,
                clients=[int(n) for n in args.clients.split(",")],
            )
        tasks = [int(n) for n in args.tasks.split(",")]
        if "async" in parts:
            results.async_throughput = measure_async_throughput(
                app,
                model,
                data.queries,
                k=args.k,
                duration=args.duration,
                repeats=args.repeats,
                tasks=tasks,
            )
        if "prepared" in parts:
            results.prepared = measure_prepared(
                url, model, data.queries, k=args.k, repeats=args.repeats
            )
        # An expression, not a statement: one branch fewer for run(), which has its fill.
        results.hybrid = (
            measure_hybrid(
                engine,
                app,
                rows=args.rows,
                dim=args.dim,
                queries=args.queries,
                k=args.k,
                repeats=args.repeats,
                seed=args.seed,
            )
            if "hybrid" in parts
            else None
        )
        if "replica" in parts:
            results.replica = measure_replica(
                model,
                data,
                k=args.k,
                duration=args.duration,
                repeats=args.repeats,
                tasks=tasks,
            )
        application_parts(results, parts, url, engine, app, model=model, data=data, args=args)
        if "scaling" in parts:
            results.scaling = measure_scaling(
                engine,
                app,
                model=model,
                table=table,
                rows=args.rows,
                dim=args.dim,
                queries=args.queries,
                k=args.k,
                repeats=args.repeats,
                seed=args.seed,
            )
    finally:
        app.dispose()
        engine.dispose()
    results.load_average.append(uptime())
    if (finished := source()) != results.source:
        results.source += f"; at the end: {finished}"
    results.goals = goals(results)
    return results


def application_parts(
    results: Results,
    parts: list[str],
    url: URL,
    engine: Engine,
    app: Engine,
    *,
    model: type[Item],
    data: Data,
    args: argparse.Namespace,
) -> None:
    """The backfill, start-up, quantized-index and tenants parts, as ``--only`` asks."""
    if "backfill" in parts:
        results.backfill = measure_backfill(
            engine, app, model=model, data=data, repeats=args.repeats, duration=args.duration
        )
    if "startup" in parts:
        results.startup = measure_startup(url, args.repeats)
    if "quantized" in parts:
        results.quantized, results.quantized_missing = measure_quantized(
            engine,
            app,
            rows=args.rows,
            dim=args.dim,
            queries=args.queries,
            k=args.k,
            repeats=args.repeats,
            seed=args.seed,
        )
    if "tenants" in parts:
        results.tenants = measure_tenants(
            engine,
            app,
            rows=args.rows,
            dim=args.dim,
            queries=args.queries,
            k=args.k,
            repeats=args.repeats,
            seed=args.seed,
        )


def source() -> str:
    """The commit measured, and which files under src/ differed from it (new ones too)."""

    def git(*arguments: str) -> list[str]:
        done = subprocess.run(
            ["git", *arguments], cwd=REPOSITORY_ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout.splitlines()

    commit = " ".join(git("rev-parse", "--short", "HEAD")) or "unknown"
    changed = [line[3:] for line in git("status", "--porcelain", "--", "src/")]
    if not changed:
        return f"commit {commit}, src/ as committed"
    # A digest of the changed files, so that a change made during the run shows.
    digest = hashlib.sha256()
    for path in sorted(REPOSITORY_ROOT.joinpath(name) for name in changed):
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.read_bytes() if file.exists() else b"")
    return (
        f"commit {commit} with uncommitted changes to {', '.join(changed)} "
        f"(sha256 {digest.hexdigest()[:12]})"
    )


if __name__ == "__main__":
    sys.exit(main())
