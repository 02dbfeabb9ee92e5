"""A Citus cluster beside a single server, on the same rows: ``python -m benchmarks.bench.citus``.

:mod:`.citus_cluster` starts a coordinator and two workers (the build of ``.ci/citus``) or uses
``CITUS_TEST_URL``. The single server is the coordinator itself with a plain table in a database
of its own: the same PostgreSQL and pgvector binaries, so the comparison is of the layout alone.
Each turn, both tables (the distributed one by ``id`` into ``--shards`` shards) take the same rows
through :func:`~pgvector_base.loading.load` (COPY, then the HNSW index built: on the cluster, one
per shard), then the same queries through ``VectorSearch.nearest_keys``: the median latency one at
a time, the QPS of ``--clients`` threads for ``--duration`` seconds, and recall@k against numpy's
exact answer. The two layouts take turns and the figures are medians with min and max.

Every node shares this machine's cores, so here the cluster can add no capacity: what the figures
show is what distribution costs (fan-out to every shard, the coordinator's merge). docs/citus.md
("Sizing") models what N machines give.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from benchmarks.bench import citus_cluster
from benchmarks.bench.common import BenchBase, Item, Spread, embeddings, in_turn, item_model, ratios
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from pgvector_base.loading import load
from pgvector_base.search import VectorSearch
from pgvector_base.session import EngineSettings, create_app_engine, session_factory

LAYOUTS = ("single", "cluster")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the comparison and print its table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench.citus")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--duration", type=int, default=5, help="seconds of each QPS run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    reason = citus_cluster.unavailable()
    if reason is not None:
        parser.exit(1, reason + "\n")
    model = item_model(args.dim)
    vectors = embeddings(np.random.default_rng(args.seed), args.rows + args.queries, args.dim)
    rows, queries = vectors[: args.rows], vectors[args.rows :]
    exact = exact_answers(rows, queries, args.k)
    figures: dict[str, dict[str, list[float]]] = {}
    with citus_cluster.start() as cluster:
        urls = {"single": cluster.create_database(), "cluster": cluster.create_database()}
        engines = {
            name: create_app_engine(url, EngineSettings(pool_size=args.clients))
            for name, url in urls.items()
        }
        setup = {name: create_engine(url, poolclass=NullPool) for name, url in urls.items()}
        for turn in range(args.repeats):
            for name, _ in in_turn(dict.fromkeys(LAYOUTS), turn):
                measured = measure(
                    setup[name],
                    engines[name],
                    model=model,
                    rows=rows,
                    queries=queries,
                    exact=exact,
                    args=args,
                    layout=name,
                )
                for figure, value in measured.items():
                    figures.setdefault(figure, {}).setdefault(name, []).append(value)
        for engine in [*engines.values(), *setup.values()]:
            engine.dispose()
    print(report(figures, args))


def exact_answers(
    rows: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], k: int
) -> list[set[int]]:
    """Each query's ``k`` nearest ids by cosine distance (the index's), computed by numpy."""
    normed = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    answers = []
    for query in queries:
        similarity = normed @ (query / np.linalg.norm(query))
        answers.append({int(i) + 1 for i in np.argsort(-similarity)[:k]})
    return answers


def measure(
    setup: Engine,
    app: Engine,
    *,
    model: type[Item],
    rows: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    exact: list[set[int]],
    args: argparse.Namespace,
    layout: str,
) -> dict[str, float]:
    """One turn of one layout: load and build, then latency, QPS and recall."""
    table = BenchBase.metadata.tables["item"]
    with setup.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        connection.execute(text("DROP TABLE IF EXISTS item"))
        table.create(connection)
        if layout == "cluster":
            connection.execute(
                text("SELECT create_distributed_table('item', 'id', shard_count => :n)"),
                {"n": args.shards},
            )
    ids = np.arange(1, len(rows) + 1)
    with setup.begin() as connection:
        loaded = load(
            connection,
            table,
            {"id": ids, "category": ids % 10, "embedding": rows},
        )
    search: VectorSearch[Item] = VectorSearch(model, model.embedding)
    sessions = session_factory(app)
    latencies = []
    hits = 0
    for query, answer in zip(queries.tolist(), exact, strict=True):
        started = time.perf_counter()
        with sessions() as session:
            found = search.nearest_keys(session, query, args.k)
        latencies.append(time.perf_counter() - started)
        hits += len(answer & {key for key, _ in found})
    return {
        "load, rows/s": loaded.rows / loaded.copy_seconds,
        "HNSW build, s": loaded.index_seconds,
        "nearest_keys p50, ms": 1000 * statistics.median(latencies),
        f"nearest_keys QPS, {args.clients} threads": qps(
            app,
            search,
            queries=queries.tolist(),
            k=args.k,
            clients=args.clients,
            duration=args.duration,
        ),
        f"recall@{args.k}": hits / (args.k * len(queries)),
    }


def qps(
    app: Engine,
    search: VectorSearch[Item],
    *,
    queries: list[list[float]],
    k: int,
    clients: int,
    duration: int,
) -> float:
    """Searches per second of ``clients`` threads, each a session per search, for ``duration``."""
    sessions = session_factory(app)
    counts = [0] * clients
    deadline = time.perf_counter() + duration

    def client(number: int) -> None:
        position = number
        while time.perf_counter() < deadline:
            with sessions() as session:
                search.nearest_keys(session, queries[position % len(queries)], k)
            counts[number] += 1
            position += clients

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def report(figures: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> str:
    """The figures as a Markdown table: each layout's median (min-max) and their ratio."""
    lines = [
        f"{args.rows:,} rows x {args.dim}, {args.queries} queries, k = {args.k}; cluster: a "
        f"coordinator and 2 workers, {args.shards} shards by id; {args.repeats} turns",
        "",
        "| figure | single server | cluster | cluster / single |",
        "|---|---|---|---|",
    ]
    for figure, values in figures.items():
        single, cluster = Spread.of(values["single"]), Spread.of(values["cluster"])
        ratio = ratios(values["cluster"], values["single"])
        lines.append(f"| {figure} | {single.show()} | {cluster.show()} | {ratio.show()} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
