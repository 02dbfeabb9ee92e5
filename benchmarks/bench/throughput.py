"""Throughput: N client processes of the application against pgbench on the same SQL."""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from multiprocessing.synchronize import Barrier
from pathlib import Path

from benchmarks.bench.common import (
    EMBEDDED_BIN,
    WARMUP_QUERIES,
    Item,
    Spread,
    Throughput,
    in_turn,
    percentiles,
    ratios,
)
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from pgvector_base.search import VectorSearch
from pgvector_base.session import EngineSettings, create_app_engine

PGBENCH = EMBEDDED_BIN / "pgbench"
# pgbench takes at most 128 scripts: one per query vector.
THROUGHPUT_QUERIES = 100

Run = tuple[float, list[float]]


def measure_throughput(
    app: Engine,
    model: type[Item],
    queries: list[list[float]],
    *,
    k: int,
    duration: int,
    repeats: int,
    clients: list[int],
) -> list[Throughput]:
    """QPS and latency of N client processes searching for ``duration`` seconds, and of
    pgbench running the same SQL (the statement VectorSearch sends, with each query vector as a
    literal) at the same N, taking turns."""
    search = VectorSearch(model, model.embedding)
    queries = queries[:THROUGHPUT_QUERIES]
    url = app.url
    found: dict[tuple[str, int], list[Run]] = {}
    client_run = partial(app_clients, url, model, queries, k=k, duration=duration)
    with pgbench_scripts(app, search, queries, k) as scripts:
        for repeat in range(repeats):
            for clients_count in clients:
                turns: dict[str, Callable[[], Run]] = {
                    "app": partial(client_run, clients_count, keys=False),
                    "keys": partial(client_run, clients_count, keys=True),
                    "pgbench": partial(pgbench, url, scripts, duration, clients_count),
                }
                for name, method in in_turn(turns, repeat):
                    found.setdefault((name, clients_count), []).append(method())
    return summarized(found, clients)


def summarized(found: dict[tuple[str, int], list[Run]], clients: list[int]) -> list[Throughput]:
    """Each client count's runs of "app" (``nearest``), "keys" (``nearest_keys``) and
    "pgbench", taken in the same turns, as QPS and latency spreads and ratios."""
    results = []
    for clients_count in clients:
        app_qps, keys_qps, bench_qps = (
            [qps for qps, _ in found[(name, clients_count)]] for name in ("app", "keys", "pgbench")
        )
        results.append(
            Throughput(
                clients_count,
                Spread.of(app_qps),
                median_percentiles(found[("app", clients_count)]),
                Spread.of(keys_qps),
                median_percentiles(found[("keys", clients_count)]),
                Spread.of(bench_qps),
                median_percentiles(found[("pgbench", clients_count)]),
                ratios(app_qps, bench_qps),
                ratios(keys_qps, bench_qps),
            )
        )
    return results


def median_percentiles(runs: list[Run]) -> tuple[float, float, float]:
    """The median over runs of each run's p50, p95 and p99, in milliseconds."""
    each = [percentiles(latencies) for _, latencies in runs]
    p50, p95, p99 = (statistics.median(cut[i] for cut in each) * 1000 for i in range(3))
    return p50, p95, p99


def app_clients(
    url: URL,
    model: type[Item],
    queries: list[list[float]],
    n: int,
    *,
    k: int,
    duration: int,
    keys: bool,
) -> Run:
    """Run ``n`` client processes, each with its own engine and session, searching with
    ``VectorSearch.nearest`` (or ``nearest_keys``) for ``duration`` seconds from a common start;
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
                "k": k,
                "duration": duration,
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
    return len(latencies) / duration, latencies


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


def pgbench(url: URL, scripts: list[Path], duration: int, n: int, mode: str = "prepared") -> Run:
    """Run pgbench with ``n`` clients (and threads), the query ``mode`` (prepared statements by
    default) and the scripts chosen at random; return its QPS and every transaction's latency
    from its log."""
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
            mode,
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
