"""What server-side prepared statements are worth in the session-per-request pattern.

Each request opens a session from :func:`~pgvector_base.session.create_app_engine`'s engine, runs
one search (``VectorSearch.nearest_keys`` or ``nearest``) and ends: closed without a commit (a read
request; psycopg discards its prepared statements on the rollback) or committed (a request that
writes). The engine prepares nothing (the default) or prepares each statement after 5 runs
(``EngineSettings(prepare_threshold=5)``, psycopg's own default). Each figure is the median latency
of one run of a request per query; the table gives the median of the runs with their min and max.
Methods take turns, run by run, so whatever else the machine does slows them alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

from benchmarks.bench.common import WARMUP_QUERIES, Item, Prepared, Spread, in_turn
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from pgvector_base.search import VectorSearch
from pgvector_base.session import EngineSettings, create_app_engine, session_factory

Request = Callable[[Session, list[float]], object]
ENDS = ("close", "commit")


def measure_prepared(
    url: URL, model: type[Item], queries: list[list[float]], *, k: int, repeats: int
) -> list[Prepared]:
    """Time each request, ending and engine on the indexed table, the methods taking turns."""
    search = VectorSearch(model, model.embedding)
    requests: dict[str, Request] = {
        "nearest_keys": lambda session, query: search.nearest_keys(session, query, k),
        "nearest": lambda session, query: search.nearest(session, query, k),
    }
    engines = {
        "off": create_app_engine(url, EngineSettings(pool_size=1, max_overflow=0)),
        "on": create_app_engine(
            url, EngineSettings(pool_size=1, max_overflow=0, prepare_threshold=5)
        ),
    }
    methods = {
        (request, end, prepared): (engines[prepared], requests[request], end == "commit")
        for request in requests
        for end in ENDS
        for prepared in engines
    }
    turns = {" ".join(name): method for name, method in methods.items()}
    runs: dict[str, list[float]] = {name: [] for name in turns}
    try:
        for app, request, commit in turns.values():
            # Connect, warm caches, and pass psycopg's threshold of 5 runs.
            timed(app, request, commit, queries[: 2 * WARMUP_QUERIES])
        for number in range(repeats):
            for name, (app, request, commit) in in_turn(turns, number):
                runs[name].append(1000 * timed(app, request, commit, queries))
    finally:
        for app in engines.values():
            app.dispose()
    found = []
    for name in requests:
        for end in ENDS:
            off, on = runs[f"{name} {end} off"], runs[f"{name} {end} on"]
            found.append(
                Prepared(
                    name,
                    end,
                    Spread.of(off),
                    Spread.of(on),
                    Spread.of([b - a for a, b in zip(off, on, strict=True)]),
                )
            )
    return found


def timed(
    app: Engine,
    request: Request,
    commit: bool,
    queries: list[list[float]],
    replicas: Sequence[Engine] = (),
) -> float:
    """The median latency, in seconds, of one request per query, each in a session of its own
    (whose reads marked as replica reads go to ``replicas``, if any)."""
    sessions = session_factory(app, replicas)
    latencies = []
    for query in queries:
        started = time.perf_counter()
        with sessions() as session:
            request(session, query)
            if commit:
                session.commit()
        latencies.append(time.perf_counter() - started)
    return statistics.median(latencies)
