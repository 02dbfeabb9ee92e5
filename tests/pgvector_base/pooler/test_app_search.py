"""The application layer through a real PgBouncer: every answer is the direct connection's.

Concurrent clients (threads sharing one engine, and processes with an engine each) run several
query shapes through :func:`create_app_engine` with its default settings, each request in a
session that writes a row and commits, in both pool modes. Every answer is compared row by row
with the same call on a direct connection, and every request's row must be stored once.

Through a transaction-mode pool, consecutive transactions of one client run on different server
connections: a statement psycopg 3 prepared on one is missing on the next, or is another client's
statement under the same name, which answers with that client's rows.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Engine, Index, String, create_engine, delete, select, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from pgvector_base.aio import AsyncVectorSearch
from pgvector_base.loading import load
from pgvector_base.search import SearchSettings, VectorSearch
from pgvector_base.session import (
    EngineSettings,
    async_session_factory,
    create_app_engine,
    create_async_app_engine,
    session_factory,
)

from .conftest import StartPgBouncer

ROWS = 3000
DIM = 16
# nearest_keys(where=[id > HALF]) for one client, id < HALF for the other: the same statement
# but for its operator, so one client's prepared statement runs the other's without an error.
HALF = ROWS // 2
QUERIES = 6
CLIENTS = 4
# Enough runs of each shape that psycopg's default prepare_threshold (5) is passed many times.
REQUESTS = 60

Answer = list[tuple[int, float]]
Request = Callable[[Session], Answer]


class PoolerBase(DeclarativeBase):
    """This module's own tables."""


class PooledItem(PoolerBase):
    __tablename__ = "pooled_item"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    category: Mapped[int]
    embedding: Mapped[Any] = mapped_column(VECTOR(DIM))

    __table_args__ = (
        Index(
            "ix_pooled_item_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )


class RequestLog(PoolerBase):
    """One row per request: what each request wrote and committed."""

    __tablename__ = "pooled_request_log"

    client: Mapped[str] = mapped_column(String(20), primary_key=True)
    number: Mapped[int] = mapped_column(primary_key=True)


SEARCH = VectorSearch(PooledItem, PooledItem.embedding)
QUERY_VECTORS = np.random.default_rng(18).random((QUERIES, DIM), dtype=np.float32).tolist()


def keys(session: Session, query: int, where: Any) -> Answer:
    return SEARCH.nearest_keys(session, QUERY_VECTORS[query], 10, where=[where])


def hits(found: list[Any]) -> Answer:
    return [(hit.item.id, hit.distance) for hit in found]


# Each shape is a different statement: psycopg counts (and prepares) each one separately.
SHAPES: dict[str, Callable[[Session, int], Answer]] = {
    "keys_above": lambda session, q: keys(session, q, PooledItem.id > HALF),
    "keys_below": lambda session, q: keys(session, q, PooledItem.id < HALF),
    "nearest": lambda session, q: hits(SEARCH.nearest(session, QUERY_VECTORS[q], 5)),
    "nearest_filtered": lambda session, q: hits(
        SEARCH.nearest(
            session,
            QUERY_VECTORS[q],
            5,
            where=[PooledItem.category == q],
            settings=SearchSettings(ef_search=200),
        )
    ),
    "neighbors_of": lambda session, q: hits(SEARCH.neighbors_of(session, 100 * q + 7, 5)),
}


def plan(client: str, shapes: list[str]) -> list[tuple[str, int]]:
    """The (shape, query) of each of a client's requests, in order."""
    return [(shapes[n % len(shapes)], n % QUERIES) for n in range(REQUESTS)]


def expected_answers(direct: Engine) -> dict[tuple[str, int], Answer]:
    """Every shape's answer to every query, from a direct connection."""
    with Session(direct) as session:
        return {
            (shape, q): run(session, q) for shape, run in SHAPES.items() for q in range(QUERIES)
        }


def run_client(
    engine: Engine,
    client: str,
    shapes: list[str],
    expected: dict[tuple[str, int], Answer],
    start: threading.Barrier | Any,
) -> list[str]:
    """Run a client's requests; return a line for each error or answer that differs."""
    sessions = session_factory(engine)
    problems: list[str] = []
    start.wait()
    for number, (shape, q) in enumerate(plan(client, shapes)):
        try:
            with sessions() as session:
                answer = SHAPES[shape](session, q)
                session.add(RequestLog(client=client, number=number))
                session.commit()
        except Exception as error:
            first_line = f"{type(error).__name__}: {error}".splitlines()[0]
            problems.append(f"{client} #{number} {shape}: {first_line}")
            continue
        if not same(answer, expected[(shape, q)]):
            got, wanted = ([key for key, _ in found] for found in (answer, expected[(shape, q)]))
            problems.append(f"{client} #{number} {shape}: keys {got}, expected {wanted}")
    return problems


def same(answer: Answer, expected: Answer) -> bool:
    return [key for key, _ in answer] == [key for key, _ in expected] and np.allclose(
        [distance for _, distance in answer], [distance for _, distance in expected]
    )


def process_client(
    *,
    url: URL,
    client: str,
    shapes: list[str],
    expected: dict[tuple[str, int], Answer],
    start: Any,
    found: Any,
) -> None:
    """A client process: its own engine on ``url``, its problems put on ``found``."""
    engine = create_app_engine(url, EngineSettings(pool_size=1, max_overflow=0))
    try:
        found.put(run_client(engine, client, shapes, expected, start))
    except BaseException as error:
        found.put([f"{client}: {error!r}"])
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def direct_url(vector_engine: Engine) -> URL:
    """The module's database: items loaded and analyzed, and an empty request log."""
    PoolerBase.metadata.create_all(vector_engine)
    vectors = np.random.default_rng(5).random((ROWS, DIM), dtype=np.float32)
    with vector_engine.begin() as connection:
        load(
            connection,
            PooledItem.__table__,  # type: ignore[arg-type]
            {
                "id": np.arange(1, ROWS + 1),
                "category": np.arange(ROWS) % QUERIES,
                "embedding": vectors,
            },
        )
    # Vacuumed now, as autovacuum would do later: its page counts can change a search's plan (an
    # exact scan finds other neighbours than the index) between the direct and pooled answers.
    with vector_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE pooled_item"))
    return vector_engine.url


@pytest.fixture(scope="module")
def expected(direct_url: URL) -> dict[tuple[str, int], Answer]:
    engine = create_app_engine(direct_url)
    try:
        answers = expected_answers(engine)
    finally:
        engine.dispose()
    above = {key for q in range(QUERIES) for key, _ in answers[("keys_above", q)]}
    below = {key for q in range(QUERIES) for key, _ in answers[("keys_below", q)]}
    # The two filters' answers are told apart by every key they return.
    assert above
    assert below
    assert min(above) > HALF > max(below)
    return answers


class RequestLogReader:
    """The request log over a direct connection to the module's database at ``url``."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.engine = create_engine(url, poolclass=NullPool)

    def rows(self) -> list[tuple[str, int]]:
        """What the requests committed, in order."""
        with self.engine.connect() as connection:
            found = connection.execute(select(RequestLog.client, RequestLog.number)).all()
        return sorted((client, number) for client, number in found)


@pytest.fixture
def request_log(direct_url: URL) -> Iterator[RequestLogReader]:
    """The request log, emptied for the test."""
    reader = RequestLogReader(direct_url)
    with reader.engine.begin() as connection:
        connection.execute(delete(RequestLog))
    yield reader
    reader.engine.dispose()


def clients(count: int) -> dict[str, list[str]]:
    """Each client's shapes: all of them, each client starting at another one."""
    names = list(SHAPES)
    return {f"client{i}": names[i:] + names[:i] for i in range(count)}


TWO_CLIENTS = {"above": ["keys_above"], "below": ["keys_below"]}


def check(
    problems: list[str], committed: list[tuple[str, int]], plans: dict[str, list[str]]
) -> None:
    assert not problems, f"{len(problems)} wrong requests, first ones:\n" + "\n".join(problems[:10])
    assert committed == sorted((client, n) for client in plans for n in range(REQUESTS))


CASES = [
    pytest.param(mode, plans, id=f"{name}-{mode}")
    for name, plans in (("shapes", clients(CLIENTS)), ("two_filters", TWO_CLIENTS))
    for mode in ("transaction", "session")
]


@pytest.mark.parametrize(("pool_mode", "plans"), CASES)
def test_threads_get_the_direct_answers_through_pgbouncer(
    pgbouncer: StartPgBouncer,
    expected: dict[tuple[str, int], Answer],
    request_log: RequestLogReader,
    pool_mode: str,
    plans: dict[str, list[str]],
) -> None:
    bouncer = pgbouncer(pool_mode=pool_mode)
    engine = create_app_engine(
        bouncer.url(request_log.url), EngineSettings(pool_size=len(plans), max_overflow=0)
    )
    start = threading.Barrier(len(plans))
    try:
        with ThreadPoolExecutor(len(plans)) as executor:
            futures = [
                executor.submit(run_client, engine, client, shapes, expected, start)
                for client, shapes in plans.items()
            ]
            problems = [problem for future in futures for problem in future.result()]
    finally:
        engine.dispose()
    check(problems, request_log.rows(), plans)


@pytest.mark.parametrize(("pool_mode", "plans"), CASES)
def test_processes_get_the_direct_answers_through_pgbouncer(
    pgbouncer: StartPgBouncer,
    expected: dict[tuple[str, int], Answer],
    request_log: RequestLogReader,
    pool_mode: str,
    plans: dict[str, list[str]],
) -> None:
    bouncer = pgbouncer(pool_mode=pool_mode)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(plans))
    found: Any = context.Queue()
    processes = [
        context.Process(
            target=process_client,
            kwargs={
                "url": bouncer.url(request_log.url),
                "client": client,
                "shapes": shapes,
                "expected": expected,
                "start": start,
                "found": found,
            },
        )
        for client, shapes in plans.items()
    ]
    for process in processes:
        process.start()
    problems = [problem for _ in processes for problem in found.get(timeout=300)]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    check(problems, request_log.rows(), plans)


# Which server connection ran the statement, and its ef_search.
SERVED = text("SELECT pg_backend_pid(), current_setting('hnsw.ef_search')")


def test_configured_settings_end_with_their_transaction_through_transaction_mode_pgbouncer(
    pgbouncer: StartPgBouncer, direct_url: URL
) -> None:
    """One server connection behind the pooler: a setting that outlived its transaction (a
    session-level ``set_config(..., false)``) would reach whichever transaction runs there next,
    this client's or another's."""
    bouncer = pgbouncer(pool_mode="transaction", pool_size=1)
    url = bouncer.url(direct_url)
    few = SearchSettings(ef_search=4)
    served: list[tuple[int, str]] = []

    async def configure_async() -> None:
        engine = create_async_app_engine(url)
        try:
            async with async_session_factory(engine)() as session:
                await AsyncVectorSearch(PooledItem, PooledItem.embedding).configure(session, few)
                served.append(tuple((await session.execute(SERVED)).one()))
                await session.commit()
                served.append(tuple((await session.execute(SERVED)).one()))
        finally:
            await engine.dispose()

    engines = [create_app_engine(url), create_app_engine(url)]
    try:
        with session_factory(engines[0])() as session:
            SEARCH.configure(session, few)
            assert len(SEARCH.nearest_keys(session, QUERY_VECTORS[0], 10)) == 4
            served.append(tuple(session.execute(SERVED).one()))
            session.commit()
            served.append(tuple(session.execute(SERVED).one()))  # the next transaction
        asyncio.run(configure_async())
        with session_factory(engines[1])() as other:  # another client
            served.append(tuple(other.execute(SERVED).one()))
            assert len(SEARCH.nearest_keys(other, QUERY_VECTORS[0], 10)) == 10
    finally:
        for engine in engines:
            engine.dispose()
    # All on the pool's one server connection, so nothing could leave the setting behind unseen.
    assert len({backend for backend, _ in served}) == 1
    assert [setting for _, setting in served] == ["4", "40", "4", "40", "40"]
